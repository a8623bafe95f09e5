//! Import progress items of the `segments` table (`domain::progress`): per audience,
//! [`PROGRESS_SHARDS`] totals items and, beside the first [`RATE_SHARDS`] of them, 10 s rate
//! buckets of applied changes that expire after an hour.

use super::UpdateSpec;
use crate::domain::progress::{
    PROGRESS_SHARDS, ProgressCounts, ProgressDelta, ProgressReading, RATE_BUCKET_TTL_SECS,
    RATE_SHARDS, window_buckets,
};
use crate::store::keys::{self, segments as k};
use crate::store::{Item, get_n, n, s};

const RECEIVED: &str = "received";
const RESOLVED: &str = "resolved";
const SKIPPED: &str = "skipped";
const APPLIED: &str = "applied";
const FAILED: &str = "failed";
const STARTED_MS: &str = "started_ms";
const LAST_MS: &str = "last_ms";

fn key(pk: String, sk: String) -> Item {
    Item::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

/// The totals item of one shard.
pub fn totals_key(project_id: &str, audience_id: i64, shard: u32) -> Item {
    key(
        k::progress_pk(project_id, audience_id, shard),
        k::PROGRESS_SK.to_owned(),
    )
}

/// One rate bucket of one rate shard (which lives beside the totals of the shard of its number).
pub fn rate_key(project_id: &str, audience_id: i64, rate_shard: u32, bucket: i64) -> Item {
    key(
        k::progress_pk(project_id, audience_id, rate_shard),
        k::rate_sk(bucket),
    )
}

/// A delta added to its shard's totals: the counts it moves, when the shard was first and last
/// counted.
pub fn totals_update(d: &ProgressDelta) -> UpdateSpec {
    let c = d.counts;
    UpdateSpec::new(
        "ADD #rec :rec, #res :res, #skip :skip, #app :app, #fail :fail \
         SET #last = :at, #started = if_not_exists(#started, :at)",
    )
    .name("#rec", RECEIVED)
    .name("#res", RESOLVED)
    .name("#skip", SKIPPED)
    .name("#app", APPLIED)
    .name("#fail", FAILED)
    .name("#last", LAST_MS)
    .name("#started", STARTED_MS)
    .value(":rec", n(c.received))
    .value(":res", n(c.resolved))
    .value(":skip", n(c.skipped))
    .value(":app", n(c.applied))
    .value(":fail", n(c.failed))
    .value(":at", n(d.at_ms))
}

/// A delta's applied changes added to its rate bucket, on the rate shard of its totals shard;
/// none if it applied nothing.
pub fn rate_update(project_id: &str, d: &ProgressDelta) -> Option<(Item, UpdateSpec)> {
    let bucket = d.rate_bucket()?;
    let update = UpdateSpec::new("ADD #app :app SET #exp = :exp")
        .name("#app", APPLIED)
        .name("#exp", k::EXPIRES_AT)
        .value(":app", n(d.counts.applied))
        .value(":exp", n(d.at_ms / 1000 + RATE_BUCKET_TTL_SECS));
    Some((
        rate_key(project_id, d.audience_id, d.shard % RATE_SHARDS, bucket),
        update,
    ))
}

/// Every key a reading at `now_ms` needs: the totals shards, then the window's rate buckets.
pub fn reading_keys(project_id: &str, audience_id: i64, now_ms: i64) -> Vec<Item> {
    let mut keys: Vec<Item> = (0..PROGRESS_SHARDS)
        .map(|shard| totals_key(project_id, audience_id, shard))
        .collect();
    for bucket in window_buckets(now_ms) {
        keys.extend((0..RATE_SHARDS).map(|r| rate_key(project_id, audience_id, r, bucket)));
    }
    keys
}

/// A reading from the items [`reading_keys`] named (absent ones left out).
pub fn reading(items: impl IntoIterator<Item = Item>) -> ProgressReading {
    let mut out = ProgressReading::default();
    let count = |item: &Item, name: &str| get_n(item, name).unwrap_or(0).max(0) as u64;
    for item in items {
        let sk = item.get(keys::SK).and_then(|v| v.as_s().ok()).cloned();
        match sk.as_deref() {
            Some(k::PROGRESS_SK) => {
                out.counts = out.counts.plus(ProgressCounts {
                    received: count(&item, RECEIVED),
                    resolved: count(&item, RESOLVED),
                    skipped: count(&item, SKIPPED),
                    applied: count(&item, APPLIED),
                    failed: count(&item, FAILED),
                });
                let started = get_n(&item, STARTED_MS);
                out.started_ms = match (out.started_ms, started) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                out.last_ms = out.last_ms.max(get_n(&item, LAST_MS));
            }
            Some(sk) => {
                if let Some(bucket) = sk.strip_prefix("R#").and_then(|b| b.parse().ok()) {
                    out.rate_buckets.push((bucket, count(&item, APPLIED)));
                }
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_rate_buckets_read_back_summed() {
        let mut a = totals_key("P", 7, 0);
        a.insert(RECEIVED.into(), n(10));
        a.insert(APPLIED.into(), n(4));
        a.insert(STARTED_MS.into(), n(500));
        a.insert(LAST_MS.into(), n(900));
        let mut b = totals_key("P", 7, 3);
        b.insert(RECEIVED.into(), n(5));
        b.insert(SKIPPED.into(), n(1));
        b.insert(STARTED_MS.into(), n(300));
        b.insert(LAST_MS.into(), n(700));
        let mut r = rate_key("P", 7, 1, 42);
        r.insert(APPLIED.into(), n(4));
        let reading = reading([a, b, r]);
        assert_eq!(reading.counts.received, 15);
        assert_eq!(reading.counts.done(), 5);
        assert_eq!(
            (reading.started_ms, reading.last_ms),
            (Some(300), Some(900))
        );
        assert_eq!(reading.rate_buckets, vec![(42, 4)]);
    }

    #[test]
    fn a_reading_names_every_shard_and_the_windows_buckets_within_one_transaction() {
        let keys = reading_keys("P", 7, 1_000_000);
        assert_eq!(keys.len(), 16 + 6 * 4);
        assert!(keys.len() <= 100, "one TransactGetItems");
        let d = ProgressDelta {
            audience_id: 7,
            shard: 13,
            counts: ProgressCounts {
                applied: 3,
                ..Default::default()
            },
            at_ms: 1_000_000,
        };
        let (rate, _) = rate_update("P", &d).unwrap();
        assert!(
            keys.contains(&rate),
            "the bucket it writes is one the reading reads"
        );
    }
}
