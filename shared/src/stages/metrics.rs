//! Each invocation's metrics as one CloudWatch EMF line on stdout (the format: `domain::emf`).
//!
//! Namespace: the stack's (`METRICS_NAMESPACE`, set by the template); dimensions: `function` and
//! `region` (the stack's data region) on every metric, plus `status` and `outcome` for the two
//! HTTP functions: a short fixed list each, never a project, user or message id. Without a
//! namespace (tests, `scripts/run-local`) nothing is printed.

use std::io::Write;
use std::time::Duration;

use crate::domain::emf::{Record, Unit};
use crate::domain::invocations::{MaterializeBatch, PublishBatch, ResolveBatch};
use crate::domain::protocol::now_ms;
use crate::domain::region::Region;
use crate::stages::http::{HttpReply, Outcome};

/// Where one function's metrics go, and under which names.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: Option<String>,
    function: &'static str,
    region: Region,
}

impl Metrics {
    /// `namespace: None` turns emission off (the records can still be built).
    pub fn new(namespace: Option<String>, function: &'static str, region: Region) -> Self {
        Self {
            namespace,
            function,
            region,
        }
    }

    /// The metrics of one function of the stack `config` describes.
    pub fn for_function(config: &crate::config::Config, function: &'static str) -> Self {
        Self::new(
            config.metrics_namespace.clone(),
            function,
            config.home_region,
        )
    }

    fn record(&self) -> Record {
        Record::new(
            self.namespace.as_deref().unwrap_or("local"),
            now_ms(),
            &[
                ("function", self.function),
                ("region", self.region.as_str()),
            ],
        )
    }

    /// Prints the record as one line, if a namespace is set.
    pub fn emit(&self, record: &Record) {
        if self.namespace.is_some() {
            // One write of the whole line: CloudWatch Logs reads one event per line.
            let mut line = record.to_line();
            line.push('\n');
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
    }

    /// An HTTP request (authorize, query): by status and by outcome.
    pub fn request(&self, reply: &HttpReply, latency: Duration) -> Record {
        let mut r = self
            .record()
            .with_dimension("status", &reply.status.to_string())
            .with_dimension("outcome", reply.outcome.as_str());
        r.count("Requests", 1).values(
            "Latency",
            Unit::Milliseconds,
            [latency.as_secs_f64() * 1000.0],
        );
        if let Outcome::Stored { profiles, chunks } | Outcome::Duplicate { profiles, chunks } =
            reply.outcome
        {
            r.count("Profiles", profiles.into())
                .count("Chunks", chunks.into());
        }
        r
    }

    /// A resolve invocation: chunks, profiles by rung and by skip reason, changes, retries.
    pub fn resolve(&self, b: &ResolveBatch, duration: Duration) -> Record {
        let o = &b.outcomes;
        let mut r = self.record();
        r.count("Chunks", b.chunks)
            .count("ChunksReplayed", b.chunks_replayed)
            .count("ChunksFailed", b.chunks_failed)
            .count("ChunksRetried", b.chunks_retried)
            .count("ProfilesByPartnerId", o.partner_id)
            .count("ProfilesByIdentity", o.identity)
            .count("ProfilesByMpid", o.mpid)
            .count("ProfilesCreated", o.created)
            .count("ProfilesMerged", o.merged)
            .count("SkippedAnonymous", o.anonymous)
            .count("SkippedErased", o.erased)
            .count("SkippedHashedUnusable", o.hashed_unusable)
            .count("SkippedNoIdentity", o.no_identity)
            .count("SkippedTooLong", o.too_long)
            .count("InvalidEmail", o.invalid_email)
            .count("InvalidPhone", o.invalid_phone)
            .count("EntriesUnknownAction", o.unknown_action)
            .count("EntriesMissingAudienceId", o.missing_audience_id)
            .count("AttributeUpdates", o.attribute_updates)
            .count("ChangesHandedOff", b.changes);
        store_and_duration(&mut r, b.store, duration);
        r
    }

    /// A materialize invocation: changes by what they came to, events, clearing, latency.
    pub fn materialize(&self, b: &MaterializeBatch, duration: Duration) -> Record {
        let c = &b.counts;
        let mut r = self.record();
        r.count("Chunks", b.chunks)
            .count("ChunksReplayed", b.chunks_replayed)
            .count("ChunksFailed", b.chunks_failed)
            .count("RecordsRetried", b.records_retried)
            .count("ChangesApplied", c.added + c.removed)
            .count("ChangesNoop", c.noop)
            .count("ChangesDuplicate", c.duplicate)
            .count("ChangesStale", c.stale)
            .count("ChangesArchived", c.archived)
            .count("PartnerSyncEvents", c.added + c.removed)
            .count("MembersAdded", c.added)
            .count("MembersRemoved", c.removed)
            .count("SegmentsCleared", b.segments_cleared)
            .count("MembersCleared", b.members_cleared)
            .values(
                "ChunkLatency",
                Unit::Milliseconds,
                b.chunk_latency_ms.iter().copied(),
            );
        store_and_duration(&mut r, b.store, duration);
        r
    }

    /// A publish invocation: entries put by kind, entry failures, records handed back, the lag
    /// from each event's recorded time to the `PutEvents` that took it, and each way's end to end
    /// latency from our receipt of the change.
    pub fn publish(&self, b: &PublishBatch, duration: Duration) -> Record {
        let mut r = self.record();
        r.count("FeedRecords", b.records)
            .count(
                "Published",
                b.partner_sync + b.profiles_erased + b.segments_cleared,
            )
            .count("PublishedPartnerSync", b.partner_sync)
            .count("PublishedProfileErased", b.profiles_erased)
            .count("PublishedSegmentCleared", b.segments_cleared)
            .count("PublishFailedEntries", b.failed_entries)
            .count("PublishRecordsFailed", b.records_failed)
            .values("PublishLag", Unit::Milliseconds, b.lag_ms.iter().copied())
            // End to end, our receipt to the bus, per way (no per-project dimension).
            .values(
                "FeedLatency",
                Unit::Milliseconds,
                b.feed_latency_ms.iter().copied(),
            )
            .values(
                "FeedLatencyBulk",
                Unit::Milliseconds,
                b.feed_latency_bulk_ms.iter().copied(),
            )
            .values(
                "Duration",
                Unit::Milliseconds,
                [duration.as_secs_f64() * 1000.0],
            );
        r
    }
}

fn store_and_duration(
    r: &mut Record,
    store: crate::domain::invocations::StoreStats,
    duration: Duration,
) {
    r.count("TransactionConflicts", store.conflicts)
        .count("Retries", store.retries)
        .values(
            "Duration",
            Unit::Milliseconds,
            [duration.as_secs_f64() * 1000.0],
        );
}
