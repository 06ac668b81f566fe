// Herald's operator dashboard: plain DOM, no framework, no build step. Every value from the API
// reaches the page through textContent or attributes set one by one, never as HTML, so a contact
// named <script> shows as text. The API key lives in sessionStorage (this tab only) and travels
// only in the Authorization header of ordinary API calls: never in a URL, never in a cookie.

const KEY = "herald.api_key";
const FAST_POLL_MS = 1500; // while a broadcast or an import is running
const IDLE_POLL_MS = 10000; // otherwise, so new broadcasts show up
const ROWS_PER_PAGE = 100;
const STATUSES = [
  "scheduled", "queued", "retrying", "sending", "sent", "delivered", "read", "opened", "played",
  "skipped", "failed", "bounced", "complained", "unsubscribed", "canceled",
];
const SUCCEEDED = new Set(["sent", "delivered", "read", "opened", "played"]);
const FAILED = new Set(["failed", "bounced", "complained"]);
const PASSED_OVER = new Set(["skipped", "unsubscribed", "canceled"]);
const FINISHED = new Set(["completed", "canceled"]);
const CLOCK = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error ? body.error : {};
    super(err.message || `Herald answered ${status}`);
    this.status = status;
    this.code = err.code || `http_${status}`;
  }
}

/** An authenticated call to Herald's API, relative to the page so an API Gateway stage works. */
async function api(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  const init = { method, headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

function describe(e) {
  if (e instanceof ApiError) return `${e.message} (${e.status} ${e.code})`;
  return `Herald did not answer: ${e && e.message ? e.message : e}`;
}

// ------------------------------------------------------------------ DOM building

/** An element with attributes (on* become listeners) and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  el.append(...nodes(children));
  return el;
}

/** Children as nodes: nested lists flattened, strings as text nodes, absent ones left out. */
function nodes(children) {
  return children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c))));
}

function fill(el, ...children) {
  el.replaceChildren(...nodes(children));
}

