//! The whole stream pipeline of a set of regions, driven locally: the same handlers and the same
//! filtered event shapes the deployed event source mappings deliver.

use shared::bus::Bus;
use shared::domain::region::Region;
use shared::stages::pipeline::{
    MATERIALIZE_INBOX_FILTER, MATERIALIZE_SEGMENTS_FILTER, PUBLISH_BATCH_SIZE,
    PUBLISH_BULK_EVENTS_FILTER, PUBLISH_EVENTS_FILTER, RESOLVE_INBOX_FILTER, STREAM_BATCH_SIZE,
};
use shared::store::Store;
use shared::store::tables::{Table, TableNames};

use crate::publisher::{PublishFigures, Publisher};
use crate::streams::{
    Mapping, StreamPoller, failed_records, lanes_from_env, stream_arn, streams_client, to_event,
};

pub struct LocalPipeline {
    store: Store,
    names: TableNames,
    /// inbox → resolve, per region.
    resolve: Vec<Mapping>,
    /// inbox → materialize, per region.
    materialize: Vec<Mapping>,
    /// segments → materialize (clearing), per region: one batch at a time.
    clear: Vec<Mapping>,
    /// events → publish, every region's, on a task of their own once a bus is attached
    /// ([`Self::publish_to`]).
    publisher: Option<Publisher>,
    /// What the publish mappings measure, shared with their task.
    figures: std::sync::Arc<PublishFigures>,
    /// The bulk way's workers, when a bulk queue is attached ([`Self::with_bulk`]).
    bulk: Option<crate::bulk::LocalBulkWorkers>,
}

#[derive(Clone, Copy)]
enum Stage {
    Resolve,
    Materialize,
}

impl LocalPipeline {
    pub async fn new(
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        store: Store,
        names: TableNames,
        regions: &[Region],
    ) -> Result<Self, String> {
        Self::with_lanes(client, endpoint, store, names, regions, lanes_from_env()).await
    }

    /// A pipeline whose inbox mappings run up to `lanes` batches at once (`1`: one after another).
    /// The segments mapping always runs one batch at a time, as deployed.
    pub async fn with_lanes(
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        store: Store,
        names: TableNames,
        regions: &[Region],
        lanes: usize,
    ) -> Result<Self, String> {
        let streams = streams_client(endpoint);
        let mut resolve = Vec::new();
        let mut materialize = Vec::new();
        let mut clear = Vec::new();
        for &region in regions {
            let inbox = stream_arn(client, &names.name(region, Table::Inbox)).await?;
            let segments = stream_arn(client, &names.name(region, Table::Segments)).await?;
            // Two event source mappings on the inbox stream, as deployed: each has its own position.
            resolve.push(Mapping::new(
                StreamPoller::new(streams.clone(), inbox.clone()),
                RESOLVE_INBOX_FILTER,
                STREAM_BATCH_SIZE,
                lanes,
            ));
            materialize.push(Mapping::new(
                StreamPoller::new(streams.clone(), inbox),
                MATERIALIZE_INBOX_FILTER,
                STREAM_BATCH_SIZE,
                lanes,
            ));
            clear.push(Mapping::new(
                StreamPoller::new(streams.clone(), segments),
                MATERIALIZE_SEGMENTS_FILTER,
                1,
                1,
            ));
        }
        Ok(Self {
            store,
            names,
            resolve,
            materialize,
            clear,
            publisher: None,
            figures: Default::default(),
            bulk: None,
        })
    }

    /// Works the bulk way's queue beside the stream mappings, with `workers` at once (the
    /// `bulk` function's mapping), from now until the pipeline is dropped; the workers take at
    /// most `LOCAL_BULK_SHARE` of DynamoDB Local's time ([`crate::engine_share`]).
    pub fn with_bulk(mut self, queue: shared::bulk::LocalBulkQueue, workers: usize) -> Self {
        let store =
            crate::engine_share::paced(self.store.clone(), crate::engine_share::share_from_env());
        self.bulk = Some(crate::bulk::LocalBulkWorkers::start(store, queue, workers));
        self
    }

    /// The bulk workers, if attached.
    pub fn bulk(&self) -> Option<&crate::bulk::LocalBulkWorkers> {
        self.bulk.as_ref()
    }

