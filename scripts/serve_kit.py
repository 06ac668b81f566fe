"""What the scripts that drive a real `herald serve` with an official package share: starting
the debug binary on a loopback port and counting failed checks."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
HERALD = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "herald")
FAILURES = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILURES.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data_dir, port, key, extra_args=()):
    """`herald serve` with `key` as its first API key, loopback URLs allowed and `extra_args`,
    once /healthz answers."""
    env = dict(os.environ, HERALD_API_KEY=key, HERALD_LOG="warn")
    args = [HERALD, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data_dir, "--workers", "4",
            "--allow-loopback-urls", *extra_args]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("herald serve did not come up")
            time.sleep(0.1)
