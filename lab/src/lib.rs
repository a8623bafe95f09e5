//! The bench lab: what `scripts/bench` measures with, kept apart from the local stack (`local/`)
//! and from the product.
//!
//! - [`workload`]: the deterministic membership batches the bench and the tests send.
//! - [`meter`], [`key_meter`]: capacity as AWS bills it, per call and per partition key.
//! - [`heat`]: prices each key's load against a partition's limits.
//! - [`runtime_api`]: an emulated Lambda Runtime API, to time a function binary's cold start.
//! - [`fairness`]: live changes beside another project's import, and two importers at once.

pub mod fairness;
pub mod heat;
pub mod key_meter;
pub mod meter;
pub mod runtime_api;
pub mod workload;
