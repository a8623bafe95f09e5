//! A fault-injecting HTTP layer between the SDK and a real DynamoDB engine, for the faults
//! DynamoDB Local never produces: UnprocessedKeys/UnprocessedItems and throttling.
//! Everything else reaches the real engine untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::{Value, json};

/// How many of each fault are still to be injected; shared with the test that set them.
#[derive(Debug, Default, Clone)]
pub struct FaultPlan {
    /// BatchGetItem answers that report half of their keys as UnprocessedKeys.
    pub unprocessed_keys: Arc<AtomicU32>,
    /// BatchWriteItem answers that report half of their items as UnprocessedItems (not written).
    pub unprocessed_items: Arc<AtomicU32>,
    /// Requests answered with ThrottlingException before reaching the engine.
    pub throttles: Arc<AtomicU32>,
    /// PutItem bodies (DynamoDB JSON) sent to the engine just before the next TransactWriteItems
    /// goes out: a concurrent writer that wins the race against that transaction.
    pub before_transaction: Arc<std::sync::Mutex<Vec<Value>>>,
    /// PutItem bodies sent to the engine just before the next PutItem goes out (a concurrent
    /// writer that lands between a read and a conditional put); a body with `"__target":
    /// "UpdateItem"` is sent as that operation instead.
    pub before_put: Arc<std::sync::Mutex<Vec<Value>>>,
    /// Requests that reached this client (every DynamoDB call, faulty or not).
    pub calls: Arc<AtomicU32>,
    /// Faults injected so far.
    pub injected: Arc<AtomicU32>,
}

impl FaultPlan {
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[derive(Debug, Clone)]
struct FaultClient {
    inner: SharedHttpClient,
    plan: FaultPlan,
}

impl HttpClient for FaultClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultConnector {
            inner: self.inner.http_connector(settings, components),
            plan: self.plan.clone(),
        })
    }
}

#[derive(Debug, Clone)]
struct FaultConnector {
    inner: SharedHttpConnector,
    plan: FaultPlan,
}

fn json_response(status: u16, body: Value) -> HttpResponse {
    let mut r = HttpResponse::new(
        status.try_into().expect("valid status"),
        SdkBody::from(body.to_string()),
    );
    r.headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    r
}

impl HttpConnector for FaultConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .to_owned();
        let plan = self.plan.clone();
        plan.calls.fetch_add(1, Ordering::SeqCst);
        if FaultPlan::take(&plan.throttles) {
            plan.injected.fetch_add(1, Ordering::SeqCst);
            return HttpConnectorFuture::ready(Ok(json_response(
                400,
                json!({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "injected throttling"}),
            )));
        }
        let request_body: Option<Value> = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok());
        let sneaks: Vec<Value> = if target.ends_with(".TransactWriteItems") {
            std::mem::take(&mut *plan.before_transaction.lock().unwrap())
        } else if target.ends_with(".PutItem") {
            std::mem::take(&mut *plan.before_put.lock().unwrap())
        } else {
            Vec::new()
        };
        {
            if !sneaks.is_empty() {
                let inner = self.inner.clone();
                let template = request.try_clone();
                return HttpConnectorFuture::new(async move {
                    for body in sneaks {
                        let mut put = template
                            .as_ref()
                            .and_then(|t| t.try_clone())
                            .expect("in-memory request");
                        // A body may name another write (`"__target": "UpdateItem"`).
                        let mut body = body;
                        let operation = body
                            .as_object_mut()
                            .and_then(|o| o.remove("__target"))
                            .and_then(|t| t.as_str().map(str::to_owned))
                            .unwrap_or_else(|| "PutItem".to_owned());
                        put.headers_mut()
                            .insert("x-amz-target", format!("DynamoDB_20120810.{operation}"));
                        let text = body.to_string();
                        put.headers_mut()
                            .insert("content-length", text.len().to_string());
                        *put.body_mut() = SdkBody::from(text);
                        let r = inner.call(put).await?;
                        if r.status().as_u16() != 200 {
                            let body = ByteStream::new(r.into_body()).collect().await;
                            tracing::error!(?body, "the injected concurrent write failed");
                            continue;
                        }
                        plan.injected.fetch_add(1, Ordering::SeqCst);
                    }
                    inner.call(request).await
                });
            }
        }
        if target.ends_with(".BatchWriteItem") && FaultPlan::take(&plan.unprocessed_items) {
            // Send only the first half; report the rest as unprocessed.
            if let Some(mut body) = request_body {
                plan.injected.fetch_add(1, Ordering::SeqCst);
                let mut unprocessed = serde_json::Map::new();
                if let Some(tables) = body["RequestItems"].as_object_mut() {
                    for (table, writes) in tables.iter_mut() {
                        if let Some(list) = writes.as_array_mut() {
                            let keep = list.len().div_ceil(2);
                            let rest = list.split_off(keep);
                            if !rest.is_empty() {
                                unprocessed.insert(table.clone(), Value::Array(rest));
                            }
                        }
                    }
                }
                let mut forwarded = request;
                *forwarded.body_mut() = SdkBody::from(body.to_string());
                let inner = self.inner.clone();
                return HttpConnectorFuture::new(async move {
                    let response = inner.call(forwarded).await?;
                    if response.status().as_u16() != 200 {
                        return Ok(response);
                    }
                    Ok(json_response(200, json!({"UnprocessedItems": unprocessed})))
                });
            }
        }
        let inject_keys =
            target.ends_with(".BatchGetItem") && FaultPlan::take(&plan.unprocessed_keys);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let response = inner.call(request).await?;
            if !inject_keys || response.status().as_u16() != 200 {
                return Ok(response);
            }
            let Some(request_body) = request_body else {
                return Ok(response);
            };
            let bytes = ByteStream::new(response.into_body())
                .collect()
                .await
                .map_err(|e| aws_smithy_runtime_api::client::result::ConnectorError::io(e.into()))?
                .into_bytes();
            let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
            // Report the second half of every table's requested keys as unprocessed and drop
            // their items from the answer, as DynamoDB does when it runs out of capacity.
            let mut unprocessed = serde_json::Map::new();
            if let Some(tables) = request_body["RequestItems"].as_object() {
                for (table, req) in tables {
                    let keys = req["Keys"].as_array().cloned().unwrap_or_default();
                    let rest: Vec<Value> = keys[keys.len().div_ceil(2)..].to_vec();
                    if rest.is_empty() {
                        continue;
                    }
                    if let Some(items) = body["Responses"][table].as_array_mut() {
                        items.retain(|item| {
                            !rest.iter().any(|k| {
                                k.as_object()
                                    .is_some_and(|k| k.iter().all(|(a, v)| item.get(a) == Some(v)))
                            })
                        });
                    }
                    let mut entry = req.clone();
                    entry["Keys"] = Value::Array(rest);
                    unprocessed.insert(table.clone(), entry);
                }
            }
            plan.injected.fetch_add(1, Ordering::SeqCst);
            body["UnprocessedKeys"] = Value::Object(unprocessed);
            Ok(json_response(200, body))
        })
    }
}

