//! Every DynamoDB key and attribute name, and the functions that build key values, in one place.
//!
//! All keys carry the project id first, so no query can reach another project's data.
//! Timestamps inside sort keys are zero-padded to 13 digits so that string order is time order.

/// Generic key attribute names used by every table.
pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// Table `projects`: one item per project.
pub mod projects {
    pub const PROJECT_ID: &str = "project_id";
}

/// Table `inbox`: one item per stored chunk of a membership request; doubles as the sync-log row.
///
/// The partition key spreads one project's chunks over [`INBOX_LANES`](inbox::INBOX_LANES) keys, so
/// their stream records are independent and Lambda may process them in parallel (it keeps order
/// only per partition key); the sync log reads them per project through [`BY_RECEIVED`](inbox::BY_RECEIVED).
pub mod inbox {
    use sha2::{Digest, Sha256};

    /// GSI listing a project's sync log newest first: `received_shard`, `received_key`. Each
    /// project's rows spread over [`RECEIVED_SHARDS`] keys (three index writes per chunk would
    /// otherwise all land on one key per project); the sync log merges them by time key.
    pub const BY_RECEIVED: &str = "by_received_shard";
    pub const RECEIVED_SHARD: &str = "received_shard";
    pub const PROJECT_ID: &str = "project_id";
    pub const RECEIVED_KEY: &str = "received_key";
    /// Index keys per project of the sync log: at 17,000 changes/s in chunks of 100 profiles,
    /// 3 index writes per chunk are 510 WCU/s per project; 16 keys keep each under 0.05 of a
    /// partition (docs/architecture.md, capacity model).
    pub const RECEIVED_SHARDS: u32 = 16;
    pub const STATUS: &str = "status";
    pub const EXPIRES_AT: &str = "expires_at";

    /// Partition keys per project: stream lanes a project's chunks spread over.
    pub const INBOX_LANES: u32 = 256;

    /// The lane of one chunk: a hash of its message id and index, so a redelivery of the same
    /// message hits the same keys (idempotency) and different chunks land on different lanes.
    pub fn lane(message_id: &str, chunk: u32) -> u32 {
        let digest = Sha256::new()
            .chain_update(message_id.as_bytes())
            .chain_update(chunk.to_be_bytes())
            .finalize();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % INBOX_LANES
    }

    /// `<project>#<lane, 2 hex digits>`.
    pub fn pk(project_id: &str, message_id: &str, chunk: u32) -> String {
        format!("{project_id}#{:02x}", lane(message_id, chunk))
    }

    /// `<message id>#<chunk index>`: deterministic, so a redelivered message hits the same keys.
    pub fn sk(message_id: &str, chunk: u32) -> String {
        format!("{message_id}#{chunk:04}")
    }

    /// `<project>#<shard, 2 hex digits>`: the sync-log index key of one chunk, from its lane (so
    /// a redelivery writes the same key).
    pub fn received_shard(project_id: &str, message_id: &str, chunk: u32) -> String {
        received_shard_key(project_id, lane(message_id, chunk) % RECEIVED_SHARDS)
    }

    pub fn received_shard_key(project_id: &str, shard: u32) -> String {
        format!("{project_id}#{shard:02x}")
    }

    pub fn received_key(received_ms: i64, message_id: &str, chunk: u32) -> String {
        format!("{:013}#{message_id}#{chunk:04}", received_ms.max(0))
    }
}

/// Table `profiles`: profile items and identity claims.
pub mod profiles {
    /// A profile, addressed by its CleverTap ID (kept exactly as given).
    pub fn profile_pk(project_id: &str, clevertap_id: &str) -> String {
        format!("P#{project_id}#{clevertap_id}")
    }

    /// The claim that an Identity belongs to one profile; created with a conditional write.
    pub fn identity_pk(project_id: &str, identity: &str) -> String {
        format!("I#{project_id}#{identity}")
    }

    /// The holders of one email or phone (`kind`): the CleverTap IDs of the profiles that were
    /// given it, kept in the table itself so an erasure reads them strongly consistent; the only
    /// way from an email or phone to its profiles (the table has no index).
    pub fn holders_pk(project_id: &str, kind: &str, value: &str) -> String {
        format!("H#{project_id}#{kind}#{value}")
    }

    /// Attribute of a holders item: the CleverTap IDs (a string set).
    pub const HOLDERS: &str = "cts";

    /// A tombstone: something of an erased person, by its salted hash (`domain::erasure`).
    pub fn tombstone_pk(project_id: &str, hash: &str) -> String {
        format!("T#{project_id}#{hash}")
    }
}

