#!/usr/bin/env python3
"""Checks Herald's OpenAPI description against itself, the running server and a client built from
it (the tools pinned in scripts/requirements-test.txt):

1. `openapi-spec-validator` validates docs/openapi.json, and `GET /openapi.json` of a real
   `herald serve` (the debug binary `cargo test` built) serves exactly it;
2. Schemathesis sends generated inputs to every operation with a valid key (Bearer, `x-api-key`,
   Twilio's Basic, SMAX's `bot_token`): no 5xx, and every answer's status, content type and body
   as the document says;
3. the README's one command for a client (`openapi-python-client`) runs as written, into target/.

    .venv/bin/python scripts/test_openapi.py
"""
import base64
import json
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

from openapi_spec_validator import validate
from serve_kit import FAILURES, ROOT, check, free_port, start

KEY = "hk_openapi_test_key_0123456789abcdef01"
# The venv this script runs in: its own tools, not the interpreter its python links to.
BIN = os.path.dirname(os.path.abspath(sys.executable))
DOC = os.path.join(ROOT, "docs", "openapi.json")
TARGET = os.path.join(ROOT, "target")
# Generated inputs per operation, per phase: enough to reach every status an operation documents,
# few enough that the run stays under two minutes.
EXAMPLES = os.environ.get("HERALD_OPENAPI_EXAMPLES", "20")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def schemathesis_config(directory, known):
    """Every security scheme the document names, with the server's one key; `known` ids by path."""
    path = os.path.join(directory, "schemathesis.toml")
    with open(path, "w") as f:
        f.write(f"""
[auth.openapi.bearer]
bearer = "{KEY}"
[auth.openapi.api_key]
api_key = "{KEY}"
[auth.openapi.smax_bot_token]
api_key = "{KEY}"
[auth.openapi.twilio_basic]
username = "default"
password = "{KEY}"

# The tenant `herald serve` made for the key, where a path names it (Twilio's account, SMAX's
# bot, Invent's org): other values are refused before the operation's own logic is reached.
[parameters]
"path.account_sid" = "default"
"path.bot_id" = "default"
"path.org_id" = "default"
""")
        for pattern, parameters in known.items():
            values = ", ".join(f'"{k}" = "{v}"' for k, v in parameters.items())
            f.write(f'\n[[operations]]\ninclude-path-regex = "{pattern}"\nparameters = {{ {values} }}\n')
    return path


def call(base, method, path, body=None, form=None):
    """One authenticated call (JSON, or a form with Twilio's Basic credentials); its JSON answer."""
    headers = {"Authorization": f"Bearer {KEY}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Authorization"] = "Basic " + base64.b64encode(f"default:{KEY}".encode()).decode()
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def fixtures(base):
    """One of each thing a path names, so generated calls reach past `404` to real answers (whose
    bodies the document must then describe). Each operation on `{id}` gets its own kind's id."""
    call(base, "PUT", "/v1/templates/t1", {"body": "Hello {{name}}"})
    call(base, "PUT", "/v1/campaigns/c1", {"name": "Spring", "template_ids": ["t1"]})
    call(base, "PUT", "/v1/contacts/k1", {"name": "Ada", "phone": "+14155550123", "fields": {"city": "Lyon"}})
    call(base, "PUT", "/v1/segments/s1", {"name": "VIP"})
    call(base, "POST", "/v1/segments/s1/members", {"contact_ids": ["k1"]})
    call(base, "PUT", "/v1/event-subscriptions/e1", {"url": "http://127.0.0.1:9/events", "events": ["*"]})
    call(base, "PUT", "/v1/webhook", {"url": "http://127.0.0.1:9/hook"})
    sent = call(base, "POST", "/v1/broadcasts", {"recipients": [{"contact_id": "k1"}], "campaign_id": "c1"})
    message = call(base, "POST", "/compat/twilio/2010-04-01/Accounts/default/Messages.json",
                   form={"To": "+14155550123", "From": "+14155550100", "Body": "hi"})
    return {
        "^/v1/templates/": {"path.id": "t1"},
        "^/v1/campaigns/": {"path.id": "c1"},
        "^/v1/contacts/": {"path.id": "k1"},
        "^/v1/segments/": {"path.id": "s1"},
        "^/v1/event-subscriptions/": {"path.id": "e1"},
        "^/v1/broadcasts/": {"path.request_id": sent["request_id"]},
        "^/compat/invent/": {"path.broadcast_id": "c1"},
        "/Messages/": {"path.sid": message["sid"] + ".json"},
    }


def schemathesis(base, directory):
    config = schemathesis_config(directory, fixtures(base))
    args = [
        os.path.join(BIN, "schemathesis"), "--config-file", config, "run",
        f"{base}/openapi.json", "--checks", CHECKS, "--max-examples", EXAMPLES,
        "--phases", "examples,coverage,fuzzing", "--seed", os.environ.get("HERALD_OPENAPI_SEED", "17"), "--workers", "1",
        "--suppress-health-check", "all", "--request-timeout", "10", "--no-color",
        "--report", "junit", "--report-dir", os.path.join(TARGET, "schemathesis"),
    ]
    return subprocess.run(args, cwd=directory).returncode == 0


def client():
    """The README's one command for a client, run as written (its `.venv/bin/` is this venv's)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [l for l in f if l.startswith(".venv/bin/openapi-python-client generate ")]
    if len(lines) != 1:
        return False
    args = shlex.split(lines[0])
    args[0] = os.path.join(BIN, "openapi-python-client")
    ran = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if ran.returncode != 0:
        print(ran.stdout + ran.stderr)
    out = os.path.join(ROOT, args[args.index("--output-path") + 1])
    return ran.returncode == 0 and os.path.exists(os.path.join(out, "client.py"))


def main():
    with open(DOC) as f:
        committed = f.read()
    try:
        validate(json.loads(committed))
        check(True, "docs/openapi.json is a valid OpenAPI document")
    except Exception as e:  # the validator's own error says where
        check(False, f"docs/openapi.json is a valid OpenAPI document: {e}")
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        proc = start(data, port, KEY)
        base = f"http://127.0.0.1:{port}"
        try:
            served = urllib.request.urlopen(f"{base}/openapi.json", timeout=10).read().decode()
            check(served.strip() == committed.strip(), "GET /openapi.json (no key) serves docs/openapi.json")
            check(schemathesis(base, data), "Schemathesis: every operation conforms to the document, no 5xx")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    check(client(), "the README's openapi-python-client command generates a client from docs/openapi.json")
    if FAILURES:
        sys.exit(f"{len(FAILURES)} OpenAPI check(s) failed")


if __name__ == "__main__":
    main()
