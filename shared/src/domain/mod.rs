//! The pure core: protocol, credentials, chunking, the identity ladder, the segment state
//! machine, membership changes, sync-log counts, the metrics line format (EMF) and the console's pages
//! and charts (HTML from the read API's views). Plain functions over plain types: no AWS
//! types, no I/O, and nothing here imports the stages or the store.

pub mod auth;
pub mod batch;
pub mod calendar;
pub mod changes;
pub mod chart;
pub mod emf;
pub mod erasure;
pub mod feed;
pub mod identity;
pub mod invocations;
pub mod pages;
pub mod profile_merge;
pub mod progress;
pub mod protocol;
pub mod records;
pub mod region;
pub mod resolution;
pub mod round_trip;
pub mod segment_state;
pub mod sync_log;
pub mod views;
pub mod ways;