/// Table `segments`: segment items of a project, and the shards of their counters and of the
/// project's monthly usage.
///
/// Counters are sharded so that no single item is touched by every writer of one audience: each
/// membership transaction updates one shard picked at random, reads sum the shards. Every shard
/// has a partition key of its own, so shards also spread over DynamoDB partitions.
pub mod segments {
    pub fn pk(project_id: &str) -> String {
        project_id.to_owned()
    }

    pub const SEGMENT_PREFIX: &str = "S#";

    /// Shards per segment counter (`member_count`, `added_total`, `removed_total`).
    pub const COUNTER_SHARDS: u32 = 16;
    /// Shards per monthly usage counter (`partner_sync_events`).
    pub const USAGE_SHARDS: u32 = 16;
    /// Per-day attributes a counter shard carried before day items (`DAY_SK_PREFIX`) existed,
    /// `<prefix>YYYY-MM-DD` (UTC): still summed into a segment's history, never written.
    pub const DAY_ADDED: &str = "added_on_";
    pub const DAY_REMOVED: &str = "removed_on_";
    pub const DAY_CLEARED: &str = "cleared_on_";
    /// Sort key of every counter shard item (each shard has its own partition key).
    pub const SHARD_SK: &str = "shard";
    /// Sort key prefix of a counter shard's per-day tally items (`D#YYYY-MM-DD`), beside the
    /// shard under its partition key: kept out of the shard item itself, which every membership
    /// transaction updates and which would otherwise grow by a day's attributes every day
    /// (UpdateItem is billed on the whole item).
    pub const DAY_SK_PREFIX: &str = "D#";

    pub fn day_sk(day: &str) -> String {
        format!("{DAY_SK_PREFIX}{day}")
    }

    pub fn segment_sk(partner_segment_id: i64) -> String {
        format!("{SEGMENT_PREFIX}{partner_segment_id}")
    }

    /// `C#<project>#<audience id>#<shard>`: one shard of a segment's counters.
    pub fn counter_shard_pk(project_id: &str, partner_segment_id: i64, shard: u32) -> String {
        format!("C#{project_id}#{partner_segment_id}#{shard:02}")
    }

    /// `E#<project>`: the project's erasure audit rows, one per request (`E#<request id>`).
    pub fn erasure_pk(project_id: &str) -> String {
        format!("E#{project_id}")
    }

    pub fn erasure_sk(request_id: &str) -> String {
        format!("{ERASURE_AUDIT_PREFIX}{request_id}")
    }

    /// What an audit row's sort key begins with (the partition also holds when each request
    /// began, `B#<request id>`).
    pub const ERASURE_AUDIT_PREFIX: &str = "E#";

    /// `B#<request id>`: when an erasure request began, with its cut-off (kept for its retries).
    pub fn erasure_begun_sk(request_id: &str) -> String {
        format!("B#{request_id}")
    }

    /// `U#<project>#<YYYY-MM>#<shard>`: one shard of a month's usage.
    pub fn usage_shard_pk(project_id: &str, month: &str, shard: u32) -> String {
        format!("{}{month}#{shard:02}", usage_pk_prefix(project_id))
    }

    /// `G#<project>#<audience id>#<shard>`: one shard of an audience's import progress
    /// (`domain::progress`); its totals under [`PROGRESS_SK`], its rate buckets beside them.
    pub fn progress_pk(project_id: &str, audience_id: i64, shard: u32) -> String {
        format!("G#{project_id}#{audience_id}#{shard:02}")
    }

    /// Sort key of a progress shard's totals.
    pub const PROGRESS_SK: &str = "progress";

    /// `R#<bucket, 13 digits>`: a rate bucket's applied changes, beside a progress shard's totals
    /// (expires by `expires_at`, the table's time to live).
    pub fn rate_sk(bucket: i64) -> String {
        format!("R#{:013}", bucket.max(0))
    }

    /// Time to live of the table's rate buckets.
    pub const EXPIRES_AT: &str = "expires_at";

    /// What the keys of every usage shard of a project begin with.
    pub fn usage_pk_prefix(project_id: &str) -> String {
        format!("U#{project_id}#")
    }
}

/// Table `memberships`: one item per (segment, profile), kept as a tombstone after removal so
/// that late, older changes can still be recognised as stale.
///
/// A segment's rows spread over `buckets` partition keys, the bucket derived from the CleverTap
/// ID ([`bucket`]), so one audience's first sync is not capped by one partition. The count is
/// fixed when the segment is first activated and recorded on it (`buckets`); segments created
/// before buckets existed have none recorded and keep one bucket, whose key is the plain
/// `<project>#<audience>` (so no row ever moves).
pub mod memberships {

