//! The event bus port: the stack's EventBridge bus, one `PutEvents` call at a time.

use std::future::Future;

use crate::domain::feed::FeedEntry;

/// `PutEvents`' most entries in one call.
pub const MAX_ENTRIES_PER_CALL: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The whole call failed (after the SDK's own retries): every entry may be tried again.
    #[error("PutEvents failed: {0}")]
    Call(String),
    /// EventBridge answered with another number of results than entries sent.
    #[error("PutEvents answered {got} results for {sent} entries")]
    Answer { sent: usize, got: usize },
}

/// How one entry of a `PutEvents` call ended: put, or refused with EventBridge's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    Put,
    Failed(String),
}

/// The bus the publisher puts the engage feed on.
pub trait EventBus: Send + Sync {
    /// One `PutEvents` call of at most [`MAX_ENTRIES_PER_CALL`] entries
    /// (`domain::feed::put_batches`); an outcome per entry, in entry order.
    fn put(
        &self,
        entries: &[&FeedEntry],
    ) -> impl Future<Output = Result<Vec<EntryOutcome>, BusError>> + Send;
}
