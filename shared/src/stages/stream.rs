//! DynamoDB stream records as the pipeline stages receive them.

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Deserialize;

use crate::region::Region;
use crate::tables::{Table, TableNames};

/// An inbox row, read from a stream record's new image.
#[derive(Debug, Clone, Deserialize)]
pub struct InboxRow {
    pub project_id: String,
    pub message_id: String,
    pub chunk: u32,
    pub message_ts: i64,
    /// When authorize stored the batch (ms).
    #[serde(default)]
    pub received_ms: i64,
    pub status: String,
    #[serde(default)]
    pub payload: serde_bytes::ByteBuf,
    #[serde(default)]
    pub changes: Option<serde_bytes::ByteBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record has no usable source table: {0:?}")]
    UnknownSource(Option<String>),
    #[error("record image is unreadable: {0}")]
    Image(String),
}

/// The region and table a record comes from: taken from its source ARN, so one process can
/// serve every region (run-local) and a deployed function serves its own.
pub fn record_source(
    names: &TableNames,
    record: &EventRecord,
) -> Result<(Region, Table), RecordError> {
    record
        .event_source_arn
        .as_deref()
        .and_then(|arn| names.parse_arn(arn))
        .ok_or_else(|| RecordError::UnknownSource(record.event_source_arn.clone()))
}

pub fn inbox_row(record: &EventRecord) -> Result<InboxRow, RecordError> {
    serde_dynamo::from_item(record.change.new_image.clone())
        .map_err(|e| RecordError::Image(e.to_string()))
}

/// The identifier Lambda wants back for a failed stream record: its sequence number.
pub fn failure(record: &EventRecord) -> DynamoDbBatchItemFailure {
    let mut f = DynamoDbBatchItemFailure::default();
    f.item_identifier = record.change.sequence_number.clone();
    f
}

pub fn response(failures: Vec<DynamoDbBatchItemFailure>) -> DynamoDbEventResponse {
    let mut r = DynamoDbEventResponse::default();
    r.batch_item_failures = failures;
    r
}
