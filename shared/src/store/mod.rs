//! The DynamoDB adapter: every read and write of the product goes through [`Store`]; table
//! definitions, key names and the regional clients live here too.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};

use crate::domain::region::Region;
use crate::store::clients::RegionalClients;
use crate::store::tables::{Table, TableNames};

pub mod clients;
pub mod counters;
pub mod erasure;
pub mod feed;
pub mod inbox;
pub mod keyring;
pub mod keys;
pub mod memberships;
pub mod profiles;
pub mod projects;
pub mod reads;
pub mod rows;
pub mod segment_item;
pub mod segments;
pub mod snapshot;
pub mod stats;
pub mod tables;

pub use rows::Item;
pub(in crate::store) use rows::{get_n, get_s, n, s};

pub use crate::ports::StoreError;

/// Error codes of requests DynamoDB refuses for what they are, not for the moment they came at.
const PERMANENT_CODES: &[&str] = &[
    "ValidationException",
    "ItemCollectionSizeLimitExceededException",
    "SerializationException",
];

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(e: SdkError<E, R>) -> Self {
        let permanent = e
            .as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| PERMANENT_CODES.contains(&c));
        let text = DisplayErrorContext(&e).to_string();
        if permanent {
            StoreError::Rejected(text)
        } else {
            StoreError::Unavailable(text)
        }
    }
}

impl From<serde_dynamo::Error> for StoreError {
    fn from(e: serde_dynamo::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// The product's tables in every region, reached through one client per region.
#[derive(Debug, Clone)]
pub struct Store {
    clients: RegionalClients,
    names: TableNames,
    new_segment_buckets: u32,
    /// The keys tombstones are hashed with (kept outside DynamoDB; `keyring`).
    keyring: std::sync::Arc<keyring::Keyring>,
}

impl Store {
    /// A store without tombstone keys: it can neither write nor check tombstones until
    /// [`Store::with_keyring`] gives it some (`Config::store` does, from the function's
    /// configuration). It never falls back to the public local keys.
    pub fn new(clients: RegionalClients, names: TableNames) -> Self {
        Self {
            clients,
            names,
            new_segment_buckets: keys::memberships::DEFAULT_BUCKETS,
            keyring: std::sync::Arc::new(keyring::Keyring::unconfigured()),
        }
    }

    /// A store of the local stack and the tests: tombstones hashed with the public local keys
    /// (`keyring::LOCAL_KEYS`), which protect nothing. Never for tables in AWS.
    pub fn for_local_stack(clients: RegionalClients, names: TableNames) -> Self {
        Self::new(clients, names).with_keyring(keyring::Keyring::for_local_use())
    }

    /// The same store, its clients rebuilt by `f` (the local stack paces its bulk workers' calls
    /// this way); everything else is kept.
    pub fn map_clients(mut self, f: impl Fn(&Client) -> Client) -> Self {
        self.clients = self.clients.map(f);
        self
    }

    /// The tombstone keys this store hashes with.
    pub fn with_keyring(mut self, keyring: keyring::Keyring) -> Self {
        self.keyring = std::sync::Arc::new(keyring);
        self
    }

    /// Whether this store may check tombstones (`Keyring::is_configured`).
    pub fn checks_tombstones(&self) -> bool {
        self.keyring.is_configured()
    }

    /// The tombstone keys, read from outside DynamoDB on first need and cached.
    pub async fn tombstone_keys(
        &self,
    ) -> Result<std::sync::Arc<crate::domain::erasure::TombstoneKeys>, StoreError> {
        self.keyring.keys().await
    }

    /// The bucket count segments created from now on get (clamped to 1..=`MAX_BUCKETS`); a
    /// segment keeps the count it was created with.
    pub fn with_new_segment_buckets(mut self, buckets: u32) -> Self {
        self.new_segment_buckets = buckets.clamp(1, keys::memberships::MAX_BUCKETS);
        self
    }

    pub fn new_segment_buckets(&self) -> u32 {
        self.new_segment_buckets
    }

    pub fn client(&self, region: Region) -> &Client {
        self.clients.get(region)
    }

    pub fn table(&self, region: Region, table: Table) -> String {
        self.names.name(region, table)
    }

    pub fn names(&self) -> &TableNames {
        &self.names
    }
}

/// Whether a call failed only because its condition did not hold.
pub(in crate::store) fn condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// The outcome of a conditional write: written (`true`), or its condition did not hold (`false`).
pub(in crate::store) fn conditional<O, E, R>(
    res: Result<O, SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The outcome of a conditional write, as a port says it.
pub(in crate::store) fn written<O, E, R>(
    res: Result<O, SdkError<E, R>>,
) -> Result<crate::ports::Written, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Ok(if conditional(res)? {
        crate::ports::Written::Applied
    } else {
        crate::ports::Written::ConditionFailed
    })
}

/// Why one action of a cancelled transaction failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancellationReason {
    /// Its condition did not hold: re-read and re-plan.
    ConditionFailed,
    /// Another transaction held the item: retry after a backoff.
    Conflict,
    /// Throttled: transient, retry after a backoff.
    Throttled,
    /// Anything else (`ValidationError`, `ItemCollectionSizeLimitExceeded`, …): permanent.
    Other(String),
}

impl CancellationReason {
    pub fn from_code(code: &str) -> Self {
        match code {
            "ConditionalCheckFailed" => CancellationReason::ConditionFailed,
            "TransactionConflict" => CancellationReason::Conflict,
            "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded" => {
                CancellationReason::Throttled
            }
            other => CancellationReason::Other(other.to_owned()),
        }
    }

