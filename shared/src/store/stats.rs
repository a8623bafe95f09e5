//! Process-wide counts of what DynamoDB made the store do again: transactions cancelled by a
//! conflicting transaction, and retries after a backoff (conflicts, throttles, unprocessed keys,
//! re-plans). A Lambda process serves one invocation at a time, so the difference of two
//! snapshots is what that invocation cost; the metrics of each invocation report it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static CONFLICTS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Counts since the process started (or, as a difference, between two snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions cancelled because another transaction held one of their items.
    pub conflicts: u64,
    /// Calls sent again after a backoff.
    pub retries: u64,
}

impl StoreStats {
    pub fn now() -> Self {
        Self {
            conflicts: CONFLICTS.load(Relaxed),
            retries: RETRIES.load(Relaxed),
        }
    }

    /// What happened since `earlier`.
    pub fn since(self, earlier: StoreStats) -> StoreStats {
        StoreStats {
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}

pub(crate) fn note_conflict() {
    CONFLICTS.fetch_add(1, Relaxed);
}

pub(crate) fn note_retry() {
    RETRIES.fetch_add(1, Relaxed);
}
