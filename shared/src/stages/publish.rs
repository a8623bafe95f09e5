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

use crate::domain::feed::{FeedEntry, FeedKind, partner_sync_entry, put_batches};
use crate::domain::invocations::PublishBatch;
use crate::domain::protocol::now_ms;
use crate::domain::ways::Way;
use crate::ports::bus::{EntryOutcome, EventBus};
use crate::stages::stream::{failure, record_source, response};
use crate::store::feed::{FeedRecord, feed_record_of_image};
use crate::store::tables::{Table, TableNames};

/// Tries of one entry before its record is handed back to Lambda.
pub const PUT_ATTEMPTS: u32 = 4;
/// `PutEvents` calls in flight at once per invocation.
const CALLS_AT_ONCE: usize = 4;

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
async fn put_with_retries(bus: &impl EventBus, entries: &[&FeedEntry]) -> CallOutcome {
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
    bus: &impl EventBus,
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
                    if let Some(received) = entry.received_ms {
                        let end_to_end = (t - received).max(0) as f64;
                        match entry.way {
                            Way::Live => batch.feed_latency_ms.push(end_to_end),
                            Way::Bulk => batch.feed_latency_bulk_ms.push(end_to_end),
                        }
                    }
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

/// The publisher on the twin bus: what it makes of refusals, failed calls and unreadable
/// records, with no EventBridge stand-in.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::feed::profile_erased;
    use crate::domain::region::Region;
    use crate::store::feed::notice_put;
    use crate::twin::TwinBus;

    fn names() -> TableNames {
        TableNames::new("ctmp")
    }

    /// A stream record of the events table carrying the `Profile Erased` notice of person `n`.
    fn notice_record(n: usize, table: Table) -> EventRecord {
        let names = names();
        let notice = profile_erased(
            "P1",
            Region::Eu1,
            &format!("ct-{n}"),
            1_000,
            2_000 + n as i64,
        );
        let item = notice_put(&names.name(Region::Eu1, Table::Events), &notice).item;
        let mut r = EventRecord::default();
        r.event_source_arn = Some(format!(
            "arn:aws:dynamodb:eu-west-1:1:table/{}/stream/x",
            names.name(Region::Eu1, table)
        ));
        r.change.new_image = item.into();
        r.change.sequence_number = Some(format!("{n:05}"));
        r
    }

    /// A stream record of a Partner Sync event of change `n`, the way given, received at 1,000.
    fn sync_record(n: usize, way: Way) -> EventRecord {
        use crate::domain::changes::{ChangeAction, MembershipChange};
        use crate::domain::segment_state::SyncAction;
        use crate::ports::memberships::EventSegment;
        use crate::store::segment_item::SegmentLayout;
        let change = MembershipChange {
            clevertap_id: format!("ct-{n}"),
            identity: None,
            audience_id: 7,
            audience_name: None,
            action: ChangeAction::Add,
            ts_ms: 900,
            message_id: "m".into(),
            profile_index: n as u32,
            entry_index: 0,
            received_ms: Some(1_000),
            way,
        };
        let segment = EventSegment {
            name: "S",
            activated_ms: None,
        };
        let layout = SegmentLayout {
            audience_id: 7,
            buckets: 64,
        };
        let item = crate::store::rows::events::event_item(
            "P1",
            layout,
            &change,
            SyncAction::Added,
            segment,
            2_000,
        );
        let mut r = notice_record(n, Table::Events);
        r.change.new_image = item.into();
        r
    }

    #[tokio::test]
    async fn each_ways_end_to_end_latency_is_measured_from_the_changes_receipt() {
        let bus = TwinBus::new();
        let records = (0..3)
            .map(|n| sync_record(n, Way::Live))
            .chain((3..5).map(|n| sync_record(n, Way::Bulk)));
        let (response, batch) = handle_event(&bus, &names(), event(records)).await;
        assert!(failed(&response).is_empty());
        assert_eq!(batch.partner_sync, 5);
        assert_eq!(
            (
                batch.feed_latency_ms.len(),
                batch.feed_latency_bulk_ms.len()
            ),
            (3, 2)
        );
        // Put now: from the receipt at 1,000 ms, at least as long as from the recording at 2,000.
        let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        assert!(min(&batch.feed_latency_ms) >= min(&batch.lag_ms) + 1_000.0);
    }

    fn event(records: impl IntoIterator<Item = EventRecord>) -> Event {
        let mut e = Event::default();
        e.records = records.into_iter().collect();
        e
    }

    fn failed(response: &DynamoDbEventResponse) -> Vec<String> {
        response
            .batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    }

    fn event_ids(bus: &TwinBus) -> Vec<String> {
        let mut ids: Vec<String> = bus
            .put_entries()
            .iter()
            .map(|e| {
                let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
                detail["event_id"].as_str().unwrap().to_owned()
            })
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn every_record_is_put_once_in_calls_of_at_most_ten() {
        let bus = TwinBus::new();
        let (response, batch) = handle_event(
            &bus,
            &names(),
            event((0..25).map(|n| notice_record(n, Table::Events))),
        )
        .await;
        assert!(failed(&response).is_empty());
        assert_eq!(
            (batch.records, batch.profiles_erased, batch.records_failed),
            (25, 25, 0)
        );
        assert_eq!(bus.calls(), 3, "25 entries in calls of ten");
        let mut expected: Vec<String> = (0..25).map(|n| format!("erased:ct-{n}:1000")).collect();
        expected.sort();
        assert_eq!(event_ids(&bus), expected);
        assert_eq!(batch.lag_ms.len(), 25);
    }

    #[tokio::test]
    async fn refused_entries_are_put_again_within_the_invocation() {
        let bus = TwinBus::new();
        bus.refuse_entries(3, "ThrottlingException");
        let (response, batch) = handle_event(
            &bus,
            &names(),
            event((0..4).map(|n| notice_record(n, Table::Events))),
        )
        .await;
        assert!(failed(&response).is_empty(), "{response:?}");
        assert_eq!(batch.failed_entries, 3);
        assert_eq!(bus.put_entries().len(), 4, "each entry put exactly once");
        assert_eq!(event_ids(&bus).len(), 4);
    }

    #[tokio::test]
    async fn an_entry_refused_on_every_try_hands_back_only_its_record() {
        let bus = TwinBus::new();
        bus.refuse_entry("erased:ct-1:", PUT_ATTEMPTS as usize, "InternalFailure");
        let records: Vec<EventRecord> = (0..4).map(|n| notice_record(n, Table::Events)).collect();
        let (response, batch) = handle_event(&bus, &names(), event(records)).await;
        assert_eq!(
            failed(&response),
            ["00001"],
            "only the refused record goes back"
        );
        assert_eq!(batch.records_failed, 1);
        assert_eq!(batch.failed_entries, PUT_ATTEMPTS as u64);
        assert_eq!(
            event_ids(&bus),
            ["erased:ct-0:1000", "erased:ct-2:1000", "erased:ct-3:1000"]
        );
    }

    #[tokio::test]
    async fn a_call_that_fails_whole_is_tried_again_and_then_hands_its_records_back() {
        let bus = TwinBus::new();
        bus.fail_calls(2);
        let records: Vec<EventRecord> = (0..3).map(|n| notice_record(n, Table::Events)).collect();
        let (response, batch) = handle_event(&bus, &names(), event(records.clone())).await;
        assert!(failed(&response).is_empty());
        assert_eq!(
            batch.failed_entries, 6,
            "three entries failed in each of two calls"
        );
        assert_eq!(bus.put_entries().len(), 3);

        let down = TwinBus::new();
        down.fail_calls(PUT_ATTEMPTS as usize);
        let (response, batch) = handle_event(&down, &names(), event(records)).await;
        assert_eq!(failed(&response), ["00000", "00001", "00002"]);
        assert_eq!(batch.records_failed, 3);
        assert!(down.put_entries().is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_record_fails_alone() {
        let bus = TwinBus::new();
        let records = [
            notice_record(0, Table::Events),
            notice_record(1, Table::Inbox),
            notice_record(2, Table::Events),
        ];
        let (response, batch) = handle_event(&bus, &names(), event(records)).await;
        assert_eq!(failed(&response), ["00001"]);
        assert_eq!((batch.profiles_erased, batch.records_failed), (2, 1));
    }
}
