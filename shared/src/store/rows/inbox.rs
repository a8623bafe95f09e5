//! The `inbox` table's rows: a stored chunk, which doubles as its line of the sync log.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::UpdateSpec;
use crate::domain::progress::Owed;
use crate::domain::records::{InboxStatus, SyncRow};
use crate::domain::sync_log::{MaterializeCounts, ResolveOutcomes};
use crate::domain::ways::Way;
use crate::ports::StoreError;
use crate::ports::inbox::{ChangeCounts, ChunkKey, Handoff, InboxRow};
use crate::store::keys::{self, inbox as k};
use crate::store::{Item, get_n, get_s, n, s};

/// Every attribute of an inbox row but its keys, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    project_id: String,
    message_id: String,
    chunk: u32,
    message_ts: i64,
    #[serde(default)]
    received_ms: i64,
    status: InboxStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_bytes::ByteBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changes: Option<serde_bytes::ByteBuf>,
    #[serde(default)]
    chunk_count: u32,
    #[serde(default)]
    profile_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcomes: Option<ResolveOutcomes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change_counts: Option<StoredCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied: Option<MaterializeCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    /// Absent on a live row: the inbox mappings' filters take only rows without it.
    #[serde(default, skip_serializing_if = "is_live")]
    way: Way,
    /// What a counted bulk chunk still owes each audience's progress, by audience id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<BTreeMap<String, u64>>,
}

fn is_live(way: &Way) -> bool {
    *way == Way::Live
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredCounts {
    #[serde(default)]
    add: u64,
    #[serde(default)]
    delete: u64,
}

// Attribute names the update expressions write (the same as `Stored`'s fields).
const CHANGES: &str = "changes";
const OUTCOMES: &str = "outcomes";
const CHANGE_COUNTS: &str = "change_counts";
const APPLIED: &str = "applied";
const FAILURE: &str = "failure";
const PAYLOAD: &str = "payload";
const RESOLVED_MS: &str = "resolved_ms";
const MATERIALIZED_MS: &str = "materialized_ms";
const FAILED_MS: &str = "failed_ms";
const MESSAGE_ID: &str = "message_id";
const PROFILE_COUNT: &str = "profile_count";
const CHUNK_COUNT: &str = "chunk_count";
const RECEIVED_MS: &str = "received_ms";
const PROGRESS: &str = "progress";

fn stored_owed(owed: &Owed) -> BTreeMap<String, u64> {
    owed.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

fn owed_of_stored(stored: BTreeMap<String, u64>) -> Result<Owed, String> {
    stored
        .into_iter()
        .map(|(a, n)| {
            Ok((
                a.parse()
                    .map_err(|_| format!("progress for audience {a:?}"))?,
                n,
            ))
        })
        .collect()
}

/// The condition of a put that stores a chunk: its key is new.
pub const NEW_KEY_ONLY: &str = "attribute_not_exists(pk)";

/// A chunk's key.
pub fn key(key: ChunkKey<'_>) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(k::pk(key.project_id, key.message_id, key.chunk)),
        ),
        (keys::SK.to_owned(), s(k::sk(key.message_id, key.chunk))),
    ])
}

/// The item a row is stored as, with its keys and its sync-log index keys.
pub fn item(row: &InboxRow) -> Result<Item, StoreError> {
    let stored = Stored {
        project_id: row.project_id.clone(),
        message_id: row.message_id.clone(),
        chunk: row.chunk,
        message_ts: row.message_ts,
        received_ms: row.received_ms,
        status: row.status,
        payload: (!row.payload.is_empty()).then(|| serde_bytes::ByteBuf::from(row.payload.clone())),
        changes: row.changes.clone().map(serde_bytes::ByteBuf::from),
        chunk_count: row.chunk_count,
        profile_count: row.profile_count,
        expires_at: row.expires_at,
        outcomes: row.outcomes.clone(),
        change_counts: row.handed_on.map(|c| StoredCounts {
            add: c.add,
            delete: c.delete,
        }),
        applied: row.applied.clone(),
        failure: row.failure.clone(),
        way: row.way,
        progress: row.progress.as_ref().map(stored_owed),
    };
    let mut item: Item = serde_dynamo::to_item(stored)?;
    item.extend(key(row.key()));
    item.insert(
        k::RECEIVED_KEY.to_owned(),
        s(k::received_key(row.received_ms, &row.message_id, row.chunk)),
    );
    item.insert(
        k::RECEIVED_SHARD.to_owned(),
        s(k::received_shard(
            &row.project_id,
            &row.message_id,
            row.chunk,
        )),
    );
    Ok(item)
}

