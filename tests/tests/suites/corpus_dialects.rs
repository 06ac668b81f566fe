//! Malformed requests against every drop-in dialect endpoint and the provider callback endpoint,
//! table-driven (the dialect counterpart of `validation.rs`).
//!
//! Every row sends one bad request and expects: its exact 4xx status (never a 5xx), a body that
//! names the problem, and nothing stored or queued. SMAX answers every error as exactly
//! `{"success": false, "result": "<what is wrong>"}`; CSML, Invent and Pabbly answer Herald's
//! native `{"error": {"code", "message", "fields"}}` naming the vendor's field; the provider
//! callback endpoint answers natively too. All rows run against one server (no workers, so
//! nothing is ever delivered); every mismatch is collected and reported at once.

use std::time::Duration;

use herald_tests::{error_fields, fast_settings, json_keys, read, truncate, unpooled_client, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CSML: &str = "/compat/csml/v1/api/broadcasts";
const SMAX_V1: &str = "/compat/smax/bots/default/users/1234567890/send";
const SMAX_V2: &str = "/compat/smax/public/bots/default/send";
const INVENT: &str = "/compat/invent/orgs/default/broadcasts/onboarding/send";
const PABBLY_SEND: &str = "/compat/pabbly/api/v1/broadcasts/send";
const PABBLY_BROADCASTS: &str = "/compat/pabbly/api/v1/broadcasts";
const PABBLY_CAMPAIGNS: &str = "/compat/pabbly/api/v1/broadcasts/api-campaigns";

/// SMAX V1 admits 25 calls per second per bot; V1 rows are spaced so the limit never answers.
const V1_PACE: Duration = Duration::from_millis(50);

enum Payload {
    None,
    /// Sent with `Content-Type: application/json`.
    Json(Value),
    /// Sent as given, with exactly the case's headers.
    Raw(Vec<u8>),
}

enum Auth {
    /// The server's valid key as a bearer token.
    Default,
    Missing,
    Bearer(String),
    ApiKey(String),
}

/// What the answer must look like.
enum Expect {
    /// Not set yet (a bug in the table).
    Nothing,
    /// Exactly `{"success": false, "result": "…"}`, `result` containing this text.
    Smax(String),
    /// Herald's native error body with this code, naming at least these fields.
    Native { code: &'static str, fields: Vec<String> },
}

struct Case {
    name: String,
    method: Method,
    path: String,
    payload: Payload,
    headers: Vec<(&'static str, String)>,
    auth: Auth,
    status: u16,
    expect: Expect,
}

impl Case {
    fn new(name: impl Into<String>, method: Method, path: impl Into<String>, payload: Payload) -> Case {
        let path = path.into();
        let short = path.split('?').next().unwrap_or_default().to_string();
        Case {
            name: format!("{method} {short}: {}", name.into()),
            method,
            path,
            payload,
            headers: Vec::new(),
            auth: Auth::Default,
            status: 0,
            expect: Expect::Nothing,
        }
    }

    fn native(mut self, status: u16, code: &'static str, fields: &[&str]) -> Case {
        self.status = status;
        self.expect = Expect::Native { code, fields: fields.iter().map(|f| f.to_string()).collect() };
        self
    }

    /// 422 `validation_failed` naming `fields`.
    fn invalid(self, fields: &[&str]) -> Case {
        self.native(422, "validation_failed", fields)
    }

    /// 400 `invalid_json` naming `fields`.
    fn malformed(self, fields: &[&str]) -> Case {
        self.native(400, "invalid_json", fields)
    }

    fn smax(mut self, status: u16, says: impl Into<String>) -> Case {
        self.status = status;
        self.expect = Expect::Smax(says.into());
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn auth(mut self, auth: Auth) -> Case {
        self.auth = auth;
        self
    }

    fn is_smax_v1(&self) -> bool {
        self.path.starts_with("/compat/smax/bots/")
    }
}

/// The keys the table uses besides the server's own.
struct Keys {
    /// The server's key (tenant `default`).
    main: String,
    /// A key of tenant `other`, which has a campaign and a template of its own.
    other: String,
}

// ------------------------------------------------------------------------------------ helpers

fn post(name: &str, path: &str, body: Value) -> Case {
    Case::new(name, Method::POST, path, Payload::Json(body))
}

fn raw(name: &str, method: Method, path: &str, content_type: &str, bytes: impl Into<Vec<u8>>) -> Case {
    Case::new(name, method, path, Payload::Raw(bytes.into())).header("content-type", content_type)
}

fn bare(name: &str, method: Method, path: &str) -> Case {
    Case::new(name, method, path, Payload::None)
}

/// `base` with `patch` merged in; a `null` in `patch` removes the key.
fn with(base: &Value, patch: Value) -> Value {
    let mut body = base.clone();
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

/// A JSON body a little over the 1 MiB limit (valid JSON, so only its size is wrong).
fn big_body() -> Vec<u8> {
    json!({"pad": "x".repeat(1_100 * 1024)}).to_string().into_bytes()
}

/// The wire-level refusals every JSON endpoint shares: syntax, shape, duplicate keys, lone
/// surrogates, content type, size and method. `smax` says the answer is SMAX's shape.
fn wire_cases(path: &str, base: &Value, smax: bool) -> Vec<Case> {
    let expect = |case: Case, status: u16, code: &'static str, fields: &[&str], says: &str| {
        if smax {
            case.smax(status, says)
        } else {
            case.native(status, code, fields)
        }
    };
    let json_raw = |name: &str, bytes: String| raw(name, Method::POST, path, "application/json", bytes);
    let text = base.to_string();
    let duplicate = format!("{{\"zz\": 1, \"zz\": 2, {}", &text[1..]);
    let surrogate = r#"{"pad": "\ud800"}"#.to_string();
    vec![
        expect(json_raw("invalid JSON syntax", "{\"a\": }".into()), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("truncated JSON", text[..text.len() - 1].to_string()), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("empty body", String::new()), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("JSON array body", format!("[{text}]")), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("JSON string body", "\"hi\"".into()), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("duplicate key", duplicate), 400, "invalid_json", &["body"], "body"),
        expect(json_raw("lone surrogate in a string escape", surrogate), 400, "invalid_json", &["body"], "body"),
        expect(
            raw("text/plain body", Method::POST, path, "text/plain", text.clone()),
            415,
            "unsupported_media_type",
            &[],
            "",
        ),
        expect(
            raw("form body", Method::POST, path, "application/x-www-form-urlencoded", "a=b"),
            415,
            "unsupported_media_type",
            &[],
            "",
        ),
        expect(
            raw("1.1 MiB body", Method::POST, path, "application/json", big_body()),
            413,
            "payload_too_large",
            &[],
            "",
        ),
        expect(bare("wrong method", Method::GET, path), 405, "method_not_allowed", &[], "POST"),
        expect(
            Case::new("wrong method", Method::PUT, path, Payload::Json(base.clone())),
            405,
            "method_not_allowed",
            &[],
            "POST",
        ),
    ]
}

// ------------------------------------------------------------------------------------ CSML

fn csml_base() -> Value {
    json!({
        "payload": {"content": {"flow_id": "myflow"}, "content_type": "flow_trigger"},
        "client": {"user_id": "some-user-id"},
        "metadata": {"somekey": "somevalue"}
    })
}

fn csml_cases(k: &Keys) -> Vec<Case> {
    let base = csml_base();
    let flow = |content: Value| with(&base, json!({"payload": {"content_type": "flow_trigger", "content": content}}));
    let client = |client: Value| with(&base, json!({ "client": client }));
    let unsupported = |case: Case| case.native(400, "unsupported_content_type", &["payload.content_type"]);
    let mut cases = vec![
        unsupported(post(
            "content_type text",
            CSML,
            with(&base, json!({"payload": {"content_type": "text", "content": {"text": "hi"}}})),
        )),
        unsupported(post("no content_type", CSML, with(&base, json!({"payload": {"content": {"flow_id": "f"}}})))),
        unsupported(post("no payload", CSML, with(&base, json!({"payload": null})))),
        post("content_type as a number", CSML, with(&base, json!({"payload": {"content_type": 5}})))
            .malformed(&["payload.content_type"]),
        post("payload as a string", CSML, with(&base, json!({"payload": "flow_trigger"}))).malformed(&["payload"]),
        post("no flow_id and no client", CSML, with(&flow(json!({})), json!({"client": null})))
            .invalid(&["payload.content.flow_id", "client.user_id"]),
        post("flow_id with bad chars", CSML, flow(json!({"flow_id": "bad id!"}))).invalid(&["payload.content.flow_id"]),
        post("flow_id of 129 chars", CSML, flow(json!({"flow_id": "f".repeat(129)})))
            .invalid(&["payload.content.flow_id"]),
        post("flow_id as a number", CSML, flow(json!({"flow_id": 7}))).malformed(&["payload.content.flow_id"]),
        post("close_flows as a string", CSML, flow(json!({"flow_id": "f", "close_flows": "yes"})))
            .malformed(&["payload.content.close_flows"]),
        post("unknown field in content", CSML, flow(json!({"flow_id": "f", "flow": 1})))
            .malformed(&["payload.content.flow"]),
        post("content as an array", CSML, flow(json!(["f"]))).malformed(&["payload.content"]),
        post("client.bot_id (refused)", CSML, client(json!({"user_id": "u", "bot_id": "b"})))
            .malformed(&["client.bot_id"]),
        post("client.channel_id (refused)", CSML, client(json!({"user_id": "u", "channel_id": "c"})))
            .malformed(&["client.channel_id"]),
        post("user_id as a number", CSML, client(json!({"user_id": 42}))).malformed(&["client.user_id"]),
        post("user_id with a space", CSML, client(json!({"user_id": "has space"}))).invalid(&["client.user_id"]),
        post("blank user_id", CSML, client(json!({"user_id": "  "}))).invalid(&["client.user_id"]),
        post("user_id of 257 chars", CSML, client(json!({"user_id": "u".repeat(257)}))).invalid(&["client.user_id"]),
        post("unknown top-level field", CSML, with(&base, json!({"channel": "webhook"}))).malformed(&["channel"]),
        post("metadata as an array", CSML, with(&base, json!({"metadata": ["a"]}))).malformed(&["metadata"]),
        post("metadata with 51 keys", CSML, with(&base, json!({"metadata": json_keys("k", 51)}))).invalid(&["metadata"]),
        post("metadata over 8 KiB", CSML, with(&base, json!({"metadata": {"blob": "x".repeat(9000)}})))
            .invalid(&["metadata"]),
        raw(
            "lone surrogate in client.user_id",
            Method::POST,
            CSML,
            "application/json",
            r#"{"payload": {"content_type": "flow_trigger", "content": {"flow_id": "f"}}, "client": {"user_id": "\udc00x"}}"#,
        )
        .malformed(&["body"]),
        post("no key", CSML, base.clone()).auth(Auth::Missing).native(401, "unauthorized", &[]),
        post("wrong x-api-key", CSML, base.clone()).auth(Auth::ApiKey("nope".into())).native(401, "unauthorized", &[]),
        post("a valid key with a suffix", CSML, base.clone())
            .auth(Auth::Bearer(format!("{}x", k.main)))
            .native(401, "unauthorized", &[]),
    ];
    cases.extend(wire_cases(CSML, &base, false));
    cases
}

// ------------------------------------------------------------------------------------ SMAX V1

fn smax_v1_cases(k: &Keys) -> Vec<Case> {
    let main = &k.main;
    let v1 = |name: &str, query: String| bare(name, Method::POST, &format!("{SMAX_V1}?{query}")).auth(Auth::Missing);
    let ok = format!("bot_token={main}&block_id=blk-1");
    let many: String = (0..101).map(|i| format!("&a{i}=v")).collect();
    let user = |id: &str| format!("/compat/smax/bots/default/users/{id}/send?{ok}");
    vec![
        v1("no bot_token", "block_id=blk-1".into()).smax(401, "bot_token"),
        v1("empty bot_token", "bot_token=&block_id=blk-1".into()).smax(401, "bot_token"),
        v1("wrong bot_token", "bot_token=hk_wrong_token_0000000000000000&block_id=blk-1".into()).smax(401, "bot_token"),
        v1("bot_token of another tenant", format!("bot_token={}&block_id=blk-1", k.other)).smax(404, "no bot"),
        bare("bot id that is not the token's", Method::POST, &format!("/compat/smax/bots/nobody/users/1/send?{ok}"))
            .auth(Auth::Missing)
            .smax(404, "no bot"),
        v1("reserved chatfuel_ attribute", format!("{ok}&chatfuel_block_id=x")).smax(400, "chatfuel_"),
        v1("reserved CHATFUEL_ attribute (any case)", format!("{ok}&CHATFUEL_token=x")).smax(400, "reserved"),
        v1("reserved chatfuel_ attribute without a block", format!("bot_token={main}&chatfuel_x=1&plan=gold"))
            .smax(400, "chatfuel_x"),
        v1("messaging_tag HUMAN_AGENT (V2 only)", format!("{ok}&messaging_tag=HUMAN_AGENT")).smax(400, "messaging_tag"),
        v1("messaging_tag unknown, quoted", format!("{ok}&messaging_tag=%22NOPE%22")).smax(400, "messaging_tag"),
        v1("messaging_tag lower case", format!("{ok}&messaging_tag=account_update")).smax(400, "messaging_tag"),
        v1("messaging_tag empty", format!("{ok}&messaging_tag=")).smax(400, "messaging_tag"),
        v1("block_name and block_id", format!("{ok}&block_name=Order%20shipped")).smax(400, "not both"),
        v1("neither block nor attributes", format!("bot_token={main}")).smax(400, "block_name"),
        v1("block_name that does not exist", format!("bot_token={main}&block_name=Nope")).smax(404, "no block named"),
        v1("block_name of another tenant's block", format!("bot_token={main}&block_name=Other%20block"))
            .smax(404, "no block named"),
        v1("block_id that does not exist", format!("bot_token={main}&block_id=nope")).smax(404, "no block with id"),
        v1("block_id of another tenant's block", format!("bot_token={main}&block_id=other-blk"))
            .smax(404, "no block with id"),
        v1("attribute name with a space", format!("{ok}&my%20attr=1")).smax(400, "my attr"),
        v1("attribute name starting with a digit", format!("{ok}&1st=x")).smax(400, "1st"),
        v1("bad attribute name without a block", format!("bot_token={main}&bad-name=1")).smax(400, "bad-name"),
        v1("attribute value of 1025 chars", format!("{ok}&city={}", "c".repeat(1025))).smax(400, "1024"),
        v1("attribute value with a NUL", format!("{ok}&city=a%00b")).smax(400, "control characters"),
        v1("attribute value with an ESC, no block", format!("bot_token={main}&city=%1B[2J"))
            .smax(400, "control characters"),
        v1("101 attributes", format!("{ok}{many}")).smax(400, "too many"),
        v1("attribute given twice", format!("{ok}&city=a&city=b")).smax(400, "twice"),
        v1("bot_token given twice", format!("{ok}&bot_token={main}")).smax(400, "twice"),
        bare("user id with a space", Method::POST, &user("has%20space")).auth(Auth::Missing).smax(400, "user_id"),
        bare("user id of 257 chars", Method::POST, &user(&"9".repeat(257))).auth(Auth::Missing).smax(400, "user_id"),
        bare("user id with a control char", Method::POST, &user("a%07b")).auth(Auth::Missing).smax(400, "user_id"),
        v1("block whose template needs {{1}}", format!("bot_token={main}&block_id=blk-pos")).smax(400, "body_params"),
        bare("wrong method", Method::GET, &format!("{SMAX_V1}?{ok}")).auth(Auth::Missing).smax(405, "POST"),
        bare("wrong method", Method::DELETE, &format!("{SMAX_V1}?{ok}")).auth(Auth::Missing).smax(405, "POST"),
    ]
}

// ------------------------------------------------------------------------------------ SMAX V2

fn smax_v2_cases(k: &Keys) -> Vec<Case> {
    let base = json!({"customer_id": "cus-1", "messages": [{"text": "hi"}]});
    let text = json!([{"text": "hi"}]);
    let v2 = |name: &str, patch: Value| post(name, SMAX_V2, with(&base, patch));
    let mut cases = vec![
        post("no customer", SMAX_V2, json!({"messages": text})).smax(400, "customer_id"),
        post("no block_id and no messages", SMAX_V2, json!({"customer_id": "cus-1"})).smax(400, "block_id"),
        post("empty object", SMAX_V2, json!({})).smax(400, "customer_id"),
        v2("bad messaging_tag", json!({"messaging_tag": "NOPE"})).smax(400, "messaging_tag"),
        v2("messaging_tag as a number", json!({"messaging_tag": 1})).smax(400, "messaging_tag"),
        v2("unknown priority", json!({"priority": ["fax"]})).smax(400, "priority[0]"),
        v2("priority listed twice", json!({"priority": ["fbid", "fbid"]})).smax(400, "priority[1]"),
        v2("empty priority", json!({"priority": []})).smax(400, "priority"),
        v2("priority as a string", json!({"priority": "fbid"})).smax(400, "priority"),
        post("national phone", SMAX_V2, json!({"customer_phone": "0912345678", "messages": text}))
            .smax(400, "customer_phone"),
        post("phone with letters", SMAX_V2, json!({"customer_phone": "+1415abcdefg", "messages": text}))
            .smax(400, "customer_phone"),
        post("phone of 300 digits", SMAX_V2, json!({"customer_phone": "1".repeat(300), "messages": text}))
            .smax(400, "customer_phone"),
        post("phone as a number", SMAX_V2, json!({"customer_phone": 84912345678u64, "messages": text}))
            .smax(400, "customer_phone"),
        post("bad email", SMAX_V2, json!({"customer_email": "nope", "messages": text})).smax(400, "customer_email"),
        post("fbid with a space", SMAX_V2, json!({"customer_fbid": "a b", "messages": text}))
            .smax(400, "customer_fbid"),
        v2("customer_id as a number", json!({"customer_id": 5})).smax(400, "customer_id"),
        v2("customer_id that does not exist", json!({"customer_id": "nobody"})).smax(404, "no customer"),
        v2("customer_id of another tenant", json!({"customer_id": "other-cus"})).smax(404, "no customer"),
        v2("block_id that does not exist", json!({"block_id": "nope"})).smax(404, "no block"),
        v2("block_id of another tenant", json!({"block_id": "other-blk"})).smax(404, "no block"),
        v2("blank message text", json!({"messages": [{"text": " "}]})).smax(400, "messages[0].text"),
        v2("message text of 4097 chars", json!({"messages": [{"text": "x".repeat(4097)}]}))
            .smax(400, "messages[0].text"),
        v2("empty messages", json!({"messages": []})).smax(400, "messages"),
        v2("message without text", json!({"messages": [{}]})).smax(400, "messages[0]"),
        v2("messages as a string", json!({"messages": "hi"})).smax(400, "messages"),
        v2("notification token of 1025 chars", json!({"notification_messages_token": "t".repeat(1025)}))
            .smax(400, "notification_messages_token"),
        v2("unknown field", json!({"extra": 1})).smax(400, "extra"),
        post("no key", SMAX_V2, base.clone()).auth(Auth::Missing).smax(401, "key"),
        post("wrong key", SMAX_V2, base.clone())
            .auth(Auth::Bearer("hk_not_a_key_0000000000000".into()))
            .smax(401, "key"),
        post("key of another tenant", SMAX_V2, base.clone()).auth(Auth::Bearer(k.other.clone())).smax(404, "no bot"),
        post("bot id that is not the key's", "/compat/smax/public/bots/other/send", base.clone()).smax(404, "no bot"),
    ];
    cases.extend(wire_cases(SMAX_V2, &base, true));
    cases
}

// ------------------------------------------------------------------------------------ Invent

fn invent_cases(k: &Keys) -> Vec<Case> {
    let base = json!({"contact_id": "ct-1"});
    let inv = |name: &str, body: Value| post(name, INVENT, body);
    let long = "x".repeat(257);
    let not_found = |case: Case| case.native(404, "not_found", &[]);
    let mut cases = vec![
        inv("no recipient", json!({})).invalid(&["contact_id"]),
        inv("only a name", json!({"name": "Ann"})).invalid(&["contact_id"]),
        inv("name of 257 chars", json!({"contact_id": "ct-1", "name": long})).invalid(&["name"]),
        inv("phone of 257 chars", json!({"phone": format!("+1{}", "5".repeat(255))})).invalid(&["phone"]),
        inv("email of 261 chars", json!({"email": format!("{}@example.com", "a".repeat(250))})).invalid(&["email"]),
        inv("contact_channel_id of 261 chars", json!({"contact_channel_id": format!("{long}~sms")}))
            .invalid(&["contact_channel_id"]),
        inv("contact_channel_id with an unknown channel", json!({"contact_channel_id": "ct-1~fax"}))
            .invalid(&["contact_channel_id"]),
        inv("contact_channel_id without ~", json!({"contact_channel_id": "ct-1"})).invalid(&["contact_channel_id"]),
        inv("contact_channel_id with a NUL contact id", json!({"contact_channel_id": "\u{0000}~sms"}))
            .invalid(&["contact_channel_id"]),
        inv("contact_channel_id with an empty contact id", json!({"contact_channel_id": "~sms"}))
            .invalid(&["contact_channel_id"]),
        inv("contact_channel_id with a space", json!({"contact_channel_id": "has space~sms"}))
            .invalid(&["contact_channel_id"]),
        inv("contact_channel_id with a path", json!({"contact_channel_id": "../../x~sms"}))
            .invalid(&["contact_channel_id"]),
        inv("phone too short", json!({"phone": "12"})).invalid(&["phone"]),
        inv("national phone", json!({"phone": "0912345678"})).invalid(&["phone"]),
        inv("phone with letters", json!({"phone": "+1415abcdefg"})).invalid(&["phone"]),
        inv("bad email", json!({"email": "not-an-email"})).invalid(&["email"]),
        inv("contact_id with bad chars", json!({"contact_id": "bad id!"})).invalid(&["contact_id"]),
        inv("template_ids naming no template", json!({"contact_id": "ct-1", "template_ids": ["nope"]}))
            .invalid(&["template_ids[0]"]),
        inv("empty template_ids", json!({"contact_id": "ct-1", "template_ids": []})).invalid(&["template_ids"]),
        inv("template_ids as a string", json!({"contact_id": "ct-1", "template_ids": "welcome"}))
            .malformed(&["template_ids"]),
        inv("variables with a bad key", json!({"contact_id": "ct-1", "variables": {"1bad": "x"}}))
            .invalid(&["variables.1bad"]),
        inv("variables with a nested object", json!({"contact_id": "ct-1", "variables": {"obj": {"a": 1}}}))
            .invalid(&["variables.obj"]),
        inv("variables value of 1025 chars", json!({"contact_id": "ct-1", "variables": {"v": "x".repeat(1025)}}))
            .invalid(&["variables.v"]),
        inv("unknown field", json!({"contact_id": "ct-1", "segment": "vip"})).malformed(&["segment"]),
        inv("background as a string", json!({"contact_id": "ct-1", "background": "no"})).malformed(&["background"]),
        inv("contact_id as a number", json!({"contact_id": 1})).malformed(&["contact_id"]),
        not_found(post(
            "broadcast that does not exist",
            "/compat/invent/orgs/default/broadcasts/nope/send",
            base.clone(),
        )),
        not_found(post(
            "broadcast of another tenant",
            "/compat/invent/orgs/default/broadcasts/other-blk/send",
            base.clone(),
        )),
        not_found(post(
            "org that is not the key's",
            "/compat/invent/orgs/acme/broadcasts/onboarding/send",
            base.clone(),
        )),
        not_found(inv("key of another tenant", base.clone()).auth(Auth::Bearer(k.other.clone()))),
        not_found(
            post(
                "another tenant's own org, this tenant's broadcast",
                "/compat/invent/orgs/other/broadcasts/onboarding/send",
                base.clone(),
            )
            .auth(Auth::Bearer(k.other.clone())),
        ),
        not_found(post(
            "org id with bad percent-encoding",
            "/compat/invent/orgs/%FF/broadcasts/onboarding/send",
            base.clone(),
        )),
        inv("no key", base.clone()).auth(Auth::Missing).native(401, "unauthorized", &[]),
        inv("wrong key", base.clone()).auth(Auth::Bearer("hk_nope".into())).native(401, "unauthorized", &[]),
    ];
    cases.extend(wire_cases(INVENT, &base, false));
    cases
}

// ------------------------------------------------------------------------------------ Pabbly

fn pabbly_send_base() -> Value {
    json!({
        "templateName": "festival_offer_template",
        "campaignName": "festival offer",
        "destination": "917697812345",
        "userName": "Jon",
        "headerParams": ["Sir"],
        "bodyParams": ["Christmas", "Thank You"],
        "source": "api",
        "link": "https://placehold.co/600x400/EEE/31343C.png",
        "filename": "filename",
        "defaultContactFieldValues": {"Country": "India"}
    })
}

fn pabbly_send_cases(k: &Keys) -> Vec<Case> {
    let base = pabbly_send_base();
    let send = |name: &str, patch: Value| post(name, PABBLY_SEND, with(&base, patch));
    let image =
        |patch: Value| with(&with(&base, json!({"campaignName": "promo", "templateName": "promo_image"})), patch);
    let mut cases = vec![
        post("empty object", PABBLY_SEND, json!({})).invalid(&[
            "destination",
            "userName",
            "source",
            "campaignName",
            "templateName",
        ]),
        send("unknown source", json!({"source": "email"})).invalid(&["source"]),
        send("source in upper case", json!({"source": "API"})).invalid(&["source"]),
        send("source as a number", json!({"source": 1})).malformed(&["source"]),
        send("national destination", json!({"destination": "0912345678"})).invalid(&["destination"]),
        send("destination with letters", json!({"destination": "9176978xxxxx"})).invalid(&["destination"]),
        send("destination of 300 digits", json!({"destination": "9".repeat(300)})).invalid(&["destination"]),
        send("destination as an array", json!({"destination": ["917697812345"]})).malformed(&["destination"]),
        send("blank userName", json!({"userName": " "})).invalid(&["userName"]),
        send("userName of 257 chars", json!({"userName": "u".repeat(257)})).invalid(&["userName"]),
        send("campaignName that does not exist", json!({"campaignName": "nope"})).invalid(&["campaignName"]),
        send("campaignName of another tenant", json!({"campaignName": "Other block"})).invalid(&["campaignName"]),
        send("templateName that does not exist", json!({"templateName": "missing"})).invalid(&["templateName"]),
        send("templateName not in the campaign", json!({"templateName": "other"})).invalid(&["templateName"]),
        send("too few bodyParams", json!({"bodyParams": ["only one"]})).invalid(&["bodyParams"]),
        send("no headerParams for the header's {{1}}", json!({"headerParams": null})).invalid(&["headerParams"]),
        send("bodyParams entry of 1025 chars", json!({"bodyParams": ["x".repeat(1025), "b"]}))
            .invalid(&["bodyParams[0]"]),
        send("bodyParams as a string", json!({"bodyParams": "Christmas"})).malformed(&["bodyParams"]),
        send("defaultContactFieldValues with a bad key", json!({"defaultContactFieldValues": {"bad key": "x"}}))
            .invalid(&["defaultContactFieldValues.bad key"]),
        send("defaultContactFieldValues with a BEL", json!({"defaultContactFieldValues": {"Country": "\u{7}"}}))
            .invalid(&["defaultContactFieldValues.Country"]),
        post("image template without link", PABBLY_SEND, image(json!({"link": null}))).invalid(&["link"]),
        post("link not a URL", PABBLY_SEND, image(json!({"link": "not a url"}))).invalid(&["link"]),
        post("link with javascript scheme", PABBLY_SEND, image(json!({"link": "javascript:alert(1)"})))
            .invalid(&["link"]),
        send("unknown field", json!({"priority": 1})).malformed(&["priority"]),
        send("native field name", json!({"template_name": "x"})).malformed(&["template_name"]),
        post("key of another tenant", PABBLY_SEND, base.clone())
            .auth(Auth::Bearer(k.other.clone()))
            .invalid(&["campaignName", "templateName"]),
        post("no key", PABBLY_SEND, base.clone()).auth(Auth::Missing).native(401, "unauthorized", &[]),
        post("wrong key", PABBLY_SEND, base.clone()).auth(Auth::Bearer("hk_nope".into())).native(
            401,
            "unauthorized",
            &[],
        ),
    ];
    cases.extend(wire_cases(PABBLY_SEND, &base, false));
    cases
}

fn pabbly_broadcast_cases() -> Vec<Case> {
    let base = json!({"broadcastName": "Sale", "destinations": ["14155550170"], "message": "hi"});
    let bc = |name: &str, patch: Value| post(name, PABBLY_BROADCASTS, with(&base, patch));
    let thousand_and_one: Vec<String> = (0..1001).map(|i| format!("1415555{i:04}")).collect();
    let mut cases = vec![
        post("empty object", PABBLY_BROADCASTS, json!({})).invalid(&["broadcastName", "destinations", "message"]),
        bc("message and templateName", json!({"templateName": "festival_offer_template"})).invalid(&["message"]),
        bc("neither message nor templateName", json!({"message": null})).invalid(&["message"]),
        bc("empty destinations", json!({"destinations": []})).invalid(&["destinations"]),
        bc("1001 destinations", json!({ "destinations": thousand_and_one })).invalid(&["destinations"]),
        bc("bad second destination", json!({"destinations": ["14155550170", "0912"]})).invalid(&["destinations[1]"]),
        bc("destinations as a string", json!({"destinations": "14155550170"})).malformed(&["destinations"]),
        bc("templateName that does not exist", json!({"message": null, "templateName": "nope"}))
            .invalid(&["templateName"]),
        bc("templateName of another tenant", json!({"message": null, "templateName": "other-tpl"}))
            .invalid(&["templateName"]),
        bc("blank broadcastName", json!({"broadcastName": ""})).invalid(&["broadcastName"]),
        bc("broadcastName of 257 chars", json!({"broadcastName": "b".repeat(257)})).invalid(&["broadcastName"]),
        bc("blank message", json!({"message": "  "})).invalid(&["message"]),
        bc("message of 4097 chars", json!({"message": "x".repeat(4097)})).invalid(&["message"]),
        bc("unknown field", json!({"campaignName": "festival offer"})).malformed(&["campaignName"]),
    ];
    cases.extend(wire_cases(PABBLY_BROADCASTS, &base, false));
    cases
}

fn pabbly_campaign_cases() -> Vec<Case> {
    let base = json!({"campaignName": "Brand new", "templateNames": ["festival_offer_template"]});
    let add = |name: &str, patch: Value| post(name, PABBLY_CAMPAIGNS, with(&base, patch));
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let mut cases = vec![
        post("empty object", PABBLY_CAMPAIGNS, json!({})).invalid(&["campaignName", "templateNames"]),
        add("blank campaignName", json!({"campaignName": " "})).invalid(&["campaignName"]),
        add("campaignName of 257 chars", json!({"campaignName": "c".repeat(257)})).invalid(&["campaignName"]),
        add("campaignName that exists", json!({"campaignName": "festival offer"})).native(409, "campaign_exists", &[]),
        add("empty templateNames", json!({"templateNames": []})).invalid(&["templateNames"]),
        add("11 templateNames", json!({ "templateNames": eleven })).invalid(&["templateNames"]),
        add("templateNames naming no template", json!({"templateNames": ["nope"]})).invalid(&["templateNames[0]"]),
        add("templateNames naming another tenant's", json!({"templateNames": ["other-tpl"]}))
            .invalid(&["templateNames[0]"]),
        add("templateNames listed twice", json!({"templateNames": ["other", "other"]})).invalid(&["templateNames[1]"]),
        add("templateNames as a string", json!({"templateNames": "other"})).malformed(&["templateNames"]),
        add("defaultContactFieldValues with a bad key", json!({"defaultContactFieldValues": {"1x": "v"}}))
            .invalid(&["defaultContactFieldValues.1x"]),
        add("unknown field", json!({"id": "cmp_mine"})).malformed(&["id"]),
    ];
    cases.extend(wire_cases(PABBLY_CAMPAIGNS, &base, false));
    cases
}

// ------------------------------------------------------------------------------------ provider callbacks

/// No provider is configured, so every callback path answers `404` whatever it is sent.
fn provider_cases() -> Vec<Case> {
    let whatsapp_like = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
        "statuses": [{"id": "wamid.x", "status": "delivered", "timestamp": "1"}]}}]}]});
    let mut cases = Vec::new();
    for provider in ["whatsapp", "messenger", "sms", "unknown"] {
        let path = format!("/v1/providers/{provider}/events");
        let not_found = |case: Case| case.auth(Auth::Missing).native(404, "not_found", &[]);
        cases.push(not_found(
            post("no provider configured", &path, whatsapp_like.clone()).header("x-hub-signature-256", "sha256=00"),
        ));
        cases.push(not_found(raw("garbage JSON", Method::POST, &path, "application/json", "{\"entry\": [")));
        cases.push(not_found(raw(
            "binary garbage",
            Method::POST,
            &path,
            "application/octet-stream",
            vec![0xff, 0, 0xfe],
        )));
        cases.push(not_found(raw(
            "form body",
            Method::POST,
            &path,
            "application/x-www-form-urlencoded",
            "MessageSid=SM1&MessageStatus=delivered",
        )));
    }
    cases.push(
        raw("empty body", Method::POST, "/v1/providers/sms/events", "text/plain", "").auth(Auth::Missing).native(
            404,
            "not_found",
            &[],
        ),
    );
    cases.push(
        raw("1.1 MiB garbage", Method::POST, "/v1/providers/unknown/events", "application/json", big_body())
            .auth(Auth::Missing)
            .native(404, "not_found", &[]),
    );
    for provider in ["whatsapp", "messenger", "unknown"] {
        let path = format!("/v1/providers/{provider}/events?hub.mode=subscribe&hub.verify_token=t&hub.challenge=c");
        cases.push(bare("subscription check, nothing configured", Method::GET, &path).auth(Auth::Missing).native(
            404,
            "not_found",
            &[],
        ));
    }
    cases
}

