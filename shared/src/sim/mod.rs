//! The simulation: one seed gives a workload (people, overlapping emails and phones, membership
//! messages) and a schedule (mParticle's deliveries, redeliveries and reordering; the stream
//! mappings' batches per lane, run at once so their port calls interleave; retries from the
//! first failed record; invocations cut off between two calls and their batches bisected; a
//! fault at any port call). The whole pipeline runs on the twin (authorize's storing, resolve,
//! materialize, publish) and the end state is checked against a plain reference model
//! (`model.rs`). A failing run prints its schedule; kept schedules (`schedules/*.json`) replay
//! call for call, whatever the generator becomes.
//!
//! DSR erasures (by Customer ID or CleverTap ID, retried until they answer 200, redelivered after)
//! run among the rest; messages stamped after their cut-off are sent once they have answered.
//!
//! Not in it yet: disconnects (segment clearing is not in the twin) and erasures by email or phone
//! (whom they reach depends on which batches were resolved first: the model would have to
//! follow the schedule's order there).

use std::time::Duration;

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::bulk::QueuedChunk;
use crate::domain::batch::build_chunks;
use crate::domain::protocol::{Request, parse_request};
use crate::domain::region::Region;
use crate::domain::ways::Way;
use crate::ports::inbox::BatchMeta;
use crate::store::tables::{Table, TableNames};
use crate::twin::chaos::{CallChaos, with_call_budget};
use crate::twin::{Change, ChangeKind, Twin, TwinBus};

mod model;
mod workload;

use model::Model;
use workload::Workload;

pub const P: &str = "P1";
pub const R: Region = Region::Eu1;
/// Lanes per stream mapping (Lambda's parallelization within a shard): records of one item
/// always take the same lane, in order.
const LANES: usize = 3;
/// Records per batch before any bisection.
const BATCH: usize = 4;
/// Steps after the last delivery within which every stream must drain.
const DRAIN_STEPS: usize = 300;
/// The chance that a port call meets a fault.
const FAULT_RATE: f64 = 0.03;

/// A stream mapping (one Lambda on one table's stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consumer {
    Resolve,
    Materialize,
    Publish,
}

impl Consumer {
    fn table(self) -> Table {
        match self {
            Consumer::Resolve | Consumer::Materialize => Table::Inbox,
            Consumer::Publish => Table::Events,
        }
    }
}

/// One move of the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Move {
    /// mParticle POSTs message `message` (again, if it was stored before).
    Deliver { message: usize, budget: Option<u32> },
    /// mParticle POSTs DSR `dsr` (again, after a failure or after its 200).
    Erase { dsr: usize, budget: Option<u32> },
    /// Invocations of one mapping at once, one per lane, each with its budget of port calls
    /// (`None`: it runs to its end).
    Invoke {
        consumer: Consumer,
        lanes: Vec<(usize, Option<u32>)>,
    },
    /// Bulk workers at once, each on one queued chunk (an index into the queue as it stands),
    /// with its budget; a chunk whose worker failed or was cut off stays queued (SQS hands it
    /// out again).
    Work { picks: Vec<(usize, Option<u32>)> },
}

/// A run, replayable: the workload, the moves and what every port call met.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub workload: Workload,
    pub moves: Vec<Move>,
    pub calls: Vec<CallChaos>,
}

/// Where a mapping stands on one lane.
#[derive(Debug, Clone, Copy)]
struct Lane {
    /// Records of the lane's log before this one are done.
    next: usize,
    batch: usize,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            next: 0,
            batch: BATCH,
        }
    }
}

/// The lane of a record: a stable hash of its item's key.
fn lane_of(change: &Change) -> usize {
    let (pk, sk) = crate::store::rows::key_strings(&change.keys);
    let hash = (pk + "|" + &sk)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    (hash % LANES as u64) as usize
}

