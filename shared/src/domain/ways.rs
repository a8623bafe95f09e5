//! The two ways a stored chunk goes through the pipeline (docs/architecture.md, "Live and bulk"),
//! decided at authorize from the request alone. Pure.
//!
//! - **Live**: the inbox stream, as every chunk went before: resolve, then materialize, each a
//!   stream mapping. Its latency depends on the live traffic only.
//! - **Bulk**: the chunk is stored the same way (same row, same idempotency on the message id)
//!   and its key is queued on the region's bulk queue, an SQS fair queue whose message group is
//!   the project: one worker resolves and materializes it. A project's backlog waits there, and
//!   a quiet project's chunks are served before a flooding one's, so an import neither holds up
//!   live changes nor stalls another import.

use serde::{Deserialize, Serialize};

/// Which way a chunk goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    #[default]
    Live,
    Bulk,
}

impl Way {
    pub fn is_live(&self) -> bool {
        *self == Way::Live
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Way::Live => "live",
            Way::Bulk => "bulk",
        }
    }
}

/// A request with more profiles than this goes the bulk way. mParticle forwards real-time
/// membership changes as they happen, a few users a request; what arrives in large requests is
/// bulk by nature: an audience's initial population, a backlog after a fault or a pause, a
/// standard audience sent whole. The size is the one signal authorize has that needs no read and
/// is the same on every redelivery of a message (the way of a stored message never changes). The
/// feed's first-sync window (§5.3) is not used: it marks adds only, and a connection's first
/// hours carry live changes too.
pub const LIVE_MAX_PROFILES: usize = 100;

/// The way of a membership request with `profiles` profiles.
pub fn way_of_request(profiles: usize, live_max_profiles: usize) -> Way {
    if profiles > live_max_profiles {
        Way::Bulk
    } else {
        Way::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_requests_go_live_and_large_ones_bulk() {
        assert_eq!(way_of_request(1, LIVE_MAX_PROFILES), Way::Live);
        assert_eq!(
            way_of_request(LIVE_MAX_PROFILES, LIVE_MAX_PROFILES),
            Way::Live
        );
        assert_eq!(
            way_of_request(LIVE_MAX_PROFILES + 1, LIVE_MAX_PROFILES),
            Way::Bulk
        );
        assert_eq!(way_of_request(1_000, LIVE_MAX_PROFILES), Way::Bulk);
    }

    #[test]
    fn a_way_is_stored_by_its_name() {
        assert_eq!(serde_json::to_value(Way::Bulk).unwrap(), "bulk");
        assert_eq!(Way::default(), Way::Live);
        assert_eq!(Way::Live.as_str(), "live");
    }
}
