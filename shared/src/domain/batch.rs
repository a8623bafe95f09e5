//! The stored form of a membership batch: what resolution needs, chunked and compressed.
//!
//! A request is cut into chunks at profile boundaries; each chunk becomes one inbox item. The
//! stored form keeps identities, mpid and audience changes (with the connection's `userIdType`) and
//! drops device identities and other connection settings, which no later stage reads. Chunks are
//! LZ4-compressed: inbox writes are paid per KB, and JSON of ids and hashes compresses well.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::auth::setting_ids;
use crate::domain::protocol::{
    AttributeAction, AudienceAction, Encoding, ProfileSink, UserIdentityType, UserProfile,
};

/// Uncompressed bytes per chunk at most, so that any chunk, even incompressible, plus the
/// resolved changes added later, stays well under DynamoDB's 400 KB item limit.
pub const MAX_CHUNK_JSON_BYTES: usize = 200 * 1024;
/// Profiles per chunk at most: a chunk is one unit of work for resolve and materialize.
pub const MAX_CHUNK_PROFILES: usize = 500;
/// TransactWriteItems carries at most 100 items…
pub const MAX_CHUNKS: usize = 100;
/// …and at most 4 MB; stay clear of it.
pub const MAX_BATCH_STORED_BYTES: usize = 3_800_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIdentity {
    #[serde(rename = "t")]
    pub kind: String,
    #[serde(rename = "e")]
    pub encoding: String,
    #[serde(rename = "v")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAttribute {
    #[serde(rename = "k")]
    pub key: String,
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub list_value: Option<Vec<String>>,
    #[serde(rename = "a")]
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAudience {
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub audience_id: Option<i64>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "a")]
    pub action: String,
    /// The connection's `userIdType` setting, when set.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id_type: Option<String>,
    #[serde(rename = "at", default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<StoredAttribute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProfile {
    /// Position of the profile in the request: part of every change's ordering key.
    #[serde(rename = "x")]
    pub index: u32,
    #[serde(rename = "ui", default, skip_serializing_if = "Vec::is_empty")]
    pub user_identities: Vec<StoredIdentity>,
    #[serde(rename = "pi", default, skip_serializing_if = "Vec::is_empty")]
    pub partner_identities: Vec<StoredIdentity>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub mpid: Option<String>,
    #[serde(rename = "au", default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<StoredAudience>,
}

impl StoredProfile {
    /// Whether the profile is within the profile-level bounds (`protocol::limits`): its
    /// identities, mpid, audience names and attributes. A profile beyond them is skipped as
    /// `too_long`; nothing of it reaches a key or an item DynamoDB would refuse.
    pub fn within_limits(&self) -> bool {
        use crate::domain::protocol::limits::*;
        let identities_ok = self
            .user_identities
            .iter()
            .chain(&self.partner_identities)
            .all(|i| i.value.len() <= MAX_IDENTITY_BYTES && i.kind.len() <= MAX_IDENTITY_BYTES)
            && self
                .mpid
                .as_ref()
                .is_none_or(|m| m.len() <= MAX_IDENTITY_BYTES);
        let attribute_ok = |a: &StoredAttribute| {
            a.key.len() <= MAX_ATTRIBUTE_KEY_BYTES
                && a.value
                    .as_ref()
                    .is_none_or(|v| v.len() <= MAX_ATTRIBUTE_VALUE_BYTES)
                && a.list_value.as_ref().is_none_or(|l| {
                    l.iter().map(String::len).sum::<usize>() <= MAX_ATTRIBUTE_VALUE_BYTES
                })
        };
        let audiences_ok = self.audiences.iter().all(|e| {
            e.name
                .as_ref()
                .is_none_or(|n| n.len() <= MAX_AUDIENCE_NAME_BYTES)
                && e.user_id_type
                    .as_ref()
                    .is_none_or(|u| u.len() <= MAX_IDENTITY_BYTES)
                && e.attributes.len() <= MAX_ATTRIBUTES_PER_ENTRY
                && e.attributes.iter().all(attribute_ok)
        });
        identities_ok && audiences_ok
    }
}

impl StoredIdentity {
    pub fn encoding(&self) -> Encoding {
        Encoding::from_wire(&self.encoding)
    }
    pub fn user_type(&self) -> UserIdentityType {
        UserIdentityType::from_wire(&self.kind)
    }
}

impl StoredAudience {
    pub fn action(&self) -> AudienceAction {
        AudienceAction::from_wire(&self.action)
    }
}

impl StoredAttribute {
    pub fn action(&self) -> AttributeAction {
        AttributeAction::from_wire(&self.action)
    }
}

