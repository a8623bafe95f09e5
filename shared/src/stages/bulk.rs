//! The bulk way's worker (`domain::ways`): a queued chunk's key in, the chunk resolved and
//! materialized in one go, by its row's status, so a message delivered twice, a retry after a
//! failure at any step, or a chunk queued twice does each step once:
//!
//! `received` → resolve (the row moves to `resolved` with its changes) → `resolved` →
//! materialize → `materialized`; `materialized` or `failed`: nothing left to do.
//!
//! It runs the same `resolve_chunk` and `materialize_row` as the live way's stream mappings:
//! the two ways differ in how a chunk reaches them, not in what is done with it. (The one stage
//! that calls two others: the live way needs them apart, one stream mapping each.)

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use tracing::{error, info, warn};

use crate::bulk::QueuedChunk;
use crate::domain::invocations::MaterializeBatch;
use crate::domain::protocol::now_ms;
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::sync_log::MaterializeCounts;
use crate::domain::ways::Way;
use crate::ports::StoreError;
use crate::ports::inbox::{ChunkKey, InboxRow, fail_chunk};
use crate::stages::materialize::{MaterializeError, MaterializePorts, materialize_row};
use crate::stages::resolve::{ResolveError, ResolvePorts, resolve_chunk};
use crate::store::stats;

/// Ports the worker needs: both stages'.
pub trait BulkPorts: ResolvePorts + MaterializePorts {}
impl<T: ResolvePorts + MaterializePorts> BulkPorts for T {}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What working one queued chunk came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Worked {
    /// Materialized now: what it applied, and how long since authorize received it.
    Materialized {
        counts: MaterializeCounts,
        latency_ms: i64,
    },
    /// Done before (a chunk queued twice, or redelivered after its work was done).
    AlreadyDone,
    /// Marked failed now: it can never be processed (the sync log says why).
    Failed,
    /// No such row, or a live one: nothing for this worker.
    NotBulk,
}

/// Works one queued chunk to its end.
pub async fn work_chunk(store: &impl BulkPorts, queued: &QueuedChunk) -> Result<Worked, BulkError> {
    let region = queued.region;
    let key = ChunkKey {
        project_id: &queued.project_id,
        message_id: &queued.message_id,
        chunk: queued.chunk,
    };
    let Some(row) = store.chunk_row(region, key).await? else {
        return Ok(Worked::NotBulk);
    };
    if row.way != Way::Bulk {
        return Ok(Worked::NotBulk);
    }
    let row = match row.status {
        InboxStatus::Materialized | InboxStatus::Failed => return Ok(Worked::AlreadyDone),
        InboxStatus::Resolved => row,
        InboxStatus::Received => match resolve(store, region, &row).await? {
            Some(resolved) => resolved,
            None => return Ok(Worked::Failed),
        },
    };
    materialize(store, region, &row).await
}

/// Resolves a received chunk and reads its row again (now `resolved`, with its changes); `None`
/// if it can never be resolved (marked failed).
async fn resolve(
    store: &impl BulkPorts,
    region: Region,
    row: &InboxRow,
) -> Result<Option<InboxRow>, BulkError> {
    match resolve_chunk(store, region, row).await {
        Ok(_) => {}
        Err(e) if e.is_permanent() => {
            error!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
                   error = %e, "bulk chunk can never be resolved; marked failed");
            let _moved_on_already =
                fail_chunk(store, region, row, InboxStatus::Received, &e.to_string()).await?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    let again = store.chunk_row(region, row.key()).await?;
    match again {
        Some(r) if r.status == InboxStatus::Resolved => Ok(Some(r)),
        // Moved on meanwhile (a second worker of a chunk queued twice): nothing left here.
        _ => Ok(None),
    }
}

async fn materialize(
    store: &impl BulkPorts,
    region: Region,
    row: &InboxRow,
) -> Result<Worked, BulkError> {
    match materialize_row(store, region, row).await {
        Ok(counts) => Ok(Worked::Materialized {
            counts,
            latency_ms: now_ms() - row.received_ms,
        }),
        Err(e) if e.is_permanent() => {
            error!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
                   error = %e, "bulk chunk can never be fully materialized; marked failed");
            let _moved_on_already =
                fail_chunk(store, region, row, InboxStatus::Resolved, &e.to_string()).await?;
            Ok(Worked::Failed)
        }
        Err(e) => Err(e.into()),
    }
}

