//! The ports the stages own: one trait per aggregate of the store, over plain records
//! (`domain::records` and the types here) and typed outcomes. Pure: no AWS types, no I/O.
//!
//! Two implementations hold to the same contract (`tests/suite/contract`): the DynamoDB adapter
//! ([`crate::store`], one row file per table in `store/rows/`) and the in-memory twin
//! ([`crate::twin`]), which the stages' own tests and the simulation run on.
//!
//! **Each method that writes is one DynamoDB request** (one conditional write, one transaction,
//! one batch): a sequence of requests is the stage's, visible in its code, so a test or a
//! simulation can cut between any two. Reads may page and retry unprocessed keys inside.

pub mod bus;
pub mod erasures;
pub mod inbox;
pub mod memberships;
pub mod profiles;
pub mod projects;

/// How a storage call failed. The class decides what the caller does: retry later
/// (`Unavailable`), or never (`Corrupt`, `Rejected`); `http::storage_failure` maps it to a status
/// once for both edges.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB could not be reached, throttled, or failed: the caller should retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An item exists but cannot be read back into our types.
    #[error("stored item is unreadable: {0}")]
    Corrupt(String),
    /// DynamoDB refused the request itself (a validation error, an item or collection over a
    /// limit): retrying the same request can never succeed.
    #[error("storage refused the request: {0}")]
    Rejected(String),
}

impl StoreError {
    /// Whether the same call may succeed later (so mParticle or the stream should retry).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The outcome of one conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Written {
    Applied,
    /// Its condition did not hold: nothing was written.
    ConditionFailed,
}

impl Written {
    pub fn applied(self) -> bool {
        self == Written::Applied
    }
}
