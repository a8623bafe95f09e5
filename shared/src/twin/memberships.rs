//! The memberships port in memory: segments, their counter shards (gates, bucket counts,
//! totals, day tallies), usage, membership rows and Partner Sync events, with a transaction's
//! conditions checked before any of it is applied.

use std::collections::{BTreeMap, HashMap};

use super::{Entry, Twin, check_transaction};
use crate::domain::calendar::{day_of, month_of};
use crate::domain::erasure::{ErasableRow, ScrubPlan, plan_scrub};
use crate::domain::feed::FeedNotice;
use crate::domain::records::{
    ProfileEvent, Segment, SegmentCounts, SegmentKey, SegmentLayout, SegmentStatus,
};
use crate::domain::region::Region;
use crate::domain::segment_state::{MemberState, SyncAction};
use crate::ports::erasures::{ErasedRows, RowErased};
use crate::ports::memberships::{
    EventSegment, Memberships, OpenTx, PairWrite, PairsCancelled, PairsOutcome, RowState,
    SyncHistory,
};
use crate::ports::{StoreError, Written};
use crate::store::Item;
use crate::store::keys::{events as ek, memberships as mk, segments as sk};
use crate::store::memberships::{event_put, transaction_actions};
use crate::store::segment_item::SEGMENT_TYPE;
use crate::store::tables::Table;

/// A counter shard's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Sealed,
}

#[derive(Debug, Clone)]
struct Shard {
    gate: Gate,
    /// `None`: opened before buckets were recorded (one bucket).
    buckets: Option<u32>,
    counts: SegmentCounts,
}

#[derive(Debug, Clone)]
struct Row {
    member: bool,
    version: String,
    history: SyncHistory,
    identity: Option<String>,
    audience_id: i64,
    clevertap_id: String,
}

type SegmentId = (Region, String, i64);
/// (region, pk, sk), as DynamoDB keys the item.
type ItemKey = (Region, String, String);

/// The tables this port reaches, in memory.
#[derive(Default)]
pub(super) struct Tables {
    segments: HashMap<SegmentId, Segment>,
    shards: HashMap<(SegmentId, u32), Shard>,
    /// (segment, shard, day) → (added, removed).
    days: HashMap<(SegmentId, u32, String), (i64, i64)>,
    /// (region, project, month) → Partner Sync events.
    usage: HashMap<(Region, String, String), i64>,
    rows: HashMap<ItemKey, Row>,
    /// Partner Sync event items as the adapter writes them (`store::memberships::event_put`).
    events: BTreeMap<ItemKey, Item>,
}

fn segment_id(region: Region, project_id: &str, audience_id: i64) -> SegmentId {
    (region, project_id.to_owned(), audience_id)
}

fn row_key(region: Region, project_id: &str, layout: SegmentLayout, ct: &str) -> ItemKey {
    (region, layout.row_pk(project_id, ct), mk::sk(ct))
}

fn event_key(
    region: Region,
    project_id: &str,
    change: &crate::domain::changes::MembershipChange,
) -> ItemKey {
    (
        region,
        ek::pk(project_id, &change.clevertap_id),
        ek::sk(change.ts_ms, change.audience_id, &change.change_id()),
    )
}

impl Tables {
    /// Whether a row is as a write planned it from: absent, or at the version read.
    fn row_as_planned(&self, key: &ItemKey, expected: Option<&str>) -> bool {
        match (self.rows.get(key), expected) {
            (None, None) => true,
            (Some(row), Some(v)) => row.version == v,
            _ => false,
        }
    }

    fn put_row(&mut self, key: ItemKey, pair: &PairWrite) {
        self.rows.insert(
            key,
            Row {
                member: pair.next.member,
                version: pair.next.version.clone().unwrap_or_default(),
                history: pair.history,
                identity: pair.identity.clone(),
                audience_id: pair.layout.audience_id,
                clevertap_id: pair.clevertap_id.clone(),
            },
        );
    }

