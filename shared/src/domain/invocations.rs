//! What one invocation of a stream function did: plain counts, which `stages::metrics` turns
//! into its metrics line. Here, below the stages, so the metrics need no stage and no stage
//! needs another's.

use crate::domain::sync_log::{MaterializeCounts, ResolveOutcomes};

/// What one resolve invocation did: its metrics (`stages::metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveBatch {
    /// Chunks resolved by this invocation.
    pub chunks: u64,
    /// Chunks delivered again after they were resolved: nothing new, not counted in the rest.
    pub chunks_replayed: u64,
    /// Chunks that can never be resolved, marked failed.
    pub chunks_failed: u64,
    /// Chunks left for the stream to retry (transient failures).
    pub chunks_retried: u64,
    /// The ladder's outcomes over all chunks resolved.
    pub outcomes: ResolveOutcomes,
    /// Membership changes handed to materialization.
    pub changes: u64,
    pub store: StoreStats,
}

/// What one materialize invocation did: its metrics (`stages::metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaterializeBatch {
    /// Chunks materialized by this invocation.
    pub chunks: u64,
    /// Chunks delivered again whose every change was applied before (counted as duplicates).
    pub chunks_replayed: u64,
    /// Chunks that can never be fully materialized, marked failed.
    pub chunks_failed: u64,
    /// Records left for the stream to retry (transient failures).
    pub records_retried: u64,
    /// What the chunks' changes came to; `added + removed` Partner Sync events were raised.
    pub counts: MaterializeCounts,
    /// Archived segments cleared, and the members they had.
    pub segments_cleared: u64,
    pub members_cleared: u64,
    /// Per chunk: from the batch's receipt by authorize to its materialization.
    pub chunk_latency_ms: Vec<f64>,
    pub store: StoreStats,
}

/// What one invocation did, for its metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishBatch {
    pub records: u64,
    /// Entries put, by kind.
    pub partner_sync: u64,
    pub profiles_erased: u64,
    pub segments_cleared: u64,
    /// Entry failures EventBridge reported (each retry that failed counts again).
    pub failed_entries: u64,
    /// Records handed back to Lambda (entry never put, or record unreadable).
    pub records_failed: u64,
    /// Per entry put: milliseconds from its recorded time to the `PutEvents` that took it.
    pub lag_ms: Vec<f64>,
    /// Per Partner Sync entry put that knows its receipt: milliseconds from authorize's receipt
    /// of its request to the `PutEvents` that took it, the live way's and the bulk way's.
    pub feed_latency_ms: Vec<f64>,
    pub feed_latency_bulk_ms: Vec<f64>,
}

/// What DynamoDB made the store do again: counts since the process started
/// (`store::stats::snapshot`), or, as a difference, between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions cancelled because another transaction held one of their items.
    pub conflicts: u64,
    /// Calls sent again after a backoff.
    pub retries: u64,
}

impl StoreStats {
    /// What happened since `earlier`.
    pub fn since(self, earlier: StoreStats) -> StoreStats {
        StoreStats {
            conflicts: self.conflicts.saturating_sub(earlier.conflicts),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}
