//! Erasure of a person (a GDPR / CCPA data subject request), the pure part: what a subject's
//! identities name, the keyed hashes tombstones are found by, and the version an erasure leaves
//! on memberships. The store and `stages::erasure` do the deleting.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::identity::{
    ProfileKey, Resolution, canonical_mpid, normalize_email, normalize_phone,
};
use crate::domain::protocol::PARTNER_IDENTITY;

/// What a subject identity leads to, normalised as ingestion normalises it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum SubjectKey {
    /// A CleverTap Identity (claimed by one profile).
    Identity(String),
    /// A profile's email (the `by_email` index; several profiles may share it).
    Email(String),
    /// A profile's phone (the `by_phone` index).
    Phone(String),
    /// A CleverTap ID itself (the partner identity `CleverTap_User_ID`).
    CleverTapId(String),
}

impl SubjectKey {
    /// The tombstone kind and value this key is remembered by.
    pub fn tombstone(&self) -> (TombstoneKind, &str) {
        match self {
            SubjectKey::Identity(v) => (TombstoneKind::Identity, v),
            SubjectKey::Email(v) => (TombstoneKind::Email, v),
            SubjectKey::Phone(v) => (TombstoneKind::Phone, v),
            SubjectKey::CleverTapId(v) => (TombstoneKind::CleverTapId, v),
        }
    }
}

/// The lookups one subject identity (`subject_identities` key and raw value) means; empty for a
/// type this output never stores (device ids) or a value that normalises to nothing.
///
/// An email or phone may also be a project's Identity (a connection whose `userIdType` is
/// `email` or `mobile_number`), and an mParticle ID is the Identity of the mpid rung.
pub fn subject_keys(kind: &str, value: &str) -> Vec<SubjectKey> {
    // Ingestion never stores a value this long (its profile is skipped as too long), and it
    // could not be a key: nothing to find, so the erasure counts it as ignored.
    if value.len() > crate::domain::protocol::limits::MAX_IDENTITY_BYTES {
        return vec![];
    }
    let kind = kind.trim().to_ascii_lowercase();
    match kind.as_str() {
        // An audience connected with `userIdType` other..other10 keys profiles by that value,
        // kept as the ladder keeps it (trimmed): a DSR naming it reaches them.
        "controller_customer_id"
        | "customer_id"
        | "customer"
        | "other"
        | "other_id"
        | "other2"
        | "other3"
        | "other4"
        | "other5"
        | "other6"
        | "other7"
        | "other8"
        | "other9"
        | "other10"
        | "other_id_2"
        | "other_id_3"
        | "other_id_4"
        | "other_id_5"
        | "other_id_6"
        | "other_id_7"
        | "other_id_8"
        | "other_id_9"
        | "other_id_10" => {
            let v = value.trim();
            if v.is_empty() {
                vec![]
            } else {
                vec![SubjectKey::Identity(v.to_owned())]
            }
        }
        "email" => normalize_email(value)
            .map(|e| vec![SubjectKey::Email(e.clone()), SubjectKey::Identity(e)])
            .unwrap_or_default(),
        "phone" | "phone_number" | "mobile_number" => normalize_phone(value)
            .map(|p| vec![SubjectKey::Phone(p.clone()), SubjectKey::Identity(p)])
            .unwrap_or_default(),
        "mparticle_id" | "mpid" => canonical_mpid(value)
            .map(|m| vec![SubjectKey::Identity(m)])
            .unwrap_or_default(),
        k if k == PARTNER_IDENTITY.to_ascii_lowercase() => {
            // Kept exactly, as the ladder keeps CleverTap IDs.
            if value.trim().is_empty() {
                vec![]
            } else {
                vec![SubjectKey::CleverTapId(value.to_owned())]
            }
        }
        _ => vec![],
    }
}

/// What a tombstone remembers was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TombstoneKind {
    Identity,
    Email,
    Phone,
    CleverTapId,
}

impl TombstoneKind {
    fn as_str(self) -> &'static str {
        match self {
            TombstoneKind::Identity => "identity",
            TombstoneKind::Email => "email",
            TombstoneKind::Phone => "phone",
            TombstoneKind::CleverTapId => "clevertap_id",
        }
    }
}