fn cases(k: &Keys) -> Vec<Case> {
    let all: Vec<Case> = [
        csml_cases(k),
        smax_v1_cases(k),
        smax_v2_cases(k),
        invent_cases(k),
        pabbly_send_cases(k),
        pabbly_broadcast_cases(),
        pabbly_campaign_cases(),
        provider_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for c in &all {
        assert!(c.status != 0 && !matches!(c.expect, Expect::Nothing), "case {:?} has no expectation", c.name);
    }
    all
}

// ------------------------------------------------------------------------------------ running

/// What a case got back.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

async fn send(http: &reqwest::Client, server: &TestServer, case: &Case) -> Result<Answer, String> {
    let mut req = http.request(case.method.clone(), server.url(&case.path));
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
        Payload::None => req,
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

/// Problems with a SMAX error body; empty when it is exactly `{"success": false, "result": "…"}`
/// with `result` saying `says`.
fn smax_problems(body: &Value, says: &str) -> Vec<String> {
    let mut p = Vec::new();
    let Some(obj) = body.as_object() else {
        return vec!["body is not a JSON object".into()];
    };
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    if keys != ["result", "success"] {
        p.push(format!("keys {keys:?} (expected exactly [\"result\", \"success\"])"));
    }
    if obj.get("success") != Some(&Value::Bool(false)) {
        p.push("success is not false".into());
    }
    match obj.get("result").and_then(Value::as_str) {
        Some(r) if !r.trim().is_empty() => {
            if !r.contains(says) {
                p.push(format!("result does not mention {says:?}"));
            }
        }
        _ => p.push("result is not a non-empty string".into()),
    }
    p
}

/// Problems with a native error body; empty when it is `{"error": {"code", "message", "fields"}}`.
fn native_problems(body: &Value, code: &str, fields: &[String]) -> Vec<String> {
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
        Some(list) => {
            for (i, f) in list.iter().enumerate() {
                let ok = |k: &str| f.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
                if !ok("field") || !ok("message") {
                    p.push(format!("error.fields[{i}] is not {{\"field\", \"message\"}} strings: {f}"));
                }
            }
        }
    }
    let got_code = err.get("code").and_then(Value::as_str).unwrap_or_default();
    if got_code != code {
        p.push(format!("code {got_code:?} (expected {code:?})"));
    }
    let got = error_fields(body);
    let missing: Vec<&String> = fields.iter().filter(|f| !got.contains(f)).collect();
    if !missing.is_empty() {
        p.push(format!("fields {got:?} lack {missing:?}"));
    }
    p
}

async fn put_as(server: &TestServer, key: &str, path: &str, body: Value) {
    let (status, resp) = server.call_as(key, Method::PUT, path, Some(body)).await;
    assert!(status.is_success(), "setup PUT {path}: {status} {resp}");
}

async fn post_ok(server: &TestServer, path: &str, body: Value) -> Value {
    let (status, resp) = server.post(path, body).await;
    assert!(status.is_success(), "setup POST {path}: {status} {resp}");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dialect_requests_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(fast_settings(), Default::default(), 0).await;
    let main = server.key.clone();
    let other = server.key_for("other").await;

    // ---------------------------------------------------------------- setup
    let wa = |body: &str, name: &str, header: Value| json!({"channel": "whatsapp", "header": header, "body": body, "whatsapp": {"name": name, "language": "en"}});
    let setup: Vec<(&str, Value)> = vec![
        // SMAX: a block, and one whose template needs positional values V1 cannot give.
        ("/v1/templates/shipped", json!({"body": "Hi, order {{order_id}} left for {{city}}"})),
        ("/v1/campaigns/blk-1", json!({"name": "Order shipped", "template_ids": ["shipped"]})),
        ("/v1/templates/positional", json!({"body": "Hi {{1}}"})),
        ("/v1/campaigns/blk-pos", json!({"name": "Positional", "template_ids": ["positional"]})),
        ("/v1/contacts/cus-1", json!({"name": "Lan"})),
        // Invent.
        ("/v1/templates/welcome", json!({"channel": "sms", "body": "Hi {{name}}, welcome to {{shop}} in {{city}}"})),
        (
            "/v1/templates/welcome-mail",
            json!({"channel": "email", "subject": "Welcome", "body": "Hello {{first_name}}"}),
        ),
        (
            "/v1/campaigns/onboarding",
            json!({"name": "Onboarding", "template_ids": ["welcome", "welcome-mail"], "defaults": {"shop": "Herald Coffee", "city": "Paris"}}),
        ),
        (
            "/v1/contacts/ct-1",
            json!({"name": "Ada Lovelace", "phone": "+14155550123", "email": "ada@example.com", "fields": {"city": "Lyon"}}),
        ),
        // Pabbly.
        (
            "/v1/templates/festival_offer_template",
            wa(
                "Happy {{1}} from all of us in {{Country}}! {{2}}",
                "festival_offer_template",
                json!({"type": "text", "text": "Dear {{1}}"}),
            ),
        ),
        ("/v1/templates/promo_image", wa("Look!", "promo_image", json!({"type": "image"}))),
        ("/v1/templates/other", wa("Other", "other", Value::Null)),
    ];
    for (path, body) in &setup {
        put_as(&server, &main, path, body.clone()).await;
    }
    post_ok(
        &server,
        PABBLY_CAMPAIGNS,
        json!({"campaignName": "festival offer", "templateNames": ["festival_offer_template"]}),
    )
    .await;
    post_ok(&server, PABBLY_CAMPAIGNS, json!({"campaignName": "promo", "templateNames": ["promo_image"]})).await;
    // Tenant `other` has a block, a template and a customer that tenant `default` must not reach.
    put_as(&server, &other, "/v1/templates/other-tpl", json!({"body": "Other tenant"})).await;
    put_as(&server, &other, "/v1/campaigns/other-blk", json!({"name": "Other block", "template_ids": ["other-tpl"]}))
        .await;
    put_as(&server, &other, "/v1/contacts/other-cus", json!({"name": "Not yours"})).await;

    let baseline = server.local.store.counts().await.unwrap();
    assert_eq!((baseline.requests, baseline.rows), (0, 0));
    assert_eq!(server.local.queue.depth().await.unwrap(), (0, 0, 0));

    // ---------------------------------------------------------------- the table
    let table = cases(&Keys { main: main.clone(), other: other.clone() });
    let http = unpooled_client();
    let total = table.len();
    let mut failures: Vec<String> = Vec::new();
    let mut failing_cases = 0;
    for case in &table {
        if case.is_smax_v1() {
            tokio::time::sleep(V1_PACE).await;
        }
        let mut problems: Vec<String> = Vec::new();
        let before = server.stored().await;
        match send(&http, &server, case).await {
            Err(e) => problems.push(e),
            Ok(a) => {
                let status = a.status.as_u16();
                if !(400..500).contains(&status) {
                    problems.push(format!("status {status} is not a 4xx"));
                }
                if status != case.status {
                    problems.push(format!("status {status} (expected {})", case.status));
                }
                if !a.content_type.as_deref().is_some_and(|c| c.starts_with("application/json")) {
                    problems.push(format!("content-type {:?} (expected application/json)", a.content_type));
                }
                match &case.expect {
                    Expect::Nothing => problems.push("no expectation".into()),
                    Expect::Smax(says) => problems.extend(smax_problems(&a.body, says)),
                    Expect::Native { code, fields } => {
                        problems.extend(native_problems(&a.body, code, fields));
                        if case.status == 401 && a.www_authenticate.as_deref() != Some("Bearer") {
                            problems.push(format!("WWW-Authenticate {:?} (expected \"Bearer\")", a.www_authenticate));
                        }
                    }
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
    if counts != baseline {
        failures.push(format!("- after the table: store {counts:?} (baseline after setup {baseline:?})"));
    }
    let depth = server.local.queue.depth().await.unwrap();
    if depth != (0, 0, 0) {
        failures.push(format!("- after the table: queue depth {depth:?} (expected (0, 0, 0))"));
    }

    // ---------------------------------------------------------------- the base bodies really are valid
    // (so each row fails for its own mutation, not for its base).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let controls: Vec<(&str, Method, String, Option<Value>)> = vec![
        ("CSML", Method::POST, CSML.to_string(), Some(csml_base())),
        ("SMAX V1", Method::POST, format!("{SMAX_V1}?bot_token={main}&block_id=blk-1&order_id=1&city=c"), None),
        (
            "SMAX V2",
            Method::POST,
            SMAX_V2.to_string(),
            Some(json!({"customer_id": "cus-1", "messages": [{"text": "hi"}]})),
        ),
        ("Invent", Method::POST, INVENT.to_string(), Some(json!({"contact_id": "ct-1"}))),
        ("Pabbly send", Method::POST, PABBLY_SEND.to_string(), Some(pabbly_send_base())),
        (
            "Pabbly broadcast",
            Method::POST,
            PABBLY_BROADCASTS.to_string(),
            Some(json!({"broadcastName": "Sale", "destinations": ["14155550170"], "message": "hi"})),
        ),
        (
            "Pabbly API campaign",
            Method::POST,
            PABBLY_CAMPAIGNS.to_string(),
            Some(json!({"campaignName": "Brand new", "templateNames": ["festival_offer_template"]})),
        ),
    ];
    for (name, method, path, body) in controls {
        let (status, resp) = server.call(method, &path, body).await;
        if !status.is_success() {
            failures.push(format!("- control: the {name} base request was refused: {status} {resp}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{failing_cases} of {total} malformed dialect requests misbehaved ({} problems in all):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
