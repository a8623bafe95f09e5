//! The engage feed (contract §5): what the publisher puts on the stack's EventBridge bus for
//! every Partner Sync change, every erased profile whose events were published and every
//! cleared segment. Pure: the store reads the rows, `stages::publish` sends what this renders.
//!
//! Nothing personal goes in: no email, phone, customer id or mParticle ID; a profile is named
//! by its CleverTap ID only.

use serde::Serialize;

use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;

/// The Partner Name and CT Source of every Partner Sync event.
pub const PARTNER_NAME: &str = "mParticle";
/// The `source` of every feed event.
pub const SOURCE: &str = "clevertap.mparticle-audience";
/// Bumped when a field changes meaning or goes away (adding a field does not bump it).
pub const SCHEMA_VERSION: u32 = 1;
/// `PutEvents` limits: entries per call and bytes per call (entries summed).
pub const MAX_ENTRIES_PER_PUT: usize = 10;
pub const MAX_BYTES_PER_PUT: usize = 256 * 1024;
/// An `Added` change whose mParticle time is within this window after its segment's activation
/// (its first connect, or a reconnect after a disconnect) is marked `initial_sync`: mParticle
/// sends the audience's existing members as plain adds when a connection is activated.
pub const INITIAL_SYNC_WINDOW_MS: i64 = 6 * 60 * 60 * 1000;
/// How long a notice item (erasure, cleared segment) stays in the events table: long enough
/// for the stream (24 h retention) to deliver it, then DynamoDB's TTL deletes it.
pub const NOTICE_TTL_SECONDS: i64 = 24 * 60 * 60;

/// What a feed event says, as its `detail-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    PartnerSync,
    ProfileErased,
    SegmentCleared,
}

impl FeedKind {
    pub const ALL: [FeedKind; 3] = [
        FeedKind::PartnerSync,
        FeedKind::ProfileErased,
        FeedKind::SegmentCleared,
    ];

    /// The `detail-type`, and the `event` attribute of the item in the events table.
    pub const fn detail_type(self) -> &'static str {
        match self {
            FeedKind::PartnerSync => "Partner Sync",
            FeedKind::ProfileErased => "Profile Erased",
            FeedKind::SegmentCleared => "Segment Cleared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.detail_type() == s)
    }
}

/// Whether an applied change is part of its segment's initial population (see
/// [`INITIAL_SYNC_WINDOW_MS`]). Removals never are; a segment with no recorded activation (one
/// connected before activations were recorded) has no initial sync left.
pub fn is_initial_sync(action: SyncAction, mparticle_ms: i64, activated_ms: Option<i64>) -> bool {
    action == SyncAction::Added
        && activated_ms.is_some_and(|a| mparticle_ms < a.saturating_add(INITIAL_SYNC_WINDOW_MS))
}

/// One stored Partner Sync event as the publisher reads it off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEventRow {
    pub project_id: String,
    pub clevertap_id: String,
    /// The event's own id (message id, profile and entry position): a redelivery of the same
    /// change never writes a second event, so it identifies the change for subscribers too.
    pub change_id: String,
    pub action: SyncAction,
    pub partner_segment_id: i64,
    pub partner_segment_name: String,
    /// The message's `timestamp_ms`.
    pub mparticle_ms: i64,
    /// When materialize wrote it (absent on events written before the feed).
    pub recorded_ms: Option<i64>,
    /// The change's place in its profile's total order (see `MembershipChange::version`).
    pub version: Option<String>,
    pub initial_sync: bool,
    pub segment_activated_ms: Option<i64>,
    /// When authorize received the change's request (absent on events written before it was
    /// recorded): the feed's end-to-end latency counts from there.
    pub received_ms: Option<i64>,
    /// The way the change came, and so the feed mapping that publishes it.
    pub way: crate::domain::ways::Way,
}

/// The five Partner Sync properties under the product page's names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerSyncProperties<'a> {
    #[serde(rename = "Partner Segment Name")]
    pub partner_segment_name: &'a str,
    #[serde(rename = "Action")]
    pub action: &'static str,
    #[serde(rename = "Partner Segment ID")]
    pub partner_segment_id: i64,
    #[serde(rename = "CT Source")]
    pub ct_source: &'static str,
    #[serde(rename = "Partner Name")]
    pub partner_name: &'static str,
}

#[derive(Debug, Serialize)]
struct PartnerSyncDetail<'a> {
    schema_version: u32,
    event_id: &'a str,
    project_id: &'a str,
    region: &'static str,
    clevertap_id: &'a str,
    action: &'static str,
    partner_segment_id: i64,
    initial_sync: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_activated_ms: Option<i64>,
    mparticle_time_ms: i64,
    recorded_ms: i64,
    version: String,
    properties: PartnerSyncProperties<'a>,
}

/// One entry for `PutEvents` (the bus name is the publisher's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub kind: FeedKind,
    pub detail: String,
    /// The event's recorded time: the entry's `Time`, and where the publish lag counts from.
    pub recorded_ms: i64,
    /// When its change's request was received (Partner Sync events that know it): where the
    /// end-to-end latency counts from.
    pub received_ms: Option<i64>,
    /// The way its change came (notices: live).
    pub way: crate::domain::ways::Way,
}