    /// Whether a shard counts for writers of this layout: open, with the same bucket count.
    fn shard_open_for(&self, id: &SegmentId, shard: u32, layout: SegmentLayout) -> bool {
        self.shards.get(&(id.clone(), shard)).is_some_and(|s| {
            s.gate == Gate::Open
                && match s.buckets {
                    Some(b) => b == layout.buckets,
                    None => layout.buckets <= 1,
                }
        })
    }
}

impl Memberships for Twin {
    fn new_segment_buckets(&self) -> u32 {
        self.lock()
            .new_segment_buckets
            .unwrap_or(mk::DEFAULT_BUCKETS)
    }

    async fn segments_by_id(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> Result<HashMap<i64, Segment>, StoreError> {
        self.pause("memberships.segments_by_id").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.segments_by_id")?;
        Ok(audience_ids
            .iter()
            .filter_map(|aud| {
                let s = state
                    .memberships
                    .segments
                    .get(&segment_id(region, project_id, *aud))?;
                Some((*aud, s.clone()))
            })
            .collect())
    }

    async fn segment(&self, key: &SegmentKey<'_>) -> Result<Option<Segment>, StoreError> {
        self.pause("memberships.segment").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.segment")?;
        let id = segment_id(key.region, key.project_id, key.audience_id);
        Ok(state.memberships.segments.get(&id).cloned())
    }

    async fn pair_states(
        &self,
        region: Region,
        project_id: &str,
        pairs: &[(SegmentLayout, &str)],
    ) -> Result<HashMap<(i64, String), RowState>, StoreError> {
        self.pause("memberships.pair_states").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.pair_states")?;
        state.keys_read += pairs.len();
        Ok(pairs
            .iter()
            .filter_map(|(layout, ct)| {
                let row = state
                    .memberships
                    .rows
                    .get(&row_key(region, project_id, *layout, ct))?;
                let read = RowState {
                    state: MemberState {
                        member: row.member,
                        version: Some(row.version.clone()),
                    },
                    history: row.history,
                };
                Some(((layout.audience_id, (*ct).to_owned()), read))
            })
            .collect())
    }

    async fn put_membership_if_unchanged(
        &self,
        region: Region,
        project_id: &str,
        pair: &PairWrite,
        _now_ms: i64,
    ) -> Result<Written, StoreError> {
        const CALL: &str = "memberships.put_membership_if_unchanged";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = row_key(region, project_id, pair.layout, &pair.clevertap_id);
        let tables = &mut state.memberships;
        if !tables.row_as_planned(&key, pair.expected_version.as_deref()) {
            return Ok(Written::ConditionFailed);
        }
        tables.put_row(key, pair);
        Twin::after_write(&entry, CALL, Written::Applied)
    }

    async fn write_pairs(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        segment: EventSegment<'_>,
        pairs: &[&PairWrite],
        now_ms: i64,
    ) -> Result<PairsOutcome, StoreError> {
        const CALL: &str = "memberships.write_pairs";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        // DynamoDB refuses the request itself: over 100 actions, or one item twice.
        let mut items: Vec<ItemKey> = Vec::new();
        for p in pairs {
            items.push(row_key(region, project_id, p.layout, &p.clevertap_id));
            items.extend(
                p.events
                    .iter()
                    .map(|(c, _)| event_key(region, project_id, c)),
            );
        }
        super::check_action_count(transaction_actions(pairs))?;
        check_transaction(&items)?;
        if matches!(entry, Entry::Conflict) {
            return Ok(PairsOutcome::Cancelled(PairsCancelled {
                transient: true,
                ..PairsCancelled::default()
            }));
        }
        let id = segment_id(region, project_id, layout.audience_id);
        let shard = Twin::pick_shard(&state, sk::COUNTER_SHARDS);
        let tables = &mut state.memberships;
        // Every condition, before anything is applied.
        let moved: Vec<usize> = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let row = row_key(region, project_id, p.layout, &p.clevertap_id);
                !tables.row_as_planned(&row, p.expected_version.as_deref())
                    || p.events.iter().any(|(c, _)| {
                        tables
                            .events
                            .contains_key(&event_key(region, project_id, c))
                    })
            })
            .map(|(i, _)| i)
            .collect();
        let shard_closed = !tables.shard_open_for(&id, shard, layout);
        if shard_closed || !moved.is_empty() {
            return Ok(PairsOutcome::Cancelled(PairsCancelled {
                shard_closed,
                moved,
                ..PairsCancelled::default()
            }));
        }
        // All of it.
        let events_table = String::new();
        let mut tally = SegmentCounts::default();
        let mut new_events = Vec::new();
        for p in pairs {
            tables.put_row(row_key(region, project_id, p.layout, &p.clevertap_id), p);
            for (change, action) in &p.events {
                let item = event_put(
                    project_id,
                    &events_table,
                    p.layout,
                    change,
                    *action,
                    segment,
                    now_ms,
                )
                .item;
                let key = event_key(region, project_id, change);
                tables.events.insert(key.clone(), item.clone());
                new_events.push((key, item));
                let day = tables
                    .days
                    .entry((id.clone(), shard, day_of(change.ts_ms)))
                    .or_default();
                match action {
                    SyncAction::Added => {
                        tally.added_total += 1;
                        day.0 += 1;
                    }
                    SyncAction::Removed => {
                        tally.removed_total += 1;
                        day.1 += 1;
                    }
                }
                *tables
                    .usage
                    .entry((region, project_id.to_owned(), month_of(change.ts_ms)))
                    .or_default() += 1;
            }
        }
        let counts = &mut tables
            .shards
            .get_mut(&(id, shard))
            .expect("its condition held")
            .counts;
        counts.member_count += tally.added_total - tally.removed_total;
        counts.added_total += tally.added_total;
        counts.removed_total += tally.removed_total;
        counts.last_sync_ms = Some(now_ms);
        let received = (pairs.iter())
            .flat_map(|p| p.events.iter().filter_map(|(c, _)| c.received_ms))
            .max();
        if let Some(received) = received {
            counts.last_freshness_ms = Some((now_ms - received).max(0));
        }
        for (_, item) in new_events {
            let keys = crate::store::rows::keys_of(&item);
            state.record(region, Table::Events, keys, None, Some(item));
        }
        Twin::after_write(&entry, CALL, PairsOutcome::Committed)
    }

    async fn open_counter_shards(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        name: &str,
        now_ms: i64,
    ) -> Result<OpenTx, StoreError> {
        const CALL: &str = "memberships.open_counter_shards";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        if matches!(entry, Entry::Conflict) {
            return Ok(OpenTx::Contended);
        }
        let id = segment_id(region, project_id, layout.audience_id);
        let tables = &mut state.memberships;
        match tables.segments.get(&id) {
            Some(s) if !(s.is_active() && s.buckets == layout.buckets) => {
                return Ok(OpenTx::SegmentCondition);
            }
            Some(_) => {}
            None => {
                tables.segments.insert(
                    id.clone(),
                    Segment {
                        audience_id: layout.audience_id,
                        segment_id: format!("seg_{}", uuid::Uuid::new_v4().simple()),
                        name: name.to_owned(),
                        segment_type: SEGMENT_TYPE.to_owned(),
                        status: SegmentStatus::Active,
                        created_ms: Some(now_ms),
                        updated_ms: Some(now_ms),
                        archive_id: None,
                        activated_ms: None,
                        subscription_ms: None,
                        buckets: layout.buckets,
                        counts: SegmentCounts::default(),
                    },
                );
            }
        }
        for shard in 0..sk::COUNTER_SHARDS {
            let s = tables.shards.entry((id.clone(), shard)).or_insert(Shard {
                gate: Gate::Open,
                buckets: None,
                counts: SegmentCounts::default(),
            });
            s.gate = Gate::Open;
            s.buckets = Some(layout.buckets);
        }
        Twin::after_write(&entry, CALL, OpenTx::Opened)
    }

    async fn segment_counts(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> Result<HashMap<i64, SegmentCounts>, StoreError> {
        self.pause("memberships.segment_counts").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.segment_counts")?;
        let mut out: HashMap<i64, SegmentCounts> = HashMap::new();
        for ((id, _), shard) in &state.memberships.shards {
            if id.0 == region && id.1 == project_id && audience_ids.contains(&id.2) {
                out.entry(id.2).or_default().add(&shard.counts);
            }
        }
        Ok(out)
    }

    async fn usage_events(
        &self,
        region: Region,
        project_id: &str,
        month: &str,
    ) -> Result<i64, StoreError> {
        self.pause("memberships.usage_events").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.usage_events")?;
        let key = (region, project_id.to_owned(), month.to_owned());
        Ok(state.memberships.usage.get(&key).copied().unwrap_or(0))
    }

    async fn events_of(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Vec<ProfileEvent>, StoreError> {
        self.pause("memberships.events_of").await;
        let mut state = self.lock();
        Twin::enter(&mut state, "memberships.events_of")?;
        let pk = ek::pk(project_id, clevertap_id);
        Ok(state
            .memberships
            .events
            .iter()
            .rev()
            .filter(|((r, p, _), _)| *r == region && *p == pk)
            .map(|(_, item)| crate::store::rows::events::event_of(item))
            .collect())
    }
}

/// Segment clearing is not in the twin yet: the simulation never disconnects an audience, and
/// clearing stays tested on DynamoDB Local (`tests/suite/materialize.rs`).
impl crate::ports::memberships::SegmentClearing for Twin {
    async fn clear_archived_segment(
        &self,
        _region: Region,
        _project_id: &str,
        audience_id: i64,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Rejected(format!(
            "clearing segment {audience_id}: segment clearing is not modelled by the twin"
        )))
    }
}

