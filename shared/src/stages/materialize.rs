//! The materialize stage: resolved changes → memberships, exact counts, Partner Sync events.
//!
//! Per chunk: read the segments and the membership rows concerned (BatchGetItem), run the state
//! machine, then write. Pairs whose events must be raised go into TransactWriteItems (membership
//! put conditional on the version read, event puts conditional on being new, one counter update
//! per segment, usage per month); pairs whose change is a no-op only advance their version with a
//! conditional put; stale and duplicate changes write nothing. A cancelled transaction is read by
//! its reasons: a lost membership condition re-reads and re-plans that pair only, the others are
//! retried as they were, and a failed counter condition means the segment is being archived.
//!
//! Subscription `remove` clears a segment in the background, page by page, without per-user
//! Partner Sync events: the audience was disconnected, nobody left it.

use std::collections::{BTreeMap, HashMap};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{error, info, warn};

use crate::domain::changes::{MembershipChange, decode_changes};
use crate::domain::erasure::{erasure_version, is_before_erasure};
use crate::domain::feed::{ClearedSegment, profile_erased, segment_cleared};
use crate::domain::invocations::MaterializeBatch;
use crate::domain::protocol::now_ms;
use crate::domain::records::{InboxStatus, Segment, SegmentStatus};
use crate::domain::region::Region;
use crate::domain::segment_state::{Outcome, SyncAction, apply};
use crate::ports::erasures::{ErasedRows, ErasureLog, Erasures};
use crate::ports::inbox::{Inbox, InboxRow, fail_chunk};
use crate::ports::memberships::{Memberships, OpenOutcome, OpenTx, SegmentClearing};

/// What materialize writes through: memberships with their events and counters, the inbox, the
/// erasure log it checks and the erasure's writes for changes an erasure overtook, and segment
/// clearing.
pub trait MaterializePorts:
    Memberships + Inbox + ErasureLog + ErasedRows + SegmentClearing
{
}
impl<T: Memberships + Inbox + ErasureLog + ErasedRows + SegmentClearing> MaterializePorts for T {}

impl SegmentClearing for Store {
    async fn clear_archived_segment(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> Result<u64, StoreError> {
        clear_segment(self, region, project_id, audience_id).await
    }
}
use crate::stages::stream::{self as records, RecordError};
use crate::store::memberships::{
    ClearOutcome, EventSegment, MAX_CLEARED_PER_TRANSACTION, PageStart, PairWrite, PairsCancelled,
    PairsOutcome, RowState, transaction_actions,
};
use crate::store::segment_item::{SegmentKey, SegmentLayout, archiving_in_image};
use crate::store::stats;
use crate::store::tables::{Table, TableNames};
use crate::store::{Store, StoreError, backoff};

pub use crate::domain::sync_log::MaterializeCounts;

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Payload(String),
    #[error("segment {0}: gave up after {1} retries of conflicting writes")]
    Contention(i64, u32),
    #[error("segment {0}: DynamoDB refused a transaction ({1}); it can never succeed")]
    Rejected(i64, String),
    /// The segment was created meanwhile with another bucket count than planned with: the
    /// chunk is retried, reading the segment again.
    #[error("segment {0}: created meanwhile with {1} buckets; planned again on retry")]
    BucketsChanged(i64, u32),
}

impl MaterializeError {
    /// Whether retrying can never help: the chunk is marked failed instead (what could be
    /// applied of it was).
    pub fn is_permanent(&self) -> bool {
        match self {
            MaterializeError::Payload(_)
            | MaterializeError::Record(_)
            | MaterializeError::Rejected(..) => true,
            MaterializeError::Store(e) => !e.is_transient(),
            MaterializeError::Contention(..) | MaterializeError::BucketsChanged(..) => false,
        }
    }
}

/// Most actions a transaction may carry.
const MAX_TRANSACTION_ACTIONS: usize = 100;
/// Re-plans of one pair after lost conditions. Every lost condition means another writer made
/// progress on that pair, so this only bounds pathological contention.
const MAX_REPLANS_PER_PAIR: u32 = 25;
/// Retries after transaction conflicts (other writers on the same counter shard or membership):
/// rare with sharded counters, and resolved with jittered backoff.
const MAX_CONFLICT_RETRIES: u32 = 200;
/// Shard openings per segment and chunk: one normally (a segment's shards are opened once per
/// activation), so this only bounds a segment flapping between states.
const MAX_SHARD_OPENS: u32 = 8;

/// Partner Sync events one pair may raise in one write: with its membership, the counter shard,
/// a day tally per day and a usage update per month of its events (at worst one each per event),
/// a transaction stays within 100 actions (1 + 32 + 1 + 32 + 32). A pair with more changes (many
/// alternating changes in one chunk) is written in several steps.
const MAX_EVENTS_PER_WRITE: usize = 32;

/// Plans one (segment, profile): its changes applied in version order to the state read, up to
/// `MAX_EVENTS_PER_WRITE` events; the write says how many of `changes` it covers (`consumed`).
/// `None` if nothing is to be written (all changes stale or duplicate).
fn plan_pair(
    layout: SegmentLayout,
    clevertap_id: &str,
    changes: &[&MembershipChange],
    read: &RowState,
    counts: &mut MaterializeCounts,
) -> Option<PairWrite> {
    let RowState {
        state: read,
        history: read_history,
    } = read;
    let mut state = read.clone();
    let mut events = Vec::new();
    let mut identity = None;
    let mut consumed = 0;
    for c in changes {
        if events.len() == MAX_EVENTS_PER_WRITE {
            break;
        }
        consumed += 1;
        let (next, outcome) = apply(&state, c.action, &c.version());
        match outcome {
            Outcome::Changed(a) => events.push(((*c).clone(), a)),
            Outcome::NoOp => counts.noop += 1,
            Outcome::Duplicate => counts.duplicate += 1,
            Outcome::Stale => counts.stale += 1,
        }
        if c.identity.is_some() {
            identity = c.identity.clone();
        }
        state = next;
    }
    // A row that never was a member (a delete of someone not in it) keeps no Identity: no event
    // opened its segment, so an erasure reading the project's segments could not find it.
    let holds_person =
        state.member || !events.is_empty() || read_history.added || read_history.removed;
    (state.version != read.version).then(|| PairWrite {
        layout,
        clevertap_id: clevertap_id.to_owned(),
        identity: identity.filter(|_| holds_person),
        expected_version: read.version.clone(),
        next: state,
        history: read_history.with(&events),
        events,
        consumed,
    })
}