/// The legacy key of a tombstone (made before keyed tombstones): SHA-256 of the project's salt,
/// the kind and the value, in hex. The salt lives on the project item, so whoever reads the
/// tables can test guesses against these; they stay checkable (docs/architecture.md, Erasure),
/// and no new one is written.
pub fn tombstone_hash(salt: &str, kind: TombstoneKind, value: &str) -> String {
    let mut h = Sha256::new();
    for part in [salt, kind.as_str(), value] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The shortest tombstone key accepted (bytes): 256 bits of a generated alphanumeric secret.
pub const MIN_TOMBSTONE_KEY_BYTES: usize = 32;

/// Why a set of tombstone keys was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TombstoneKeysError {
    #[error("tombstone keys are not JSON of the form {{\"current\": 1, \"k1\": \"…\"}}: {0}")]
    NotJson(String),
    #[error("tombstone keys name no current version")]
    NoCurrent,
    #[error("tombstone key version {0} is missing")]
    MissingVersion(u32),
    #[error("tombstone key k{0} is shorter than {MIN_TOMBSTONE_KEY_BYTES} bytes")]
    TooShort(u32),
}

/// The secret keys tombstones are hashed with, by version (`{"current": 2, "k1": "…", "k2":
/// "…"}`, as the stack's secret holds them). New tombstones use the current version; a check
/// tries every version, so rotating is adding a version, then making it current once every
/// process has read it (docs/architecture.md, Erasure). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TombstoneKeys {
    current: u32,
    keys: BTreeMap<u32, Vec<u8>>,
}

impl std::fmt::Debug for TombstoneKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TombstoneKeys")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TombstoneKeys {
    /// Parses the secret's JSON: `current` and one `k<version>` string per version.
    pub fn parse(json: &str) -> Result<Self, TombstoneKeysError> {
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| TombstoneKeysError::NotJson(e.to_string()))?;
        let current = map
            .get("current")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(TombstoneKeysError::NoCurrent)?;
        let mut keys = BTreeMap::new();
        for (name, value) in &map {
            let Some(version) = name.strip_prefix('k').and_then(|v| v.parse::<u32>().ok()) else {
                continue;
            };
            let key = value.as_str().unwrap_or_default().as_bytes().to_vec();
            if key.len() < MIN_TOMBSTONE_KEY_BYTES {
                return Err(TombstoneKeysError::TooShort(version));
            }
            keys.insert(version, key);
        }
        if !keys.contains_key(&current) {
            return Err(TombstoneKeysError::MissingVersion(current));
        }
        Ok(Self { current, keys })
    }

    /// The version new tombstones are written with.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// `k<version>#<HMAC-SHA256 in hex>` of the project, kind and value (length-prefixed, so
    /// moving a boundary changes it; the project in it keeps one person's tombstones in two
    /// projects apart).
    fn hash(&self, version: u32, project: &str, kind: TombstoneKind, value: &str) -> String {
        let key = &self.keys[&version];
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        for part in [project, kind.as_str(), value] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        format!("k{version}#{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// How one project's tombstones are keyed: the stack's keys, plus the project's legacy salt if
/// it had erasures before tombstones were keyed.
#[derive(Debug, Clone, Copy)]
pub struct TombstoneHasher<'a> {
    pub keys: &'a TombstoneKeys,
    pub project: &'a str,
    pub legacy_salt: Option<&'a str>,
}

impl TombstoneHasher<'_> {
    /// The key a new tombstone of this value is written under (the current version).
    pub fn written(&self, kind: TombstoneKind, value: &str) -> String {
        self.keys.hash(self.keys.current, self.project, kind, value)
    }

    /// Every key a tombstone of this value may stand under: each key version, and the legacy
    /// salted hash where the project has a salt.
    pub fn checked(&self, kind: TombstoneKind, value: &str) -> Vec<String> {
        let mut out: Vec<String> = (self.keys.keys.keys())
            .map(|&v| self.keys.hash(v, self.project, kind, value))
            .collect();
        if let Some(salt) = self.legacy_salt {
            out.push(tombstone_hash(salt, kind, value));
        }
        out
    }

    /// The tombstone keys a resolved user would be found by: its ladder key, email and phone.
    pub fn of_resolution(&self, r: &Resolution) -> Vec<String> {
        let mut out = Vec::new();
        match &r.outcome {
            Ok((ProfileKey::CleverTapId(ct), _)) => {
                out.extend(self.checked(TombstoneKind::CleverTapId, ct))
            }
            Ok((ProfileKey::Identity(id), _)) => {
                out.extend(self.checked(TombstoneKind::Identity, id))
            }
            Err(_) => {}
        }
        if let Some(e) = &r.email {
            out.extend(self.checked(TombstoneKind::Email, e));
        }
        if let Some(p) = &r.phone {
            out.extend(self.checked(TombstoneKind::Phone, p));
        }
        out
    }
}

