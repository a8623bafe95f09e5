//! What a segment item is: its type, statuses, address and bucket layout. Segments, counter
//! shards and membership rows all build on it, so it stands below them.

use super::{Item, StoreError, get_n, get_s};
use crate::domain::records::{Segment, SegmentCounts, SegmentStatus};
use crate::store::keys::{events as ek, memberships as mk};

/// The segment type every imported audience gets.
pub const SEGMENT_TYPE: &str = "Partner - mParticle";
/// The mParticle time of the connect that last activated the segment.
pub const ACTIVATED_MS: &str = "activated_ms";
/// The mParticle time of the last subscription message applied.
pub const SUBSCRIPTION_TS: &str = "sub_ts";

/// A stored segment item as a [`Segment`] (counters zero: they live in its shards). Its audience
/// id is taken from its key, since an item made by a sealing or archiving write alone may lack
/// the other attributes.
pub fn segment_of(audience_id: i64, item: &Item) -> Result<Segment, StoreError> {
    let status = match get_s(item, "status") {
        Some(s) => SegmentStatus::parse(s)
            .ok_or_else(|| StoreError::Corrupt(format!("segment {audience_id}: status {s:?}")))?,
        None => SegmentStatus::Active,
    };
    Ok(Segment {
        audience_id,
        segment_id: get_s(item, "segment_id").unwrap_or_default().to_owned(),
        name: get_s(item, "name").map_or_else(|| format!("Audience {audience_id}"), str::to_owned),
        segment_type: get_s(item, "type").unwrap_or(SEGMENT_TYPE).to_owned(),
        status,
        created_ms: get_n(item, "created_ms"),
        updated_ms: get_n(item, "updated_ms"),
        archive_id: get_s(item, "archive_id").map(str::to_owned),
        activated_ms: get_n(item, ACTIVATED_MS),
        subscription_ms: get_n(item, SUBSCRIPTION_TS),
        buckets: SegmentLayout::of_item(audience_id, item).buckets,
        counts: SegmentCounts::default(),
    })
}

/// The segment a stream record's new image puts into archiving (project, audience id); `None`
/// for any other image of the segments table (shards, days, other statuses).
pub fn archiving_in_image(image: &serde_dynamo::Item) -> Result<Option<(String, i64)>, String> {
    #[derive(serde::Deserialize)]
    struct Image {
        status: Option<String>,
        project_id: Option<String>,
        partner_segment_id: Option<i64>,
    }
    let image: Image = serde_dynamo::from_item(image.clone()).map_err(|e| e.to_string())?;
    if image.status.as_deref() != Some(SegmentStatus::Archiving.as_str()) {
        return Ok(None);
    }
    match (image.project_id, image.partner_segment_id) {
        (Some(project), Some(aud)) => Ok(Some((project, aud))),
        _ => Err("segment image without project_id or partner_segment_id".into()),
    }
}

pub use crate::domain::records::{SegmentKey, SegmentLayout};

impl SegmentLayout {
    /// Attribute of a segment item (and of its counter shards) recording its bucket count.
    pub const ATTRIBUTE: &'static str = "buckets";

    /// The layout of a stored segment item: its recorded count, or one bucket for a segment
    /// created before buckets existed.
    pub fn of_item(audience_id: i64, segment: &Item) -> Self {
        let buckets = get_n(segment, Self::ATTRIBUTE)
            .and_then(|b| u32::try_from(b).ok())
            .filter(|b| (1..=mk::MAX_BUCKETS).contains(b))
            .unwrap_or(1);
        Self {
            audience_id,
            buckets,
        }
    }

    pub fn row_pk(&self, project_id: &str, clevertap_id: &str) -> String {
        mk::pk(project_id, self.audience_id, self.buckets, clevertap_id)
    }

    pub fn bucket_pk(&self, project_id: &str, bucket: u32) -> String {
        mk::bucket_pk(project_id, self.audience_id, self.buckets, bucket)
    }

    /// The Find People (`by_segment`) key of a profile's events in this segment.
    pub fn segment_key(&self, project_id: &str, clevertap_id: &str) -> String {
        ek::segment_key(
            project_id,
            self.audience_id,
            self.buckets,
            self.bucket_of(clevertap_id),
        )
    }
}