    /// Buckets a new segment gets: its busiest key then takes 1/64 of a first sync's
    /// membership units (≈ 0.62 of a partition at 17,000 changes/s; docs/architecture.md).
    pub const DEFAULT_BUCKETS: u32 = 64;
    /// The most buckets a segment may have (paging walks them; see `store::reads`).
    pub const MAX_BUCKETS: u32 = 256;

    /// The bucket of a profile in a segment of `buckets` buckets: stable forever (a hash of the
    /// CleverTap ID), so a profile's row and events always have the same key.
    pub fn bucket(clevertap_id: &str, buckets: u32) -> u32 {
        crate::domain::records::bucket_of(clevertap_id, buckets)
    }

    /// The partition key of one bucket: `<project>#<audience>` for a one-bucket segment,
    /// `<project>#<audience>#b<bucket>` otherwise (an audience id is a number, so `#b` cannot
    /// come from it).
    pub fn bucket_pk(
        project_id: &str,
        partner_segment_id: i64,
        buckets: u32,
        bucket: u32,
    ) -> String {
        if buckets <= 1 {
            format!("{project_id}#{partner_segment_id}")
        } else {
            format!("{project_id}#{partner_segment_id}#b{bucket}")
        }
    }

    /// The partition key of a profile's row in a segment of `buckets` buckets.
    pub fn pk(
        project_id: &str,
        partner_segment_id: i64,
        buckets: u32,
        clevertap_id: &str,
    ) -> String {
        bucket_pk(
            project_id,
            partner_segment_id,
            buckets,
            bucket(clevertap_id, buckets),
        )
    }

    pub fn sk(clevertap_id: &str) -> String {
        clevertap_id.to_owned()
    }

    /// Whether the pair ever raised a Partner Sync with Action Added / Removed: Find People of a
    /// bucketed segment reads these from the rows (its events carry no `by_segment` key).
    pub const EVER_ADDED: &str = "ever_added";
    pub const EVER_REMOVED: &str = "ever_removed";
}

/// Table `events`: Partner Sync events per profile, newest last in key order.
pub mod events {
    /// GSI answering Find People: profiles with a Partner Sync for a segment.
    pub const BY_SEGMENT: &str = "by_segment";
    pub const SEGMENT_KEY: &str = "segment_key";
    pub const PROFILE_KEY: &str = "profile_key";
    pub const ACTION: &str = "action";
    pub const CLEVERTAP_ID: &str = "clevertap_id";
    /// What the item is: "Partner Sync", or a feed notice's kind (`domain::feed::FeedKind`).
    pub const EVENT: &str = "event";
    /// `bulk` on an event of the bulk way (absent on the live way's): which feed mapping
    /// publishes it.
    pub const WAY: &str = "way";
    /// When authorize received the change's request (ms): where the feed's end-to-end latency
    /// counts from.
    pub const RECEIVED_MS: &str = "received_ms";
    /// When materialize wrote the event (ms): where the feed's publish lag counts from.
    pub const RECORDED_MS: &str = "recorded_ms";
    /// The change's version (`MembershipChange::version`): the feed's per-profile order.
    pub const VERSION: &str = "version";
    /// Whether the change is part of its segment's initial population (`domain::feed`).
    pub const INITIAL_SYNC: &str = "initial_sync";
    /// When the segment was last activated (mParticle time of its connect).
    pub const ACTIVATED_MS: &str = "activated_ms";
    /// A notice's rendered feed detail (JSON).
    pub const DETAIL: &str = "detail";
    /// TTL (epoch seconds) of notice items; Partner Sync events carry none.
    pub const EXPIRES_AT: &str = "expires_at";
    pub const NOTICE_SK: &str = "notice";

    /// What every feed notice's key starts with: `~` never starts a project id, so no
    /// profile's key does (the erase role may put only under it).
    pub const NOTICE_PREFIX: &str = "~N#";

    pub fn notice_pk(project_id: &str, event_id: &str) -> String {
        format!("{NOTICE_PREFIX}{project_id}#{event_id}")
    }

    pub fn pk(project_id: &str, clevertap_id: &str) -> String {
        format!("{project_id}#{clevertap_id}")
    }

