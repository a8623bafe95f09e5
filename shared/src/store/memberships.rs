//! Memberships, Partner Sync events and segment counter shards, written together in transactions
//! so that the summed `member_count` always equals the number of member rows and an event exists
//! exactly when membership changed.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem, Update};

use super::segment_item::SegmentLayout;
use super::{CancellationReason, Item, Store, StoreError, TxOutcome, get_s, n, s};
use crate::domain::calendar::{day_of, month_of};
use crate::domain::changes::MembershipChange;
use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;
use crate::store::counters::{
    ShardTally, archiving_check, counter_shard_clear, counter_shard_update, day_tally_updates,
    pick_shard, usage_shard_update,
};
use crate::store::keys::{self, memberships as mk, segments as sk};
use crate::store::tables::Table;

use crate::domain::records::{ProfileEvent, Segment, SegmentCounts, SegmentKey};
use crate::ports::Written;
pub use crate::ports::memberships::{
    EventSegment, PairWrite, PairsCancelled, PairsOutcome, RowState, SyncHistory,
};
use crate::ports::memberships::{Memberships, OpenTx};

pub use super::rows::events::PARTNER_SYNC;
pub use crate::domain::feed::PARTNER_NAME;

pub use super::rows::memberships::membership_key;

use super::rows::memberships as row;

impl PairWrite {
    pub fn membership_put(&self, project_id: &str, table: &str, now_ms: i64) -> Put {
        let condition = row::as_planned(self.expected_version.as_deref());
        Put::builder()
            .table_name(table)
            .set_item(Some(row::membership_item(project_id, self, now_ms)))
            .set_condition_expression(condition.condition)
            .set_expression_attribute_values(
                (!condition.values.is_empty()).then_some(condition.values),
            )
            .build()
            .expect("table and item are set")
    }
}

/// The Partner Sync event row of one applied change, recorded at `now_ms` (`rows::events`),
/// put if new.
pub fn event_put(
    project_id: &str,
    table: &str,
    layout: SegmentLayout,
    change: &MembershipChange,
    action: SyncAction,
    segment: EventSegment<'_>,
    now_ms: i64,
) -> Put {
    let item = super::rows::events::event_item(project_id, layout, change, action, segment, now_ms);
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table and item are set")
}

impl PairsCancelled {
    /// Reads the cancellation reasons of a transaction of `pairs` pairs, action by action.
    pub fn of(roles: &[ActionRole], codes: &[Option<CancellationReason>], pairs: usize) -> Self {
        let failed = |role: ActionRole| {
            roles
                .iter()
                .zip(codes)
                .any(|(r, c)| *r == role && c == &Some(CancellationReason::ConditionFailed))
        };
        Self {
            shard_closed: failed(ActionRole::Counter),
            moved: (0..pairs)
                .filter(|i| failed(ActionRole::Membership(*i)) || failed(ActionRole::Event(*i)))
                .collect(),
            rejected: codes.iter().flatten().find_map(|c| match c {
                CancellationReason::Other(code) => Some(code.clone()),
                _ => None,
            }),
            transient: codes.iter().flatten().any(CancellationReason::is_transient),
        }
    }
}

/// Which part of a transaction an action belongs to, to read its cancellation reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionRole {
    Membership(usize),
    Event(usize),
    Counter,
    DayTally,
    Usage,
}

/// A transaction for some pairs of one segment: memberships, events, one update of the counter
/// shard `counter_shard` and one update of a usage shard per month. `roles[i]` says what action
/// `i` is.
pub fn segment_transaction(
    project_id: &str,
    region_tables: &RegionTables,
    layout: SegmentLayout,
    segment: EventSegment<'_>,
    pairs: &[&PairWrite],
    counter_shard: u32,
    now_ms: i64,
) -> (Vec<TransactWriteItem>, Vec<ActionRole>) {
    let mut items = Vec::new();
    let mut roles = Vec::new();
    let mut tally = ShardTally::default();
    let audience_id = layout.audience_id;
    let mut by_month: BTreeMap<String, u64> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        items.push(
            TransactWriteItem::builder()
                .put(p.membership_put(project_id, &region_tables.memberships, now_ms))
                .build(),
        );
        roles.push(ActionRole::Membership(i));
        for (change, action) in &p.events {
            items.push(
                TransactWriteItem::builder()
                    .put(event_put(
                        project_id,
                        &region_tables.events,
                        layout,
                        change,
                        *action,
                        segment,
                        now_ms,
                    ))
                    .build(),
            );
            roles.push(ActionRole::Event(i));
            tally.count(*action, change);
            *by_month.entry(month_of(change.ts_ms)).or_default() += 1;
        }
    }
    items.push(
        TransactWriteItem::builder()
            .update(counter_shard_update(
                project_id,
                &region_tables.segments,
                layout,
                counter_shard,
                &tally,
                now_ms,
            ))
            .build(),
    );
    roles.push(ActionRole::Counter);
    // Per-day tallies go to small items of their own beside the shard (never growing it).
    for update in day_tally_updates(
        project_id,
        &region_tables.segments,
        audience_id,
        counter_shard,
        &tally,
    ) {
        items.push(TransactWriteItem::builder().update(update).build());
        roles.push(ActionRole::DayTally);
    }
    for (month, count) in by_month {
        items.push(
            TransactWriteItem::builder()
                .update(usage_shard_update(
                    project_id,
                    &region_tables.segments,
                    &month,
                    pick_shard(sk::USAGE_SHARDS),
                    count,
                ))
                .build(),
        );
        roles.push(ActionRole::Usage);
    }
    (items, roles)
}