struct World {
    twin: Twin,
    bus: TwinBus,
    names: TableNames,
    workload: Workload,
    delivered: Vec<bool>,
    /// Per DSR: how many entries the bus had when it first answered 200.
    erased: Vec<Option<usize>>,
    lanes: [[Lane; LANES]; 3],
    /// The bulk queue: chunks queued and not yet worked to their end.
    queue: Vec<QueuedChunk>,
}

impl World {
    fn lane_log(&self, consumer: Consumer, lane: usize) -> Vec<Change> {
        (self.twin.changes(R, consumer.table()).into_iter())
            .filter(|c| lane_of(c) == lane)
            .filter(|c| consumer != Consumer::Publish || c.kind != ChangeKind::Remove)
            .collect()
    }

    fn pending(&self, consumer: Consumer, lane: usize) -> usize {
        let done = self.lanes[consumer as usize][lane].next;
        self.lane_log(consumer, lane).len().saturating_sub(done)
    }

    fn any_pending(&self) -> bool {
        !self.queue.is_empty()
            || [Consumer::Resolve, Consumer::Materialize, Consumer::Publish]
                .iter()
                .any(|c| (0..LANES).any(|l| self.pending(*c, l) > 0))
    }

    /// Authorize's storing of one message: parsed and chunked as the endpoint does, stored with
    /// its retries. `true` once mParticle has its 200.
    async fn deliver(&mut self, message: usize, budget: Option<u32>) -> bool {
        let m = &self.workload.messages[message];
        let body = self.workload.body(m);
        let Ok(Request::AudienceMembershipChange(req)) = parse_request(body.as_bytes()) else {
            panic!("the workload's messages parse");
        };
        let chunks =
            build_chunks(&req.user_profiles.unwrap_or_default()).expect("small batches chunk");
        let meta = BatchMeta {
            project_id: P,
            message_id: &m.id,
            message_ts: m.ts_ms,
            received_ms: m.ts_ms,
            way: if m.bulk { Way::Bulk } else { Way::Live },
        };
        let twin = &self.twin;
        // Stored, then (the bulk way) queued: both before the 200, as authorize does.
        let stored = with_call_budget(budget, async {
            let duplicate = crate::stages::endpoint::store_batch(twin, R, &meta, &chunks).await?;
            crate::stages::endpoint::chunks_to_queue(twin, R, &meta, &chunks, duplicate).await
        });
        let queued = match cut_off(stored).await {
            Some(Ok(queued)) => Some(queued),
            _ => None,
        };
        let ok = queued.is_some();
        self.queue.extend(queued.unwrap_or_default());
        self.delivered[message] |= ok;
        ok
    }

    /// Bulk workers at once on the picked chunks; those worked to their end leave the queue.
    async fn work(&mut self, picks: &[(usize, Option<u32>)]) {
        let twin = &self.twin;
        let runs = (picks.iter())
            .filter_map(|&(i, budget)| Some((i, budget, self.queue.get(i)?.clone())))
            .map(|(i, budget, queued)| async move {
                let working = with_call_budget(budget, async move {
                    crate::stages::bulk::work_chunk(twin, &queued).await
                });
                (i, matches!(cut_off(working).await, Some(Ok(_))))
            });
        let mut done: Vec<usize> = (futures::future::join_all(runs).await.into_iter())
            .filter_map(|(i, ok)| ok.then_some(i))
            .collect();
        done.sort_unstable();
        done.dedup();
        for i in done.into_iter().rev() {
            self.queue.remove(i);
        }
    }

    /// The erase function on one DSR; `true` once mParticle has its 200.
    async fn erase(&mut self, dsr: usize, budget: Option<u32>) -> bool {
        let request = self.workload.erasure_request(&self.workload.erasures[dsr]);
        let erasing = with_call_budget(
            budget,
            crate::stages::erasure::erase(&self.twin, R, P, &request),
        );
        let ok = matches!(cut_off(erasing).await, Some(Ok(_)));
        if ok && self.erased[dsr].is_none() {
            self.erased[dsr] = Some(self.bus.put_entries().len());
        }
        ok
    }

