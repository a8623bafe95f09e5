//! The common crate of the mParticle audience import: everything the Lambda binaries share.
//!
//! Pure logic (protocol, auth checks, batch chunking, identity ladder, segment state machine) has
//! no AWS types; `store` is the DynamoDB adapter; `endpoint` and the handlers are the Lambda edges.

pub mod auth;
pub mod batch;
pub mod changes;
pub mod clients;
pub mod config;
pub mod endpoint;
pub mod identity;
pub mod keys;
pub mod materialize;
pub mod pipeline;
pub mod protocol;
pub mod query;
pub mod region;
pub mod resolve;
pub mod segment_state;
pub mod store;
pub mod stream;
pub mod tables;

pub use region::Region;
