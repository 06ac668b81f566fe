#!/usr/bin/env bash
# Builds the two Lambda bootstraps for arm64 with cargo-lambda (from .venv, as scripts/test.sh
# installs it) and prints their sizes, as recorded in BENCHMARKS.md.
#   scripts/build-lambdas.sh            arm64 (what template.yaml deploys)
#   ARCH=--x86-64 scripts/build-lambdas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/cargo-lambda ] || { python3 -m venv .venv && .venv/bin/pip install --quiet -r scripts/requirements-test.txt; }
export PATH="$PWD/.venv/bin:$PATH"
cargo lambda build --release "${ARCH:---arm64}" -p ingest -p send --output-format zip
for f in ingest send; do
  zip="target/lambda/$f/bootstrap.zip"
  # The zip's own bootstrap beside it: an earlier unzipped build (sam build, cargo lambda watch)
  # may have left a different one there, and the benchmark report reads this one.
  unzip -o -q "$zip" bootstrap -d "target/lambda/$f"
  raw=$(unzip -l "$zip" | awk '/bootstrap$/ {print $1}')
  printf '%-7s bootstrap %9s bytes   zip %9s bytes\n' "$f" "$raw" "$(stat -c %s "$zip")"
done