/// Applies one chunk's resolved changes, less those of people an erasure made after the
/// change was sent covers (counted stale), checked again after writing as resolve checks: what
/// an erasure made meanwhile could not see is taken out here (docs/architecture.md, Erasure).
pub async fn materialize_changes(
    store: &impl MaterializePorts,
    region: Region,
    project_id: &str,
    changes: &[MembershipChange],
) -> Result<MaterializeCounts, MaterializeError> {
    // 1. Who an erasure covers now.
    let erasures = Erasures::of(store, region, project_id).await?;
    let erased = erasures
        .of_clevertap_ids(store, region, project_id, &clevertap_ids(changes))
        .await?;
    let (kept, dropped) = without_erased(changes, &erased);
    // 1b. A person an erasure covers who came back (changes sent after its cut-off): a row an
    //     overtaken chunk wrote before the cut-off may not be cleared yet (that chunk clears it
    //     when it checks after writing); it is cleared first, so these changes apply to the
    //     person as they came back, not to what the erasure took.
    clear_rows_of_the_erased(store, region, project_id, &kept, &erased).await?;
    // 2. The changes.
    let mut counts = apply_changes(store, region, project_id, &kept).await?;
    counts.stale += dropped;
    // 3. Checked again after writing: an erasure that read these rows before they landed
    //    tombstoned the CleverTap ID first, so it is seen here and its rows are erased. Every
    //    change of the chunk is checked, those dropped in step 1 too: an earlier attempt may have
    //    written them before failing short of this check (#34, defect 2).
    let erasures = erasures.again(store, region, project_id).await?;
    let erased = erasures
        .of_clevertap_ids(store, region, project_id, &clevertap_ids(changes))
        .await?;
    if changes.iter().any(|c| is_covered(c, &erased)) {
        erase_overtaken(store, region, project_id, changes, &erased).await?;
    }
    Ok(counts)
}

fn clevertap_ids(changes: &[MembershipChange]) -> std::collections::BTreeSet<&str> {
    changes.iter().map(|c| c.clevertap_id.as_str()).collect()
}

/// Whether an erasure covers this change: it was sent before the newest erasure of its
/// CleverTap ID.
fn is_covered(c: &MembershipChange, erased: &HashMap<String, i64>) -> bool {
    erased
        .get(&c.clevertap_id)
        .is_some_and(|&erased_ms| is_before_erasure(c.ts_ms, erased_ms))
}

/// Pure: the changes no erasure covers, and how many were dropped. Borrowed when none is (the
/// usual case: nothing is copied on the hot path).
fn without_erased<'c>(
    changes: &'c [MembershipChange],
    erased: &HashMap<String, i64>,
) -> (std::borrow::Cow<'c, [MembershipChange]>, u64) {
    if !changes.iter().any(|c| is_covered(c, erased)) {
        return (std::borrow::Cow::Borrowed(changes), 0);
    }
    let kept: Vec<MembershipChange> = changes
        .iter()
        .filter(|c| !is_covered(c, erased))
        .cloned()
        .collect();
    let dropped = (changes.len() - kept.len()) as u64;
    (std::borrow::Cow::Owned(kept), dropped)
}

