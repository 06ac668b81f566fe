//! Any bytes, to any body-reading endpoint (native API, every dialect, provider callbacks):
//! Herald must answer without a panic and without a 5xx.
#![no_main]

use std::sync::OnceLock;

use herald::fuzzing::Harness;
use libfuzzer_sys::fuzz_target;

static HARNESS: OnceLock<(Harness, tempfile::TempDir)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (harness, _) = HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        (Harness::new(dir.path()), dir)
    });
    let status = harness.run(data);
    assert!(status < 500, "a 5xx answer ({status}) to {:?}", String::from_utf8_lossy(data));
});
