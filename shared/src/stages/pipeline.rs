//! How the stages are wired: the event-source-mapping filters, shared by template.yaml and the
//! local runner so that both deliver exactly the same records.

/// resolve ← inbox: new chunks of the live way (a bulk row carries `way`; `domain::ways`).
pub const RESOLVE_INBOX_FILTER: &str = r#"{"eventName":["INSERT"],"dynamodb":{"NewImage":{"status":{"S":["received"]},"way":{"S":[{"exists":false}]}}}}"#;

/// materialize ← inbox: live chunks whose changes are resolved.
pub const MATERIALIZE_INBOX_FILTER: &str = r#"{"eventName":["MODIFY"],"dynamodb":{"NewImage":{"status":{"S":["resolved"]},"way":{"S":[{"exists":false}]}}}}"#;

/// materialize ← segments: a removed segment whose membership must be cleared.
pub const MATERIALIZE_SEGMENTS_FILTER: &str =
    r#"{"eventName":["INSERT","MODIFY"],"dynamodb":{"NewImage":{"status":{"S":["archiving"]}}}}"#;

/// publish ← events: new Partner Sync events of the live way and feed notices (never their
/// deletions). A bulk event carries `way` and is the other mapping's, so a live change's event
/// never waits behind an import's: this mapping's reader passes over them without an invocation.
pub const PUBLISH_EVENTS_FILTER: &str = r#"{"eventName":["INSERT"],"dynamodb":{"NewImage":{"event":{"S":["Partner Sync","Profile Erased","Segment Cleared"]},"way":{"S":[{"exists":false}]}}}}"#;

/// publish ← events, the bulk way's mapping (the stream's second reader): new Partner Sync
/// events of imports.
pub const PUBLISH_BULK_EVENTS_FILTER: &str = r#"{"eventName":["INSERT"],"dynamodb":{"NewImage":{"event":{"S":["Partner Sync"]},"way":{"S":["bulk"]}}}}"#;

/// Records per publish invocation: events are small (under 1 KB), and ten `PutEvents` calls of
/// ten entries each carry a batch.
pub const PUBLISH_BATCH_SIZE: usize = 100;

/// Records per invocation: inbox rows are large (up to ~300 KB), so batches stay small.
pub const STREAM_BATCH_SIZE: usize = 10;

/// Concurrent batches per stream shard on the inbox mappings (Lambda's maximum). Chunks are keyed
/// over many partition keys, and Lambda keeps order only per partition key, so they run in parallel.
pub const STREAM_PARALLELIZATION_FACTOR: u32 = 10;
