//! The inbox port's contract.

use shared::domain::batch::Chunk;
use shared::domain::progress::{ProgressCounts, import_progress};
use shared::domain::records::InboxStatus;
use shared::domain::sync_log::{MaterializeCounts, ResolveOutcomes};
use shared::domain::ways::Way;
use shared::ports::inbox::{BatchMeta, ChangeCounts, ChunkKey, Handoff, Inbox, PutBatchOutcome};
use shared::ports::{StoreError, Written};

use super::{HOME, OTHER, contract_cases};

contract_cases!(
    a_batch_is_stored_whole_once_and_its_redelivery_writes_nothing,
    a_redelivery_with_more_chunks_than_were_stored_writes_none_of_them,
    a_chunk_moves_received_resolved_materialized_each_step_once,
    a_move_from_the_wrong_status_or_of_a_missing_chunk_fails_its_condition_and_creates_nothing,
    a_failed_chunk_keeps_its_reason_and_moves_no_further,
    a_batch_of_more_than_100_chunks_is_refused_whole,
    an_item_over_400_kb_is_refused,
    rows_stay_in_their_region,
    a_bulk_batch_counts_its_progress_once_with_each_step_and_never_with_a_redelivery,
    a_live_batch_counts_no_progress,
);

const MESSAGE_TS: i64 = 1_700_000_000_000;

fn meta(message_id: &str) -> BatchMeta<'_> {
    BatchMeta {
        project_id: "P1",
        message_id,
        message_ts: MESSAGE_TS,
        received_ms: MESSAGE_TS + 250,
        way: Default::default(),
    }
}

fn chunks(n: u32) -> Vec<Chunk> {
    (0..n)
        .map(|index| Chunk {
            index,
            profile_count: index + 1,
            payload: vec![index as u8 + 1; 16],
            audiences: Default::default(),
        })
        .collect()
}

fn key(message_id: &str, chunk: u32) -> ChunkKey<'_> {
    ChunkKey {
        project_id: "P1",
        message_id,
        chunk,
    }
}

fn handoff_of(outcomes: &ResolveOutcomes) -> Handoff<'_> {
    Handoff {
        changes: &[7, 7, 7],
        outcomes,
        handed_on: ChangeCounts { add: 2, delete: 1 },
        owed_after: None,
        progress: &[],
    }
}

