//! The memberships port: a segment's membership rows, its Partner Sync events and its sharded
//! counters, written together so that the summed `member_count` always equals the member rows
//! and an event exists exactly when membership changed (materialize's core).

use std::collections::HashMap;
use std::future::Future;

use crate::domain::changes::MembershipChange;
use crate::domain::records::{ProfileEvent, Segment, SegmentCounts, SegmentKey, SegmentLayout};
use crate::domain::region::Region;
use crate::domain::segment_state::{MemberState, SyncAction};
use crate::ports::{StoreError, Written};

/// What a segment's Partner Sync events say about it: its name, and when it was last activated
/// (which marks the events of its initial population, `domain::feed::is_initial_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSegment<'a> {
    pub name: &'a str,
    pub activated_ms: Option<i64>,
}

/// Which Partner Sync actions one (segment, profile) ever raised, kept on its row: Find People
/// of a bucketed segment reads them there instead of from the `by_segment` index (one index
/// write less per change; the row is written in the same transaction anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncHistory {
    pub added: bool,
    pub removed: bool,
}

impl SyncHistory {
    /// This history and these events' actions.
    pub fn with(self, events: &[(MembershipChange, SyncAction)]) -> Self {
        Self {
            added: self.added || events.iter().any(|(_, a)| *a == SyncAction::Added),
            removed: self.removed || events.iter().any(|(_, a)| *a == SyncAction::Removed),
        }
    }
}

/// What materialize plans from for one (segment, profile): the row's state and history
/// (default: no row yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowState {
    pub state: MemberState,
    pub history: SyncHistory,
}

/// The new state of one (segment, profile) and the events its changes raised.
#[derive(Debug, Clone)]
pub struct PairWrite {
    pub layout: SegmentLayout,
    pub clevertap_id: String,
    pub identity: Option<String>,
    /// The version read before planning: the write is conditional on it still being there.
    pub expected_version: Option<String>,
    pub next: MemberState,
    pub events: Vec<(MembershipChange, SyncAction)>,
    /// The actions the pair raised ever, these events included.
    pub history: SyncHistory,
    /// How many of the pair's pending changes this write covers (the rest, if any, follow in
    /// another write).
    pub consumed: usize,
}

/// How a membership transaction of some pairs ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairsOutcome {
    Committed,
    Cancelled(PairsCancelled),
}

/// Why a membership transaction was cancelled, in the terms materialize acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairsCancelled {
    /// The counter shard was missing or sealed: the segment's shards need opening.
    pub shard_closed: bool,
    /// The pairs (by position) whose row or event had moved: to read again and re-plan.
    pub moved: Vec<usize>,
    /// A reason no retry can overcome, if any (DynamoDB's code).
    pub rejected: Option<String>,
    /// A conflict or throttling: worth a retry after a pause.
    pub transient: bool,
}

/// What opening a segment's counter shards found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOutcome {
    /// The shards are open (the segment is active, created now if it was new).
    Opened,
    /// The segment is archiving or archived: nothing may be counted.
    SegmentInactive,
    /// The segment is active but records another bucket count than the caller planned with
    /// (it was created meanwhile by a writer configured with another count): plan again with
    /// this layout.
    BucketsDiffer(SegmentLayout),
}

/// How the one transaction that opens a segment's shards ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTx {
    Opened,
    /// The segment exists and is not active with the layout's bucket count: read it to know why.
    SegmentCondition,
    /// Another transaction held one of its items: try again after a pause.
    Contended,
}

/// Memberships, Partner Sync events and counters.
pub trait Memberships: Send + Sync {
    /// The bucket count a segment created by this writer gets.
    fn new_segment_buckets(&self) -> u32;

    /// Segments by audience id (without their counters); absent ones are left out.
    fn segments_by_id(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, Segment>, StoreError>> + Send;

    /// One segment as stored (strongly consistent, without its counters).
    fn segment(
        &self,
        key: &SegmentKey<'_>,
    ) -> impl Future<Output = Result<Option<Segment>, StoreError>> + Send;

    /// The rows of some (segment, profile) pairs, strongly consistent: (audience id, CleverTap
    /// ID) → state; absent: no row.
    fn pair_states(
        &self,
        region: Region,
        project_id: &str,
        pairs: &[(SegmentLayout, &str)],
    ) -> impl Future<Output = Result<HashMap<(i64, String), RowState>, StoreError>> + Send;

    /// Advances a row's version without changing membership (a no-op change), conditional on
    /// the version read: one conditional put.
    fn put_membership_if_unchanged(
        &self,
        region: Region,
        project_id: &str,
        pair: &PairWrite,
        now_ms: i64,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Some planned pairs of one segment in one transaction: their rows (each conditional on
    /// the version planned from), their Partner Sync events (each new), one counter shard picked
    /// at random (conditional on its gate being open and recording the layout's buckets) with
    /// the day tallies of the events, and usage per month. All or nothing.
    fn write_pairs(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        segment: EventSegment<'_>,
        pairs: &[&PairWrite],
        now_ms: i64,
    ) -> impl Future<Output = Result<PairsOutcome, StoreError>> + Send;

    /// Opens every counter shard of a segment with the layout's bucket count, in one
    /// transaction with the segment item: created active (named `name`) if it does not exist,
    /// otherwise required to be active with the same bucket count.
    fn open_counter_shards(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        name: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<OpenTx, StoreError>> + Send;

    /// Segments' counters, summed over their shards (as of one point in time per segment).
    fn segment_counts(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, SegmentCounts>, StoreError>> + Send;

    /// Partner Sync events counted for billing in a month (`YYYY-MM`).
    fn usage_events(
        &self,
        region: Region,
        project_id: &str,
        month: &str,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// A profile's Partner Sync events, newest first.
    fn events_of(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> impl Future<Output = Result<Vec<ProfileEvent>, StoreError>> + Send;
}

/// Finishing a segment's archiving (a disconnect): its members cleared in the background,
/// answering how many left.
pub trait SegmentClearing: Send + Sync {
    fn clear_archived_segment(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