/// Actions [`segment_transaction`] builds for these pairs: a membership and its events per
/// pair, the counter shard, a day tally per UTC day and a usage update per month of the events.
pub fn transaction_actions(pairs: &[&PairWrite]) -> usize {
    let mut days = std::collections::BTreeSet::new();
    let mut months = std::collections::BTreeSet::new();
    for (change, _) in pairs.iter().flat_map(|p| &p.events) {
        days.insert(day_of(change.ts_ms));
        months.insert(month_of(change.ts_ms));
    }
    let pair_actions: usize = pairs.iter().map(|p| 1 + p.events.len()).sum();
    pair_actions + 1 + days.len() + months.len()
}

/// Table names of one region, resolved once per chunk.
#[derive(Debug, Clone)]
pub struct RegionTables {
    pub memberships: String,
    pub events: String,
    pub segments: String,
}

impl Store {
    pub fn region_tables(&self, region: Region) -> RegionTables {
        RegionTables {
            memberships: self.table(region, Table::Memberships),
            events: self.table(region, Table::Events),
            segments: self.table(region, Table::Segments),
        }
    }

    /// Advances a membership's version without changing membership (a no-op change); conditional
    /// on the version read, so it can never hide a concurrent change. Returns false if it lost.
    pub async fn put_membership_if_unchanged(
        &self,
        region: Region,
        project_id: &str,
        pair: &PairWrite,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let put = pair.membership_put(project_id, &self.table(region, Table::Memberships), now_ms);
        self.put_conditionally(region, put).await
    }
}

/// Which rows of a segment a Query keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFilter {
    /// Current members.
    Members,
    /// Pairs that ever raised a Partner Sync of this action (any action: `None`).
    Raised(Option<SyncAction>),
}

/// Rows read per page when clearing (the limit applies before the `member = true` filter, so a
/// page of cleared rows comes back empty with a next page: paging forward is what finishes).
const MEMBER_PAGE_ROWS: i32 = 1000;

/// Where the next page of a segment's rows starts: opaque outside the store.
#[derive(Debug, Clone)]
pub struct PageStart(Item);

/// One page of a segment's current members, for clearing: CleverTap ID and version of each.
#[derive(Debug, Clone, Default)]
pub struct MemberPage {
    pub members: Vec<(String, String)>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<PageStart>,
}

/// Members one clearing transaction flips: it also takes them off a counter shard (two updates)
/// and checks the segment (one check), within DynamoDB's 100 actions.
pub const MAX_CLEARED_PER_TRANSACTION: usize = 100 - 3;

/// How one clearing transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearOutcome {
    Committed,
    /// The segment is no longer in this archiving (connected again, or archived again).
    SegmentMoved,
    /// A row changed since it was read (a conflict, or a write planned before the seal).
    RowsMoved,
}

/// The version a cleared membership gets: just after the last change applied to it, so the
/// clear is newer than that change (a write planned on the old version fails its condition) and
/// older than any later change (`~` sorts after every character of a version's fixed fields).
pub fn cleared_version(version: &str) -> String {
    format!("{version}~cleared")
}

