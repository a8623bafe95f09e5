//! Sharded counters: segment member counts and totals, and monthly usage.
//!
//! No item is touched by every writer of one audience. A membership transaction updates one
//! counter shard of its segment and one usage shard of each month it raises events in, both
//! picked at random; reads sum the shards. Counts stay exact because each shard update commits in
//! the same transaction as the memberships and events it counts.
//!
//! A counter shard also carries the segment's **gate**: a transaction's shard update is
//! conditional on `gate = open`, so it fails once the shard is sealed. Shards are opened lazily,
//! all of a segment's at once (a transaction that finds its shard missing or sealed opens them,
//! together with a check, or the creation, of the active segment) and sealed, all at once, before
//! a removed segment is cleared. Opening requires the segment to be active and sealing requires it
//! to be archiving, each in one transaction with the segment item, so the two never interleave:
//! once the shards are sealed, no new member can be added until the segment is connected again.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem, Update};
use rand::Rng;

use super::{
    CancellationReason, Item, Store, StoreError, backoff, cancellation_codes, get_n, get_s, n, s,
};
use crate::domain::calendar::day_of;
use crate::domain::changes::MembershipChange;
use crate::domain::records::{DayCounts, Segment, SegmentCounts, SegmentHistory, SegmentStatus};
use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;
use crate::store::keys::{self, segments as k};
use crate::store::segment_item::{SEGMENT_TYPE, SegmentLayout, segment_of};
use crate::store::tables::Table;

pub use crate::ports::memberships::OpenOutcome;
use crate::ports::memberships::OpenTx;

/// The gate of a counter shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardGate {
    /// Membership transactions may count here.
    Open,
    /// The segment is being cleared: membership transactions on this shard fail.
    Sealed,
}

impl ShardGate {
    pub const ATTRIBUTE: &'static str = "gate";

    pub fn as_str(self) -> &'static str {
        match self {
            ShardGate::Open => "open",
            ShardGate::Sealed => "sealed",
        }
    }
}

/// One counter shard item's counters.
fn shard_counts(item: &Item) -> SegmentCounts {
    SegmentCounts {
        member_count: get_n(item, "member_count").unwrap_or(0),
        added_total: get_n(item, "added_total").unwrap_or(0),
        removed_total: get_n(item, "removed_total").unwrap_or(0),
        last_sync_ms: get_n(item, "last_sync_ms"),
        last_freshness_ms: get_n(item, "last_freshness_ms"),
    }
}

/// Sums counter shard items (of any segments) per segment; other items are ignored.
pub fn sum_counter_shards<'a>(
    items: impl IntoIterator<Item = &'a Item>,
) -> BTreeMap<i64, SegmentCounts> {
    let mut out: BTreeMap<i64, SegmentCounts> = BTreeMap::new();
    for item in items {
        if get_s(item, keys::SK) != Some(k::SHARD_SK) || get_s(item, "kind") != Some("counter") {
            continue;
        }
        if let Some(aud) = get_n(item, "partner_segment_id") {
            out.entry(aud).or_default().add(&shard_counts(item));
        }
    }
    out
}

/// Which count of a day an attribute adds to.
type DayField = fn(&mut DayCounts) -> &mut i64;

/// Sums the per-day counts of one segment's day tally items (`kind = day`, sort key
/// `D#YYYY-MM-DD`) and of its counter shard items (which carried per-day attributes before the
/// day items existed), by `YYYY-MM-DD`.
pub fn sum_daily_counts<'a>(items: impl IntoIterator<Item = &'a Item>) -> SegmentHistory {
    let mut out = SegmentHistory::new();
    for item in items {
        if let Some(day) = get_s(item, keys::SK).and_then(|sk| sk.strip_prefix(k::DAY_SK_PREFIX)) {
            let counts = out.entry(day.to_owned()).or_default();
            counts.added += get_n(item, day_field::ADDED).unwrap_or(0);
            counts.removed += get_n(item, day_field::REMOVED).unwrap_or(0);
            counts.cleared += get_n(item, day_field::CLEARED).unwrap_or(0);
            continue;
        }
        for (name, value) in item {
            let Some(count) = value.as_n().ok().and_then(|v| v.parse::<i64>().ok()) else {
                continue;
            };
            let fields: [(&str, DayField); 3] = [
                (k::DAY_ADDED, |d| &mut d.added),
                (k::DAY_REMOVED, |d| &mut d.removed),
                (k::DAY_CLEARED, |d| &mut d.cleared),
            ];
            if let Some((day, field)) = fields
                .into_iter()
                .find_map(|(prefix, field)| name.strip_prefix(prefix).map(|day| (day, field)))
            {
                *field(out.entry(day.to_owned()).or_default()) += count;
            }
        }
    }
    out
}

