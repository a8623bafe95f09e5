//! The bulk way's share of DynamoDB Local. On AWS the two ways write to partitions that scale
//! apart, and the bulk way is capped below the tables' ceilings (`BulkConcurrency`) so the live
//! way always finds capacity. Locally one engine serves every request one at a time: a bulk worker
//! calling it back to back keeps it saturated, and every live call queues behind bulk calls. The
//! local workers therefore call it one request at a time and rest after each in proportion to
//! how long it took, so the bulk way keeps the engine busy at most `share` of the time and a live
//! call waits for at most the one bulk request in flight: the local form of the capacity the live
//! way keeps on AWS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use shared::store::Store;

/// `LOCAL_BULK_SHARE` (a fraction in (0, 1]; 1 = no pacing), or [`DEFAULT_SHARE`].
pub fn share_from_env() -> f64 {
    parse_share(std::env::var("LOCAL_BULK_SHARE").ok().as_deref())
}

fn parse_share(value: Option<&str>) -> f64 {
    value
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0 && *s <= 1.0)
        .unwrap_or(DEFAULT_SHARE)
}

/// The engine's share the local bulk way takes by default (`BENCH_ONLY=fairness`: docs/performance.md).
pub const DEFAULT_SHARE: f64 = 0.8;

/// `store` with every client pacing its calls to `share` of the engine's time (unchanged at 1).
pub fn paced(store: Store, share: f64) -> Store {
    if share >= 1.0 {
        return store;
    }
    let rest_per_busy = (1.0 - share) / share;
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    store.map_clients(|client| {
        let inner = client
            .config()
            .http_client()
            .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
        let http = PacedClient {
            inner,
            gate: gate.clone(),
            rest_per_busy,
        };
        aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .http_client(SharedHttpClient::new(http))
                .build(),
        )
    })
}

#[derive(Debug, Clone)]
struct PacedClient {
    inner: SharedHttpClient,
    /// One request at a time across every paced client of the store.
    gate: Arc<tokio::sync::Semaphore>,
    rest_per_busy: f64,
}

impl HttpClient for PacedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector {
            inner: self.inner.http_connector(settings, components),
            gate: self.gate.clone(),
            rest_per_busy: self.rest_per_busy,
        })
    }
}

#[derive(Debug, Clone)]
struct PacedConnector {
    inner: SharedHttpConnector,
    gate: Arc<tokio::sync::Semaphore>,
    rest_per_busy: f64,
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (inner, gate, rest_per_busy) =
            (self.inner.clone(), self.gate.clone(), self.rest_per_busy);
        HttpConnectorFuture::new(async move {
            let _turn = gate
                .acquire_owned()
                .await
                .expect("the gate is never closed");
            let started = Instant::now();
            let response = inner.call(request).await;
            // Rest while holding the turn: the next bulk call starts only after it.
            let rest = started.elapsed().mul_f64(rest_per_busy);
            tokio::time::sleep(rest.min(MAX_REST)).await;
            response
        })
    }
}

/// A call that stalled (a cold engine, a collection pause) does not idle the worker for as long.
const MAX_REST: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_types::body::SdkBody;
    use std::sync::Mutex;

    /// An engine that takes `busy` per request and notes when each began and ended.
    #[derive(Debug, Clone)]
    struct SlowEngine {
        busy: Duration,
        calls: Arc<Mutex<Vec<(Instant, Instant)>>>,
    }

    impl HttpConnector for SlowEngine {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let (busy, calls) = (self.busy, self.calls.clone());
            HttpConnectorFuture::new(async move {
                let began = Instant::now();
                tokio::time::sleep(busy).await;
                calls.lock().unwrap().push((began, Instant::now()));
                Ok(HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()))
            })
        }
    }

    #[tokio::test]
    async fn bulk_calls_reach_the_engine_one_at_a_time_with_a_rest_after_each() {
        let engine = SlowEngine {
            busy: Duration::from_millis(20),
            calls: Default::default(),
        };
        let share = 0.5;
        let paced = PacedConnector {
            inner: SharedHttpConnector::new(engine.clone()),
            gate: Arc::new(tokio::sync::Semaphore::new(1)),
            rest_per_busy: (1.0 - share) / share,
        };
        // Four calls at once, as the bulk worker's resolve writes several at once.
        let calls = (0..4).map(|_| paced.call(HttpRequest::new(SdkBody::empty())));
        for response in futures::future::join_all(calls).await {
            assert_eq!(response.unwrap().status().as_u16(), 200);
        }
        let mut seen = engine.calls.lock().unwrap().clone();
        seen.sort_by_key(|(began, _)| *began);
        assert_eq!(seen.len(), 4);
        for pair in seen.windows(2) {
            let ((_, previous_end), (next_began, _)) = (pair[0], pair[1]);
            let (previous_began, _) = pair[0];
            // Never two at once, and a rest of at least as long as the last call took (share 0.5).
            assert!(next_began >= previous_end, "bulk calls overlapped");
            assert!(next_began - previous_end >= (previous_end - previous_began).mul_f64(0.99));
        }
    }

    #[test]
    fn the_share_is_a_fraction_in_0_to_1_or_the_default() {
        // Values outside (0, 1] fall back to the default.
        for (value, expected) in [
            ("0.25", 0.25),
            ("1", 1.0),
            ("0", DEFAULT_SHARE),
            ("1.5", DEFAULT_SHARE),
            ("x", DEFAULT_SHARE),
        ] {
            assert_eq!(parse_share(Some(value)), expected, "{value}");
        }
        assert_eq!(parse_share(None), DEFAULT_SHARE);
    }
}
