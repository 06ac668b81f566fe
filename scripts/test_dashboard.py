#!/usr/bin/env python3
"""The operator dashboard in a real browser: headless Chromium from Debian (`chromium`,
`chromium-driver`) driven by Selenium (pinned in scripts/requirements-test.txt) against a real
`herald serve` (the debug binary `cargo test` builds) whose sandbox fails a share of sends for
good. Signs in (a wrong key first), sends a 1,000-recipient broadcast, watches its progress reach
100 % without a reload, opens a failed row and reads its error, checks that names made of HTML
show as text, visits every view, redrives a dead letter (herald serve is killed inside a
provider call and restarted with `--max-receives 1`, so the job in hand dies on its next receive;
the redriven job sends its row), redelivers a subscription's failed status event (a loopback
receiver refuses it on every post of a short `--event-retry-schedule-ms`, then takes it), signs
out, and saves a screenshot of each page under target/dashboard/. Exits non-zero on any failed
check.

    .venv/bin/python scripts/test_dashboard.py
"""
import http.server
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from serve_kit import FAILURES, ROOT, check, free_port, start

KEY = "hk_dashboard_test_key_0123456789abcdef"
WRONG_KEY = "hk_not_a_key_of_anyone_0123456789"
RECIPIENTS = 1000
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '<img src=x onerror="alert(2)">'
SHOTS = os.path.join(ROOT, "target", "dashboard")
# herald serve's waits between a status event's posts: a refused event is a failure in 0.4 s.
RETRY_SCHEDULE_MS = (200, 200)
SERVE_FLAGS = ["--event-retry-schedule-ms", ",".join(str(ms) for ms in RETRY_SCHEDULE_MS)]


class Api:
    """Herald's API as the test calls it beside the browser, with the same key."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, key=KEY, content_type="application/json"):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + key, "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


class Server:
    """The `herald serve` under test, restarted on the same port and data directory (so the page
    and its key go on) with other flags."""

    def __init__(self, data_dir, port):
        self.data_dir, self.port = data_dir, port
        self.proc = start(data_dir, port, KEY, SERVE_FLAGS)

    def restart(self, *flags, crash=False):
        if crash:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = start(self.data_dir, self.port, KEY, [*SERVE_FLAGS, *flags])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Debian's driver, named outright so Selenium never looks for one to download.
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def wait(driver, condition, what, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
            lambda d: condition(d))
    except Exception as e:  # a timeout is a failed check, and the run goes on to the next one
        check(False, f"{what} (waited {timeout} s: {type(e).__name__})")
        return None


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def stored_key(driver):
    return driver.execute_script("return sessionStorage.getItem('herald.api_key')")


def sign_in(driver, api, base):
    driver.get(base + "/dashboard")
    field = wait(driver, lambda d: d.find_element(By.NAME, "api_key"), "the sign-in form shows")
    shot(driver, "sign-in")
    field.send_keys(WRONG_KEY)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    refused = wait(driver, lambda d: d.find_element(By.ID, "sign-in-error").text, "a wrong key shows an error")
    _, answer = api.call("GET", "/v1/account", key=WRONG_KEY)
    check(bool(refused) and answer["error"]["message"] in refused and "401" in refused,
          f"a wrong key shows the API's own error ({refused!r})")
    check(stored_key(driver) is None, "a refused key is not kept")
    driver.find_element(By.NAME, "api_key").send_keys(KEY)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    who = wait(driver, lambda d: d.find_element(By.ID, "who").text, "signed in, the tenant shows")
    check(who == "tenant default", f"signed in as the key's tenant ({who!r})")
    check(stored_key(driver) == KEY, "the key is kept in sessionStorage")
    check(driver.execute_script("return document.cookie") == "", "no cookie holds the key")
    check(KEY not in driver.current_url, "the key is not in the URL")


def broadcast(api):
    recipients = [{"phone": f"+1415555{i:04}", "name": f"Recipient {i}"} for i in range(RECIPIENTS)]
    recipients[0]["name"] = SCRIPT_NAME
    status, created = api.call("POST", "/v1/broadcasts", {
        "recipients": recipients, "channel": "sms", "messages": [{"text": "Hi {{name}}, the dashboard test"}]})
    check(status == 202, f"POST /v1/broadcasts with {RECIPIENTS} recipients: 202 ({status})")
    return created["request_id"]


def percents(driver, selector, enough, timeout=60):
    """The data-percent of the bar at `selector` each time it changes, until `enough(seen)`."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline and not enough(seen):
        try:
            bars = driver.find_elements(By.CSS_SELECTOR, selector)
            value = bars[0].get_attribute("data-percent") if bars else None
        except StaleElementReferenceException:
            value = None
        if value and (not seen or seen[-1] != int(value)):
            seen.append(int(value))
        time.sleep(0.1)
    return seen