    /// Whether retrying the same transaction later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CancellationReason::Conflict | CancellationReason::Throttled
        )
    }
}

/// The per-action cancellation reasons of a cancelled transaction (`None` where the action was
/// fine), in request order; `None` if the error is not a cancellation.
pub(in crate::store) fn cancellation_codes<R>(
    err: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<Option<CancellationReason>>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match err.as_service_error()? {
        E::TransactionCanceledException(t) => {
            let reasons: Vec<_> = t
                .cancellation_reasons()
                .iter()
                .map(|r| {
                    r.code()
                        .filter(|c| *c != "None")
                        .map(CancellationReason::from_code)
                })
                .collect();
            if reasons.contains(&Some(CancellationReason::Conflict)) {
                stats::note_conflict();
            }
            Some(reasons)
        }
        _ => None,
    }
}

/// Backoff before retry `attempt` (1-based): 25 ms doubling, capped at 1.6 s, with jitter.
pub(crate) fn backoff(attempt: u32) -> std::time::Duration {
    use rand::Rng;
    // Every backoff precedes a retry.
    stats::note_retry();
    let base = 25u64 << attempt.min(6);
    std::time::Duration::from_millis(base / 2 + rand::rng().random_range(0..=base / 2))
}

/// Attempts of a TransactGetItems cancelled by concurrent write transactions.
const MAX_TRANSACT_GET_ATTEMPTS: u32 = 20;

/// How often unprocessed keys or items are retried before the call fails (and the stream retries).
pub(crate) const MAX_UNPROCESSED_RETRIES: u32 = 8;

/// How a write transaction ended: committed, or cancelled with a reason per action.
pub enum TxOutcome {
    Committed,
    Cancelled(Vec<Option<CancellationReason>>),
}

impl Store {
    /// Sends a transaction's `Put` on its own, as one PutItem: `false` if its condition failed.
    pub(in crate::store) async fn put_conditionally(
        &self,
        region: Region,
        put: aws_sdk_dynamodb::types::Put,
    ) -> Result<bool, StoreError> {
        let res = self
            .client(region)
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        conditional(res)
    }

