//! What the store keeps, as plain types: a segment with its counters, a profile, a membership
//! row, a Partner Sync event. The store reads and writes these; stages, local tools and tests use
//! them, and how each is laid out in DynamoDB (keys, attribute names) stays in `store/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::region::Region;

/// A profile property value: a string, a list of strings, or `true` for a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    Text(String),
    List(Vec<String>),
    Tag,
}

/// Which value a profile holds that an erasure follows to its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HeldValue {
    Email,
    Phone,
}

impl HeldValue {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldValue::Email => "email",
            HeldValue::Phone => "phone",
        }
    }

    /// The value of this kind a profile holds.
    pub fn of(self, profile: &Profile) -> Option<&str> {
        match self {
            HeldValue::Email => profile.email.as_deref(),
            HeldValue::Phone => profile.phone.as_deref(),
        }
    }
}

/// One profile of a project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub clevertap_id: String,
    /// The Identity it was created for (the ladder's Customer ID or mParticle ID rung).
    pub identity: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Profile attributes shared by mParticle, by key.
    pub properties: BTreeMap<String, PropertyValue>,
    /// The version of the message that last set (or deleted) each field: newest wins.
    pub versions: FieldVersions,
    pub created_ms: Option<i64>,
    pub updated_ms: Option<i64>,
    /// Every email and phone the profile was given, current and former, with the version of the
    /// newest message that gave it: the holders naming the profile are among these, so an
    /// erasure takes it off each (a former `old@` too), and a take-back knows which are its
    /// message's.
    pub held: BTreeMap<(HeldValue, String), String>,
}

/// The versions of a profile's fields (a deleted property keeps its version, so an older
/// message cannot bring it back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldVersions {
    /// The version of the message whose Identity stands (set once, with the Identity).
    pub identity: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// By property key.
    pub properties: BTreeMap<String, String>,
}

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentStatus {
    Active,
    /// Removed by mParticle; its membership is being cleared in the background.
    Archiving,
    Archived,
}

impl SegmentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Active => "active",
            SegmentStatus::Archiving => "archiving",
            SegmentStatus::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Archiving, Self::Archived]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    /// What the read API shows: a segment being archived has its members on their way out.
    pub const fn shown(self) -> &'static str {
        match self {
            SegmentStatus::Active => "active",
            SegmentStatus::Archiving | SegmentStatus::Archived => "archived",
        }
    }
}

/// A segment's counters: the sum of its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    pub member_count: i64,
    pub added_total: i64,
    pub removed_total: i64,
    /// The latest time a membership transaction counted here (`None`: never).
    pub last_sync_ms: Option<i64>,
    /// That transaction's freshness: from authorize's receipt of the newest change it counted to
    /// its commit (`None`: counted before receipts were carried, or never).
    pub last_freshness_ms: Option<i64>,
}

impl SegmentCounts {
    /// Adds one shard's counters.
    pub fn add(&mut self, shard: &SegmentCounts) {
        self.member_count += shard.member_count;
        self.added_total += shard.added_total;
        self.removed_total += shard.removed_total;
        // The latest transaction's time and freshness, from whichever shard counted it.
        if shard.last_sync_ms > self.last_sync_ms {
            self.last_sync_ms = shard.last_sync_ms;
            self.last_freshness_ms = shard.last_freshness_ms;
        }
    }
}

/// One segment ("Partner - mParticle") of a project, with its counters summed over its shards
/// when the read asked for them (zero otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The mParticle audience id (the Partner Segment ID).
    pub audience_id: i64,
    /// The hidden segment id, stable across renames.
    pub segment_id: String,
    pub name: String,
    /// Its CleverTap segment type ("Partner - mParticle").
    pub segment_type: String,
    pub status: SegmentStatus,
    pub created_ms: Option<i64>,
    pub updated_ms: Option<i64>,
    /// The archiving run clearing its members (set while archiving and after).
    pub archive_id: Option<String>,
    /// The mParticle time of the connect that last activated it (first connect, or a reconnect
    /// after a disconnect); absent on segments activated before it was recorded.
    pub activated_ms: Option<i64>,
    /// The mParticle time of the last subscription message applied (for an archived segment:
    /// its disconnect).
    pub subscription_ms: Option<i64>,
    /// The membership buckets fixed when it was first activated (1: made before buckets).
    pub buckets: u32,
    pub counts: SegmentCounts,
}

