//! Erasure of a person (a GDPR / CCPA data subject request), the pure part: what a subject's
//! identities name, the salted hashes tombstones are keyed by, and the version an erasure leaves
//! on memberships. The store and `stages::erasure` do the deleting.

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
        "controller_customer_id" | "customer_id" | "customer" => {
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

/// The key of a tombstone: SHA-256 of the project's salt, the kind and the value, in hex. The
/// identity itself is never stored.
pub fn tombstone_hash(salt: &str, kind: TombstoneKind, value: &str) -> String {
    let mut h = Sha256::new();
    for part in [salt, kind.as_str(), value] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The tombstone hashes a resolved user would be found by: its ladder key, email and phone.
pub fn resolution_hashes(salt: &str, r: &Resolution) -> Vec<String> {
    let mut out = Vec::new();
    match &r.outcome {
        Ok((ProfileKey::CleverTapId(ct), _)) => {
            out.push(tombstone_hash(salt, TombstoneKind::CleverTapId, ct))
        }
        Ok((ProfileKey::Identity(id), _)) => {
            out.push(tombstone_hash(salt, TombstoneKind::Identity, id))
        }
        Err(_) => {}
    }
    if let Some(e) = &r.email {
        out.push(tombstone_hash(salt, TombstoneKind::Email, e));
    }
    if let Some(p) = &r.phone {
        out.push(tombstone_hash(salt, TombstoneKind::Phone, p));
    }
    out
}

/// The version an erasure as of `erased_ms` leaves on a membership: newer than every change of
/// a message sent before that time, older than every change of a message sent at or after it
/// (a change's version is `<13-digit ms>#<message id>#…`, and a prefix sorts first).
pub fn erasure_version(erased_ms: i64) -> String {
    format!("{:013}", erased_ms.max(0))
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
}

impl ErasureCounts {
    pub fn add(&mut self, o: &ErasureCounts) {
        self.profiles += o.profiles;
        self.claims += o.claims;
        self.memberships += o.memberships;
        self.members_removed += o.members_removed;
        self.events += o.events;
        self.tombstones += o.tombstones;
        self.identities_ignored += o.identities_ignored;
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

    #[test]
    fn a_resolution_is_found_by_its_key_email_and_phone() {
        let r = Resolution {
            outcome: Ok((ProfileKey::Identity("c-1".into()), Rung::Identity)),
            email: Some("ann@example.com".into()),
            phone: None,
            invalid_emails: 0,
            invalid_phones: 0,
        };
        let hashes = resolution_hashes("s", &r);
        assert_eq!(
            hashes,
            vec![
                tombstone_hash("s", TombstoneKind::Identity, "c-1"),
                tombstone_hash("s", TombstoneKind::Email, "ann@example.com")
            ]
        );
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
