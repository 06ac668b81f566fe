#!/usr/bin/env bash
# Runs every Herald check and test. Installs what the tests need first (a .venv with the pinned
# AWS emulator, cfn-lint and cargo-lambda), so a fresh clone passes; .ci/run calls exactly this.
#
#   scripts/test.sh              everything
#   SKIP_LINT=1 scripts/test.sh  tests only
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# ---------------------------------------------------------------- tools
install_tools

# ---------------------------------------------------------------- lint
if [ -z "${SKIP_LINT:-}" ]; then
  step "rustfmt"
  cargo fmt --all -- --check
  step "clippy"
  cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
  step "the Lambda functions link no SQLite"
  if cargo tree -p ingest -p send -e normal --locked | grep -q rusqlite; then
    echo "ingest or send depends on rusqlite: keep the embedded adapters behind herald's 'embedded' feature" >&2
    exit 1
  fi
  step "cfn-lint template.yaml"
  cfn-lint template.yaml
fi

# ---------------------------------------------------------------- the AWS emulator
start_emulator
export HERALD_TEST_AWS_ENDPOINT="$AWS_EMULATOR"

# ---------------------------------------------------------------- tests
step "cargo test: unit, contract (SQLite and AWS), API, handlers, batching, restart, README"
cargo test --workspace --all-targets --locked --features herald-tests/aws-emulator