/// The version an erasure as of `erased_ms` leaves on a membership: newer than every change of
/// a message sent before that time, older than every change of a message sent at or after it
/// (a change's version is `<13-digit ms>#<message id>#…`, and a prefix sorts first).
pub fn erasure_version(erased_ms: i64) -> String {
    format!("{:013}", erased_ms.max(0))
}

/// The cut-off of an erasure that arrived at `arrived_ms` (our clock): a batch stamped by
/// mParticle's clock up to the allowed skew ahead of ours, and sent before the erasure arrived,
/// is covered (docs/contract.md §2.8). A batch stamped after it may bring the person back.
pub fn cut_off(arrived_ms: i64) -> i64 {
    arrived_ms + crate::domain::protocol::limits::MAX_CLOCK_SKEW_MS
}

/// Whether a message sent at `message_ts` is older than an erasure as of `erased_ms`: its users
/// covered by the erasure are skipped. A newer message may bring the person back.
pub fn is_before_erasure(message_ts: i64, erased_ms: i64) -> bool {
    message_ts < erased_ms
}

/// Who asked for an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureSource {
    /// A `dsr_processing_request` from mParticle.
    Mparticle,
    /// `scripts/admin profile erase`: a request that arrived another way.
    Admin,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureCounts {
    /// Profile items deleted.
    pub profiles: u64,
    /// Identity claims deleted.
    pub claims: u64,
    /// Membership rows cleared of the person (members and former members).
    pub memberships: u64,
    /// Of those, current members taken out of their segments (member counts went down).
    pub members_removed: u64,
    /// Partner Sync events deleted.
    pub events: u64,
    /// Tombstones written (salted hashes).
    pub tombstones: u64,
    /// Subject identities not stored by this output (ignored).
    pub identities_ignored: u64,
    /// The request's emails and phones held by more profiles than one person has
    /// ([`SHARED_VALUE_HOLDERS`]): a placeholder or shared value, which erases no one.
    #[serde(default)]
    pub values_shared: u64,
}

/// More profiles than this holding one email or phone of a request make it a shared value (a
/// placeholder, a company switchboard): it leads to no profile and gets no tombstone, so one
/// erasure never deletes or blocks thousands of people (docs/contract.md §2.8).
pub const SHARED_VALUE_HOLDERS: usize = 20;

impl ErasureCounts {
    pub fn add(&mut self, o: &ErasureCounts) {
        self.profiles += o.profiles;
        self.claims += o.claims;
        self.memberships += o.memberships;
        self.members_removed += o.members_removed;
        self.events += o.events;
        self.tombstones += o.tombstones;
        self.identities_ignored += o.identities_ignored;
        self.values_shared += o.values_shared;
    }
}

/// The audit row of an erasure, as stored and as the read API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureAudit {
    pub request_id: String,
    pub regulation: String,
    pub source: ErasureSource,
    /// The cut-off: when the request reached this service.
    pub erased_ms: i64,
    /// When the person asked (mParticle's `submitted_time`), if it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<i64>,
    pub completed_ms: i64,
    pub removed: ErasureCounts,
}

/// What erasing needs to know of a stored membership row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasableRow {
    pub member: bool,
    pub version: Option<String>,
    /// It still names the person or their history (identity, ever added / removed).
    pub holds_person: bool,
}

/// What erasing one membership row comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScrubPlan {
    /// No row: put a non-member row at the erasure's version, so a change sent before the
    /// erasure finds it stale.
    Block,
    /// Erased before, or brought back by a change sent after the cut-off.
    Unchanged,
    /// Scrub the row to `next` (its version, at least the erasure's), conditional on the
    /// version read (`expected`); `leaving` when it was a member (the count goes down).
    Scrub {
        next: String,
        expected: Option<String>,
        leaving: bool,
    },
}