/// The bulk Lambda: queue messages in (one chunk each), `batchItemFailures` out (a message that
/// failed for a transient reason comes back after its visibility timeout; after five receives it
/// goes to the dead-letter queue).
///
/// What it did is reported as a materialize invocation's figures (`MaterializeBatch`; its
/// metrics carry `function=bulk`, so each way's freshness is its own `ChunkLatency`).
pub async fn handle_sqs_event(
    store: &impl BulkPorts,
    event: SqsEvent,
) -> (SqsBatchResponse, MaterializeBatch) {
    let started = stats::snapshot();
    let mut batch = MaterializeBatch::default();
    let mut response = SqsBatchResponse::default();
    // One after another: a batch's chunks mostly share segments (one project's import).
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let queued: Option<QueuedChunk> =
            (message.body.as_deref()).and_then(|b| serde_json::from_str(b).ok());
        let Some(queued) = queued else {
            // Not ours to retry: it can never parse. Dropped, with its id in the log.
            warn!(message_id = %id, "bulk queue message is not a queued chunk; dropped");
            continue;
        };
        let worked = work_chunk(store, &queued).await;
        match worked {
            Ok(Worked::Materialized { counts, latency_ms }) => {
                info!(project_id = %queued.project_id, message_id = %queued.message_id,
                      chunk = queued.chunk, added = counts.added, removed = counts.removed,
                      "bulk chunk materialized");
                batch.chunks += 1;
                batch.counts.add(&counts);
                batch.chunk_latency_ms.push(latency_ms.max(0) as f64);
            }
            Ok(Worked::AlreadyDone | Worked::NotBulk) => batch.chunks_replayed += 1,
            Ok(Worked::Failed) => batch.chunks_failed += 1,
            Err(e) => {
                warn!(project_id = %queued.project_id, message_id = %queued.message_id,
                      chunk = queued.chunk, error = %e, "bulk chunk will be retried");
                batch.records_retried += 1;
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    batch.store = stats::snapshot().since(started);
    (response, batch)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::batch::build_chunks;
    use crate::domain::progress::ProgressCounts;
    use crate::domain::protocol::{Request, parse_request};
    use crate::ports::inbox::{BatchMeta, Inbox};
    use crate::ports::memberships::Memberships;
    use crate::twin::{Fault, Twin};

    const R: Region = Region::Eu1;
    const P: &str = "P1";

    /// Stores a message of `users` customer ids joining audience 7, the `way` given.
    async fn stored(twin: &Twin, message_id: &str, users: usize, way: Way) -> QueuedChunk {
        stored_with(twin, message_id, users, 0, way).await
    }

    /// Stores a message of `users` customer ids and `anonymous` users with only an mParticle
    /// ID, all joining audience 7.
    async fn stored_with(
        twin: &Twin,
        message_id: &str,
        users: usize,
        anonymous: usize,
        way: Way,
    ) -> QueuedChunk {
        let profiles: Vec<serde_json::Value> = (0..users)
            .map(|i| json!({"user_identities": [{"type": "customer", "encoding": "raw", "value": format!("c-{i}")}],
                            "mpid": "9", "audiences": [{"audience_id": 7, "action": "add"}]}))
            .chain((0..anonymous).map(|i| json!({"mpid": format!("{}", 100 + i),
                            "audiences": [{"audience_id": 7, "action": "add"}]})))
            .collect();
        let body = json!({"type": "audience_membership_change_request", "id": message_id,
                          "timestamp_ms": 1_000, "account": {"account_id": 1},
                          "user_profiles": profiles})
        .to_string();
        let Ok(Request::AudienceMembershipChange(req)) = parse_request(body.as_bytes()) else {
            panic!("a membership request");
        };
        let chunks = build_chunks(&req.user_profiles.unwrap()).unwrap();
        let meta = BatchMeta {
            project_id: P,
            message_id,
            message_ts: 1_000,
            received_ms: 1_000,
            way,
        };
        twin.put_batch(R, &meta, &chunks).await.unwrap();
        QueuedChunk {
            region: R,
            project_id: P.into(),
            message_id: message_id.into(),
            chunk: 0,
        }
    }

    async fn members(twin: &Twin) -> i64 {
        let counts = twin.segment_counts(R, P, &[7]).await.unwrap();
        counts.get(&7).map_or(0, |c| c.member_count)
    }

    #[tokio::test]
    async fn a_queued_chunk_is_resolved_and_materialized_once_however_often_it_comes() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored(&twin, "m1", 3, Way::Bulk).await;
        let Worked::Materialized { counts, .. } = work_chunk(&twin, &queued).await.unwrap() else {
            panic!("worked to its end");
        };
        assert_eq!(counts.added, 3);
        assert_eq!(members(&twin).await, 3);
        assert_eq!(
            work_chunk(&twin, &queued).await.unwrap(),
            Worked::AlreadyDone
        );
        assert_eq!(members(&twin).await, 3);
    }

    #[tokio::test]
    async fn a_chunk_resolved_before_a_failure_is_materialized_on_the_retry() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored(&twin, "m1", 2, Way::Bulk).await;
        let row = twin.chunk_row(R, key_of(&queued)).await.unwrap().unwrap();
        // The first attempt resolved it and stopped (a timeout, a crash).
        resolve_chunk(&twin, R, &row).await.unwrap();
        let again = work_chunk(&twin, &queued).await.unwrap();
        assert!(matches!(again, Worked::Materialized { .. }), "{again:?}");
        assert_eq!(members(&twin).await, 2);
    }

    #[tokio::test]
    async fn a_live_chunk_is_not_the_bulk_workers() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored(&twin, "m1", 2, Way::Live).await;
        assert_eq!(work_chunk(&twin, &queued).await.unwrap(), Worked::NotBulk);
        let row = twin.chunk_row(R, key_of(&queued)).await.unwrap().unwrap();
        assert_eq!(row.status, InboxStatus::Received, "left to the stream");
    }

    async fn progress(twin: &Twin) -> ProgressCounts {
        twin.import_progress(R, P, 7, now_ms())
            .await
            .unwrap()
            .counts
    }

    fn counts(received: u64, resolved: u64, skipped: u64, applied: u64) -> ProgressCounts {
        ProgressCounts {
            received,
            resolved,
            skipped,
            applied,
            failed: 0,
        }
    }

    /// Stores a bulk message whose one chunk can never be parsed, owing `audiences` changes to
    /// their progress.
    async fn stored_garbage(twin: &Twin, audiences: crate::domain::progress::Owed) -> QueuedChunk {
        let meta = BatchMeta {
            project_id: P,
            message_id: "m1",
            message_ts: 1_000,
            received_ms: 1_000,
            way: Way::Bulk,
        };
        let garbage = crate::domain::batch::Chunk {
            index: 0,
            profile_count: 4,
            payload: b"not a compressed chunk".to_vec(),
            audiences,
        };
        twin.put_batch(R, &meta, &[garbage]).await.unwrap();
        QueuedChunk {
            region: R,
            project_id: P.into(),
            message_id: "m1".into(),
            chunk: 0,
        }
    }

    #[tokio::test]
    async fn a_chunk_that_can_never_parse_is_marked_failed_not_retried() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored_garbage(&twin, Default::default()).await;
        assert_eq!(work_chunk(&twin, &queued).await.unwrap(), Worked::Failed);
        let row = twin.chunk_row(R, key_of(&queued)).await.unwrap().unwrap();
        assert_eq!(row.status, InboxStatus::Failed);
        assert_eq!(
            work_chunk(&twin, &queued).await.unwrap(),
            Worked::AlreadyDone
        );
    }

    #[tokio::test]
    async fn an_imports_progress_counts_each_change_once_through_redeliveries_and_retries() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored_with(&twin, "m1", 3, 2, Way::Bulk).await;
        assert_eq!(progress(&twin).await, counts(5, 0, 0, 0));
        // A redelivery of the message stores nothing and counts nothing.
        stored_with(&twin, "m1", 3, 2, Way::Bulk).await;
        assert_eq!(progress(&twin).await, counts(5, 0, 0, 0));

        // The first attempt's resolve meets a conflict (nothing written), its materialize
        // commits but never hears so (a timeout): the retry finds the chunk done.
        twin.inject("inbox.mark_resolved", Fault::TransactionConflict);
        assert!(work_chunk(&twin, &queued).await.is_err());
        assert_eq!(progress(&twin).await, counts(5, 0, 0, 0));
        twin.inject("inbox.mark_materialized", Fault::TimeoutAfterCommit);
        assert!(work_chunk(&twin, &queued).await.is_err());
        // The two anonymous users were skipped at resolve: nothing left to do for them.
        assert_eq!(progress(&twin).await, counts(5, 5, 2, 3));
        assert_eq!(
            work_chunk(&twin, &queued).await.unwrap(),
            Worked::AlreadyDone
        );
        let reading = twin.import_progress(R, P, 7, now_ms()).await.unwrap();
        assert_eq!(reading.counts, counts(5, 5, 2, 3));
        let shown = crate::domain::progress::import_progress(&reading, now_ms()).unwrap();
        assert_eq!((shown.remaining, shown.fraction), (0, 1.0));
        assert!(
            shown.rate_per_s > 0.0,
            "the three applied changes count in the rate"
        );
    }

    #[tokio::test]
    async fn a_live_chunk_counts_no_import_progress() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        stored(&twin, "m1", 2, Way::Live).await;
        assert_eq!(progress(&twin).await, ProgressCounts::default());
    }

    #[tokio::test]
    async fn a_chunk_that_fails_counts_what_it_owed_as_failed() {
        let twin = Twin::new();
        twin.setup_project(R, P);
        let queued = stored_garbage(&twin, [(7, 4)].into()).await;
        assert_eq!(work_chunk(&twin, &queued).await.unwrap(), Worked::Failed);
        assert_eq!(
            work_chunk(&twin, &queued).await.unwrap(),
            Worked::AlreadyDone
        );
        let p = progress(&twin).await;
        assert_eq!((p.received, p.failed, p.done()), (4, 4, 4));
    }

    fn key_of(q: &QueuedChunk) -> ChunkKey<'_> {
        ChunkKey {
            project_id: &q.project_id,
            message_id: &q.message_id,
            chunk: q.chunk,
        }
    }
}