impl FeedEntry {
    /// What the entry counts against `PutEvents`' size limit.
    pub fn size(&self) -> usize {
        SOURCE.len() + self.kind.detail_type().len() + self.detail.len()
    }
}

/// The version of a change (same format as `MembershipChange::version`) from its stored time and
/// change id (`message:profile:entry`), for events stored before versions were.
fn version_of(mparticle_ms: i64, change_id: &str) -> String {
    let mut parts = change_id.rsplitn(3, ':');
    let (entry, profile, message) = (parts.next(), parts.next(), parts.next());
    match (message, profile, entry) {
        (Some(m), Some(p), Some(e)) => format!("{:013}#{m}#{p}#{e}", mparticle_ms.max(0)),
        _ => format!("{:013}#{change_id}", mparticle_ms.max(0)),
    }
}

/// The feed entry of one stored Partner Sync event of `region`.
pub fn partner_sync_entry(row: &SyncEventRow, region: Region) -> FeedEntry {
    let recorded_ms = row.recorded_ms.unwrap_or(row.mparticle_ms);
    let action = row.action.as_str();
    let detail = PartnerSyncDetail {
        schema_version: SCHEMA_VERSION,
        event_id: &row.change_id,
        project_id: &row.project_id,
        region: region.as_str(),
        clevertap_id: &row.clevertap_id,
        action,
        partner_segment_id: row.partner_segment_id,
        initial_sync: row.initial_sync,
        segment_activated_ms: row.segment_activated_ms,
        mparticle_time_ms: row.mparticle_ms,
        recorded_ms,
        version: row
            .version
            .clone()
            .unwrap_or_else(|| version_of(row.mparticle_ms, &row.change_id)),
        properties: PartnerSyncProperties {
            partner_segment_name: &row.partner_segment_name,
            action,
            partner_segment_id: row.partner_segment_id,
            ct_source: PARTNER_NAME,
            partner_name: PARTNER_NAME,
        },
    };
    FeedEntry {
        kind: FeedKind::PartnerSync,
        detail: serde_json::to_string(&detail).expect("a feed detail serializes"),
        recorded_ms,
        received_ms: row.received_ms,
        way: row.way,
    }
}

/// A feed event that is not a Partner Sync change: written as an item of its own to the events
/// table (with a TTL), so that the stream and the one publisher carry it like the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedNotice {
    pub kind: FeedKind,
    pub project_id: String,
    /// Unique per notice: repeats of the same erasure or archiving write the same item once.
    pub event_id: String,
    pub detail: String,
    pub recorded_ms: i64,
}

