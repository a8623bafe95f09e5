//! DynamoDB stream records as the pipeline stages receive them.

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::domain::region::Region;
use crate::store::inbox::{InboxRow, inbox_row_of_image};
use crate::store::tables::{Table, TableNames};

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
    inbox_row_of_image(&record.change.new_image).map_err(RecordError::Image)
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
