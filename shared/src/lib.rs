//! The common crate of the mParticle audience import: everything the Lambda binaries share.
//!
//! - [`domain`]: the pure core (protocol, auth checks, batch chunking, identity ladder, segment
//!   state machine, changes, sync-log counts): no AWS types, no I/O.
//! - [`store`]: the DynamoDB adapter (tables, keys, clients, every read and write).
//! - [`bus`]: the EventBridge adapter the publisher puts the engage feed on.
//! - [`sdk`]: the SDK configuration local stand-ins are reached with (imports nothing of ours).
//! - [`stages`]: authorize's endpoint, resolve, materialize and the read API, with their Lambda
//!   edges; they use the domain and the store, never the other way round.
//!
//! Paths name the layer (`shared::domain::protocol`, `shared::stages::resolve`,
//! `shared::store::keys`): nothing is re-exported at the crate root.
//!
//! Without the default feature `aws` only [`domain`] is built (no AWS SDK): the fuzz target's view.

#[cfg(feature = "aws")]
pub mod bulk;
#[cfg(feature = "aws")]
pub mod bus;
#[cfg(feature = "aws")]
pub mod config;
pub mod domain;
pub mod ports;
#[cfg(feature = "aws")]
pub mod sdk;
#[cfg(test)]
mod sim;
#[cfg(feature = "aws")]
pub mod stages;
#[cfg(feature = "aws")]
pub mod store;
#[cfg(feature = "aws")]
pub mod twin;
