//! `authorize`: the mParticle endpoint behind API Gateway (`POST /mparticle`).
//! Reads config, builds the DynamoDB clients once, and serves requests with `shared::stages::endpoint`.

use lambda_http::{Error, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::endpoint::{Endpoint, handle_http};
use shared::store::Store;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    config.require_caller_token()?;
    let store = Store::new(config.clients().await, config.tables.clone())
        .with_new_segment_buckets(config.segment_buckets);
    let endpoint = Endpoint::new(&config, store);
    let endpoint = &endpoint;
    run(service_fn(move |req| handle_http(endpoint, req))).await
}
