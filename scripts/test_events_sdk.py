#!/usr/bin/env python3
"""The official `standardwebhooks` package (pinned in scripts/requirements-test.txt) verifying the
status events of a real `herald serve`: a loopback receiver checks every delivery with
`standardwebhooks.Webhook(secret).verify(body, headers)`. It answers the first post 500, so the
retry (5 s later, the first wait of Standard Webhooks' schedule) is verified too, with the same
`webhook-id`. Starts the debug `herald` binary (built by `cargo test`) on a free port with a
temporary data directory; exits non-zero on any failure.

    .venv/bin/python scripts/test_events_sdk.py
"""
import http.server
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request

from standardwebhooks import Webhook, WebhookVerificationError
from serve_kit import FAILURES, check, free_port, start

KEY = "hk_events_sdk_test_key_0123456789abcdef"


class Receiver(http.server.BaseHTTPRequestHandler):
    """Verifies each post with the subscription's secret; the first post is answered 500."""

    secret = None
    verified = []  # (webhook-id, event) of every post that verified
    refused = []  # why a post did not verify
    posts = 0
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        headers = {k: v for k, v in self.headers.items()}
        try:
            event = Webhook(Receiver.secret).verify(body, headers)
            ok = True
        except WebhookVerificationError as e:
            ok = False
            with Receiver.lock:
                Receiver.refused.append(str(e))
        with Receiver.lock:
            Receiver.posts += 1
            first = Receiver.posts == 1
            if ok:
                Receiver.verified.append((headers.get("webhook-id") or headers.get("Webhook-Id"), event))
        self.send_response(500 if first else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status, json.load(r)


def wait_for(what, n, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Receiver.lock:
            if len(Receiver.verified) >= n:
                return True
        time.sleep(0.1)
    print(f"waited {timeout} s for {what}")
    return False


def main():
    rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start(data_dir, port, KEY)
        try:
            url = f"http://127.0.0.1:{rx.server_address[1]}/events"
            status, sub = call(base, "PUT", "/v1/event-subscriptions/sdk", {"url": url, "events": ["*"]})
            check(status == 201 and sub["secret"].startswith("whsec_"), f"subscribe: {status}")
            Receiver.secret = sub["secret"]
            recipients = [{"phone": "+14155550101"}, {"phone": "+14155550102"}]
            status, req = call(base, "POST", "/v1/broadcasts", {"recipients": recipients, "messages": [{"text": "hi"}]})
            check(status in (200, 202), f"broadcast: {status}")
            # Two message.sent and one broadcast.completed; the first post (answered 500) comes
            # again after the schedule's first wait, so four verified posts in all.
            check(wait_for("four verified posts", 4, 30), "every event arrived")
            time.sleep(1)
            with Receiver.lock:
                verified, refused, posts = list(Receiver.verified), list(Receiver.refused), Receiver.posts
            check(not refused, f"every post verified with standardwebhooks ({refused})")
            check(posts == 4 and len(verified) == 4, f"{posts} posts, {len(verified)} verified")
            kinds = sorted(e["type"] for _, e in verified)
            check(kinds.count("message.sent") >= 2 and "broadcast.completed" in kinds, f"types {kinds}")
            ids = [i for i, _ in verified]
            check(len(set(ids)) == 3, f"three events, three webhook-ids; the retried one kept its id ({ids})")
            done = [e for _, e in verified if e["type"] == "broadcast.completed"]
            check(bool(done) and done[0]["data"]["request_id"] == req["request_id"], "completed names the request")
            try:
                Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify("{}", {
                    "webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"})
                check(False, "a wrong signature is refused")
            except WebhookVerificationError:
                check(True, "a wrong signature is refused")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            rx.shutdown()
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed")
    print("standardwebhooks verified every status event Herald posted")


if __name__ == "__main__":
    main()