def watch_progress(driver, api, request_id):
    """The list and then the request's own page refresh by themselves while it runs, to 100 %."""
    driver.find_element(By.CSS_SELECTOR, "button.refresh").click()
    listed = percents(driver, f'tr[data-request-id="{request_id}"] [role=progressbar]',
                      lambda seen: len([p for p in seen if p < 100]) >= 2 or 100 in seen)
    check(len([p for p in listed if p < 100]) >= 2, f"the list's bar moves without a reload (seen {listed})")
    driver.find_element(By.CSS_SELECTOR, f'tr[data-request-id="{request_id}"] a').click()
    own = percents(driver, ".summary [role=progressbar]", lambda seen: 100 in seen)
    check(bool(own) and own[-1] == 100, f"the request's progress reaches 100 % (seen {own})")
    check(any(p < 100 for p in own), f"the request's page moves without a reload too (seen {own})")
    driver.back()
    row = f'tr[data-request-id="{request_id}"]'
    state = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .state").text == "completed" or None,
                 "back on the list, the request is completed")
    source = driver.find_element(By.CSS_SELECTOR, f"{row} .source").text if state else None
    check(source == "native", f"the list shows the request's source ({source})")
    check(percents(driver, f"{row} [role=progressbar]", lambda seen: bool(seen)) == [100], "the list shows it at 100 %")
    _, req = api.call("GET", f"/v1/broadcasts/{request_id}?limit=1")
    failed = req["summary"]["by_status"].get("failed", 0)
    check(0 < failed < RECIPIENTS, f"the sandbox failed some rows for good ({failed})")
    shot(driver, "requests")


def no_alert(driver, what):
    try:
        driver.switch_to.alert
        check(False, f"{what}: an alert opened")
    except NoAlertPresentException:
        check(True, f"{what}: no script ran")


def open_request(driver, api, request_id):
    driver.find_element(By.CSS_SELECTOR, f'tr[data-request-id="{request_id}"] a').click()
    names = wait(driver, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "table.rows td.name")] or None,
                 "the request's rows show")
    check(SCRIPT_NAME in (names or []), f"a recipient named {SCRIPT_NAME} shows as text")
    no_alert(driver, "the rows")
    check(len(driver.find_elements(By.TAG_NAME, "script")) == 1, "the page holds its one script only")
    facts = {e.get_attribute("data-fact"): e.text for e in driver.find_elements(By.CSS_SELECTOR, ".summary dd")}
    check((facts.get("Source"), facts.get("State")) == ("native", "completed"), f"the request's summary ({facts})")
    shot(driver, "request")
    Select(driver.find_element(By.ID, "status-filter")).select_by_value("failed")
    rows = wait(driver, lambda d: "status=failed" in d.current_url and d.find_elements(By.CSS_SELECTOR, "table.rows tr[data-row-id]"),
                "the rows filtered by status=failed show")
    statuses = {r.get_attribute("data-status") for r in rows or []}
    check(statuses == {"failed"}, f"only failed rows are listed ({statuses})")
    first = rows[0]
    row_id = first.get_attribute("data-row-id")
    first.find_element(By.CSS_SELECTOR, "button.open-row").click()
    error = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#row-detail .row-error").text, "a failed row's error shows")
    _, req = api.call("GET", f"/v1/broadcasts/{request_id}?limit=1000")
    expected = next(r["error_message"] for r in req["recipients"] if r["id"] == row_id)
    check(error == expected, f"the opened row shows its error_message ({error!r})")
    timeline = [li.get_attribute("data-status") for li in driver.find_elements(By.CSS_SELECTOR, "#row-detail .timeline li")]
    check("failed" in timeline, f"the row's timeline ends in failed ({timeline})")
    driver.execute_script("window.scrollTo(0, 0)")
    shot(driver, "row")
    driver.find_element(By.CSS_SELECTOR, "#row-detail button.close").click()
    check(not driver.find_element(By.ID, "row-detail").is_displayed(), "the row's panel closes")


