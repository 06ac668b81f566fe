#!/usr/bin/env bash
# Herald's benchmarks: runs the parts and rewrites BENCHMARKS.md from their figures.
#
#   scripts/bench.sh                 every part, then the report (about 10 minutes with a warm build,
#                                    plus the audience part's million members: AUDIENCE_MEMBERS sets them)
#   scripts/bench.sh http e2e        only those parts; the report keeps the others' last figures
#   scripts/bench.sh report          only rewrite BENCHMARKS.md
#
# Parts: plan (criterion, in process), http (wrk on `herald serve` and on a hello-world axum server), e2e (sandbox, provider
# sink, rate limiter), lambda (cold start and memory on a fake runtime API), cost (AWS requests
# and capacity units on the emulator), size (arm64 Lambda bundles), audience (a segment of a
# million contacts fanned out and sent). Figures land in target/bench/.
# COST_RECIPIENTS sets the cost broadcast's size (default 500: the emulator serves a few hundred requests/s
# and copies its whole table on every transaction, so 10,000 recipients run far past the 10-minute
# budget there; the per-recipient counts do not depend on the size).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(plan http e2e lambda cost size audience)
install_tools
# The HTTP load generator of part 2 (Debian package).
command -v wrk >/dev/null || { step "installing wrk"; apt-get update -qq && apt-get install -y -qq wrk; }

step "building the release binaries"
# The functions on their own: built beside the bench driver they would get its features (SQLite
# and all) and not be the binaries that are deployed.
cargo build --release --locked -p ingest -p send -p hello-lambda -p hello-http
cargo build --release --locked -p herald-cli -p herald-bench
bench=target/release/herald-bench

for part in "${parts[@]}"; do
  case "$part" in
    plan)
      step "part 1: parse + validate + plan (criterion)"
      cargo bench --locked -p herald --features benching --bench plan -- --warm-up-time 1 --measurement-time 4
      ;;
    http | e2e)
      step "part $part"
      "$bench" "$part"
      ;;
    lambda | cost)
      [ -n "${AWS_EMULATOR:-}" ] || start_emulator
      step "part $part (AWS emulator at $AWS_EMULATOR)"
      if [ "$part" = cost ]; then
        "$bench" cost --aws-endpoint "$AWS_EMULATOR" --recipients "${COST_RECIPIENTS:-500}"
      else
        "$bench" lambda --aws-endpoint "$AWS_EMULATOR"
      fi
      ;;
    audience)
      step "part 8: audiences (${AUDIENCE_MEMBERS:-1000000} members)"
      "$bench" audience --members "${AUDIENCE_MEMBERS:-1000000}"
      ;;
    size)
      step "part 7: Lambda bundle sizes"
      scripts/build-lambdas.sh
      ;;
    report) ;;
    *)
      echo "unknown part $part (plan http e2e lambda cost size audience report)" >&2
      exit 2
      ;;
  esac
done

step "writing BENCHMARKS.md"
"$bench" report