    pub fn sk(ts_ms: i64, partner_segment_id: i64, change_id: &str) -> String {
        format!("{:013}#{partner_segment_id}#{change_id}", ts_ms.max(0))
    }

    /// The segment an event's sort key names (`None`: not an event's).
    pub fn segment_of_sk(sk: &str) -> Option<i64> {
        sk.split('#').nth(1)?.parse().ok()
    }

    /// The Find People key of one bucket of a segment: the same buckets as its memberships
    /// (`super::memberships::bucket_pk`), so one audience's events spread like its rows.
    pub fn segment_key(
        project_id: &str,
        partner_segment_id: i64,
        buckets: u32,
        bucket: u32,
    ) -> String {
        super::memberships::bucket_pk(project_id, partner_segment_id, buckets, bucket)
    }

    /// Grouped by profile so Find People can page by CleverTap ID and list each profile once.
    pub fn profile_key(clevertap_id: &str, ts_ms: i64, change_id: &str) -> String {
        format!("{clevertap_id}#{:013}#{change_id}", ts_ms.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_keeps_the_key_segments_always_had() {
        assert_eq!(memberships::pk("p", 7, 1, "anyone"), "p#7");
        assert_eq!(memberships::bucket("anyone", 1), 0);
        assert_eq!(events::segment_key("p", 7, 1, 0), "p#7");
    }

    #[test]
    fn buckets_are_stable_spread_and_in_range() {
        let b = memberships::DEFAULT_BUCKETS;
        assert_eq!(
            memberships::bucket("ct-1", b),
            memberships::bucket("ct-1", b)
        );
        let mut per_bucket = vec![0u32; b as usize];
        for i in 0..6_400 {
            per_bucket[memberships::bucket(&format!("ct-{i}"), b) as usize] += 1;
        }
        // 100 expected per bucket: every bucket is used, none is twice as busy as the mean.
        assert!(
            per_bucket.iter().all(|n| (40..200).contains(n)),
            "{per_bucket:?}"
        );
        assert_eq!(
            memberships::pk("p", 7, b, "ct-1"),
            format!("p#7#b{}", memberships::bucket("ct-1", b))
        );
        assert_eq!(
            events::segment_key("p", 7, b, memberships::bucket("ct-1", b)),
            memberships::pk("p", 7, b, "ct-1")
        );
    }

    #[test]
    fn sync_log_shards_are_stable_and_per_project() {
        let a = inbox::received_shard("p", "m", 3);
        assert_eq!(a, inbox::received_shard("p", "m", 3));
        assert!(a.starts_with("p#") && a.len() == 4);
        let shards: std::collections::HashSet<String> = (0..200)
            .map(|c| inbox::received_shard("p", "m", c))
            .collect();
        assert_eq!(shards.len(), inbox::RECEIVED_SHARDS as usize);
    }

    #[test]
    fn time_keys_sort_as_time() {
        let a = inbox::received_key(999, "m", 0);
        let b = inbox::received_key(1_000, "m", 0);
        assert!(a < b);
        assert!(events::sk(5, 1, "x") < events::sk(40, 1, "x"));
    }

    #[test]
    fn inbox_lanes_are_stable_and_spread() {
        assert_eq!(inbox::pk("p", "m", 3), inbox::pk("p", "m", 3));
        let lanes: std::collections::HashSet<String> =
            (0..64).map(|c| inbox::pk("p", "m", c)).collect();
        assert!(lanes.len() > 40, "64 chunks of one message use many lanes");
        assert!(lanes.iter().all(|l| l.starts_with("p#") && l.len() == 4));
        assert!((0..1000).all(|c| inbox::lane("x", c) < inbox::INBOX_LANES));
    }

    #[test]
    fn counter_shards_have_keys_of_their_own() {
        assert_ne!(
            segments::counter_shard_pk("p", 7, 0),
            segments::counter_shard_pk("p", 7, 1)
        );
        assert_ne!(
            segments::counter_shard_pk("p", 7, 0),
            segments::usage_shard_pk("p", "2026-11", 0)
        );
        assert!(segments::counter_shard_pk("p", 7, 3).contains("#p#"));
    }

    #[test]
    fn keys_carry_the_project() {
        assert_ne!(
            profiles::identity_pk("p1", "a"),
            profiles::identity_pk("p2", "a")
        );
        assert_ne!(
            memberships::pk("p1", 7, 1, "c"),
            memberships::pk("p2", 7, 1, "c")
        );
        assert_ne!(
            profiles::profile_pk("p1", "x"),
            profiles::identity_pk("p1", "x")
        );
    }
}