    /// A pipeline that only publishes (every region's events stream to `bus`), for runs whose
    /// chunks were resolved and materialized by other means.
    pub async fn publishing_only(
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        store: Store,
        names: TableNames,
        regions: &[Region],
        bus: Bus,
    ) -> Result<Self, String> {
        let mut pipeline = Self {
            store,
            names,
            resolve: Vec::new(),
            materialize: Vec::new(),
            clear: Vec::new(),
            publisher: None,
            figures: Default::default(),
            bulk: None,
        };
        pipeline.publish_to(client, endpoint, regions, bus).await?;
        Ok(pipeline)
    }

    /// The publish lags recorded since the last call (ms per entry put), taken.
    pub fn take_publish_lags(&self) -> Vec<f64> {
        self.figures.take_lags()
    }

    /// How late the publish mappings read their records since the last call (ms from each
    /// record's recorded time), taken.
    pub fn take_read_lags(&self) -> Vec<f64> {
        self.figures.take_read_lags()
    }

    /// How long each poll of the publish mappings' streams took since the last call (ms), taken.
    pub fn take_poll_ms(&self) -> Vec<f64> {
        self.figures.take_poll_ms()
    }

    /// Attaches the publisher: from now on every region's events stream is published to `bus`
    /// (from the stream's start), as the deployed `publish` mapping does, on a task of its own
    /// until the pipeline is dropped. A pipeline publishes to one bus: a second call is refused.
    pub async fn publish_to(
        &mut self,
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        regions: &[Region],
        bus: Bus,
    ) -> Result<(), String> {
        if self.publisher.is_some() {
            return Err("this pipeline already publishes".into());
        }
        let streams = streams_client(endpoint);
        let mut publish = Vec::new();
        for &region in regions {
            let events = stream_arn(client, &self.names.name(region, Table::Events)).await?;
            // Two readers of the stream, as deployed: the live way's events (and notices), and
            // the bulk way's, each with its own position and lanes.
            for filter in [PUBLISH_EVENTS_FILTER, PUBLISH_BULK_EVENTS_FILTER] {
                publish.push(Mapping::new(
                    // Events are small: a page holds what 10 batches run.
                    StreamPoller::new(streams.clone(), events.clone()).with_page_limit(1_000),
                    filter,
                    PUBLISH_BATCH_SIZE,
                    shared::stages::pipeline::STREAM_PARALLELIZATION_FACTOR as usize,
                ));
            }
        }
        self.publisher = Some(Publisher::start(
            publish,
            self.names.clone(),
            bus,
            self.figures.clone(),
        ));
        Ok(())
    }

    /// Runs the inbox mappings with `lanes` batches at once from now on, keeping their positions.
    pub fn set_lanes(&mut self, lanes: usize) {
        for m in self.resolve.iter_mut() {
            m.set_lanes(lanes);
        }
        for m in self.materialize.iter_mut() {
            m.set_lanes(lanes);
        }
    }

    /// Polls the inbox and segments streams once and runs every queued batch; returns how many
    /// records ran. Mappings run at once, and so do the lanes of each mapping, as Lambda runs
    /// them. The publisher is not part of a step: it follows the events stream on its own task.
    pub async fn step(&mut self) -> Result<usize, String> {
        let wiring = Wiring {
            store: &self.store,
            names: &self.names,
        };
        let inbox_and_segments = self
            .resolve
            .iter_mut()
            .map(|m| (Stage::Resolve, m))
            .chain(self.materialize.iter_mut().map(|m| (Stage::Materialize, m)))
            .chain(self.clear.iter_mut().map(|m| (Stage::Materialize, m)))
            .map(|(stage, m)| run_mapping(wiring, stage, m));
        let handled = futures::future::try_join_all(inbox_and_segments).await?;
        Ok(handled.into_iter().sum())
    }