    fn erasures_answered(&self) -> bool {
        self.erased.iter().all(Option::is_some)
    }

    /// Messages mParticle may send now (those stamped after the cut-off wait for the 200s).
    fn sendable(&self, message: usize) -> bool {
        let m = &self.workload.messages[message];
        !self.workload.after_erasures(m) || self.erasures_answered()
    }

    /// One invocation per lane at once; each lane moves on as Lambda's checkpointing does.
    async fn invoke(&mut self, consumer: Consumer, lanes: &[(usize, Option<u32>)]) {
        let mut runs = Vec::new();
        for &(lane, budget) in lanes {
            let state = self.lanes[consumer as usize][lane];
            let log = self.lane_log(consumer, lane);
            let batch: Vec<Change> = log.into_iter().skip(state.next).take(state.batch).collect();
            if batch.is_empty() {
                continue;
            }
            let event = Twin::event_of(&self.names, &batch);
            let (twin, bus, names) = (&self.twin, &self.bus, &self.names);
            runs.push(async move {
                let response = with_call_budget(budget, async move {
                    match consumer {
                        Consumer::Resolve => {
                            crate::stages::resolve::handle_inbox_event(twin, names, event)
                                .await
                                .0
                        }
                        Consumer::Materialize => {
                            crate::stages::materialize::handle_event(twin, names, event)
                                .await
                                .0
                        }
                        Consumer::Publish => {
                            crate::stages::publish::handle_event(bus, names, event)
                                .await
                                .0
                        }
                    }
                });
                (lane, batch, cut_off(response).await)
            });
        }
        for (lane, batch, response) in futures::future::join_all(runs).await {
            let state = &mut self.lanes[consumer as usize][lane];
            match response {
                Some(r) => {
                    state.next += done_before_first_failure(&batch, &r);
                    state.batch = BATCH;
                }
                // Cut off at its time limit: the batch again, bisected.
                None => state.batch = (state.batch / 2).max(1),
            }
        }
    }
}

/// An invocation, or `None` if it was cut off (its budget of calls ran out).
async fn cut_off<T>(invocation: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(900), invocation)
        .await
        .ok()
}

/// How many records of a batch are done: those before the first one reported failed.
fn done_before_first_failure(batch: &[Change], response: &DynamoDbEventResponse) -> usize {
    let failed: Vec<String> = (response.batch_item_failures.iter())
        .filter_map(|f| f.item_identifier.clone())
        .collect();
    batch
        .iter()
        .position(|c| failed.contains(&format!("{:021}", c.sequence)))
        .unwrap_or(batch.len())
}

/// What a run came to.
pub struct Outcome {
    pub schedule: Schedule,
    pub violations: Vec<String>,
    pub calls: Vec<&'static str>,
}

/// Where a run's moves come from.
enum Moves<'s> {
    Drawn(Box<StdRng>),
    Replayed(std::slice::Iter<'s, Move>),
}

/// Runs one seed, drawing its workload and schedule.
pub fn run_seed(seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let workload = Workload::generate(&mut rng);
    let twin = Twin::chaotic(seed ^ 0x5eed, FAULT_RATE);
    run(seed, workload, twin, Moves::Drawn(Box::new(rng)))
}

/// Replays a recorded schedule call for call.
pub fn replay(schedule: &Schedule) -> Outcome {
    let twin = Twin::scripted(schedule.calls.clone());
    let moves = Moves::Replayed(schedule.moves.iter());
    run(schedule.seed, schedule.workload.clone(), twin, moves)
}

fn run(seed: u64, workload: Workload, twin: Twin, moves: Moves<'_>) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(drive(seed, workload, twin, moves))
}

