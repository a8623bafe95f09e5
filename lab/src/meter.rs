//! Metering layer for benchmarks: asks DynamoDB for `ReturnConsumedCapacity: TOTAL` on every data
//! call and adds up requests, read and write capacity units — without touching product code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::Value;
use shared::domain::region::Region;
use shared::store::tables::TableNames;

use crate::heat::HeatReport;
use crate::key_meter::{self, KeyMeter, Raw, SharedKeyMeter};

/// Totals since creation (or the last `reset`); capacity in thousandths of a unit.
#[derive(Debug, Default, Clone)]
pub struct Meter {
    pub requests: Arc<AtomicU64>,
    /// Per-key pricing, while a phase turns it on (`start_keys`).
    keys: SharedKeyMeter,
    read_milli: Arc<AtomicU64>,
    write_milli: Arc<AtomicU64>,
    cancelled: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
    /// Milliseconds each committed TransactWriteItems took on the wire (the key meter's own
    /// reads around it excluded).
    commit_ms: Arc<std::sync::Mutex<Vec<f64>>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub requests: u64,
    pub rcu: f64,
    pub wcu: f64,
    /// Transactions cancelled for any reason (each is retried or re-planned by its writer).
    pub cancelled_transactions: u64,
    /// Of those, cancelled because another transaction held one of the items.
    pub conflicts: u64,
}

impl Meter {
    pub fn read(&self) -> Reading {
        Reading {
            requests: self.requests.load(Ordering::SeqCst),
            rcu: self.read_milli.load(Ordering::SeqCst) as f64 / 1000.0,
            wcu: self.write_milli.load(Ordering::SeqCst) as f64 / 1000.0,
            cancelled_transactions: self.cancelled.load(Ordering::SeqCst),
            conflicts: self.conflicts.load(Ordering::SeqCst),
        }
    }

    /// Starts charging every call to the keys it lands on, for the tables `names` names in
    /// `region`, from zero.
    pub fn start_keys(&self, names: &TableNames, region: Region) {
        *self.keys.lock().expect("key meter lock") = Some(KeyMeter::new(names, region));
    }

    /// How long each committed transaction took since the last call (ms), taken.
    pub fn take_commit_ms(&self) -> Vec<f64> {
        std::mem::take(&mut *self.commit_ms.lock().expect("commit times"))
    }

    /// Stops charging keys and answers what was charged since `start_keys`.
    pub fn stop_keys(&self) -> Option<HeatReport> {
        self.keys
            .lock()
            .expect("key meter lock")
            .take()
            .map(|m| m.report())
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.read_milli.store(0, Ordering::SeqCst);
        self.write_milli.store(0, Ordering::SeqCst);
        self.cancelled.store(0, Ordering::SeqCst);
        self.conflicts.store(0, Ordering::SeqCst);
    }
}

impl std::ops::Sub for Reading {
    type Output = Reading;
    fn sub(self, o: Reading) -> Reading {
        Reading {
            requests: self.requests - o.requests,
            rcu: self.rcu - o.rcu,
            wcu: self.wcu - o.wcu,
            cancelled_transactions: self.cancelled_transactions - o.cancelled_transactions,
            conflicts: self.conflicts - o.conflicts,
        }
    }
}

const READS: &[&str] = &[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
];
const WRITES: &[&str] = &[
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

#[derive(Debug, Clone)]
struct MeterClient {
    inner: SharedHttpClient,
    meter: Meter,
}

impl HttpClient for MeterClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(MeterConnector {
            inner: self.inner.http_connector(settings, components),
            meter: self.meter.clone(),
        })
    }
}

#[derive(Debug, Clone)]
struct MeterConnector {
    inner: SharedHttpConnector,
    meter: Meter,
}

/// WCU of one transaction action: a put costs 2 per KB of its item (rounded up), an update 2
/// (our updates touch items under 1 KB), a condition check 1.
fn transact_action_wcu(action: &Value) -> f64 {
    if let Some(put) = action.get("Put") {
        2.0 * (put["Item"].to_string().len() as f64 / 1024.0)
            .ceil()
            .max(1.0)
    } else if action.get("Update").is_some() {
        2.0
    } else if action.get("ConditionCheck").is_some() {
        1.0
    } else {
        0.0
    }
}

