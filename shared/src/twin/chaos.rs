//! Chaos for the simulation: at every port call, how long the call waits (yields to the other
//! invocations running at once, so their calls interleave) and which fault it meets. Drawn from
//! a seeded generator, or read back from a recorded script so that a schedule replays exactly;
//! either way every decision is recorded. An invocation may also be given a budget of calls:
//! at its end it stops between two calls, as a function cut off at its time limit.

use std::cell::Cell;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Fault;

/// What one port call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallChaos {
    /// Yields before the call runs.
    pub yields: u8,
    pub fault: Option<Fault>,
}

/// Where the decisions come from.
enum Source {
    Drawn { rng: Box<StdRng>, fault_rate: f64 },
    Script { calls: Vec<CallChaos> },
}

pub(super) struct Chaos {
    source: Source,
    /// Every decision, in call order.
    pub(super) record: Vec<CallChaos>,
    /// How many CleverTap IDs were minted (ids are numbered, so a run replays).
    pub(super) minted: u64,
}

/// Most yields before one call.
const MAX_YIELDS: u8 = 3;

impl Chaos {
    pub(super) fn drawn(seed: u64, fault_rate: f64) -> Self {
        Self::new(Source::Drawn {
            rng: Box::new(StdRng::seed_from_u64(seed)),
            fault_rate,
        })
    }

    pub(super) fn scripted(calls: Vec<CallChaos>) -> Self {
        Self::new(Source::Script { calls })
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            record: Vec::new(),
            minted: 0,
        }
    }

    /// Starts a call: its index and how many times it yields.
    pub(super) fn begin(&mut self) -> (usize, u8) {
        let index = self.record.len();
        let yields = match &mut self.source {
            Source::Drawn { rng, .. } => rng.random_range(0..=MAX_YIELDS),
            Source::Script { calls } => calls.get(index).map_or(0, |c| c.yields),
        };
        self.record.push(CallChaos {
            yields,
            fault: None,
        });
        (index, yields)
    }

    /// The fault of call `index` (a script that ran out: none).
    pub(super) fn fault_of(&mut self, index: usize, call: &str) -> Option<Fault> {
        let fault = match &mut self.source {
            Source::Drawn { rng, fault_rate } => rng.random_bool(*fault_rate).then(|| {
                let writes = !is_read(call);
                match rng.random_range(0..4) {
                    0 => Fault::Throttle,
                    1 if writes => Fault::TimeoutAfterCommit,
                    2 if writes => Fault::TransactionConflict,
                    _ => Fault::Transient,
                }
            }),
            Source::Script { calls } => calls.get(index).and_then(|c| c.fault),
        };
        self.record[index].fault = fault;
        fault
    }
}

/// Whether a port call only reads (a timeout after commit means nothing there).
fn is_read(call: &str) -> bool {
    let method = call.rsplit('.').next().unwrap_or(call);
    ![
        "put", "write", "mark", "claim", "delete", "take", "add", "drop", "open", "remove",
        "erase", "begin",
    ]
    .iter()
    .any(|verb| method.starts_with(verb))
}

tokio::task_local! {
    /// Port calls left to the invocation running in this task (`None`: no limit).
    static BUDGET: Cell<Option<u32>>;
}

/// Runs `invocation` with a budget of port calls: once spent, its next call never returns (the
/// caller drops it, as Lambda stops a function at its time limit).
pub async fn with_call_budget<F: std::future::Future>(
    budget: Option<u32>,
    invocation: F,
) -> F::Output {
    BUDGET.scope(Cell::new(budget), invocation).await
}

/// Spends one call of the budget; false once there is none left.
pub(super) fn spend_call() -> bool {
    BUDGET
        .try_with(|b| match b.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                b.set(Some(n - 1));
                true
            }
        })
        .unwrap_or(true)
}