/// The one transaction by which members leave a segment without a Partner Sync event (its
/// disconnection clears them, an erasure scrubs them): their rows' updates, an optional check on
/// the segment, and `leaving` members taken off one counter shard (with the day's tally), so the
/// count moves exactly when the rows do.
pub(super) fn members_leave(
    project_id: &str,
    tables: &RegionTables,
    audience_id: i64,
    rows: Vec<Update>,
    segment_check: Option<ConditionCheck>,
    leaving: u64,
    now: i64,
) -> Vec<TransactWriteItem> {
    let mut items: Vec<TransactWriteItem> = rows
        .into_iter()
        .map(|row| TransactWriteItem::builder().update(row).build())
        .collect();
    items.extend(
        segment_check.map(|check| TransactWriteItem::builder().condition_check(check).build()),
    );
    if leaving > 0 {
        items.extend(
            counter_shard_clear(
                project_id,
                &tables.segments,
                audience_id,
                pick_shard(sk::COUNTER_SHARDS),
                leaving,
                now,
            )
            .map(|update| TransactWriteItem::builder().update(update).build()),
        );
    }
    items
}

/// Flips one member out of a segment being cleared, conditional on the row being as read.
fn clear_membership(
    project_id: &str,
    table: &str,
    layout: SegmentLayout,
    clevertap_id: &str,
    version: &str,
    now: i64,
) -> Update {
    Update::builder()
        .table_name(table)
        .set_key(Some(membership_key(project_id, layout, clevertap_id)))
        .update_expression(
            "SET #member = :no, version = :cleared, cleared_ms = :now, updated_ms = :now",
        )
        .condition_expression("#member = :yes AND version = :read")
        .expression_attribute_names("#member", "member")
        .expression_attribute_values(":no", row::boolean(false))
        .expression_attribute_values(":yes", row::boolean(true))
        .expression_attribute_values(":read", s(version))
        .expression_attribute_values(":cleared", s(cleared_version(version)))
        .expression_attribute_values(":now", n(now))
        .build()
        .expect("table and key are set")
}

impl Store {
    /// A Query of one page (`limit` rows read) of a segment's membership rows from `start`,
    /// keeping the members (`member = true`).
    pub(crate) fn member_rows(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        bucket: u32,
        start: Option<Item>,
        limit: i32,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.rows_where(
            region,
            project_id,
            layout,
            bucket,
            start,
            limit,
            RowFilter::Members,
        )
    }

