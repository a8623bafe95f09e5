//! `erase`: carries out one erasure (a data subject request) in its region's tables, invoked
//! synchronously by `authorize` before it answers mParticle. Its role is the only one that may
//! delete a person's data; the internet-facing role cannot.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use shared::config::{Config, init_tracing};
use shared::stages::erasure::{EraseCommand, handle_command};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = Config::from_env()?;
    let store = config.store().await;
    let store = &store;
    run(service_fn(
        move |event: LambdaEvent<EraseCommand>| async move {
            Ok::<_, Error>(handle_command(store, event.payload).await)
        },
    ))
    .await
}
