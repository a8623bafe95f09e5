//! The engage feed's publish mappings locally, as Lambda runs them: each mapping follows its
//! events stream on a task of its own, from the moment it is attached until it is dropped, and
//! never waits for the inbox and segments mappings nor they for it. (Run inside the pipeline's
//! steps, every step ended only once the publisher had put everything it had read, so a live
//! change's resolve → materialize hand-off waited for the neighbour's import events to reach the
//! bus: a local artefact, not AWS's behaviour.)

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::Value;
use shared::bus::Bus;
use shared::store::tables::TableNames;
use tokio::sync::Notify;

use crate::streams::{Mapping, failed_records, to_event};

/// How long a reader waits between polls that found nothing: Lambda polls a stream shard about
/// four times a second.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a lane waits before retrying a batch that failed (or a reader a poll that failed).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// What the publish mappings measure (ms), gathered on their task and taken by the caller.
#[derive(Default)]
pub struct PublishFigures {
    /// Per entry published: from its recorded time to the `PutEvents` that took it.
    lags: Mutex<Vec<f64>>,
    /// Per record read: from its recorded time to the read (the part of the lag that is the
    /// stream's and the poller's, not the publisher's).
    read_lags: Mutex<Vec<f64>>,
    /// Per poll: how long its stream reads took (DynamoDB Local's part of the read lag).
    poll_ms: Mutex<Vec<f64>>,
}

impl PublishFigures {
    pub fn take_lags(&self) -> Vec<f64> {
        take(&self.lags)
    }
    pub fn take_read_lags(&self) -> Vec<f64> {
        take(&self.read_lags)
    }
    pub fn take_poll_ms(&self) -> Vec<f64> {
        take(&self.poll_ms)
    }
}

fn take(figures: &Mutex<Vec<f64>>) -> Vec<f64> {
    std::mem::take(&mut *figures.lock().expect("figures"))
}

/// Figures kept per kind until taken: the publisher now polls for the pipeline's whole life, and
/// `scripts/run-local` never takes them, so what nobody takes must not grow without bound.
const KEPT_FIGURES: usize = 200_000;

/// Adds `values` to `figures`, up to [`KEPT_FIGURES`] (the rest are dropped).
fn note(figures: &Mutex<Vec<f64>>, values: impl IntoIterator<Item = f64>) {
    let mut kept = figures.lock().expect("figures");
    let room = KEPT_FIGURES.saturating_sub(kept.len());
    kept.extend(values.into_iter().take(room));
}

/// Where the publisher stands, shared between its task and the pipeline.
#[derive(Default)]
struct Progress {
    /// Records read and not yet published: queued on a lane, in a batch in flight, or waiting
    /// for a retry.
    outstanding: AtomicUsize,
    /// Records published since the start.
    published: AtomicUsize,
    /// Per mapping: how many polls began, and the number of the last that began and found nothing.
    polls_begun: Vec<AtomicU64>,
    last_empty_poll: Vec<AtomicU64>,
    /// The last poll or batch failure, for the caller's diagnostics.
    last_error: Mutex<Option<String>>,
    /// Wakes readers waiting between polls.
    wake: Notify,
    /// Tells [`Publisher::settled`] something moved.
    moved: Notify,
}

/// The publish mappings running on their own task; they stop when this is dropped.
pub struct Publisher {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // As a Lambda invocation cut off: a batch in flight is retried by the next reader.
        self.task.abort();
    }
}

impl Publisher {
    /// Starts `mappings` (each with its lanes) putting to `bus`.
    pub fn start(
        mappings: Vec<Mapping>,
        names: TableNames,
        bus: Bus,
        figures: Arc<PublishFigures>,
    ) -> Self {
        let progress = Arc::new(Progress {
            polls_begun: mappings.iter().map(|_| AtomicU64::new(0)).collect(),
            last_empty_poll: mappings.iter().map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        });
        let running = progress.clone();
        let task = tokio::spawn(async move {
            let context = Context {
                names: &names,
                bus: &bus,
                figures: &figures,
                progress: &running,
            };
            let runs = mappings
                .into_iter()
                .enumerate()
                .map(|(index, m)| follow(context, index, m).boxed());
            futures::future::join_all(runs).await;
        });
        Self { progress, task }
    }

    /// Records published since the start.
    pub fn published(&self) -> usize {
        self.progress.published.load(Ordering::Acquire)
    }

    /// Waits until every mapping has read its stream up to now and published all it read (a
    /// poll that began after this call found nothing, and nothing is outstanding); answers
    /// false if that did not happen `within`.
    pub async fn settled(&self, within: Duration) -> bool {
        let progress = &self.progress;
        let marks: Vec<u64> = progress
            .polls_begun
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .collect();
        progress.wake.notify_waiters();
        let deadline = Instant::now() + within;
        loop {
            let moved = progress.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let caught_up = progress
                .last_empty_poll
                .iter()
                .zip(&marks)
                .all(|(last, mark)| last.load(Ordering::Acquire) > *mark);
            if caught_up && progress.outstanding.load(Ordering::Acquire) == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, moved).await.is_err() {
                if let Some(e) = progress.last_error.lock().expect("error").as_ref() {
                    tracing::warn!(error = %e, "publisher not settled");
                }
                return false;
            }
        }
    }
}

