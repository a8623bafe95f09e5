//! The read API's answers (docs/contract.md §3) as types. The query stage builds them and
//! serializes them as the API's JSON; the console's pages (`pages`) render the same types, so a
//! page and the API cannot disagree on a field without the compiler saying so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::erasure::ErasureAudit;

/// One day of a segment's history: its Partner Sync events, the members cleared, and the
/// members at the day's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DayView {
    pub day: String,
    pub added: i64,
    pub removed: i64,
    pub cleared: i64,
    pub members: i64,
}

/// A segment as the read API shows it (`archiving` is shown as `archived`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentView {
    pub partner_segment_id: i64,
    pub segment_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub segment_type: String,
    pub status: String,
    pub member_count: i64,
    pub created_ms: Option<i64>,
    pub updated_ms: Option<i64>,
    pub added_total: i64,
    pub removed_total: i64,
    pub last_sync_ms: Option<i64>,
    /// How fresh the latest membership change was: from our receipt of its request to its
    /// count here (ms); none before any change carried its receipt.
    pub freshness_ms: Option<i64>,
    /// Days with activity, oldest first: on `GET /v1/segments/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<DayView>>,
    /// Its import's progress, once anything came the bulk way: on `GET /v1/segments/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportView>,
}

/// An audience's import (`domain::progress`): changes received the bulk way and how far they
/// got. `applied + skipped + failed` are done; `percent` is done ÷ received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportView {
    pub received: u64,
    pub resolved: u64,
    pub applied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub remaining: u64,
    /// Done ÷ received, in percent (one decimal; 100 only when nothing is left).
    pub percent: f64,
    /// Changes applied per second over the last minute.
    pub rate_per_s: f64,
    /// Seconds left at that rate; none when nothing is left or nothing is moving.
    pub estimate_s: Option<u64>,
    /// Whether changes are still waiting.
    pub running: bool,
    pub started_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl ImportView {
    pub fn of(p: &crate::domain::progress::ImportProgress) -> Self {
        // Floored to a tenth, so 99.96 % never shows as a finished 100.
        let percent = (p.fraction * 1000.0).floor() / 10.0;
        ImportView {
            received: p.counts.received,
            resolved: p.counts.resolved,
            applied: p.counts.applied,
            skipped: p.counts.skipped,
            failed: p.counts.failed,
            remaining: p.remaining,
            percent,
            rate_per_s: (p.rate_per_s * 10.0).round() / 10.0,
            estimate_s: p.estimate_s,
            running: p.remaining > 0,
            started_ms: p.started_ms,
            last_ms: p.last_ms,
        }
    }
}

/// `GET /v1/segments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentsView {
    pub segments: Vec<SegmentView>,
    /// More segments follow: pass it as `cursor`.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberView {
    pub clevertap_id: String,
    pub identity: Option<String>,
}

/// `GET /v1/segments/{id}/members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersView {
    pub members: Vec<MemberView>,
    pub next_cursor: Option<String>,
}

/// A segment a profile is a member of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentRef {
    pub partner_segment_id: i64,
    pub name: String,
}

/// A profile: its identities, properties (strings, lists of strings, `true` for a tag) and
/// current segments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileView {
    pub clevertap_id: String,
    pub identity: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    pub segments: Vec<SegmentRef>,
    pub created_ms: Option<i64>,
    pub updated_ms: Option<i64>,
}

/// `GET /v1/profiles?identity=|email=|phone=`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfilesView {
    pub profiles: Vec<ProfileView>,
    /// More profiles with that email or phone follow: pass it as `cursor`.
    pub next_cursor: Option<String>,
}

/// `GET /v1/people`: Find People, a page of profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeopleView {
    pub profiles: Vec<ProfileView>,
    pub next_cursor: Option<String>,
}

/// One event of a profile's activity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventView {
    pub event: String,
    pub ts_ms: i64,
    pub properties: BTreeMap<String, Value>,
}

/// `GET /v1/profiles/{id}/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsView {
    pub events: Vec<EventView>,
    pub next_cursor: Option<String>,
}

/// One mParticle request of the sync log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncView {
    pub request_id: String,
    pub received_ms: Option<i64>,
    pub status: String,
    pub chunks: i64,
    pub profiles: i64,
    pub outcomes: BTreeMap<String, i64>,
    pub changes: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// `GET /v1/syncs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncsView {
    pub syncs: Vec<SyncView>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/usage?month=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageView {
    pub month: String,
    pub partner_sync_events: i64,
}

/// `GET /v1/erasures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasuresView {
    pub erasures: Vec<ErasureAudit>,
    /// More audit rows follow: pass it as `cursor`.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_serialize_under_the_contracts_names() {
        let segment = SegmentView {
            partner_segment_id: 7,
            segment_type: "Partner - mParticle".into(),
            ..SegmentView::default()
        };
        let json = serde_json::to_value(&segment).unwrap();
        assert_eq!(json["type"], "Partner - mParticle");
        assert!(json.get("history").is_none(), "history only when asked for");
        assert_eq!(json["last_sync_ms"], Value::Null);
        let members = serde_json::to_value(MembersView::default()).unwrap();
        assert_eq!(members["next_cursor"], Value::Null, "null, not absent");
        let sync = serde_json::to_value(SyncView::default()).unwrap();
        assert!(sync.get("failures").is_none(), "failures only when some");
    }
}
