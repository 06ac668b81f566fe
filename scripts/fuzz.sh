#!/usr/bin/env bash
# A bounded fuzz run of every target (default 60 s each) with cargo-fuzz on nightly Rust.
# Inputs that crash are saved under fuzz/artifacts/<target>/; new interesting inputs join
# fuzz/corpus/<target>/, which tests/tests/suites/fuzz_corpus.rs replays on stable in scripts/test.sh.
#   scripts/fuzz.sh              every target, 60 s each
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh api
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("${@:-api}")
[ $# -gt 0 ] || targets=(api parsers)
for t in "${targets[@]}"; do
  printf '\n== fuzzing %s for %s s\n' "$t" "${SECONDS_PER_TARGET:-60}"
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="${SECONDS_PER_TARGET:-60}" -rss_limit_mb=4096
done
