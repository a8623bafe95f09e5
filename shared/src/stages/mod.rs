//! The stages and their Lambda edges: the mParticle endpoint (authorize), resolve, materialize,
//! the read API (query), the engage feed's publisher, and how stream records reach them. They do I/O through the store.

pub mod console;
pub mod endpoint;
pub mod erasure;
pub mod http;
pub mod materialize;
pub mod metrics;
pub mod pipeline;
pub mod preview;
pub mod publish;
pub mod query;
pub mod query_edge;
pub mod resolve;
pub mod stream;
