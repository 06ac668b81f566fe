#!/usr/bin/env bash
# Runs every Herald test. Installs what the tests need first, so a fresh clone passes.
#   scripts/test.sh            # everything
#   SKIP_LINT=1 scripts/test.sh  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if [ -z "${SKIP_LINT:-}" ]; then
  step "rustfmt"
  cargo fmt --all -- --check
  step "clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test (unit, contract, API, restart)"
cargo test --workspace --all-targets --locked
