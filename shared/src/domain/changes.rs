//! Resolved membership changes: what resolve hands to materialize, and their total order.

use serde::{Deserialize, Serialize};

/// Add or delete: the only actions that change membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Add,
    Delete,
}

/// One profile's membership change for one segment, from one audience entry of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    #[serde(rename = "c")]
    pub clevertap_id: String,
    /// The profile's Identity when the ladder resolved one (shown in member lists).
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(rename = "s")]
    pub audience_id: i64,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub audience_name: Option<String>,
    #[serde(rename = "a")]
    pub action: ChangeAction,
    /// The message's `timestamp_ms`.
    #[serde(rename = "t")]
    pub ts_ms: i64,
    #[serde(rename = "m")]
    pub message_id: String,
    /// Position of the profile in the message and of the entry in the profile.
    #[serde(rename = "p")]
    pub profile_index: u32,
    #[serde(rename = "e")]
    pub entry_index: u32,
    /// When authorize received its request (ms): each change's freshness is counted from there
    /// (changes handed on before it was recorded have none).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<i64>,
    /// The way its request came (`domain::ways`): its Partner Sync event is published by that
    /// way's feed mapping, so a live change's event never waits behind an import's.
    #[serde(
        rename = "w",
        default,
        skip_serializing_if = "crate::domain::ways::Way::is_live"
    )]
    pub way: crate::domain::ways::Way,
}

impl MembershipChange {
    /// A sortable string: message time first, then message id and position as tie-breakers, so
    /// every change has one place in a total order. Compared as strings inside DynamoDB conditions.
    pub fn version(&self) -> String {
        format!(
            "{:013}#{}#{:06}#{:04}",
            self.ts_ms.max(0),
            self.message_id,
            self.profile_index,
            self.entry_index
        )
    }

    /// Identifies the change (and its Partner Sync event) across redeliveries of the message.
    pub fn change_id(&self) -> String {
        // Zero-padded so that the events of one message sort in the order they were applied.
        format!(
            "{}:{:06}:{:04}",
            self.message_id, self.profile_index, self.entry_index
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("resolved changes are unreadable: {0}")]
pub struct ChangesDecodeError(String);

pub fn encode_changes(changes: &[MembershipChange]) -> Vec<u8> {
    let json = serde_json::to_vec(changes).expect("plain data serializes");
    lz4_flex::compress_prepend_size(&json)
}

/// Most bytes a chunk's decoded changes may take: changes come from at most one chunk's profiles
/// (JSON of at most `MAX_CHUNK_JSON_BYTES`), each change a few hundred bytes at most.
pub const MAX_CHANGES_JSON_BYTES: usize = 16 * 1024 * 1024;

pub fn decode_changes(bytes: &[u8]) -> Result<Vec<MembershipChange>, ChangesDecodeError> {
    let json = crate::domain::batch::decompress_bounded(bytes, MAX_CHANGES_JSON_BYTES)
        .map_err(ChangesDecodeError)?;
    serde_json::from_slice(&json).map_err(|e| ChangesDecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ts: i64, msg: &str, p: u32) -> MembershipChange {
        MembershipChange {
            clevertap_id: "__x".into(),
            identity: None,
            audience_id: 1,
            audience_name: None,
            action: ChangeAction::Add,
            ts_ms: ts,
            message_id: msg.into(),
            profile_index: p,
            entry_index: 0,
            received_ms: None,
            way: Default::default(),
        }
    }

    #[test]
    fn a_size_prefix_beyond_the_bound_is_refused_before_allocating() {
        let mut bytes = encode_changes(&[]);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode_changes(&bytes).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn versions_order_by_time_then_message_then_position() {
        assert!(change(9, "z", 0).version() < change(10, "a", 0).version());
        assert!(change(10, "a", 5).version() < change(10, "b", 0).version());
        assert!(change(10, "a", 2).version() < change(10, "a", 10).version());
    }

    #[test]
    fn encoding_round_trips() {
        let v = vec![change(1, "m", 0), change(2, "m", 1)];
        assert_eq!(decode_changes(&encode_changes(&v)).unwrap(), v);
        assert!(decode_changes(b"garbage").is_err());
    }
}
