//! The fuzz corpus (`fuzz/corpus/`), replayed on stable Rust in every test run: every input the
//! fuzzers kept (seeds and anything they found) must still get a non-5xx answer and no panic.

use std::path::PathBuf;

use herald::fuzzing::{parsers, Harness};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    files
}

#[test]
fn the_api_corpus_never_gets_a_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::new(dir.path());
    let mut accepted = 0;
    for (path, data) in corpus("api") {
        let status = harness.run(&data);
        assert!((200..500).contains(&status), "{} got {status}", path.display());
        accepted += u32::from(status < 300);
        eprintln!("{} -> {status}", path.display());
    }
    assert!(accepted >= 8, "the seeds reach the handlers ({accepted} accepted)");
}

#[test]
fn the_parser_corpus_never_panics() {
    for (_, data) in corpus("parsers").into_iter().chain(corpus("api")) {
        parsers(&data);
    }
}
