#!/usr/bin/env bash
# Fails when the builds scripts/test.sh makes would compile a dependency with another set of
# features than the test build does: the README's functions walkthrough (`cargo lambda watch -p
# ingest`, `-p send`, `cargo run --features aws`) would then rebuild most of the dependency tree,
# three times, on a fresh clone. The fix is a feature pin in shared/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

features() {
  cargo tree --locked "$@" -f '{p} {f}' --prefix none 2>/dev/null | sed 's/ (\*)$//' | grep -v " (${PWD}/" | sort -u
}
all=$(mktemp)
trap 'rm -f "$all"' EXIT
features --workspace -e normal,build,dev >"$all"
status=0
for build in "-p ingest" "-p send" "-p herald-cli --features herald-cli/aws"; do
  # shellcheck disable=SC2086
  extra=$(features $build -e normal,build | comm -13 "$all" -)
  if [ -n "$extra" ]; then
    echo "cargo build $build compiles these with features the test build lacks (pin them in shared/Cargo.toml):" >&2
    echo "$extra" >&2
    status=1
  fi
done
exit $status
