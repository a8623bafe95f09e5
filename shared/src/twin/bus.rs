//! The event bus port in memory: what was put, in order, and refusals injected per entry or per
//! call, as EventBridge gives them (an entry refused with a code inside a successful call, or
//! the whole call failing).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::feed::FeedEntry;
use crate::ports::bus::{BusError, EntryOutcome, EventBus, MAX_ENTRIES_PER_CALL};

#[derive(Default)]
struct BusState {
    put: Vec<FeedEntry>,
    /// Codes the next entries sent are refused with, one per entry.
    refusals: VecDeque<String>,
    /// Entries whose detail holds a text, refused with a code, so many more times.
    targeted: Vec<(String, String, usize)>,
    /// Calls still to fail whole.
    failing_calls: usize,
    calls: usize,
}

/// The twin of the stack's bus: cheap to clone, every clone sees the same entries.
#[derive(Clone, Default)]
pub struct TwinBus {
    state: Arc<Mutex<BusState>>,
}

impl TwinBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses the next `entries` entries sent with `code` (`ThrottlingException`,
    /// `InternalFailure`, …), one by one, across calls.
    pub fn refuse_entries(&self, entries: usize, code: &str) {
        let mut state = self.lock();
        state
            .refusals
            .extend(std::iter::repeat_n(code.to_owned(), entries));
    }

    /// Refuses the entry whose detail contains `needle` (an event id) the next `times` times
    /// it is sent, with `code`.
    pub fn refuse_entry(&self, needle: &str, times: usize, code: &str) {
        self.lock()
            .targeted
            .push((needle.to_owned(), code.to_owned(), times));
    }

    /// Fails the next `calls` calls whole.
    pub fn fail_calls(&self, calls: usize) {
        self.lock().failing_calls += calls;
    }

    /// Every entry put, in the order the bus took them.
    pub fn put_entries(&self) -> Vec<FeedEntry> {
        self.lock().put.clone()
    }

    /// How many `PutEvents` calls were made.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }
}

impl EventBus for TwinBus {
    async fn put(&self, entries: &[&FeedEntry]) -> Result<Vec<EntryOutcome>, BusError> {
        let mut state = self.lock();
        state.calls += 1;
        if entries.len() > MAX_ENTRIES_PER_CALL {
            return Err(BusError::Call(format!(
                "ValidationException: {} entries, at most {MAX_ENTRIES_PER_CALL} in one call",
                entries.len()
            )));
        }
        if state.failing_calls > 0 {
            state.failing_calls -= 1;
            return Err(BusError::Call("InternalException: injected".to_owned()));
        }
        Ok(entries
            .iter()
            .map(|entry| {
                let targeted = state.targeted.iter_mut().find(|(needle, _, times)| {
                    *times > 0 && entry.detail.contains(needle.as_str())
                });
                let refusal = match targeted {
                    Some((_, code, times)) => {
                        *times -= 1;
                        Some(code.clone())
                    }
                    None => state.refusals.pop_front(),
                };
                match refusal {
                    Some(code) => EntryOutcome::Failed(code),
                    None => {
                        state.put.push((*entry).clone());
                        EntryOutcome::Put
                    }
                }
            })
            .collect())
    }
}
