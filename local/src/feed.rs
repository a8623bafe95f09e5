//! The engage feed on the local EventBridge stand-in (moto, `scripts/eventbridge-local`): the
//! stack's bus, and a rule that delivers what matches its pattern to an SQS queue, which is how
//! a subscriber (and the tests) watch the feed.

use serde_json::Value;

/// Clients for the stand-in at one endpoint (dummy credentials; it checks none).
#[derive(Debug, Clone)]
pub struct LocalFeed {
    pub events: aws_sdk_eventbridge::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// A rule on the bus and the queue it delivers to.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub rule: String,
    pub queue_url: String,
}

impl LocalFeed {
    pub fn new(endpoint: &str) -> Self {
        Self {
            events: shared::bus::Bus::local_client(endpoint),
            sqs: aws_sdk_sqs::Client::new(&shared::sdk::local_sdk_config(endpoint)),
        }
    }

    /// Creates the bus (a second call finds it there).
    pub async fn create_bus(&self, name: &str) -> Result<(), String> {
        match self.events.create_event_bus().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:?}").contains("ResourceAlreadyExists") => Ok(()),
            Err(e) => Err(failed("create bus")(e)),
        }
    }

    /// A rule on `bus` with `pattern` (EventBridge's JSON), delivering to a new queue of the
    /// same name.
    pub async fn subscribe(
        &self,
        bus: &str,
        rule: &str,
        pattern: &str,
    ) -> Result<Subscription, String> {
        let queue_url = self
            .sqs
            .create_queue()
            .queue_name(rule)
            .send()
            .await
            .map_err(failed("create queue"))?
            .queue_url
            .ok_or("create queue: no url")?;
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(failed("queue arn"))?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .ok_or("queue arn: none")?;
        self.events
            .put_rule()
            .name(rule)
            .event_bus_name(bus)
            .event_pattern(pattern)
            .send()
            .await
            .map_err(failed("put rule"))?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(arn)
            .build()
            .map_err(|e| e.to_string())?;
        self.events
            .put_targets()
            .rule(rule)
            .event_bus_name(bus)
            .targets(target)
            .send()
            .await
            .map_err(failed("put targets"))?;
        Ok(Subscription {
            rule: rule.to_owned(),
            queue_url,
        })
    }

    /// Every event delivered to the subscription's queue so far (EventBridge's envelopes:
    /// `source`, `detail-type`, `detail`, …), taken off the queue.
    pub async fn take(&self, subscription: &Subscription) -> Result<Vec<Value>, String> {
        let mut events = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&subscription.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .map_err(failed("receive"))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(events);
            }
            for m in messages {
                let body = m.body.unwrap_or_default();
                events.push(serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?);
                if let Some(handle) = m.receipt_handle {
                    self.sqs
                        .delete_message()
                        .queue_url(&subscription.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .map_err(failed("delete"))?;
                }
            }
        }
    }
}

/// Names a failed call and keeps the SDK's whole error chain (the service's code and message).
fn failed<E: std::error::Error>(call: &'static str) -> impl FnOnce(E) -> String {
    move |e| {
        format!(
            "{call}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(e)
        )
    }
}
