#!/usr/bin/env bash
# Runs every Herald check and test. Installs what the tests need first (a .venv with the pinned
# AWS emulator, cfn-lint, SAM CLI and cargo-lambda, the arm64 Rust target), so a fresh clone
# passes; .ci/run calls exactly this.
#
#   scripts/test.sh               everything
#   SKIP_LINT=1 scripts/test.sh   tests only
#   scripts/test.sh --tools-only  install the tools and stop (under a minute the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "" | --tools-only) ;;
  *) echo "usage: scripts/test.sh [--tools-only]" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# SAM CLI would otherwise report usage to AWS, which is out of reach here.
export SAM_CLI_TELEMETRY=0

# ---------------------------------------------------------------- tools
install_tools
[ "${1:-}" = --tools-only ] && exit 0

# ---------------------------------------------------------------- lint
if [ -z "${SKIP_LINT:-}" ]; then
  step "rustfmt"
  cargo fmt --all -- --check
  step "the Lambda functions link no SQLite"
  if cargo tree -p ingest -p send -e normal --locked | grep -q rusqlite; then
    echo "ingest or send depends on rusqlite: keep the embedded adapters behind herald's 'embedded' feature" >&2
    exit 1
  fi
  step "every build this script makes shares the test build's dependency units"
  scripts/check_features.sh
  step "the library's shape: no circle between top-level modules, no function over 80 lines"
  python3 scripts/check_shape.py --self-test
  python3 scripts/check_shape.py shared/src
  step "cfn-lint template.yaml"
  cfn-lint template.yaml
  step "sam validate --lint"
  sam validate --lint
fi

# ---------------------------------------------------------------- the build beside the tests
# Every crate for every target, so the offline builds find them all.
cargo fetch --locked
trap 'stop_background; stop_emulator' EXIT
# The deploy path as SAM drives it (template, CodeUri, cargo-lambda, zig, the aarch64 target), with
# the release profile's optimisation turned down: optimised with thin LTO it costs about 1,460 CPU
# seconds (12+ minutes on 2 cores), which would double this script. Into target/, so .aws-sam/
# never holds these bootstraps for a later `sam deploy`.
background sam-build offline env CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 sam build --build-dir target/sam-build

# ---------------------------------------------------------------- the AWS emulator
start_emulator
export HERALD_TEST_AWS_ENDPOINT="$AWS_EMULATOR"

# ---------------------------------------------------------------- tests
# Clippy runs inside the test build rather than as a build of its own: `cargo clippy` is cargo
# with clippy-driver as the workspace crates' compiler, and so is this, with codegen. A separate
# clippy run checked every dependency a second time and was the last thing a fresh clone waited
# for (1,947 s of a 2,120 s run on 2 cores). --all-features: what `cargo clippy --all-features`
# linted (herald-cli's `aws` code too); it adds no dependency feature (check_features.sh).
if [ -z "${SKIP_LINT:-}" ]; then
  step "clippy's lints fail a planted warning (so the test build below cannot pass unlinted)"
  lint_self_test
  export RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER" CLIPPY_ARGS="$CLIPPY_DENY_WARNINGS"
fi
step "cargo test (linted by clippy): unit, contract (SQLite and AWS), API, handlers, batching, restart, README"
cargo test --workspace --all-targets --all-features --locked
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
step "the official twilio package against the Twilio dialect of herald serve (built by cargo test)"
.venv/bin/python scripts/test_twilio_sdk.py
step "the official standardwebhooks package verifying the status events of herald serve"
.venv/bin/python scripts/test_events_sdk.py
step "the dashboard in headless Chromium: sign in, a 1,000-recipient broadcast to 100 %, a failed row's error"
.venv/bin/python scripts/test_dashboard.py
step "the OpenAPI document: validated, Schemathesis against herald serve, a Python client generated"
.venv/bin/python scripts/test_openapi.py

stop_emulator

# ---------------------------------------------------------------- the README's AWS commands
step "README \"The functions on your machine\", run as written (offline)"
offline .venv/bin/python scripts/test_local_functions.py

# ---------------------------------------------------------------- the background build
finish sam-build
step "sam build made both arm64 bootstraps"
for f in target/sam-build/IngestFunction/bootstrap target/sam-build/SendFunction/bootstrap; do
  # An ELF file whose e_machine (offset 18) is 0xb7, aarch64: what the template's arm64 runs.
  [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = 177ELF ] && [ "$(od -An -tx2 -j18 -N2 "$f" | tr -d ' ')" = 00b7 ] \
    || { echo "$f is not an arm64 Linux executable" >&2; exit 1; }
  echo "$f: arm64 ELF, $(stat -c %s "$f") bytes"
done
step "done"