impl Segment {
    pub fn is_active(&self) -> bool {
        self.status == SegmentStatus::Active
    }

    /// Sets the counters; the segment was updated when it was last counted, if that is later.
    pub fn with_counts(mut self, counts: SegmentCounts) -> Self {
        if let Some(t) = counts.last_sync_ms {
            self.updated_ms = Some(self.updated_ms.unwrap_or(0).max(t));
        }
        self.counts = counts;
        self
    }
}

/// What one UTC day did to a segment: Partner Sync events by action, and members cleared when
/// it was disconnected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    pub added: i64,
    pub removed: i64,
    pub cleared: i64,
}

/// A segment's days with activity (`YYYY-MM-DD` → counts).
pub type SegmentHistory = BTreeMap<String, DayCounts>;

/// The claim that an Identity belongs to one profile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityClaim {
    pub identity: String,
    pub clevertap_id: String,
}

/// One (segment, profile) membership row: current or former member, or erased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MembershipRow {
    pub audience_id: i64,
    pub clevertap_id: String,
    pub member: bool,
    /// The version of the last change applied (or of the clear or erasure that ended it).
    pub version: String,
    pub identity: Option<String>,
    /// Which Partner Sync actions the pair ever raised (Find People of bucketed segments).
    pub ever_added: bool,
    pub ever_removed: bool,
    /// Cleared when its segment was disconnected.
    pub cleared: bool,
    /// Left by an erasure of the profile.
    pub erased: bool,
}

/// One Partner Sync event as stored: whose, which segment and change, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerSyncEvent {
    pub clevertap_id: String,
    pub audience_id: i64,
    /// `Added` or `Removed`.
    pub action: String,
    pub change_id: String,
    pub event: ProfileEvent,
}

/// A property value of a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventValue {
    Text(String),
    Number(i64),
}

/// One event of a profile's activity (a Partner Sync event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEvent {
    pub name: String,
    pub ts_ms: i64,
    pub properties: BTreeMap<String, EventValue>,
}

/// Where an inbox chunk is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxStatus {
    /// Could never be fully applied (the sync log says why).
    Failed,
    Received,
    Resolved,
    Materialized,
}

impl InboxStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Failed => "failed",
            InboxStatus::Received => "received",
            InboxStatus::Resolved => "resolved",
            InboxStatus::Materialized => "materialized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Failed,
            Self::Received,
            Self::Resolved,
            Self::Materialized,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One chunk's row of the sync log: what the inbox row of a stored batch chunk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow {
    /// Its place in the log (newest first): the cursor of the next page.
    pub position: String,
    pub message_id: String,
    pub status: InboxStatus,
    pub failure: Option<String>,
    pub profile_count: i64,
    /// Chunks of its request.
    pub chunk_count: i64,
    pub received_ms: Option<i64>,
    /// Resolution outcomes by name.
    pub outcomes: BTreeMap<String, i64>,
    /// Membership changes resolve handed on, by action (`add`, `delete`).
    pub handed_on: BTreeMap<String, i64>,
    /// What materialize made of them (`added`, `removed`, `noop`, …).
    pub applied: BTreeMap<String, i64>,
}

/// Addresses one segment: its region, project and mParticle audience id.
#[derive(Debug, Clone, Copy)]
pub struct SegmentKey<'a> {
    pub region: Region,
    pub project_id: &'a str,
    pub audience_id: i64,
}

/// Where one segment's membership rows and Find People entries live: `buckets` partition keys,
/// fixed when the segment was first activated and recorded on it (`store::keys::memberships`;
/// the key strings are built there, `store::segment_item`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    pub audience_id: i64,
    pub buckets: u32,
}

