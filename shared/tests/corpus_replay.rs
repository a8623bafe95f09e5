//! Replays the fuzz corpus through the fuzz target's property, as an ordinary test: the seed
//! corpus (`shared/tests/fixtures/*.json`, one file per message shape), every committed crash
//! reproduction (`fuzz/regressions/*`), and for each of those its truncations and a few byte
//! flips. libFuzzer itself runs in `scripts/fuzz` (long runs).

use std::path::Path;

use shared::domain::round_trip::check_parse_and_store;

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter(|e| e.file_name() != ".gitkeep")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_corpus_and_its_mutations_keep_the_property() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = files_in(&root.join("tests/fixtures"));
    let seeds = corpus.len();
    corpus.extend(files_in(&root.join("../fuzz/regressions")));
    assert!(seeds >= 10, "the seed corpus is there ({seeds} files)");
    let mut inputs = 0usize;
    for (name, bytes) in &corpus {
        let mut run = |data: &[u8]| {
            let outcome = std::panic::catch_unwind(|| check_parse_and_store(data));
            assert!(
                outcome.is_ok(),
                "{name}: the property broke on {:?}",
                String::from_utf8_lossy(data)
            );
            inputs += 1;
        };
        run(bytes);
        for cut in (0..bytes.len()).step_by(7) {
            run(&bytes[..cut]);
        }
        for at in (0..bytes.len()).step_by(13) {
            for flip in [b'{', b'"', b'\\', b'0', 0xff] {
                let mut m = bytes.clone();
                m[at] = flip;
                run(&m);
            }
        }
    }
    assert!(inputs > 1_000, "{inputs} inputs replayed");
}