async fn drive(seed: u64, workload: Workload, twin: Twin, mut moves: Moves<'_>) -> Outcome {
    if !workload.erasures.is_empty() {
        // The project's item holds its erasure marks (created without chaos: a setup).
        twin.setup_project(R, P);
    }
    let mut world = World {
        twin,
        bus: TwinBus::new(),
        names: TableNames::new("sim"),
        delivered: vec![false; workload.messages.len()],
        erased: vec![None; workload.erasures.len()],
        workload,
        lanes: Default::default(),
        queue: Vec::new(),
    };
    let mut taken = Vec::new();
    let mut drain = 0;
    loop {
        let next = match &mut moves {
            Moves::Replayed(recorded) => match recorded.next() {
                Some(m) => m.clone(),
                // Past its recorded moves (the code may call differently since it was kept):
                // everything is sent and drained without cut-offs, so a kept schedule still
                // checks the end state.
                None => match settle(&world) {
                    Some(m) if drain < DRAIN_STEPS => {
                        drain += 1;
                        m
                    }
                    _ => break,
                },
            },
            Moves::Drawn(rng) => {
                let undelivered = world.delivered.iter().any(|d| !d) || !world.erasures_answered();
                if !undelivered && !world.any_pending() {
                    break;
                }
                if !undelivered {
                    drain += 1;
                    if drain > DRAIN_STEPS {
                        break;
                    }
                }
                draw(rng, &world)
            }
        };
        match &next {
            Move::Deliver { message, budget } => {
                world.deliver(*message, *budget).await;
            }
            Move::Erase { dsr, budget } => {
                world.erase(*dsr, *budget).await;
            }
            Move::Invoke { consumer, lanes } => world.invoke(*consumer, lanes).await,
            Move::Work { picks } => world.work(picks).await,
        }
        taken.push(next);
    }
    // The checks read without chaos.
    let calls = world.twin.end_chaos();
    let called = world.twin.calls();
    let mut violations = Vec::new();
    if world.delivered.iter().any(|d| !d) {
        violations.push("liveness: a message was never stored".to_owned());
    }
    if !world.erasures_answered() {
        violations.push("liveness: an erasure never answered 200".to_owned());
    }
    if world.any_pending() {
        violations.push("liveness: the streams or the bulk queue did not drain".to_owned());
    }
    violations.extend(
        Model::of(&world.workload)
            .check(&world.twin, &world.bus, &world.erased)
            .await,
    );
    Outcome {
        schedule: Schedule {
            seed,
            workload: world.workload.clone(),
            moves: taken,
            calls,
        },
        violations,
        calls: called,
    }
}

/// The next move of a replay past its recorded moves: what is left to send, then each mapping
/// on every lane with records pending; `None` once nothing is.
fn settle(world: &World) -> Option<Move> {
    if let Some(message) =
        (0..world.delivered.len()).find(|&i| !world.delivered[i] && world.sendable(i))
    {
        return Some(Move::Deliver {
            message,
            budget: None,
        });
    }
    if let Some(dsr) = (0..world.erased.len()).find(|&i| world.erased[i].is_none()) {
        return Some(Move::Erase { dsr, budget: None });
    }
    if !world.queue.is_empty() {
        let picks = (0..world.queue.len()).map(|i| (i, None)).collect();
        return Some(Move::Work { picks });
    }
    [Consumer::Resolve, Consumer::Materialize, Consumer::Publish]
        .into_iter()
        .find_map(|consumer| {
            let lanes: Vec<(usize, Option<u32>)> = (0..LANES)
                .filter(|&l| world.pending(consumer, l) > 0)
                .map(|l| (l, None))
                .collect();
            (!lanes.is_empty()).then_some(Move::Invoke { consumer, lanes })
        })
}

