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

    /// GSI listing a project's sync log newest first: `project_id`, `received_key`.
    pub const BY_RECEIVED: &str = "by_received";
    pub const PROJECT_ID: &str = "project_id";
    pub const RECEIVED_KEY: &str = "received_key";
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

    pub fn received_key(received_ms: i64, message_id: &str, chunk: u32) -> String {
        format!("{:013}#{message_id}#{chunk:04}", received_ms.max(0))
    }
}

/// Table `profiles`: profile items and identity claims.
pub mod profiles {
    pub const BY_EMAIL: &str = "by_email";
    pub const EMAIL_KEY: &str = "email_key";
    pub const BY_PHONE: &str = "by_phone";
    pub const PHONE_KEY: &str = "phone_key";

    /// A profile, addressed by its CleverTap ID (kept exactly as given).
    pub fn profile_pk(project_id: &str, clevertap_id: &str) -> String {
        format!("P#{project_id}#{clevertap_id}")
    }

    /// The claim that an Identity belongs to one profile; created with a conditional write.
    pub fn identity_pk(project_id: &str, identity: &str) -> String {
        format!("I#{project_id}#{identity}")
    }

    pub fn email_key(project_id: &str, email: &str) -> String {
        format!("{project_id}#{email}")
    }

    pub fn phone_key(project_id: &str, phone: &str) -> String {
        format!("{project_id}#{phone}")
    }

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
    /// Per-day attributes of a counter shard, `<prefix>YYYY-MM-DD` (UTC): Partner Sync events
    /// by action on the day of the event, members cleared on the day of the clearing.
    pub const DAY_ADDED: &str = "added_on_";
    pub const DAY_REMOVED: &str = "removed_on_";
    pub const DAY_CLEARED: &str = "cleared_on_";
    /// Sort key of every counter shard item (each shard has its own partition key).
    pub const SHARD_SK: &str = "shard";

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
        format!("E#{request_id}")
    }

    /// `U#<project>#<YYYY-MM>#<shard>`: one shard of a month's usage.
    pub fn usage_shard_pk(project_id: &str, month: &str, shard: u32) -> String {
        format!("U#{project_id}#{month}#{shard:02}")
    }
}

/// Table `memberships`: one item per (segment, profile), kept as a tombstone after removal so
/// that late, older changes can still be recognised as stale.
pub mod memberships {
    pub fn pk(project_id: &str, partner_segment_id: i64) -> String {
        format!("{project_id}#{partner_segment_id}")
    }

    pub fn sk(clevertap_id: &str) -> String {
        clevertap_id.to_owned()
    }
}

/// Table `events`: Partner Sync events per profile, newest last in key order.
pub mod events {
    /// GSI answering Find People: profiles with a Partner Sync for a segment.
    pub const BY_SEGMENT: &str = "by_segment";
    pub const SEGMENT_KEY: &str = "segment_key";
    pub const PROFILE_KEY: &str = "profile_key";
    pub const ACTION: &str = "action";
    pub const CLEVERTAP_ID: &str = "clevertap_id";

    pub fn pk(project_id: &str, clevertap_id: &str) -> String {
        format!("{project_id}#{clevertap_id}")
    }

    pub fn sk(ts_ms: i64, partner_segment_id: i64, change_id: &str) -> String {
        format!("{:013}#{partner_segment_id}#{change_id}", ts_ms.max(0))
    }

    pub fn segment_key(project_id: &str, partner_segment_id: i64) -> String {
        format!("{project_id}#{partner_segment_id}")
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
        assert_ne!(memberships::pk("p1", 7), memberships::pk("p2", 7));
        assert_ne!(
            profiles::profile_pk("p1", "x"),
            profiles::identity_pk("p1", "x")
        );
    }
}
