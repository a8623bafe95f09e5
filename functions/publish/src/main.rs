//! `publish`: Partner Sync events and feed notices off the events stream → the stack's
//! EventBridge bus (the engage feed, contract §5).

use std::time::Instant;

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::metrics::Metrics;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let bus = config.bus().await?;
    let metrics = Metrics::for_function(&config, "publish");
    let (bus, names, metrics) = (&bus, &config.tables, &metrics);
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        let started = Instant::now();
        let (response, batch) =
            shared::stages::publish::handle_event(bus, names, event.payload).await;
        metrics.emit(&metrics.publish(&batch, started.elapsed()));
        Ok::<_, Error>(response)
    }))
    .await
}
