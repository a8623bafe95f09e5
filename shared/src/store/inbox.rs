//! The inbox: membership batches stored durably before mParticle gets its answer.

use std::time::Duration;

use serde::Deserialize;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::{CancellationReason, Item, Store, StoreError, n, s};
use crate::domain::batch::Chunk;
use crate::domain::records::InboxStatus;
use crate::domain::region::Region;
use crate::store::keys::{self, inbox as k};
use crate::store::tables::Table;

/// Inbox rows (and so the sync log) are kept this long.
pub const INBOX_RETENTION_SECS: i64 = 30 * 24 * 3600;

/// An inbox row: a stored chunk of a batch, as the pipeline's stages read it (from a stream
/// record's new image, or from the table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InboxRow {
    pub project_id: String,
    pub message_id: String,
    pub chunk: u32,
    pub message_ts: i64,
    /// When authorize stored the batch (ms).
    #[serde(default)]
    pub received_ms: i64,
    pub status: InboxStatus,
    #[serde(default)]
    pub payload: serde_bytes::ByteBuf,
    #[serde(default)]
    pub changes: Option<serde_bytes::ByteBuf>,
    /// Chunks of its request, and profiles in this one.
    #[serde(default)]
    pub chunk_count: u32,
    #[serde(default)]
    pub profile_count: u32,
    /// When DynamoDB's time to live removes it (epoch seconds).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// An inbox row from a stream record's new image.
pub fn inbox_row_of_image(image: &serde_dynamo::Item) -> Result<InboxRow, String> {
    serde_dynamo::from_item(image.clone()).map_err(|e| e.to_string())
}

#[derive(Debug, Clone)]
pub struct BatchMeta<'a> {
    pub project_id: &'a str,
    pub message_id: &'a str,
    /// The message's own `timestamp_ms`: the ordering key of its changes.
    pub message_ts: i64,
    pub received_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutBatchOutcome {
    Stored {
        chunks: usize,
    },
    /// This message id was stored before; nothing new was written.
    Duplicate,
}

fn chunk_item(meta: &BatchMeta<'_>, chunk: &Chunk, chunk_count: usize) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(k::pk(meta.project_id, meta.message_id, chunk.index)),
        ),
        (keys::SK.to_owned(), s(k::sk(meta.message_id, chunk.index))),
        (
            k::RECEIVED_KEY.to_owned(),
            s(k::received_key(
                meta.received_ms,
                meta.message_id,
                chunk.index,
            )),
        ),
        (
            k::RECEIVED_SHARD.to_owned(),
            s(k::received_shard(
                meta.project_id,
                meta.message_id,
                chunk.index,
            )),
        ),
        ("project_id".to_owned(), s(meta.project_id)),
        ("message_id".to_owned(), s(meta.message_id)),
        ("chunk".to_owned(), n(chunk.index)),
        ("chunk_count".to_owned(), n(chunk_count)),
        ("message_ts".to_owned(), n(meta.message_ts)),
        ("received_ms".to_owned(), n(meta.received_ms)),
        (k::STATUS.to_owned(), s(InboxStatus::Received.as_str())),
        ("profile_count".to_owned(), n(chunk.profile_count)),
        (
            "payload".to_owned(),
            AttributeValue::B(Blob::new(chunk.payload.clone())),
        ),
        (
            k::EXPIRES_AT.to_owned(),
            n(meta.received_ms / 1000 + INBOX_RETENTION_SECS),
        ),
    ])
}

const NEW_KEY_ONLY: &str = "attribute_not_exists(pk)";

impl Store {
    /// Stores every chunk of a batch or none of them, idempotently on the message id.
    ///
    /// One chunk is a conditional PutItem (half the cost of a transaction); several are one
    /// TransactWriteItems, each put conditional on its key being new. A condition failure means
    /// this message was stored before: the answer is `Duplicate` and nothing is written.
    pub async fn put_batch(
        &self,
        region: Region,
        meta: &BatchMeta<'_>,
        chunks: &[Chunk],
    ) -> Result<PutBatchOutcome, StoreError> {
        let table = self.table(region, Table::Inbox);
        let client = self.client(region);
        if chunks.len() == 1 {
            let res = client
                .put_item()
                .table_name(&table)
                .set_item(Some(chunk_item(meta, &chunks[0], 1)))
                .condition_expression(NEW_KEY_ONLY)
                .send()
                .await;
            return match res {
                Ok(_) => Ok(PutBatchOutcome::Stored { chunks: 1 }),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    Ok(PutBatchOutcome::Duplicate)
                }
                Err(e) => Err(e.into()),
            };
        }
        let items: Vec<TransactWriteItem> = chunks
            .iter()
            .map(|c| {
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&table)
                            .set_item(Some(chunk_item(meta, c, chunks.len())))
                            .condition_expression(NEW_KEY_ONLY)
                            .build()
                            .expect("table and item are set"),
                    )
                    .build()
            })
            .collect();
        // Concurrent deliveries of the same message conflict; one wins, the others see the
        // condition fail on retry and report a duplicate.
        let mut attempt = 0;
        loop {
            let res = client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
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
            if reasons.iter().any(|r| r.is_transient())
                && reasons.iter().all(|r| r.is_transient())
                && attempt < 4
            {
                attempt += 1;
                super::stats::note_retry();
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                continue;
            }
            return Err(err.into());
        }
    }
}

