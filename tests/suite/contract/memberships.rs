//! The memberships port's contract: rows, Partner Sync events and sharded counters, written
//! together or not at all.

use shared::domain::calendar::month_of;
use shared::domain::changes::{ChangeAction, MembershipChange};
use shared::domain::records::{SegmentKey, SegmentLayout, SegmentStatus};
use shared::domain::segment_state::{MemberState, SyncAction};
use shared::ports::memberships::{
    EventSegment, Memberships, OpenTx, PairWrite, PairsOutcome, SyncHistory,
};
use shared::ports::{StoreError, Written};
use shared::store::Store;
use shared::twin::Twin;

use super::{HOME, contract_cases};

/// Archives a segment as a disconnect does (not a port of its own yet).
trait Disconnect {
    async fn disconnect(&self, audience_id: i64);
}

impl Disconnect for Store {
    async fn disconnect(&self, audience_id: i64) {
        let key = SegmentKey {
            region: HOME,
            project_id: P,
            audience_id,
        };
        assert!(self.archive_segment(&key, TS + 10_000, TS).await.unwrap());
    }
}

impl Disconnect for Twin {
    async fn disconnect(&self, audience_id: i64) {
        self.archive_segment(HOME, P, audience_id);
    }
}

contract_cases!(
    a_first_write_finds_the_shards_closed_and_opening_creates_the_segment,
    a_transaction_is_all_or_nothing_and_names_the_pairs_that_moved,
    a_no_op_advances_the_version_only_while_the_row_is_as_read,
    a_removal_counts_down_and_every_flip_is_an_event_and_a_data_point,
    an_archived_segment_counts_nothing_and_cannot_be_opened,
    a_writer_planning_with_other_buckets_can_neither_open_nor_count,
    a_transaction_of_more_than_100_actions_is_refused,
    a_transaction_naming_one_item_twice_never_commits,
    reads_asked_for_one_item_twice_answer_it_once,
    an_erased_member_leaves_its_count_once_and_a_pair_without_a_row_is_blocked,
);

const P: &str = "P1";
const TS: i64 = 1_700_000_000_000;
const LAYOUT: SegmentLayout = SegmentLayout {
    audience_id: 7,
    buckets: 64,
};
const SEGMENT: EventSegment<'static> = EventSegment {
    name: "Cart",
    activated_ms: Some(TS),
};

fn change(ct: &str, action: ChangeAction, ts_ms: i64, message: &str) -> MembershipChange {
    MembershipChange {
        clevertap_id: ct.to_owned(),
        identity: None,
        audience_id: LAYOUT.audience_id,
        audience_name: None,
        action,
        ts_ms,
        message_id: message.to_owned(),
        profile_index: 0,
        entry_index: 0,
        received_ms: None,
        way: Default::default(),
    }
}

/// The write of one flip of `ct`, planned from `expected`.
fn flip(ct: &str, action: ChangeAction, ts_ms: i64, expected: Option<&str>) -> PairWrite {
    let c = change(ct, action, ts_ms, &format!("m{ts_ms}"));
    let sync = match action {
        ChangeAction::Add => SyncAction::Added,
        ChangeAction::Delete => SyncAction::Removed,
    };
    let events = vec![(c.clone(), sync)];
    PairWrite {
        layout: LAYOUT,
        clevertap_id: ct.to_owned(),
        identity: None,
        expected_version: expected.map(str::to_owned),
        next: MemberState {
            member: action == ChangeAction::Add,
            version: Some(c.version()),
        },
        history: SyncHistory::default().with(&events),
        events,
        consumed: 1,
    }
}

async fn opened(store: &impl Memberships, layout: SegmentLayout) {
    assert_eq!(
        store
            .open_counter_shards(HOME, P, layout, "Cart", TS)
            .await
            .unwrap(),
        OpenTx::Opened
    );
}

async fn commit(store: &impl Memberships, pairs: &[&PairWrite]) {
    assert_eq!(
        store
            .write_pairs(HOME, P, LAYOUT, SEGMENT, pairs, TS)
            .await
            .unwrap(),
        PairsOutcome::Committed
    );
}

async fn counts(store: &impl Memberships, audience_id: i64) -> (i64, i64, i64) {
    let c = store
        .segment_counts(HOME, P, &[audience_id])
        .await
        .unwrap()
        .remove(&audience_id)
        .unwrap_or_default();
    (c.member_count, c.added_total, c.removed_total)
}

