//! The inbox port on DynamoDB: each method is one request (PutItem, TransactWriteItems,
//! UpdateItem or GetItem); items are mapped in `rows::inbox`.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::rows::inbox as rows;
use super::{CancellationReason, Store, StoreError};
use crate::domain::batch::Chunk;
use crate::domain::region::Region;
use crate::domain::sync_log::MaterializeCounts;
use crate::ports::Written;
use crate::ports::inbox::{BatchMeta, ChunkKey, Handoff, Inbox, InboxRow, PutBatchOutcome};
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
        let mut items = chunks
            .iter()
            .map(|c| rows::item(&meta.row(c, chunks.len())))
            .collect::<Result<Vec<_>, _>>()?;
        if items.len() == 1
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
        let actions: Vec<TransactWriteItem> = items
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
        self.update_chunk_row(region, key, update).await
    }

    async fn mark_materialized(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        applied: &MaterializeCounts,
    ) -> Result<Written, StoreError> {
        let update = rows::materialized_update(applied, crate::domain::protocol::now_ms())?;
        self.update_chunk_row(region, key, update).await
    }

    async fn mark_failed(
        &self,
        region: Region,
        key: ChunkKey<'_>,
        reason: &str,
    ) -> Result<Written, StoreError> {
        let update = rows::failed_update(reason, crate::domain::protocol::now_ms());
        self.update_chunk_row(region, key, update).await
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
