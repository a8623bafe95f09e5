//! Import progress of an audience: how many of the membership changes that came the bulk way
//! have been resolved and applied, how fast they are being applied now, and how long the backlog
//! has left at that rate (docs/architecture.md, "Import progress"). Pure.
//!
//! mParticle sends no audience size, so progress is counted from what arrived: **received**
//! (changes in stored bulk chunks), **resolved** (their chunk went through resolve), **applied**
//! (materialized), **skipped** (resolve handed nothing on for them: anonymous users, erased
//! people, unusable entries) and **failed** (their chunk can never be processed). A change is
//! done when applied, skipped or failed; progress is done ÷ received.
//!
//! Exactly once: every count is written in the very request that moves its chunk on (the store's
//! transaction, resolve's and materialize's status change, the failure mark), conditional on the
//! chunk's status, so a redelivery, a replayed record or a retried worker never counts twice.
//! What a chunk still owes each audience rides on its row (`InboxRow::progress`).
//!
//! No hot key: the totals of an audience spread over [`PROGRESS_SHARDS`] items (a chunk counts
//! on the shard of its message id), the rate over [`RATE_SHARDS`] items per time bucket.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Changes a chunk still owes each audience's progress, by audience id.
pub type Owed = BTreeMap<i64, u64>;

/// Items an audience's totals spread over: at 17,000 bulk changes/s in chunks of 101 profiles
/// (the smallest bulk request), 168 chunks/s × 3 counted steps × 2 WCU (transactions) is 1,010
/// WCU/s for one audience; 16 keys keep each at 63 (0.06 of a partition).
pub const PROGRESS_SHARDS: u32 = 16;
/// Items one rate bucket spreads over: only materialize counts there (≤ 168 writes/s, 84 WCU/s
/// per key over 4).
pub const RATE_SHARDS: u32 = 4;
/// The rate is counted per 10 s bucket…
pub const RATE_BUCKET_MS: i64 = 10_000;
/// …and measured over the last 6 of them (a minute), the current one included.
pub const RATE_WINDOW_BUCKETS: i64 = 6;
/// Rate buckets expire after an hour (DynamoDB's time to live): only the last minute is read.
pub const RATE_BUCKET_TTL_SECS: i64 = 3600;
/// Most audiences a chunk may carry for its progress to be counted: materialize's transaction
/// holds the row and, per audience, its totals and its rate (1 + 2 × 49 ≤ 100 items).
pub const MAX_TRACKED_AUDIENCES: usize = 49;

/// The counts of an audience's import (a shard's, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressCounts {
    pub received: u64,
    pub resolved: u64,
    pub skipped: u64,
    pub applied: u64,
    pub failed: u64,
}

impl ProgressCounts {
    /// Changes with nothing left to do.
    pub fn done(&self) -> u64 {
        self.applied + self.skipped + self.failed
    }

    pub fn plus(self, o: ProgressCounts) -> ProgressCounts {
        ProgressCounts {
            received: self.received + o.received,
            resolved: self.resolved + o.resolved,
            skipped: self.skipped + o.skipped,
            applied: self.applied + o.applied,
            failed: self.failed + o.failed,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == ProgressCounts::default()
    }
}

/// What one step of one chunk adds to one audience's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressDelta {
    pub audience_id: i64,
    /// The totals shard counted on ([`shard_of`] the chunk's message).
    pub shard: u32,
    pub counts: ProgressCounts,
    /// When (ms): the shard's `started_ms` / `last_ms`, and the rate bucket of `applied`.
    pub at_ms: i64,
}

impl ProgressDelta {
    /// The rate bucket its applied changes count in, if it applied any.
    pub fn rate_bucket(&self) -> Option<i64> {
        (self.counts.applied > 0).then(|| rate_bucket(self.at_ms))
    }
}

/// The shard a message's chunks count on: a hash of its id, so every step of every chunk of one
/// message lands on one shard, and messages spread evenly.
pub fn shard_of(message_id: &str) -> u32 {
    let digest = Sha256::digest(message_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % PROGRESS_SHARDS
}

/// The rate bucket of a moment.
pub fn rate_bucket(at_ms: i64) -> i64 {
    at_ms.div_euclid(RATE_BUCKET_MS)
}

/// Actions in one DynamoDB transaction at most.
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// Whether a bulk batch's progress can be counted, from what each of its chunks owes: storing it
/// writes every chunk and one totals item per audience in one transaction (≤
/// [`MAX_TRANSACTION_ACTIONS`]), and materializing a chunk its row and two items per audience. A
/// batch past either bound (an audience per profile, say) is stored and processed as any other,
/// uncounted (docs/contract.md §3.5).
pub fn trackable<'a>(chunks: impl IntoIterator<Item = &'a Owed>) -> bool {
    let mut audiences = std::collections::BTreeSet::new();
    let mut count = 0;
    for owed in chunks {
        if owed.len() > MAX_TRACKED_AUDIENCES {
            return false;
        }
        count += 1;
        audiences.extend(owed.keys().copied());
    }
    !audiences.is_empty() && count + audiences.len() <= MAX_TRANSACTION_ACTIONS
}

