//! The in-memory twin of the store's ports: the semantics the stages rely on, with no engine.
//!
//! It holds each table's records in memory, per region, and keeps to DynamoDB's contract where
//! the stages depend on it: conditional writes, all-or-nothing transactions, the request
//! validation DynamoDB does (more than 100 actions, one item twice in a transaction, items over
//! 400 KB: the same error class and code), and a per-table change log in the shape of a stream
//! record. `tests/suite/contract` runs the same cases on it and on the DynamoDB adapter, so a
//! twin that drifts fails there.
//!
//! Faults are injected per call, by the port method's name (`"inbox.put_batch"`): an error
//! before the write (transient or throttled), a timeout after the write committed (the caller
//! sees an error, the write stands), or a transaction conflict. Every call is recorded, so a
//! test can say what a stage asked for and in which order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use aws_lambda_events::event::dynamodb::{Event, EventRecord};

use crate::domain::region::Region;
use crate::ports::StoreError;
use crate::store::Item;
use crate::store::tables::{Table, TableNames};

pub mod bus;
pub mod chaos;
mod inbox;
mod memberships;
mod profiles;
mod projects;

pub use bus::TwinBus;

/// DynamoDB's largest item.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's most actions in one transaction.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// A fault injected into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// The request fails before anything is written (a 500 or a connection reset).
    Transient,
    /// The request is throttled before anything is written.
    Throttle,
    /// The write commits, but the caller never hears: it sees a timeout.
    TimeoutAfterCommit,
    /// A transaction is cancelled because another one held one of its items.
    TransactionConflict,
}

/// What kind of change a log record is, as a stream says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Remove,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Modify => "MODIFY",
            ChangeKind::Remove => "REMOVE",
        }
    }
}

/// One record of a table's change log: what a stream with new and old images carries.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its place in the log of its table (increasing, as a stream's sequence numbers).
    pub sequence: u64,
    pub region: Region,
    pub table: Table,
    pub kind: ChangeKind,
    pub keys: Item,
    pub new_image: Option<Item>,
    pub old_image: Option<Item>,
}