def audiences(driver, api):
    status, _ = api.call("PUT", "/v1/segments/newsletter", {"name": IMG_NAME})
    check(status == 201, f"PUT /v1/segments/newsletter: 201 ({status})")
    csv = "phone,name\n+14155551001,<b>Lin</b>\n+14155551002,Sam Roe\nnot-a-phone,Oops\n"
    status, _ = api.call("POST", "/v1/imports?segment_id=newsletter", csv.encode(), content_type="text/csv")
    check(status == 202, f"POST /v1/imports: 202 ({status})")
    driver.find_element(By.CSS_SELECTOR, '#nav a[data-view="segments"]').click()
    name = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-segment-id="newsletter"] td.name').text,
                "the segment shows")
    check(name == IMG_NAME, f"a segment named {IMG_NAME} shows as text ({name!r})")
    no_alert(driver, "the segments")
    shot(driver, "segments")
    driver.find_element(By.CSS_SELECTOR, '#nav a[data-view="imports"]').click()
    done = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "table.imports [role=progressbar]")
                .get_attribute("data-percent") == "100", "the import reaches 100 %")
    state = driver.find_element(By.CSS_SELECTOR, "table.imports .state").text if done else None
    check(state == "completed", f"the import shows completed ({state})")
    shot(driver, "imports")


def row_status(api, request_id):
    _, req = api.call("GET", f"/v1/broadcasts/{request_id}")
    return req["recipients"][0]["status"]


def crashed_send(api, server):
    """herald serve dies inside a provider call; restarted with --max-receives 1, it dead-letters
    the job in hand on its first receive. Returns the dead letter as the API lists it."""
    # Provider calls of 3 s to die in. The restart frees the dead worker's claim on the row.
    server.restart("--sandbox-delay-ms", "3000")
    status, created = api.call("POST", "/v1/broadcasts", {"recipients": [{"phone": "+14155558888"}],
                                                          "messages": [{"text": "a send herald serve dies in"}]})
    check(status == 202, f"POST /v1/broadcasts for one row: 202 ({status})")
    request_id, row_id = created["request_id"], created["recipients"][0]["id"]
    until("the row is inside its provider call", lambda: row_status(api, request_id) == "sending")
    server.restart("--max-receives", "1", "--sandbox-fail-rate", "0", crash=True)
    dead = until("the job herald serve died with is dead-lettered", lambda: [
        d for d in api.call("GET", "/v1/dead-letters")[1]["dead_letters"] if d["request_id"] == request_id])
    if not dead:
        return None
    shape = (dead[0]["kind"], dead[0]["row_ids"], dead[0]["receive_count"])
    check(shape == ("rows", [row_id], 1), f"the dead letter is the row's job, received once ({shape})")
    return dead[0]


