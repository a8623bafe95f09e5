//! `materialize`: resolved inbox chunks and archiving segments → memberships, counts, events.

use std::time::Instant;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let store = config.store().await;
    let metrics = Metrics::for_function(&config, "materialize");
    let (store, names, metrics) = (&store, &config.tables, &metrics);
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        let started = Instant::now();
        let (response, batch) =
            shared::stages::materialize::handle_event(store, names, event.payload).await;
        metrics.emit(&metrics.materialize(&batch, started.elapsed()));
        Ok::<_, Error>(response)
    }))
    .await
}