/// Sums usage shard items of one month.
pub fn sum_usage_shards<'a>(items: impl IntoIterator<Item = &'a Item>) -> i64 {
    items
        .into_iter()
        .filter(|i| get_s(i, "kind") == Some("usage"))
        .filter_map(|i| get_n(i, "partner_sync_events"))
        .sum()
}

/// A shard picked at random: concurrent writers of one audience rarely meet on one.
pub fn pick_shard(shards: u32) -> u32 {
    rand::rng().random_range(0..shards)
}

pub fn counter_shard_key(project_id: &str, audience_id: i64, shard: u32) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(k::counter_shard_pk(project_id, audience_id, shard)),
        ),
        (keys::SK.to_owned(), s(k::SHARD_SK)),
    ])
}

pub fn usage_shard_key(project_id: &str, month: &str, shard: u32) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(k::usage_shard_pk(project_id, month, shard)),
        ),
        (keys::SK.to_owned(), s(k::SHARD_SK)),
    ])
}

fn segment_key(project_id: &str, audience_id: i64) -> Item {
    Item::from([
        (keys::PK.to_owned(), s(k::pk(project_id))),
        (keys::SK.to_owned(), s(k::segment_sk(audience_id))),
    ])
}

/// One transaction's Partner Sync events on one counter shard: totals, and per UTC day of the
/// events (the segment's history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardTally {
    pub added: u64,
    pub removed: u64,
    /// `YYYY-MM-DD` → (added, removed).
    pub by_day: BTreeMap<String, (u64, u64)>,
    /// When authorize received the newest change counted (its freshness is counted from there).
    pub received_ms: Option<i64>,
}

impl ShardTally {
    pub fn count(&mut self, action: SyncAction, change: &MembershipChange) {
        self.received_ms = self.received_ms.max(change.received_ms);
        let day = self.by_day.entry(day_of(change.ts_ms)).or_default();
        match action {
            SyncAction::Added => {
                self.added += 1;
                day.0 += 1;
            }
            SyncAction::Removed => {
                self.removed += 1;
                day.1 += 1;
            }
        }
    }
}

/// Counts one transaction's flips on one shard; fails (cancelling the transaction) unless the
/// shard is open and records the bucket count the transaction's keys were built with (so a
/// writer that planned with another count can never commit: see `open_counter_shards`).
pub fn counter_shard_update(
    project_id: &str,
    table: &str,
    layout: SegmentLayout,
    shard: u32,
    tally: &ShardTally,
    now_ms: i64,
) -> Update {
    let buckets_condition = if layout.buckets <= 1 {
        // Shards opened before buckets existed record none: one bucket.
        "(attribute_not_exists(#buckets) OR #buckets = :buckets)"
    } else {
        "#buckets = :buckets"
    };
    Update::builder()
        .table_name(table)
        .set_key(Some(counter_shard_key(
            project_id,
            layout.audience_id,
            shard,
        )))
        .update_expression(format!(
            "SET last_sync_ms = :now, updated_ms = :now{} \
             ADD member_count :delta, added_total :added, removed_total :removed",
            if tally.received_ms.is_some() {
                ", last_freshness_ms = :fresh"
            } else {
                ""
            }
        ))
        .set_expression_attribute_values(Some(
            tally
                .received_ms
                .map(|r| (":fresh".to_owned(), n((now_ms - r).max(0))))
                .into_iter()
                .collect(),
        ))
        .condition_expression(format!("#gate = :open AND {buckets_condition}"))
        .expression_attribute_names("#gate", ShardGate::ATTRIBUTE)
        .expression_attribute_names("#buckets", SegmentLayout::ATTRIBUTE)
        .expression_attribute_values(":open", s(ShardGate::Open.as_str()))
        .expression_attribute_values(":buckets", n(layout.buckets))
        .expression_attribute_values(":now", n(now_ms))
        .expression_attribute_values(":delta", n(tally.added as i64 - tally.removed as i64))
        .expression_attribute_values(":added", n(tally.added))
        .expression_attribute_values(":removed", n(tally.removed))
        .build()
        .expect("table and key are set")
}

