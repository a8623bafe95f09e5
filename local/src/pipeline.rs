//! The whole stream pipeline of a set of regions, driven locally: the same handlers and the same
//! filtered event shapes the deployed event source mappings deliver.

use futures::FutureExt;
use shared::bus::Bus;
use shared::domain::region::Region;
use shared::stages::pipeline::{
    MATERIALIZE_INBOX_FILTER, MATERIALIZE_SEGMENTS_FILTER, PUBLISH_BATCH_SIZE,
    PUBLISH_BULK_EVENTS_FILTER, PUBLISH_EVENTS_FILTER, RESOLVE_INBOX_FILTER, STREAM_BATCH_SIZE,
};
use shared::store::Store;
use shared::store::tables::{Table, TableNames};

use crate::streams::{
    Mapping, StreamPoller, lanes_from_env, requeue_failed, stream_arn, streams_client, to_event,
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
    /// events → publish, per region, when a bus is attached ([`Self::publish_to`]).
    publish: Vec<Mapping>,
    bus: Option<Bus>,
    /// What the publish mappings measure, shared with their task.
    figures: std::sync::Arc<PublishFigures>,
    /// The bulk way's workers, when a bulk queue is attached ([`Self::with_bulk`]).
    bulk: Option<crate::bulk::LocalBulkWorkers>,
}

/// What the publish mappings measure (ms), gathered on their task and taken by the caller.
#[derive(Default)]
struct PublishFigures {
    /// Per entry published: from its recorded time to the `PutEvents` that took it.
    lags: std::sync::Mutex<Vec<f64>>,
    /// Per record read: from its recorded time to the read (the part of the lag that is the
    /// stream's and the poller's, not the publisher's).
    read_lags: std::sync::Mutex<Vec<f64>>,
    /// Per poll: how long its stream reads took (DynamoDB Local's part of the read lag).
    poll_ms: std::sync::Mutex<Vec<f64>>,
}