async fn a_batch_is_stored_whole_once_and_its_redelivery_writes_nothing(inbox: &impl Inbox) {
    for (message, n) in [("m-one", 1), ("m-three", 3)] {
        let sent = chunks(n);
        assert_eq!(
            inbox.put_batch(HOME, &meta(message), &sent).await.unwrap(),
            PutBatchOutcome::Stored { chunks: n as usize }
        );
        for chunk in &sent {
            let row = inbox
                .chunk_row(HOME, key(message, chunk.index))
                .await
                .unwrap()
                .expect("every chunk is stored");
            assert_eq!(row, meta(message).row(chunk, n as usize));
            assert_eq!(row.status, InboxStatus::Received);
            assert_eq!(row.payload, chunk.payload);
        }
        // A redelivery with other payloads changes nothing.
        let mut again = chunks(n);
        again.iter_mut().for_each(|c| c.payload = vec![0xee; 4]);
        assert_eq!(
            inbox.put_batch(HOME, &meta(message), &again).await.unwrap(),
            PutBatchOutcome::Duplicate
        );
        let first = inbox
            .chunk_row(HOME, key(message, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.payload, sent[0].payload);
    }
}

async fn a_redelivery_with_more_chunks_than_were_stored_writes_none_of_them(inbox: &impl Inbox) {
    stored(inbox, 2).await;
    assert_eq!(
        inbox.put_batch(HOME, &meta("m"), &chunks(4)).await.unwrap(),
        PutBatchOutcome::Duplicate
    );
    for extra in [2, 3] {
        assert_eq!(inbox.chunk_row(HOME, key("m", extra)).await.unwrap(), None);
    }
}

async fn a_chunk_moves_received_resolved_materialized_each_step_once(inbox: &impl Inbox) {
    stored(inbox, 1).await;
    let outcomes = ResolveOutcomes {
        identity: 2,
        created: 1,
        ..Default::default()
    };
    assert_eq!(
        inbox
            .mark_resolved(HOME, key("m", 0), handoff_of(&outcomes))
            .await
            .unwrap(),
        Written::Applied
    );
    let resolved = inbox.chunk_row(HOME, key("m", 0)).await.unwrap().unwrap();
    assert_eq!(resolved.status, InboxStatus::Resolved);
    assert!(
        resolved.payload.is_empty(),
        "the payload is dropped once resolved"
    );
    assert_eq!(resolved.changes.as_deref(), Some(&[7, 7, 7][..]));
    assert_eq!(resolved.outcomes.as_ref(), Some(&outcomes));
    assert_eq!(resolved.handed_on, Some(ChangeCounts { add: 2, delete: 1 }));
    // A replayed record finds the row moved on.
    assert_eq!(
        inbox
            .mark_resolved(HOME, key("m", 0), handoff_of(&ResolveOutcomes::default()))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        inbox
            .chunk_row(HOME, key("m", 0))
            .await
            .unwrap()
            .unwrap()
            .outcomes,
        Some(outcomes)
    );

    let applied = MaterializeCounts {
        added: 2,
        stale: 1,
        ..Default::default()
    };
    assert_eq!(
        inbox
            .mark_materialized(HOME, key("m", 0), &applied, &[])
            .await
            .unwrap(),
        Written::Applied
    );
    let done = inbox.chunk_row(HOME, key("m", 0)).await.unwrap().unwrap();
    assert_eq!(done.status, InboxStatus::Materialized);
    assert_eq!(
        done.changes, None,
        "the changes are dropped once materialized"
    );
    assert_eq!(done.applied.as_ref(), Some(&applied));
    assert_eq!(
        inbox
            .mark_materialized(HOME, key("m", 0), &MaterializeCounts::default(), &[])
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        inbox
            .mark_failed(HOME, key("m", 0), InboxStatus::Resolved, "late", &[])
            .await
            .unwrap(),
        Written::ConditionFailed,
        "a materialized chunk never fails"
    );
}

async fn a_move_from_the_wrong_status_or_of_a_missing_chunk_fails_its_condition_and_creates_nothing(
    inbox: &impl Inbox,
) {
    stored(inbox, 1).await;
    assert_eq!(
        inbox
            .mark_materialized(HOME, key("m", 0), &MaterializeCounts::default(), &[])
            .await
            .unwrap(),
        Written::ConditionFailed,
        "a received chunk is not materialized before it is resolved"
    );
    let outcomes = ResolveOutcomes::default();
    assert_eq!(
        inbox
            .mark_resolved(HOME, key("gone", 0), handoff_of(&outcomes))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        inbox
            .mark_failed(HOME, key("gone", 0), InboxStatus::Received, "why", &[])
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(inbox.chunk_row(HOME, key("gone", 0)).await.unwrap(), None);
    assert_eq!(
        inbox
            .chunk_row(HOME, key("m", 0))
            .await
            .unwrap()
            .unwrap()
            .status,
        InboxStatus::Received
    );
}

async fn a_failed_chunk_keeps_its_reason_and_moves_no_further(inbox: &impl Inbox) {
    stored(inbox, 2).await;
    let outcomes = ResolveOutcomes::default();
    assert!(
        inbox
            .mark_resolved(HOME, key("m", 1), handoff_of(&outcomes))
            .await
            .unwrap()
            .applied()
    );
    assert_eq!(
        inbox
            .mark_failed(HOME, key("m", 0), InboxStatus::Resolved, "why", &[])
            .await
            .unwrap(),
        Written::ConditionFailed,
        "a chunk fails only from the status it was read in"
    );
    for (chunk, from) in [(0, InboxStatus::Received), (1, InboxStatus::Resolved)] {
        assert_eq!(
            inbox
                .mark_failed(HOME, key("m", chunk), from, "payload unreadable", &[])
                .await
                .unwrap(),
            Written::Applied,
            "received and resolved chunks can fail"
        );
        let row = inbox
            .chunk_row(HOME, key("m", chunk))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, InboxStatus::Failed);
        assert_eq!(row.failure.as_deref(), Some("payload unreadable"));
        assert!(
            row.payload.is_empty() && row.changes.is_none(),
            "no profiles or changes kept for the inbox's 30 days"
        );
    }
    assert_eq!(
        inbox
            .mark_resolved(HOME, key("m", 0), handoff_of(&outcomes))
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        inbox
            .mark_materialized(HOME, key("m", 1), &MaterializeCounts::default(), &[])
            .await
            .unwrap(),
        Written::ConditionFailed
    );
}

async fn a_batch_of_more_than_100_chunks_is_refused_whole(inbox: &impl Inbox) {
    let err = inbox
        .put_batch(HOME, &meta("m"), &chunks(101))
        .await
        .expect_err("DynamoDB takes at most 100 actions in one transaction");
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(inbox.chunk_row(HOME, key("m", 0)).await.unwrap(), None);
    assert_eq!(
        inbox
            .put_batch(HOME, &meta("m"), &chunks(100))
            .await
            .unwrap(),
        PutBatchOutcome::Stored { chunks: 100 }
    );
}

async fn an_item_over_400_kb_is_refused(inbox: &impl Inbox) {
    let mut big = chunks(1);
    big[0].payload = vec![1; 401 * 1024];
    let err = inbox
        .put_batch(HOME, &meta("m"), &big)
        .await
        .expect_err("an item over 400 KB");
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(inbox.chunk_row(HOME, key("m", 0)).await.unwrap(), None);
}

async fn rows_stay_in_their_region(inbox: &impl Inbox) {
    stored(inbox, 1).await;
    assert_eq!(inbox.chunk_row(OTHER, key("m", 0)).await.unwrap(), None);
    assert_eq!(
        inbox
            .put_batch(OTHER, &meta("m"), &chunks(1))
            .await
            .unwrap(),
        PutBatchOutcome::Stored { chunks: 1 },
        "the same message in another region is another row"
    );
}

/// A setup's batch, stored whole: a contended transaction (DynamoDB Local reports one now and
/// then on a fresh table) is sent again, as authorize's `store_batch` does.
async fn stored(inbox: &impl Inbox, chunk_count: u32) {
    for _ in 0..5 {
        match inbox
            .put_batch(HOME, &meta("m"), &chunks(chunk_count))
            .await
            .unwrap()
        {
            PutBatchOutcome::Contended => continue,
            PutBatchOutcome::Stored { .. } => return,
            other => panic!("a setup batch was not stored: {other:?}"),
        }
    }
    panic!("a setup batch stayed contended");
}

fn progress_chunks() -> Vec<Chunk> {
    [[(7, 3)].as_slice(), [(7, 2), (8, 1)].as_slice()]
        .iter()
        .enumerate()
        .map(|(index, audiences)| Chunk {
            index: index as u32,
            profile_count: 3,
            payload: vec![index as u8 + 1; 16],
            audiences: audiences.iter().copied().collect(),
        })
        .collect()
}

async fn counts_of(inbox: &impl Inbox, audience_id: i64) -> ProgressCounts {
    let now = shared::domain::protocol::now_ms();
    inbox
        .import_progress(HOME, "P1", audience_id, now)
        .await
        .unwrap()
        .counts
}

fn counts(received: u64, resolved: u64, skipped: u64, applied: u64, failed: u64) -> ProgressCounts {
    ProgressCounts {
        received,
        resolved,
        skipped,
        applied,
        failed,
    }
}

async fn a_bulk_batch_counts_its_progress_once_with_each_step_and_never_with_a_redelivery(
    inbox: &impl Inbox,
) {
    let meta = BatchMeta {
        way: Way::Bulk,
        ..meta("m")
    };
    let chunks = progress_chunks();
    for _delivery in 0..2 {
        inbox.put_batch(HOME, &meta, &chunks).await.unwrap();
    }
    assert_eq!(counts_of(inbox, 7).await, counts(5, 0, 0, 0, 0));
    assert_eq!(counts_of(inbox, 8).await, counts(1, 0, 0, 0, 0));
    let row = inbox.chunk_row(HOME, key("m", 0)).await.unwrap().unwrap();
    assert_eq!(row.way, Way::Bulk);
    assert_eq!(row.progress, Some([(7, 3)].into()));

    // Resolved, two of three handed on: all resolved, one skipped; a replay moves nothing.
    let outcomes = ResolveOutcomes::default();
    let (progress, after) = row.progress_on_resolve([7, 7], shared::domain::protocol::now_ms());
    for expected in [Written::Applied, Written::ConditionFailed] {
        let handoff = Handoff {
            owed_after: after.as_ref(),
            progress: &progress,
            ..handoff_of(&outcomes)
        };
        assert_eq!(
            inbox
                .mark_resolved(HOME, key("m", 0), handoff)
                .await
                .unwrap(),
            expected
        );
    }
    assert_eq!(counts_of(inbox, 7).await, counts(5, 3, 1, 0, 0));
    let row = inbox.chunk_row(HOME, key("m", 0)).await.unwrap().unwrap();
    assert_eq!(
        row.progress,
        Some([(7, 2)].into()),
        "it owes what it handed on"
    );

    // Materialized: what it owed, applied, and counted in the rate.
    let progress = row.progress_on_materialize(shared::domain::protocol::now_ms());
    for expected in [Written::Applied, Written::ConditionFailed] {
        let written = inbox
            .mark_materialized(HOME, key("m", 0), &MaterializeCounts::default(), &progress)
            .await
            .unwrap();
        assert_eq!(written, expected);
    }
    assert_eq!(counts_of(inbox, 7).await, counts(5, 3, 1, 2, 0));

    // The other chunk fails as received: both its audiences' changes, failed.
    let other = inbox.chunk_row(HOME, key("m", 1)).await.unwrap().unwrap();
    let progress = other.progress_on_fail(shared::domain::protocol::now_ms());
    for expected in [Written::Applied, Written::ConditionFailed] {
        let written = inbox
            .mark_failed(
                HOME,
                key("m", 1),
                InboxStatus::Received,
                "unreadable",
                &progress,
            )
            .await
            .unwrap();
        assert_eq!(written, expected);
    }
    assert_eq!(counts_of(inbox, 7).await, counts(5, 3, 1, 2, 2));
    assert_eq!(counts_of(inbox, 8).await, counts(1, 0, 0, 0, 1));

    let now = shared::domain::protocol::now_ms();
    let reading = inbox.import_progress(HOME, "P1", 7, now).await.unwrap();
    let shown = import_progress(&reading, now).unwrap();
    assert_eq!((shown.remaining, shown.fraction), (0, 1.0));
    assert!(shown.rate_per_s > 0.0, "{reading:?}");
    assert!(reading.started_ms.is_some_and(|s| s <= now));
    assert_eq!(
        inbox
            .import_progress(OTHER, "P1", 7, now)
            .await
            .unwrap()
            .counts,
        ProgressCounts::default(),
        "progress stays in its region"
    );
}

async fn a_live_batch_counts_no_progress(inbox: &impl Inbox) {
    inbox
        .put_batch(HOME, &meta("m"), &progress_chunks())
        .await
        .unwrap();
    let row = inbox.chunk_row(HOME, key("m", 0)).await.unwrap().unwrap();
    assert_eq!((row.way, row.progress), (Way::Live, None));
    assert_eq!(counts_of(inbox, 7).await, ProgressCounts::default());
}