async fn version_of(store: &impl Memberships, ct: &str) -> Option<String> {
    store
        .pair_states(HOME, P, &[(LAYOUT, ct)])
        .await
        .unwrap()
        .remove(&(LAYOUT.audience_id, ct.to_owned()))
        .and_then(|row| row.state.version)
}

async fn a_first_write_finds_the_shards_closed_and_opening_creates_the_segment(
    store: &(impl Memberships + Disconnect),
) {
    let add = flip("ct-a", ChangeAction::Add, TS, None);
    let PairsOutcome::Cancelled(why) = store
        .write_pairs(HOME, P, LAYOUT, SEGMENT, &[&add], TS)
        .await
        .unwrap()
    else {
        panic!("a segment without open shards counts nothing");
    };
    assert!(why.shard_closed && why.moved.is_empty() && !why.transient && why.rejected.is_none());
    assert!(
        store
            .pair_states(HOME, P, &[(LAYOUT, "ct-a")])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.events_of(HOME, P, "ct-a").await.unwrap().is_empty());
    assert!(
        store
            .segments_by_id(HOME, P, &[7, 8])
            .await
            .unwrap()
            .is_empty()
    );

    opened(store, LAYOUT).await;
    let key = SegmentKey {
        region: HOME,
        project_id: P,
        audience_id: 7,
    };
    let segment = store
        .segment(&key)
        .await
        .unwrap()
        .expect("created by opening");
    assert_eq!(segment.status, SegmentStatus::Active);
    assert_eq!((segment.buckets, segment.name.as_str()), (64, "Cart"));
    assert_eq!(segment.segment_type, "Partner - mParticle");
    assert_eq!(
        store.segments_by_id(HOME, P, &[7, 8]).await.unwrap().len(),
        1
    );
    assert_eq!(counts(store, 7).await, (0, 0, 0));

    commit(store, &[&add]).await;
    let row = store
        .pair_states(HOME, P, &[(LAYOUT, "ct-a")])
        .await
        .unwrap()
        .remove(&(7, "ct-a".to_owned()))
        .expect("the row");
    assert_eq!(row.state, add.next);
    assert_eq!(
        row.history,
        SyncHistory {
            added: true,
            removed: false
        }
    );
    let events = store.events_of(HOME, P, "ct-a").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "Partner Sync");
    assert_eq!(events[0].ts_ms, TS);
    assert_eq!(counts(store, 7).await, (1, 1, 0));
    assert_eq!(store.usage_events(HOME, P, &month_of(TS)).await.unwrap(), 1);
}

async fn a_transaction_is_all_or_nothing_and_names_the_pairs_that_moved(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    let first = flip("ct-a", ChangeAction::Add, TS, None);
    commit(store, &[&first]).await;
    // ct-b is new and fine; ct-a was planned as if it had no row.
    let b = flip("ct-b", ChangeAction::Add, TS + 1, None);
    let stale = flip("ct-a", ChangeAction::Delete, TS + 2, None);
    let PairsOutcome::Cancelled(why) = store
        .write_pairs(HOME, P, LAYOUT, SEGMENT, &[&b, &stale], TS)
        .await
        .unwrap()
    else {
        panic!("a pair moved");
    };
    assert_eq!(why.moved, [1]);
    assert!(!why.shard_closed);
    assert!(
        store
            .pair_states(HOME, P, &[(LAYOUT, "ct-b")])
            .await
            .unwrap()
            .is_empty(),
        "nothing of it"
    );
    assert!(store.events_of(HOME, P, "ct-b").await.unwrap().is_empty());
    assert_eq!(counts(store, 7).await, (1, 1, 0));
    // The same change again: its event exists, so the pair moved too.
    let again = flip("ct-a", ChangeAction::Add, TS, first.next.version.as_deref());
    let PairsOutcome::Cancelled(why) = store
        .write_pairs(HOME, P, LAYOUT, SEGMENT, &[&again], TS)
        .await
        .unwrap()
    else {
        panic!("the event exists");
    };
    assert_eq!(why.moved, [0]);
    assert_eq!(store.events_of(HOME, P, "ct-a").await.unwrap().len(), 1);
}