impl ErasedRows for Twin {
    async fn erase_membership(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        _now_ms: i64,
    ) -> Result<RowErased, StoreError> {
        const CALL: &str = "erasures.erase_membership";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let key = row_key(region, project_id, layout, clevertap_id);
        let read = state.memberships.rows.get(&key).map(|r| ErasableRow {
            member: r.member,
            version: Some(r.version.clone()),
            holds_person: r.identity.is_some() || r.history.added || r.history.removed,
        });
        let scrubbed = |version: String| Row {
            member: false,
            version,
            history: SyncHistory::default(),
            identity: None,
            audience_id: layout.audience_id,
            clevertap_id: clevertap_id.to_owned(),
        };
        let erased = match plan_scrub(read.as_ref(), erased_version) {
            ScrubPlan::Unchanged => return Ok(RowErased::Unchanged),
            ScrubPlan::Block => {
                state
                    .memberships
                    .rows
                    .insert(key, scrubbed(erased_version.to_owned()));
                RowErased::Blocked
            }
            ScrubPlan::Scrub { next, leaving, .. } => {
                state.memberships.rows.insert(key, scrubbed(next));
                if leaving {
                    let shard = Twin::pick_shard(&state, sk::COUNTER_SHARDS);
                    let id = segment_id(region, project_id, layout.audience_id);
                    let counts = &mut (state.memberships.shards.entry((id, shard)))
                        .or_insert(Shard {
                            gate: Gate::Open,
                            buckets: Some(layout.buckets),
                            counts: SegmentCounts::default(),
                        })
                        .counts;
                    counts.member_count -= 1;
                    RowErased::MemberRemoved
                } else {
                    RowErased::Scrubbed
                }
            }
        };
        Twin::after_write(&entry, CALL, erased)
    }