fn deltas(
    owed: &Owed,
    shard: u32,
    at_ms: i64,
    counts: impl Fn(u64) -> ProgressCounts,
) -> Vec<ProgressDelta> {
    owed.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(&audience_id, &n)| ProgressDelta {
            audience_id,
            shard,
            counts: counts(n),
            at_ms,
        })
        .collect()
}

/// Storing a batch: every tracked chunk's changes received, one delta per audience.
pub fn on_store<'a>(
    message_id: &str,
    received_ms: i64,
    owed: impl IntoIterator<Item = &'a Owed>,
) -> Vec<ProgressDelta> {
    let mut sum = Owed::new();
    for chunk in owed {
        for (&audience, &n) in chunk {
            *sum.entry(audience).or_default() += n;
        }
    }
    deltas(&sum, shard_of(message_id), received_ms, |n| {
        ProgressCounts {
            received: n,
            ..Default::default()
        }
    })
}

/// Resolving a chunk that owed `owed`, handing on `handed` changes per audience: all of them
/// resolved, those not handed on skipped. Returns the deltas and what the chunk owes after (the
/// changes handed on, never more than it owed).
pub fn on_resolve(
    message_id: &str,
    owed: &Owed,
    handed: &Owed,
    at_ms: i64,
) -> (Vec<ProgressDelta>, Owed) {
    let after: Owed = owed
        .iter()
        .map(|(&a, &n)| (a, handed.get(&a).copied().unwrap_or(0).min(n)))
        .collect();
    let deltas = deltas(owed, shard_of(message_id), at_ms, |_| {
        ProgressCounts::default()
    })
    .into_iter()
    .map(|mut d| {
        let n = owed[&d.audience_id];
        d.counts.resolved = n;
        d.counts.skipped = n - after[&d.audience_id];
        d
    })
    .collect();
    (deltas, after)
}

/// Materializing a chunk: what it owed, applied.
pub fn on_materialize(message_id: &str, owed: &Owed, at_ms: i64) -> Vec<ProgressDelta> {
    deltas(owed, shard_of(message_id), at_ms, |n| ProgressCounts {
        applied: n,
        ..Default::default()
    })
}

/// A chunk that can never be processed: what it owed, failed.
pub fn on_fail(message_id: &str, owed: &Owed, at_ms: i64) -> Vec<ProgressDelta> {
    deltas(owed, shard_of(message_id), at_ms, |n| ProgressCounts {
        failed: n,
        ..Default::default()
    })
}

/// Changes per audience among some (audience id, count) pairs.
pub fn owed_of(audience_ids: impl IntoIterator<Item = i64>) -> Owed {
    let mut owed = Owed::new();
    for a in audience_ids {
        *owed.entry(a).or_default() += 1;
    }
    owed
}

/// An audience's progress as stored: its shards' totals summed, the first and latest moment
/// counted, and the applied changes of its recent rate buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressReading {
    pub counts: ProgressCounts,
    pub started_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// (bucket, applied changes), any order.
    pub rate_buckets: Vec<(i64, u64)>,
}

/// An audience's import as the read API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportProgress {
    pub counts: ProgressCounts,
    /// Done ÷ received (1 when nothing is left).
    pub fraction: f64,
    /// Changes still to do.
    pub remaining: u64,
    /// Changes applied per second over the last minute (or since the import began, if later).
    pub rate_per_s: f64,
    /// Seconds to drain what is left at that rate; none when nothing is left or nothing moves.
    pub estimate_s: Option<u64>,
    pub started_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// The rate buckets a reading at `now_ms` needs: the current one and the five before it.
pub fn window_buckets(now_ms: i64) -> std::ops::RangeInclusive<i64> {
    let now = rate_bucket(now_ms);
    now - (RATE_WINDOW_BUCKETS - 1)..=now
}