/// The key of one day's tally item of one counter shard: under the shard's partition key.
pub fn day_tally_key(project_id: &str, audience_id: i64, shard: u32, day: &str) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(k::counter_shard_pk(project_id, audience_id, shard)),
        ),
        (keys::SK.to_owned(), s(k::day_sk(day))),
    ])
}

/// What one day's tally item adds to (attribute names of a `kind = day` item).
pub mod day_field {
    pub const ADDED: &str = "added";
    pub const REMOVED: &str = "removed";
    pub const CLEARED: &str = "cleared";
}

fn day_tally_update(
    project_id: &str,
    table: &str,
    audience_id: i64,
    shard: u32,
    day: &str,
    counts: &[(&'static str, u64)],
) -> Update {
    let mut builder = Update::builder()
        .table_name(table)
        .set_key(Some(day_tally_key(project_id, audience_id, shard, day)))
        .expression_attribute_values(":kind", s("day"))
        .expression_attribute_values(":pid", s(project_id))
        .expression_attribute_values(":aid", n(audience_id));
    let mut adds = Vec::new();
    for (field, count) in counts.iter().filter(|(_, c)| *c > 0) {
        adds.push(format!("#{field} :{field}"));
        builder = builder
            .expression_attribute_names(format!("#{field}"), *field)
            .expression_attribute_values(format!(":{field}"), n(*count));
    }
    builder
        .update_expression(format!(
            "SET kind = :kind, project_id = :pid, partner_segment_id = :aid ADD {}",
            adds.join(", ")
        ))
        .build()
        .expect("table and key are set")
}

/// One transaction's Partner Sync events per UTC day, on the day items of its counter shard.
pub fn day_tally_updates(
    project_id: &str,
    table: &str,
    audience_id: i64,
    shard: u32,
    tally: &ShardTally,
) -> Vec<Update> {
    tally
        .by_day
        .iter()
        .filter(|(_, (added, removed))| added + removed > 0)
        .map(|(day, (added, removed))| {
            day_tally_update(
                project_id,
                table,
                audience_id,
                shard,
                day,
                &[(day_field::ADDED, *added), (day_field::REMOVED, *removed)],
            )
        })
        .collect()
}

/// Takes cleared members off one shard's count, and adds them to the day item of the clearing
/// (the segment is being archived, so the shard may be sealed; the transaction's segment check
/// guards it).
pub fn counter_shard_clear(
    project_id: &str,
    table: &str,
    audience_id: i64,
    shard: u32,
    cleared: u64,
    now_ms: i64,
) -> [Update; 2] {
    let count = Update::builder()
        .table_name(table)
        .set_key(Some(counter_shard_key(project_id, audience_id, shard)))
        .update_expression(
            "SET kind = :kind, project_id = :pid, partner_segment_id = :aid, #shard = :shard, \
             updated_ms = :now ADD member_count :delta",
        )
        .expression_attribute_names("#shard", "shard")
        .expression_attribute_values(":kind", s("counter"))
        .expression_attribute_values(":pid", s(project_id))
        .expression_attribute_values(":aid", n(audience_id))
        .expression_attribute_values(":shard", n(shard))
        .expression_attribute_values(":now", n(now_ms))
        .expression_attribute_values(":delta", n(-(cleared as i64)))
        .build()
        .expect("table and key are set");
    let day = day_tally_update(
        project_id,
        table,
        audience_id,
        shard,
        &day_of(now_ms),
        &[(day_field::CLEARED, cleared)],
    );
    [count, day]
}

/// Partner Sync events counted on one usage shard of a month (billing data points).
pub fn usage_shard_update(
    project_id: &str,
    table: &str,
    month: &str,
    shard: u32,
    events: u64,
) -> Update {
    Update::builder()
        .table_name(table)
        .set_key(Some(usage_shard_key(project_id, month, shard)))
        .update_expression(
            "SET kind = :kind, #month = :month, project_id = :pid, #shard = :shard \
             ADD partner_sync_events :n",
        )
        .expression_attribute_names("#month", "month")
        .expression_attribute_names("#shard", "shard")
        .expression_attribute_values(":kind", s("usage"))
        .expression_attribute_values(":month", s(month))
        .expression_attribute_values(":pid", s(project_id))
        .expression_attribute_values(":shard", n(shard))
        .expression_attribute_values(":n", n(events))
        .build()
        .expect("table and key are set")
}

/// The segment must still be archiving, in the archiving `archive_id` (`None`: a segment
/// archived before archive ids existed), for the transaction to commit. A disconnect, connect
/// and disconnect again starts a new archiving, so a clear of the older one stops.
pub fn archiving_check(
    project_id: &str,
    table: &str,
    audience_id: i64,
    archive_id: Option<&str>,
) -> ConditionCheck {
    let (condition, values) = archiving_condition(archive_id);
    ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(segment_key(project_id, audience_id)))
        .condition_expression(condition)
        .expression_attribute_names("#status", "status")
        .set_expression_attribute_values(Some(values))
        .build()
        .expect("table, key and condition are set")
}

/// The condition (with `#status` for `status`) that a segment is in one archiving.
pub fn archiving_condition(archive_id: Option<&str>) -> (&'static str, Item) {
    let mut values = Item::from([(
        ":archiving".to_owned(),
        s(SegmentStatus::Archiving.as_str()),
    )]);
    match archive_id {
        Some(id) => {
            values.insert(":archive".to_owned(), s(id));
            ("#status = :archiving AND archive_id = :archive", values)
        }
        None => ("#status = :archiving", values),
    }
}

/// Attempts of a small gate transaction before it reports the store as unavailable.
const MAX_GATE_ATTEMPTS: u32 = 20;

/// How a gate transaction ended.
pub(crate) enum GateTx {
    Committed,
    /// The segment condition (action 0) did not hold.
    SegmentCondition,
}

impl GateTx {
    pub(crate) fn committed(&self) -> bool {
        matches!(self, GateTx::Committed)
    }
}

impl Store {
    /// Sends a gate transaction (segment condition first, then the shards), retrying conflicts
    /// with backoff.
    pub(crate) async fn gate_transaction(
        &self,
        region: Region,
        items: Vec<TransactWriteItem>,
    ) -> Result<GateTx, StoreError> {
        let mut attempt = 0;
        loop {
            let res = self
                .client(region)
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match res {
                Ok(_) => return Ok(GateTx::Committed),
                Err(e) => e,
            };
            let Some(codes) = cancellation_codes(&err) else {
                return Err(err.into());
            };
            if codes.first() == Some(&Some(CancellationReason::ConditionFailed)) {
                return Ok(GateTx::SegmentCondition);
            }
            if codes.iter().flatten().any(|r| !r.is_transient()) {
                return Err(err.into());
            }
            attempt += 1;
            if attempt >= MAX_GATE_ATTEMPTS {
                return Err(err.into());
            }
            tokio::time::sleep(backoff(attempt.min(4))).await;
        }
    }

    /// Opens every counter shard of an active segment in one transaction, creating the segment
    /// (active, named `name`, with `layout.buckets` buckets) if it does not exist yet: a segment
    /// first seen in a membership batch. The shards record the bucket count; the segment's
    /// condition fails if it is not active with that count (materialize reads it to know why).
    pub async fn open_counter_shards_once(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        name: &str,
        now_ms: i64,
    ) -> Result<OpenTx, StoreError> {
        let table = self.table(region, Table::Segments);
        let audience_id = layout.audience_id;
        // A segment created before buckets existed records none: it has one.
        let same_buckets = if layout.buckets <= 1 {
            "(attribute_not_exists(#buckets) OR #buckets = :buckets)"
        } else {
            "#buckets = :buckets"
        };
        let segment = Update::builder()
            .table_name(&table)
            .set_key(Some(segment_key(project_id, audience_id)))
            .update_expression(
                "SET #name = if_not_exists(#name, :name), #type = if_not_exists(#type, :type), \
                 #status = if_not_exists(#status, :active), segment_id = if_not_exists(segment_id, :sid), \
                 created_ms = if_not_exists(created_ms, :now), updated_ms = if_not_exists(updated_ms, :now), \
                 partner_segment_id = :aid, project_id = :pid, #buckets = if_not_exists(#buckets, :buckets)",
            )
            .condition_expression(format!(
                "attribute_not_exists(pk) OR (#status = :active AND {same_buckets})"
            ))
            .expression_attribute_names("#name", "name")
            .expression_attribute_names("#type", "type")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#buckets", SegmentLayout::ATTRIBUTE)
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":type", s(SEGMENT_TYPE))
            .expression_attribute_values(":active", s(SegmentStatus::Active.as_str()))
            .expression_attribute_values(
                ":sid",
                s(format!("seg_{}", uuid::Uuid::new_v4().simple())),
            )
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":aid", n(audience_id))
            .expression_attribute_values(":pid", s(project_id))
            .expression_attribute_values(":buckets", n(layout.buckets))
            .build()
            .expect("table and key are set");
        let mut items = vec![TransactWriteItem::builder().update(segment).build()];
        items.extend(gate_updates(
            &table,
            project_id,
            audience_id,
            ShardGate::Open,
            Some(layout.buckets),
        ));
        Ok(match self.transact_write(region, items).await? {
            super::TxOutcome::Committed => OpenTx::Opened,
            super::TxOutcome::Cancelled(codes)
                if codes.first() == Some(&Some(CancellationReason::ConditionFailed)) =>
            {
                OpenTx::SegmentCondition
            }
            super::TxOutcome::Cancelled(codes)
                if codes.iter().flatten().all(CancellationReason::is_transient) =>
            {
                OpenTx::Contended
            }
            super::TxOutcome::Cancelled(codes) => {
                return Err(StoreError::Rejected(format!(
                    "opening segment {audience_id}'s shards was cancelled: {codes:?}"
                )));
            }
        })
    }

    /// Seals every counter shard of a segment while it is in the archiving `archive_id`, so
    /// that no membership transaction can count (and so add members) any more. Archiving seals
    /// them already; this makes sure. Returns false, sealing nothing, if the segment is no longer
    /// in that archiving (connected again, or archived again since).
    pub async fn seal_counter_shards(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        archive_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let table = self.table(region, Table::Segments);
        let mut items = vec![
            TransactWriteItem::builder()
                .condition_check(archiving_check(project_id, &table, audience_id, archive_id))
                .build(),
        ];
        items.extend(gate_updates(
            &table,
            project_id,
            audience_id,
            ShardGate::Sealed,
            None,
        ));
        Ok(self.gate_transaction(region, items).await?.committed())
    }
}