    async fn segments_of_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<std::collections::BTreeSet<i64>, StoreError> {
        const CALL: &str = "erasures.segments_of_events";
        self.pause(CALL).await;
        let mut state = self.lock();
        Twin::enter(&mut state, CALL)?;
        let pk = ek::pk(project_id, clevertap_id);
        Ok((state.memberships.events.keys())
            .filter(|(r, p, _)| *r == region && *p == pk)
            .filter_map(|(_, _, sk)| ek::segment_of_sk(sk))
            .collect())
    }

    async fn delete_profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        before_ms: i64,
        notice: &FeedNotice,
    ) -> Result<u64, StoreError> {
        const CALL: &str = "erasures.delete_profile_events";
        self.pause(CALL).await;
        let mut state = self.lock();
        let entry = Twin::enter(&mut state, CALL)?;
        let pk = ek::pk(project_id, clevertap_id);
        let before = crate::domain::erasure::erasure_version(before_ms);
        let theirs: Vec<ItemKey> = (state.memberships.events.keys())
            .filter(|(r, p, sk)| *r == region && *p == pk && *sk < before)
            .cloned()
            .collect();
        if !theirs.is_empty() {
            let item = crate::store::feed::notice_put("", notice).item;
            let keys = crate::store::rows::keys_of(&item);
            let (pk, sk) = crate::store::rows::key_strings(&item);
            let key = (region, pk, sk);
            if let std::collections::btree_map::Entry::Vacant(slot) =
                state.memberships.events.entry(key)
            {
                slot.insert(item.clone());
                state.record(region, Table::Events, keys, None, Some(item));
            }
        }
        for key in &theirs {
            let old = state.memberships.events.remove(key);
            let keys = old
                .as_ref()
                .map(crate::store::rows::keys_of)
                .unwrap_or_default();
            state.record(region, Table::Events, keys, old, None);
        }
        Twin::after_write(&entry, CALL, theirs.len() as u64)
    }
}