async fn a_no_op_advances_the_version_only_while_the_row_is_as_read(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    let first = flip("ct-a", ChangeAction::Add, TS, None);
    commit(store, &[&first]).await;
    let mut noop = flip(
        "ct-a",
        ChangeAction::Add,
        TS + 5,
        first.next.version.as_deref(),
    );
    noop.events.clear();
    noop.history = first.history;
    assert_eq!(
        store
            .put_membership_if_unchanged(HOME, P, &noop, TS)
            .await
            .unwrap(),
        Written::Applied
    );
    assert_eq!(version_of(store, "ct-a").await, noop.next.version);
    // Planned from the first version, which is gone now.
    let late = noop.clone();
    assert_eq!(
        store
            .put_membership_if_unchanged(HOME, P, &late, TS)
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    // Planned as a new row, which it is not.
    let mut fresh = noop.clone();
    fresh.expected_version = None;
    assert_eq!(
        store
            .put_membership_if_unchanged(HOME, P, &fresh, TS)
            .await
            .unwrap(),
        Written::ConditionFailed
    );
    assert_eq!(counts(store, 7).await, (1, 1, 0), "a no-op counts nothing");
}

async fn a_removal_counts_down_and_every_flip_is_an_event_and_a_data_point(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    let add = flip("ct-a", ChangeAction::Add, TS, None);
    let other = flip("ct-b", ChangeAction::Add, TS, None);
    commit(store, &[&add, &other]).await;
    let mut remove = flip(
        "ct-a",
        ChangeAction::Delete,
        TS + 1,
        add.next.version.as_deref(),
    );
    remove.history = add.history.with(&remove.events);
    commit(store, &[&remove]).await;
    assert_eq!(counts(store, 7).await, (1, 2, 1));
    assert_eq!(store.events_of(HOME, P, "ct-a").await.unwrap().len(), 2);
    assert_eq!(store.usage_events(HOME, P, &month_of(TS)).await.unwrap(), 3);
    let row = store
        .pair_states(HOME, P, &[(LAYOUT, "ct-a")])
        .await
        .unwrap()
        .remove(&(7, "ct-a".to_owned()))
        .unwrap();
    assert!(!row.state.member);
    assert_eq!(
        row.history,
        SyncHistory {
            added: true,
            removed: true
        }
    );
}

async fn an_archived_segment_counts_nothing_and_cannot_be_opened(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    commit(store, &[&flip("ct-a", ChangeAction::Add, TS, None)]).await;
    store.disconnect(7).await;
    let late = flip("ct-b", ChangeAction::Add, TS + 1, None);
    let PairsOutcome::Cancelled(why) = store
        .write_pairs(HOME, P, LAYOUT, SEGMENT, &[&late], TS)
        .await
        .unwrap()
    else {
        panic!("sealed shards count nothing");
    };
    assert!(why.shard_closed);
    assert_eq!(
        store
            .open_counter_shards(HOME, P, LAYOUT, "Cart", TS)
            .await
            .unwrap(),
        OpenTx::SegmentCondition
    );
    let key = SegmentKey {
        region: HOME,
        project_id: P,
        audience_id: 7,
    };
    assert_eq!(
        store.segment(&key).await.unwrap().unwrap().status,
        SegmentStatus::Archiving
    );
    assert_eq!(counts(store, 7).await, (1, 1, 0));
}

async fn a_writer_planning_with_other_buckets_can_neither_open_nor_count(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    let other = SegmentLayout {
        audience_id: 7,
        buckets: 32,
    };
    assert_eq!(
        store
            .open_counter_shards(HOME, P, other, "Cart", TS)
            .await
            .unwrap(),
        OpenTx::SegmentCondition
    );
    let mut planned = flip("ct-a", ChangeAction::Add, TS, None);
    planned.layout = other;
    let PairsOutcome::Cancelled(why) = store
        .write_pairs(HOME, P, other, SEGMENT, &[&planned], TS)
        .await
        .unwrap()
    else {
        panic!("the shards record 64 buckets");
    };
    assert!(why.shard_closed);
    assert_eq!(counts(store, 7).await, (0, 0, 0));
}

async fn a_transaction_of_more_than_100_actions_is_refused(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    // 49 pairs of one row and one event each, the counter, a day and a month: 101.
    let pairs: Vec<PairWrite> = (0..49)
        .map(|i| flip(&format!("ct-{i}"), ChangeAction::Add, TS, None))
        .collect();
    let refs: Vec<&PairWrite> = pairs.iter().collect();
    let err = store.write_pairs(HOME, P, LAYOUT, SEGMENT, &refs, TS).await;
    assert!(matches!(err, Err(StoreError::Rejected(_))), "{err:?}");
    assert_eq!(counts(store, 7).await, (0, 0, 0));
    assert!(store.events_of(HOME, P, "ct-0").await.unwrap().is_empty());
}

/// AWS refuses a transaction naming one item twice (ValidationException) and the twin does so
/// too; DynamoDB Local cancels it instead (the second put's condition fails). Either way it
/// never commits and writes nothing, which is what the stages rely on (they never send one).
async fn a_transaction_naming_one_item_twice_never_commits(
    store: &(impl Memberships + Disconnect),
) {
    opened(store, LAYOUT).await;
    let a = flip("ct-a", ChangeAction::Add, TS, None);
    let b = flip("ct-b", ChangeAction::Add, TS, None);
    let outcome = store
        .write_pairs(HOME, P, LAYOUT, SEGMENT, &[&a, &b, &a], TS)
        .await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::Rejected(_)) | Ok(PairsOutcome::Cancelled(_))
        ),
        "{outcome:?}"
    );
    assert_eq!(counts(store, 7).await, (0, 0, 0));
    assert!(
        store
            .pair_states(HOME, P, &[(LAYOUT, "ct-a"), (LAYOUT, "ct-b")])
            .await
            .unwrap()
            .is_empty()
    );
}

