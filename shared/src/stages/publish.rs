//! `publish`: the events table's stream → the stack's EventBridge bus (contract §5).
//!
//! Per invocation:
//! 1. Each record becomes one feed entry (a Partner Sync event rendered by `domain::feed`, or a
//!    notice as written); a record that cannot be read fails alone.
//! 2. The entries go out in `PutEvents` calls within its limits, a few calls at once; entries
//!    EventBridge refused are put again, alone, up to [`PUT_ATTEMPTS`] times with a backoff.
//! 3. Records whose entry never went out are reported back (`ReportBatchItemFailures`): Lambda
//!    retries from the first of them, so a record already published may be published again,
//!    which subscribers drop by `event_id` (at-least-once).

use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use futures::stream::{self, StreamExt};

use crate::bus::{Bus, EntryOutcome};
use crate::domain::feed::{FeedEntry, FeedKind, partner_sync_entry, put_batches};
use crate::domain::protocol::now_ms;
use crate::stages::stream::{failure, record_source, response};
use crate::store::feed::{FeedRecord, feed_record_of_image};
use crate::store::tables::{Table, TableNames};

/// Tries of one entry before its record is handed back to Lambda.
pub const PUT_ATTEMPTS: u32 = 4;
/// `PutEvents` calls in flight at once per invocation.
const CALLS_AT_ONCE: usize = 4;

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
}

/// Step 1: the entry of one record.
fn entry_of(names: &TableNames, record: &EventRecord) -> Result<FeedEntry, String> {
    let (region, table) = record_source(names, record).map_err(|e| e.to_string())?;
    if table != Table::Events {
        return Err(format!("record of table {table:?}, not events"));
    }
    match feed_record_of_image(&record.change.new_image)? {
        FeedRecord::Sync(row) => Ok(partner_sync_entry(&row, region)),
        FeedRecord::Notice(entry) => Ok(entry),
    }
}

/// How one call's worth of entries went.
struct CallOutcome {
    /// Per entry: when the `PutEvents` that took it answered, or `None` if none did.
    put_at: Vec<Option<i64>>,
    /// Entry failures seen along the way.
    failures: u64,
}

/// Step 2 for one call's worth of entries: put, then put again what EventBridge refused.
async fn put_with_retries(bus: &Bus, entries: &[&FeedEntry]) -> CallOutcome {
    let mut put_at: Vec<Option<i64>> = vec![None; entries.len()];
    let mut pending: Vec<usize> = (0..entries.len()).collect();
    let mut failures = 0;
    for attempt in 0..PUT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << (2 * attempt))).await;
        }
        let batch: Vec<&FeedEntry> = pending.iter().map(|&i| entries[i]).collect();
        match bus.put(&batch).await {
            Ok(outcomes) => {
                let now = now_ms();
                let mut still = Vec::new();
                for (&i, outcome) in pending.iter().zip(outcomes) {
                    match outcome {
                        EntryOutcome::Put => put_at[i] = Some(now),
                        EntryOutcome::Failed(code) => {
                            tracing::warn!(code, attempt, "PutEvents refused an entry");
                            failures += 1;
                            still.push(i);
                        }
                    }
                }
                pending = still;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, entries = pending.len(), "PutEvents failed");
                failures += pending.len() as u64;
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    CallOutcome { put_at, failures }
}

/// The publish Lambda: records in, `batchItemFailures` out.
pub async fn handle_event(
    bus: &Bus,
    names: &TableNames,
    event: Event,
) -> (DynamoDbEventResponse, PublishBatch) {
    let records = &event.records;
    let mut batch = PublishBatch {
        records: records.len() as u64,
        ..PublishBatch::default()
    };
    // 1. Entries, and the records that have none.
    let mut unreadable = Vec::new();
    let mut entries = Vec::new();
    let mut owners = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match entry_of(names, record) {
            Ok(e) => {
                entries.push(e);
                owners.push(i);
            }
            Err(e) => {
                tracing::error!(stage = "publish", error = %e, sequence = ?record.change.sequence_number,
                                "record unreadable; will be retried");
                unreadable.push(i);
            }
        }
    }
    // 2. The calls.
    let calls: Vec<(std::ops::Range<usize>, CallOutcome)> = stream::iter(put_batches(&entries))
        .map(|range| {
            let slice: Vec<&FeedEntry> = entries[range.clone()].iter().collect();
            async move { (range, put_with_retries(bus, &slice).await) }
        })
        .buffer_unordered(CALLS_AT_ONCE)
        .collect()
        .await;
    let mut failed_records = unreadable;
    for (range, outcome) in calls {
        batch.failed_entries += outcome.failures;
        for (offset, at) in outcome.put_at.into_iter().enumerate() {
            let entry = &entries[range.start + offset];
            match at {
                Some(t) => {
                    batch.lag_ms.push((t - entry.recorded_ms).max(0) as f64);
                    match entry.kind {
                        FeedKind::PartnerSync => batch.partner_sync += 1,
                        FeedKind::ProfileErased => batch.profiles_erased += 1,
                        FeedKind::SegmentCleared => batch.segments_cleared += 1,
                    }
                }
                None => failed_records.push(owners[range.start + offset]),
            }
        }
    }
    // 3. What Lambda retries.
    failed_records.sort_unstable();
    batch.records_failed = failed_records.len() as u64;
    if !failed_records.is_empty() {
        tracing::error!(
            stage = "publish",
            records = failed_records.len(),
            "entries not put after retries; records handed back"
        );
    }
    let failures = failed_records
        .into_iter()
        .map(|i| failure(&records[i]))
        .collect();
    (response(failures), batch)
}