/// Takes what `figures` gathered.
fn take(figures: &std::sync::Mutex<Vec<f64>>) -> Vec<f64> {
    std::mem::take(&mut *figures.lock().expect("figures"))
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
            publish: Vec::new(),
            bus: None,
            figures: Default::default(),
            bulk: None,
        })
    }

    /// Works the bulk way's queue beside the stream mappings, with `workers` at once (the
    /// `bulk` function's mapping), from now until the pipeline is dropped.
    pub fn with_bulk(mut self, queue: shared::bulk::LocalBulkQueue, workers: usize) -> Self {
        self.bulk = Some(crate::bulk::LocalBulkWorkers::start(
            self.store.clone(),
            queue,
            workers,
        ));
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
            publish: Vec::new(),
            bus: None,
            figures: Default::default(),
            bulk: None,
        };
        pipeline.publish_to(client, endpoint, regions, bus).await?;
        Ok(pipeline)
    }

    /// The publish lags recorded since the last call (ms per entry put), taken.
    pub fn take_publish_lags(&self) -> Vec<f64> {
        take(&self.figures.lags)
    }

    /// How late the publish mappings read their records since the last call (ms from each
    /// record's recorded time), taken.
    pub fn take_read_lags(&self) -> Vec<f64> {
        take(&self.figures.read_lags)
    }

    /// How long each poll of the publish mappings' streams took since the last call (ms), taken.
    pub fn take_poll_ms(&self) -> Vec<f64> {
        take(&self.figures.poll_ms)
    }

    /// Attaches the publisher: from now on every region's events stream is published to `bus`
    /// (from the stream's start), as the deployed `publish` mapping does.
    pub async fn publish_to(
        &mut self,
        client: &aws_sdk_dynamodb::Client,
        endpoint: &str,
        regions: &[Region],
        bus: Bus,
    ) -> Result<(), String> {
        let streams = streams_client(endpoint);
        for &region in regions {
            let events = stream_arn(client, &self.names.name(region, Table::Events)).await?;
            // Two readers of the stream, as deployed: the live way's events (and notices), and
            // the bulk way's, each with its own position and lanes.
            for filter in [PUBLISH_EVENTS_FILTER, PUBLISH_BULK_EVENTS_FILTER] {
                self.publish.push(Mapping::new(
                    // Events are small: a page holds what 10 batches run.
                    StreamPoller::new(streams.clone(), events.clone()).with_page_limit(1_000),
                    filter,
                    PUBLISH_BATCH_SIZE,
                    shared::stages::pipeline::STREAM_PARALLELIZATION_FACTOR as usize,
                ));
            }
        }
        self.bus = Some(bus);
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

    /// Polls every stream once and runs every queued batch; returns how many records ran.
    /// Mappings run at once, and so do the lanes of each mapping, as Lambda runs them.
    ///
    /// The publish mappings keep polling while the inbox and segments batches of the step run,
    /// as Lambda polls the events stream on its own (several times a second) whatever the other
    /// mappings are doing: an event is published while the step that wrote it is still running,
    /// not after it. They run on a task of their own, as their batches run in invocations of
    /// their own on AWS: on the task of the other mappings, every lane's CPU work (parsing chunks,
    /// planning changes) would hold the publisher up.
    pub async fn step(&mut self) -> Result<usize, String> {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let publisher = self.spawn_publisher(finished.clone(), wake.clone());
        let wiring = Wiring {
            store: &self.store,
            names: &self.names,
            bus: self.bus.as_ref(),
            figures: &self.figures,
        };
        let inbox_and_segments = self
            .resolve
            .iter_mut()
            .map(|m| (Stage::Resolve, m))
            .chain(self.materialize.iter_mut().map(|m| (Stage::Materialize, m)))
            .chain(self.clear.iter_mut().map(|m| (Stage::Materialize, m)))
            .map(|(stage, m)| run_mapping(wiring, stage, m));
        let handled = futures::future::try_join_all(inbox_and_segments).await;
        finished.store(true, std::sync::atomic::Ordering::Release);
        wake.notify_waiters();
        let (publish, published) = publisher.await.map_err(|e| format!("publisher: {e}"))?;
        self.publish = publish;
        Ok(handled?.into_iter().sum::<usize>() + published?)
    }

    /// Moves the publish mappings onto a task that runs them until `finished` (see
    /// [`Self::step`]) and hands them back with how many records ran.
    fn spawn_publisher(
        &mut self,
        finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
        wake: std::sync::Arc<tokio::sync::Notify>,
    ) -> tokio::task::JoinHandle<(Vec<Mapping>, Result<usize, String>)> {
        let mut publish = std::mem::take(&mut self.publish);
        let (store, names, bus) = (self.store.clone(), self.names.clone(), self.bus.clone());
        let figures = self.figures.clone();
        tokio::spawn(async move {
            let wiring = Wiring {
                store: &store,
                names: &names,
                bus: bus.as_ref(),
                figures: &figures,
            };
            let published = publish_until(wiring, &mut publish, &finished, &wake).await;
            (publish, published)
        })
    }

    /// Steps until a poll finds nothing new and the bulk queue is empty (or `max_steps` is
    /// reached; a step that found nothing while only bulk chunks were being worked is not
    /// counted). A stream read can come back empty while records are on their way (DynamoDB
    /// Local shows new records a moment late), so idle means three quiet polls in a row.
    pub async fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, String> {
        let mut total = 0;
        let mut quiet = 0;
        let mut steps = 0;
        while steps < max_steps {
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
                .chain(&self.publish)
                .any(|m| m.pending() > 0);
            if n == 0 && !pending {
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
}

/// How long a publish mapping's reader waits between polls that found nothing, within a step:
/// Lambda polls a stream shard about four times a second.
const PUBLISH_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs every publish mapping until `finished` is set (and `wake` notified), as Lambda runs an
/// event source mapping: a reader follows the stream and queues each record on its key's lane,
/// and each lane runs its next batch the moment its last one is done, so a record waits neither
/// for a round of reads nor for the slowest lane. After `finished`, the reader reads once more,
/// so the step ends having published everything its other batches wrote.
async fn publish_until(
    wiring: Wiring<'_>,
    publish: &mut [Mapping],
    finished: &std::sync::atomic::AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<usize, String> {
    let runs = publish
        .iter_mut()
        .map(|m| publish_continuously(wiring, m, finished, wake).boxed());
    Ok(futures::future::try_join_all(runs).await?.into_iter().sum())
}

/// One publish mapping for the rest of a step: its reader and its lanes at once. A lane whose
/// batch failed stops, its failed records at its front for the next step (Lambda retries from
/// the failure and keeps the later records of the lane waiting).
async fn publish_continuously(
    wiring: Wiring<'_>,
    m: &mut Mapping,
    finished: &std::sync::atomic::AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<usize, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let batch_size = m.batch_size();
    let lanes: Vec<std::sync::Mutex<Lane>> = m
        .take_lanes()
        .into_iter()
        .map(std::sync::Mutex::new)
        .collect();
    let queued = tokio::sync::Notify::new();
    let reading_done = AtomicBool::new(false);
    let reader = async {
        let read = read_into_lanes(wiring, m, &lanes, &queued, finished, wake).await;
        reading_done.store(true, Ordering::Release);
        queued.notify_waiters();
        read
    };
    let workers = lanes
        .iter()
        .map(|lane| work_lane(wiring, batch_size, lane, &queued, &reading_done).boxed());
    let (read, handled) = futures::join!(reader, futures::future::join_all(workers));
    let rest = lanes
        .into_iter()
        .map(|lane| lane.into_inner().expect("lane"))
        .collect();
    m.restore_lanes(rest);
    read?;
    Ok(handled.into_iter().sum())
}

type Lane = std::collections::VecDeque<serde_json::Value>;

/// A publish mapping's reader: polls the stream, queues what it read on the lanes (waking them),
/// waits [`PUBLISH_POLL_INTERVAL`] after a poll that found nothing, and stops after the first
/// poll that began once `finished` was set.
async fn read_into_lanes(
    wiring: Wiring<'_>,
    m: &mut Mapping,
    lanes: &[std::sync::Mutex<Lane>],
    queued: &tokio::sync::Notify,
    finished: &std::sync::atomic::AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<(), String> {
    loop {
        // Listening before looking: a `finished` set after the look still wakes the wait.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let last = finished.load(std::sync::atomic::Ordering::Acquire);
        let routed = poll_publishable(wiring, m).await?;
        let read = routed.len();
        for (lane, record) in routed {
            lanes[lane].lock().expect("lane").push_back(record);
        }
        if read > 0 {
            queued.notify_waiters();
        }
        if last {
            return Ok(());
        }
        if read == 0 {
            let _ = tokio::time::timeout(PUBLISH_POLL_INTERVAL, woken).await;
        }
    }
}

/// One lane of a publish mapping: runs its next batch as soon as there is one, until the reader
/// is done and the lane is empty, or a batch fails; answers how many records ran.
async fn work_lane(
    wiring: Wiring<'_>,
    batch_size: usize,
    lane: &std::sync::Mutex<Lane>,
    queued: &tokio::sync::Notify,
    reading_done: &std::sync::atomic::AtomicBool,
) -> usize {
    let mut handled = 0;
    loop {
        let more = queued.notified();
        tokio::pin!(more);
        more.as_mut().enable();
        // Read before taking: once the reader is done, nothing more arrives on the lane.
        let done = reading_done.load(std::sync::atomic::Ordering::Acquire);
        let batch: Vec<serde_json::Value> = {
            let mut queue = lane.lock().expect("lane");
            let n = batch_size.min(queue.len());
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            if done {
                return handled;
            }
            more.await;
            continue;
        }
        handled += batch.len();
        if let Err(failed) = publish_batch(wiring, batch).await {
            let mut queue = lane.lock().expect("lane");
            for record in failed.into_iter().rev() {
                queue.push_front(record);
            }
            return handled;
        }
    }
}

/// Polls one inbox or segments mapping's stream once and runs what it queued.
async fn run_mapping(wiring: Wiring<'_>, stage: Stage, m: &mut Mapping) -> Result<usize, String> {
    m.fetch().await?;
    Ok(drain(wiring, stage, m).await)
}

/// Reads a publish mapping's stream, noting how late each record is read.
async fn poll_publishable(
    wiring: Wiring<'_>,
    m: &mut Mapping,
) -> Result<Vec<(usize, serde_json::Value)>, String> {
    let mut lags = Vec::new();
    let started = std::time::Instant::now();
    let routed = m
        .poll_routed(|r| {
            let recorded = r["dynamodb"]["NewImage"]["recorded_ms"]["N"].as_str();
            if let Some(ms) = recorded.and_then(|ms| ms.parse::<i64>().ok()) {
                let now = shared::domain::protocol::now_ms();
                lags.push((now - ms).max(0) as f64);
            }
        })
        .await?;
    let took = started.elapsed().as_secs_f64() * 1_000.0;
    wiring.figures.poll_ms.lock().expect("figures").push(took);
    wiring
        .figures
        .read_lags
        .lock()
        .expect("figures")
        .extend(lags);
    Ok(routed)
}

/// What the handlers run with.
#[derive(Clone, Copy)]
struct Wiring<'a> {
    store: &'a Store,
    names: &'a TableNames,
    bus: Option<&'a Bus>,
    figures: &'a PublishFigures,
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
    failed_records(batch, &response)
}

/// [`run_batch`] for the publish stage: the publisher's task runs only this (its future stays
/// `Send` without the other stages' handlers).
async fn publish_batch(
    wiring: Wiring<'_>,
    batch: Vec<serde_json::Value>,
) -> Result<(), Vec<serde_json::Value>> {
    let bus = wiring.bus.expect("publish mappings exist only with a bus");
    let (response, published) =
        shared::stages::publish::handle_event(bus, wiring.names, to_event(batch.clone())).await;
    wiring
        .figures
        .lags
        .lock()
        .expect("figures")
        .extend(published.lag_ms);
    failed_records(batch, &response)
}

/// The records of `batch` a handler's response reports failed, if any.
fn failed_records(
    batch: Vec<serde_json::Value>,
    response: &aws_lambda_events::event::streams::DynamoDbEventResponse,
) -> Result<(), Vec<serde_json::Value>> {
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(requeue_failed(batch, &failed))
    }
}