def dead_letters(driver, api, server):
    dead = crashed_send(api, server)
    driver.find_element(By.CSS_SELECTOR, '#nav a[data-view="dead-letters"]').click()
    if not dead:
        return
    row = f'table.dead-letters tr[data-dead-letter-id="{dead["id"]}"]'
    shown = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, row).text, "the dead letter shows in the page")
    check(bool(shown) and dead["request_id"] in shown, f"the dead letter's row names its request ({shown!r})")
    shot(driver, "dead-letters")
    request_link = driver.find_element(By.CSS_SELECTOR, f"{row} a").get_attribute("href")
    before = row_status(api, dead["request_id"])
    check(before == "sending", f"before the redrive, the row is still in the call herald serve died in ({before})")
    driver.find_element(By.CSS_SELECTOR, f"{row} button.action").click()
    flash = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".flash").text, "Redrive says what it did")
    check(bool(flash) and dead["id"] in flash, f"Redrive says the job is back on the queue ({flash!r})")
    gone = wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, row)
                and "No dead letter" in d.find_element(By.CSS_SELECTOR, "main .note").text,
                "the redriven job leaves the dead letters")
    _, left = api.call("GET", "/v1/dead-letters")
    check(bool(gone) and left["dead_letters"] == [], f"no dead letter is left ({left})")
    shot(driver, "dead-letters-redriven")
    driver.execute_script("location.hash = arguments[0]", request_link.split("#", 1)[1])
    sent = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'table.rows tr[data-row-id="{dead["row_ids"][0]}"]')
                .get_attribute("data-status") == "sent", "the redriven row is sent, in the page")
    check(bool(sent) and row_status(api, dead["request_id"]) == "sent", "the redriven job sent its row")
    shot(driver, "redriven-request")


class Receiver(http.server.BaseHTTPRequestHandler):
    """A subscriber that answers `status` until told otherwise, and keeps what it was sent."""

    status = 500
    got = []  # (webhook-id, event) of every post
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with Receiver.lock:
            Receiver.got.append((self.headers.get("webhook-id"), json.loads(body or b"null")))
            status = Receiver.status
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def receiver():
    rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{rx.server_address[1]}/hook"


