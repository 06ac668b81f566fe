//! `GET /openapi.json`: the OpenAPI description of the whole API, served without a key by the
//! router both shapes share, and kept equal to the committed `docs/openapi.json`.

use reqwest::StatusCode;
use serde_json::Value;

use herald_tests::TestServer;

const REGENERATE: &str = "cargo run -p herald-cli -- openapi > docs/openapi.json";

async fn served(s: &TestServer) -> String {
    let resp = s.http.get(s.url("/openapi.json")).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "served without a key");
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    resp.text().await.expect("body")
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let s = TestServer::start().await;
    let served = served(&s).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        served.trim_end() == committed.trim_end(),
        "docs/openapi.json is not what GET /openapi.json serves: regenerate it with `{REGENERATE}` and commit it"
    );
}

#[tokio::test]
async fn the_document_describes_herald_and_every_api_it_serves() {
    let s = TestServer::start().await;
    let doc: Value = serde_json::from_str(&served(&s).await).expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Herald");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/healthz",
        "/openapi.json",
        "/v1/broadcasts",
        "/v1/broadcasts/{request_id}",
        "/v1/providers/{provider}/events",
        "/compat/csml/v1/api/broadcasts",
        "/compat/smax/bots/{bot_id}/users/{user_id}/send",
        "/compat/smax/public/bots/{bot_id}/send",
        "/compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send",
        "/compat/pabbly/api/v1/broadcasts/send",
        "/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages.json",
        "/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages/{sid}",
        "/compat/twilio/v1/Services/{service_sid}/Notifications",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the document");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for scheme in ["bearer", "api_key", "twilio_basic", "smax_bot_token"] {
        assert!(schemes.contains_key(scheme), "{scheme}");
    }
    let twilio = &paths["/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages.json"]["post"];
    assert!(twilio["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object(), "Twilio takes forms");
    assert_eq!(twilio["security"][0]["twilio_basic"], serde_json::json!([]));
}

/// Every operation the router answers is in the document, and every operation in the document
/// is answered by the router (not the `404` of a path it does not have): a route cannot be
/// added or dropped without the other.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let s = TestServer::start().await;
    let doc: Value = serde_json::from_str(&served(&s).await).expect("JSON");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path.replace('{', "x").replace('}', "");
        for method in item.as_object().expect("path item").keys() {
            let Some(m) = ["get", "put", "post", "delete"].contains(&method.as_str()).then(|| method.to_uppercase())
            else {
                continue;
            };
            let m = m.parse::<reqwest::Method>().expect("method");
            let resp = s.http.request(m, s.url(&concrete)).send().await.expect("request");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            let unrouted = status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such endpoint";
            assert!(!unrouted && status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {status} {body}");
            operations += 1;
        }
    }
    assert!(operations >= 50, "{operations} operations");
}

/// The ingest Lambda serves the same router, so the same document, without a key.
#[tokio::test]
async fn the_lambda_shape_serves_the_same_document() {
    let s = TestServer::start_with(herald_tests::fast_settings(), Default::default(), 0).await;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/apigw_v2_get_broadcast.json"))
        .expect("fixture");
    let mut event: Value =
        serde_json::from_str(&text.replace("{{API_KEY}}", "").replace("{{REQUEST_ID}}", "x")).expect("fixture JSON");
    event["rawPath"] = "/openapi.json".into();
    event["requestContext"]["http"]["path"] = "/openapi.json".into();
    let answer = herald_ingest::Ingest::new(s.herald(), None).handle(event).await.expect("handled");
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["body"].as_str().unwrap_or_default(), served(&s).await);
}
