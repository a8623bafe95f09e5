//! `bulk`: the bulk way's queue (large requests' chunks, one message each, fair among projects)
//! → each chunk resolved and materialized in one go (`shared::stages::bulk`).

use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let store = config.store().await;
    let metrics = Metrics::for_function(&config, "bulk");
    let (store, metrics) = (&store, &metrics);
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let started = Instant::now();
        let (response, batch) = shared::stages::bulk::handle_sqs_event(store, event.payload).await;
        metrics.emit(&metrics.materialize(&batch, started.elapsed()));
        Ok::<_, Error>(response)
    }))
    .await
}
