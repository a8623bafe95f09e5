//! The property the parser fuzz target checks, as a plain function, so that the same check runs
//! in the fuzz target (`fuzz/`, libFuzzer, `scripts/fuzz`) and in the corpus replay test
//! (`shared/tests/corpus_replay.rs`, every `cargo test`): any bytes into the Firehose parser
//! never panic, every error names a place, and whatever is accepted as a membership batch
//! survives the stored form — every profile chunked, compressed, decoded back unchanged and in
//! order. Pure: no I/O.

use crate::domain::batch::{
    ChunkBuilder, ChunkError, MAX_CHUNK_JSON_BYTES, MAX_CHUNK_PROFILES, MAX_CHUNKS, StoredProfile,
    build_chunks, decode_chunk,
};
use crate::domain::protocol::{Request, parse_request, parse_request_into};

/// Checks the property for one input; panics (with what broke) if it does not hold.
pub fn check_parse_and_store(data: &[u8]) {
    let request = match parse_request(data) {
        Ok(r) => r,
        Err(e) => {
            // Every failure names a place: `$` or a JSON path.
            assert!(!e.path.is_empty(), "parse error without a path: {e:?}");
            return;
        }
    };
    let _ = (request.type_name(), request.envelope());
    let Request::AudienceMembershipChange(m) = request else {
        return;
    };
    let profiles = m.user_profiles.as_deref().unwrap_or_default();
    let built = build_chunks(profiles);
    // authorize's path: profiles streamed into the chunk builder while parsing.
    let streamed = match parse_request_into(data, ChunkBuilder::new()) {
        Ok(Request::AudienceMembershipChange(m)) => {
            m.user_profiles.map_or(Ok(Vec::new()), ChunkBuilder::finish)
        }
        other => panic!("parsed once as a membership, then as {other:?}"),
    };
    assert_eq!(
        streamed, built,
        "streamed chunks differ from chunks of the collected profiles"
    );
    let chunks = match built {
        Ok(c) => c,
        Err(ChunkError::ProfileTooLarge(i)) => {
            assert!(i < profiles.len(), "oversize profile index out of range");
            return;
        }
        Err(ChunkError::BatchTooLarge(_)) => return,
        // Only more than MAX_CHUNKS full chunks of profiles, or a body big enough to fill
        // chunks by bytes, can need that many chunks.
        Err(ChunkError::TooManyChunks) => {
            assert!(
                profiles.len() > MAX_CHUNKS * MAX_CHUNK_PROFILES
                    || data.len() > MAX_CHUNK_JSON_BYTES,
                "too many chunks for {} profiles in {} bytes",
                profiles.len(),
                data.len()
            );
            return;
        }
    };
    assert!(chunks.len() <= MAX_CHUNKS, "{} chunks", chunks.len());
    let mut next = 0usize;
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.index as usize, i, "chunk indexes are consecutive");
        assert!(chunk.profile_count as usize <= MAX_CHUNK_PROFILES);
        let decoded = decode_chunk(&chunk.payload).expect("a chunk we built decodes");
        assert_eq!(
            decoded.len(),
            chunk.profile_count as usize,
            "chunk {i}: profile count does not round-trip"
        );
        for d in decoded {
            assert_eq!(d.index as usize, next, "profiles stay in request order");
            assert_eq!(
                d,
                StoredProfile::from_wire(next as u32, &profiles[next]),
                "profile {next} changed in the stored form"
            );
            next += 1;
        }
    }
    assert_eq!(next, profiles.len(), "every profile is stored exactly once");
}
