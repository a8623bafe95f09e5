//! The common crate of the mParticle audience import: everything the Lambda binaries share.
//!
//! - [`domain`]: the pure core (protocol, auth checks, batch chunking, identity ladder, segment
//!   state machine, changes, sync-log counts): no AWS types, no I/O.
//! - [`store`]: the DynamoDB adapter (tables, keys, clients, every read and write).
//! - [`stages`]: authorize's endpoint, resolve, materialize and the read API, with their Lambda
//!   edges; they use the domain and the store, never the other way round.
//!
//! The modules are re-exported at the crate root (`shared::protocol`, `shared::resolve`, …).

//!
//! Without the default feature `aws` only [`domain`] is built (no AWS SDK): the fuzz target's view.

#[cfg(feature = "aws")]
pub mod config;
pub mod domain;
#[cfg(feature = "aws")]
pub mod stages;
#[cfg(feature = "aws")]
pub mod store;

pub use domain::{
    auth, batch, calendar, changes, chart, emf, erasure, identity, pages, protocol, region,
    round_trip, segment_state, sync_log,
};
pub use region::Region;
#[cfg(feature = "aws")]
pub use stages::{
    console, endpoint, http, materialize, metrics, pipeline, query, query_edge, resolve, stream,
};
#[cfg(feature = "aws")]
pub use store::{clients, keys, tables};
