//! The `events` table's rows: one Partner Sync event of a profile (what the product shows and
//! the feed publishes), and the notices the publisher reads.

use aws_sdk_dynamodb::types::AttributeValue;

use super::memberships::boolean;
use crate::domain::changes::MembershipChange;
use crate::domain::feed::{FeedKind, PARTNER_NAME, is_initial_sync};
use crate::domain::records::{EventValue, ProfileEvent, SegmentLayout};
use crate::domain::segment_state::SyncAction;
use crate::ports::memberships::EventSegment;
use crate::store::keys::{self, events as ek};
use crate::store::{Item, get_n, get_s, n, s};

/// The event name of a Partner Sync event.
pub const PARTNER_SYNC: &str = FeedKind::PartnerSync.detail_type();

/// The Partner Sync event row of one applied change, recorded at `now_ms`: what the product
/// shows, and what the feed publishes (its version, recorded time and initial-sync mark).
pub fn event_item(
    project_id: &str,
    layout: SegmentLayout,
    change: &MembershipChange,
    action: SyncAction,
    segment: EventSegment<'_>,
    now_ms: i64,
) -> Item {
    let segment_name = change.audience_name.as_deref().unwrap_or(segment.name);
    let change_id = change.change_id();
    let properties = AttributeValue::M(
        [
            ("Partner Segment Name".to_owned(), s(segment_name)),
            ("Action".to_owned(), s(action.as_str())),
            ("Partner Segment ID".to_owned(), n(change.audience_id)),
            ("CT Source".to_owned(), s(PARTNER_NAME)),
            ("Partner Name".to_owned(), s(PARTNER_NAME)),
        ]
        .into(),
    );
    let mut item = Item::from([
        (
            keys::PK.to_owned(),
            s(ek::pk(project_id, &change.clevertap_id)),
        ),
        (
            keys::SK.to_owned(),
            s(ek::sk(change.ts_ms, change.audience_id, &change_id)),
        ),
        (ek::ACTION.to_owned(), s(action.as_str())),
        (ek::EVENT.to_owned(), s(PARTNER_SYNC)),
        ("ts_ms".to_owned(), n(change.ts_ms)),
        (ek::CLEVERTAP_ID.to_owned(), s(change.clevertap_id.clone())),
        ("project_id".to_owned(), s(project_id)),
        ("change_id".to_owned(), s(change_id.clone())),
        ("properties".to_owned(), properties),
        (ek::RECORDED_MS.to_owned(), n(now_ms)),
        (ek::VERSION.to_owned(), s(change.version())),
        (
            ek::INITIAL_SYNC.to_owned(),
            boolean(is_initial_sync(action, change.ts_ms, segment.activated_ms)),
        ),
    ]);
    if let Some(activated) = segment.activated_ms {
        item.insert(ek::ACTIVATED_MS.to_owned(), n(activated));
    }
    // The bulk way's events go to its own feed mapping (its filter takes `way`, the live
    // mapping's only events without it).
    if !change.way.is_live() {
        item.insert(ek::WAY.to_owned(), s(change.way.as_str()));
    }
    if let Some(received) = change.received_ms {
        item.insert(ek::RECEIVED_MS.to_owned(), n(received));
    }
    // Find People of a one-bucket segment (one created before buckets) reads `by_segment`; a
    // bucketed segment's reads its rows' history instead, so its events stay out of the index.
    if layout.buckets <= 1 {
        item.insert(
            ek::SEGMENT_KEY.to_owned(),
            s(layout.segment_key(project_id, &change.clevertap_id)),
        );
        item.insert(
            ek::PROFILE_KEY.to_owned(),
            s(ek::profile_key(
                &change.clevertap_id,
                change.ts_ms,
                &change_id,
            )),
        );
    }
    item
}

/// A stored event as a profile's activity shows it.
pub fn event_of(item: &Item) -> ProfileEvent {
    let properties = item
        .get("properties")
        .and_then(|p| p.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let value = match v {
                        AttributeValue::N(n) => EventValue::Number(n.parse().ok()?),
                        AttributeValue::S(s) => EventValue::Text(s.clone()),
                        _ => return None,
                    };
                    Some((k.clone(), value))
                })
                .collect()
        })
        .unwrap_or_default();
    ProfileEvent {
        name: get_s(item, "event").unwrap_or_default().to_owned(),
        ts_ms: get_n(item, "ts_ms").unwrap_or(0),
        properties,
    }
}