def until(what, probe, timeout=15):
    """`probe()` once it answers something true, polled; a failed check if it never does."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    check(False, f"{what} (waited {timeout} s)")
    return None


def events(driver, api, hook):
    status, _ = api.call("PUT", "/v1/event-subscriptions/ops-hook",
                         {"url": hook, "events": ["message.sent", "message.failed"]})
    check(status == 201, f"PUT /v1/event-subscriptions/ops-hook: 201 ({status})")
    driver.find_element(By.CSS_SELECTOR, '#nav a[data-view="events"]').click()
    link = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-subscription-id="ops-hook"] a'),
                "the subscription shows")
    shot(driver, "events")
    if not link:
        return
    link.click()
    text = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "main .note").text, "its failures show")
    check(bool(text) and "No failed event" in text, f"a subscription with no failure says so ({text!r})")
    failure = failed_event(driver, api)
    if failure:
        redeliver(driver, api, failure)


def failed_event(driver, api):
    """One recipient's status event, refused by the receiver on every post of herald serve's
    short retry schedule, shows in the failures view. Returns the failure as the API lists it."""
    status, _ = api.call("POST", "/v1/broadcasts", {"recipients": [{"phone": "+14155559999"}],
                                                    "messages": [{"text": "an event nobody takes"}]})
    check(status == 202, f"POST /v1/broadcasts for one event: 202 ({status})")
    failures = until("the refused event becomes a failure",
                     lambda: api.call("GET", "/v1/event-subscriptions/ops-hook/failures")[1]["failures"])
    if not failures:
        return None
    first = failures[0]
    event_id, tried = first["event_id"], (first["attempts"], first["last_status"])
    check(tried == (len(RETRY_SCHEDULE_MS) + 1, 500),
          f"the event was posted once, then once per wait, each answered 500 (attempts, last status: {tried})")
    driver.find_element(By.CSS_SELECTOR, "button.refresh").click()
    row = f'table.failures tr[data-event-id="{event_id}"]'
    shown = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, row).text, "the failure shows in the page")
    check(bool(shown) and "500" in shown and event_id in shown, f"the failure's row shows its event and 500 ({shown!r})")
    shot(driver, "event-failures")
    return first


def redeliver(driver, api, failure):
    """The receiver takes events now; Redeliver posts the failure again, and it leaves the list."""
    event_id = failure["event_id"]
    with Receiver.lock:
        Receiver.status, Receiver.got = 204, []
    driver.find_element(By.CSS_SELECTOR, f'tr[data-event-id="{event_id}"] button.action').click()
    flash = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".flash").text, "Redeliver says what it did")
    check(bool(flash) and event_id in flash, f"Redeliver says the event goes out again ({flash!r})")
    got = until("the receiver gets the redelivered event", lambda: list(Receiver.got))
    ids = [webhook_id for webhook_id, _ in got or []]
    check(ids == [event_id], f"the receiver got the failure's event once, webhook-id {event_id} ({ids})")
    check(all(event == failure["event"] for _, event in got or []), "the redelivered body is the failure's event")
    gone = wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, f'tr[data-event-id="{event_id}"]')
                and "No failed event" in d.find_element(By.CSS_SELECTOR, "main .note").text,
                "the redelivered event leaves the failures")
    _, left = api.call("GET", "/v1/event-subscriptions/ops-hook/failures")
    check(bool(gone) and left["failures"] == [], f"no failure is left ({left})")
    shot(driver, "event-redelivered")


def sign_out(driver, base):
    driver.find_element(By.ID, "sign-out").click()
    wait(driver, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), "signed out, the sign-in form shows")
    check(stored_key(driver) is None, "signing out forgets the key")
    driver.get(base + "/dashboard#/requests")
    wait(driver, lambda d: d.find_element(By.ID, "sign-in").is_displayed(), "after a reload, still signed out")
    shot(driver, "signed-out")


def console_errors(driver):
    """What the browser logged that is not an API answer the page asked for (401, 404)."""
    logs = driver.get_log("browser")
    policy = [e["message"] for e in logs if "Content Security Policy" in e["message"]]
    check(not policy, f"no Content-Security-Policy violation ({policy})")
    broken = [e["message"] for e in logs if "Uncaught" in e["message"]]
    check(not broken, f"no uncaught script error ({broken})")


def api_calls(driver, request_id):
    """What the page sent over the network: each API call with the key as a bearer token only."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append((request["url"], {k.lower(): v for k, v in request["headers"].items()}))
    calls = [(url, headers) for url, headers in sent if "/v1/" in url]
    check(len(calls) > 10, f"the page made its API calls ({len(calls)})")
    keys = [headers.get("authorization") for _, headers in calls]
    check(keys.count("Bearer " + WRONG_KEY) == 1 and keys.count("Bearer " + KEY) == len(keys) - 1,
          "every API call carries the key typed in as a bearer token (the wrong one once, at sign-in)")
    check(not any(KEY in url or WRONG_KEY in url for url, _ in sent), "no URL the page asked for holds a key")
    check(not any("cookie" in headers for _, headers in sent), "no request carries a cookie")
    filtered = [url for url, _ in calls if f"/v1/broadcasts/{request_id}?" in url and "status=failed" in url]
    check(bool(filtered), f"the status filter is sent to the server as status=failed ({filtered[:1]})")


def main():
    # Through herald serve's own environment: 15 % of sends fail for good, and each takes 40 ms,
    # so 1,000 rows on serve_kit's 4 workers run for 10 s at least: long enough to watch.
    os.environ.update(HERALD_SANDBOX_FAIL_RATE="0.15", HERALD_SANDBOX_FAIL_KIND="permanent",
                      HERALD_SANDBOX_DELAY_MS="40")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Api(base)
    with tempfile.TemporaryDirectory() as data_dir:
        hook = receiver()
        server = Server(data_dir, port)
        driver = browser()
        try:
            sign_in(driver, api, base)
            request_id = broadcast(api)
            watch_progress(driver, api, request_id)
            open_request(driver, api, request_id)
            audiences(driver, api)
            dead_letters(driver, api, server)
            events(driver, api, hook)
            console_errors(driver)
            api_calls(driver, request_id)
            sign_out(driver, base)
        finally:
            driver.quit()
            server.stop()
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed")
    print(f"the dashboard showed a {RECIPIENTS}-recipient broadcast to the end; screenshots in {SHOTS}")


if __name__ == "__main__":
    main()
