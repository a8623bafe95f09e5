//! `query`: the read API (`GET /v1/...`, `POST /v1/preview`) and the console (`GET /console`)
//! behind API Gateway, serving this stack's region.

use lambda_http::{Error, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::metrics::Metrics;
use shared::stages::query::QueryApi;
use shared::stages::query::edge::handle_http;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let store = config.store().await;
    let api = QueryApi::new(store, config.home_region, config.project_cache_ttl, false)
        .with_metrics(Metrics::for_function(&config, "query"));
    let api = &api;
    run(service_fn(move |req| handle_http(api, req))).await
}