impl Store {
    /// An UpdateItem of one chunk's row (its status moves: resolved, materialized, failed).
    fn update_chunk_row(
        &self,
        region: Region,
        project_id: &str,
        message_id: &str,
        chunk: u32,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client(region)
            .update_item()
            .table_name(self.table(region, Table::Inbox))
            .key(keys::PK, s(k::pk(project_id, message_id, chunk)))
            .key(keys::SK, s(k::sk(message_id, chunk)))
    }

    /// Moves a chunk from `received` to `resolved`, attaching its changes and outcome counts and
    /// dropping the payload, which nothing needs any more: the row stays small (an update costs
    /// the size of the whole item) and a replayed INSERT record carries the payload itself.
    /// Returns false when the row had moved on already (a replayed stream record).
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_resolved(
        &self,
        region: Region,
        project_id: &str,
        message_id: &str,
        chunk: u32,
        changes: &[u8],
        outcomes: &crate::domain::sync_log::ResolveOutcomes,
        adds: usize,
        deletes: usize,
    ) -> Result<bool, StoreError> {
        let outcomes = serde_dynamo::to_attribute_value(outcomes)?;
        let counts = AttributeValue::M(
            [
                ("add".to_owned(), n(adds)),
                ("delete".to_owned(), n(deletes)),
            ]
            .into(),
        );
        let res = self
            .update_chunk_row(region, project_id, message_id, chunk)
            .update_expression(
                "SET #st = :resolved, changes = :c, outcomes = :o, change_counts = :cc, resolved_ms = :now \
                 REMOVE payload",
            )
            .condition_expression("#st = :received")
            .expression_attribute_names("#st", k::STATUS)
            .expression_attribute_values(":resolved", s(InboxStatus::Resolved.as_str()))
            .expression_attribute_values(":received", s(InboxStatus::Received.as_str()))
            .expression_attribute_values(":c", AttributeValue::B(Blob::new(changes.to_vec())))
            .expression_attribute_values(":o", outcomes)
            .expression_attribute_values(":cc", counts)
            .expression_attribute_values(":now", n(crate::domain::protocol::now_ms()))
            .send()
            .await;
        super::conditional(res)
    }
}

impl Store {
    /// Marks a chunk that can never be processed as `failed`, with the reason on its sync-log
    /// row, so the stream moves on and people see why. Returns false if the row had moved on.
    pub async fn mark_failed(
        &self,
        region: Region,
        project_id: &str,
        message_id: &str,
        chunk: u32,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .update_chunk_row(region, project_id, message_id, chunk)
            .update_expression("SET #st = :failed, failure = :why, failed_ms = :now")
            .condition_expression("#st IN (:received, :resolved)")
            .expression_attribute_names("#st", k::STATUS)
            .expression_attribute_values(":failed", s(InboxStatus::Failed.as_str()))
            .expression_attribute_values(":received", s(InboxStatus::Received.as_str()))
            .expression_attribute_values(":resolved", s(InboxStatus::Resolved.as_str()))
            .expression_attribute_values(":why", s(reason))
            .expression_attribute_values(":now", n(crate::domain::protocol::now_ms()))
            .send()
            .await;
        super::conditional(res)
    }

    /// Moves a chunk from `resolved` to `materialized` with what materialization did, dropping
    /// the changes (a replayed MODIFY record carries them itself). Returns false when the row had
    /// moved on already (a replayed stream record).
    pub async fn mark_materialized(
        &self,
        region: Region,
        project_id: &str,
        message_id: &str,
        chunk: u32,
        counts: &crate::domain::sync_log::MaterializeCounts,
    ) -> Result<bool, StoreError> {
        let applied = serde_dynamo::to_attribute_value(counts)?;
        let res = self
            .update_chunk_row(region, project_id, message_id, chunk)
            .update_expression(
                "SET #st = :done, applied = :a, materialized_ms = :now REMOVE changes",
            )
            .condition_expression("#st = :resolved")
            .expression_attribute_names("#st", k::STATUS)
            .expression_attribute_values(":done", s(InboxStatus::Materialized.as_str()))
            .expression_attribute_values(":resolved", s(InboxStatus::Resolved.as_str()))
            .expression_attribute_values(":a", applied)
            .expression_attribute_values(":now", n(crate::domain::protocol::now_ms()))
            .send()
            .await;
        super::conditional(res)
    }
}
