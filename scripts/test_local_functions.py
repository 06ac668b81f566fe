#!/usr/bin/env python3
"""README.md's "The functions on your machine", run as written, then `local_aws.py up` twice and
`down`, checking what a new user relies on: the result is shown, nothing listens beyond
127.0.0.1, a second `up` leaves the first one's processes in charge, and `down` leaves nothing
running. scripts/test.sh runs it in a network namespace of its own (`offline`), so the README's
default ports are free and the block is shown to need no network.

    .venv/bin/python scripts/test_local_functions.py
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PORTS = {"emulator": int(os.environ.get("HERALD_LOCAL_AWS_PORT", "5000")), "ingest": 9000, "send": 9001}
# The three first builds take about 2.5 min each on 2 idle cores, far longer on a busy machine;
# this only ends a hang.
TIMEOUT = 3600


def readme_block():
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("<!-- local-functions:start -->")
    end = readme.index("<!-- local-functions:end -->")
    lines = readme[start:end].splitlines()
    return "\n".join(line for line in lines if not line.startswith(("```", "<!--")))


def run(script):
    # A session of its own, so a timeout stops the builds the block started, not just bash.
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        check(False, f"the README block took over {TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def leftovers():
    """The emulators and watchers running from this checkout: what `down` must have stopped."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        program = cmdline.split(b"\0")[0]
        function = b"/debug/" in program and program.endswith((b"/ingest", b"/send"))
        if cwd == ROOT and state != "Z" and (b"moto_server" in cmdline or b"lambda\0watch" in cmdline or function):
            found.append(pid + ": " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def listening(port):
    """The local addresses of the listening TCP sockets on `port`, e.g. ['127.0.0.1']."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                addresses.append(decode(address))
    return addresses


def decode(address):
    raw = bytes.fromhex(address)
    # /proc keeps each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    if words[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in words[12:])
    return ":".join(words[i:i + 2].hex() for i in range(0, 16, 2))


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        subprocess.run([PYTHON, "scripts/local_aws.py", "down"], cwd=ROOT)
        sys.exit(1)


def the_block_runs_and_shows_the_result():
    check(not leftovers(), f"stop these first: {leftovers()}")
    code, out, err = run(readme_block())
    check(code == 0, f"the README block failed ({code})\nstdout:\n{out}\nstderr:\n{err}")
    request = re.search(r"^request: (\S+)$", out, re.M)
    check(request and request.group(1) != "null", f"no request id printed:\n{out}")
    # The GET fixture's body, pretty-printed by jq: the last JSON object printed, before `down`.
    check("\n{" in out, f"no JSON answer printed:\n{out}")
    state, _ = json.JSONDecoder().raw_decode(out, out.rindex("\n{") + 1)
    check(state.get("request_id") == request.group(1), f"the GET answered another request: {state}")
    statuses = [row["status"] for row in state.get("recipients", [])]
    check(statuses == ["sent"] and state.get("state") == "completed", f"the row was not sent: {state}")
    check(not leftovers(), f"`down` left these running: {leftovers()}")
    env = open(os.path.join(ROOT, "target", "local-aws.env")).read()
    check("AWS_DEFAULT_REGION=us-east-1\n" in env, f"the env file lacks AWS_DEFAULT_REGION:\n{env}")
    print("the README block ran as written and showed the sent row")


def wait_listening():
    deadline = time.time() + 120
    while time.time() < deadline:
        if all(listening(port) for port in PORTS.values()):
            return
        time.sleep(0.5)
    check(False, f"not all of {PORTS} listen after `up`")


def up_twice_then_down():
    up = [PYTHON, "scripts/local_aws.py", "up"]
    first = subprocess.run(up, cwd=ROOT, capture_output=True, text=True, timeout=120)
    check(first.returncode == 0, f"`up` failed:\n{first.stdout}\n{first.stderr}")
    wait_listening()
    for name, port in PORTS.items():
        check(listening(port) == ["127.0.0.1"], f"{name} listens on {listening(port)}, not 127.0.0.1 alone")
    running = leftovers()
    second = subprocess.run(up, cwd=ROOT, capture_output=True, text=True, timeout=120)
    check(second.returncode == 0 and "already up" in second.stdout, f"a second `up`: {second.stdout}{second.stderr}")
    check(leftovers() == running, f"a second `up` changed what runs: {running} -> {leftovers()}")
    down = subprocess.run([PYTHON, "scripts/local_aws.py", "down"], cwd=ROOT, capture_output=True, text=True)
    check(down.returncode == 0 and "emulator" in down.stdout, f"`down`: {down.stdout}{down.stderr}")
    check(not leftovers(), f"`down` after two `up`s left these running: {leftovers()}")
    check(not any(listening(port) for port in PORTS.values()), "a port still listens after `down`")
    print("a second `up` kept the first one's processes; `down` stopped them all")


if __name__ == "__main__":
    the_block_runs_and_shows_the_result()
    up_twice_then_down()
    print("2 passed, 0 failed")