/// Progress from a reading at `now_ms`; none if nothing ever came the bulk way.
pub fn import_progress(reading: &ProgressReading, now_ms: i64) -> Option<ImportProgress> {
    let counts = reading.counts;
    if counts.received == 0 {
        return None;
    }
    let window = window_buckets(now_ms);
    let applied_recently: u64 = reading
        .rate_buckets
        .iter()
        .filter(|(b, _)| window.contains(b))
        .map(|(_, n)| n)
        .sum();
    let window_start = window.start() * RATE_BUCKET_MS;
    let since = reading
        .started_ms
        .map_or(window_start, |s| s.max(window_start));
    let seconds = ((now_ms - since) as f64 / 1000.0).max(1.0);
    let rate_per_s = applied_recently as f64 / seconds;
    let remaining = counts.received.saturating_sub(counts.done());
    let estimate_s =
        (remaining > 0 && rate_per_s > 0.0).then(|| (remaining as f64 / rate_per_s).ceil() as u64);
    Some(ImportProgress {
        counts,
        fraction: (counts.done().min(counts.received) as f64 / counts.received as f64),
        remaining,
        rate_per_s,
        estimate_s,
        started_ms: reading.started_ms,
        last_ms: reading.last_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(audiences: &[(i64, u64)]) -> Owed {
        audiences.iter().copied().collect()
    }

    #[test]
    fn storing_counts_each_audience_once_over_the_batchs_chunks() {
        let a: Owed = [(7, 3), (8, 1)].into();
        let b: Owed = [(7, 2)].into();
        let d = on_store("m-1", 5_000, [&a, &b]);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].audience_id, d[0].counts.received), (7, 5));
        assert_eq!((d[1].audience_id, d[1].counts.received), (8, 1));
        assert!(
            d.iter()
                .all(|d| d.shard == shard_of("m-1") && d.at_ms == 5_000)
        );
        assert_eq!(d[0].rate_bucket(), None);
    }

    #[test]
    fn resolving_splits_what_was_owed_into_handed_on_and_skipped() {
        let owed: Owed = [(7, 5), (8, 2)].into();
        // 7: four handed on; 8: none (anonymous); 9: handed on but never owed (ignored).
        let handed: Owed = [(7, 4), (9, 1)].into();
        let (d, after) = on_resolve("m-1", &owed, &handed, 1);
        assert_eq!(after, [(7, 4), (8, 0)].into());
        let by: BTreeMap<i64, ProgressCounts> =
            d.iter().map(|d| (d.audience_id, d.counts)).collect();
        assert_eq!((by[&7].resolved, by[&7].skipped), (5, 1));
        assert_eq!((by[&8].resolved, by[&8].skipped), (2, 2));
        assert!(!by.contains_key(&9));
        // More handed on than owed (two userIdTypes on one entry) never owes more.
        let (_, after) = on_resolve("m-1", &[(7, 1)].into(), &[(7, 3)].into(), 1);
        assert_eq!(after[&7], 1);
    }

    #[test]
    fn materializing_applies_and_failing_fails_what_is_owed_and_nothing_else() {
        let owed: Owed = [(7, 4), (8, 0)].into();
        let d = on_materialize("m-1", &owed, 25_000);
        assert_eq!(d.len(), 1, "an audience owed nothing is not written");
        assert_eq!(d[0].counts.applied, 4);
        assert_eq!(d[0].rate_bucket(), Some(2));
        let f = on_fail("m-1", &owed, 25_000);
        assert_eq!((f[0].counts.failed, f[0].rate_bucket()), (4, None));
    }

    #[test]
    fn a_batch_is_tracked_only_while_its_writes_fit_one_transaction() {
        assert!(trackable(&[chunk(&[(1, 5)]), chunk(&[(1, 5), (2, 1)])]));
        assert!(!trackable(&[chunk(&[])]), "nothing to count");
        let wide: Vec<(i64, u64)> = (0..50).map(|a| (a, 1)).collect();
        assert!(!trackable(&[chunk(&wide)]));
        assert!(trackable(&[chunk(&wide[..49])]));
        let many: Vec<Owed> = (0..99).map(|_| chunk(&[(1, 1)])).collect();
        assert!(trackable(&many));
        let mut too_many = many.clone();
        too_many.push(chunk(&[(2, 1)]));
        assert!(!trackable(&too_many));
    }

    #[test]
    fn progress_is_done_over_received_and_the_estimate_drains_at_the_last_minutes_rate() {
        let now = 1_000_000;
        let reading = ProgressReading {
            counts: ProgressCounts {
                received: 10_000,
                resolved: 6_000,
                skipped: 500,
                applied: 3_500,
                failed: 0,
            },
            started_ms: Some(now - 600_000),
            last_ms: Some(now - 1_000),
            // The window: the five buckets before the current one and the current one so far
            // (50 s here, `now` opening its bucket); 3,000 applied in it, an older bucket out.
            rate_buckets: vec![
                (rate_bucket(now), 1_000),
                (rate_bucket(now) - 5, 2_000),
                (rate_bucket(now) - 6, 9_999),
            ],
        };
        let p = import_progress(&reading, now).unwrap();
        assert_eq!(p.remaining, 6_000);
        assert!((p.fraction - 0.4).abs() < 1e-9);
        assert!((p.rate_per_s - 60.0).abs() < 1e-9, "{}", p.rate_per_s);
        assert_eq!(p.estimate_s, Some(100));
    }

    #[test]
    fn a_young_import_measures_its_rate_since_it_began_and_a_stalled_one_has_no_estimate() {
        let now = 1_000_000;
        let mut reading = ProgressReading {
            counts: ProgressCounts {
                received: 1_000,
                applied: 200,
                ..Default::default()
            },
            started_ms: Some(now - 10_000),
            last_ms: Some(now),
            rate_buckets: vec![(rate_bucket(now), 200)],
        };
        let p = import_progress(&reading, now).unwrap();
        assert!((p.rate_per_s - 20.0).abs() < 1e-9);
        assert_eq!(p.estimate_s, Some(40));
        reading.rate_buckets.clear();
        assert_eq!(import_progress(&reading, now).unwrap().estimate_s, None);
        reading.counts.applied = 1_000;
        let done = import_progress(&reading, now).unwrap();
        assert_eq!(
            (done.remaining, done.estimate_s, done.fraction),
            (0, None, 1.0)
        );
        assert_eq!(import_progress(&ProgressReading::default(), now), None);
    }
}