impl StoredProfile {
    pub fn from_wire(index: u32, p: &UserProfile) -> Self {
        let identity = |kind: &str, encoding: &Encoding, value: Option<&str>| {
            value.map(|v| StoredIdentity {
                kind: kind.to_owned(),
                encoding: encoding.as_str().to_owned(),
                value: v.to_owned(),
            })
        };
        Self {
            index,
            user_identities: p
                .user_identities
                .iter()
                .filter_map(|i| identity(i.kind.as_str(), &i.encoding, i.value.as_deref()))
                .collect(),
            partner_identities: p
                .partner_identities
                .iter()
                .filter_map(|i| identity(i.kind.as_str(), &i.encoding, i.value.as_deref()))
                .collect(),
            mpid: p.mpid.as_deref().map(str::to_owned),
            audiences: p
                .audiences
                .iter()
                .map(|a| StoredAudience {
                    audience_id: a.audience_id,
                    name: a.audience_name.as_deref().map(str::to_owned),
                    action: a.action.as_str().to_owned(),
                    user_id_type: a
                        .audience_subscription_settings
                        .get(setting_ids::USER_ID_TYPE)
                        .map(str::to_owned),
                    attributes: a
                        .user_attributes
                        .iter()
                        .map(|u| StoredAttribute {
                            key: u.key.clone().into_owned(),
                            value: u.value.as_deref().map(str::to_owned),
                            list_value: (u.list_value.as_ref())
                                .map(|l| l.iter().map(|v| v.clone().into_owned()).collect()),
                            action: u.action.as_str().to_owned(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

// Borrowed mirrors of the stored types: the hot path serializes straight from the parsed
// request without cloning a string. Field names must match the owned types above.

#[derive(Serialize)]
struct IdentityRef<'a> {
    t: &'a str,
    e: &'a str,
    v: &'a str,
}

#[derive(Serialize)]
struct AttributeRef<'a> {
    k: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l: Option<&'a [Cow<'a, str>]>,
    a: &'a str,
}

#[derive(Serialize)]
struct AudienceRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    i: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<&'a str>,
    a: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    at: Vec<AttributeRef<'a>>,
}

#[derive(Serialize)]
struct ProfileRef<'a> {
    x: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ui: Vec<IdentityRef<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pi: Vec<IdentityRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    au: Vec<AudienceRef<'a>>,
}

impl<'a> ProfileRef<'a> {
    fn new(index: u32, p: &'a UserProfile<'a>) -> Self {
        Self {
            x: index,
            ui: p
                .user_identities
                .iter()
                .filter_map(|i| {
                    Some(IdentityRef {
                        t: i.kind.as_str(),
                        e: i.encoding.as_str(),
                        v: i.value.as_deref()?,
                    })
                })
                .collect(),
            pi: p
                .partner_identities
                .iter()
                .filter_map(|i| {
                    Some(IdentityRef {
                        t: i.kind.as_str(),
                        e: i.encoding.as_str(),
                        v: i.value.as_deref()?,
                    })
                })
                .collect(),
            m: p.mpid.as_deref(),
            au: p
                .audiences
                .iter()
                .map(|a| AudienceRef {
                    i: a.audience_id,
                    n: a.audience_name.as_deref(),
                    a: a.action.as_str(),
                    u: a.audience_subscription_settings
                        .get(setting_ids::USER_ID_TYPE),
                    at: a
                        .user_attributes
                        .iter()
                        .map(|u| AttributeRef {
                            k: &u.key,
                            v: u.value.as_deref(),
                            l: u.list_value.as_deref(),
                            a: u.action.as_str(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// One chunk ready to store: its profiles, compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: u32,
    pub profile_count: u32,
    pub payload: Vec<u8>,
    /// Its membership changes per audience id (entries naming an audience): what it owes each
    /// audience's import progress (`domain::progress`).
    pub audiences: crate::domain::progress::Owed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("user_profiles[{0}] is too large to store (over {MAX_CHUNK_JSON_BYTES} bytes)")]
    ProfileTooLarge(usize),
    #[error("the batch is too large to store atomically ({0} bytes after compression)")]
    BatchTooLarge(usize),
    #[error(
        "the batch has too many profiles to store atomically (at most {} chunks of {MAX_CHUNK_PROFILES})",
        MAX_CHUNKS
    )]
    TooManyChunks,
}

/// Cuts profiles into chunks at profile boundaries and compresses each.
pub fn build_chunks(profiles: &[UserProfile<'_>]) -> Result<Vec<Chunk>, ChunkError> {
    let mut builder = ChunkBuilder::new();
    for p in profiles {
        builder.add(p);
    }
    builder.finish()
}

/// Builds chunks one profile at a time, as the parser reads them ([`ProfileSink`]): each profile is
/// written in its stored form into the open chunk, which is compressed when full, so only the
/// compressed chunks and one open chunk are kept. The first profile that cannot be stored stops
/// the building and is reported by [`ChunkBuilder::finish`]; later profiles are only counted.
#[derive(Debug)]
pub struct ChunkBuilder {
    chunks: Vec<Chunk>,
    /// The open chunk's JSON array, without its closing bracket.
    open: Vec<u8>,
    open_count: u32,
    open_audiences: crate::domain::progress::Owed,
    /// One profile's JSON, reused.
    one: Vec<u8>,
    profiles: usize,
    compressed_bytes: usize,
    error: Option<ChunkError>,
}

impl Default for ChunkBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkBuilder {
    pub fn new() -> Self {
        Self {
            chunks: Vec::new(),
            open: Vec::new(),
            open_count: 0,
            open_audiences: Default::default(),
            one: Vec::with_capacity(1024),
            profiles: 0,
            compressed_bytes: 0,
            error: None,
        }
    }

    /// Profiles seen so far, stored or not.
    pub fn profile_count(&self) -> usize {
        self.profiles
    }

    /// Adds the next profile of the request.
    pub fn add(&mut self, p: &UserProfile<'_>) {
        let index = self.profiles;
        self.profiles += 1;
        if self.error.is_some() {
            return;
        }
        self.one.clear();
        serde_json::to_writer(&mut self.one, &ProfileRef::new(index as u32, p))
            .expect("serializing plain data to memory cannot fail");
        if self.one.len() + 2 > MAX_CHUNK_JSON_BYTES {
            self.error = Some(ChunkError::ProfileTooLarge(index));
            return;
        }
        if self.open_count as usize >= MAX_CHUNK_PROFILES
            || self.open.len() + self.one.len() + 2 > MAX_CHUNK_JSON_BYTES
        {
            self.seal();
            // Refuse early rather than compress a batch that cannot be stored.
            if self.chunks.len() >= MAX_CHUNKS {
                self.error = Some(ChunkError::TooManyChunks);
                return;
            }
        }
        if self.open_count == 0 {
            self.open.reserve(MAX_CHUNK_JSON_BYTES);
            self.open.push(b'[');
        } else {
            self.open.push(b',');
        }
        self.open.extend_from_slice(&self.one);
        self.open_count += 1;
        for id in p.audiences.iter().filter_map(|a| a.audience_id) {
            *self.open_audiences.entry(id).or_default() += 1;
        }
    }

    /// Compresses the open chunk, if it has profiles.
    fn seal(&mut self) {
        if self.open_count == 0 {
            return;
        }
        self.open.push(b']');
        let payload = lz4_flex::compress_prepend_size(&self.open);
        self.compressed_bytes += payload.len();
        self.chunks.push(Chunk {
            index: self.chunks.len() as u32,
            profile_count: self.open_count,
            payload,
            audiences: std::mem::take(&mut self.open_audiences),
        });
        self.open.clear();
        self.open_count = 0;
    }

    /// The chunks, or why the batch cannot be stored.
    pub fn finish(mut self) -> Result<Vec<Chunk>, ChunkError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.seal();
        if self.compressed_bytes > MAX_BATCH_STORED_BYTES {
            return Err(ChunkError::BatchTooLarge(self.compressed_bytes));
        }
        Ok(self.chunks)
    }
}

impl<'de> ProfileSink<'de> for ChunkBuilder {
    fn push(&mut self, profile: UserProfile<'de>) {
        self.add(&profile);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("stored chunk is unreadable: {0}")]
pub struct DecodeError(String);

/// Decompresses LZ4 with a little-endian `u32` size prefix, refusing a prefix above `max`
/// before anything is allocated: a stored blob is trusted only as far as its limits.
pub fn decompress_bounded(bytes: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let prefix: [u8; 4] = bytes
        .get(..4)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| "shorter than its size prefix".to_owned())?;
    let size = u32::from_le_bytes(prefix) as usize;
    if size > max {
        return Err(format!(
            "size prefix {size} exceeds the limit of {max} bytes"
        ));
    }
    lz4_flex::decompress_size_prepended(bytes).map_err(|e| e.to_string())
}

pub fn decode_chunk(payload: &[u8]) -> Result<Vec<StoredProfile>, DecodeError> {
    // A chunk's JSON is at most MAX_CHUNK_JSON_BYTES (its brackets included).
    let json = decompress_bounded(payload, MAX_CHUNK_JSON_BYTES + 2).map_err(DecodeError)?;
    serde_json::from_slice(&json).map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::protocol::{Request, parse_request};

    fn profiles(n: usize) -> Vec<UserProfile<'static>> {
        let body = serde_json::json!({
            "type": "audience_membership_change_request", "id": "m", "timestamp_ms": 1,
            "account": {"account_id": 1},
            "user_profiles": (0..n).map(|i| serde_json::json!({
                "user_identities": [{"type": "customer", "encoding": "raw", "value": format!("c{i}")}],
                "device_identities": [{"type": "android_id", "encoding": "raw", "value": "dropped"}],
                "mpid": i.to_string(),
                "audiences": [{"audience_id": 7, "audience_name": "A", "action": "add",
                    "audience_subscription_settings": {"userIdType": "email", "other": "dropped"},
                    "user_attributes": [{"key": "k", "list_value": ["a"], "action": "upsert"}]}]
            })).collect::<Vec<_>>()
        });
        match parse_request(body.to_string().as_bytes())
            .unwrap()
            .into_owned()
        {
            Request::AudienceMembershipChange(m) => m.user_profiles.unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_chunk_whose_size_prefix_is_beyond_the_limit_is_refused() {
        let mut payload = lz4_flex::compress_prepend_size(b"[]");
        assert!(decode_chunk(&payload).unwrap().is_empty());
        payload[..4].copy_from_slice(&(64u32 << 20).to_le_bytes());
        let err = decode_chunk(&payload).unwrap_err().to_string();
        assert!(err.contains("exceeds the limit"), "{err}");
        assert!(decode_chunk(&[1, 2]).is_err());
    }

    #[test]
    fn chunks_round_trip_in_order_with_indexes() {
        let ps = profiles(1_234);
        let chunks = build_chunks(&ps).unwrap();
        assert_eq!(chunks.len(), 3, "500 profiles per chunk at most");
        let decoded: Vec<StoredProfile> = chunks
            .iter()
            .flat_map(|c| decode_chunk(&c.payload).unwrap())
            .collect();
        assert_eq!(decoded.len(), ps.len());
        let owed: Vec<u64> = chunks.iter().map(|c| c.audiences[&7]).collect();
        assert_eq!(
            owed,
            [500, 500, 234],
            "each chunk owes audience 7 a change per profile"
        );
        for (i, d) in decoded.iter().enumerate() {
            assert_eq!(d.index as usize, i);
            assert_eq!(d, &StoredProfile::from_wire(i as u32, &ps[i]));
        }
        let first = &decoded[0];
        assert_eq!(first.audiences[0].user_id_type.as_deref(), Some("email"));
        let text =
            String::from_utf8(lz4_flex::decompress_size_prepended(&chunks[0].payload).unwrap())
                .unwrap();
        assert!(
            !text.contains("dropped"),
            "device ids and other settings are not stored"
        );
    }

    #[test]
    fn chunks_respect_the_byte_limit() {
        let mut ps = profiles(40);
        for p in &mut ps {
            p.audiences[0].audience_name = Some("x".repeat(20_000).into());
        }
        let chunks = build_chunks(&ps).unwrap();
        assert!(chunks.len() >= 4);
        for c in &chunks {
            let json = lz4_flex::decompress_size_prepended(&c.payload).unwrap();
            assert!(json.len() <= MAX_CHUNK_JSON_BYTES);
        }
        assert_eq!(chunks.iter().map(|c| c.profile_count).sum::<u32>(), 40);
    }

    #[test]
    fn an_oversize_profile_is_named() {
        let mut ps = profiles(3);
        ps[2].audiences[0].audience_name = Some("x".repeat(MAX_CHUNK_JSON_BYTES).into());
        assert_eq!(build_chunks(&ps), Err(ChunkError::ProfileTooLarge(2)));
    }

    #[test]
    fn more_chunks_than_a_transaction_holds_are_refused() {
        let ps = vec![UserProfile::default(); MAX_CHUNK_PROFILES * MAX_CHUNKS + 1];
        assert_eq!(build_chunks(&ps), Err(ChunkError::TooManyChunks));
        let ps = vec![UserProfile::default(); MAX_CHUNK_PROFILES * MAX_CHUNKS];
        assert_eq!(build_chunks(&ps).unwrap().len(), MAX_CHUNKS);
    }

    #[test]
    fn empty_profile_list_gives_no_chunks() {
        assert!(build_chunks(&[]).unwrap().is_empty());
    }
}