fn capacity(v: &Value) -> f64 {
    match v {
        Value::Array(list) => list.iter().map(capacity).sum(),
        Value::Object(o) => o
            .get("CapacityUnits")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

impl HttpConnector for MeterConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        let is_read = READS.contains(&op.as_str());
        let is_write = WRITES.contains(&op.as_str());
        if !(is_read || is_write) {
            return self.inner.call(request);
        }
        self.meter.requests.fetch_add(1, Ordering::SeqCst);
        // DynamoDB Local reports a flat 2 units for a whole transaction; price transactions from
        // the request instead, by DynamoDB's rules: 2 WCU per KB (rounded up) of each written item.
        let transaction_wcu_milli = (op == "TransactWriteItems")
            .then(|| {
                request
                    .body()
                    .bytes()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            })
            .flatten()
            .map(|body| {
                let units: f64 = body["TransactItems"]
                    .as_array()
                    .map(|items| items.iter().map(transact_action_wcu).sum())
                    .unwrap_or(0.0);
                (units * 1000.0) as u64
            });
        let original = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok());
        let raw = Raw::of(&self.inner, &request);
        if let Some(mut body) = original.clone() {
            body["ReturnConsumedCapacity"] = Value::from("TOTAL");
            let text = body.to_string();
            request
                .headers_mut()
                .insert("content-length", text.len().to_string());
            *request.body_mut() = SdkBody::from(text);
        }
        let inner = self.inner.clone();
        let meter = self.meter.clone();
        HttpConnectorFuture::new(async move {
            let pending = match &original {
                Some(body) => key_meter::before_call(&meter.keys, &raw, &op, body).await,
                None => None,
            };
            let sent = std::time::Instant::now();
            let response = inner.call(request).await?;
            let status = response.status();
            if transaction_wcu_milli.is_some() && status.as_u16() == 200 {
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                meter.commit_ms.lock().expect("commit times").push(ms);
            }
            let headers = response.headers().clone();
            let bytes = ByteStream::new(response.into_body())
                .collect()
                .await
                .map_err(|e| aws_smithy_runtime_api::client::result::ConnectorError::io(e.into()))?
                .into_bytes();
            if let Some(units) = transaction_wcu_milli.filter(|_| status.as_u16() == 200) {
                meter.write_milli.fetch_add(units, Ordering::SeqCst);
            } else if transaction_wcu_milli.is_some() {
                count_cancellation(&meter, &bytes);
            } else if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let units = (capacity(&v["ConsumedCapacity"]) * 1000.0).round() as u64;
                let counter = if is_read {
                    &meter.read_milli
                } else {
                    &meter.write_milli
                };
                counter.fetch_add(units, Ordering::SeqCst);
            }
            if let Some(pending) = pending {
                let answer = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
                key_meter::after_call(&meter.keys, &raw, pending, status.as_u16(), &answer).await;
            }
            let mut rebuilt = HttpResponse::new(status, SdkBody::from(bytes));
            for (k, v) in headers.iter() {
                rebuilt.headers_mut().insert(k.to_owned(), v.to_owned());
            }
            Ok(rebuilt)
        })
    }
}

/// Counts a cancelled transaction, and whether any of its reasons was a conflict.
fn count_cancellation(meter: &Meter, body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if !v["__type"]
        .as_str()
        .is_some_and(|t| t.ends_with("TransactionCanceledException"))
    {
        return;
    }
    meter.cancelled.fetch_add(1, Ordering::SeqCst);
    let conflict = v["CancellationReasons"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["Code"] == "TransactionConflict"));
    if conflict {
        meter.conflicts.fetch_add(1, Ordering::SeqCst);
    }
}

/// A DynamoDB client for `endpoint` whose data calls are metered.
pub fn metered_client(endpoint: &str, meter: Meter) -> aws_sdk_dynamodb::Client {
    let http = MeterClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        meter,
    };
    local::client_with_http(endpoint, SharedHttpClient::new(http))
}
