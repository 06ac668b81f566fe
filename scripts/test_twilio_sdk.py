#!/usr/bin/env python3
"""The official `twilio` package (pinned in scripts/requirements-test.txt) driving the Twilio
dialect of a real `herald serve`, changed only where its HTTP client sends requests: a
`TwilioHttpClient` that rewrites https://api.twilio.com and https://notify.twilio.com to the
loopback server's /compat/twilio. Starts the debug `herald` binary (built by `cargo test`) on a
free port with a temporary data directory (loopback URLs allowed, so a local receiver takes the
status callbacks, each checked with the package's own `RequestValidator`); exits non-zero on any
mismatch.

    .venv/bin/python scripts/test_twilio_sdk.py
"""
import datetime
import http.server
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from serve_kit import FAILURES, check, free_port, start

KEY = "hk_twilio_sdk_test_key_0123456789abcdef"
TO = "+14155550123"


class Loopback(TwilioHttpClient):
    """Twilio's own HTTP client, sending to Herald instead of Twilio."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def request(self, method, url, *args, **kwargs):
        for host in ("https://api.twilio.com", "https://notify.twilio.com"):
            if url.startswith(host):
                url = self.base + "/compat/twilio" + url[len(host):]
        return super().request(method, url, *args, **kwargs)


class Callbacks(http.server.BaseHTTPRequestHandler):
    """A customer's StatusCallback endpoint: keeps each post's full URL, form and signature."""
    lock = threading.Lock()
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        url = f"http://127.0.0.1:{self.server.server_port}{self.path}"
        with Callbacks.lock:
            Callbacks.received.append((url, params, self.headers.get("X-Twilio-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def account_sid(base):
    req = urllib.request.Request(base + "/v1/account", headers={"Authorization": "Bearer " + KEY})
    return json.load(urllib.request.urlopen(req))["twilio_account_sid"]


def signing_secret(base):
    req = urllib.request.Request(base + "/v1/account/twilio-signing-secret", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["twilio_signing_secret"]


def status_callbacks(client, base, rx_url):
    """A message with status_callback=: each post Herald makes validates with RequestValidator."""
    secret = signing_secret(base)
    check(len(secret) == 32, "POST /v1/account/twilio-signing-secret: a secret of 32 characters")
    url = rx_url + "/twilio/status?customer=42"
    m = client.messages.create(to=TO, from_="+15005550006", body="call me back", status_callback=url)
    deadline = time.time() + 20
    while time.time() < deadline:
        with Callbacks.lock:
            got = list(Callbacks.received)
        if got:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    with Callbacks.lock:
        got = list(Callbacks.received)
    check(len(got) == 1, f"status callback: one post for the one move ({len(got)})")
    validator, stranger = RequestValidator(secret), RequestValidator("0" * 32)
    for posted_url, params, signature in got:
        check(posted_url == url, f"status callback: posted to the StatusCallback URL ({posted_url})")
        check(validator.validate(posted_url, params, signature), f"status callback: RequestValidator accepts {params}")
        check(not stranger.validate(posted_url, params, signature), "status callback: another secret does not")
        status = client.messages(m.sid).fetch().status
        check(params.get("MessageSid") == m.sid and params.get("MessageStatus") == status,
              f"status callback: MessageSid and MessageStatus as fetch shows them ({status})")
        check(params.get("AccountSid") == m.account_sid and params.get("To") == TO, "status callback: AccountSid, To")


def refused(call, code, status):
    try:
        call()
    except TwilioRestException as e:
        return e.code == code and e.status == status
    return False


def page_refused(call, code, status):
    """The SDK reads a refused page as a plain TwilioException holding the response."""
    try:
        call()
    except TwilioRestException:
        return False
    except TwilioException as e:
        response = e.args[1] if len(e.args) > 1 else None
        return response is not None and response.status_code == status and json.loads(response.text)["code"] == code
    return False


def listing(client, created):
    """`created`: the SIDs of the messages created so far, oldest first."""
    for i in range(3):
        created.append(client.messages.create(to=TO, from_="+15005550006", body=f"list {i}").sid)
        time.sleep(0.005)  # messages made in one millisecond list by id, not by the order they were made
    newest = list(reversed(created))
    got = [m.sid for m in client.messages.list(limit=3)]
    check(got == newest[:3], f"list(limit=3): the three newest ({got})")
    got = [m.sid for m in client.messages.list(limit=4, page_size=2)]
    check(got == newest[:4], f"list(limit=4, page_size=2): two pages ({got})")
    got = [m.sid for m in client.messages.stream(page_size=2)]
    check(got == newest, f"stream(page_size=2): every message once, newest first, over {len(newest)} messages")
    page = client.messages.page(page_size=2)
    second = page.next_page()
    check([m.sid for m in page] == newest[:2] and [m.sid for m in second] == newest[2:4],
          "page(page_size=2).next_page(): the page after")
    fetched = client.messages(newest[0]).fetch()
    listed = client.messages.list(limit=1)[0]
    check((listed.sid, listed.to, listed.body, listed.date_created) == (fetched.sid, fetched.to, fetched.body, fetched.date_created),
          "list: a listed message is the one fetch answers")
    check(page_refused(lambda: client.messages.list(to=TO, limit=5), 20001, 400),
          "list: a To filter is refused with 20001 (Herald does not filter the list; docs/dialects.md)")


def messages(client, ac):
    m = client.messages.create(to=TO, from_="+15005550006", body="Hello from the Twilio SDK")
    check(m.sid.startswith("SM") and len(m.sid) == 34, f"create: sid {m.sid}")
    check(m.account_sid == ac and m.to == TO and m.status == "queued", f"create: {m.account_sid} {m.to} {m.status}")
    check(isinstance(m.date_created, datetime.datetime), f"create: date_created parsed ({m.date_created!r})")
    check(m.num_segments == "1" and m.api_version == "2010-04-01", "create: num_segments, api_version")
    deadline = time.time() + 20
    while True:
        f = client.messages(m.sid).fetch()
        if f.status in ("sent", "delivered", "read") or time.time() > deadline:
            break
        time.sleep(0.2)
    check(f.sid == m.sid and f.status in ("sent", "delivered", "read"), f"fetch: status {f.status}")
    check(isinstance(f.date_sent, datetime.datetime), f"fetch: date_sent parsed ({f.date_sent!r})")
    wa = client.messages.create(to="whatsapp:" + TO, from_="whatsapp:+15005550006", body="Hola")
    check(wa.to == "whatsapp:" + TO, f"create: WhatsApp to {wa.to}")
    check(refused(lambda: client.messages.create(to="12", from_="+15005550006", body="x"), 21211, 400),
          "create: an invalid To is 21211")
    check(refused(lambda: client.messages.create(to=TO, from_="+15005550006"), 21602, 400),
          "create: no Body is 21602")
    check(refused(lambda: client.messages("SM" + "0" * 32).fetch(), 20404, 404), "fetch: an unknown sid is 20404")
    listing(client, [m.sid, wa.sid])


def main():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = start(data_dir, port, KEY)
        try:
            ac = account_sid(base)
            check(ac.startswith("AC") and len(ac) == 34, f"GET /v1/account: {ac}")
            client = Client(ac, KEY, http_client=Loopback(base))
            messages(client, ac)
            status_callbacks(client, base, f"http://127.0.0.1:{rx.server_port}")
            bindings = [json.dumps({"binding_type": "sms", "address": f"+1415555{i:04}"}) for i in range(3)]
            n = client.notify.v1.services("IS" + "0" * 32).notifications.create(to_binding=bindings, body="Hi all")
            check(n.sid.startswith("NT") and len(n.sid) == 34 and n.body == "Hi all", f"notify: {n.sid}")
            stranger = Client(ac, "hk_not_a_key", http_client=Loopback(base))
            check(refused(lambda: stranger.messages.create(to=TO, from_="+15005550006", body="x"), 20003, 401),
                  "a wrong key is 20003")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            rx.shutdown()
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed")
    print("the Twilio SDK drove Herald's Twilio dialect without a mismatch")


if __name__ == "__main__":
    main()
