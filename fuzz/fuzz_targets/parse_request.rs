//! Arbitrary bytes into the Firehose parser: it must never panic, and whatever it accepts as a
//! membership batch must survive the stored form. The property itself is
//! `shared::domain::round_trip::check_parse_and_store`, which `shared/tests/corpus_replay.rs` also runs on
//! the committed corpus in every `cargo test`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shared::domain::round_trip::check_parse_and_store(data);
});
