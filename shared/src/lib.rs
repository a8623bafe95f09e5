//! The common crate of the mParticle audience import: everything the Lambda binaries share.
//!
//! Pure logic (protocol, identity ladder, segment state machine) has no AWS types; the
//! DynamoDB adapter and the Lambda edges live in their own modules.

pub mod clients;
pub mod keys;
pub mod protocol;
pub mod region;
pub mod tables;

pub use region::Region;