/// Pure: the plan for one row as read (`None`: no row).
pub fn plan_scrub(row: Option<&ErasableRow>, erased_version: &str) -> ScrubPlan {
    let Some(row) = row else {
        return ScrubPlan::Block;
    };
    // Erased before, or moved by a change sent after the cut-off (the person came back): left.
    if row.version.as_deref().is_some_and(|v| v >= erased_version) {
        return ScrubPlan::Unchanged;
    }
    ScrubPlan::Scrub {
        next: row
            .version
            .clone()
            .unwrap_or_default()
            .max(erased_version.to_owned()),
        expected: row.version.clone(),
        leaving: row.member,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identity::{ProfileKey, Resolution, Rung};
    use crate::domain::protocol::submitted_ms;

    #[test]
    fn a_value_too_long_to_be_stored_finds_nothing() {
        let huge = "x".repeat(3_000);
        assert!(subject_keys("controller_customer_id", &huge).is_empty());
        assert!(subject_keys("email", &format!("{huge}@example.com")).is_empty());
        assert_eq!(subject_keys("customer_id", "c-1").len(), 1);
        // A profile keyed by an `other` identity (userIdType other3) is reached by it.
        assert_eq!(
            subject_keys("other_id_3", " o3 "),
            vec![SubjectKey::Identity("o3".into())]
        );
        assert_eq!(
            subject_keys("other", "o1"),
            vec![SubjectKey::Identity("o1".into())]
        );
    }

    #[test]
    fn subject_identities_are_normalised_like_ingestion() {
        assert_eq!(
            subject_keys("email", " Ann@Example.COM "),
            vec![
                SubjectKey::Email("ann@example.com".into()),
                SubjectKey::Identity("ann@example.com".into())
            ]
        );
        assert_eq!(
            subject_keys("controller_customer_id", " c-1 "),
            vec![SubjectKey::Identity("c-1".into())]
        );
        assert_eq!(
            subject_keys("mparticle_id", "0042"),
            vec![SubjectKey::Identity("42".into())]
        );
        assert_eq!(
            subject_keys("CleverTap_User_ID", "-h/x"),
            vec![SubjectKey::CleverTapId("-h/x".into())]
        );
        assert!(subject_keys("ios_advertising_id", "abc").is_empty());
        assert!(subject_keys("email", "not an email").is_empty());
        assert_eq!(subject_keys("phone_number", "+1 415 555 0100").len(), 2);
    }

    #[test]
    fn hashes_depend_on_salt_kind_and_value_and_hide_the_value() {
        let h = tombstone_hash("s1", TombstoneKind::Email, "ann@example.com");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("ann"));
        assert_ne!(
            h,
            tombstone_hash("s2", TombstoneKind::Email, "ann@example.com")
        );
        assert_ne!(
            h,
            tombstone_hash("s1", TombstoneKind::Identity, "ann@example.com")
        );
        // Length-prefixed parts: moving a boundary changes the hash.
        assert_ne!(
            tombstone_hash("a", TombstoneKind::Identity, "bc"),
            tombstone_hash("ab", TombstoneKind::Identity, "c")
        );
    }

    const K1: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
    const K2: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponm";

    fn keys(json: &str) -> TombstoneKeys {
        TombstoneKeys::parse(json).unwrap()
    }

    #[test]
    fn keyed_hashes_carry_their_version_and_depend_on_key_project_kind_and_value() {
        let k1 = keys(&format!(r#"{{"current":1,"k1":"{K1}"}}"#));
        let other = keys(&format!(r#"{{"current":1,"k1":"{K2}"}}"#));
        let hasher = |keys, project| TombstoneHasher {
            keys,
            project,
            legacy_salt: None,
        };
        let h = hasher(&k1, "p1").written(TombstoneKind::Email, "ann@example.com");
        assert!(h.starts_with("k1#") && h.len() == 3 + 64, "{h}");
        assert!(!h.contains("ann"));
        for different in [
            hasher(&other, "p1").written(TombstoneKind::Email, "ann@example.com"),
            hasher(&k1, "p2").written(TombstoneKind::Email, "ann@example.com"),
            hasher(&k1, "p1").written(TombstoneKind::Identity, "ann@example.com"),
            hasher(&k1, "p1").written(TombstoneKind::Email, "bob@example.com"),
        ] {
            assert_ne!(h, different);
        }
        // What the tables hold (the legacy salt) does not give the keyed hash.
        assert_ne!(
            h.strip_prefix("k1#").unwrap(),
            tombstone_hash("", TombstoneKind::Email, "ann@example.com")
        );
    }

    #[test]
    fn a_rotated_key_set_writes_the_new_version_and_still_finds_the_old_and_legacy_ones() {
        let before = keys(&format!(r#"{{"current":1,"k1":"{K1}"}}"#));
        let after = keys(&format!(r#"{{"current":"2","k1":"{K1}","k2":"{K2}"}}"#));
        let old = TombstoneHasher {
            keys: &before,
            project: "p",
            legacy_salt: None,
        }
        .written(TombstoneKind::Phone, "+14155550100");
        let now = TombstoneHasher {
            keys: &after,
            project: "p",
            legacy_salt: Some("salt"),
        };
        let new = now.written(TombstoneKind::Phone, "+14155550100");
        assert!(new.starts_with("k2#"));
        let checked = now.checked(TombstoneKind::Phone, "+14155550100");
        assert_eq!(
            checked,
            vec![
                old,
                new,
                tombstone_hash("salt", TombstoneKind::Phone, "+14155550100")
            ]
        );
    }

    #[test]
    fn key_sets_without_a_usable_current_key_are_refused() {
        let short = r#"{"current":1,"k1":"short"}"#;
        assert_eq!(
            TombstoneKeys::parse(short),
            Err(TombstoneKeysError::TooShort(1))
        );
        let missing = format!(r#"{{"current":2,"k1":"{K1}"}}"#);
        assert_eq!(
            TombstoneKeys::parse(&missing),
            Err(TombstoneKeysError::MissingVersion(2))
        );
        assert_eq!(
            TombstoneKeys::parse(&format!(r#"{{"k1":"{K1}"}}"#)),
            Err(TombstoneKeysError::NoCurrent)
        );
        assert!(matches!(
            TombstoneKeys::parse("k1"),
            Err(TombstoneKeysError::NotJson(_))
        ));
        let printed = format!("{:?}", keys(&format!(r#"{{"current":1,"k1":"{K1}"}}"#)));
        assert!(!printed.contains(K1), "{printed}");
    }

    #[test]
    fn a_resolution_is_found_by_its_key_email_and_phone() {
        let k = keys(&format!(r#"{{"current":1,"k1":"{K1}"}}"#));
        let hasher = TombstoneHasher {
            keys: &k,
            project: "p",
            legacy_salt: Some("s"),
        };
        let r = Resolution {
            outcome: Ok((ProfileKey::Identity("c-1".into()), Rung::Identity)),
            email: Some("ann@example.com".into()),
            phone: None,
            invalid_emails: 0,
            invalid_phones: 0,
        };
        let expected: Vec<String> = [
            hasher.checked(TombstoneKind::Identity, "c-1"),
            hasher.checked(TombstoneKind::Email, "ann@example.com"),
        ]
        .concat();
        assert_eq!(hasher.of_resolution(&r), expected);
        assert_eq!(expected.len(), 4, "keyed and legacy, for each");
    }

    #[test]
    fn the_erasure_version_splits_older_from_newer_messages() {
        let erased = 1_700_000_000_000;
        let change = |ts: i64| format!("{ts:013}#m#000001#000000");
        assert!(change(erased - 1) < erasure_version(erased));
        assert!(change(erased) > erasure_version(erased));
        assert!(is_before_erasure(erased - 1, erased) && !is_before_erasure(erased, erased));
        assert_eq!(submitted_ms(1_714_592_744.067_235), Some(1_714_592_744_067));
        assert_eq!(submitted_ms(f64::NAN), None);
    }
}

#[cfg(test)]
mod scrub_tests {
    use super::*;

    const ERASED: &str = "0001700000000000";

    fn row(member: bool, version: Option<&str>, holds_person: bool) -> ErasableRow {
        ErasableRow {
            member,
            version: version.map(str::to_owned),
            holds_person,
        }
    }

    #[test]
    fn no_row_is_blocked_and_a_scrubbed_row_is_left_alone() {
        assert_eq!(plan_scrub(None, ERASED), ScrubPlan::Block);
        assert_eq!(
            plan_scrub(Some(&row(false, Some(ERASED), false)), ERASED),
            ScrubPlan::Unchanged
        );
    }

    #[test]
    fn a_member_leaves_and_the_version_never_goes_back() {
        let older = "0001600000000000#m#000001#0000";
        assert_eq!(
            plan_scrub(Some(&row(true, Some(older), true)), ERASED),
            ScrubPlan::Scrub {
                next: ERASED.to_owned(),
                expected: Some(older.to_owned()),
                leaving: true,
            }
        );
        // A row a change sent after the cut-off moved is the person brought back (§2.8): left
        // as it is, member or not (a covered chunk's check after writing must not undo it).
        let newer = "0001800000000000#m#000001#0000";
        assert_eq!(
            plan_scrub(Some(&row(true, Some(newer), true)), ERASED),
            ScrubPlan::Unchanged
        );
        // A row without a version is scrubbed on the condition that it still has none.
        assert_eq!(
            plan_scrub(Some(&row(false, None, false)), ERASED),
            ScrubPlan::Scrub {
                next: ERASED.to_owned(),
                expected: None,
                leaving: false,
            }
        );
    }
}