/// Clears the rows of the kept changes' (segment, profile) pairs whose profile an erasure covers
/// (as of its cut-off: a row a change after it moved stays).
async fn clear_rows_of_the_erased(
    store: &(impl Memberships + ErasedRows),
    region: Region,
    project_id: &str,
    kept: &[MembershipChange],
    erased: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let pairs: std::collections::BTreeSet<(i64, &str, i64)> = (kept.iter())
        .filter_map(|c| {
            Some((
                c.audience_id,
                c.clevertap_id.as_str(),
                *erased.get(&c.clevertap_id)?,
            ))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    let audience_ids: Vec<i64> = pairs.iter().map(|p| p.0).collect();
    let segments = Memberships::segments_by_id(store, region, project_id, &audience_ids).await?;
    let now = now_ms();
    for (aud, ct, erased_ms) in pairs {
        let Some(segment) = segments.get(&aud) else {
            continue;
        };
        let layout = SegmentLayout::of_segment(segment);
        let version = erasure_version(erased_ms);
        // Unchanged when it was cleared already or a change after the cut-off moved it.
        let _cleared = store
            .erase_membership(region, project_id, layout, ct, &version, now)
            .await?;
    }
    Ok(())
}

/// Erases what this chunk wrote for CleverTap IDs an erasure covers (it found their rows before
/// these writes landed): each (segment, profile) row written, and their Partner Sync events.
async fn erase_overtaken(
    store: &(impl Memberships + ErasedRows),
    region: Region,
    project_id: &str,
    written: &[MembershipChange],
    erased: &HashMap<String, i64>,
) -> Result<(), StoreError> {
    let mut pairs: std::collections::BTreeSet<(i64, &str, i64)> = written
        .iter()
        .filter(|c| is_covered(c, erased))
        .map(|c| {
            (
                c.audience_id,
                c.clevertap_id.as_str(),
                erased[&c.clevertap_id],
            )
        })
        .collect();
    // Every segment their events name too: the events about to be deleted are how an erasure
    // finds a person's rows, so no row of theirs may outlive them (another chunk's included).
    let covered: BTreeMap<&str, i64> = pairs.iter().map(|p| (p.1, p.2)).collect();
    for (ct, erased_ms) in covered {
        for aud in store.segments_of_events(region, project_id, ct).await? {
            pairs.insert((aud, ct, erased_ms));
        }
    }
    let audience_ids: Vec<i64> = pairs.iter().map(|p| p.0).collect();
    let segments = Memberships::segments_by_id(store, region, project_id, &audience_ids).await?;
    let now = now_ms();
    for (aud, ct, erased_ms) in &pairs {
        let layout = SegmentLayout::of_read(*aud, segments.get(aud), store.new_segment_buckets());
        store
            .erase_membership(
                region,
                project_id,
                layout,
                ct,
                &erasure_version(*erased_ms),
                now,
            )
            .await?;
    }
    let cts: BTreeMap<&str, i64> = pairs.iter().map(|p| (p.1, p.2)).collect();
    for (ct, erased_ms) in cts {
        // The events may have been published meanwhile: subscribers learn of the erasure (the
        // same notice the erasure itself writes, so one of the two is published).
        let notice = profile_erased(project_id, region, ct, erased_ms, now);
        store
            .delete_profile_events(region, project_id, ct, erased_ms, &notice)
            .await?;
    }
    warn!(
        project_id,
        pairs = pairs.len(),
        "changes overtaken by an erasure were erased after writing"
    );
    Ok(())
}

/// Step 2 of [`materialize_changes`]: the changes applied, segment by segment.
pub(crate) async fn apply_changes(
    store: &impl Memberships,
    region: Region,
    project_id: &str,
    changes: &[MembershipChange],
) -> Result<MaterializeCounts, MaterializeError> {
    // Group: segment → profile → changes in version order.
    let mut groups: BTreeMap<i64, BTreeMap<&str, Vec<&MembershipChange>>> = BTreeMap::new();
    for c in changes {
        groups
            .entry(c.audience_id)
            .or_default()
            .entry(c.clevertap_id.as_str())
            .or_default()
            .push(c);
    }
    for pairs in groups.values_mut() {
        for list in pairs.values_mut() {
            list.sort_by_key(|c| c.version());
        }
    }
    let audience_ids: Vec<i64> = groups.keys().copied().collect();
    let segments = store
        .segments_by_id(region, project_id, &audience_ids)
        .await?;

    // Every segment runs to its end, so one segment that can never be written does not keep
    // the others from being applied; a transient error is returned first (the chunk is retried).
    let results: Vec<Result<MaterializeCounts, MaterializeError>> = stream::iter(groups.iter())
        .map(|(aud, pairs)| {
            let segment = segments.get(aud);
            let layout = SegmentLayout::of_read(*aud, segment, store.new_segment_buckets());
            materialize_segment(store, region, project_id, layout, segment, pairs)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut total = MaterializeCounts::default();
    let mut permanent = None;
    for r in results {
        match r {
            Ok(c) => total.add(&c),
            Err(e) if e.is_permanent() => permanent = Some(e),
            Err(e) => return Err(e),
        }
    }
    match permanent {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// One segment's materialization in progress: which pairs are to be read and planned, which
/// are planned and waiting for a transaction, how many of each pair's changes are written, and
/// what was counted. Pure bookkeeping: [`materialize_segment`] does the reads and writes.
struct SegmentRun<'a, 'm> {
    audience_id: i64,
    /// Each profile's changes for this segment, in version order.
    pairs: &'m BTreeMap<&'a str, Vec<&'a MembershipChange>>,
    /// Pairs to (re)plan from a fresh read.
    to_read: Vec<&'a str>,
    /// Planned pairs waiting for a transaction, each with the tally of its no-op, duplicate and
    /// stale changes (counted once it is written).
    ready: Vec<(PairWrite, MaterializeCounts)>,
    /// How many of each pair's changes are written (a pair may take several writes).
    written: HashMap<&'a str, usize>,
    replans: HashMap<&'a str, u32>,
    conflicts: u32,
    opens: u32,
    counts: MaterializeCounts,
}

impl<'a, 'm> SegmentRun<'a, 'm> {
    fn new(audience_id: i64, pairs: &'m BTreeMap<&'a str, Vec<&'a MembershipChange>>) -> Self {
        Self {
            audience_id,
            pairs,
            to_read: pairs.keys().copied().collect(),
            ready: Vec::new(),
            written: HashMap::new(),
            replans: HashMap::new(),
            conflicts: 0,
            opens: 0,
            counts: MaterializeCounts::default(),
        }
    }

    /// The key of `ct` in the pairs, borrowed for as long as the pairs' keys are.
    fn key_of(&self, ct: &str) -> Option<&'a str> {
        self.pairs.get_key_value(ct).map(|(k, _)| *k)
    }

    fn is_done(&self) -> bool {
        self.ready.is_empty() && self.to_read.is_empty()
    }

    /// Plans every pair to read from what was read: a write with events waits for a
    /// transaction; a write of the version alone (no-op changes) is handed back, to be put on its
    /// own; a pair with nothing to write is counted.
    fn plan(
        &mut self,
        layout: SegmentLayout,
        read: &HashMap<String, RowState>,
    ) -> Vec<(PairWrite, MaterializeCounts)> {
        let mut noops = Vec::new();
        for ct in std::mem::take(&mut self.to_read) {
            let mut tally = MaterializeCounts::default();
            let from = self.written.get(ct).copied().unwrap_or(0);
            let row = read.get(ct).cloned().unwrap_or_default();
            match plan_pair(layout, ct, &self.pairs[ct][from..], &row, &mut tally) {
                Some(w) if w.events.is_empty() => noops.push((w, tally)),
                Some(w) => self.ready.push((w, tally)),
                None => self.counts.add(&tally),
            }
        }
        noops
    }

    /// After a write commits: the pair's changes it covered are done; any left are planned next
    /// from a fresh read.
    fn advance(&mut self, w: &PairWrite) {
        let Some(key) = self.key_of(&w.clevertap_id) else {
            return;
        };
        let done = self.written.entry(key).or_default();
        *done += w.consumed;
        if *done < self.pairs[key].len() {
            self.to_read.push(key);
        }
    }

    /// Someone else moved this pair: read it again and re-plan (a bounded number of times).
    fn replan(&mut self, ct: &str) -> Result<(), MaterializeError> {
        let Some(key) = self.key_of(ct) else {
            return Ok(());
        };
        let n = self.replans.entry(key).or_default();
        *n += 1;
        if *n > MAX_REPLANS_PER_PAIR {
            return Err(MaterializeError::Contention(self.audience_id, *n));
        }
        self.to_read.push(key);
        Ok(())
    }

    /// A version-only write landed (`won`) or found the row moved.
    fn noop_written(
        &mut self,
        w: &PairWrite,
        tally: &MaterializeCounts,
        won: bool,
    ) -> Result<(), MaterializeError> {
        if won {
            self.counts.add(tally);
            self.advance(w);
            Ok(())
        } else {
            self.replan(&w.clevertap_id)
        }
    }

    /// The planned pairs of the next transaction: as many as its 100 actions hold (one at least).
    fn next_batch(&mut self) -> Vec<(PairWrite, MaterializeCounts)> {
        let mut batch: Vec<(PairWrite, MaterializeCounts)> = Vec::new();
        while let Some((next, _)) = self.ready.last() {
            let with_next: Vec<&PairWrite> = batch.iter().map(|(w, _)| w).chain([next]).collect();
            if transaction_actions(&with_next) > MAX_TRANSACTION_ACTIONS && !batch.is_empty() {
                break;
            }
            batch.push(self.ready.pop().expect("checked"));
        }
        batch
    }

    fn committed(&mut self, batch: &[(PairWrite, MaterializeCounts)]) {
        for (w, tally) in batch {
            self.counts.add(tally);
            self.advance(w);
            for (_, a) in &w.events {
                match a {
                    SyncAction::Added => self.counts.added += 1,
                    SyncAction::Removed => self.counts.removed += 1,
                }
            }
        }
    }

    /// A cancelled transaction: a reason no retry overcomes fails the segment; a conflict is
    /// counted (bounded); pairs that moved are re-planned, the others wait for the next
    /// transaction.
    fn cancelled(
        &mut self,
        batch: Vec<(PairWrite, MaterializeCounts)>,
        why: &PairsCancelled,
    ) -> Result<(), MaterializeError> {
        if let Some(code) = &why.rejected {
            return Err(MaterializeError::Rejected(self.audience_id, code.clone()));
        }
        if why.transient {
            self.conflicts += 1;
            if self.conflicts > MAX_CONFLICT_RETRIES {
                return Err(MaterializeError::Contention(
                    self.audience_id,
                    self.conflicts,
                ));
            }
        }
        for (i, (w, tally)) in batch.into_iter().enumerate() {
            if why.moved.contains(&i) {
                self.replan(&w.clevertap_id)?;
            } else {
                self.ready.push((w, tally));
            }
        }
        Ok(())
    }

    /// The segment was archived meanwhile: every change not applied yet counts as archived.
    fn archive_rest(mut self, batch: &[(PairWrite, MaterializeCounts)]) -> MaterializeCounts {
        let rest: Vec<&str> = batch
            .iter()
            .chain(self.ready.iter())
            .filter_map(|(w, _)| self.key_of(&w.clevertap_id))
            .chain(self.to_read.iter().copied())
            .collect();
        self.counts.archived += rest
            .iter()
            .map(|ct| self.pairs[ct].len() as u64)
            .sum::<u64>();
        self.counts
    }
}

/// What opening a segment's counter shards came to, for the transaction that found one closed.
enum Opening {
    Opened,
    /// The segment is no longer active: nothing more of it is applied.
    SegmentInactive,
}

/// Gate transactions of one opening that met a concurrent transaction before it reports the store
/// as unavailable.
const MAX_OPEN_ATTEMPTS: u32 = 20;

/// Opens the counter shards of a segment (only while it is active; creating it if it is new):
/// one transaction, tried again while another holds its items; if the segment's condition
/// fails, the segment read says why (archived, or created with another bucket count).
async fn open_shards(
    store: &impl Memberships,
    region: Region,
    project_id: &str,
    layout: SegmentLayout,
    segment_name: &str,
    run: &mut SegmentRun<'_, '_>,
    now: i64,
) -> Result<Opening, MaterializeError> {
    run.opens += 1;
    if run.opens > MAX_SHARD_OPENS {
        return Err(MaterializeError::Contention(layout.audience_id, run.opens));
    }
    let mut attempt = 0;
    let outcome = loop {
        match store
            .open_counter_shards(region, project_id, layout, segment_name, now)
            .await?
        {
            OpenTx::Opened => break OpenOutcome::Opened,
            OpenTx::Contended if attempt < MAX_OPEN_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt.min(4))).await;
            }
            OpenTx::Contended => {
                return Err(MaterializeError::Contention(layout.audience_id, attempt));
            }
            OpenTx::SegmentCondition => {
                let key = SegmentKey {
                    region,
                    project_id,
                    audience_id: layout.audience_id,
                };
                break match store.segment(&key).await? {
                    Some(segment) if segment.is_active() => {
                        OpenOutcome::BucketsDiffer(SegmentLayout::of_segment(&segment))
                    }
                    Some(_) => OpenOutcome::SegmentInactive,
                    None => {
                        return Err(StoreError::Unavailable(format!(
                            "segment {} unreadable right after its condition failed",
                            layout.audience_id
                        ))
                        .into());
                    }
                };
            }
        }
    };
    match outcome {
        OpenOutcome::Opened => Ok(Opening::Opened),
        OpenOutcome::SegmentInactive => Ok(Opening::SegmentInactive),
        // The same count means the segment item and its shards disagree, which no retry can
        // mend; another count than planned: the retry reads the segment again.
        OpenOutcome::BucketsDiffer(current) if current == layout => {
            Err(MaterializeError::Rejected(
                layout.audience_id,
                format!(
                    "segment records {} buckets but its shards differ",
                    layout.buckets
                ),
            ))
        }
        OpenOutcome::BucketsDiffer(current) => Err(MaterializeError::BucketsChanged(
            layout.audience_id,
            current.buckets,
        )),
    }
}

/// Applies one segment's changes, pair by pair (a profile's changes to this segment):
///
/// 1. A segment that is archived or being archived takes no member: its changes are counted.
/// 2. Read the pairs to plan (strongly consistent) and plan them; writes of the version alone
///    go one by one, conditional on the row.
/// 3. Planned pairs go in transactions of up to 100 actions, each on one counter shard.
/// 4. A cancelled transaction opens the segment's shards if one was closed, re-plans the pairs
///    that moved and sends the others again.
async fn materialize_segment<'a>(
    store: &impl Memberships,
    region: Region,
    project_id: &str,
    layout: SegmentLayout,
    segment: Option<&Segment>,
    pairs: &BTreeMap<&'a str, Vec<&'a MembershipChange>>,
) -> Result<MaterializeCounts, MaterializeError> {
    let audience_id = layout.audience_id;
    // 1. Archived: nothing is applied.
    if segment.is_some_and(|s| !s.is_active()) {
        return Ok(MaterializeCounts {
            archived: pairs.values().map(|c| c.len() as u64).sum(),
            ..MaterializeCounts::default()
        });
    }
    let segment_name = segment
        .map(|s| s.name.clone())
        .or_else(|| {
            pairs
                .values()
                .flatten()
                .find_map(|c| c.audience_name.clone())
        })
        .unwrap_or_else(|| format!("Audience {audience_id}"));
    let now = now_ms();
    // A segment this chunk creates is activated now; one activated before activations were
    // recorded counts from its creation.
    let event_segment = EventSegment {
        name: &segment_name,
        activated_ms: segment.map_or(Some(now), |s| s.activated_ms.or(s.created_ms)),
    };
    let mut run = SegmentRun::new(audience_id, pairs);
    loop {
        // 2. Read and plan; version-only writes one by one.
        if !run.to_read.is_empty() {
            let pairs: Vec<(SegmentLayout, &str)> =
                run.to_read.iter().map(|ct| (layout, *ct)).collect();
            let read: HashMap<String, RowState> = store
                .pair_states(region, project_id, &pairs)
                .await?
                .into_iter()
                .map(|((_, ct), row)| (ct, row))
                .collect();
            let noops = run.plan(layout, &read);
            let outcomes: Vec<(PairWrite, MaterializeCounts, bool)> = stream::iter(noops)
                .map(|(w, tally)| async move {
                    let won = store
                        .put_membership_if_unchanged(region, project_id, &w, now)
                        .await?
                        .applied();
                    Ok::<_, StoreError>((w, tally, won))
                })
                .buffer_unordered(16)
                .try_collect()
                .await?;
            for (w, tally, won) in &outcomes {
                run.noop_written(w, tally, *won)?;
            }
        }
        if run.is_done() {
            return Ok(run.counts);
        }
        // 3. One transaction of planned pairs.
        let batch = run.next_batch();
        if batch.is_empty() {
            continue;
        }
        let refs: Vec<&PairWrite> = batch.iter().map(|(w, _)| w).collect();
        // Stamped per transaction, not per chunk: an event's recorded time is when it was
        // written, which the feed's lag is measured from.
        let outcome = store
            .write_pairs(region, project_id, layout, event_segment, &refs, now_ms())
            .await?;
        // 4. What a cancellation asks for.
        match outcome {
            PairsOutcome::Committed => run.committed(&batch),
            PairsOutcome::Cancelled(why) => {
                if why.shard_closed {
                    let opened = open_shards(
                        store,
                        region,
                        project_id,
                        layout,
                        &segment_name,
                        &mut run,
                        now,
                    )
                    .await?;
                    if let Opening::SegmentInactive = opened {
                        return Ok(run.archive_rest(&batch));
                    }
                }
                run.cancelled(batch, &why)?;
                if why.transient {
                    tokio::time::sleep(backoff(run.conflicts.min(4))).await;
                }
            }
        }
    }
}

/// Clears the members of a segment that mParticle disconnected, then marks it archived.
/// Returns how many members were cleared. Stops if the segment is re-activated meanwhile.
///
/// 1. Seal every counter shard: from then on no membership transaction can add a member.
/// 2. Page forward through each bucket of the segment's memberships; each page's members are flipped in
///    transactions that also take them off one counter shard and check that the segment is still
///    archiving. A flip advances the row's version (see `store::memberships::cleared_version`), so a write planned
///    before the clear cannot land after it.
/// 3. Mark the segment archived.
pub async fn clear_segment(
    store: &Store,
    region: Region,
    project_id: &str,
    audience_id: i64,
) -> Result<u64, StoreError> {
    // The archiving to finish is the segment's current one (a record of an older archiving
    // clears the current one, and the current one's record then finds it archived).
    let segment = SegmentKey {
        region,
        project_id,
        audience_id,
    };
    let current = store.segment(&segment).await?;
    let Some(current) = current.filter(|s| s.status == SegmentStatus::Archiving) else {
        return Ok(0);
    };
    let archive_id = current.archive_id.as_deref();
    if !store
        .seal_counter_shards(region, project_id, audience_id, archive_id)
        .await?
    {
        info!(
            project_id,
            audience_id, "segment re-activated before clearing; stopped"
        );
        return Ok(0);
    }
    let layout = SegmentLayout::of_segment(&current);
    let mut cleared = 0u64;
    for bucket in 0..layout.buckets {
        match clear_bucket(store, region, project_id, layout, bucket, archive_id).await? {
            BucketCleared::Done(n) => cleared += n,
            BucketCleared::Reactivated(n) => {
                info!(
                    project_id,
                    audience_id,
                    cleared = cleared + n,
                    "segment re-activated while clearing; stopped"
                );
                return Ok(cleared + n);
            }
        }
    }
    // The feed's notice goes with the mark, in one transaction: written exactly when the
    // clearing ends.
    let notice = segment_cleared(
        ClearedSegment {
            project_id,
            region,
            partner_segment_id: audience_id,
            partner_segment_name: &current.name,
            archive_id: archive_id.unwrap_or_default(),
            cleared_before_ms: current.subscription_ms.unwrap_or_default(),
        },
        now_ms(),
    );
    if store
        .mark_segment_archived(&segment, archive_id, &notice)
        .await?
    {
        info!(project_id, audience_id, cleared, "segment archived");
    } else {
        warn!(
            project_id,
            audience_id, "segment no longer in this archiving; left as it is"
        );
    }
    Ok(cleared)
}

/// How clearing one bucket of a segment ended, with the members it cleared.
enum BucketCleared {
    Done(u64),
    /// The segment was connected again (or archived again) meanwhile: clearing stops.
    Reactivated(u64),
}

/// Pages forward through one bucket of a segment's memberships; each page's members are
/// flipped in transactions that also take them off one counter shard and check that the
/// segment is still in this archiving.
async fn clear_bucket(
    store: &Store,
    region: Region,
    project_id: &str,
    layout: SegmentLayout,
    bucket: u32,
    archive_id: Option<&str>,
) -> Result<BucketCleared, StoreError> {
    let audience_id = layout.audience_id;
    let mut cleared = 0u64;
    let mut attempt = 0u32;
    let mut start: Option<PageStart> = None;
    'pages: loop {
        let page = store
            .member_page(region, project_id, layout, bucket, start.clone())
            .await?;
        for batch in page.members.chunks(MAX_CLEARED_PER_TRANSACTION) {
            let outcome = store
                .clear_members(region, project_id, layout, archive_id, batch, now_ms())
                .await?;
            match outcome {
                ClearOutcome::Committed => {
                    cleared += batch.len() as u64;
                    attempt = 0;
                }
                ClearOutcome::SegmentMoved => return Ok(BucketCleared::Reactivated(cleared)),
                ClearOutcome::RowsMoved => {
                    // Read the same page again (the budget is per page: it resets after each
                    // commit).
                    attempt += 1;
                    if attempt > 50 {
                        return Err(StoreError::Unavailable(format!(
                            "clearing segment {audience_id} keeps conflicting"
                        )));
                    }
                    tokio::time::sleep(backoff(attempt.min(4))).await;
                    continue 'pages;
                }
            }
        }
        start = page.next;
        if start.is_none() {
            return Ok(BucketCleared::Done(cleared));
        }
    }
}

