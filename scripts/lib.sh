# Shared by scripts/test.sh and scripts/bench.sh: install the pinned tools, start the AWS emulator.
# Source it from the repository root.

step() { printf '\n== [%ss] %s\n' "$SECONDS" "$*"; }

# A .venv with the pinned AWS emulator, cfn-lint, SAM CLI, cargo-lambda and zig; the arm64 Rust
# target the Lambda bootstraps are built for; curl, jq, ip, and Chromium with its WebDriver (the
# dashboard's browser test) from Debian.
UV=uv==0.13.9
install_tools() {
  local venv=.venv requirements=scripts/requirements-test.txt want
  want=$( (echo "$UV"; cat "$requirements") | sha256sum | cut -d' ' -f1)
  if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    step "installing test tools into $venv ($(grep -v '^#' "$requirements" | tr '\n' ' '))"
    python3 -m venv "$venv"
    # uv installs the list in about 25 s where pip took 150 s of one core (resolving, unpacking
    # and byte-compiling one package at a time) on a fresh clone.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$UV"
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -r "$requirements"
    echo "$want" > "$venv/.requirements.sha256"
  fi
  export PATH="$PWD/$venv/bin:$PATH"
  if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    step "installing the Rust standard library for aarch64-unknown-linux-gnu (sam build, arm64)"
    rustup target add aarch64-unknown-linux-gnu
  fi
  if [ ! -x "$CLIPPY_DRIVER" ]; then
    step "installing clippy (scripts/test.sh lints with it)"
    rustup component add clippy
  fi
  local tool missing=()
  for tool in curl:curl jq:jq ip:iproute2 chromium:chromium chromedriver:chromium-driver; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

# clippy-driver, which `cargo clippy` makes the workspace crates' compiler: scripts/test.sh has the
# test build compile through it too (RUSTC_WORKSPACE_WRAPPER), so one build both lints and tests.
# CLIPPY_ARGS is how cargo-clippy hands it the lint flags (`-- -D warnings`): each one followed by
# __CLIPPY_HACKERY__. lint_self_test proves the pair still fails a build on a lint.
CLIPPY_DRIVER="$(rustc --print sysroot)/bin/clippy-driver"
CLIPPY_DENY_WARNINGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

# Builds a crate of one function that clippy warns about (clone_on_copy) the way the test build is
# linted: passes only if that build fails, naming the lint.
lint_self_test() {
  local dir status=0
  dir=$(mktemp -d)
  mkdir "$dir/src"
  printf '[package]\nname = "lint-self-test"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' > "$dir/Cargo.toml"
  echo 'pub fn planted() -> i32 { let x = 5i32; x.clone() }' > "$dir/src/lib.rs"
  RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER" CLIPPY_ARGS="$CLIPPY_DENY_WARNINGS" \
    cargo build --offline --quiet --manifest-path "$dir/Cargo.toml" --target-dir "$dir/target" > "$dir/log" 2>&1 \
    || status=$?
  if [ "$status" -eq 0 ] || ! grep -q clone_on_copy "$dir/log"; then
    cat "$dir/log"
    echo "clippy-driver as RUSTC_WORKSPACE_WRAPPER with CLIPPY_ARGS=$CLIPPY_DENY_WARNINGS no longer fails a build on a lint" >&2
    rm -rf "$dir"
    exit 1
  fi
  rm -rf "$dir"
}

# Runs a command with no network but its own loopback (a fresh network namespace), to prove it
# needs nothing from outside this machine; where namespaces are not allowed it runs as it is.
offline() {
  if unshare -n true 2>/dev/null; then
    unshare -n bash -c 'ip link set lo up && exec "$@"' offline "$@"
  else
    echo "(no network namespace here: running with the network)" >&2
    "$@"
  fi
}

# Starts moto on a free loopback port, exports its URL as AWS_EMULATOR, stops it on exit.
start_emulator() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p target
  step "starting the AWS emulator (moto) on 127.0.0.1:$port"
  moto_server -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
  moto_pid=$!
  trap 'stop_background; stop_emulator' EXIT
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" && break
    kill -0 "$moto_pid" 2>/dev/null || { cat target/moto.log; echo "the AWS emulator exited" >&2; exit 1; }
    sleep 0.2
  done
  curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" || { cat target/moto.log; echo "the AWS emulator did not answer" >&2; exit 1; }
  export AWS_EMULATOR="http://127.0.0.1:$port"
}

# Stops the emulator start_emulator started (the README's own emulator must find the host clear).
stop_emulator() {
  [ -n "${moto_pid:-}" ] || return 0
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
}

# Builds that need no emulator run beside the tests, at the lowest priority: on 2 cores the test
# run leaves about a core idle (its processes wait on SQLite, moto and each other), and one
# crate's front end leaves the other core idle during a build. `background NAME CMD...` starts
# CMD (a command or a function) with its output in target/NAME.log; `finish NAME` waits for it,
# shows the end of the log (how long it took) and fails the script with the whole log if CMD
# failed. Whatever is still running when the script exits is stopped.
declare -A background_pids=() background_started=()
background() {
  local name=$1
  shift
  mkdir -p target
  printf '\n== [%ss] %s: started in the background (target/%s.log)\n' "$SECONDS" "$name" "$name"
  background_started[$name]=$SECONDS
  # Job control gives the job a process group of its own, so stop_background stops its builds too.
  set -m
  # At the lowest priority: the tests keep the CPU they ask for, and their timing with it.
  (
    renice -n 19 -p "$BASHPID" > /dev/null
    status=0
    "$@" || status=$?
    echo "$name took $((SECONDS - background_started[$name])) s"
    exit $status
  ) > "target/$name.log" 2>&1 < /dev/null &
  background_pids[$name]=$!
  set +m
}
finish() {
  local name=$1 status=0
  wait "${background_pids[$name]}" || status=$?
  unset "background_pids[$name]"
  step "$name (background): exit status $status"
  if [ "$status" -ne 0 ]; then
    cat "target/$name.log"
    echo "$name failed" >&2
    exit "$status"
  fi
  tail -n 5 "target/$name.log"
}
stop_background() {
  local pid
  for pid in "${background_pids[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -- "-$pid" 2>/dev/null || true
  done
}