function table(heads, rows, attrs) {
  return h("table", attrs, h("thead", null, h("tr", null, heads.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", null, rows));
}

function cell(value, attrs) {
  return h("td", attrs, value === undefined || value === null || value === "" ? "—" : value);
}

function when(iso, withMillis) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const text = withMillis
    ? `${d.toLocaleDateString()} ${d.toLocaleTimeString(undefined, { ...CLOCK, fractionalSecondDigits: 3 })}`
    : d.toLocaleString();
  return h("time", { datetime: iso, title: iso }, text);
}

function note(text, kind) {
  return h("p", { class: kind || "note", role: kind === "error" ? "alert" : null }, text);
}

/** A bar of coloured parts out of `total`; `percent` null when the total is not known yet. */
function bar(parts, total, percent, label) {
  const el = h("div", {
    class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": percent, "data-percent": percent, "aria-label": label,
  });
  for (const p of parts) {
    if (!total || !p.n) continue;
    const seg = h("span", { class: `seg ${p.cls}`, title: `${p.label}: ${p.n}` });
    seg.style.width = `${(p.n * 100) / total}%`; // CSSOM, which the style-src policy allows
    el.append(seg);
  }
  return h("div", { class: "progress" }, el, h("span", { class: "bar-label" }, label));
}

function sumOf(byStatus, set) {
  return Object.entries(byStatus || {}).filter(([s]) => set.has(s)).reduce((a, [, n]) => a + n, 0);
}

/** A request's progress from its summary: terminal rows out of its total, by outcome. */
function requestBar(summary) {
  const total = summary.total;
  const known = total === null || total === undefined ? null : total;
  const percent = known === null ? null : known === 0 ? 100 : Math.floor((summary.terminal * 100) / known);
  const parts = [
    { n: sumOf(summary.by_status, SUCCEEDED), cls: "ok", label: "sent" },
    { n: sumOf(summary.by_status, FAILED), cls: "bad", label: "failed" },
    { n: sumOf(summary.by_status, PASSED_OVER), cls: "passed", label: "skipped or canceled" },
  ];
  const label = known === null
    ? `fanning out: ${summary.rows_made} rows so far`
    : `${percent} % · ${summary.terminal} of ${known} done`;
  return bar(parts, known === null ? summary.rows_made : known, percent, label);
}

function counts(byStatus) {
  const entries = STATUSES.filter((s) => byStatus && byStatus[s]).map((s) => `${s} ${byStatus[s]}`);
  return entries.length ? entries.join(" · ") : "—";
}

// ------------------------------------------------------------------ views

/** Each view renders into `root` and may refresh itself until `ctx.signal` is aborted. */
const views = {
  requests: requestsView,
  request: requestView,
  segments: segmentsView,
  imports: importsView,
  "dead-letters": deadLettersView,
  events: eventsView,
  event: failuresView,
};

/** Runs `refresh` now, then again after what it returns (ms), until the view is left. */
function keepFresh(ctx, refresh) {
  const run = async () => {
    if (ctx.signal.aborted) return;
    let next = IDLE_POLL_MS;
    try {
      next = await refresh();
      if (ctx.flashEl.classList.contains("error")) ctx.flash("", "");
    } catch (e) {
      if (ctx.signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return signOut(describe(e));
      ctx.flash(describe(e), "error");
    }
    if (next && !ctx.signal.aborted) {
      const t = setTimeout(run, next);
      ctx.signal.addEventListener("abort", () => clearTimeout(t));
    }
  };
  return run();
}

function heading(title, ctx, extra) {
  return h("div", { class: "view-head" }, h("h1", null, title), extra || null,
    h("button", { type: "button", class: "refresh", onclick: () => render() }, "Refresh"), ctx.flashEl);
}

function requestsView(ctx, root) {
  const body = h("div");
  root.append(heading("Recent requests", ctx), body);
  return keepFresh(ctx, async () => {
    const page = await api("GET", `v1/broadcasts${query({ limit: 50, cursor: ctx.params.get("cursor") })}`);
    const rows = page.data.map((r) => h("tr", { "data-request-id": r.request_id },
      cell(when(r.created_at)),
      cell(h("a", { href: `#/requests/${encodeURIComponent(r.request_id)}` }, r.request_id)),
      cell(r.source, { class: "source" }),
      cell(r.campaign_name || r.campaign_id),
      cell(r.state, { class: `state state-${r.state}` }),
      cell(requestBar(r.summary)),
      cell(counts(r.summary.by_status), { class: "counts" })));
    fill(body,
      rows.length ? table(["Created", "Request", "Source", "Campaign", "State", "Progress", "Rows by status"], rows,
        { class: "requests" }) : note("No send request yet."),
      pager(ctx, "#/requests", page.next_cursor));
    return page.data.some((r) => !FINISHED.has(r.state)) ? FAST_POLL_MS : IDLE_POLL_MS;
  });
}

function pager(ctx, base, next) {
  const links = [];
  if (ctx.params.get("cursor")) links.push(h("a", { href: base }, "First page"));
  if (next) links.push(h("a", { href: `${base}${query({ ...Object.fromEntries(ctx.params), cursor: next })}` }, "Next page"));
  return h("nav", { class: "pager" }, links);
}

function requestView(ctx, root, id) {
  const status = ctx.params.get("status") || "";
  const summary = h("div");
  const rowsEl = h("div");
  const detail = h("section", { id: "row-detail", class: "row-detail", hidden: true });
  let open = null; // the row whose timeline is shown, kept across refreshes
  const show = (row) => {
    open = row.id;
    showRow(detail, row);
  };
  root.append(heading(`Request ${id}`, ctx, h("a", { href: "#/requests" }, "← all requests")),
    summary, statusFilter(ctx, id, status), h("div", { class: "rows-and-detail" }, rowsEl, detail));
  return keepFresh(ctx, async () => {
    const params = { limit: ROWS_PER_PAGE, status, cursor: ctx.params.get("cursor") };
    const req = await api("GET", `v1/broadcasts/${encodeURIComponent(id)}${query(params)}`);
    fill(summary, requestSummary(req));
    // Servers without the status filter answer every row: the page is filtered here too.
    const rows = req.recipients.filter((r) => !status || r.status === status);
    const unfiltered = rows.length !== req.recipients.length;
    fill(rowsEl,
      unfiltered ? note(`Showing the ${status} rows among this page's ${req.recipients.length}.`) : "",
      rows.length ? rowsTable(rows, show) : note(status ? `No ${status} row on this page.` : "No row yet."),
      pager(ctx, `#/requests/${encodeURIComponent(id)}`, req.next_cursor));
    const again = req.recipients.find((r) => r.id === open);
    if (again && !detail.hidden) showRow(detail, again);
    return FINISHED.has(req.state) ? 0 : FAST_POLL_MS;
  });
}

function requestSummary(req) {
  const facts = [
    ["Source", req.source], ["State", req.state], ["Created", when(req.created_at)],
    ["Campaign", req.campaign_name || req.campaign_id], ["Recipients", req.recipient_count],
    ["Send at", req.send_at ? when(req.send_at) : req.send_at_local], ["Canceled", req.canceled_at && when(req.canceled_at)],
    ["Fan-out stopped", req.fan_out_error],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  return h("div", { class: "summary" },
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", null, k), h("dd", { "data-fact": k }, v)])),
    requestBar(req.summary),
    h("p", { class: "counts" }, counts(req.summary.by_status)));
}

function statusFilter(ctx, id, status) {
  const select = h("select", { name: "status", id: "status-filter" },
    h("option", { value: "" }, "every status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  select.addEventListener("change", () => {
    location.hash = `#/requests/${encodeURIComponent(id)}${query({ status: select.value })}`;
  });
  return h("div", { class: "filter" }, h("label", { for: "status-filter" }, "Rows with status "), select);
}

function rowsTable(rows, show) {
  const trs = rows.map((r) => h("tr", { "data-row-id": r.id, "data-status": r.status },
    cell(r.recipient_index),
    cell(r.name, { class: "name" }),
    cell(r.phone || r.email || r.contact_id),
    cell(r.channel),
    cell(r.status, { class: `status status-${r.status}` }),
    cell(r.attempts),
    cell(when(r.updated_at)),
    cell(r.error_message, { class: "error-text" }),
    h("td", null, h("button", { type: "button", class: "open-row", onclick: () => show(r) }, "Open"))));
  return table(["#", "Name", "Address", "Channel", "Status", "Attempts", "Updated", "Error", ""], trs,
    { class: "rows" });
}

/** A row's details: its error and its timeline, one entry per is_<status>_at it has. */
function showRow(detail, row) {
  const moves = STATUSES.filter((s) => row[`is_${s}_at`]).map((s) => ({ s, at: row[`is_${s}_at`] }));
  moves.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const facts = [
    ["Name", row.name], ["Address", row.phone || row.email || row.contact_id], ["Channel", row.channel],
    ["Provider", row.provider], ["Status", row.status], ["Attempts", row.attempts],
    ["Provider's message id", row.external_message_id], ["Next attempt", row.next_attempt_at && when(row.next_attempt_at)],
    ["Due", when(row.due_at)], ["Timezone", row.timezone],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  const close = () => {
    detail.hidden = true;
    detail.parentElement.classList.remove("with-detail");
  };
  fill(detail,
    h("div", { class: "detail-head" }, h("h2", null, `Row ${row.id}`),
      h("button", { type: "button", class: "close", "aria-label": "Close", onclick: close }, "×")),
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
    row.error_message ? [h("h3", null, "Error"), h("pre", { class: "error row-error" }, row.error_message)] : "",
    h("h3", null, "Timeline"),
    h("ol", { class: "timeline" }, h("li", null, when(row.created_at, true), " ", h("b", null, "created")),
      moves.map((m) => h("li", { "data-status": m.s }, when(m.at, true), " ", h("b", null, m.s)))));
  if (detail.hidden) {
    detail.hidden = false;
    detail.parentElement.classList.add("with-detail");
    detail.scrollIntoView({ block: "nearest" });
  }
}

function segmentsView(ctx, root) {
  const body = h("div");
  root.append(heading("Segments", ctx), body);
  return keepFresh(ctx, async () => {
    const data = await api("GET", "v1/segments");
    const rows = data.segments.map((s) => h("tr", { "data-segment-id": s.id },
      cell(s.id), cell(s.name, { class: "name" }), cell(s.member_count), cell(when(s.created_at)), cell(when(s.updated_at))));
    fill(body, rows.length
      ? table(["Segment", "Name", "Members", "Created", "Updated"], rows, { class: "segments" })
      : note("No segment yet."));
    return IDLE_POLL_MS;
  });
}

function importBar(i) {
  const percent = i.state === "completed" ? 100 : i.bytes ? Math.floor((i.bytes_done * 100) / i.bytes) : 0;
  const parts = [{ n: i.bytes_done, cls: i.state === "failed" ? "bad" : "ok", label: "bytes read" }];
  return bar(parts, i.bytes, percent, `${percent} % · ${i.bytes_done} of ${i.bytes} bytes`);
}

function importErrors(i) {
  if (i.failure) return h("span", { class: "error-text" }, i.failure);
  if (!i.errors || !i.errors.length) return "—";
  return h("details", null, h("summary", null, `${i.rejected} refused`),
    h("ul", null, i.errors.map((e) => h("li", null, `line ${e.line}: ${e.reason}`))));
}

function importsView(ctx, root) {
  const body = h("div");
  root.append(heading("Imports", ctx), body);
  return keepFresh(ctx, async () => {
    const data = await api("GET", "v1/imports?limit=100");
    const rows = data.imports.map((i) => h("tr", { "data-import-id": i.import_id },
      cell(i.import_id), cell(i.segment_id), cell(i.state, { class: `state state-${i.state}` }), cell(importBar(i)),
      cell(i.lines), cell(`${i.imported} (${i.created} new, ${i.updated} updated, ${i.unchanged} unchanged)`),
      cell(importErrors(i)), cell(when(i.created_at)), cell(when(i.finished_at))));
    fill(body, rows.length
      ? table(["Import", "Segment", "State", "Progress", "Lines", "Imported", "Refused", "Started", "Finished"], rows,
        { class: "imports" })
      : note("No import yet."));
    return data.imports.some((i) => i.state === "running") ? FAST_POLL_MS : IDLE_POLL_MS;
  });
}

/** A button that POSTs to `path`, says what happened, then refreshes the view. */
function actionButton(ctx, label, path, done) {
  const button = h("button", { type: "button", class: "action" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", path, {});
      ctx.flash(done, "ok");
      render(true);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return signOut(describe(e));
      ctx.flash(describe(e), "error");
      button.disabled = false;
    }
  });
  return button;
}

function deadLettersView(ctx, root) {
  const body = h("div");
  root.append(heading("Dead letters", ctx), body);
  return keepFresh(ctx, async () => {
    let data;
    try {
      data = await api("GET", `v1/dead-letters${query({ cursor: ctx.params.get("cursor") })}`);
    } catch (e) {
      // A Herald without the endpoint (404), or a deployment that keeps no dead letters (501).
      if (!(e instanceof ApiError && (e.code === "not_found" || e.status === 501))) throw e;
      fill(body, note(`This Herald has no dead-letter list: GET /v1/dead-letters answered ${e.status} (${e.message}).`,
        "unavailable"));
      return 0;
    }
    const rows = data.dead_letters.map((d) => h("tr", { "data-dead-letter-id": d.id },
      cell(d.id),
      cell(d.request_id && h("a", { href: `#/requests/${encodeURIComponent(d.request_id)}` }, d.request_id)),
      cell(d.kind), cell((d.row_ids || []).length), cell(d.receive_count), cell(d.reason, { class: "error-text" }),
      cell(when(d.dead_at)),
      h("td", null, actionButton(ctx, "Redrive", `v1/dead-letters/${encodeURIComponent(d.id)}/redrive`,
        `Dead letter ${d.id} is back on the queue.`))));
    fill(body,
      rows.length ? table(["Dead letter", "Request", "Job", "Rows", "Receives", "Reason", "Dead at", ""], rows, { class: "dead-letters" })
        : note("No dead letter: every job was delivered or is still on its way."),
      pager(ctx, "#/dead-letters", data.next_cursor));
    return IDLE_POLL_MS;
  });
}

function eventsView(ctx, root) {
  const body = h("div");
  root.append(heading("Event subscriptions", ctx), body);
  return keepFresh(ctx, async () => {
    const data = await api("GET", "v1/event-subscriptions");
    const rows = data.subscriptions.map((s) => h("tr", { "data-subscription-id": s.id },
      cell(s.id), cell(s.url, { class: "url" }), cell((s.events || []).join(", ")), cell(when(s.created_at)),
      cell(when(s.updated_at)),
      h("td", null, h("a", { href: `#/events/${encodeURIComponent(s.id)}` }, "Failures"))));
    fill(body, rows.length
      ? table(["Subscription", "URL", "Events", "Created", "Updated", ""], rows, { class: "subscriptions" })
      : note("No event subscription yet."));
    return IDLE_POLL_MS;
  });
}

function failuresView(ctx, root, id) {
  const body = h("div");
  root.append(heading(`Failed events of ${id}`, ctx, h("a", { href: "#/events" }, "← all subscriptions")), body);
  const base = `v1/event-subscriptions/${encodeURIComponent(id)}`;
  return keepFresh(ctx, async () => {
    const data = await api("GET", `${base}/failures`);
    const rows = data.failures.map((f) => h("tr", { "data-event-id": f.event_id },
      cell(f.event_id), cell(f.type), cell(f.attempts), cell(f.last_status), cell(f.last_error, { class: "error-text" }),
      cell(when(f.first_attempt_at)), cell(when(f.last_attempt_at)),
      h("td", null, actionButton(ctx, "Redeliver", `${base}/failures/${encodeURIComponent(f.event_id)}/redeliver`,
        `Event ${f.event_id} goes out again.`))));
    fill(body, rows.length
      ? table(["Event", "Type", "Attempts", "Last status", "Last error", "First attempt", "Last attempt", ""], rows,
        { class: "failures" })
      : note("No failed event: every event was delivered or is still being retried."));
    return IDLE_POLL_MS;
  });
}

// ------------------------------------------------------------------ routing and sign-in

const $ = (id) => document.getElementById(id);
let current = null; // the AbortController of the view on screen
let kept = null; // a message to carry into the next render (after an action)

/** `#/requests/abc?status=failed` → the view's name, its path arguments and its parameters. */
function route() {
  const [path, q] = (location.hash.replace(/^#\/?/, "") || "requests").split("?");
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch (_) {
      return part; // a hand-typed lone % names nothing; the API answers 404 for it
    }
  };
  const [name, ...args] = path.split("/").map(decode);
  const view = args.length && name === "requests" ? "request" : args.length && name === "events" ? "event" : name;
  return { view: views[view] ? view : "requests", nav: name, args, params: new URLSearchParams(q || "") };
}

/** Shows the view the hash names; `keepFlash` carries the last message over (after an action). */
function render(keepFlash) {
  if (!sessionStorage.getItem(KEY)) return;
  if (current) current.abort();
  current = new AbortController();
  const r = route();
  const flashEl = h("p", { class: "flash", role: "status" });
  const ctx = {
    signal: current.signal, params: r.params, flashEl,
    flash: (text, kind) => {
      kept = { text, kind };
      flashEl.className = `flash ${kind || ""}`;
      flashEl.textContent = text;
    },
  };
  const carried = keepFlash ? kept : null;
  kept = null;
  if (carried) ctx.flash(carried.text, carried.kind);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === r.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = $("view");
  root.replaceChildren();
  views[r.view](ctx, root, ...r.args);
}

function showSignIn(message) {
  if (current) current.abort();
  current = null;
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("api_key").value = "";
  $("api_key").focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  showSignIn(message);
}

/** Keeps the key for this tab once the API accepts it; a refused key shows the API's error. */
async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  let account;
  try {
    account = await api("GET", "v1/account");
  } catch (e) {
    return signOut(describe(e));
  }
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `tenant ${account.tenant_id}`;
  render();
}

function start() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api_key").value.trim();
    $("api_key").value = "";
    if (key) signIn(key);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", () => render());
  const key = sessionStorage.getItem(KEY);
  if (key) signIn(key);
  else showSignIn("");
}

start();