/// Materializes one resolved inbox chunk and marks its sync-log row.
pub async fn materialize_row(
    store: &impl MaterializePorts,
    region: Region,
    row: &InboxRow,
) -> Result<MaterializeCounts, MaterializeError> {
    let bytes = row.changes.as_deref().unwrap_or_default();
    let changes = if bytes.is_empty() {
        Vec::new()
    } else {
        decode_changes(bytes).map_err(|e| MaterializeError::Payload(e.to_string()))?
    };
    let counts = materialize_changes(store, region, &row.project_id, &changes).await?;
    // Not applied: the row had moved on already (a replayed record); the counts stand.
    let progress = row.progress_on_materialize(now_ms());
    let _moved_on_already = store
        .mark_materialized(region, row.key(), &counts, &progress)
        .await?;
    Ok(counts)
}

/// What handling one stream record came to.
enum Handled {
    /// Not for this stage (another status, another table).
    Skipped,
    Chunk {
        counts: MaterializeCounts,
        /// From the batch's receipt by authorize to now.
        latency_ms: i64,
    },
    ChunkFailed,
    Cleared {
        members: u64,
    },
}

async fn handle_record(
    store: &impl MaterializePorts,
    names: &TableNames,
    record: &EventRecord,
) -> Result<Handled, MaterializeError> {
    let (region, table) = records::record_source(names, record)?;
    match table {
        Table::Inbox => {
            let row = records::inbox_row(record)?;
            // A bulk row is the bulk worker's (the mapping's filter leaves it out too).
            if row.status != InboxStatus::Resolved || row.way != crate::domain::ways::Way::Live {
                return Ok(Handled::Skipped);
            }
            match materialize_row(store, region, &row).await {
                Ok(c) => {
                    info!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
                          added = c.added, removed = c.removed, noop = c.noop, duplicate = c.duplicate,
                          stale = c.stale, archived = c.archived, "chunk materialized");
                    Ok(Handled::Chunk {
                        counts: c,
                        latency_ms: now_ms() - row.received_ms,
                    })
                }
                // What could be applied was; retrying cannot do more. The sync log says why.
                Err(e) if e.is_permanent() => {
                    error!(project_id = %row.project_id, message_id = %row.message_id, chunk = row.chunk,
                           error = %e, "chunk can never be fully materialized; marked failed");
                    let _moved_on_already =
                        fail_chunk(store, region, &row, InboxStatus::Resolved, &e.to_string())
                            .await?;
                    Ok(Handled::ChunkFailed)
                }
                Err(e) => Err(e),
            }
        }
        Table::Segments => {
            let Some((project, aud)) =
                archiving_in_image(&record.change.new_image).map_err(RecordError::Image)?
            else {
                return Ok(Handled::Skipped);
            };
            let members = store.clear_archived_segment(region, &project, aud).await?;
            Ok(Handled::Cleared { members })
        }
        _ => Ok(Handled::Skipped),
    }
}

