//! The inbox port's contract.

use shared::domain::batch::Chunk;
use shared::domain::records::InboxStatus;
use shared::domain::sync_log::{MaterializeCounts, ResolveOutcomes};
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
            .mark_materialized(HOME, key("m", 0), &applied)
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
            .mark_materialized(HOME, key("m", 0), &MaterializeCounts::default())
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(
        inbox.mark_failed(HOME, key("m", 0), "late").await.unwrap(),
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
            .mark_materialized(HOME, key("m", 0), &MaterializeCounts::default())
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
            .mark_failed(HOME, key("gone", 0), "why")
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
    for chunk in [0, 1] {
        assert_eq!(
            inbox
                .mark_failed(HOME, key("m", chunk), "payload unreadable")
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
            .mark_materialized(HOME, key("m", 1), &MaterializeCounts::default())
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