/// Sets the gate of every counter shard of a segment (creating missing shards), and when
/// opening, the bucket count membership transactions must have planned with.
pub(crate) fn gate_updates(
    table: &str,
    project_id: &str,
    audience_id: i64,
    gate: ShardGate,
    buckets: Option<u32>,
) -> Vec<TransactWriteItem> {
    (0..k::COUNTER_SHARDS)
        .map(|shard| {
            TransactWriteItem::builder()
                .update(gate_update(
                    table,
                    project_id,
                    audience_id,
                    shard,
                    gate,
                    buckets,
                ))
                .build()
        })
        .collect()
}

fn gate_update(
    table: &str,
    project_id: &str,
    audience_id: i64,
    shard: u32,
    gate: ShardGate,
    buckets: Option<u32>,
) -> Update {
    let mut expression = String::from(
        "SET #gate = :gate, kind = :kind, project_id = :pid, partner_segment_id = :aid, \
         #shard = :shard",
    );
    let mut builder = Update::builder();
    if let Some(b) = buckets {
        expression.push_str(", #buckets = :buckets");
        builder = builder
            .expression_attribute_names("#buckets", SegmentLayout::ATTRIBUTE)
            .expression_attribute_values(":buckets", n(b));
    }
    builder
        .table_name(table)
        .set_key(Some(counter_shard_key(project_id, audience_id, shard)))
        .update_expression(expression)
        .expression_attribute_names("#gate", ShardGate::ATTRIBUTE)
        .expression_attribute_names("#shard", "shard")
        .expression_attribute_values(":gate", s(gate.as_str()))
        .expression_attribute_values(":kind", s("counter"))
        .expression_attribute_values(":pid", s(project_id))
        .expression_attribute_values(":aid", n(audience_id))
        .expression_attribute_values(":shard", n(shard))
        .build()
        .expect("table and key are set")
}

