//! Segments: created, renamed and archived by subscription requests.

use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};

use super::counters::{ShardGate, archiving_condition, gate_updates};
use super::segment_item::{SEGMENT_TYPE, SegmentKey, SegmentLayout, segment_of};
use super::{Item, Store, StoreError, get_s, n, s};
use crate::domain::feed::FeedNotice;
use crate::domain::records::{Segment, SegmentStatus};
use crate::store::feed::notice_put;
use crate::store::keys::{self, segments as k};
use crate::store::tables::Table;

/// What a subscription request does to its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// Connect: create, or re-activate an existing segment.
    Connect,
    /// Rename (or settings change): keep status and members.
    Update,
}

fn new_segment_id() -> String {
    format!("seg_{}", uuid::Uuid::new_v4().simple())
}

impl Store {
    /// Creates, re-activates or renames a segment and returns its hidden segment id.
    /// Subscription messages older than the last one applied to the segment change nothing.
    pub async fn upsert_segment(
        &self,
        segment: &SegmentKey<'_>,
        name: Option<&str>,
        change: SubscriptionChange,
        message_ts: i64,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        let SegmentKey {
            region,
            project_id,
            audience_id,
        } = *segment;
        let table = self.table(region, Table::Segments);
        let name_expr = if name.is_some() {
            "#name = :name"
        } else {
            "#name = if_not_exists(#name, :name)"
        };
        let status_expr = match change {
            SubscriptionChange::Connect => "#status = :active",
            SubscriptionChange::Update => "#status = if_not_exists(#status, :active)",
        };
        // A new segment records the bucket count it gets; one created before buckets existed
        // records none (it keeps one bucket): `created_ms` tells them apart.
        let existing = self.get_segment_item(segment).await?;
        let buckets_expr = match &existing {
            None => ", #buckets = if_not_exists(#buckets, :buckets)",
            Some(_) => "",
        };
        // A connect that activates the segment (new, or disconnected before) records when: the
        // feed marks the initial population by it. A repeated connect keeps the first.
        let was_active = existing
            .as_ref()
            .is_some_and(|item| segment_of(audience_id, item).is_ok_and(|s| s.is_active()));
        let activation_expr = match (change, was_active) {
            (SubscriptionChange::Connect, false) => ", activated_ms = :ts",
            (SubscriptionChange::Connect, true) => {
                ", activated_ms = if_not_exists(activated_ms, :ts)"
            }
            (SubscriptionChange::Update, _) => "",
        };
        let mut update = self
            .client(region)
            .update_item()
            .table_name(&table)
            .key(keys::PK, s(k::pk(project_id)))
            .key(keys::SK, s(k::segment_sk(audience_id)))
            .update_expression(format!(
                "SET {name_expr}, {status_expr}, #type = :type, segment_id = if_not_exists(segment_id, :sid), \
                 created_ms = if_not_exists(created_ms, :now), updated_ms = :now, \
                 partner_segment_id = :aid, project_id = :pid, sub_ts = :ts{buckets_expr}{activation_expr}"
            ))
            .condition_expression("attribute_not_exists(sub_ts) OR sub_ts <= :ts")
            .expression_attribute_names("#name", "name")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#type", "type")
            .expression_attribute_values(
                ":name",
                s(name.map(str::to_owned)
                    .unwrap_or_else(|| format!("Audience {audience_id}"))),
            )
            .expression_attribute_values(":active", s(SegmentStatus::Active.as_str()))
            .expression_attribute_values(":type", s(SEGMENT_TYPE))
            .expression_attribute_values(":sid", s(new_segment_id()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":aid", n(audience_id))
            .expression_attribute_values(":pid", s(project_id))
            .expression_attribute_values(":ts", n(message_ts))
            .return_values(ReturnValue::AllNew);
        if existing.is_none() {
            update = update
                .expression_attribute_names("#buckets", SegmentLayout::ATTRIBUTE)
                .expression_attribute_values(":buckets", n(self.new_segment_buckets()));
        }
        let res = update.send().await;
        match res {
            Ok(out) => Ok(segment_id_of(out.attributes.as_ref())),
            Err(e) if super::condition_failed(&e) => {
                // A newer subscription message was applied already; report the current id.
                let current = self.get_segment_item(segment).await?;
                Ok(segment_id_of(current.as_ref()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks an active segment as archiving, with a new archive id, and seals its counter shards
    /// in the same transaction, so no membership transaction can count (or add a member) from
    /// then on; materialization clears its members in the background. Returns whether this call
    /// started the archiving.
    pub async fn archive_segment(
        &self,
        segment: &SegmentKey<'_>,
        message_ts: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let SegmentKey {
            region,
            project_id,
            audience_id,
        } = *segment;
        let table = self.table(region, Table::Segments);
        let archive = Update::builder()
            .table_name(&table)
            .key(keys::PK, s(k::pk(project_id)))
            .key(keys::SK, s(k::segment_sk(audience_id)))
            .update_expression(
                "SET #status = :archiving, updated_ms = :now, sub_ts = :ts, archive_id = :archive",
            )
            .condition_expression(
                "attribute_exists(pk) AND #status = :active AND (attribute_not_exists(sub_ts) OR sub_ts <= :ts)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":archiving", s(SegmentStatus::Archiving.as_str()))
            .expression_attribute_values(":active", s(SegmentStatus::Active.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":ts", n(message_ts))
            .expression_attribute_values(":archive", s(uuid::Uuid::new_v4().simple().to_string()))
            .build()
            .expect("table and key are set");
        let mut items = vec![TransactWriteItem::builder().update(archive).build()];
        items.extend(gate_updates(
            &table,
            project_id,
            audience_id,
            ShardGate::Sealed,
            None,
        ));
        Ok(self.gate_transaction(region, items).await?.committed())
    }

    /// Marks a segment archived once its clearing is done, if it is still in the archiving
    /// `archive_id`. Returns false if it is not (connected again, or archived again since).
    /// The feed's notice that it was cleared is written in the same transaction.
    pub async fn mark_segment_archived(
        &self,
        segment: &SegmentKey<'_>,
        archive_id: Option<&str>,
        cleared: &FeedNotice,
    ) -> Result<bool, StoreError> {
        let SegmentKey {
            region,
            project_id,
            audience_id,
        } = *segment;
        let (condition, values) = archiving_condition(archive_id);
        let mark = Update::builder()
            .table_name(self.table(region, Table::Segments))
            .key(keys::PK, s(k::pk(project_id)))
            .key(keys::SK, s(k::segment_sk(audience_id)))
            .update_expression("SET #status = :archived, updated_ms = :now, archived_ms = :now")
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .expression_attribute_values(":archived", s(SegmentStatus::Archived.as_str()))
            .expression_attribute_values(":now", n(crate::domain::protocol::now_ms()))
            .build()
            .expect("table, key and expression are set");
        let notice = notice_put(&self.table(region, Table::Events), cleared);
        let items = vec![
            TransactWriteItem::builder().update(mark).build(),
            TransactWriteItem::builder().put(notice).build(),
        ];
        match self.transact_write(region, items).await? {
            super::TxOutcome::Committed => Ok(true),
            super::TxOutcome::Cancelled(codes) => {
                if codes.contains(&Some(super::CancellationReason::ConditionFailed)) {
                    Ok(false)
                } else {
                    // A conflict or throttling: the stream retries the record.
                    Err(StoreError::Unavailable(format!(
                        "marking segment {audience_id} archived was cancelled: {codes:?}"
                    )))
                }
            }
        }
    }

    /// A segment's layout (its recorded bucket count), `None` if it does not exist.
    pub async fn segment_layout(
        &self,
        segment: &SegmentKey<'_>,
    ) -> Result<Option<SegmentLayout>, StoreError> {
        Ok(self
            .get_segment_item(segment)
            .await?
            .map(|item| SegmentLayout::of_item(segment.audience_id, &item)))
    }

    /// A segment as stored (strongly consistent), without its counters (see `get_segment`).
    pub async fn segment(&self, segment: &SegmentKey<'_>) -> Result<Option<Segment>, StoreError> {
        self.get_segment_item(segment)
            .await?
            .map(|item| segment_of(segment.audience_id, &item))
            .transpose()
    }

    pub(super) async fn get_segment_item(
        &self,
        segment: &SegmentKey<'_>,
    ) -> Result<Option<Item>, StoreError> {
        let SegmentKey {
            region,
            project_id,
            audience_id,
        } = *segment;
        Ok(self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Segments))
            .key(keys::PK, s(k::pk(project_id)))
            .key(keys::SK, s(k::segment_sk(audience_id)))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }
}

fn segment_id_of(item: Option<&Item>) -> String {
    item.and_then(|i| get_s(i, "segment_id"))
        .unwrap_or_default()
        .to_owned()
}