/// The materialize Lambda: resolved inbox rows and archiving segments in, `batchItemFailures`
/// out, and what it did.
pub async fn handle_event(
    store: &impl MaterializePorts,
    names: &TableNames,
    event: Event,
) -> (DynamoDbEventResponse, MaterializeBatch) {
    let started = stats::snapshot();
    // Records run one after another: chunks of one batch mostly share segments, and running
    // them together would only make their transactions conflict on the segment counters.
    let (response, handled, retried) = records::drive(&event.records, 1, "materialize", |record| {
        handle_record(store, names, record)
    })
    .await;
    let mut batch = MaterializeBatch::default();
    for outcome in handled {
        match outcome {
            Handled::Skipped => {}
            // A redelivered record whose changes were all applied before: counted apart, so
            // chunks and their latency count once.
            Handled::Chunk { counts, .. } if counts.only_duplicates() => {
                batch.chunks_replayed += 1;
                batch.counts.add(&counts);
            }
            Handled::Chunk { counts, latency_ms } => {
                batch.chunks += 1;
                batch.counts.add(&counts);
                batch.chunk_latency_ms.push(latency_ms.max(0) as f64);
            }
            Handled::ChunkFailed => batch.chunks_failed += 1,
            Handled::Cleared { members } => {
                batch.segments_cleared += 1;
                batch.members_cleared += members;
            }
        }
    }
    batch.records_retried = retried;
    batch.store = stats::snapshot().since(started);
    (response, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::changes::ChangeAction;
    use crate::domain::segment_state::MemberState;
    use crate::store::memberships::SyncHistory;

    const LAYOUT: SegmentLayout = SegmentLayout {
        audience_id: 7,
        buckets: 64,
    };

    fn change(action: ChangeAction, ts_ms: i64) -> MembershipChange {
        MembershipChange {
            clevertap_id: "__a".into(),
            identity: Some("cust-1".into()),
            audience_id: 7,
            audience_name: None,
            action,
            ts_ms,
            message_id: format!("m{ts_ms}"),
            profile_index: 0,
            entry_index: 0,
            received_ms: None,
            way: Default::default(),
        }
    }

    fn plan(
        changes: &[MembershipChange],
        read: &RowState,
    ) -> (Option<PairWrite>, MaterializeCounts) {
        let refs: Vec<&MembershipChange> = changes.iter().collect();
        let mut counts = MaterializeCounts::default();
        let write = plan_pair(LAYOUT, "__a", &refs, read, &mut counts);
        (write, counts)
    }

    fn member_at(version: &str) -> RowState {
        RowState {
            state: MemberState {
                member: true,
                version: Some(version.into()),
            },
            history: SyncHistory {
                added: true,
                removed: false,
            },
        }
    }

    #[test]
    fn a_first_add_plans_a_new_row_and_one_added_event() {
        let add = change(ChangeAction::Add, 10);
        let (write, counts) = plan(std::slice::from_ref(&add), &RowState::default());
        let w = write.expect("a write");
        assert_eq!(w.expected_version, None, "the row must not exist yet");
        assert!(w.next.member);
        assert_eq!(w.next.version, Some(add.version()));
        assert_eq!(w.events.len(), 1);
        assert_eq!(w.events[0].1, SyncAction::Added);
        assert_eq!(
            w.history,
            SyncHistory {
                added: true,
                removed: false
            }
        );
        assert_eq!(w.identity.as_deref(), Some("cust-1"));
        assert_eq!((w.consumed, counts), (1, MaterializeCounts::default()));
    }

    #[test]
    fn a_redelivered_or_older_change_plans_nothing_and_is_counted() {
        let add = change(ChangeAction::Add, 10);
        let (write, counts) = plan(std::slice::from_ref(&add), &member_at(&add.version()));
        assert!(write.is_none());
        assert_eq!(counts.duplicate, 1);
        let older = change(ChangeAction::Delete, 5);
        let (write, counts) = plan(&[older], &member_at(&add.version()));
        assert!(write.is_none());
        assert_eq!(counts.stale, 1);
    }

    #[test]
    fn changes_in_order_alternate_and_a_no_op_only_moves_the_version() {
        let changes = [
            change(ChangeAction::Add, 10),
            change(ChangeAction::Add, 11),
            change(ChangeAction::Delete, 12),
            change(ChangeAction::Add, 13),
        ];
        let (write, counts) = plan(&changes, &RowState::default());
        let w = write.unwrap();
        let actions: Vec<SyncAction> = w.events.iter().map(|(_, a)| *a).collect();
        assert_eq!(
            actions,
            [SyncAction::Added, SyncAction::Removed, SyncAction::Added]
        );
        assert_eq!(counts.noop, 1);
        assert_eq!(w.next.version, Some(changes[3].version()));
        assert_eq!(
            w.history,
            SyncHistory {
                added: true,
                removed: true
            }
        );

        // A delete of a profile that is no member: no event, but the version still advances
        // (an older add arriving later must lose).
        let (write, counts) = plan(&[change(ChangeAction::Delete, 20)], &RowState::default());
        let w = write.unwrap();
        assert!(w.events.is_empty() && !w.next.member);
        assert_eq!(counts.noop, 1);
    }

    fn pairs_of(changes: &[MembershipChange]) -> BTreeMap<&str, Vec<&MembershipChange>> {
        let mut pairs: BTreeMap<&str, Vec<&MembershipChange>> = BTreeMap::new();
        for c in changes {
            pairs.entry(c.clevertap_id.as_str()).or_default().push(c);
        }
        pairs
    }

    #[test]
    fn a_run_plans_writes_and_counts_what_commits() {
        let mut b = change(ChangeAction::Add, 10);
        b.clevertap_id = "__b".into();
        let changes = [change(ChangeAction::Add, 10), b];
        let pairs = pairs_of(&changes);
        let mut run = SegmentRun::new(7, &pairs);
        let noops = run.plan(LAYOUT, &HashMap::new());
        assert!(noops.is_empty() && run.to_read.is_empty());
        let batch = run.next_batch();
        assert_eq!(batch.len(), 2, "both pairs fit one transaction");
        run.committed(&batch);
        assert!(run.is_done());
        assert_eq!(run.counts.added, 2);
    }

    #[test]
    fn a_cancelled_run_replans_what_moved_and_stops_on_a_rejection() {
        let mut b = change(ChangeAction::Add, 10);
        b.clevertap_id = "__b".into();
        let changes = [change(ChangeAction::Add, 10), b];
        let pairs = pairs_of(&changes);
        let mut run = SegmentRun::new(7, &pairs);
        run.plan(LAYOUT, &HashMap::new());
        let batch = run.next_batch();
        let moved_first = batch[0].0.clevertap_id.clone();
        let why = PairsCancelled {
            moved: vec![0],
            transient: true,
            ..PairsCancelled::default()
        };
        run.cancelled(batch, &why).unwrap();
        assert_eq!(
            run.to_read,
            [moved_first.as_str()],
            "the moved pair is read again"
        );
        assert_eq!(
            run.ready.len(),
            1,
            "the other waits for the next transaction"
        );
        assert_eq!(run.conflicts, 1);
        let batch = run.next_batch();
        let rejected = PairsCancelled {
            rejected: Some("ValidationError".into()),
            ..PairsCancelled::default()
        };
        assert!(matches!(
            run.cancelled(batch, &rejected),
            Err(MaterializeError::Rejected(7, _))
        ));
    }

    #[test]
    fn an_archived_segment_counts_every_change_left_as_archived() {
        let changes = [
            change(ChangeAction::Add, 10),
            change(ChangeAction::Delete, 11),
        ];
        let pairs = pairs_of(&changes);
        let mut run = SegmentRun::new(7, &pairs);
        run.plan(LAYOUT, &HashMap::new());
        let batch = run.next_batch();
        let counts = run.archive_rest(&batch);
        assert_eq!(counts.archived, 2, "both changes of the pair");
        assert_eq!(counts.added, 0);
    }

    #[test]
    fn one_write_carries_at_most_its_share_of_events() {
        let changes: Vec<MembershipChange> = (0..40)
            .map(|i| {
                let action = if i % 2 == 0 {
                    ChangeAction::Add
                } else {
                    ChangeAction::Delete
                };
                change(action, 100 + i)
            })
            .collect();
        let (write, _) = plan(&changes, &RowState::default());
        let w = write.unwrap();
        assert_eq!(w.events.len(), MAX_EVENTS_PER_WRITE);
        assert_eq!(
            w.consumed, MAX_EVENTS_PER_WRITE,
            "the rest is planned after it commits"
        );
        assert_eq!(
            w.next.version,
            Some(changes[MAX_EVENTS_PER_WRITE - 1].version())
        );
    }
}

/// A chunk's changes applied on the twin: counts, events and usage under redelivery, lost
/// answers, conflicts, failures between two requests and racing chunks (no engine).
#[cfg(test)]
mod on_the_twin {
    use super::*;
    use crate::domain::calendar::month_of;
    use crate::domain::changes::ChangeAction;
    use crate::twin::{Fault, Twin};

    const P: &str = "P1";
    const R: Region = Region::Eu1;
    const TS: i64 = 1_700_000_000_000;
    const WRITE: &str = "memberships.write_pairs";

    fn change(ct: &str, action: ChangeAction, ts_ms: i64, audience_id: i64) -> MembershipChange {
        MembershipChange {
            clevertap_id: ct.into(),
            identity: None,
            audience_id,
            audience_name: Some("Cart".into()),
            action,
            ts_ms,
            message_id: format!("m{ts_ms}"),
            profile_index: 0,
            entry_index: 0,
            received_ms: None,
            way: Default::default(),
        }
    }

    fn adds(cts: &[&str], ts_ms: i64) -> Vec<MembershipChange> {
        cts.iter()
            .map(|ct| change(ct, ChangeAction::Add, ts_ms, 7))
            .collect()
    }

    async fn counts(twin: &Twin) -> (i64, i64, i64) {
        let c = twin
            .segment_counts(R, P, &[7])
            .await
            .unwrap()
            .remove(&7)
            .unwrap_or_default();
        (c.member_count, c.added_total, c.removed_total)
    }

    async fn events(twin: &Twin, cts: &[&str]) -> usize {
        let mut n = 0;
        for ct in cts {
            n += twin.events_of(R, P, ct).await.unwrap().len();
        }
        n
    }

    #[tokio::test]
    async fn new_members_open_their_segment_and_are_counted_once_however_often_delivered() {
        let twin = Twin::new();
        let chunk = adds(&["a", "b", "c"], TS);
        let first = apply_changes(&twin, R, P, &chunk).await.unwrap();
        assert_eq!(first.added, 3);
        assert_eq!(counts(&twin).await, (3, 3, 0));
        assert_eq!(twin.usage_events(R, P, &month_of(TS)).await.unwrap(), 3);
        let segment = twin
            .segments_by_id(R, P, &[7])
            .await
            .unwrap()
            .remove(&7)
            .unwrap();
        assert_eq!((segment.name.as_str(), segment.buckets), ("Cart", 64));
        // Delivered again: nothing new, every change a duplicate.
        let again = apply_changes(&twin, R, P, &chunk).await.unwrap();
        assert_eq!((again.added, again.duplicate), (0, 3));
        assert_eq!(counts(&twin).await, (3, 3, 0));
        assert_eq!(events(&twin, &["a", "b", "c"]).await, 3);
    }

    #[tokio::test]
    async fn an_older_change_arriving_after_a_newer_one_is_stale_and_raises_nothing() {
        let twin = Twin::new();
        apply_changes(
            &twin,
            R,
            P,
            &[change("a", ChangeAction::Delete, TS + 10, 7)],
        )
        .await
        .unwrap();
        let late = apply_changes(&twin, R, P, &adds(&["a"], TS)).await.unwrap();
        assert_eq!((late.added, late.stale), (0, 1));
        assert_eq!(counts(&twin).await, (0, 0, 0));
        assert_eq!(events(&twin, &["a"]).await, 0);
    }

    #[tokio::test]
    async fn a_conflicting_transaction_is_sent_again_and_lands_once() {
        let twin = Twin::new();
        apply_changes(&twin, R, P, &adds(&["a"], TS)).await.unwrap();
        twin.inject(WRITE, Fault::TransactionConflict);
        twin.inject(WRITE, Fault::Throttle);
        let n = apply_changes(&twin, R, P, &adds(&["b"], TS + 1)).await;
        assert!(
            matches!(&n, Err(e) if !e.is_permanent()),
            "a throttle before the write: {n:?}"
        );
        assert_eq!(
            counts(&twin).await,
            (1, 1, 0),
            "nothing of the throttled chunk"
        );
        let retried = apply_changes(&twin, R, P, &adds(&["b"], TS + 1))
            .await
            .unwrap();
        assert_eq!(retried.added, 1);
        assert_eq!(counts(&twin).await, (2, 2, 0));
    }

    #[tokio::test]
    async fn a_write_whose_answer_was_lost_counts_once_when_the_chunk_is_retried() {
        let twin = Twin::new();
        apply_changes(&twin, R, P, &adds(&["a"], TS)).await.unwrap();
        twin.inject(WRITE, Fault::TimeoutAfterCommit);
        let lost = apply_changes(&twin, R, P, &adds(&["b", "c"], TS + 1)).await;
        assert!(matches!(&lost, Err(e) if !e.is_permanent()), "{lost:?}");
        assert_eq!(counts(&twin).await, (3, 3, 0), "the write stood");
        let retried = apply_changes(&twin, R, P, &adds(&["b", "c"], TS + 1))
            .await
            .unwrap();
        assert_eq!((retried.added, retried.duplicate), (0, 2));
        assert_eq!(counts(&twin).await, (3, 3, 0));
        assert_eq!(events(&twin, &["b", "c"]).await, 2);
    }

    #[tokio::test]
    async fn a_disconnected_segment_takes_no_more_members() {
        let twin = Twin::new();
        apply_changes(&twin, R, P, &adds(&["a"], TS)).await.unwrap();
        twin.archive_segment(R, P, 7);
        let after = apply_changes(&twin, R, P, &adds(&["b", "c"], TS + 1))
            .await
            .unwrap();
        assert_eq!((after.added, after.archived), (0, 2));
        assert_eq!(counts(&twin).await, (1, 1, 0));
    }

    #[tokio::test]
    async fn chunks_racing_on_one_segment_keep_its_count_exact() {
        let twin = Twin::new();
        let people: Vec<String> = (0..40).map(|i| format!("ct-{i:02}")).collect();
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        // Four chunks over overlapping people, adds and removes at several times.
        let chunks: Vec<Vec<MembershipChange>> = (0..4)
            .map(|k| {
                refs[k * 8..k * 8 + 16]
                    .iter()
                    .map(|ct| {
                        let action = if k % 2 == 0 {
                            ChangeAction::Add
                        } else {
                            ChangeAction::Delete
                        };
                        change(ct, action, TS + k as i64, 7)
                    })
                    .collect()
            })
            .collect();
        let results =
            futures::future::join_all(chunks.iter().map(|c| apply_changes(&twin, R, P, c))).await;
        let mut applied = MaterializeCounts::default();
        for r in results {
            applied.add(&r.unwrap());
        }
        let members = twin
            .pair_states(
                R,
                P,
                &refs
                    .iter()
                    .map(|ct| {
                        (
                            SegmentLayout {
                                audience_id: 7,
                                buckets: 64,
                            },
                            *ct,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap()
            .values()
            .filter(|row| row.state.member)
            .count() as i64;
        let (count, added, removed) = counts(&twin).await;
        assert_eq!(count, members, "the count is the member rows");
        assert_eq!(
            (added, removed),
            (applied.added as i64, applied.removed as i64)
        );
        assert_eq!(
            events(&twin, &refs).await as u64,
            applied.added + applied.removed
        );
    }

    /// #34 defect 2: an attempt commits one segment, fails on another and returns before its
    /// check after writing; an erasure of the CleverTap ID lands meanwhile (it found no row yet).
    /// The retry drops the now-covered changes, and must still erase what the first attempt
    /// wrote.
    #[tokio::test]
    async fn a_retry_erases_what_an_earlier_attempt_wrote_for_a_person_erased_meanwhile() {
        use crate::domain::erasure::{TombstoneHasher, TombstoneKind};

        let twin = Twin::new();
        twin.setup_project(R, P);
        let chunk = vec![
            change("x", ChangeAction::Add, TS, 7),
            change("x", ChangeAction::Add, TS, 8),
        ];
        // Segment 7's pairs commit (its shards open on the way); segment 8's write fails.
        twin.inject_after(WRITE, 3, Fault::Transient);
        let first = materialize_changes(&twin, R, P, &chunk).await;
        assert!(first.is_err(), "the chunk is retried");
        assert_eq!(counts(&twin).await, (1, 1, 0), "segment 7 committed");

        // The erasure: its tombstone of the CleverTap ID, as of after the change was sent.
        twin.mark_erasures(R, P).await.unwrap();
        let keys = ErasureLog::tombstone_keys(&twin).await.unwrap();
        let hasher = TombstoneHasher {
            keys: &keys,
            project: P,
            legacy_salt: None,
        };
        let hash = hasher.written(TombstoneKind::CleverTapId, "x");
        assert!(
            twin.write_tombstone(R, P, &hash, TS + 1)
                .await
                .unwrap()
                .applied()
        );

        let retried = materialize_changes(&twin, R, P, &chunk).await.unwrap();
        assert_eq!(retried.stale, 2, "the covered changes are dropped");
        assert_eq!(counts(&twin).await.0, 0, "x left segment 7's count");
        assert_eq!(
            events(&twin, &["x"]).await,
            0,
            "x's Partner Sync event is gone"
        );
        let layout = SegmentLayout::of_read(7, None, twin.new_segment_buckets());
        let rows = twin.pair_states(R, P, &[(layout, "x")]).await.unwrap();
        assert!(
            rows.values().all(|r| !r.state.member),
            "x's row is no member"
        );
    }
}
