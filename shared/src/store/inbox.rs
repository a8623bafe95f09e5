//! The inbox port on DynamoDB: each method is one request (PutItem, TransactWriteItems,
//! UpdateItem or GetItem); items are mapped in `rows::inbox`.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::rows::inbox as rows;
use super::rows::progress as progress_rows;
use super::{CancellationReason, Store, StoreError};
use crate::domain::batch::Chunk;
use crate::domain::progress::{ProgressDelta, ProgressReading};
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::domain::sync_log::MaterializeCounts;
use crate::ports::Written;
use crate::ports::inbox::{
    BatchMeta, ChunkKey, Handoff, Inbox, InboxRow, PutBatchOutcome, progress_on_store,
};
use crate::store::tables::Table;

impl Store {
    /// An UpdateItem of one chunk's row, with a row file's expressions.
    async fn update_chunk_row(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        update: super::rows::UpdateSpec,
    ) -> Result<Written, StoreError> {
        let request = self
            .client(region)
            .update_item()
            .table_name(self.table(region, Table::Inbox))
            .set_key(Some(rows::key(key)));
        super::written(update.on(request).send().await)
    }

    /// The progress items `progress` adds to, as actions of a transaction: each delta's totals
    /// shard and, if it applied changes, its rate bucket.
    fn progress_actions(
        &self,
        region: Region,
        project_id: &str,
        progress: &[ProgressDelta],
    ) -> Vec<TransactWriteItem> {
        let table = self.table(region, Table::Segments);
        progress
            .iter()
            .flat_map(|d| {
                let totals = progress_rows::totals_update(d).transact(
                    &table,
                    progress_rows::totals_key(project_id, d.audience_id, d.shard),
                );
                let rate = progress_rows::rate_update(project_id, d)
                    .map(|(key, update)| update.transact(&table, key));
                std::iter::once(totals).chain(rate)
            })
            .collect()
    }

    /// A chunk row's status change with the progress it adds: one UpdateItem without progress,
    /// one transaction with it (the counts land exactly when the status moves).
    async fn move_chunk_row(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        update: super::rows::UpdateSpec,
        progress: &[ProgressDelta],
    ) -> Result<Written, StoreError> {
        if progress.is_empty() {
            return self.update_chunk_row(region, key, update).await;
        }
        let mut actions = vec![update.transact(&self.table(region, Table::Inbox), rows::key(key))];
        actions.extend(self.progress_actions(region, key.project_id, progress));
        match self.transact_write(region, actions).await? {
            super::TxOutcome::Committed => Ok(Written::Applied),
            // The row's update is the first action: its condition failing is the answer.
            super::TxOutcome::Cancelled(reasons)
                if reasons.first() == Some(&Some(CancellationReason::ConditionFailed)) =>
            {
                Ok(Written::ConditionFailed)
            }
            super::TxOutcome::Cancelled(reasons) => Err(StoreError::Unavailable(format!(
                "moving a chunk row: transaction cancelled ({reasons:?})"
            ))),
        }
    }
}

impl Inbox for Store {
    /// One chunk is a conditional PutItem (half the cost of a transaction); several are one
    /// TransactWriteItems.
    async fn put_batch(
        &self,
        region: Region,
        meta: &BatchMeta<'_>,
        chunks: &[Chunk],
    ) -> Result<PutBatchOutcome, StoreError> {
        let table = self.table(region, Table::Inbox);
        let batch = meta.rows(chunks);
        let progress = progress_on_store(&batch);
        let mut items = batch
            .iter()
            .map(rows::item)
            .collect::<Result<Vec<_>, _>>()?;
        if items.len() == 1
            && progress.is_empty()
            && let Some(item) = items.pop()
        {
            let res = self
                .client(region)
                .put_item()
                .table_name(&table)
                .set_item(Some(item))
                .condition_expression(rows::NEW_KEY_ONLY)
                .send()
                .await;
            return Ok(match super::written(res)? {
                Written::Applied => PutBatchOutcome::Stored { chunks: 1 },
                Written::ConditionFailed => PutBatchOutcome::Duplicate,
            });
        }
        let mut actions: Vec<TransactWriteItem> = items
            .into_iter()
            .map(|item| {
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&table)
                            .set_item(Some(item))
                            .condition_expression(rows::NEW_KEY_ONLY)
                            .build()
                            .expect("table and item are set"),
                    )
                    .build()
            })
            .collect();
        actions.extend(self.progress_actions(region, meta.project_id, &progress));
        let res = self
            .client(region)
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await;
        let err = match res {
            Ok(_) => {
                return Ok(PutBatchOutcome::Stored {
                    chunks: chunks.len(),
                });
            }
            Err(e) => e,
        };
        let reasons: Vec<CancellationReason> = super::cancellation_codes(&err)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        if reasons.contains(&CancellationReason::ConditionFailed) {
            return Ok(PutBatchOutcome::Duplicate);
        }
        if !reasons.is_empty() && reasons.iter().all(CancellationReason::is_transient) {
            return Ok(PutBatchOutcome::Contended);
        }
        Err(err.into())
    }

    async fn mark_resolved(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        handoff: Handoff<'_>,
    ) -> Result<Written, StoreError> {
        let update = rows::resolved_update(handoff, crate::domain::protocol::now_ms())?;
        self.move_chunk_row(region, key, update, handoff.progress)
            .await
    }

    async fn mark_materialized(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        applied: &MaterializeCounts,
        progress: &[ProgressDelta],
    ) -> Result<Written, StoreError> {
        let update = rows::materialized_update(applied, crate::domain::protocol::now_ms())?;
        self.move_chunk_row(region, key, update, progress).await
    }

    async fn mark_failed(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        from: InboxStatus,
        reason: &str,
        progress: &[ProgressDelta],
    ) -> Result<Written, StoreError> {
        let update = rows::failed_update(from, reason, crate::domain::protocol::now_ms());
        self.move_chunk_row(region, key, update, progress).await
    }

    async fn import_progress(
        &self,
        region: Region,
        project_id: &str,
        audience_id: i64,
        now_ms: i64,
    ) -> Result<ProgressReading, StoreError> {
        let keys = progress_rows::reading_keys(project_id, audience_id, now_ms);
        let items = self.transact_get(region, Table::Segments, keys).await?;
        Ok(progress_rows::reading(items.into_iter().flatten()))
    }

    async fn chunk_row(
        &self,
        region: Region,
        key: ChunkKey<'_>,
    ) -> Result<Option<InboxRow>, StoreError> {
        let out = self
            .client(region)
            .get_item()
            .table_name(self.table(region, Table::Inbox))
            .set_key(Some(rows::key(key)))
            .consistent_read(true)
            .send()
            .await?;
        out.item.map(rows::row).transpose()
    }
}
