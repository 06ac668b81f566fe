//! Bad requests through the HTTP front door, table-driven.
//!
//! Every row sends one bad request and expects: the right 4xx status and error code, the error
//! body shape `{"error": {"code", "message", "fields": [{"field", "message"}]}}`, the named
//! field(s) in `error.fields`, and nothing queued or stored. All rows run against one server
//! (no workers, so nothing is ever delivered); every mismatch is collected and reported at once.

use std::time::Duration;

use herald_tests::{error_fields, fast_settings, json_keys, read, truncate, unpooled_client, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A valid phone used by the base broadcast and owned by the `ct.owner` contact.
const PHONE: &str = "+14155550123";
/// An email owned by the `ct.mail` contact.
const TAKEN_EMAIL: &str = "taken@example.com";

enum Payload {
    None,
    /// Sent with `Content-Type: application/json`.
    Json(Value),
    /// Sent as given, with exactly the case's headers.
    Raw(Vec<u8>),
    /// Sent over a raw socket with `Transfer-Encoding: chunked` (no `Content-Length`).
    Chunked(Vec<u8>),
}

enum Auth {
    /// The server's valid key as a bearer token.
    Default,
    Missing,
    Bearer(String),
    ApiKey(String),
}

struct Case {
    name: String,
    method: Method,
    path: String,
    payload: Payload,
    headers: Vec<(&'static str, String)>,
    auth: Auth,
    status: u16,
    code: &'static str,
    fields: Vec<String>,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>, payload: Payload) -> Case {
        Case {
            name: name.into(),
            method,
            path: path.into(),
            payload,
            headers: Vec::new(),
            auth: Auth::Default,
            status: 0,
            code: "",
            fields: Vec::new(),
        }
    }

    fn expect(mut self, status: u16, code: &'static str, fields: &[&str]) -> Case {
        self.status = status;
        self.code = code;
        self.fields = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    /// 422 `validation_failed` naming `fields`.
    fn invalid(self, fields: &[&str]) -> Case {
        self.expect(422, "validation_failed", fields)
    }

    /// 400 `invalid_json` naming `fields`.
    fn malformed(self, fields: &[&str]) -> Case {
        self.expect(400, "invalid_json", fields)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }
}

/// `POST /v1/broadcasts` with a JSON body.
fn bc(name: &str, body: Value) -> Case {
    Case::new(format!("POST /v1/broadcasts: {name}"), Method::POST, "/v1/broadcasts", Payload::Json(body))
}

/// `POST /v1/broadcasts` with the base body patched (see [`with`]).
fn patched(name: &str, patch: Value) -> Case {
    bc(name, with(patch))
}

/// `POST /v1/broadcasts` with the base body's recipients replaced.
fn to(name: &str, recipients: Value) -> Case {
    bc(name, with(json!({ "recipients": recipients })))
}

/// `POST /v1/broadcasts` with the base body's messages replaced by `content`.
fn content(name: &str, content: Value) -> Case {
    let mut patch = content;
    patch.as_object_mut().expect("content object").insert("messages".into(), Value::Null);
    bc(name, with(patch))
}

/// A raw body with the given content type.
fn raw(name: &str, method: Method, path: &str, content_type: &str, bytes: impl Into<Vec<u8>>) -> Case {
    Case::new(format!("{method} {path}: {name}"), method, path, Payload::Raw(bytes.into()))
        .header("content-type", content_type)
}

/// `POST /v1/broadcasts` with raw bytes as `application/json`.
fn bc_raw(name: &str, bytes: impl Into<Vec<u8>>) -> Case {
    raw(name, Method::POST, "/v1/broadcasts", "application/json", bytes)
}

/// A JSON body on any method and path.
fn json_call(name: &str, method: Method, path: &str, body: Value) -> Case {
    Case::new(format!("{method} {path}: {name}"), method, path, Payload::Json(body))
}

fn put(name: &str, path: &str, body: Value) -> Case {
    json_call(name, Method::PUT, path, body)
}

/// `PUT /v1/templates/tpl.new` (a template that does not exist yet).
fn template(name: &str, body: Value) -> Case {
    put(name, "/v1/templates/tpl.new", body)
}

/// `PUT /v1/campaigns/camp.new` (a campaign that does not exist yet).
fn campaign(name: &str, body: Value) -> Case {
    put(name, "/v1/campaigns/camp.new", body)
}

/// `POST /v1/contacts`.
fn upsert(name: &str, body: Value) -> Case {
    json_call(name, Method::POST, "/v1/contacts", body)
}

fn bare(name: &str, method: Method, path: &str) -> Case {
    Case::new(format!("{method} {path}: {name}"), method, path, Payload::None)
}

/// A broadcast body that is valid on its own: one phone recipient, one message.
fn base() -> Value {
    json!({"recipients": [{"phone": PHONE}], "messages": [{"text": "hi"}]})
}

/// The base body with `patch` merged in; a `null` in `patch` removes the key.
fn with(patch: Value) -> Value {
    let mut body = base();
    let obj = body.as_object_mut().expect("object");
    for (k, v) in patch.as_object().expect("patch object").clone() {
        if v.is_null() {
            obj.remove(&k);
        } else {
            obj.insert(k, v);
        }
    }
    body
}

fn recipients(n: usize) -> Value {
    Value::Array((0..n).map(|_| json!({"phone": PHONE})).collect())
}

/// The base broadcast as a JSON array: `BroadcastBody`'s 16 fields in declaration order.
fn positional_body() -> Value {
    let mut fields = vec![Value::Null; 16];
    fields[0] = json!([{"phone": PHONE}]);
    fields[4] = json!([{"text": "hi"}]);
    Value::Array(fields)
}

fn from_now(d: chrono::Duration) -> String {
    (chrono::Utc::now() + d).to_rfc3339()
}

/// A JSON body a little over the 1 MiB limit (valid JSON, so only its size is wrong).
fn big_body() -> Vec<u8> {
    with(json!({"metadata": {"pad": "x".repeat(1_100 * 1024)}})).to_string().into_bytes()
}

fn recipient_cases() -> Vec<Case> {
    let long_name = "n".repeat(257);
    vec![
        patched("missing recipients", json!({"recipients": null})).invalid(&["recipients"]),
        to("empty recipients", json!([])).invalid(&["recipients"]),
        to("1001 recipients", recipients(1001)).invalid(&["recipients"]),
        to("recipient naming no one", json!([{}])).invalid(&["recipients[0]"]),
        to("recipient with only a name", json!([{"name": "Ann"}])).invalid(&["recipients[0]"]),
        to("phone without +", json!([{"phone": "14155550123"}])).invalid(&["recipients[0].phone"]),
        to("phone too short", json!([{"phone": "+1"}])).invalid(&["recipients[0].phone"]),
        to("phone with letters", json!([{"phone": "+1415abcdefg"}])).invalid(&["recipients[0].phone"]),
        to("blank phone", json!([{"phone": "  "}])).invalid(&["recipients[0].phone"]),
        to("bad phone on the second recipient", json!([{"phone": PHONE}, {"phone": "+999123"}]))
            .invalid(&["recipients[1].phone"]),
        to("bad email", json!([{"email": "not-an-email"}])).invalid(&["recipients[0].email"]),
        to("email without a dotted domain", json!([{"email": "a@nodot"}])).invalid(&["recipients[0].email"]),
        to("name of 257 chars", json!([{"phone": PHONE, "name": long_name}])).invalid(&["recipients[0].name"]),
        to("contact_id with bad chars", json!([{"contact_id": "bad id!"}])).invalid(&["recipients[0].contact_id"]),
        to("contact_id of 129 chars", json!([{"contact_id": "c".repeat(129)}])).invalid(&["recipients[0].contact_id"]),
        to("contact_channel_id with unknown channel", json!([{"contact_channel_id": "ct.1~fax"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to("contact_channel_id without ~", json!([{"contact_channel_id": "ct.1"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to("contact_channel_id with a NUL contact id", json!([{"contact_channel_id": "\u{0000}~sms"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to("contact_channel_id with an empty contact id", json!([{"contact_channel_id": "~sms"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to("contact_channel_id with a space", json!([{"contact_channel_id": "has space~sms"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to("contact_channel_id with a path", json!([{"contact_channel_id": "../../x~sms"}]))
            .invalid(&["recipients[0].contact_channel_id"]),
        to(
            "contact_channel_id with a 129-char contact id",
            json!([{"contact_channel_id": format!("{}~sms", "c".repeat(129))}]),
        )
        .invalid(&["recipients[0].contact_channel_id"]),
        to("slack_id with a space", json!([{"slack_id": "U 123"}])).invalid(&["recipients[0].slack_id"]),
        to("recipient variables with a bad key", json!([{"phone": PHONE, "variables": {"1x": "v"}}]))
            .invalid(&["recipients[0].variables.1x"]),
        to("recipient variables with a NUL", json!([{"phone": PHONE, "variables": {"x": "a\u{0}b"}}]))
            .invalid(&["recipients[0].variables.x"]),
        to("several bad recipients at once", json!([{"phone": "12"}, {"email": "x"}, {}])).invalid(&[
            "recipients[0].phone",
            "recipients[1].email",
            "recipients[2]",
        ]),
    ]
}

/// Bodies that are not JSON of the expected shape: 400 `invalid_json`.
fn wire_shape_cases() -> Vec<Case> {
    let syntax = r#"{"recipients": [{"phone": "+14155550123"}], "messages": [{"text": }]}"#;
    let duplicate = r#"{"recipients": [{"phone": "+14155550123"}], "recipients": [], "messages": [{"text": "hi"}]}"#;
    vec![
        bc("unknown field `recipient`", json!({"recipient": [{"phone": PHONE}], "messages": [{"text": "hi"}]}))
            .malformed(&["recipient"]),
        to("unknown recipient field `phon`", json!([{"phon": PHONE}])).malformed(&["recipients[0].phon"]),
        to("recipients as a string", json!(PHONE)).malformed(&["recipients"]),
        to("null recipient", json!([null])).malformed(&["recipients[0]"]),
        to("phone as a number", json!([{"phone": 14155550123u64}])).malformed(&["recipients[0].phone"]),
        patched("background as a string", json!({"background": "false"})).malformed(&["background"]),
        patched("message text as a number", json!({"messages": [{"text": 5}]})).malformed(&["messages[0].text"]),
        patched("media without link", json!({"media": {"filename": "a.pdf"}})).malformed(&["media"]),
        content("inline template with an unknown field", json!({"template": {"bdy": "x"}}))
            .malformed(&["template.bdy"]),
        content("template as a number", json!({"template": 5})).malformed(&["template"]),
        bc_raw("invalid JSON syntax", syntax).malformed(&[]),
        bc_raw("empty body", "").malformed(&[]),
        bc_raw("whitespace body", "  \n ").malformed(&[]),
        bc_raw("JSON array body", "[]").malformed(&["body"]),
        bc_raw("JSON null body", "null").malformed(&["body"]),
        // serde lets a derived struct deserialize from a sequence of its fields in order; an API
        // body must be an object.
        bc("JSON array body holding the fields in order", positional_body()).malformed(&["body"]),
        bc_raw("duplicate key", duplicate).malformed(&["body"]),
        bc_raw("trailing garbage after a valid body", format!("{} x", base())).malformed(&["body"]),
        bc_raw("two JSON objects", format!("{} {}", base(), base())).malformed(&["body"]),
    ]
}

/// Where the content comes from, and rules that need the catalog.
fn content_cases() -> Vec<Case> {
    let header_1 = json!({"body": "x", "header": {"type": "text", "text": "Hi {{1}}"}});
    vec![
        patched("no content", json!({"messages": null})).invalid(&["campaign_id"]),
        patched("two contents (template and messages)", json!({"template": "tpl.two"})).invalid(&["messages"]),
        patched("two contents (messages and flow)", json!({"flow": {"flow_id": "f1"}})).invalid(&["flow"]),
        patched("template_ids without campaign_id", json!({"template_ids": ["tpl.two"]})).invalid(&["template_ids"]),
        content("unknown campaign", json!({"campaign_id": "camp.nope"})).invalid(&["campaign_id"]),
        content("campaign_id with bad chars", json!({"campaign_id": "camp nope"})).invalid(&["campaign_id"]),
        content("unknown template id", json!({"template": "tpl.nope"})).invalid(&["template"]),
        content("template id with bad chars", json!({"template": "tpl/nope"})).invalid(&["template"]),
        content(
            "campaign template subset not in the campaign",
            json!({"campaign_id": "camp.one", "template_ids": ["tpl.other"], "body_params": ["a", "b"]}),
        )
        .invalid(&["template_ids[0]"]),
        content("campaign with empty template_ids", json!({"campaign_id": "camp.one", "template_ids": []}))
            .invalid(&["template_ids"]),
        patched("messages empty", json!({"messages": []})).invalid(&["messages"]),
        patched("11 messages", json!({"messages": vec![json!({"text": "m"}); 11]})).invalid(&["messages"]),
        patched("message text blank", json!({"messages": [{"text": "   "}]})).invalid(&["messages[0].text"]),
        patched("message text of 4097 chars", json!({"messages": [{"text": "x".repeat(4097)}]}))
            .invalid(&["messages[0].text"]),
        patched("message text with a control char", json!({"messages": [{"text": "a\u{7}b"}]}))
            .invalid(&["messages[0].text"]),
        patched("variables with an ESC", json!({"variables": {"x": "\u{1b}[31mred"}})).invalid(&["variables.x"]),
        patched("variables with a BEL", json!({"variables": {"x": "ding\u{7}"}})).invalid(&["variables.x"]),
        patched("recipient name with a NUL", json!({"recipients": [{"phone": PHONE, "name": "A\u{0}"}]}))
            .invalid(&["recipients[0].name"]),
        content("flow with bad flow_id", json!({"flow": {"flow_id": "no spaces"}})).invalid(&["flow.flow_id"]),
        content("inline template with blank body", json!({"template": {"body": "  "}})).invalid(&["template.body"]),
        content(
            "inline template text header without text",
            json!({"template": {"body": "x", "header": {"type": "text"}}}),
        )
        .invalid(&["template.header.text"]),
        content("inline template with bad channel", json!({"template": {"body": "x", "channel": "fax"}}))
            .invalid(&["template.channel"]),
        content("inline template header {{1}} without header_params", json!({ "template": header_1 }))
            .invalid(&["header_params"]),
        content("body_params fewer than the template's {{2}}", json!({"template": "tpl.two", "body_params": ["a"]}))
            .invalid(&["body_params"]),
        content("no body_params for the template's {{2}}", json!({"template": "tpl.two"})).invalid(&["body_params"]),
        content("campaign template needs body_params", json!({"campaign_id": "camp.one"})).invalid(&["body_params"]),
        content("media header without media.link", json!({"template": "tpl.img"})).invalid(&["media.link"]),
        patched("media.link not a URL", json!({"media": {"link": "not a url"}})).invalid(&["media.link"]),
        patched("media.link with ftp scheme", json!({"media": {"link": "ftp://example.com/a.png"}}))
            .invalid(&["media.link"]),
    ]
}

/// Routing, metadata, variables, params, scheduling and inline delivery.
fn option_cases() -> Vec<Case> {
    let long_key = "k".repeat(65);
    let two_messages = json!([{"text": "a"}, {"text": "b"}]);
    vec![
        patched("bad channel", json!({"channel": "fax"})).invalid(&["channel"]),
        patched("bad priority entry", json!({"priority": ["sms", "pigeon"]})).invalid(&["priority[1]"]),
        patched("priority duplicates", json!({"priority": ["sms", "sms"]})).invalid(&["priority[1]"]),
        patched("priority empty", json!({"priority": []})).invalid(&["priority"]),
        patched("channel and priority together", json!({"channel": "sms", "priority": ["email"]}))
            .invalid(&["priority"]),
        patched("bad messaging_tag", json!({"messaging_tag": "MARKETING"})).invalid(&["messaging_tag"]),
        patched("metadata with 51 keys", json!({"metadata": json_keys("k", 51)})).invalid(&["metadata"]),
        patched("metadata over 8 KiB", json!({"metadata": {"blob": "x".repeat(9000)}})).invalid(&["metadata"]),
        patched("metadata key of 65 chars", json!({"metadata": {long_key.clone(): 1}}))
            .invalid(&[&format!("metadata.{long_key}")]),
        patched("variables with a bad key", json!({"variables": {"1bad": "x"}})).invalid(&["variables.1bad"]),
        patched("variables with a nested object", json!({"variables": {"obj": {"a": 1}}})).invalid(&["variables.obj"]),
        patched("variables with an array value", json!({"variables": {"arr": [1]}})).invalid(&["variables.arr"]),
        patched("variables with 101 keys", json!({"variables": json_keys("k", 101)})).invalid(&["variables"]),
        patched("variables value of 1025 chars", json!({"variables": {"v": "x".repeat(1025)}}))
            .invalid(&["variables.v"]),
        patched("header_params with 21 entries", json!({"header_params": vec!["a"; 21]})).invalid(&["header_params"]),
        patched("body_params entry of 1025 chars", json!({"body_params": ["x".repeat(1025)]}))
            .invalid(&["body_params[0]"]),
        patched("send_at not RFC 3339", json!({"send_at": "tomorrow"})).invalid(&["send_at"]),
        patched("send_at 366 days ahead", json!({"send_at": from_now(chrono::Duration::days(366))}))
            .invalid(&["send_at"]),
        patched("send_at_local not a local time", json!({"send_at_local": "2027-01-04T09:00Z"}))
            .invalid(&["send_at_local"]),
        patched(
            "send_window with an unknown day",
            json!({"send_window": {"days": ["someday"], "from": "09:00", "until": "17:00"}}),
        )
        .invalid(&["send_window.days[0]"]),
        patched("throttle above a million a minute", json!({"throttle": {"per_minute": 1_000_001}}))
            .invalid(&["throttle.per_minute"]),
        patched("background:false with 101 rows", json!({"background": false, "recipients": recipients(101)}))
            .invalid(&["background"]),
        patched(
            "background:false with 2 messages x 51 recipients",
            json!({"background": false, "recipients": recipients(51), "messages": two_messages}),
        )
        .invalid(&["background"]),
        patched(
            "background:false with a future send_at",
            json!({"background": false, "send_at": from_now(chrono::Duration::hours(1))}),
        )
        .invalid(&["send_at"]),
    ]
}

/// Content type, body size, Idempotency-Key, auth, routing and query strings.
fn transport_cases(other_key: &str) -> Vec<Case> {
    let (post, get) = (Method::POST, Method::GET);
    let base_bytes = base().to_string().into_bytes();
    let template_bytes = br#"{"body":"x"}"#.to_vec();
    let idem = |name: &str, key: String| {
        bc(name, base()).header("idempotency-key", key).expect(400, "invalid_idempotency_key", &["Idempotency-Key"])
    };
    let unauthorized = |case: Case, auth: Auth| case.auth(auth).expect(401, "unauthorized", &[]);
    let unsupported = |case: Case| case.expect(415, "unsupported_media_type", &[]);
    vec![
        unsupported(raw("text/plain body", post.clone(), "/v1/broadcasts", "text/plain", base_bytes)),
        unsupported(raw("form body", post.clone(), "/v1/broadcasts", "application/x-www-form-urlencoded", "a=b")),
        unsupported(raw("text/plain body", Method::PUT, "/v1/templates/tpl.new", "text/plain", template_bytes)),
        bc_raw("1.1 MiB body", big_body()).expect(413, "payload_too_large", &[]),
        Case::new(
            "POST /v1/broadcasts: 1.1 MiB chunked body",
            post.clone(),
            "/v1/broadcasts",
            Payload::Chunked(big_body()),
        )
        .expect(413, "payload_too_large", &[]),
        raw("1.1 MiB body", Method::PUT, "/v1/templates/tpl.big", "application/json", big_body()).expect(
            413,
            "payload_too_large",
            &[],
        ),
        idem("Idempotency-Key of 300 chars", "k".repeat(300)),
        idem("empty Idempotency-Key", String::new()),
        idem("Idempotency-Key with a space", "a b".into()),
        unauthorized(bc("no key", base()), Auth::Missing),
        unauthorized(bc("wrong bearer key", base()), Auth::Bearer("hk_not_a_real_key".into())),
        unauthorized(bc("blank bearer key", base()), Auth::Bearer(String::new())),
        unauthorized(bc("wrong x-api-key", base()), Auth::ApiKey("nope".into())),
        unauthorized(bc("Basic auth", base()).header("authorization", "Basic dXNlcjpwYXNz"), Auth::Missing),
        unauthorized(template("no key", json!({"body": "x"})), Auth::Missing),
        unauthorized(
            bare("a valid key with a suffix", get.clone(), "/v1/broadcasts/x"),
            Auth::Bearer(format!("{other_key}x")),
        ),
        bare("unknown path", get.clone(), "/v1/nope").expect(404, "not_found", &[]),
        json_call("unknown path", post.clone(), "/v1/broadcast", base()).expect(404, "not_found", &[]),
        bare("unknown send request", get.clone(), "/v1/broadcasts/req_missing").expect(404, "not_found", &[]),
        bare("unknown template", get.clone(), "/v1/templates/tpl.missing").expect(404, "not_found", &[]),
        bare("unknown campaign", Method::DELETE, "/v1/campaigns/camp.missing").expect(404, "not_found", &[]),
        bare("wrong method", Method::DELETE, "/v1/broadcasts").expect(405, "method_not_allowed", &[]),
        put("wrong method", "/v1/broadcasts", base()).expect(405, "method_not_allowed", &[]),
        json_call("wrong method", post, "/v1/templates", json!({"body": "x"})).expect(405, "method_not_allowed", &[]),
        bare("limit=0", get.clone(), "/v1/broadcasts/x?limit=0").expect(400, "invalid_query", &["limit"]),
        bare("limit=1001", get.clone(), "/v1/broadcasts/x?limit=1001").expect(400, "invalid_query", &["limit"]),
        bare("limit=abc", get.clone(), "/v1/broadcasts/x?limit=abc").expect(400, "invalid_query", &["limit"]),
        bare("cursor=abc", get.clone(), "/v1/broadcasts/x?cursor=abc").expect(400, "invalid_query", &["cursor"]),
        bare("limit=0", get, "/v1/outbox?limit=0").expect(400, "invalid_query", &["limit"]),
    ]
}

fn template_cases() -> Vec<Case> {
    let long_id = format!("/v1/templates/{}", "t".repeat(129));
    let x = || json!({"body": "x"});
    vec![
        put("bad id chars in path", "/v1/templates/bad!id", x()).invalid(&["id"]),
        put("space in path id", "/v1/templates/bad%20id", x()).invalid(&["id"]),
        put("path id of 129 chars", &long_id, x()).invalid(&["id"]),
        template("blank body", json!({"body": "  "})).invalid(&["body"]),
        put("blank body (replacing an existing template)", "/v1/templates/tpl.two", json!({"body": ""}))
            .invalid(&["body"]),
        template("missing body", json!({"channel": "sms"})).invalid(&["body"]),
        template("body of 4097 chars", json!({"body": "x".repeat(4097)})).invalid(&["body"]),
        template("bad channel", json!({"body": "x", "channel": "fax"})).invalid(&["channel"]),
        template("unknown field", json!({"body": "x", "colour": "red"})).malformed(&["colour"]),
        template(
            "header filename on an image header",
            json!({"body": "x", "header": {"type": "image", "filename": "a.png"}}),
        )
        .invalid(&["header.filename"]),
        template(
            "text header with a link",
            json!({"body": "x", "header": {"type": "text", "text": "t", "link": "https://example.com/a"}}),
        )
        .invalid(&["header"]),
        template(
            "image header with a bad link",
            json!({"body": "x", "header": {"type": "image", "link": "javascript:x"}}),
        )
        .invalid(&["header.link"]),
        template("unknown header type", json!({"body": "x", "header": {"type": "audio"}})).malformed(&["header.type"]),
        template("whatsapp with empty name", json!({"body": "x", "whatsapp": {"name": "", "language": "en"}}))
            .invalid(&["whatsapp.name"]),
    ]
}

fn campaign_cases() -> Vec<Case> {
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    vec![
        campaign("missing name", json!({"template_ids": ["tpl.two"]})).invalid(&["name"]),
        campaign("blank name", json!({"name": " ", "template_ids": ["tpl.two"]})).invalid(&["name"]),
        campaign("empty template_ids", json!({"name": "c", "template_ids": []})).invalid(&["template_ids"]),
        campaign("11 template_ids", json!({"name": "c", "template_ids": eleven})).invalid(&["template_ids"]),
        campaign("template id that doesn't exist", json!({"name": "c", "template_ids": ["tpl.nope"]}))
            .invalid(&["template_ids[0]"]),
        put(
            "template id that doesn't exist (replacing)",
            "/v1/campaigns/camp.one",
            json!({"name": "c", "template_ids": ["tpl.two", "tpl.nope"]}),
        )
        .invalid(&["template_ids[1]"]),
        campaign("duplicate template id", json!({"name": "c", "template_ids": ["tpl.two", "tpl.two"]}))
            .invalid(&["template_ids[1]"]),
        campaign("defaults with a bad key", json!({"name": "c", "template_ids": ["tpl.two"], "defaults": {"1x": "v"}}))
            .invalid(&["defaults.1x"]),
        campaign("defaults with a NUL", json!({"name": "c", "template_ids": ["tpl.two"], "defaults": {"x": "a\u{0}"}}))
            .invalid(&["defaults.x"]),
        put("bad id chars in path", "/v1/campaigns/camp%20new", json!({"name": "c", "template_ids": ["tpl.two"]}))
            .invalid(&["id"]),
        campaign("template_ids as a string", json!({"name": "c", "template_ids": "tpl.two"}))
            .malformed(&["template_ids"]),
    ]
}

fn contact_cases() -> Vec<Case> {
    let path = "/v1/contacts/ct.new";
    vec![
        put("bad phone", path, json!({"phone": "12345"})).invalid(&["phone"]),
        put("bad email", path, json!({"email": "nope"})).invalid(&["email"]),
        put("fields with a nested value", path, json!({"fields": {"plan": {"a": 1}}})).invalid(&["fields.plan"]),
        put("fields with an ESC", path, json!({"fields": {"plan": "\u{1b}c"}})).invalid(&["fields.plan"]),
        upsert("fields with a BEL", json!({"phone": PHONE, "fields": {"plan": "\u{7}"}})).invalid(&["fields.plan"]),
        put("unknown field", path, json!({"mobile": PHONE})).malformed(&["mobile"]),
        put("bad id chars in path", "/v1/contacts/ct%20new", json!({"name": "x"})).invalid(&["id"]),
        put("contact channel id as path", "/v1/contacts/ct.owner~sms", json!({"name": "x"})).invalid(&["id"]),
        put("phone owned by another contact", "/v1/contacts/ct.other", json!({"phone": PHONE})).invalid(&["phone"]),
        put(
            "email owned by another contact (replacing)",
            "/v1/contacts/ct.owner",
            json!({"phone": PHONE, "email": TAKEN_EMAIL}),
        )
        .invalid(&["email"]),
        upsert("bad phone", json!({"phone": "+1"})).invalid(&["phone"]),
        upsert("bad email", json!({"email": "a b@example.com"})).invalid(&["email"]),
        upsert("no key fields", json!({"name": "Nobody"})).invalid(&["phone"]),
        upsert("empty object", json!({})).invalid(&["phone"]),
        upsert("merge would take another contact's email", json!({"phone": PHONE, "email": TAKEN_EMAIL}))
            .invalid(&["email"]),
        upsert("blocked as a string", json!({"phone": PHONE, "blocked": "yes"})).malformed(&["blocked"]),
    ]
}

fn cases(other_key: &str) -> Vec<Case> {
    let all: Vec<Case> = [
        recipient_cases(),
        wire_shape_cases(),
        content_cases(),
        option_cases(),
        transport_cases(other_key),
        template_cases(),
        campaign_cases(),
        contact_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for c in &all {
        assert!(c.status != 0, "case {:?} has no expectation", c.name);
    }
    all
}

/// What a case got back.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

async fn send(server: &TestServer, case: &Case) -> Result<Answer, String> {
    if let Payload::Chunked(bytes) = &case.payload {
        return send_chunked(server, case, bytes).await;
    }
    let client = unpooled_client();
    let mut req = client.request(case.method.clone(), server.url(&case.path));
    req = match &case.auth {
        Auth::Default => req.bearer_auth(&server.key),
        Auth::Missing => req,
        Auth::Bearer(k) => req.header("authorization", format!("Bearer {k}")),
        Auth::ApiKey(k) => req.header("x-api-key", k),
    };
    for (k, v) in &case.headers {
        req = req.header(*k, v);
    }
    req = match &case.payload {
        Payload::None | Payload::Chunked(_) => req,
        Payload::Json(v) => req.json(v),
        Payload::Raw(b) => req.body(b.clone()),
    };
    let resp = req.timeout(Duration::from_secs(30)).send().await.map_err(|e| format!("request failed: {e}"))?;
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let content_type = header("content-type");
    let www_authenticate = header("www-authenticate");
    let (status, body) = read(resp).await;
    Ok(Answer { status, content_type, www_authenticate, body })
}

/// Sends a chunked body over a plain socket (reqwest here has no streaming bodies) and parses the
/// response by hand.
async fn send_chunked(server: &TestServer, case: &Case, bytes: &[u8]) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(server.addr).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", case.method, case.path, server.addr);
    head.push_str(&format!("authorization: Bearer {}\r\n", server.key));
    head.push_str("content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n");
    for (k, v) in &case.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    for chunk in bytes.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    // The server may answer (and close) before reading everything; write errors are expected then.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        let _ = wr.shutdown().await;
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut raw)).await;
    writer.abort();
    if raw.is_empty() {
        return Err(format!("no response on the socket ({read:?})"));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("unparseable response: {text:?}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_type = None;
    let mut www_authenticate = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(v.trim().to_string()),
                "www-authenticate" => www_authenticate = Some(v.trim().to_string()),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let body = if chunked { dechunk(body) } else { body.to_string() };
    let body = if body.is_empty() { Value::Null } else { serde_json::from_str(&body).unwrap_or(Value::String(body)) };
    let status = StatusCode::from_u16(code).map_err(|e| e.to_string())?;
    Ok(Answer { status, content_type, www_authenticate, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Problems with the error body's shape; empty when it is `{"error": {"code", "message", "fields"}}`.
fn shape_problems(body: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let Some(err) = body.get("error").and_then(Value::as_object) else {
        return vec!["body has no `error` object".into()];
    };
    if body.as_object().map(|o| o.len()) != Some(1) {
        p.push("body has keys besides `error`".into());
    }
    for k in ["code", "message"] {
        if err.get(k).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
            p.push(format!("error.{k} is not a non-empty string"));
        }
    }
    match err.get("fields").and_then(Value::as_array) {
        None => p.push("error.fields is not an array".into()),
        Some(fields) => {
            for (i, f) in fields.iter().enumerate() {
                let ok = |k: &str| f.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                if !ok("field") || !ok("message") {
                    p.push(format!("error.fields[{i}] is not {{\"field\", \"message\"}} strings: {f}"));
                }
            }
        }
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(fast_settings(), Default::default(), 0).await;

    // ---------------------------------------------------------------- setup
    let setup: Vec<(&str, Value)> = vec![
        ("/v1/templates/tpl.two", json!({"body": "Hi {{1}}, your code is {{2}}"})),
        ("/v1/templates/tpl.other", json!({"body": "Other"})),
        ("/v1/templates/tpl.img", json!({"body": "See the picture", "header": {"type": "image"}})),
        ("/v1/campaigns/camp.one", json!({"name": "Camp one", "template_ids": ["tpl.two"]})),
        ("/v1/contacts/ct.owner", json!({"name": "Owner", "phone": PHONE})),
        ("/v1/contacts/ct.mail", json!({"name": "Mail", "email": TAKEN_EMAIL})),
    ];
    for (path, body) in &setup {
        let (status, resp) = server.put(path, body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "setup PUT {path}: {resp}");
    }
    let snapshot = |path: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server.get(path).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            body
        }
    };
    let before_docs = [
        snapshot("/v1/templates/tpl.two").await,
        snapshot("/v1/campaigns/camp.one").await,
        snapshot("/v1/contacts/ct.owner").await,
        snapshot("/v1/contacts/ct.mail").await,
    ];
    let baseline = server.local.store.counts().await.unwrap();
    assert_eq!((baseline.requests, baseline.rows), (0, 0));
    assert_eq!((baseline.templates, baseline.campaigns, baseline.contacts), (3, 1, 2));
    assert_eq!(server.local.queue.depth().await.unwrap(), (0, 0, 0));

    // ---------------------------------------------------------------- the table
    let other = server.key_for("other").await;
    let table = cases(&other);
    let total = table.len();
    let mut failures: Vec<String> = Vec::new();
    let mut failing_cases = 0;
    for case in &table {
        let mut problems: Vec<String> = Vec::new();
        let before = server.stored().await;
        match send(&server, case).await {
            Err(e) => problems.push(e),
            Ok(a) => {
                if a.status.as_u16() != case.status {
                    problems.push(format!("status {} (expected {})", a.status.as_u16(), case.status));
                }
                if !a.content_type.as_deref().is_some_and(|c| c.starts_with("application/json")) {
                    problems.push(format!("content-type {:?} (expected application/json)", a.content_type));
                }
                problems.extend(shape_problems(&a.body));
                let code = a.body["error"]["code"].as_str().unwrap_or_default();
                if code != case.code {
                    problems.push(format!("code {code:?} (expected {:?})", case.code));
                }
                let got = error_fields(&a.body);
                let missing: Vec<&String> = case.fields.iter().filter(|f| !got.contains(f)).collect();
                if !missing.is_empty() {
                    problems.push(format!("fields {got:?} lack {missing:?}"));
                }
                if case.status == 401 && a.www_authenticate.as_deref() != Some("Bearer") {
                    problems.push(format!("WWW-Authenticate {:?} (expected \"Bearer\")", a.www_authenticate));
                }
                if !problems.is_empty() {
                    problems.push(format!("body: {}", truncate(&a.body.to_string(), 600)));
                }
            }
        }
        // Compared with the state before this call, so one case that stores something is
        // reported once, not blamed on every case after it.
        problems.extend(server.stored().await.changes_since(&before));
        if !problems.is_empty() {
            failing_cases += 1;
            failures.push(format!("- {}\n    {}", case.name, problems.join("\n    ")));
        }
    }

    // ---------------------------------------------------------------- nothing stored overall
    let counts = server.local.store.counts().await.unwrap();
    if counts != baseline || counts.requests != 0 || counts.rows != 0 {
        failures.push(format!("- after the table: store {counts:?} (baseline after setup {baseline:?})"));
    }
    let depth = server.local.queue.depth().await.unwrap();
    if depth != (0, 0, 0) {
        failures.push(format!("- after the table: queue depth {depth:?} (expected (0, 0, 0))"));
    }

    // ---------------------------------------------------------------- nothing was modified either
    let after_docs = [
        snapshot("/v1/templates/tpl.two").await,
        snapshot("/v1/campaigns/camp.one").await,
        snapshot("/v1/contacts/ct.owner").await,
        snapshot("/v1/contacts/ct.mail").await,
    ];
    for (b, a) in before_docs.iter().zip(&after_docs) {
        if b != a {
            failures.push(format!("- a refused request modified a stored document:\n    before {b}\n    after  {a}"));
        }
    }

    // ---------------------------------------------------------------- the base body really is valid
    // (so the broadcast rows above fail for their own mutation, not for the base).
    let (status, body) = server.post("/v1/broadcasts", base()).await;
    if status != StatusCode::ACCEPTED {
        failures.push(format!("- control: the base broadcast body was refused: {status} {body}"));
    }

    assert!(
        failures.is_empty(),
        "{failing_cases} of {total} bad-request cases misbehaved ({} problems in all):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