fn of_stored(stored: Stored) -> Result<InboxRow, String> {
    Ok(InboxRow {
        project_id: stored.project_id,
        message_id: stored.message_id,
        chunk: stored.chunk,
        message_ts: stored.message_ts,
        received_ms: stored.received_ms,
        status: stored.status,
        payload: stored.payload.map(|b| b.into_vec()).unwrap_or_default(),
        changes: stored.changes.map(|b| b.into_vec()),
        chunk_count: stored.chunk_count,
        profile_count: stored.profile_count,
        expires_at: stored.expires_at,
        outcomes: stored.outcomes,
        handed_on: stored.change_counts.map(|c| ChangeCounts {
            add: c.add,
            delete: c.delete,
        }),
        applied: stored.applied,
        failure: stored.failure,
        way: stored.way,
        progress: stored.progress.map(owed_of_stored).transpose()?,
    })
}

/// A row from its item.
pub fn row(item: Item) -> Result<InboxRow, StoreError> {
    of_stored(serde_dynamo::from_item(item)?).map_err(StoreError::Corrupt)
}

/// A row from a stream record's new image.
pub fn row_of_image(image: &serde_dynamo::Item) -> Result<InboxRow, String> {
    serde_dynamo::from_item(image.clone())
        .map_err(|e: serde_dynamo::Error| e.to_string())
        .and_then(of_stored)
}

/// `received → resolved`: the changes and outcome counts on, the payload off.
pub fn resolved_update(handoff: Handoff<'_>, now_ms: i64) -> Result<UpdateSpec, StoreError> {
    let counts = AttributeValue::M(
        [
            ("add".to_owned(), n(handoff.handed_on.add)),
            ("delete".to_owned(), n(handoff.handed_on.delete)),
        ]
        .into(),
    );
    let owed = handoff
        .owed_after
        .map(|o| AttributeValue::M(o.iter().map(|(a, c)| (a.to_string(), n(*c))).collect()));
    let set_owed = if owed.is_some() {
        ", #progress = :owed"
    } else {
        ""
    };
    let spec = UpdateSpec::new(format!(
        "SET #st = :resolved, #changes = :c, #outcomes = :o, #counts = :cc, #at = :now{set_owed} REMOVE #payload",
    ))
    .condition("#st = :received")
    .name("#st", k::STATUS)
    .name("#changes", CHANGES)
    .name("#outcomes", OUTCOMES)
    .name("#counts", CHANGE_COUNTS)
    .name("#at", RESOLVED_MS)
    .name("#payload", PAYLOAD)
    .value(":resolved", status(InboxStatus::Resolved))
    .value(":received", status(InboxStatus::Received))
    .value(":c", AttributeValue::B(Blob::new(handoff.changes.to_vec())))
    .value(":o", serde_dynamo::to_attribute_value(handoff.outcomes)?)
    .value(":cc", counts)
    .value(":now", n(now_ms));
    Ok(match owed {
        Some(owed) => spec.name("#progress", PROGRESS).value(":owed", owed),
        None => spec,
    })
}

/// `resolved → materialized`: what was applied on, the changes off.
pub fn materialized_update(
    applied: &MaterializeCounts,
    now_ms: i64,
) -> Result<UpdateSpec, StoreError> {
    Ok(
        UpdateSpec::new("SET #st = :done, #applied = :a, #at = :now REMOVE #changes, #progress")
            .condition("#st = :resolved")
            .name("#progress", PROGRESS)
            .name("#st", k::STATUS)
            .name("#applied", APPLIED)
            .name("#at", MATERIALIZED_MS)
            .name("#changes", CHANGES)
            .value(":done", status(InboxStatus::Materialized))
            .value(":resolved", status(InboxStatus::Resolved))
            .value(":a", serde_dynamo::to_attribute_value(applied)?)
            .value(":now", n(now_ms)),
    )
}

/// `from` (`received` or `resolved`) → `failed`, with the reason; its profiles and changes off
/// (personal data is not kept for the inbox's 30 days; the key stays, so a redelivery is still a
/// duplicate).
pub fn failed_update(from: InboxStatus, reason: &str, now_ms: i64) -> UpdateSpec {
    UpdateSpec::new(
        "SET #st = :failed, #failure = :why, #at = :now REMOVE #payload, #changes, #progress",
    )
    .condition("#st = :from")
    .name("#progress", PROGRESS)
    .name("#payload", PAYLOAD)
    .name("#changes", CHANGES)
    .name("#st", k::STATUS)
    .name("#failure", FAILURE)
    .name("#at", FAILED_MS)
    .value(":failed", status(InboxStatus::Failed))
    .value(":from", status(from))
    .value(":why", s(reason))
    .value(":now", n(now_ms))
}

