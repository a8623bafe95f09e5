//! The bulk way locally, as AWS runs it: the fair queue (`shared::bulk::LocalBulkQueue`, one
//! queue per project served in turn, as an SQS fair queue serves its message groups) and the
//! `bulk` function's workers beside the stream mappings, never waiting for them nor they for it
//! (the mapping's `MaximumConcurrency` workers; a message that failed comes back after a pause,
//! and is dead-lettered after five receives).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::bulk::{LocalBulkQueue, QueuedChunk};
use shared::stages::bulk::{Worked, work_chunk};
use shared::store::Store;

/// Receives before a message goes to the dead-letter queue (the template's `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 5;
/// How long a failed message stays invisible before it comes back (scaled down from AWS's
/// visibility timeout so a local run does not wait minutes).
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Workers on a local bulk queue; they stop when this is dropped.
pub struct LocalBulkWorkers {
    queue: LocalBulkQueue,
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    dead: Arc<Mutex<Vec<QueuedChunk>>>,
    /// Per materialized chunk: ms from authorize's receipt (the bulk way's freshness).
    latencies: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Workers from `LOCAL_BULK_WORKERS` (default 1). DynamoDB Local serves one request at a time:
/// one worker already imports as fast as the engine lets it (424 changes/s against 406 with two,
/// `BENCH_ONLY=fairness`), and a second only takes the engine and the cores from the live way
/// (live changes under an import: 1.8 × their idle median with one worker, 7.5 × with two). On AWS
/// the mapping's `MaximumConcurrency` plays this part.
pub fn workers_from_env() -> usize {
    std::env::var("LOCAL_BULK_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

impl LocalBulkWorkers {
    pub fn start(store: Store, queue: LocalBulkQueue, workers: usize) -> Self {
        let busy = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(Mutex::new(Vec::new()));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let receives = Arc::new(Mutex::new(HashMap::new()));
        let crew: Vec<Worker> = (0..workers.max(1))
            .map(|_| Worker {
                store: store.clone(),
                queue: queue.clone(),
                busy: busy.clone(),
                stop: stop.clone(),
                dead: dead.clone(),
                latencies: latencies.clone(),
                receives: receives.clone(),
            })
            .collect();
        // A thread of its own, as the `bulk` function runs apart from the stream mappings' (and
        // the stages' futures are not `Send`, so they cannot be spawned on the caller's runtime).
        let thread = std::thread::Builder::new()
            .name("local-bulk".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the bulk workers");
                runtime.block_on(futures::future::join_all(crew.into_iter().map(Worker::run)));
            })
            .expect("the bulk workers' thread");
        Self {
            queue,
            busy,
            stop,
            dead,
            latencies,
            thread: Some(thread),
        }
    }

    /// Chunks queued or being worked.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.busy.load(Ordering::Acquire)
    }

    /// Chunks that failed five times (the dead-letter queue).
    pub fn dead_lettered(&self) -> Vec<QueuedChunk> {
        self.dead.lock().expect("dead").clone()
    }

    pub fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().expect("latencies"))
    }
}

impl Drop for LocalBulkWorkers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Each worker ends after its chunk in hand: a chunk is never left half worked.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Receives = HashMap<(String, String, u32), u32>;

struct Worker {
    store: Store,
    queue: LocalBulkQueue,
    busy: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    dead: Arc<Mutex<Vec<QueuedChunk>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    receives: Arc<Mutex<Receives>>,
}

impl Worker {
    async fn run(self) {
        while !self.stop.load(Ordering::Acquire) {
            // Busy before taking, so `pending` never reads 0 while a chunk is in hand.
            self.busy.fetch_add(1, Ordering::AcqRel);
            let Some(queued) = self.queue.pop() else {
                self.busy.fetch_sub(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            self.work(queued).await;
            self.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    async fn work(&self, queued: QueuedChunk) {
        match work_chunk(&self.store, &queued).await {
            Ok(Worked::Materialized { latency_ms, .. }) => {
                (self.latencies.lock().expect("latencies")).push(latency_ms.max(0) as f64);
            }
            Ok(_) => {}
            Err(e) => {
                let key = (
                    queued.project_id.clone(),
                    queued.message_id.clone(),
                    queued.chunk,
                );
                let received = {
                    let mut receives = self.receives.lock().expect("receives");
                    let n = receives.entry(key).or_default();
                    *n += 1;
                    *n
                };
                tracing::warn!(project_id = %queued.project_id, message_id = %queued.message_id,
                               chunk = queued.chunk, received, error = %e, "bulk chunk failed");
                if received >= MAX_RECEIVES {
                    self.dead.lock().expect("dead").push(queued);
                } else {
                    tokio::time::sleep(RETRY_AFTER).await;
                    self.queue.push(&[queued]);
                }
            }
        }
    }
}