impl FeedNotice {
    pub fn entry(&self) -> FeedEntry {
        FeedEntry {
            kind: self.kind,
            detail: self.detail.clone(),
            recorded_ms: self.recorded_ms,
            received_ms: None,
            way: Default::default(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ProfileErasedDetail<'a> {
    schema_version: u32,
    event_id: &'a str,
    project_id: &'a str,
    region: &'static str,
    clevertap_id: &'a str,
    /// Every change sent before this (mParticle time) is gone: drop older events of the profile.
    erased_before_ms: i64,
    recorded_ms: i64,
}

/// The notice that an erasure removed a profile whose Partner Sync events were published. Its id
/// is the profile's and the erasure's time, so the erase function and a materialize that an
/// erasure overtook write the same notice once.
pub fn profile_erased(
    project_id: &str,
    region: Region,
    clevertap_id: &str,
    erased_before_ms: i64,
    recorded_ms: i64,
) -> FeedNotice {
    let event_id = format!("erased:{clevertap_id}:{erased_before_ms}");
    let detail = ProfileErasedDetail {
        schema_version: SCHEMA_VERSION,
        event_id: &event_id,
        project_id,
        region: region.as_str(),
        clevertap_id,
        erased_before_ms,
        recorded_ms,
    };
    FeedNotice {
        kind: FeedKind::ProfileErased,
        project_id: project_id.to_owned(),
        detail: serde_json::to_string(&detail).expect("a feed detail serializes"),
        event_id,
        recorded_ms,
    }
}

#[derive(Debug, Serialize)]
struct SegmentClearedDetail<'a> {
    schema_version: u32,
    event_id: &'a str,
    project_id: &'a str,
    region: &'static str,
    partner_segment_id: i64,
    partner_segment_name: &'a str,
    /// The mParticle time of the disconnect: every member left then.
    cleared_before_ms: i64,
    recorded_ms: i64,
}

/// What a cleared segment's notice is made of.
#[derive(Debug, Clone, Copy)]
pub struct ClearedSegment<'a> {
    pub project_id: &'a str,
    pub region: Region,
    pub partner_segment_id: i64,
    pub partner_segment_name: &'a str,
    pub archive_id: &'a str,
    pub cleared_before_ms: i64,
}

/// The notice that a disconnected segment was cleared: its members all left.
pub fn segment_cleared(s: ClearedSegment<'_>, recorded_ms: i64) -> FeedNotice {
    let event_id = format!("cleared:{}:{}", s.partner_segment_id, s.archive_id);
    let detail = SegmentClearedDetail {
        schema_version: SCHEMA_VERSION,
        event_id: &event_id,
        project_id: s.project_id,
        region: s.region.as_str(),
        partner_segment_id: s.partner_segment_id,
        partner_segment_name: s.partner_segment_name,
        cleared_before_ms: s.cleared_before_ms,
        recorded_ms,
    };
    FeedNotice {
        kind: FeedKind::SegmentCleared,
        project_id: s.project_id.to_owned(),
        detail: serde_json::to_string(&detail).expect("a feed detail serializes"),
        event_id,
        recorded_ms,
    }
}

/// Splits entries into `PutEvents` calls within both limits, in order (index ranges).
pub fn put_batches(entries: &[FeedEntry]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        let full = i - start == MAX_ENTRIES_PER_PUT || bytes + e.size() > MAX_BYTES_PER_PUT;
        if full && i > start {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += e.size();
    }
    if start < entries.len() {
        batches.push(start..entries.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: SyncAction) -> SyncEventRow {
        SyncEventRow {
            project_id: "p1".into(),
            clevertap_id: "ct-1".into(),
            change_id: "msg-1:000002:0003".into(),
            action,
            partner_segment_id: 47444,
            partner_segment_name: "Cart Abandoners".into(),
            mparticle_ms: 1_700_000_000_000,
            recorded_ms: Some(1_700_000_000_500),
            version: None,
            initial_sync: false,
            segment_activated_ms: Some(1_699_999_000_000),
            received_ms: None,
            way: Default::default(),
        }
    }

    #[test]
    fn a_partner_sync_entry_carries_the_contract_fields_and_the_five_properties() {
        let e = partner_sync_entry(&row(SyncAction::Added), Region::Eu1);
        assert_eq!(e.kind.detail_type(), "Partner Sync");
        assert_eq!(e.recorded_ms, 1_700_000_000_500);
        let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(d["schema_version"], 1);
        assert_eq!(d["event_id"], "msg-1:000002:0003");
        assert_eq!(d["region"], "eu1");
        assert_eq!(d["action"], "Added");
        assert_eq!(d["partner_segment_id"], 47444);
        assert_eq!(d["version"], "1700000000000#msg-1#000002#0003");
        assert_eq!(d["properties"]["Partner Segment Name"], "Cart Abandoners");
        assert_eq!(d["properties"]["Action"], "Added");
        assert_eq!(d["properties"]["Partner Segment ID"], 47444);
        assert_eq!(d["properties"]["CT Source"], "mParticle");
        assert_eq!(d["properties"]["Partner Name"], "mParticle");
    }

    #[test]
    fn only_adds_within_the_window_after_activation_are_initial() {
        let a = 1_000_000;
        assert!(is_initial_sync(SyncAction::Added, a + 5, Some(a)));
        assert!(is_initial_sync(SyncAction::Added, a - 5, Some(a)));
        assert!(!is_initial_sync(
            SyncAction::Added,
            a + INITIAL_SYNC_WINDOW_MS,
            Some(a)
        ));
        assert!(!is_initial_sync(SyncAction::Removed, a + 5, Some(a)));
        assert!(!is_initial_sync(SyncAction::Added, a + 5, None));
    }

    #[test]
    fn notices_name_the_profile_or_segment_and_nothing_else() {
        let n = profile_erased("p1", Region::Us1, "ct-9", 42, 43);
        assert_eq!(n.event_id, "erased:ct-9:42");
        let d: serde_json::Value = serde_json::from_str(&n.detail).unwrap();
        // A set: serde_json keeps insertion order when a workspace crate enables `preserve_order`.
        let keys: std::collections::BTreeSet<&str> =
            d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "clevertap_id",
                "erased_before_ms",
                "event_id",
                "project_id",
                "recorded_ms",
                "region",
                "schema_version"
            ]
            .into()
        );
        let c = segment_cleared(
            ClearedSegment {
                project_id: "p1",
                region: Region::Us1,
                partner_segment_id: 7,
                partner_segment_name: "VIP",
                archive_id: "arch-1",
                cleared_before_ms: 5,
            },
            6,
        );
        assert_eq!(c.kind, FeedKind::SegmentCleared);
        let d: serde_json::Value = serde_json::from_str(&c.detail).unwrap();
        assert_eq!(d["event_id"], "cleared:7:arch-1");
        assert_eq!(d["partner_segment_name"], "VIP");
    }

    #[test]
    fn put_batches_keep_within_ten_entries_and_the_size_limit() {
        let small = FeedEntry {
            kind: FeedKind::PartnerSync,
            detail: "x".repeat(100),
            recorded_ms: 0,
            received_ms: None,
            way: Default::default(),
        };
        let entries = vec![small.clone(); 23];
        let sizes: Vec<usize> = put_batches(&entries).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);
        let big = FeedEntry {
            detail: "x".repeat(100 * 1024),
            ..small
        };
        let sizes: Vec<usize> = put_batches(&vec![big; 5]).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(put_batches(&[]).is_empty());
    }
}
