//! What the sync log records of each chunk: the outcome counts of resolve and materialize.
//! Plain types, stored on the chunk's inbox row and read back by the read API.

use serde::{Deserialize, Serialize};

/// Outcome counts of one chunk, stored on its sync-log row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveOutcomes {
    pub partner_id: u64,
    pub identity: u64,
    pub mpid: u64,
    pub created: u64,
    pub merged: u64,
    pub anonymous: u64,
    pub hashed_unusable: u64,
    pub invalid_email: u64,
    pub invalid_phone: u64,
    pub no_identity: u64,
    pub attribute_updates: u64,
    pub unknown_action: u64,
    pub missing_audience_id: u64,
    /// Profiles beyond a profile-level bound (`protocol::limits`): skipped, the rest goes on.
    #[serde(default)]
    pub too_long: u64,
    /// Users skipped because an erasure newer than their message covers them.
    #[serde(default)]
    pub erased: u64,
}

impl ResolveOutcomes {
    pub fn add(&mut self, o: &ResolveOutcomes) {
        self.partner_id += o.partner_id;
        self.identity += o.identity;
        self.mpid += o.mpid;
        self.created += o.created;
        self.merged += o.merged;
        self.anonymous += o.anonymous;
        self.hashed_unusable += o.hashed_unusable;
        self.invalid_email += o.invalid_email;
        self.invalid_phone += o.invalid_phone;
        self.no_identity += o.no_identity;
        self.attribute_updates += o.attribute_updates;
        self.unknown_action += o.unknown_action;
        self.missing_audience_id += o.missing_audience_id;
        self.too_long += o.too_long;
        self.erased += o.erased;
    }
}

/// What materializing one chunk did, stored on its sync-log row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializeCounts {
    pub added: u64,
    pub removed: u64,
    pub noop: u64,
    pub duplicate: u64,
    pub stale: u64,
    /// Changes for segments that are archived (or being archived): ignored.
    pub archived: u64,
}

impl MaterializeCounts {
    /// Every change was one applied before: a redelivered chunk.
    pub fn only_duplicates(&self) -> bool {
        self.duplicate > 0
            && self.added + self.removed + self.noop + self.stale + self.archived == 0
    }

    pub fn add(&mut self, o: &MaterializeCounts) {
        self.added += o.added;
        self.removed += o.removed;
        self.noop += o.noop;
        self.duplicate += o.duplicate;
        self.stale += o.stale;
        self.archived += o.archived;
    }
}
