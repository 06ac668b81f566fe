//! The operator dashboard (`GET /dashboard` and its assets): served without a key, under a strict
//! Content-Security-Policy, with the right content types, through `herald serve`'s router and the
//! ingest Lambda alike; the page carries no inline script or style, and its script never writes
//! HTML from data. `scripts/test_dashboard.py` drives the page itself in a headless browser.

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use reqwest::StatusCode;
use serde_json::{json, Value};

use herald::providers::sandbox::SandboxBehaviour;
use herald_ingest::Ingest;
use herald_tests::{fast_settings, unpooled_client, TestServer};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const FILES: [(&str, &str); 3] = [
    ("/dashboard", "text/html; charset=utf-8"),
    ("/dashboard/app.js", "text/javascript; charset=utf-8"),
    ("/dashboard/app.css", "text/css; charset=utf-8"),
];

async fn quiet_server() -> TestServer {
    TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await
}

/// A file as a browser without a key gets it: status, the headers that matter, the body.
async fn fetch(s: &TestServer, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = unpooled_client().get(s.url(path)).send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("text body"))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_without_a_key_under_a_strict_policy() {
    let s = quiet_server().await;
    for (path, content_type) in FILES {
        let (status, headers, body) = fetch(&s, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(header(&headers, "content-type"), content_type, "{path}");
        assert_eq!(header(&headers, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&headers, CACHE_CONTROL.as_str()), "no-cache", "{path}");
        assert!(!body.is_empty(), "{path}");
        assert!(headers.get("set-cookie").is_none(), "{path} sets no cookie");
    }
}

#[tokio::test]
async fn a_browser_holding_the_file_is_answered_not_modified() {
    let s = quiet_server().await;
    for (path, _) in FILES {
        let (_, headers, _) = fetch(&s, path).await;
        let etag = header(&headers, ETAG.as_str()).to_string();
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag}");
        let again = unpooled_client().get(s.url(path)).header(IF_NONE_MATCH, &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(again.headers(), "content-security-policy"), CSP, "{path}");
        let other = unpooled_client().get(s.url(path)).header(IF_NONE_MATCH, "\"stale\"").send().await.unwrap();
        assert_eq!(other.status(), StatusCode::OK, "{path}");
    }
}

/// The start tags of `html` (`<script src=…>`, `<link …>`), lower-cased.
fn start_tags(html: &str) -> Vec<String> {
    html.split('<').skip(1).filter_map(|t| t.split_once('>')).map(|(tag, _)| tag.to_lowercase()).collect()
}

#[tokio::test]
async fn the_page_has_no_inline_script_or_style_and_signs_in_with_a_password_field() {
    let s = quiet_server().await;
    let (_, _, html) = fetch(&s, "/dashboard").await;
    let tags = start_tags(&html);
    let scripts: Vec<_> = tags.iter().filter(|t| t.starts_with("script")).collect();
    assert!(!scripts.is_empty(), "{html}");
    for tag in &scripts {
        assert!(tag.contains(" src=\"dashboard/"), "a script only by src, from the page's own files: <{tag}>");
    }
    // Each script tag closes at once: nothing runs from the page's own text.
    assert_eq!(html.matches("></script>").count(), scripts.len(), "{html}");
    for tag in tags.iter().filter(|t| !t.starts_with('!')) {
        let name = tag.split_whitespace().next().unwrap_or_default();
        assert_ne!(name, "style", "no <style> element");
        assert!(!tag.contains(" style="), "no style attribute: <{tag}>");
        assert!(!tag.split_whitespace().any(|a| a.starts_with("on")), "no event handler attribute: <{tag}>");
        assert!(!tag.contains("javascript:"), "no javascript: URL: <{tag}>");
        assert!(!tag.contains("http://") && !tag.contains("https://") && !tag.contains("//"), "no CDN: <{tag}>");
    }
    let key = tags.iter().find(|t| t.starts_with("input") && t.contains("name=\"api_key\"")).expect("the key field");
    assert!(key.contains("type=\"password\""), "<{key}>");
    let form = tags.iter().find(|t| t.starts_with("form")).expect("the sign-in form");
    assert!(!form.contains("action="), "the form posts nowhere: <{form}>");
}

