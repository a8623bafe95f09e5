//! The engage feed's rows in the events table: Partner Sync events as the publisher reads them off
//! the stream, and the notice items (erasure, cleared segment) written for it to publish.

use aws_sdk_dynamodb::types::Put;
use serde::Deserialize;

use super::{Item, Store, StoreError, n, s};
use crate::domain::feed::{FeedEntry, FeedKind, FeedNotice, NOTICE_TTL_SECONDS, SyncEventRow};
use crate::domain::region::Region;
use crate::domain::segment_state::SyncAction;
use crate::store::keys::{self, events as ek};
use crate::store::tables::Table;

/// What the publisher found in one stream record of the events table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRecord {
    Sync(SyncEventRow),
    /// A notice, already rendered when it was written.
    Notice(FeedEntry),
}

#[derive(Deserialize)]
struct Properties {
    #[serde(rename = "Partner Segment Name")]
    partner_segment_name: String,
    #[serde(rename = "Partner Segment ID")]
    partner_segment_id: i64,
}

/// The attributes of an events-table item the feed reads (see `event_put` and [`notice_put`]).
#[derive(Deserialize)]
struct FeedImage {
    event: String,
    project_id: String,
    clevertap_id: Option<String>,
    change_id: Option<String>,
    action: Option<String>,
    ts_ms: Option<i64>,
    properties: Option<Properties>,
    recorded_ms: Option<i64>,
    version: Option<String>,
    initial_sync: Option<bool>,
    activated_ms: Option<i64>,
    detail: Option<String>,
    received_ms: Option<i64>,
    #[serde(default)]
    way: crate::domain::ways::Way,
}

/// The feed record of a stream record's new image.
pub fn feed_record_of_image(image: &serde_dynamo::Item) -> Result<FeedRecord, String> {
    let i: FeedImage = serde_dynamo::from_item(image.clone()).map_err(|e| e.to_string())?;
    let missing = |what: &str| format!("{} item without {what}", i.event);
    let kind = FeedKind::parse(&i.event).ok_or_else(|| format!("not a feed item: {}", i.event))?;
    if kind != FeedKind::PartnerSync {
        return Ok(FeedRecord::Notice(FeedEntry {
            kind,
            detail: i.detail.clone().ok_or_else(|| missing("detail"))?,
            recorded_ms: i.recorded_ms.ok_or_else(|| missing("recorded_ms"))?,
            received_ms: None,
            way: Default::default(),
        }));
    }
    let action = match i.action.as_deref() {
        Some("Added") => SyncAction::Added,
        Some("Removed") => SyncAction::Removed,
        other => return Err(format!("Partner Sync item with action {other:?}")),
    };
    let properties = i.properties.ok_or_else(|| missing("properties"))?;
    Ok(FeedRecord::Sync(SyncEventRow {
        clevertap_id: i.clevertap_id.ok_or_else(|| missing("clevertap_id"))?,
        change_id: i.change_id.ok_or_else(|| missing("change_id"))?,
        mparticle_ms: i.ts_ms.ok_or_else(|| missing("ts_ms"))?,
        project_id: i.project_id,
        action,
        partner_segment_id: properties.partner_segment_id,
        partner_segment_name: properties.partner_segment_name,
        recorded_ms: i.recorded_ms,
        version: i.version,
        initial_sync: i.initial_sync.unwrap_or(false),
        segment_activated_ms: i.activated_ms,
        received_ms: i.received_ms,
        way: i.way,
    }))
}

/// The put of a notice item: its own key (never a profile's, so activity reads never see it), the
/// rendered detail, and a TTL; written once however often its erasure or archiving is retried.
pub fn notice_put(table: &str, notice: &FeedNotice) -> Put {
    let item = Item::from([
        (
            keys::PK.to_owned(),
            s(ek::notice_pk(&notice.project_id, &notice.event_id)),
        ),
        (keys::SK.to_owned(), s(ek::NOTICE_SK)),
        (ek::EVENT.to_owned(), s(notice.kind.detail_type())),
        ("project_id".to_owned(), s(notice.project_id.clone())),
        (ek::DETAIL.to_owned(), s(notice.detail.clone())),
        (ek::RECORDED_MS.to_owned(), n(notice.recorded_ms)),
        (
            ek::EXPIRES_AT.to_owned(),
            n(notice.recorded_ms / 1000 + NOTICE_TTL_SECONDS),
        ),
    ]);
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .expect("table and item are set")
}

impl Store {
    /// Writes a notice for the publisher; `false` if it was written before.
    pub async fn put_feed_notice(
        &self,
        region: Region,
        notice: &FeedNotice,
    ) -> Result<bool, StoreError> {
        let put = notice_put(&self.table(region, Table::Events), notice);
        self.put_conditionally(region, put).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::feed::profile_erased;

    fn image_of(item: Item) -> serde_dynamo::Item {
        let value: serde_json::Value = serde_dynamo::from_item(item).unwrap();
        serde_dynamo::to_item(value).unwrap()
    }

    #[test]
    fn a_notice_item_reads_back_as_its_entry() {
        let notice = profile_erased("p1", Region::Eu1, "ct-1", 10, 20);
        let put = notice_put("events", &notice);
        let item = put.item;
        assert_eq!(item["pk"], s("~N#p1#erased:ct-1:10"));
        assert_eq!(
            item["expires_at"],
            n(NOTICE_TTL_SECONDS),
            "a day after its recorded second"
        );
        let record = feed_record_of_image(&image_of(item)).unwrap();
        assert_eq!(record, FeedRecord::Notice(notice.entry()));
    }

    #[test]
    fn an_item_that_is_not_for_the_feed_is_refused() {
        let item = Item::from([
            ("event".to_owned(), s("Something Else")),
            ("project_id".to_owned(), s("p1")),
        ]);
        assert!(feed_record_of_image(&image_of(item)).is_err());
    }
}