fn status(status: InboxStatus) -> AttributeValue {
    s(status.as_str())
}

/// A stored inbox row as a line of the sync log (the index projects only these attributes).
pub fn sync_row(item: &Item) -> Result<SyncRow, StoreError> {
    let counts = |name: &str| -> BTreeMap<String, i64> {
        item.get(name)
            .and_then(|v| v.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let status = get_s(item, k::STATUS).unwrap_or(InboxStatus::Received.as_str());
    let status = InboxStatus::parse(status)
        .ok_or_else(|| StoreError::Corrupt(format!("inbox row with status {status:?}")))?;
    Ok(SyncRow {
        position: get_s(item, k::RECEIVED_KEY).unwrap_or_default().to_owned(),
        message_id: get_s(item, MESSAGE_ID).unwrap_or_default().to_owned(),
        status,
        failure: get_s(item, FAILURE).map(str::to_owned),
        profile_count: get_n(item, PROFILE_COUNT).unwrap_or(0),
        chunk_count: get_n(item, CHUNK_COUNT).unwrap_or(1),
        received_ms: get_n(item, RECEIVED_MS),
        outcomes: counts(OUTCOMES),
        handed_on: counts(CHANGE_COUNTS),
        applied: counts(APPLIED),
    })
}

/// A sync-log index entry's time key (its place in the log).
pub fn received_key(item: &Item) -> Option<&str> {
    get_s(item, k::RECEIVED_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::batch::Chunk;
    use crate::ports::inbox::BatchMeta;

    fn stored_row() -> InboxRow {
        let meta = BatchMeta {
            project_id: "P1",
            message_id: "m-1",
            message_ts: 1_700_000_000_000,
            received_ms: 1_700_000_000_500,
            way: Default::default(),
        };
        let chunk = Chunk {
            index: 2,
            profile_count: 3,
            payload: vec![1, 2, 3],
            audiences: Default::default(),
        };
        meta.row(&chunk, 4)
    }

    #[test]
    fn a_row_round_trips_through_its_item_with_its_keys() {
        let mut row = stored_row();
        let item = item(&row).unwrap();
        assert_eq!(item[keys::PK], s(k::pk("P1", "m-1", 2)));
        assert_eq!(item[keys::SK], s(k::sk("m-1", 2)));
        assert_eq!(item[k::STATUS], s("received"));
        assert!(item.contains_key(k::RECEIVED_SHARD) && item.contains_key(k::RECEIVED_KEY));
        assert_eq!(super::row(item).unwrap(), row);

        row.status = InboxStatus::Resolved;
        row.payload.clear();
        row.changes = Some(vec![9]);
        row.outcomes = Some(ResolveOutcomes {
            created: 2,
            ..Default::default()
        });
        row.handed_on = Some(ChangeCounts { add: 3, delete: 1 });
        row.failure = Some("why".into());
        row.applied = Some(MaterializeCounts {
            added: 1,
            ..Default::default()
        });
        assert_eq!(super::row(super::item(&row).unwrap()).unwrap(), row);
    }

    #[test]
    fn a_row_reads_as_its_sync_log_line() {
        let mut row = stored_row();
        row.handed_on = Some(ChangeCounts { add: 3, delete: 1 });
        let line = sync_row(&item(&row).unwrap()).unwrap();
        assert_eq!(line.message_id, "m-1");
        assert_eq!(line.status, InboxStatus::Received);
        assert_eq!((line.profile_count, line.chunk_count), (3, 4));
        assert_eq!(line.handed_on.get("add"), Some(&3));
        assert_eq!(line.position, k::received_key(row.received_ms, "m-1", 2));
    }

    #[test]
    fn an_unknown_status_is_a_corrupt_item_not_a_default() {
        let mut item = item(&stored_row()).unwrap();
        item.insert(k::STATUS.to_owned(), s("done"));
        assert!(matches!(sync_row(&item), Err(StoreError::Corrupt(_))));
        assert!(matches!(row(item), Err(StoreError::Corrupt(_))));
    }
}
