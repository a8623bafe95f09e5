//! What an erasure reads and writes: the project's erasure marks, tombstones, the erased person's
//! membership rows (with exact counts), events, claims and profiles, and the audit rows.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{ReturnValue, Update};

use super::memberships::{members_leave, membership_key};
use super::rows::memberships as row;
use super::rows::{profiles as profile_rows, projects as project_rows};
use super::segment_item::SegmentLayout;
use super::written;
use super::{CancellationReason, Item, Store, StoreError, TxOutcome, backoff, conditional, n, s};
use crate::domain::erasure::{ErasableRow, ErasureAudit, ScrubPlan, TombstoneKeys, plan_scrub};
use crate::domain::feed::FeedNotice;
use crate::domain::region::Region;
use crate::ports::Written;
use crate::ports::erasures::{
    Begun, ErasedRows, ErasureAudits, ErasureLog, ErasureMarks, RowErased,
};
use crate::store::keys::{self, events as ek, segments as sk};
use crate::store::tables::Table;

fn erasable_row(item: &Item) -> ErasableRow {
    ErasableRow {
        member: row::is_member(item),
        version: row::version(item).map(str::to_owned),
        holds_person: row::holds_person(item),
    }
}

/// The scrub of one row: not a member, no identity, no history, version `next`, conditional
/// on the version read.
fn scrub_update(
    table: &str,
    key: Item,
    next: &str,
    expected: Option<String>,
    now_ms: i64,
) -> Update {
    let (condition, read) = match expected {
        Some(v) => ("version = :read", Some(s(v))),
        None => ("attribute_not_exists(version)", None),
    };
    Update::builder()
        .table_name(table)
        .set_key(Some(key))
        // The person's events go: so does the history Find People reads.
        .update_expression(
            "SET #member = :no, version = :next, erased_ms = :now, \
             updated_ms = :now REMOVE #identity, #added, #removed",
        )
        .condition_expression(condition)
        .expression_attribute_names("#member", row::MEMBER)
        .expression_attribute_names("#identity", row::IDENTITY)
        .expression_attribute_names("#added", row::EVER_ADDED)
        .expression_attribute_names("#removed", row::EVER_REMOVED)
        .set_expression_attribute_values(Some(
            [
                (":no", row::boolean(false)),
                (":next", s(next)),
                (":now", n(now_ms)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(read.map(|r| (":read".to_owned(), r)))
            .collect(),
        ))
        .build()
        .expect("table and key are set")
}

/// Re-reads of one membership row whose version moved while erasing it.
const MAX_MEMBERSHIP_REREADS: u32 = 25;

impl Store {
    /// Takes a person out of one segment: the row stops being a member, loses its identity and
    /// gets a version at least `erased_version` (so a change sent before the erasure is stale);
    /// a member is taken off a counter shard in the same transaction. Conditional on the row's
    /// version as read; a row that moved is read again.
    ///
    /// 1. Read the row. 2. Plan (`plan_scrub`, pure). 3. Write what the plan says.
    pub async fn erase_membership(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> Result<RowErased, StoreError> {
        let tables = self.region_tables(region);
        let audience_id = layout.audience_id;
        let key = membership_key(project_id, layout, clevertap_id);
        for attempt in 0..MAX_MEMBERSHIP_REREADS {
            // 1. The row as it is now.
            let row = self
                .get_item_by_key(region, Table::Memberships, key.clone())
                .await?
                .map(|item| erasable_row(&item));
            // 2. What erasing it takes.
            let (next, expected, leaving) = match plan_scrub(row.as_ref(), erased_version) {
                ScrubPlan::Unchanged => return Ok(RowErased::Unchanged),
                ScrubPlan::Block => {
                    let put = self.put_blocking_row(
                        region,
                        project_id,
                        layout,
                        clevertap_id,
                        erased_version,
                        now_ms,
                    );
                    if put.await? {
                        return Ok(RowErased::Blocked);
                    }
                    continue; // a row appeared meanwhile: erase it
                }
                ScrubPlan::Scrub {
                    next,
                    expected,
                    leaving,
                } => (next, expected, leaving),
            };
            // 3. The scrub, with the member leaving the counter in the same transaction.
            let scrub = scrub_update(&tables.memberships, key.clone(), &next, expected, now_ms);
            let items = members_leave(
                project_id,
                &tables,
                audience_id,
                vec![scrub],
                None,
                u64::from(leaving),
                now_ms,
            );
            match self.transact_write(region, items).await? {
                TxOutcome::Committed => {
                    return Ok(if leaving {
                        RowErased::MemberRemoved
                    } else {
                        RowErased::Scrubbed
                    });
                }
                TxOutcome::Cancelled(codes) => {
                    if let Some(CancellationReason::Other(code)) = codes
                        .iter()
                        .flatten()
                        .find(|c| matches!(c, CancellationReason::Other(_)))
                    {
                        return Err(StoreError::Rejected(format!(
                            "erasing a membership of audience {audience_id}: {code}"
                        )));
                    }
                    if codes.first() != Some(&Some(CancellationReason::ConditionFailed)) {
                        tokio::time::sleep(backoff(attempt.min(4) + 1)).await;
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "membership of audience {audience_id} kept changing while erasing it"
        )))
    }

    /// A non-member row at the erasure's version where there was none; false if one appeared.
    async fn put_blocking_row(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut item = membership_key(project_id, layout, clevertap_id);
        item.insert(row::MEMBER.into(), row::boolean(false));
        item.insert(row::VERSION.into(), s(erased_version));
        item.insert(row::CLEVERTAP_ID.into(), s(clevertap_id));
        item.insert(row::AUDIENCE_ID.into(), n(layout.audience_id));
        item.insert(row::ERASED_MS.into(), n(now_ms));
        item.insert("updated_ms".into(), n(now_ms));
        self.put_new(region, Table::Memberships, item).await
    }

    /// A PutItem that never overwrites: false if the item exists.
    async fn put_new(&self, region: Region, table: Table, item: Item) -> Result<bool, StoreError> {
        let res = self
            .client(region)
            .put_item()
            .table_name(self.table(region, table))
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional(res)
    }

    /// Deletes every Partner Sync event of a profile; returns how many. If it has any, `notice`
    /// is written for the publisher first (they may have been published), so a retry after a
    /// failure finds the events still there until the notice is written.
    pub async fn delete_profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        before_ms: i64,
        notice: &FeedNotice,
    ) -> Result<u64, StoreError> {
        let table = self.table(region, Table::Events);
        // Event keys begin with the change's mParticle time (`keys::events::sk`).
        let before = crate::domain::erasure::erasure_version(before_ms);
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self
                .client(region)
                .query()
                .table_name(&table)
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(":pk", s(ek::pk(project_id, clevertap_id)))
                .expression_attribute_values(":before", s(&before))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            let keys = page.items.unwrap_or_default();
            if deleted == 0 && !keys.is_empty() {
                self.put_feed_notice(region, notice).await?;
            }
            deleted += keys.len() as u64;
            self.delete_each(region, Table::Events, keys).await?;
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }

    /// Deletes items by key, one DeleteItem each (a few at once). Not BatchWriteItem: IAM
    /// cannot tell a batch's deletes from its puts, so a role granted it could write any item of
    /// the table (#34, defect 7); DeleteItem can only delete.
    async fn delete_each(
        &self,
        region: Region,
        table: Table,
        keys: Vec<Item>,
    ) -> Result<(), StoreError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let table_name = self.table(region, table);
        stream::iter(keys)
            .map(|key| {
                let request = self
                    .client(region)
                    .delete_item()
                    .table_name(&table_name)
                    .set_key(Some(key));
                async move { request.send().await.map(|_| ()) }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Records an erasure's audit row unless one exists for its request; returns whether this
    /// call wrote it. The row holds ids, times and counts, never an identity.
    pub async fn put_erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        audit: &ErasureAudit,
    ) -> Result<bool, StoreError> {
        let mut row: Item = serde_dynamo::to_item(audit)?;
        row.insert(keys::PK.to_owned(), s(sk::erasure_pk(project_id)));
        row.insert(keys::SK.to_owned(), s(sk::erasure_sk(&audit.request_id)));
        self.put_new(region, Table::Segments, row).await
    }

    /// The audit row of one erasure request, if it was carried out.
    pub async fn erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<Option<ErasureAudit>, StoreError> {
        let key = Item::from([
            (keys::PK.to_owned(), s(sk::erasure_pk(project_id))),
            (keys::SK.to_owned(), s(sk::erasure_sk(request_id))),
        ]);
        Ok(self
            .get_item_by_key(region, Table::Segments, key)
            .await?
            .map(serde_dynamo::from_item)
            .transpose()?)
    }

    /// One page of a project's erasure audit rows, in request-id order: one Query.
    pub async fn erasure_audits_page(
        &self,
        region: Region,
        project_id: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<ErasureAudit>, Option<String>), StoreError> {
        let after = after.map(sk::erasure_sk);
        let (items, next) = self
            .query_page(
                region,
                Table::Segments,
                &sk::erasure_pk(project_id),
                sk::ERASURE_AUDIT_PREFIX,
                limit,
                after.as_deref(),
            )
            .await?;
        let audits = (items.into_iter())
            .map(serde_dynamo::from_item)
            .collect::<Result<Vec<ErasureAudit>, _>>()?;
        let next = next.and_then(|sk| sk.strip_prefix(sk::ERASURE_AUDIT_PREFIX).map(str::to_owned));
        Ok((audits, next))
    }

    /// Every erasure audit row of a project, the latest completed first.
    pub async fn erasure_audits(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<Vec<ErasureAudit>, StoreError> {
        erasure_audits_of(
            self.query_partition(
                region,
                Table::Segments,
                &sk::erasure_pk(project_id),
                Some(sk::ERASURE_AUDIT_PREFIX),
            )
            .await?,
        )
    }
}

/// Audit rows as [`ErasureAudit`]s, the latest completed first.
fn erasure_audits_of(rows: Vec<Item>) -> Result<Vec<ErasureAudit>, StoreError> {
    let mut audits: Vec<ErasureAudit> = rows
        .into_iter()
        .map(serde_dynamo::from_item)
        .collect::<Result<_, _>>()?;
    audits.sort_by_key(|a| std::cmp::Reverse(a.completed_ms));
    Ok(audits)
}

impl ErasureAudits for Store {
    async fn erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<Option<ErasureAudit>, StoreError> {
        Store::erasure_audit(self, region, project_id, request_id).await
    }

    async fn begin_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
        cut_off_ms: i64,
        found: &Begun,
    ) -> Result<Begun, StoreError> {
        let key = Item::from([
            (keys::PK.to_owned(), s(sk::erasure_pk(project_id))),
            (keys::SK.to_owned(), s(sk::erasure_begun_sk(request_id))),
        ]);
        let out = super::rows::erasures::erasure_begun(cut_off_ms, found)
            .on(self
                .client(region)
                .update_item()
                .table_name(self.table(region, Table::Segments))
                .set_key(Some(key)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await?;
        let recorded = super::rows::erasures::begun_of(&out.attributes.unwrap_or_default());
        Ok(recorded.unwrap_or(Begun {
            cut_off_ms,
            ..found.clone()
        }))
    }

    async fn finish_erasure(
        &self,
        region: Region,
        project_id: &str,
        request_id: &str,
    ) -> Result<(), StoreError> {
        let key = Item::from([
            (keys::PK.to_owned(), s(sk::erasure_pk(project_id))),
            (keys::SK.to_owned(), s(sk::erasure_begun_sk(request_id))),
        ]);
        self.client(region)
            .delete_item()
            .table_name(self.table(region, Table::Segments))
            .set_key(Some(key))
            .send()
            .await?;
        Ok(())
    }

    async fn put_erasure_audit(
        &self,
        region: Region,
        project_id: &str,
        audit: &ErasureAudit,
    ) -> Result<Written, StoreError> {
        Ok(
            match Store::put_erasure_audit(self, region, project_id, audit).await? {
                true => Written::Applied,
                false => Written::ConditionFailed,
            },
        )
    }
}

impl ErasedRows for Store {
    async fn erase_membership(
        &self,
        region: Region,
        project_id: &str,
        layout: SegmentLayout,
        clevertap_id: &str,
        erased_version: &str,
        now_ms: i64,
    ) -> Result<RowErased, StoreError> {
        Store::erase_membership(
            self,
            region,
            project_id,
            layout,
            clevertap_id,
            erased_version,
            now_ms,
        )
        .await
    }

    async fn segments_of_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
    ) -> Result<std::collections::BTreeSet<i64>, StoreError> {
        let mut segments = std::collections::BTreeSet::new();
        let mut start = None;
        loop {
            let page = self
                .client(region)
                .query()
                .table_name(self.table(region, Table::Events))
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(ek::pk(project_id, clevertap_id)))
                .projection_expression("sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items.unwrap_or_default() {
                if let Some(aud) = super::get_s(&item, keys::SK).and_then(ek::segment_of_sk) {
                    segments.insert(aud);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(segments);
            }
        }
    }

    async fn delete_profile_events(
        &self,
        region: Region,
        project_id: &str,
        clevertap_id: &str,
        before_ms: i64,
        notice: &FeedNotice,
    ) -> Result<u64, StoreError> {
        Store::delete_profile_events(self, region, project_id, clevertap_id, before_ms, notice)
            .await
    }
}

impl ErasureLog for Store {
    async fn erasure_marks(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<ErasureMarks, StoreError> {
        let mut request = self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Projects))
            .set_key(Some(project_rows::key(project_id)))
            .consistent_read(true);
        let mut projection = Vec::new();
        for (i, attribute) in project_rows::MARKS.iter().enumerate() {
            request = request.expression_attribute_names(format!("#m{i}"), *attribute);
            projection.push(format!("#m{i}"));
        }
        let item = request
            .projection_expression(projection.join(", "))
            .send()
            .await?
            .item;
        Ok(project_rows::marks_of(&item.unwrap_or_default()))
    }

    async fn mark_erasures(
        &self,
        region: Region,
        project_id: &str,
    ) -> Result<ErasureMarks, StoreError> {
        let res = project_rows::erasures_marked()
            .on(self
                .client(region)
                .update_item()
                .table_name(self.table(region, Table::Projects))
                .set_key(Some(project_rows::key(project_id))))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok(project_rows::marks_of(&out.attributes.unwrap_or_default())),
            Err(e) if super::condition_failed(&e) => Err(StoreError::Rejected(format!(
                "ConditionalCheckFailedException: project {project_id} does not exist"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn tombstone_keys(&self) -> Result<Arc<TombstoneKeys>, StoreError> {
        Store::tombstone_keys(self).await
    }

    async fn tombstones(
        &self,
        region: Region,
        project_id: &str,
        hashes: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let keys: Vec<Item> = hashes
            .iter()
            .map(|h| profile_rows::tombstone_key(project_id, h))
            .collect();
        Ok(self
            .batch_get(region, Table::Profiles, keys)
            .await?
            .iter()
            .filter_map(|i| profile_rows::tombstone_of(project_id, i))
            .collect())
    }

    async fn write_tombstone(
        &self,
        region: Region,
        project_id: &str,
        hash: &str,
        erased_ms: i64,
    ) -> Result<Written, StoreError> {
        let res = profile_rows::tombstone_written(erased_ms)
            .on(self
                .client(region)
                .update_item()
                .table_name(self.table(region, Table::Profiles))
                .set_key(Some(profile_rows::tombstone_key(project_id, hash))))
            .send()
            .await;
        written(res)
    }
}
