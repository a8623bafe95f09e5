//! The event bus port on EventBridge: the stack's bus, `PutEvents` with an outcome per entry. Only the
//! publisher uses it; what goes in an entry is `domain::feed`'s.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::domain::feed::{FeedEntry, SOURCE};
use crate::ports::bus::{BusError, EntryOutcome, EventBus};

/// The event bus the publisher puts on.
#[derive(Debug, Clone)]
pub struct Bus {
    client: aws_sdk_eventbridge::Client,
    name: String,
}

impl Bus {
    pub fn new(client: aws_sdk_eventbridge::Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client for a local stand-in (moto) at `endpoint`, with dummy credentials.
    pub fn local_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::new(&crate::sdk::local_sdk_config(endpoint))
    }
}

impl EventBus for Bus {
    async fn put(&self, entries: &[&FeedEntry]) -> Result<Vec<EntryOutcome>, BusError> {
        let request: Vec<PutEventsRequestEntry> = entries
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(SOURCE)
                    .detail_type(e.kind.detail_type())
                    .detail(&e.detail)
                    .time(aws_smithy_types::DateTime::from_millis(e.recorded_ms))
                    .build()
            })
            .collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| {
                BusError::Call(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())
            })?;
        let results = out.entries.unwrap_or_default();
        if results.len() != entries.len() {
            return Err(BusError::Answer {
                sent: entries.len(),
                got: results.len(),
            });
        }
        Ok(results
            .into_iter()
            .map(|r| match r.error_code {
                Some(code) => EntryOutcome::Failed(code),
                None => EntryOutcome::Put,
            })
            .collect())
    }
}