/// Every table's records of every region, and the twin's bookkeeping.
#[derive(Default)]
struct State {
    inbox: inbox::Rows,
    progress: inbox::Progress,
    memberships: memberships::Tables,
    /// The bucket count new segments get (`None`: the default).
    new_segment_buckets: Option<u32>,
    projects: projects::Rows,
    profiles: profiles::Tables,
    log: Vec<Change>,
    faults: VecDeque<(&'static str, Fault)>,
    /// Faults for a later call of a method: (method, calls of it to let through first, fault).
    later_faults: Vec<(&'static str, usize, Fault)>,
    calls: Vec<&'static str>,
    /// Items the batch reads asked for (a DynamoDB BatchGetItem takes 100 a request).
    keys_read: usize,
    /// The simulation's chaos, if it runs one.
    chaos: Option<chaos::Chaos>,
    /// The fault the chaos picked for the call about to enter.
    pending_fault: Option<Fault>,
}

impl State {
    fn record(
        &mut self,
        region: Region,
        table: Table,
        keys: Item,
        old: Option<Item>,
        new: Option<Item>,
    ) {
        let kind = match (&old, &new) {
            (None, _) => ChangeKind::Insert,
            (Some(_), Some(_)) => ChangeKind::Modify,
            (Some(_), None) => ChangeKind::Remove,
        };
        self.log.push(Change {
            sequence: self.log.len() as u64 + 1,
            region,
            table,
            kind,
            keys,
            new_image: new,
            old_image: old,
        });
    }
}

/// The twin: cheap to clone, every clone sees the same tables.
#[derive(Clone, Default)]
pub struct Twin {
    state: Arc<Mutex<State>>,
}

/// What a call does about an injected fault.
enum Entry {
    Proceed,
    /// Write, then fail as a timeout.
    FailAfterWrite,
    /// Cancel a transaction with a conflict.
    Conflict,
}

impl Twin {
    pub fn new() -> Self {
        Self::default()
    }

    /// A twin whose calls meet chaos drawn from `seed`: interleaving yields, and a fault with
    /// probability `fault_rate` per call.
    pub fn chaotic(seed: u64, fault_rate: f64) -> Self {
        let twin = Self::default();
        twin.lock().chaos = Some(chaos::Chaos::drawn(seed, fault_rate));
        twin
    }

    /// A twin whose calls meet the chaos of a recorded run, call by call.
    pub fn scripted(calls: Vec<chaos::CallChaos>) -> Self {
        let twin = Self::default();
        twin.lock().chaos = Some(chaos::Chaos::scripted(calls));
        twin
    }

    /// Ends the chaos (the calls after it meet none) and answers what every call met.
    pub fn end_chaos(&self) -> Vec<chaos::CallChaos> {
        let mut state = self.lock();
        state.pending_fault = None;
        state.chaos.take().map_or_else(Vec::new, |c| c.record)
    }

    /// What every call met so far (empty without chaos).
    pub fn chaos_record(&self) -> Vec<chaos::CallChaos> {
        (self.lock().chaos.as_ref()).map_or_else(Vec::new, |c| c.record.clone())
    }

    /// Before a port call: stops for good once the invocation's call budget is spent, yields as
    /// the chaos says (other invocations' calls run meanwhile), then picks the call's fault.
    async fn pause(&self, call: &'static str) {
        if !chaos::spend_call() {
            std::future::pending::<()>().await;
        }
        let Some((index, yields)) = self.lock().chaos.as_mut().map(|c| c.begin()) else {
            return;
        };
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        let mut state = self.lock();
        state.pending_fault = state.chaos.as_mut().and_then(|c| c.fault_of(index, call));
    }

    /// A new CleverTap ID: numbered under chaos, so a run replays.
    fn mint_clevertap_id(&self) -> String {
        let mut state = self.lock();
        match state.chaos.as_mut() {
            Some(c) => {
                c.minted += 1;
                format!("__sim{:06}", c.minted)
            }
            None => format!("__{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Which counter shard a transaction counts on: random, or by call under chaos.
    fn pick_shard(state: &State, shards: u32) -> u32 {
        match &state.chaos {
            Some(c) => c.record.len() as u32 % shards,
            None => rand::Rng::random_range(&mut rand::rng(), 0..shards),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next call of `call` (a port method, `"inbox.put_batch"`) meet `fault`. Faults
    /// of one call are met in the order they were injected.
    pub fn inject(&self, call: &'static str, fault: Fault) {
        self.lock().faults.push_back((call, fault));
    }

    /// Makes the call of `call` after the next `skip` ones meet `fault`.
    pub fn inject_after(&self, call: &'static str, skip: usize, fault: Fault) {
        self.lock().later_faults.push((call, skip, fault));
    }

    /// How many items the batch reads asked for so far.
    pub fn keys_read(&self) -> usize {
        self.lock().keys_read
    }

    /// The port methods called so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }

    /// A table's change log in a region, in the order the changes were made (one item's
    /// changes are in its order, as a stream keeps them per key).
    pub fn changes(&self, region: Region, table: Table) -> Vec<Change> {
        self.lock()
            .log
            .iter()
            .filter(|c| c.region == region && c.table == table)
            .cloned()
            .collect()
    }

    /// The changes after `after` (a sequence number; 0 for all) as the Lambda event a stream's
    /// mapping delivers, with the source ARN the stages read the region and table from.
    pub fn stream_event(
        &self,
        names: &TableNames,
        region: Region,
        table: Table,
        after: u64,
    ) -> Event {
        let changes: Vec<Change> = (self.changes(region, table).into_iter())
            .filter(|c| c.sequence > after)
            .collect();
        Self::event_of(names, &changes)
    }

    /// Some changes (of one table and region) as the Lambda event that delivers them.
    pub fn event_of(names: &TableNames, changes: &[Change]) -> Event {
        let mut event = Event::default();
        event.records = changes
            .iter()
            .map(|c| {
                let arn = format!(
                    "arn:aws:dynamodb:twin:000000000000:table/{}/stream/twin",
                    names.name(c.region, c.table)
                );
                let mut r = EventRecord::default();
                r.event_id = format!("twin-{}", c.sequence);
                r.event_name = c.kind.as_str().to_owned();
                r.event_source = Some("aws:dynamodb".to_owned());
                r.event_source_arn = Some(arn);
                r.change.keys = c.keys.clone().into();
                r.change.new_image = c.new_image.clone().unwrap_or_default().into();
                r.change.old_image = c.old_image.clone().unwrap_or_default().into();
                r.change.sequence_number = Some(format!("{:021}", c.sequence));
                r
            })
            .collect();
        event
    }

    /// Records a call and meets its first injected fault, if any: errors before the write are
    /// returned here.
    fn enter(state: &mut State, call: &'static str) -> Result<Entry, StoreError> {
        state.calls.push(call);
        let chaos = state.pending_fault.take();
        let queued = (state.faults.iter().position(|(c, _)| *c == call))
            .and_then(|at| state.faults.remove(at))
            .map(|(_, f)| f);
        let mut later = None;
        for (c, skip, fault) in state.later_faults.iter_mut() {
            if *c == call && later.is_none() {
                match skip {
                    0 => later = Some(*fault),
                    n => *n -= 1,
                }
            }
        }
        state
            .later_faults
            .retain(|(c, skip, f)| !(*c == call && *skip == 0 && Some(*f) == later));
        let Some(fault) = queued.or(later).or(chaos) else {
            return Ok(Entry::Proceed);
        };
        match fault {
            Fault::Transient => Err(StoreError::Unavailable(format!(
                "InternalServerError: injected before {call}"
            ))),
            Fault::Throttle => Err(StoreError::Unavailable(format!(
                "ThrottlingException: injected before {call}"
            ))),
            Fault::TimeoutAfterCommit => Ok(Entry::FailAfterWrite),
            Fault::TransactionConflict => Ok(Entry::Conflict),
        }
    }

    /// What a call that wrote returns, after a `TimeoutAfterCommit` fault or none.
    fn after_write<T>(entry: &Entry, call: &'static str, ok: T) -> Result<T, StoreError> {
        match entry {
            Entry::FailAfterWrite => Err(StoreError::Unavailable(format!(
                "timeout: {call} committed, the answer was lost"
            ))),
            Entry::Proceed | Entry::Conflict => Ok(ok),
        }
    }
}

/// DynamoDB's refusal of an item over 400 KB.
fn check_item_size(item: &Item) -> Result<(), StoreError> {
    if crate::store::rows::item_size(item) > MAX_ITEM_BYTES {
        return Err(StoreError::Rejected(
            "ValidationException: Item size has exceeded the maximum allowed size".to_owned(),
        ));
    }
    Ok(())
}

/// DynamoDB's refusal of a transaction of more than 100 actions.
fn check_action_count(actions: usize) -> Result<(), StoreError> {
    if actions > MAX_TRANSACTION_ACTIONS {
        return Err(StoreError::Rejected(format!(
            "ValidationException: Member must have length less than or equal to {MAX_TRANSACTION_ACTIONS}"
        )));
    }
    Ok(())
}

/// DynamoDB's refusals of a transaction: more than 100 actions, or one item twice.
fn check_transaction<K: Eq + std::hash::Hash>(keys: &[K]) -> Result<(), StoreError> {
    if keys.len() > MAX_TRANSACTION_ACTIONS {
        return Err(StoreError::Rejected(format!(
            "ValidationException: Member must have length less than or equal to {MAX_TRANSACTION_ACTIONS}"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if !keys.iter().all(|k| seen.insert(k)) {
        return Err(StoreError::Rejected(
            "ValidationException: Transaction request cannot include multiple operations on one item"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Rows of one table by region and key.
type Keyed<K, V> = HashMap<(Region, K), V>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_over_the_limit_or_naming_an_item_twice_is_refused() {
        assert!(check_transaction(&(0..100).collect::<Vec<_>>()).is_ok());
        let over = check_transaction(&(0..101).collect::<Vec<_>>()).unwrap_err();
        assert!(matches!(over, StoreError::Rejected(m) if m.contains("ValidationException")));
        let twice = check_transaction(&[1, 2, 1]).unwrap_err();
        assert!(matches!(twice, StoreError::Rejected(m) if m.contains("multiple operations")));
    }

    #[test]
    fn faults_are_met_once_in_order_by_the_call_they_name() {
        let twin = Twin::new();
        twin.inject("inbox.put_batch", Fault::Throttle);
        twin.inject("inbox.put_batch", Fault::TimeoutAfterCommit);
        let mut state = twin.lock();
        assert!(Twin::enter(&mut state, "projects.project").is_ok());
        assert!(matches!(
            Twin::enter(&mut state, "inbox.put_batch"),
            Err(StoreError::Unavailable(m)) if m.starts_with("ThrottlingException")
        ));
        assert!(matches!(
            Twin::enter(&mut state, "inbox.put_batch"),
            Ok(Entry::FailAfterWrite)
        ));
        assert!(matches!(
            Twin::enter(&mut state, "inbox.put_batch"),
            Ok(Entry::Proceed)
        ));
        assert_eq!(
            state.calls,
            [
                "projects.project",
                "inbox.put_batch",
                "inbox.put_batch",
                "inbox.put_batch"
            ]
        );
    }

    /// The change log reads back as the stream a mapping delivers: per key in order, INSERT then
    /// MODIFY, images the stages parse, and an ARN that names the region and table.
    #[tokio::test]
    async fn the_change_log_is_the_stream_the_stages_read() {
        use crate::domain::batch::Chunk;
        use crate::domain::records::InboxStatus;
        use crate::domain::sync_log::ResolveOutcomes;
        use crate::ports::inbox::{BatchMeta, ChangeCounts, Handoff, Inbox};
        use crate::store::rows::inbox::row_of_image;

        let twin = Twin::new();
        let meta = BatchMeta {
            project_id: "P1",
            message_id: "m-1",
            message_ts: 1,
            received_ms: 2,
            way: Default::default(),
        };
        let chunk = Chunk {
            index: 0,
            profile_count: 1,
            payload: vec![1, 2],
            audiences: Default::default(),
        };
        twin.put_batch(Region::Eu1, &meta, std::slice::from_ref(&chunk))
            .await
            .unwrap();
        let outcomes = ResolveOutcomes::default();
        let handoff = Handoff {
            changes: &[9],
            outcomes: &outcomes,
            handed_on: ChangeCounts::default(),
            owed_after: None,
            progress: &[],
        };
        let key = meta.row(&chunk, 1);
        assert!(
            twin.mark_resolved(Region::Eu1, key.key(), handoff)
                .await
                .unwrap()
                .applied()
        );

        let names = TableNames::new("ctmp");
        let event = twin.stream_event(&names, Region::Eu1, Table::Inbox, 0);
        let kinds: Vec<&str> = event
            .records
            .iter()
            .map(|r| r.event_name.as_str())
            .collect();
        assert_eq!(kinds, ["INSERT", "MODIFY"]);
        let statuses: Vec<InboxStatus> = event
            .records
            .iter()
            .map(|r| row_of_image(&r.change.new_image).unwrap().status)
            .collect();
        assert_eq!(statuses, [InboxStatus::Received, InboxStatus::Resolved]);
        let arn = event.records[0].event_source_arn.as_deref().unwrap();
        assert_eq!(names.parse_arn(arn), Some((Region::Eu1, Table::Inbox)));
        let after_first = twin.stream_event(&names, Region::Eu1, Table::Inbox, 1);
        assert_eq!(
            after_first.records.len(),
            1,
            "read on from a sequence number"
        );
        assert!(
            twin.stream_event(&names, Region::Us1, Table::Inbox, 0)
                .records
                .is_empty()
        );
    }
}
