#!/usr/bin/env bash
# Runs every Herald check and test. Installs what the tests need first (a .venv with the pinned
# AWS emulator, cfn-lint and cargo-lambda), so a fresh clone passes; .ci/run calls exactly this.
#
#   scripts/test.sh              everything
#   SKIP_LINT=1 scripts/test.sh  tests only
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- tools
VENV=.venv
REQUIREMENTS=scripts/requirements-test.txt
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/moto_server" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  step "installing test tools into $VENV ($(grep -v '^#' "$REQUIREMENTS" | tr '\n' ' '))"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" > "$VENV/.requirements.sha256"
fi
export PATH="$PWD/$VENV/bin:$PATH"
for tool in curl; do
  command -v "$tool" >/dev/null || { step "installing $tool"; apt-get update -qq && apt-get install -y -qq "$tool"; }
done

# ---------------------------------------------------------------- lint
if [ -z "${SKIP_LINT:-}" ]; then
  step "rustfmt"
  cargo fmt --all -- --check
  step "clippy"
  cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
  step "cfn-lint template.yaml"
  cfn-lint template.yaml
fi

# ---------------------------------------------------------------- the AWS emulator
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
step "starting the AWS emulator (moto) on 127.0.0.1:$port"
moto_server -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
stop_moto() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap stop_moto EXIT
for _ in $(seq 1 150); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" && break
  kill -0 "$moto_pid" 2>/dev/null || { cat target/moto.log; echo "the AWS emulator exited" >&2; exit 1; }
  sleep 0.2
done
curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" || { cat target/moto.log; echo "the AWS emulator did not answer" >&2; exit 1; }
export HERALD_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"

# ---------------------------------------------------------------- tests
step "cargo test: unit, contract (SQLite and AWS), API, handlers, batching, restart, README"
cargo test --workspace --all-targets --locked --features herald-tests/aws-emulator
