//! DynamoDB stream records as the pipeline stages receive them.

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::domain::region::Region;
use crate::ports::inbox::InboxRow;
use crate::store::rows::inbox::row_of_image;
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
    row_of_image(&record.change.new_image).map_err(RecordError::Image)
}

/// The partial-batch driver every stream function runs: `handle` over a batch's records,
/// `concurrency` at a time (one after another when 1), in order. A record whose handling fails
/// is logged with its sequence number and reported back for a retry (Lambda's
/// `ReportBatchItemFailures`); the others' outcomes come back in record order, with how many
/// failed.
pub async fn drive<'a, T, E, F, Fut>(
    records: &'a [EventRecord],
    concurrency: usize,
    stage: &'static str,
    handle: F,
) -> (DynamoDbEventResponse, Vec<T>, u64)
where
    E: std::fmt::Display,
    F: Fn(&'a EventRecord) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use futures::stream::{self, StreamExt};
    let outcomes: Vec<(&EventRecord, Result<T, E>)> = stream::iter(records)
        .map(|record| {
            let handled = handle(record);
            async move { (record, handled.await) }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for (record, outcome) in outcomes {
        match outcome {
            Ok(t) => done.push(t),
            Err(e) => {
                tracing::error!(stage, error = %e, sequence = ?record.change.sequence_number,
                                "record not handled; will be retried");
                failures.push(failure(record));
            }
        }
    }
    let failed = failures.len() as u64;
    (response(failures), done, failed)
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
