//! The stages and their Lambda edges: the mParticle endpoint (authorize), resolve, materialize,
//! the read API (query, with its preview, console and Lambda edge), the engage feed's publisher,
//! and how stream records reach them. They do I/O through the ports and the store; no stage
//! imports another (what two share lives in `domain`, `ports` or `store`), but authorize hands
//! an erasure to `erasure` and every stage reports through `metrics`.

pub mod bulk;
pub mod endpoint;
pub mod erasure;
pub mod holders_backfill;
pub mod http;
pub mod materialize;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod query;
pub mod resolve;
pub mod stream;
