//! The identity ladder, pure: which CleverTap profile a mParticle user is, or why they are skipped.
//!
//! 1. Partner identity `CleverTap_User_ID` (raw) → that CleverTap ID, exactly as given.
//! 2. Else the connection's `userIdType` identity (default `customer`, raw) → Identity.
//! 3. Else the mParticle ID → Identity, but only when a usable email or phone is present.
//! 4. Else skipped: `hashed_unusable` if a hashed identity was all there was to go on,
//!    `anonymous` if there was an mParticle ID, `no_identity` otherwise.
//!
//! Email (trimmed, lower-cased, must look like an address) and phone (E.164) are merged into the
//! resolved profile; invalid ones are counted and dropped. Hashed values are never matched or merged.
//! Where a profile carries several candidates of one kind, the smallest valid value wins, so the
//! result never depends on the order of identities inside a profile.

use serde::{Deserialize, Serialize};

use crate::domain::batch::{StoredIdentity, StoredProfile};
use crate::domain::protocol::PARTNER_IDENTITY;
use crate::domain::protocol::{Encoding, UserIdentityType};

/// Which rung of the ladder resolved a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    PartnerId,
    Identity,
    Mpid,
}

/// The profile a user resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProfileKey {
    /// The CleverTap ID, kept byte for byte (real ids start with `-` or `__`).
    CleverTapId(String),
    /// The CleverTap Identity.
    Identity(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Anonymous,
    HashedUnusable,
    NoIdentity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub outcome: Result<(ProfileKey, Rung), SkipReason>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub invalid_emails: u32,
    pub invalid_phones: u32,
}

/// Lower-cases and trims; `None` unless it looks like an address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && e.len() <= 254
        && domain.len() >= 3
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

/// E.164: `+` then 8 to 15 digits, the first not zero. Spaces, dashes, dots and brackets between
/// digits are dropped first, since people type them.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(compact)
}

fn is_phone_type(t: &UserIdentityType) -> bool {
    matches!(
        t,
        UserIdentityType::MobileNumber
            | UserIdentityType::PhoneNumber2
            | UserIdentityType::PhoneNumber3
    )
}

fn phone_rank(t: &UserIdentityType) -> u8 {
    match t {
        UserIdentityType::MobileNumber => 0,
        UserIdentityType::PhoneNumber2 => 1,
        _ => 2,
    }
}

/// The identity type a connection's `userIdType` setting names; unknown or empty means `customer`.
pub fn user_id_type(setting: Option<&str>) -> UserIdentityType {
    match setting.map(|s| UserIdentityType::from_wire(s.trim())) {
        Some(UserIdentityType::Unknown(_)) | None => UserIdentityType::Customer,
        Some(t) => t,
    }
}

/// Reads an mParticle ID in its canonical form (a signed 64-bit integer), if it is one.
pub fn canonical_mpid(raw: &str) -> Option<String> {
    let v: i64 = raw.trim().parse().ok()?;
    (v != 0).then(|| v.to_string())
}

/// Runs the ladder for one user under one connection's `userIdType`.
pub fn resolve(profile: &StoredProfile, id_type: &UserIdentityType) -> Resolution {
    let mut invalid_emails = 0;
    let mut invalid_phones = 0;
    let mut saw_hashed = false;
    let mut email: Option<String> = None;
    let mut phone: Option<(u8, String)> = None;
    let mut identity: Option<String> = None;

    for i in &profile.user_identities {
        let kind = i.user_type();
        let raw = i.encoding() == Encoding::Raw;
        let relevant = kind == *id_type || kind == UserIdentityType::Email || is_phone_type(&kind);
        if !raw {
            saw_hashed |= relevant;
            continue;
        }
        if kind == UserIdentityType::Email {
            match normalize_email(&i.value) {
                Some(e) => email = min_some(email, e),
                None => invalid_emails += 1,
            }
        } else if is_phone_type(&kind) {
            match normalize_phone(&i.value) {
                Some(p) => {
                    let cand = (phone_rank(&kind), p);
                    phone = Some(match phone {
                        Some(cur) if cur <= cand => cur,
                        _ => cand,
                    });
                }
                None => invalid_phones += 1,
            }
        }
        if kind == *id_type {
            // An email or phone used as the Identity is normalised, so one person is one Identity.
            let value = match &kind {
                UserIdentityType::Email => normalize_email(&i.value),
                k if is_phone_type(k) => normalize_phone(&i.value),
                _ => Some(i.value.trim().to_owned()).filter(|v| !v.is_empty()),
            };
            if let Some(v) = value {
                identity = min_some(identity, v);
            }
        }
    }

    let partner = best_partner_id(&profile.partner_identities, &mut saw_hashed);
    let phone = phone.map(|(_, p)| p);
    let mpid = profile.mpid.as_deref().and_then(canonical_mpid);

    let outcome = if let Some(ct) = partner {
        Ok((ProfileKey::CleverTapId(ct), Rung::PartnerId))
    } else if let Some(id) = identity {
        Ok((ProfileKey::Identity(id), Rung::Identity))
    } else if let (Some(m), true) = (&mpid, email.is_some() || phone.is_some()) {
        Ok((ProfileKey::Identity(m.clone()), Rung::Mpid))
    } else if saw_hashed {
        Err(SkipReason::HashedUnusable)
    } else if mpid.is_some() {
        Err(SkipReason::Anonymous)
    } else {
        Err(SkipReason::NoIdentity)
    };
    Resolution {
        outcome,
        email,
        phone,
        invalid_emails,
        invalid_phones,
    }
}