impl SegmentLayout {
    /// The layout of a segment as read: its own, or `new_buckets` for one not created yet
    /// (it will be created with that count: `Store::open_counter_shards` checks it).
    pub fn of_read(audience_id: i64, segment: Option<&Segment>, new_buckets: u32) -> Self {
        match segment {
            Some(segment) => Self::of_segment(segment),
            None => Self {
                audience_id,
                buckets: new_buckets,
            },
        }
    }

    pub fn of_segment(segment: &Segment) -> Self {
        Self {
            audience_id: segment.audience_id,
            buckets: segment.buckets,
        }
    }

    pub fn bucket_of(&self, clevertap_id: &str) -> u32 {
        bucket_of(clevertap_id, self.buckets)
    }
}

/// The bucket of a profile in a segment of `buckets` buckets: stable forever (a hash of the
/// CleverTap ID), so a profile's row and events always have the same key.
pub fn bucket_of(clevertap_id: &str, buckets: u32) -> u32 {
    use sha2::{Digest, Sha256};
    if buckets <= 1 {
        return 0;
    }
    let digest = Sha256::digest(clevertap_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_statuses_round_trip_and_order_failed_first() {
        for s in [
            InboxStatus::Failed,
            InboxStatus::Received,
            InboxStatus::Resolved,
            InboxStatus::Materialized,
        ] {
            assert_eq!(InboxStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(InboxStatus::parse("done"), None);
        assert!(InboxStatus::Failed < InboxStatus::Received);
        assert!(InboxStatus::Resolved < InboxStatus::Materialized);
    }

    #[test]
    fn statuses_round_trip_and_archiving_shows_as_archived() {
        for s in [
            SegmentStatus::Active,
            SegmentStatus::Archiving,
            SegmentStatus::Archived,
        ] {
            assert_eq!(SegmentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SegmentStatus::parse("paused"), None);
        assert_eq!(SegmentStatus::Archiving.shown(), "archived");
        assert_eq!(SegmentStatus::Active.shown(), "active");
    }

    #[test]
    fn counts_add_up_and_keep_the_latest_sync() {
        let mut sum = SegmentCounts::default();
        sum.add(&SegmentCounts {
            member_count: 3,
            added_total: 5,
            removed_total: 2,
            last_sync_ms: Some(10),
            last_freshness_ms: Some(400),
        });
        sum.add(&SegmentCounts {
            member_count: -1,
            added_total: 0,
            removed_total: 1,
            last_sync_ms: None,
            last_freshness_ms: None,
        });
        sum.add(&SegmentCounts {
            last_sync_ms: Some(7),
            last_freshness_ms: Some(90_000),
            ..Default::default()
        });
        assert_eq!(
            sum,
            SegmentCounts {
                member_count: 2,
                added_total: 5,
                removed_total: 3,
                last_sync_ms: Some(10),
                last_freshness_ms: Some(400),
            },
            "the freshness of the latest transaction, not of an earlier slower one"
        );
    }

    #[test]
    fn a_counted_segment_was_updated_when_it_was_last_counted() {
        let segment = Segment {
            audience_id: 7,
            segment_id: "seg_1".into(),
            name: "Cart".into(),
            segment_type: "Partner - mParticle".into(),
            status: SegmentStatus::Active,
            created_ms: Some(1),
            updated_ms: Some(5),
            archive_id: None,
            activated_ms: None,
            subscription_ms: None,
            buckets: 64,
            counts: SegmentCounts::default(),
        };
        let later = SegmentCounts {
            last_sync_ms: Some(9),
            ..Default::default()
        };
        assert_eq!(segment.clone().with_counts(later).updated_ms, Some(9));
        let earlier = SegmentCounts {
            last_sync_ms: Some(3),
            ..Default::default()
        };
        assert_eq!(segment.with_counts(earlier).updated_ms, Some(5));
    }
}