    /// A Query of one page (`limit` rows read) of one bucket of a segment's rows from `start`,
    /// keeping those `filter` keeps.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rows_where(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        bucket: u32,
        start: Option<Item>,
        limit: i32,
        filter: RowFilter,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let (expression, attribute) = match filter {
            RowFilter::Members => ("#a = :yes", row::MEMBER),
            RowFilter::Raised(Some(SyncAction::Added)) => ("#a = :yes", mk::EVER_ADDED),
            RowFilter::Raised(Some(SyncAction::Removed)) => ("#a = :yes", mk::EVER_REMOVED),
            RowFilter::Raised(None) => ("#a = :yes OR #b = :yes", mk::EVER_ADDED),
        };
        let mut query = self
            .client(region)
            .query()
            .table_name(self.table(region, Table::Memberships))
            .key_condition_expression("pk = :pk")
            .filter_expression(expression)
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":pk", s(layout.bucket_pk(project_id, bucket)))
            .expression_attribute_values(":yes", row::boolean(true))
            .set_exclusive_start_key(start)
            .limit(limit);
        if filter == RowFilter::Raised(None) {
            query = query.expression_attribute_names("#b", mk::EVER_REMOVED);
        }
        query
    }

    /// The members among one page of one bucket of a segment's membership rows, from `start`.
    /// The filter is applied after the page is read, so a page may hold no members and still
    /// have a next one.
    pub async fn member_page(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        bucket: u32,
        start: Option<PageStart>,
    ) -> Result<MemberPage, StoreError> {
        let start = start.map(|PageStart(key)| key);
        let page = self
            .member_rows(region, project_id, layout, bucket, start, MEMBER_PAGE_ROWS)
            .consistent_read(true)
            .send()
            .await?;
        let members = page
            .items()
            .iter()
            .filter_map(|i| {
                let ct = get_s(i, keys::SK)?;
                Some((
                    ct.to_owned(),
                    row::version(i).unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        Ok(MemberPage {
            members,
            next: page.last_evaluated_key.map(PageStart),
        })
    }

    /// The rows of these profiles in one segment, read strongly consistent: CleverTap ID →
    /// state (absent: no row).
    pub async fn row_states(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_ids: &[&str],
    ) -> Result<HashMap<String, RowState>, StoreError> {
        let pairs: Vec<(SegmentLayout, &str)> =
            clevertap_ids.iter().map(|ct| (layout, *ct)).collect();
        Ok(self
            .pair_states(region, project_id, &pairs)
            .await?
            .into_iter()
            .map(|((_, ct), row)| (ct, row))
            .collect())
    }

    /// The rows of some (segment, profile) pairs, read strongly consistent: (audience id,
    /// CleverTap ID) → state (absent: no row).
    pub async fn pair_states(
        &self,
        region: Region,
        project_id: &str,
        pairs: &[(SegmentLayout, &str)],
    ) -> Result<HashMap<(i64, String), RowState>, StoreError> {
        let mut pair_of: HashMap<(String, String), (i64, String)> = HashMap::new();
        let keys = pairs
            .iter()
            .map(|(layout, ct)| {
                let row_key = (layout.row_pk(project_id, ct), mk::sk(ct));
                pair_of.insert(row_key, (layout.audience_id, (*ct).to_owned()));
                membership_key(project_id, *layout, ct)
            })
            .collect();
        Ok(self
            .batch_get(region, Table::Memberships, keys)
            .await?
            .into_iter()
            .filter_map(|item| {
                let row_key = (
                    get_s(&item, keys::PK)?.to_owned(),
                    get_s(&item, keys::SK)?.to_owned(),
                );
                let row = RowState {
                    state: row::member_state(Some(&item)),
                    history: row::history(Some(&item)),
                };
                Some((pair_of.get(&row_key)?.clone(), row))
            })
            .collect())
    }

    /// Writes some planned pairs of one segment in one transaction (rows, Partner Sync events,
    /// a counter shard picked at random, usage), conditional on every row being as planned.
    pub async fn write_pairs(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        segment: EventSegment<'_>,
        pairs: &[&PairWrite],
        now: i64,
    ) -> Result<PairsOutcome, StoreError> {
        let tables = self.region_tables(region);
        let shard = pick_shard(sk::COUNTER_SHARDS);
        let (items, roles) =
            segment_transaction(project_id, &tables, layout, segment, pairs, shard, now);
        Ok(match self.transact_write(region, items).await? {
            TxOutcome::Committed => PairsOutcome::Committed,
            TxOutcome::Cancelled(codes) => {
                PairsOutcome::Cancelled(PairsCancelled::of(&roles, &codes, pairs.len()))
            }
        })
    }

    /// Flips `members` (CleverTap ID, version as read; at most [`MAX_CLEARED_PER_TRANSACTION`])
    /// out of a segment being cleared, in one transaction that also takes them off one counter
    /// shard and checks that the segment is still in the archiving `archive_id`.
    pub async fn clear_members(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        archive_id: Option<&str>,
        members: &[(String, String)],
        now: i64,
    ) -> Result<ClearOutcome, StoreError> {
        let tables = self.region_tables(region);
        let audience_id = layout.audience_id;
        let flips = members
            .iter()
            .map(|(ct, version)| {
                clear_membership(project_id, &tables.memberships, layout, ct, version, now)
            })
            .collect();
        let check = archiving_check(project_id, &tables.segments, audience_id, archive_id);
        let items = members_leave(
            project_id,
            &tables,
            audience_id,
            flips,
            Some(check),
            members.len() as u64,
            now,
        );
        Ok(match self.transact_write(region, items).await? {
            TxOutcome::Committed => ClearOutcome::Committed,
            TxOutcome::Cancelled(codes)
                if codes.get(members.len()) == Some(&Some(CancellationReason::ConditionFailed)) =>
            {
                ClearOutcome::SegmentMoved
            }
            TxOutcome::Cancelled(_) => ClearOutcome::RowsMoved,
        })
    }
}

impl Memberships for Store {
    fn new_segment_buckets(&self) -> u32 {
        Store::new_segment_buckets(self)
    }

    async fn segments_by_id(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> Result<HashMap<i64, Segment>, StoreError> {
        Store::segments_by_id(self, region, project_id, audience_ids.iter().copied()).await
    }

    async fn segment(&self, key: &SegmentKey<'_>) -> Result<Option<Segment>, StoreError> {
        Store::segment(self, key).await
    }

    async fn pair_states(
        &self,
        region: Region,
        project_id: &str,
        pairs: &[(SegmentLayout, &str)],
    ) -> Result<HashMap<(i64, String), RowState>, StoreError> {
        Store::pair_states(self, region, project_id, pairs).await
    }

    async fn put_membership_if_unchanged(
        &self,
        region: Region,
        project_id: &str,
        pair: &PairWrite,
        now_ms: i64,
    ) -> Result<Written, StoreError> {
        let won =
            Store::put_membership_if_unchanged(self, region, project_id, pair, now_ms).await?;
        Ok(if won {
            Written::Applied
        } else {
            Written::ConditionFailed
        })
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
        Store::write_pairs(self, region, project_id, layout, segment, pairs, now_ms).await
    }

    async fn open_counter_shards(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        name: &str,
        now_ms: i64,
    ) -> Result<OpenTx, StoreError> {
        self.open_counter_shards_once(region, project_id, layout, name, now_ms)
            .await
    }

    async fn segment_counts(
        &self,
        region: Region,
        project_id: &str,
        audience_ids: &[i64],
    ) -> Result<HashMap<i64, SegmentCounts>, StoreError> {
        Ok(
            Store::segment_counts(self, region, project_id, audience_ids)
                .await?
                .into_iter()
                .collect(),
        )
    }

    async fn usage_events(
        &self,
        region: Region,
        project_id: &str,
        month: &str,
    ) -> Result<i64, StoreError> {
        Store::usage_events(self, region, project_id, month).await
    }

    async fn events_of(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<Vec<ProfileEvent>, StoreError> {
        Ok(self
            .profile_events(region, project_id, clevertap_id, 1_000, None)
            .await?
            .events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::changes::ChangeAction;
    use crate::domain::segment_state::MemberState;
    use crate::store::segment_item::segment_of;

    fn pair(ct: &str, event_times: &[i64]) -> PairWrite {
        let layout = SegmentLayout {
            audience_id: 7,
            buckets: 64,
        };
        let events = event_times
            .iter()
            .map(|ts| {
                let change = MembershipChange {
                    clevertap_id: ct.into(),
                    identity: None,
                    audience_id: 7,
                    audience_name: None,
                    action: ChangeAction::Add,
                    ts_ms: *ts,
                    message_id: "m".into(),
                    profile_index: 0,
                    entry_index: 0,
                    received_ms: None,
                    way: Default::default(),
                };
                (change, SyncAction::Added)
            })
            .collect();
        PairWrite {
            layout,
            clevertap_id: ct.into(),
            identity: None,
            expected_version: None,
            next: MemberState::default(),
            history: SyncHistory::default(),
            events,
            consumed: 1,
        }
    }

    #[test]
    fn a_cancellation_says_which_pairs_moved_and_whether_to_open_or_retry() {
        use CancellationReason as C;
        let roles = [
            ActionRole::Membership(0),
            ActionRole::Event(0),
            ActionRole::Membership(1),
            ActionRole::Event(1),
            ActionRole::Counter,
            ActionRole::DayTally,
            ActionRole::Usage,
        ];
        let moved = PairsCancelled::of(
            &roles,
            &[None, None, None, Some(C::ConditionFailed), None, None, None],
            2,
        );
        assert_eq!(moved.moved, [1]);
        assert!(!moved.shard_closed && !moved.transient && moved.rejected.is_none());
        let closed = PairsCancelled::of(
            &roles,
            &[None, None, None, None, Some(C::ConditionFailed), None, None],
            2,
        );
        assert!(closed.shard_closed && closed.moved.is_empty());
        let rejected = PairsCancelled::of(
            &roles,
            &[
                Some(C::Other("ValidationError".into())),
                None,
                None,
                None,
                None,
                None,
                None,
            ],
            2,
        );
        assert_eq!(rejected.rejected.as_deref(), Some("ValidationError"));
    }

    #[test]
    fn a_transaction_counts_a_day_tally_per_day_and_a_usage_update_per_month() {
        let day = 86_400_000;
        let (a, b) = (pair("a", &[0]), pair("b", &[10]));
        // Two pairs of one day: 2 memberships + 2 events + counter + 1 day + 1 month.
        assert_eq!(transaction_actions(&[&a, &b]), 7);
        let c = pair("c", &[day, 40 * day]);
        // Another two days, and a second month.
        assert_eq!(transaction_actions(&[&a, &b, &c]), 3 + 4 + 1 + 3 + 2);
    }

    #[test]
    fn rows_and_events_of_a_profile_share_its_bucket() {
        let layout = SegmentLayout {
            audience_id: 7,
            buckets: 64,
        };
        let key = membership_key("p", layout, "__x");
        assert_eq!(key[keys::PK].as_s().unwrap(), &layout.row_pk("p", "__x"));
        assert_eq!(layout.segment_key("p", "__x"), layout.row_pk("p", "__x"));
        let legacy = Item::from([("name".to_owned(), s("Old"))]);
        assert_eq!(SegmentLayout::of_item(7, &legacy).buckets, 1);
        assert_eq!(SegmentLayout::of_read(7, None, 64).buckets, 64);
        let recorded = Item::from([(SegmentLayout::ATTRIBUTE.to_owned(), n(32))]);
        let recorded = segment_of(7, &recorded).unwrap();
        assert_eq!(SegmentLayout::of_read(7, Some(&recorded), 64).buckets, 32);
    }
}