    /// Sends one TransactWriteItems; a cancellation is an answer (its reasons), not an error.
    pub(in crate::store) async fn transact_write(
        &self,
        region: Region,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<TxOutcome, StoreError> {
        let res = self
            .client(region)
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match res {
            Ok(_) => Ok(TxOutcome::Committed),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) => Ok(TxOutcome::Cancelled(codes)),
                None => Err(e.into()),
            },
        }
    }

    /// Reads items by key with BatchGetItem, 100 keys a request, requests in parallel, retrying
    /// UnprocessedKeys with backoff. Strongly consistent. Missing items are simply absent; a key
    /// asked for twice is read once.
    pub(in crate::store) async fn batch_get(
        &self,
        region: Region,
        table: Table,
        keys: Vec<Item>,
    ) -> Result<Vec<Item>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        use futures::stream::{self, StreamExt, TryStreamExt};

        let table_name = self.table(region, table);
        let client = self.client(region).clone();
        // BatchGetItem refuses a request naming one key twice ("Provided list of item keys
        // contains duplicates"); callers may ask for one item twice (two erased profiles of one
        // segment, two resolutions of one profile), so each key is asked for once.
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<Item> = keys
            .into_iter()
            .filter(|key| {
                let mut signature: Vec<(&String, String)> = key
                    .iter()
                    .map(|(name, value)| (name, format!("{value:?}")))
                    .collect();
                signature.sort();
                seen.insert(format!("{signature:?}"))
            })
            .collect();
        let chunks: Vec<Vec<Item>> = keys.chunks(100).map(<[Item]>::to_vec).collect();
        let pages: Vec<Vec<Item>> = stream::iter(chunks)
            .map(|chunk| {
                let client = client.clone();
                let table_name = table_name.clone();
                async move {
                    let mut found = Vec::new();
                    let mut pending = chunk;
                    let mut attempt = 0;
                    while !pending.is_empty() {
                        let req = KeysAndAttributes::builder()
                            .set_keys(Some(pending))
                            .consistent_read(true)
                            .build()
                            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                        let out = client
                            .batch_get_item()
                            .request_items(&table_name, req)
                            .send()
                            .await?;
                        if let Some(mut r) = out.responses {
                            found.extend(r.remove(&table_name).unwrap_or_default());
                        }
                        pending = out
                            .unprocessed_keys
                            .and_then(|mut u| u.remove(&table_name))
                            .map(|k| k.keys)
                            .unwrap_or_default();
                        if !pending.is_empty() {
                            attempt += 1;
                            if attempt > MAX_UNPROCESSED_RETRIES {
                                return Err(StoreError::Unavailable(format!(
                                    "{} keys still unprocessed after {MAX_UNPROCESSED_RETRIES} retries",
                                    pending.len()
                                )));
                            }
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                    }
                    Ok::<_, StoreError>(found)
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Items by key, read together as of one point in time (at most 100 keys); missing items are
    /// `None`. Retries a read cancelled by a concurrent write transaction.
    pub(in crate::store) async fn transact_get(
        &self,
        region: Region,
        table: Table,
        keys: Vec<Item>,
    ) -> Result<Vec<Option<Item>>, StoreError> {
        use aws_sdk_dynamodb::types::{Get, TransactGetItem};
        let table_name = self.table(region, table);
        let gets: Vec<TransactGetItem> = keys
            .into_iter()
            .map(|key| {
                TransactGetItem::builder()
                    .get(
                        Get::builder()
                            .table_name(&table_name)
                            .set_key(Some(key))
                            .build()
                            .expect("table and key are set"),
                    )
                    .build()
            })
            .collect();
        let mut attempt = 0;
        loop {
            let res = self
                .client(region)
                .transact_get_items()
                .set_transact_items(Some(gets.clone()))
                .send()
                .await;
            match res {
                Ok(out) => {
                    return Ok(out
                        .responses
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.item)
                        .collect());
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|se| se.is_transaction_canceled_exception())
                        && attempt < MAX_TRANSACT_GET_ATTEMPTS =>
                {
                    stats::note_conflict();
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt.min(4))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