/// The next move: mostly the next delivery (in a shuffled order, so messages arrive out of
/// order) or a mapping's invocations; sometimes a redelivery; now and then a cut-off.
fn draw(rng: &mut StdRng, world: &World) -> Move {
    let budget = |rng: &mut StdRng| rng.random_bool(0.08).then(|| rng.random_range(0..12));
    let undelivered: Vec<usize> = (0..world.delivered.len())
        .filter(|i| !world.delivered[*i] && world.sendable(*i))
        .collect();
    let unanswered: Vec<usize> = (0..world.erased.len())
        .filter(|i| world.erased[*i].is_none())
        .collect();
    let roll = rng.random_range(0..100);
    if !world.erased.is_empty() && roll >= 95 {
        // A DSR: one not answered yet, or now and then one again (mParticle's redelivery).
        let dsr = match unanswered.is_empty() || rng.random_bool(0.2) {
            true => rng.random_range(0..world.erased.len()),
            false => unanswered[rng.random_range(0..unanswered.len())],
        };
        return Move::Erase {
            dsr,
            budget: budget(rng),
        };
    }
    if !undelivered.is_empty() && roll < 35 {
        let message = undelivered[rng.random_range(0..undelivered.len())];
        return Move::Deliver {
            message,
            budget: budget(rng),
        };
    }
    if roll < 40 {
        let sendable: Vec<usize> = (0..world.delivered.len())
            .filter(|i| world.sendable(*i))
            .collect();
        if !sendable.is_empty() {
            let message = sendable[rng.random_range(0..sendable.len())];
            return Move::Deliver {
                message,
                budget: budget(rng),
            };
        }
    }
    if !world.queue.is_empty() && roll < 55 {
        // One to three workers, now and then two on the same chunk (queued twice).
        let picks = (0..rng.random_range(1..=3))
            .map(|_| (rng.random_range(0..world.queue.len()), budget(rng)))
            .collect();
        return Move::Work { picks };
    }
    let consumer = match rng.random_range(0..3) {
        0 => Consumer::Resolve,
        1 => Consumer::Materialize,
        _ => Consumer::Publish,
    };
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        if world.pending(consumer, lane) > 0 && rng.random_bool(0.7) {
            lanes.push((lane, budget(rng)));
        }
    }
    Move::Invoke { consumer, lanes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds per `cargo test` (`SIM_SEEDS` asks for another count, `SIM_FIRST` another start).
    fn seeds() -> std::ops::Range<u64> {
        let count = std::env::var("SIM_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        let first = std::env::var("SIM_FIRST")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        first..first + count
    }

    #[test]
    fn every_seed_ends_as_the_model_says() {
        let started = std::time::Instant::now();
        let seeds = seeds();
        let count = seeds.end - seeds.start;
        let (mut moves, mut calls) = (0, 0);
        for seed in seeds {
            let outcome = run_seed(seed);
            if !outcome.violations.is_empty() {
                let schedule = serde_json::to_string(&outcome.schedule).unwrap();
                panic!(
                    "seed {seed} broke {} invariant(s):\n  {}\nits schedule (keep it in shared/src/sim/schedules/):\n{schedule}",
                    outcome.violations.len(),
                    outcome.violations.join("\n  ")
                );
            }
            moves += outcome.schedule.moves.len();
            calls += outcome.calls.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "simulation: {count} seeds, {moves} moves, {calls} port calls in {secs:.1} s \
             ({:.0} seeds/s; budget 60 s)",
            count as f64 / secs
        );
    }

    #[test]
    fn a_seed_replays_call_for_call_from_its_schedule() {
        for seed in [3, 17, 42] {
            let first = run_seed(seed);
            let again = run_seed(seed);
            assert_eq!(
                first.calls, again.calls,
                "seed {seed} draws the same run twice"
            );
            let replayed = replay(&first.schedule);
            assert_eq!(
                first.calls, replayed.calls,
                "seed {seed}'s schedule replays it"
            );
            assert_eq!(first.violations, replayed.violations);
        }
    }

    #[test]
    fn every_kept_schedule_holds_every_invariant() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/schedules");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let schedule: Schedule =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let outcome = replay(&schedule);
            assert!(
                outcome.violations.is_empty(),
                "{}: {:?}",
                path.display(),
                outcome.violations
            );
        }
    }
}
