//! Process-wide counts of what DynamoDB made the store do again: transactions cancelled by a
//! conflicting transaction, and retries after a backoff (conflicts, throttles, unprocessed keys,
//! re-plans). A Lambda process serves one invocation at a time, so the difference of two
//! snapshots is what that invocation cost; the metrics of each invocation report it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::domain::invocations::StoreStats;

static CONFLICTS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// The counts since the process started (the difference of two is what happened between).
pub fn snapshot() -> StoreStats {
    StoreStats {
        conflicts: CONFLICTS.load(Relaxed),
        retries: RETRIES.load(Relaxed),
    }
}

pub(crate) fn note_conflict() {
    CONFLICTS.fetch_add(1, Relaxed);
}

pub(crate) fn note_retry() {
    RETRIES.fetch_add(1, Relaxed);
}
