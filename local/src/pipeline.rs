//! The whole stream pipeline of a set of regions, driven locally: the same handlers and the same
//! filtered event shapes the deployed event source mappings deliver.

use shared::Region;
use shared::pipeline::{RESOLVE_INBOX_FILTER, STREAM_BATCH_SIZE};
use shared::store::Store;
use shared::tables::{Table, TableNames};

use crate::{Mapping, StreamPoller, stream_arn, streams_client, to_event};

pub struct LocalPipeline {
    store: Store,
    names: TableNames,
    resolve: Vec<Mapping>,
}

impl LocalPipeline {
    pub async fn new(
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        store: Store,
        names: TableNames,
        regions: &[Region],
    ) -> Result<Self, String> {
        let streams = streams_client(endpoint);
        let mut resolve = Vec::new();
        for &region in regions {
            let inbox = stream_arn(client, &names.name(region, Table::Inbox)).await?;
            resolve.push(Mapping::new(
                StreamPoller::new(streams.clone(), inbox),
                RESOLVE_INBOX_FILTER,
                STREAM_BATCH_SIZE,
            ));
        }
        Ok(Self {
            store,
            names,
            resolve,
        })
    }

    /// Polls every stream once and runs every queued batch; returns how many records ran.
    pub async fn step(&mut self) -> Result<usize, String> {
        let mut handled = 0;
        for m in &mut self.resolve {
            m.fetch().await?;
            while let Some(batch) = m.next_batch() {
                handled += batch.len();
                let response = shared::resolve::handle_inbox_event(
                    &self.store,
                    &self.names,
                    to_event(batch.clone()),
                )
                .await;
                let failed: Vec<String> = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.clone())
                    .collect();
                if !failed.is_empty() {
                    m.redeliver(batch, &failed);
                    break;
                }
            }
        }
        Ok(handled)
    }

    /// Steps until a poll finds nothing new (or `max_steps` is reached).
    pub async fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, String> {
        let mut total = 0;
        for _ in 0..max_steps {
            let n = self.step().await?;
            total += n;
            if n == 0 && self.resolve.iter().all(|m| m.pending() == 0) {
                return Ok(total);
            }
        }
        Err(format!("pipeline still busy after {max_steps} steps"))
    }
}