#[tokio::test]
async fn every_file_the_page_links_is_served() {
    let s = quiet_server().await;
    let (_, _, html) = fetch(&s, "/dashboard").await;
    let linked: Vec<String> = start_tags(&html)
        .iter()
        .flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|a| a.strip_prefix("src=\"").or(a.strip_prefix("href=\"")).map(|v| v.trim_end_matches('"').into()))
        .filter(|v: &String| v.starts_with("dashboard/"))
        .collect();
    assert_eq!(linked.len(), 2, "{linked:?}");
    for file in linked {
        let (status, _, _) = fetch(&s, &format!("/{file}")).await;
        assert_eq!(status, StatusCode::OK, "{file}");
    }
}

#[tokio::test]
async fn the_script_builds_the_page_from_text_and_keeps_the_key_in_the_tab() {
    let s = quiet_server().await;
    let (_, _, js) = fetch(&s, "/dashboard/app.js").await;
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "srcdoc"] {
        assert!(!js.contains(sink), "app.js must not use {sink}: values go in as text");
    }
    for store in ["localStorage", "document.cookie"] {
        assert!(!js.contains(store), "app.js keeps the key in sessionStorage only, not {store}");
    }
    assert!(
        js.contains("sessionStorage") && js.contains("Authorization: `Bearer "),
        "the key travels as a bearer token"
    );
    assert!(!js.contains("http://") && !js.contains("https://"), "app.js calls only its own origin");
}

#[tokio::test]
async fn an_unknown_file_is_a_json_404_and_a_trailing_slash_goes_to_the_page() {
    let s = quiet_server().await;
    let (status, headers, body) = fetch(&s, "/dashboard/secrets.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, "content-type"), "application/json");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = client.get(s.url("/dashboard/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(resp.headers(), LOCATION.as_str()), "../dashboard");
    let (status, _, _) = fetch(&s, "/dashboard/").await;
    assert_eq!(status, StatusCode::OK, "followed, the redirect lands on the page");
}

#[tokio::test]
async fn the_calls_the_page_makes_are_ordinary_authenticated_ones() {
    let s = quiet_server().await;
    let (status, _, body) = fetch(&s, "/v1/account").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the page's files are public, the API is not: {body}");
    let (status, account) = s.get("/v1/account").await;
    assert_eq!((status, &account["tenant_id"]), (StatusCode::OK, &json!("default")), "{account}");
}

/// An API Gateway event for `GET path` with no key.
fn gateway_get(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/fixtures/apigw_v2_get_broadcast.json", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("{{API_KEY}}", "none")
        .replace("{{REQUEST_ID}}", "x");
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!("");
    event.as_object_mut().unwrap().remove("queryStringParameters");
    event["requestContext"]["http"]["path"] = json!(path);
    if let Some(headers) = event["headers"].as_object_mut() {
        headers.retain(|k, _| !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("x-api-key"));
    }
    event
}

#[tokio::test]
async fn behind_api_gateway_the_files_come_back_as_text_with_their_headers() {
    let s = quiet_server().await;
    let ingest = Ingest::new(s.herald(), None);
    for (path, content_type) in FILES {
        let (_, _, direct) = fetch(&s, path).await;
        let answer = ingest.handle(gateway_get(path)).await.unwrap();
        assert_eq!(answer["statusCode"], 200, "{path}: {answer}");
        assert_eq!(answer["isBase64Encoded"], false, "{path} is text, not base64");
        assert_eq!(answer["body"], direct, "{path}: the same bytes as herald serve");
        let headers = &answer["headers"];
        assert_eq!(headers[CONTENT_TYPE.as_str()], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
}