    /// Steps until a poll finds nothing new, the bulk queue is empty and the publisher has put
    /// everything it read (or `max_steps` is reached; a step that found nothing while only bulk
    /// chunks were being worked is not counted). A stream read can come back empty while records
    /// are on their way (DynamoDB Local shows new records a moment late), so idle means three
    /// quiet rounds in a row, the publisher settled and having published nothing in each.
    pub async fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, String> {
        let mut total = 0;
        let mut quiet = 0;
        let mut steps = 0;
        while steps < max_steps {
            let published_before = self.publisher.as_ref().map_or(0, Publisher::published);
            let n = self.step().await?;
            let bulk_pending = self.bulk.as_ref().is_some_and(|b| b.pending() > 0);
            if n == 0 && bulk_pending {
                // The bulk workers run on their own; their writes reach the streams later.
                quiet = 0;
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                continue;
            }
            steps += 1;
            total += n;
            let pending = self
                .resolve
                .iter()
                .chain(&self.materialize)
                .chain(&self.clear)
                .any(|m| m.pending() > 0);
            if n == 0 && !pending && self.publisher_quiet(published_before).await {
                quiet += 1;
                if quiet >= 3 {
                    return Ok(total);
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            } else {
                quiet = 0;
            }
        }
        Err(format!("pipeline still busy after {max_steps} steps"))
    }

    /// Whether the publisher (if any) has caught up with its streams and published nothing since
    /// it had published `published_before`.
    async fn publisher_quiet(&self, published_before: usize) -> bool {
        match &self.publisher {
            None => true,
            Some(publisher) => {
                publisher.settled(PUBLISHER_SETTLE_WITHIN).await
                    && publisher.published() == published_before
            }
        }
    }
}

/// How long [`LocalPipeline::run_until_idle`] gives the publisher to catch up in one round.
const PUBLISHER_SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls one inbox or segments mapping's stream once and runs what it queued.
async fn run_mapping(wiring: Wiring<'_>, stage: Stage, m: &mut Mapping) -> Result<usize, String> {
    m.fetch().await?;
    Ok(drain(wiring, stage, m).await)
}

type Lane = std::collections::VecDeque<serde_json::Value>;

/// What the handlers run with.
#[derive(Clone, Copy)]
struct Wiring<'a> {
    store: &'a Store,
    names: &'a TableNames,
}

/// Runs the queued batches of every lane of one mapping, lanes at once, each lane in order; a
/// lane stops at its first failed batch, whose failed records wait at its front for the next step
/// (Lambda retries from the failure and keeps later records of the lane waiting).
async fn drain(wiring: Wiring<'_>, stage: Stage, m: &mut Mapping) -> usize {
    let batch_size = m.batch_size();
    let lanes = m.take_lanes();
    let (rest, handled) = run_lanes(wiring, stage, batch_size, lanes).await;
    m.restore_lanes(rest);
    handled
}

/// Runs lanes taken out of a mapping, at once, each in order; answers what is left of each
/// (a failed batch's records, at its front) and how many records ran.
async fn run_lanes(
    wiring: Wiring<'_>,
    stage: Stage,
    batch_size: usize,
    lanes: Vec<Lane>,
) -> (Vec<Lane>, usize) {
    let runs = lanes.into_iter().map(|mut queue| async move {
        let mut handled = 0;
        while !queue.is_empty() {
            let n = batch_size.min(queue.len());
            let batch: Vec<serde_json::Value> = queue.drain(..n).collect();
            handled += batch.len();
            if let Err(failed) = run_batch(wiring, stage, batch).await {
                for record in failed.into_iter().rev() {
                    queue.push_front(record);
                }
                break;
            }
        }
        (queue, handled)
    });
    let (queues, handled): (Vec<_>, Vec<usize>) =
        futures::future::join_all(runs).await.into_iter().unzip();
    (queues, handled.into_iter().sum())
}

/// Invokes a stage's handler with one batch, as Lambda would; answers the records it reported
/// failed (`batchItemFailures`), in batch order.
async fn run_batch(
    wiring: Wiring<'_>,
    stage: Stage,
    batch: Vec<serde_json::Value>,
) -> Result<(), Vec<serde_json::Value>> {
    let Wiring { store, names, .. } = wiring;
    let event = to_event(batch.clone());
    let response = match stage {
        Stage::Resolve => {
            shared::stages::resolve::handle_inbox_event(store, names, event)
                .await
                .0
        }
        Stage::Materialize => {
            shared::stages::materialize::handle_event(store, names, event)
                .await
                .0
        }
    };
    let failed = failed_records(batch, &response);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}
