//! `authorize`: the mParticle endpoint behind API Gateway (`POST /mparticle`).
//! Reads config, builds the DynamoDB clients (and the Lambda clients of the `erase` functions,
//! and the SQS clients of the bulk queues) once, and serves requests with `shared::stages::endpoint`.

use lambda_http::{Error, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::endpoint::{Endpoint, handle_http};
use shared::stages::erasure::{Eraser, RemoteEraser};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    config.require_caller_token()?;
    let store = config.store().await;
    let mut endpoint = Endpoint::new(&config, store);
    if let Some(pattern) = &config.erase_function {
        endpoint = endpoint.with_eraser(Eraser::Invoke(RemoteEraser::new(
            pattern,
            config.lambda_clients().await,
        )));
    }
    // Large requests go the bulk way (`BULK_QUEUE`), the rest the live way.
    if let Some(queue) = config.bulk_queue().await {
        endpoint = endpoint.with_bulk_queue(queue);
    }
    let endpoint = &endpoint;
    run(service_fn(move |req| handle_http(endpoint, req))).await
}