fn best_partner_id(ids: &[StoredIdentity], saw_hashed: &mut bool) -> Option<String> {
    let mut best: Option<String> = None;
    for i in ids.iter().filter(|i| i.kind == PARTNER_IDENTITY) {
        if i.encoding() != Encoding::Raw {
            *saw_hashed = true;
        } else if !i.value.trim().is_empty() {
            // Kept exactly: CleverTap IDs may begin with `-` or `__` and must not be trimmed.
            best = min_some(best, i.value.clone());
        }
    }
    best
}

fn min_some(cur: Option<String>, cand: String) -> Option<String> {
    Some(match cur {
        Some(c) if c <= cand => c,
        _ => cand,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(kind: &str, encoding: &str, value: &str) -> StoredIdentity {
        StoredIdentity {
            kind: kind.into(),
            encoding: encoding.into(),
            value: value.into(),
        }
    }

    fn profile(
        user: Vec<StoredIdentity>,
        partner: Vec<StoredIdentity>,
        mpid: Option<&str>,
    ) -> StoredProfile {
        StoredProfile {
            index: 0,
            user_identities: user,
            partner_identities: partner,
            mpid: mpid.map(str::to_owned),
            audiences: vec![],
        }
    }

    fn customer() -> UserIdentityType {
        UserIdentityType::Customer
    }

    #[test]
    fn partner_id_wins_and_is_kept_exactly() {
        let p = profile(
            vec![id("customer", "raw", "c1"), id("email", "raw", " A@B.com ")],
            vec![
                id("CleverTap_User_ID", "raw", "-h12ab"),
                id("other_partner", "raw", "zzz"),
            ],
            Some("5"),
        );
        let r = resolve(&p, &customer());
        assert_eq!(
            r.outcome,
            Ok((ProfileKey::CleverTapId("-h12ab".into()), Rung::PartnerId))
        );
        assert_eq!(r.email.as_deref(), Some("a@b.com"));
        let p = profile(vec![], vec![id("CleverTap_User_ID", "raw", "__g0f")], None);
        assert_eq!(
            resolve(&p, &customer()).outcome.unwrap().0,
            ProfileKey::CleverTapId("__g0f".into())
        );
    }

    #[test]
    fn customer_id_is_the_second_rung() {
        let p = profile(
            vec![
                id("customer", "raw", "cust-1"),
                id("mobile_number", "raw", "+44 7700 900123"),
            ],
            vec![],
            Some("9"),
        );
        let r = resolve(&p, &customer());
        assert_eq!(
            r.outcome,
            Ok((ProfileKey::Identity("cust-1".into()), Rung::Identity))
        );
        assert_eq!(r.phone.as_deref(), Some("+447700900123"));
    }

    #[test]
    fn user_id_type_selects_the_identity() {
        let p = profile(
            vec![id("customer", "raw", "c1"), id("other3", "raw", "o3")],
            vec![],
            None,
        );
        assert_eq!(
            resolve(&p, &UserIdentityType::Other3).outcome.unwrap().0,
            ProfileKey::Identity("o3".into())
        );
        // Email as the Identity is normalised.
        let p = profile(vec![id("email", "raw", " Jo@Example.COM")], vec![], None);
        assert_eq!(
            resolve(&p, &UserIdentityType::Email).outcome.unwrap().0,
            ProfileKey::Identity("jo@example.com".into())
        );
        assert_eq!(user_id_type(Some("other2")), UserIdentityType::Other2);
        assert_eq!(user_id_type(Some("bogus")), UserIdentityType::Customer);
        assert_eq!(user_id_type(None), UserIdentityType::Customer);
    }

    #[test]
    fn mpid_needs_a_usable_email_or_phone() {
        let with_email = profile(vec![id("email", "raw", "x@y.io")], vec![], Some("-0042"));
        assert_eq!(
            resolve(&with_email, &customer()).outcome,
            Ok((ProfileKey::Identity("-42".into()), Rung::Mpid))
        );
        let with_phone = profile(
            vec![id("mobile_number", "raw", "+14155550100")],
            vec![],
            Some("7"),
        );
        assert_eq!(
            resolve(&with_phone, &customer()).outcome.unwrap().1,
            Rung::Mpid
        );
        let only_mpid = profile(vec![], vec![], Some("7"));
        assert_eq!(
            resolve(&only_mpid, &customer()).outcome,
            Err(SkipReason::Anonymous)
        );
        let invalid_email = profile(vec![id("email", "raw", "not-an-email")], vec![], Some("7"));
        let r = resolve(&invalid_email, &customer());
        assert_eq!(
            (r.outcome, r.invalid_emails),
            (Err(SkipReason::Anonymous), 1)
        );
    }

    #[test]
    fn hashed_identities_are_never_used() {
        let p = profile(
            vec![
                id("email", "sha256", "86e0b9e5"),
                id("customer", "md5", "4739c5c1"),
            ],
            vec![id("CleverTap_User_ID", "sha1", "abc")],
            Some("8163425179385401827"),
        );
        let r = resolve(&p, &customer());
        assert_eq!(r.outcome, Err(SkipReason::HashedUnusable));
        assert_eq!((r.email, r.invalid_emails), (None, 0));
        // A hashed device-ish identity of no interest does not count as hashed_unusable.
        let p = profile(vec![id("facebook", "sha256", "ff")], vec![], None);
        assert_eq!(
            resolve(&p, &customer()).outcome,
            Err(SkipReason::NoIdentity)
        );
    }

    #[test]
    fn nothing_at_all_is_no_identity_and_invalid_values_are_counted() {
        let p = profile(
            vec![
                id("mobile_number", "raw", "12345"),
                id("email", "raw", "a@b"),
            ],
            vec![],
            None,
        );
        let r = resolve(&p, &customer());
        assert_eq!(r.outcome, Err(SkipReason::NoIdentity));
        assert_eq!((r.invalid_emails, r.invalid_phones), (1, 1));
        assert_eq!((r.email, r.phone), (None, None));
    }

    #[test]
    fn email_and_phone_validation() {
        assert_eq!(
            normalize_email("  Foo.Bar@Mail.Example.org "),
            Some("foo.bar@mail.example.org".into())
        );
        for bad in [
            "",
            "a",
            "a@",
            "@b.com",
            "a@b",
            "a b@c.com",
            "a@@b.com",
            "a@.com",
            "a@b..com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
        assert_eq!(
            normalize_phone("+1 (415) 555-0100"),
            Some("+14155550100".into())
        );
        for bad in [
            "4155550100",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1415abc0100",
            "",
        ] {
            assert_eq!(normalize_phone(bad), None, "{bad}");
        }
    }

    fn arb_identity() -> impl Strategy<Value = StoredIdentity> {
        (
            prop::sample::select(vec![
                "customer",
                "email",
                "mobile_number",
                "phone_number_2",
                "other",
                "other2",
                "facebook",
            ]),
            prop::sample::select(vec!["raw", "raw", "raw", "sha256", "md5"]),
            prop::sample::select(vec![
                "c1",
                "c2",
                "a@x.io",
                "B@x.io",
                "+14155550100",
                "+447700900123",
                "bad",
                " ",
                "",
            ]),
        )
            .prop_map(|(k, e, v)| id(k, e, v))
    }

    proptest! {
        #[test]
        fn order_of_identities_never_matters(
            user in prop::collection::vec(arb_identity(), 0..8),
            partners in prop::collection::vec(
                (prop::sample::select(vec!["raw", "sha1"]), prop::sample::select(vec!["__a", "-b", "c", ""]))
                    .prop_map(|(e, v)| id("CleverTap_User_ID", e, v)), 0..3),
            mpid in prop::option::of(prop::sample::select(vec!["12", "-5", "x", "0"])),
            id_type in prop::sample::select(vec!["customer", "email", "other", "mobile_number"]),
            seed in any::<u64>(),
        ) {
            let t = user_id_type(Some(id_type));
            let a = profile(user.clone(), partners.clone(), mpid);
            let mut shuffled_user = user;
            let mut shuffled_partners = partners;
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled_user.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                shuffled_user.swap(i, (s >> 33) as usize % (i + 1));
            }
            shuffled_partners.reverse();
            let b = profile(shuffled_user, shuffled_partners, mpid);
            prop_assert_eq!(resolve(&a, &t), resolve(&b, &t));
        }

        #[test]
        fn resolved_keys_are_never_empty_or_hashed(user in prop::collection::vec(arb_identity(), 0..8)) {
            let p = profile(user, vec![], Some("3"));
            if let Ok((ProfileKey::Identity(v), _)) = resolve(&p, &UserIdentityType::Customer).outcome {
                prop_assert!(!v.trim().is_empty());
                let raw_match = p.user_identities.iter().any(|i| i.encoding == "raw" && (i.value.trim() == v || v == "3"));
                prop_assert!(raw_match);
            }
        }
    }
}