/// Reads of summed shards: one TransactGetItems each, so the sum is of one point in time (a
/// transaction that moved a member from one shard's count to another is seen whole or not at
/// all), never a mix of before and after.
impl Store {
    /// A segment with its counters summed over its shards, all read as of one point in time.
    pub async fn segment_with_counts(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> Result<Option<Segment>, StoreError> {
        Ok(self
            .segment_and_shards(region, project_id, audience_id)
            .await?
            .map(|(segment, _)| segment))
    }

    /// A segment with its counters summed, and its shard items, as of one point in time (no
    /// day items read).
    async fn segment_and_shards(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> Result<Option<(Segment, Vec<Item>)>, StoreError> {
        let mut keys = vec![segment_key(project_id, audience_id)];
        keys.extend((0..k::COUNTER_SHARDS).map(|s| counter_shard_key(project_id, audience_id, s)));
        let mut items = self.transact_get(region, Table::Segments, keys).await?;
        let Some(item) = items.remove(0) else {
            return Ok(None);
        };
        let shards: Vec<Item> = items.into_iter().flatten().collect();
        let counts = sum_counter_shards(&shards)
            .get(&audience_id)
            .copied()
            .unwrap_or_default();
        Ok(Some((
            segment_of(audience_id, &item)?.with_counts(counts),
            shards,
        )))
    }

    /// A segment with its counters, and its per-day counts, as of one point in time.
    pub async fn segment_with_history(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
    ) -> Result<Option<(Segment, SegmentHistory)>, StoreError> {
        let Some((segment, shards)) = self
            .segment_and_shards(region, project_id, audience_id)
            .await?
        else {
            return Ok(None);
        };
        // The day items, one Query per shard (beside the shard, under its key). Read after the
        // counts: while members are being counted, a day may already hold a later transaction.
        let days: Vec<Vec<Item>> =
            futures::future::try_join_all((0..k::COUNTER_SHARDS).map(|shard| async move {
                let pk = k::counter_shard_pk(project_id, audience_id, shard);
                self.query_partition(region, Table::Segments, &pk, Some(k::DAY_SK_PREFIX))
                    .await
            }))
            .await?;
        let history = sum_daily_counts(shards.iter().chain(days.iter().flatten()));
        Ok(Some((segment, history)))
    }

    /// The counters of some segments of a project, each summed over its shards as of one point
    /// in time. Segments without any shard are absent.
    pub async fn segment_counts(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> Result<BTreeMap<i64, SegmentCounts>, StoreError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let per_segment: Vec<Vec<Item>> = stream::iter(audience_ids.iter().copied())
            .map(|aud| async move {
                let keys = (0..k::COUNTER_SHARDS)
                    .map(|shard| counter_shard_key(project_id, aud, shard))
                    .collect();
                let items = self.transact_get(region, Table::Segments, keys).await?;
                Ok::<_, StoreError>(items.into_iter().flatten().collect())
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(sum_counter_shards(per_segment.iter().flatten()))
    }

    /// Partner Sync events of a project in one month (`YYYY-MM`), summed over the usage shards
    /// as of one point in time.
    pub async fn usage_events(
        &self,
        region: Region,
        project_id: &str,
        month: &str,
    ) -> Result<i64, StoreError> {
        let keys = (0..k::USAGE_SHARDS)
            .map(|shard| usage_shard_key(project_id, month, shard))
            .collect();
        let items = self.transact_get(region, Table::Segments, keys).await?;
        Ok(sum_usage_shards(items.iter().flatten()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(aud: i64, members: i64, added: i64, removed: i64, last: Option<i64>) -> Item {
        let mut i = counter_shard_key("p", aud, 0);
        i.insert("kind".into(), s("counter"));
        i.insert("partner_segment_id".into(), n(aud));
        i.insert("member_count".into(), n(members));
        i.insert("added_total".into(), n(added));
        i.insert("removed_total".into(), n(removed));
        if let Some(t) = last {
            i.insert("last_sync_ms".into(), n(t));
        }
        i
    }

    #[test]
    fn shards_sum_per_segment_and_ignore_other_items() {
        let mut segment = segment_key("p", 7);
        segment.insert("partner_segment_id".into(), n(7));
        segment.insert("member_count".into(), n(1_000));
        let items = [
            shard(7, 3, 5, 2, Some(10)),
            shard(7, -1, 0, 1, Some(30)),
            shard(8, 4, 4, 0, None),
            segment,
        ];
        let sums = sum_counter_shards(&items);
        assert_eq!(
            sums[&7],
            SegmentCounts {
                member_count: 2,
                added_total: 5,
                removed_total: 3,
                last_sync_ms: Some(30),
                last_freshness_ms: None,
            }
        );
        assert_eq!(sums[&8].member_count, 4);
        assert_eq!(sums[&8].last_sync_ms, None);
        assert_eq!(sums.len(), 2);
    }

    #[test]
    fn events_are_tallied_per_day_and_days_summed_over_shards() {
        let dec_1 = 1_796_083_200_000;
        let at = |ts_ms: i64, received_ms: Option<i64>| MembershipChange {
            clevertap_id: "ct".into(),
            identity: None,
            audience_id: 7,
            audience_name: None,
            action: crate::domain::changes::ChangeAction::Add,
            ts_ms,
            message_id: "m".into(),
            profile_index: 0,
            entry_index: 0,
            received_ms,
            way: Default::default(),
        };
        let mut tally = ShardTally::default();
        tally.count(SyncAction::Added, &at(dec_1 - 1, Some(5)));
        tally.count(SyncAction::Added, &at(dec_1, None));
        tally.count(SyncAction::Removed, &at(dec_1 + 5, Some(9)));
        assert_eq!((tally.added, tally.removed), (2, 1));
        assert_eq!(tally.received_ms, Some(9), "the newest receipt counted");
        assert_eq!(tally.by_day["2026-11-30"], (1, 0));
        assert_eq!(tally.by_day["2026-12-01"], (1, 1));
        let day_item = |pairs: &[(&str, i64)]| -> Item {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), n(*v)))
                .collect()
        };
        let shards = [
            day_item(&[("added_on_2026-12-01", 2), ("member_count", 9)]),
            day_item(&[("added_on_2026-12-01", 1), ("removed_on_2026-12-01", 1)]),
            day_item(&[("cleared_on_2026-12-02", 2)]),
        ];
        let days = sum_daily_counts(&shards);
        assert_eq!(
            days["2026-12-01"],
            DayCounts {
                added: 3,
                removed: 1,
                cleared: 0
            }
        );
        assert_eq!(days["2026-12-02"].cleared, 2);
        assert_eq!(days.len(), 2);
    }

    #[test]
    fn usage_sums_usage_shards_only() {
        let mut a = usage_shard_key("p", "2026-11", 0);
        a.insert("kind".into(), s("usage"));
        a.insert("partner_sync_events".into(), n(5));
        let mut b = usage_shard_key("p", "2026-11", 1);
        b.insert("kind".into(), s("usage"));
        b.insert("partner_sync_events".into(), n(7));
        assert_eq!(sum_usage_shards(&[a, b, shard(7, 1, 1, 0, None)]), 12);
    }

    #[test]
    fn picked_shards_are_in_range_and_spread() {
        let picked: std::collections::HashSet<u32> = (0..500).map(|_| pick_shard(16)).collect();
        assert!(picked.iter().all(|s| *s < 16));
        assert!(picked.len() > 8);
    }
}