/// DynamoDB refuses a BatchGetItem naming one key twice; a read asked for a segment or a pair
/// twice (two erased profiles of one segment, two resolutions of one profile) answers it once
/// instead of failing the chunk (#34, defect 6).
async fn reads_asked_for_one_item_twice_answer_it_once(store: &(impl Memberships + Disconnect)) {
    opened(store, LAYOUT).await;
    commit(store, &[&flip("ct-a", ChangeAction::Add, TS, None)]).await;
    let segments = store.segments_by_id(HOME, P, &[7, 7, 8]).await.unwrap();
    assert_eq!(segments.keys().copied().collect::<Vec<_>>(), [7]);
    let rows = store
        .pair_states(
            HOME,
            P,
            &[(LAYOUT, "ct-a"), (LAYOUT, "ct-a"), (LAYOUT, "ct-b")],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[&(7, "ct-a".to_owned())].state.member);
}

/// The erasure's row writes (`ports::erasures::ErasedRows`) and the segments it finds a
/// person's rows in: those their events name.
async fn an_erased_member_leaves_its_count_once_and_a_pair_without_a_row_is_blocked(
    store: &(impl Memberships + shared::ports::erasures::ErasedRows + Disconnect),
) {
    use shared::ports::erasures::RowErased;
    opened(store, LAYOUT).await;
    commit(store, &[&flip("ann", ChangeAction::Add, TS, None)]).await;
    let theirs = store.segments_of_events(HOME, P, "ann").await.unwrap();
    assert_eq!(theirs.into_iter().collect::<Vec<_>>(), [7]);
    assert!(
        store
            .segments_of_events(HOME, P, "bob")
            .await
            .unwrap()
            .is_empty()
    );
    let erased = shared::domain::erasure::erasure_version(TS + 1);
    let first = store
        .erase_membership(HOME, P, LAYOUT, "ann", &erased, TS + 2)
        .await
        .unwrap();
    assert_eq!(first, RowErased::MemberRemoved);
    assert_eq!(counts(store, 7).await.0, 0, "she left the count");
    let again = store
        .erase_membership(HOME, P, LAYOUT, "ann", &erased, TS + 3)
        .await
        .unwrap();
    assert_eq!(again, RowErased::Unchanged, "a retry writes nothing");
    assert_eq!(counts(store, 7).await.0, 0, "counted once");
    let bob = store
        .erase_membership(HOME, P, LAYOUT, "bob", &erased, TS + 2)
        .await
        .unwrap();
    assert_eq!(bob, RowErased::Blocked);
    assert_eq!(version_of(store, "bob").await, Some(erased.clone()));
    // A change sent before the erasure now plans against a non-member row at its version.
    let late = store
        .pair_states(HOME, P, &[(LAYOUT, "bob")])
        .await
        .unwrap();
    assert!(late.values().all(|r| !r.state.member));
}
