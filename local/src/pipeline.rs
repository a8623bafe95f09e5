//! The whole stream pipeline of a set of regions, driven locally: the same handlers and the same
//! filtered event shapes the deployed event source mappings deliver.

use shared::bus::Bus;
use shared::domain::region::Region;
use shared::stages::pipeline::{
    MATERIALIZE_INBOX_FILTER, MATERIALIZE_SEGMENTS_FILTER, PUBLISH_BATCH_SIZE,
    PUBLISH_EVENTS_FILTER, RESOLVE_INBOX_FILTER, STREAM_BATCH_SIZE,
};
use shared::store::Store;
use shared::store::tables::{Table, TableNames};

use crate::{
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
    /// Per entry published: ms from its recorded time to the `PutEvents` that took it.
    publish_lags: std::sync::Mutex<Vec<f64>>,
    /// Per record the publish mappings read: ms from its recorded time to the read (the part of
    /// the lag that is the stream's and the poller's, not the publisher's).
    read_lags: std::sync::Mutex<Vec<f64>>,
}

#[derive(Clone, Copy)]
enum Stage {
    Resolve,
    Materialize,
    Publish,
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
            publish_lags: Default::default(),
            read_lags: Default::default(),
        })
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
            publish_lags: Default::default(),
            read_lags: Default::default(),
        };
        pipeline.publish_to(client, endpoint, regions, bus).await?;
        Ok(pipeline)
    }

    /// The publish lags recorded since the last call (ms per entry put), taken.
    pub fn take_publish_lags(&self) -> Vec<f64> {
        std::mem::take(&mut *self.publish_lags.lock().expect("lags"))
    }

    /// How late the publish mappings read their records since the last call (ms from each
    /// record's recorded time), taken.
    pub fn take_read_lags(&self) -> Vec<f64> {
        std::mem::take(&mut *self.read_lags.lock().expect("lags"))
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
            self.publish.push(Mapping::new(
                // Events are small: a page holds what 10 batches run.
                StreamPoller::new(streams.clone(), events).with_page_limit(1_000),
                PUBLISH_EVENTS_FILTER,
                PUBLISH_BATCH_SIZE,
                shared::stages::pipeline::STREAM_PARALLELIZATION_FACTOR as usize,
            ));
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
    /// not after it.
    pub async fn step(&mut self) -> Result<usize, String> {
        let wiring = Wiring {
            store: &self.store,
            names: &self.names,
            bus: self.bus.as_ref(),
            lags: &self.publish_lags,
            read_lags: &self.read_lags,
        };
        let finished = std::sync::atomic::AtomicBool::new(false);
        let wake = tokio::sync::Notify::new();
        let inbox_and_segments = self
            .resolve
            .iter_mut()
            .map(|m| (Stage::Resolve, m))
            .chain(self.materialize.iter_mut().map(|m| (Stage::Materialize, m)))
            .chain(self.clear.iter_mut().map(|m| (Stage::Materialize, m)))
            .map(|(stage, m)| run_mapping(wiring, stage, m));
        let others = async {
            let handled = futures::future::try_join_all(inbox_and_segments).await;
            finished.store(true, std::sync::atomic::Ordering::Release);
            wake.notify_one();
            handled.map(|h| h.into_iter().sum::<usize>())
        };
        let publisher = publish_until(wiring, &mut self.publish, &finished, &wake);
        let (others, published) = futures::future::try_join(others, publisher).await?;
        Ok(others + published)
    }

    /// Steps until a poll finds nothing new (or `max_steps` is reached).
    /// A stream read can come back empty while records are on their way (DynamoDB Local shows
    /// new records a moment late), so idle means three quiet polls in a row.
    pub async fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, String> {
        let mut total = 0;
        let mut quiet = 0;
        for _ in 0..max_steps {
            let n = self.step().await?;
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

/// How long the publish mappings wait between polls that found nothing, within a step: Lambda
/// polls a stream shard about four times a second.
const PUBLISH_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the publish mappings round after round until `finished` is set (and `wake` notified),
/// then once more, so the last round sees everything the step's other batches wrote.
async fn publish_until(
    wiring: Wiring<'_>,
    publish: &mut [Mapping],
    finished: &std::sync::atomic::AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<usize, String> {
    let mut handled = 0;
    if publish.is_empty() {
        return Ok(0);
    }
    loop {
        // Read before the round: the round after the others finished sees all they wrote.
        if finished.load(std::sync::atomic::Ordering::Acquire) {
            let round = publish
                .iter_mut()
                .map(|m| run_mapping(wiring, Stage::Publish, m));
            let n: usize = futures::future::try_join_all(round)
                .await?
                .into_iter()
                .sum();
            return Ok(handled + n);
        }
        let round = publish.iter_mut().map(|m| publish_round(wiring, m));
        let mut busy = false;
        for (ran, read) in futures::future::try_join_all(round).await? {
            handled += ran;
            busy |= ran + read > 0;
        }
        if !busy {
            // Until the next poll, or at once when the others finish.
            let _ = tokio::time::timeout(PUBLISH_POLL_INTERVAL, wake.notified()).await;
        }
    }
}

/// Polls one mapping's stream once and runs what it queued.
async fn run_mapping(wiring: Wiring<'_>, stage: Stage, m: &mut Mapping) -> Result<usize, String> {
    match stage {
        Stage::Publish => {
            fetch_publishable(wiring, m).await?;
        }
        Stage::Resolve | Stage::Materialize => {
            m.fetch().await?;
        }
    }
    Ok(drain(wiring, stage, m).await)
}

/// One round of a publish mapping while the step's other batches run: what is queued runs while
/// the stream is read for what came meanwhile (Lambda reads a shard on while batches run, so a
/// slow batch does not hold the reading up). Answers (records run, records read).
async fn publish_round(wiring: Wiring<'_>, m: &mut Mapping) -> Result<(usize, usize), String> {
    let batch_size = m.batch_size();
    let queued = m.take_lanes();
    let (ran, read) = futures::join!(
        run_lanes(wiring, Stage::Publish, batch_size, queued),
        fetch_publishable(wiring, m)
    );
    let (rest, handled) = ran;
    m.restore_lanes(rest);
    Ok((handled, read?))
}

/// Reads a publish mapping's stream, noting how late each record is read.
async fn fetch_publishable(wiring: Wiring<'_>, m: &mut Mapping) -> Result<usize, String> {
    let mut lags = Vec::new();
    let read = m
        .fetch_inspecting(|r| {
            let recorded = r["dynamodb"]["NewImage"]["recorded_ms"]["N"].as_str();
            if let Some(ms) = recorded.and_then(|ms| ms.parse::<i64>().ok()) {
                let now = shared::domain::protocol::now_ms();
                lags.push((now - ms).max(0) as f64);
            }
        })
        .await?;
    wiring.read_lags.lock().expect("lags").extend(lags);
    Ok(read)
}

/// What the handlers run with.
#[derive(Clone, Copy)]
struct Wiring<'a> {
    store: &'a Store,
    names: &'a TableNames,
    bus: Option<&'a Bus>,
    lags: &'a std::sync::Mutex<Vec<f64>>,
    read_lags: &'a std::sync::Mutex<Vec<f64>>,
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
    lanes: Vec<std::collections::VecDeque<serde_json::Value>>,
) -> (Vec<std::collections::VecDeque<serde_json::Value>>, usize) {
    let Wiring {
        store,
        names,
        bus,
        lags,
        ..
    } = wiring;
    let runs = lanes.into_iter().map(|mut queue| async move {
        let mut handled = 0;
        while !queue.is_empty() {
            let n = batch_size.min(queue.len());
            let batch: Vec<serde_json::Value> = queue.drain(..n).collect();
            handled += batch.len();
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
                Stage::Publish => {
                    let bus = bus.expect("publish mappings exist only with a bus");
                    let (response, batch) =
                        shared::stages::publish::handle_event(bus, names, event).await;
                    lags.lock().expect("lags").extend(batch.lag_ms);
                    response
                }
            };
            let failed: Vec<String> = response
                .batch_item_failures
                .iter()
                .filter_map(|f| f.item_identifier.clone())
                .collect();
            if !failed.is_empty() {
                for r in requeue_failed(batch, &failed).into_iter().rev() {
                    queue.push_front(r);
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
