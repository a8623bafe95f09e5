//! `resolve`: inbox stream (new chunks) → identity resolution into profiles → changes handed on.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::store::Store;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let store = Store::new(config.clients().await, config.tables.clone());
    let (store, names) = (&store, &config.tables);
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(shared::resolve::handle_inbox_event(store, names, event.payload).await)
    }))
    .await
}