/// A membership row as the simulation checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowView {
    pub audience_id: i64,
    pub clevertap_id: String,
    pub member: bool,
    pub version: String,
    pub identity: Option<String>,
}

impl Twin {
    /// Every membership row of a project (whichever bucket holds it).
    pub fn membership_rows(&self, region: Region, project_id: &str) -> Vec<RowView> {
        let state = self.lock();
        let prefix = format!("{project_id}#");
        let mut rows: Vec<RowView> = (state.memberships.rows.iter())
            .filter(|((r, pk, _), _)| *r == region && pk.starts_with(&prefix))
            .map(|(_, row)| RowView {
                audience_id: row.audience_id,
                clevertap_id: row.clevertap_id.clone(),
                member: row.member,
                version: row.version.clone(),
                identity: row.identity.clone(),
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.audience_id, &a.clevertap_id).cmp(&(b.audience_id, &b.clevertap_id))
        });
        rows
    }

    /// What the publisher reads from every item of the events table of a region.
    pub fn feed_records(&self, region: Region) -> Vec<crate::store::feed::FeedRecord> {
        let state = self.lock();
        (state.memberships.events.iter())
            .filter(|((r, _, _), _)| *r == region)
            .filter_map(|(_, item)| {
                let image: serde_dynamo::Item = item.clone().into();
                crate::store::feed::feed_record_of_image(&image).ok()
            })
            .collect()
    }

    /// Archives a segment as a disconnect does: archiving, with its shards sealed, so no
    /// membership transaction counts on it any more (what `Store::archive_segment` does in one
    /// transaction; the subscriptions port is not in the twin yet).
    pub fn archive_segment(&self, region: Region, project_id: &str, audience_id: i64) {
        let mut state = self.lock();
        let id = segment_id(region, project_id, audience_id);
        let tables = &mut state.memberships;
        if let Some(s) = tables.segments.get_mut(&id) {
            s.status = SegmentStatus::Archiving;
        }
        for ((sid, _), shard) in tables.shards.iter_mut() {
            if *sid == id {
                shard.gate = Gate::Sealed;
            }
        }
    }

    /// The bucket count segments this twin creates get (as `Store::with_new_segment_buckets`).
    pub fn with_new_segment_buckets(self, buckets: u32) -> Self {
        self.lock().new_segment_buckets = Some(buckets.clamp(1, mk::MAX_BUCKETS));
        self
    }
}