/// What one mapping's reader and lanes run with.
#[derive(Clone, Copy)]
struct Context<'a> {
    names: &'a TableNames,
    bus: &'a Bus,
    figures: &'a PublishFigures,
    progress: &'a Progress,
}

type Lane = std::collections::VecDeque<Value>;

/// One mapping for good: its reader follows the stream and queues each record on its key's lane,
/// and each lane runs its next batch the moment its last one is done, so a record waits neither
/// for a round of reads nor for the slowest lane.
async fn follow(context: Context<'_>, index: usize, mut m: Mapping) {
    let batch_size = m.batch_size();
    let lanes: Vec<Mutex<Lane>> = m.take_lanes().into_iter().map(Mutex::new).collect();
    let queued = Notify::new();
    let reader = read_into_lanes(context, index, &mut m, &lanes, &queued);
    let workers = lanes
        .iter()
        .map(|lane| work_lane(context, batch_size, lane, &queued).boxed());
    futures::join!(reader, futures::future::join_all(workers));
}

/// The reader: polls, queues what it read on the lanes (waking them), and waits
/// [`POLL_INTERVAL`] after a poll that found nothing (or until [`Publisher::settled`] wakes it).
async fn read_into_lanes(
    context: Context<'_>,
    index: usize,
    m: &mut Mapping,
    lanes: &[Mutex<Lane>],
    queued: &Notify,
) {
    let progress = context.progress;
    loop {
        // Listening before looking: a wake during the poll still cuts the wait after it short.
        let woken = progress.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let poll = progress.polls_begun[index].fetch_add(1, Ordering::AcqRel) + 1;
        let routed = match poll_publishable(context, m).await {
            Ok(routed) => routed,
            Err(e) => {
                *progress.last_error.lock().expect("error") = Some(e);
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        if routed.is_empty() {
            progress.last_empty_poll[index].store(poll, Ordering::Release);
            progress.moved.notify_waiters();
            let _ = tokio::time::timeout(POLL_INTERVAL, woken).await;
            continue;
        }
        // Outstanding before queued: `settled` never sees a record nowhere.
        progress
            .outstanding
            .fetch_add(routed.len(), Ordering::AcqRel);
        for (lane, record) in routed {
            lanes[lane].lock().expect("lane").push_back(record);
        }
        queued.notify_waiters();
    }
}

/// One lane: runs its next batch as soon as there is one; a batch whose records failed keeps
/// them at the lane's front and is retried after [`RETRY_AFTER`] (Lambda retries from the
/// failure and keeps the lane's later records waiting).
async fn work_lane(context: Context<'_>, batch_size: usize, lane: &Mutex<Lane>, queued: &Notify) {
    let progress = context.progress;
    loop {
        let more = queued.notified();
        tokio::pin!(more);
        more.as_mut().enable();
        let batch: Vec<Value> = {
            let mut queue = lane.lock().expect("lane");
            let n = batch_size.min(queue.len());
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            more.await;
            continue;
        }
        let taken = batch.len();
        let failed = publish_batch(context, batch).await;
        let done = taken - failed.len();
        let failed_some = !failed.is_empty();
        if failed_some {
            let mut queue = lane.lock().expect("lane");
            for record in failed.into_iter().rev() {
                queue.push_front(record);
            }
        }
        progress.published.fetch_add(done, Ordering::AcqRel);
        progress.outstanding.fetch_sub(done, Ordering::AcqRel);
        progress.moved.notify_waiters();
        if failed_some {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Reads a mapping's stream once, noting how late each record is read and how long the read took.
async fn poll_publishable(
    context: Context<'_>,
    m: &mut Mapping,
) -> Result<Vec<(usize, Value)>, String> {
    let mut lags = Vec::new();
    let started = Instant::now();
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
    let figures = context.figures;
    note(&figures.poll_ms, [took]);
    note(&figures.read_lags, lags);
    Ok(routed)
}

/// Invokes the publish handler with one batch, as Lambda would; answers the records it reported
/// failed (`batchItemFailures`), in batch order.
async fn publish_batch(context: Context<'_>, batch: Vec<Value>) -> Vec<Value> {
    let (response, published) =
        shared::stages::publish::handle_event(context.bus, context.names, to_event(batch.clone()))
            .await;
    note(&context.figures.lags, published.lag_ms);
    let failed = failed_records(batch, &response);
    if !failed.is_empty() {
        *context.progress.last_error.lock().expect("error") = Some(format!(
            "{} records of a publish batch failed",
            failed.len()
        ));
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_nobody_takes_stop_growing_at_the_bound_and_taking_makes_room() {
        let figures = PublishFigures::default();
        note(&figures.lags, (0..KEPT_FIGURES + 10).map(|i| i as f64));
        note(&figures.lags, [1.0]);
        let taken = figures.take_lags();
        assert_eq!(taken.len(), KEPT_FIGURES);
        assert_eq!(taken.last(), Some(&((KEPT_FIGURES - 1) as f64)));
        note(&figures.lags, [7.0]);
        assert_eq!(figures.take_lags(), vec![7.0]);
    }
}