/// A DynamoDB client for `endpoint` whose traffic passes through the fault plan.
pub fn faulty_client(endpoint: &str, plan: FaultPlan) -> aws_sdk_dynamodb::Client {
    let http = FaultClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        plan,
    };
    crate::client_with_http(endpoint, SharedHttpClient::new(http))
}

/// Faults for the EventBridge stand-in, which always takes every entry: `PutEvents` answers
/// that refuse some entries (not forwarded, reported failed as EventBridge reports them).
#[derive(Debug, Default, Clone)]
pub struct BusFaultPlan {
    /// Entries still to refuse, one per entry, from the first entry of the next call on.
    pub refused_entries: Arc<AtomicU32>,
    /// `PutEvents` calls that reached this client.
    pub calls: Arc<AtomicU32>,
    /// Entries refused so far.
    pub injected: Arc<AtomicU32>,
}

#[derive(Debug, Clone)]
struct BusFaultClient {
    inner: SharedHttpClient,
    plan: BusFaultPlan,
}

impl HttpClient for BusFaultClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(BusFaultConnector {
            inner: self.inner.http_connector(settings, components),
            plan: self.plan.clone(),
        })
    }
}

#[derive(Debug, Clone)]
struct BusFaultConnector {
    inner: SharedHttpConnector,
    plan: BusFaultPlan,
}

fn events_response(body: Value) -> HttpResponse {
    let mut r = HttpResponse::new(
        200.try_into().expect("valid status"),
        SdkBody::from(body.to_string()),
    );
    r.headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    r
}

impl HttpConnector for BusFaultConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let is_put = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".PutEvents"));
        if !is_put {
            return self.inner.call(request);
        }
        let plan = self.plan.clone();
        plan.calls.fetch_add(1, Ordering::SeqCst);
        let Some(mut body) = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        else {
            return self.inner.call(request);
        };
        let entries = body["Entries"].as_array().cloned().unwrap_or_default();
        let refused: Vec<bool> = entries
            .iter()
            .map(|_| FaultPlan::take(&plan.refused_entries))
            .collect();
        if !refused.contains(&true) {
            return self.inner.call(request);
        }
        plan.injected.fetch_add(
            refused.iter().filter(|r| **r).count() as u32,
            Ordering::SeqCst,
        );
        let kept: Vec<Value> = entries
            .iter()
            .zip(&refused)
            .filter(|(_, r)| !**r)
            .map(|(e, _)| e.clone())
            .collect();
        let failed =
            json!({"ErrorCode": "InternalFailure", "ErrorMessage": "injected: entry refused"});
        let splice = move |taken: Vec<Value>| {
            let mut taken = taken.into_iter();
            let results: Vec<Value> = refused
                .iter()
                .map(|r| {
                    if *r {
                        failed.clone()
                    } else {
                        taken.next().unwrap_or_else(|| failed.clone())
                    }
                })
                .collect();
            let count = results
                .iter()
                .filter(|r| r.get("ErrorCode").is_some())
                .count();
            json!({"Entries": results, "FailedEntryCount": count})
        };
        if kept.is_empty() {
            return HttpConnectorFuture::ready(Ok(events_response(splice(Vec::new()))));
        }
        body["Entries"] = Value::Array(kept);
        let text = body.to_string();
        let mut forwarded = request;
        forwarded
            .headers_mut()
            .insert("content-length", text.len().to_string());
        *forwarded.body_mut() = SdkBody::from(text);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let response = inner.call(forwarded).await?;
            if response.status().as_u16() != 200 {
                return Ok(response);
            }
            let bytes = ByteStream::new(response.into_body())
                .collect()
                .await
                .map_err(|e| aws_smithy_runtime_api::client::result::ConnectorError::io(e.into()))?
                .into_bytes();
            let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
            let taken = answer["Entries"].as_array().cloned().unwrap_or_default();
            Ok(events_response(splice(taken)))
        })
    }
}

/// An EventBridge client for the local stand-in at `endpoint` whose `PutEvents` calls pass
/// through the fault plan.
pub fn faulty_bus_client(endpoint: &str, plan: BusFaultPlan) -> aws_sdk_eventbridge::Client {
    let http = BusFaultClient {
        inner: aws_smithy_http_client::Builder::new().build_http(),
        plan,
    };
    aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&shared::sdk::local_sdk_config(endpoint))
            .http_client(SharedHttpClient::new(http))
            .build(),
    )
}
