//! Tenant isolation: tenant B sees `404` for every id of tenant A, and nothing of A's leaks.

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

use herald_tests::TestServer;

#[tokio::test]
async fn tenant_b_cannot_see_or_use_tenant_a_ids() {
    let s = TestServer::start().await;
    let b = s.key_for("tenant-b").await;
    s.put("/v1/templates/a-tpl", json!({"body": "A only"})).await;
    s.put("/v1/campaigns/a-camp", json!({"name": "A", "template_ids": ["a-tpl"]})).await;
    s.put("/v1/contacts/a-contact", json!({"phone": "+14155550140"})).await;
    let (_, answer) =
        s.post("/v1/broadcasts", json!({"recipients": [{"contact_id": "a-contact"}], "campaign_id": "a-camp"})).await;
    let req = answer["request_id"].as_str().unwrap().to_string();
    s.wait_terminal(&req, Duration::from_secs(10)).await;

    for path in [
        format!("/v1/broadcasts/{req}"),
        "/v1/templates/a-tpl".into(),
        "/v1/campaigns/a-camp".into(),
        "/v1/contacts/a-contact".into(),
    ] {
        let (status, body) = s.call_as(&b, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path} as tenant B: {body}");
    }
    for path in ["/v1/templates/a-tpl", "/v1/campaigns/a-camp"] {
        assert_eq!(s.call_as(&b, Method::DELETE, path, None).await.0, StatusCode::NOT_FOUND, "DELETE {path}");
    }
    let (_, list) = s.call_as(&b, Method::GET, "/v1/templates", None).await;
    assert_eq!(list["templates"], json!([]));
    let (_, outbox) = s.call_as(&b, Method::GET, "/v1/outbox", None).await;
    assert_eq!(outbox["messages"], json!([]));

    // B naming A's campaign or template gets the same answer as for an id that does not exist.
    let (status, body) = s
        .call_as(
            &b,
            Method::POST,
            "/v1/broadcasts",
            Some(json!({"recipients": [{"phone": "+14155550141"}], "campaign_id": "a-camp"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // B naming A's contact id finds no such contact in B.
    let (_, answer) = s
        .call_as(
            &b,
            Method::POST,
            "/v1/broadcasts",
            Some(json!({"recipients": [{"contact_id": "a-contact"}], "messages": [{"text": "x"}]})),
        )
        .await;
    let b_req = answer["request_id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, got) = s.call_as(&b, Method::GET, &format!("/v1/broadcasts/{b_req}"), None).await;
        if got["summary"]["pending"] == json!(0) {
            assert_eq!(got["recipients"][0]["status"], "failed");
            assert_eq!(got["recipients"][0]["error_message"], "contact a-contact not found");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A's request is not visible to B, and B's not to A.
    assert_eq!(s.get(&format!("/v1/broadcasts/{b_req}")).await.0, StatusCode::NOT_FOUND);

    // The same contact id may exist independently in both tenants.
    let (st, _) = s.call_as(&b, Method::PUT, "/v1/contacts/a-contact", Some(json!({"email": "b@example.com"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(s.get("/v1/contacts/a-contact").await.1["phone"], "+14155550140");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let s = TestServer::start().await;
    for key in ["", "hk_0000000000000000000000000000000000000000000000000", "not-a-key"] {
        let resp = s.http.get(s.url("/v1/templates")).header("x-api-key", key).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "key {key:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
    let resp = s.http.get(s.url("/v1/templates")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s.http.get(s.url("/v1/templates")).header("x-api-key", &s.key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "x-api-key works as well as Bearer");
}
