//! `/v1/segments` through the front door: segments, their members, and every refusal's shape.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use herald_tests::{error_fields, TestServer};

async fn members(s: &TestServer, key: &str, seg: &str, body: Value) -> (StatusCode, Value) {
    s.call_as(key, Method::POST, &format!("/v1/segments/{seg}/members"), Some(body)).await
}

/// Every member listed through `GET …/members`, `limit` at a time.
async fn listed(s: &TestServer, seg: &str, limit: u32) -> Vec<String> {
    let (mut all, mut cursor) = (Vec::new(), String::new());
    for _ in 0..100 {
        let (status, page) = s.get(&format!("/v1/segments/{seg}/members?limit={limit}&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        all.extend(page["contact_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return all,
        }
    }
    panic!("too many pages");
}

#[tokio::test]
async fn a_segment_is_created_renamed_read_listed_and_deleted() {
    let s = TestServer::start().await;
    let (status, body) = s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["id"].clone(), body["name"].clone()), (json!("vip"), json!("VIP")));
    let (status, renamed) = s.put("/v1/segments/vip", json!({"name": "Very important"})).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["created_at"], body["created_at"]);
    let (status, got) = s.get("/v1/segments/vip").await;
    assert_eq!((status, got["name"].clone()), (StatusCode::OK, json!("Very important")));
    assert_eq!(got["member_count"], json!(0));
    s.put("/v1/segments/beta", json!({"name": "Beta"})).await;
    let (_, list) = s.get("/v1/segments").await;
    let ids: Vec<&str> = list["segments"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["beta", "vip"]);
    assert_eq!(list["segments"][1]["member_count"], json!(0));

    assert_eq!(s.call(Method::DELETE, "/v1/segments/vip", None).await.0, StatusCode::NO_CONTENT);
    let (status, body) = s.call(Method::DELETE, "/v1/segments/vip", None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("not_found")));
    assert_eq!(s.get("/v1/segments/vip").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_segment_body_names_its_bad_fields() {
    let s = TestServer::start().await;
    let (status, body) = s.put("/v1/segments/has%20space", json!({"name": ""})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), ["id", "name"]);
    let (status, body) = s.put("/v1/segments/vip", json!({"name": "VIP", "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_fields(&body), ["colour"]);
}

#[tokio::test]
async fn members_are_added_by_id_or_found_or_created_and_added_once() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/ada", json!({"phone": "+14155550100"})).await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    let body = json!({
        "contact_ids": ["ada", "ada"],
        "contacts": [{"phone": "+14155550100"}, {"phone": "+14155550101", "name": "Bo"}, {"email": "cy@example.com"}],
    });
    let (status, added) = members(&s, &s.key, "vip", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added, json!({"added": 3, "already_members": 0, "created_contacts": 2, "member_count": 3}));
    let (_, again) = members(&s, &s.key, "vip", body).await;
    assert_eq!(again, json!({"added": 0, "already_members": 3, "created_contacts": 0, "member_count": 3}));
    let listed = listed(&s, "vip", 100).await;
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&"ada".to_string()));
    let (status, got) = s.get("/v1/segments/vip").await;
    assert_eq!((status, got["member_count"].clone()), (StatusCode::OK, json!(3)));

    let remove =
        json!({"contact_ids": ["ada", "nobody"], "contacts": [{"email": "cy@example.com"}, {"phone": "+14155550199"}]});
    let (status, removed) = s.call(Method::DELETE, "/v1/segments/vip/members", Some(remove.clone())).await;
    assert_eq!((status, removed), (StatusCode::OK, json!({"removed": 2})));
    let (_, removed) = s.call(Method::DELETE, "/v1/segments/vip/members", Some(remove)).await;
    assert_eq!(removed, json!({"removed": 0}), "removing again removes nothing");
    assert_eq!(listed_count(&s, "vip").await, 1);
}

async fn listed_count(s: &TestServer, seg: &str) -> u64 {
    s.get(&format!("/v1/segments/{seg}")).await.1["member_count"].as_u64().unwrap()
}

#[tokio::test]
async fn an_unknown_contact_id_is_named_by_its_path_and_nothing_is_written() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/ada", json!({"phone": "+14155550100"})).await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    let before = s.stored().await;
    let body = json!({"contact_ids": ["ada", "ghost", "ada", "ghost2"], "contacts": [{"phone": "+14155550123"}]});
    let (status, err) = members(&s, &s.key, "vip", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a well-formed body that breaks a rule: {err}");
    assert_eq!(err["error"]["code"], json!("validation_failed"));
    assert_eq!(error_fields(&err), ["contact_ids[1]", "contact_ids[3]"]);
    assert!(err["error"]["fields"][0]["message"].as_str().unwrap().contains("ghost"));
    assert_eq!(s.stored().await.changes_since(&before), Vec::<String>::new(), "no contact was created");
    assert_eq!(listed_count(&s, "vip").await, 0, "no member was added");
}

#[tokio::test]
async fn bad_entries_are_named_by_their_paths() {
    let s = TestServer::start().await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    let body = json!({
        "contact_ids": ["ok", "has space"],
        "contacts": [{"phone": "+14155550100"}, {"name": "no key"}, {"email": "x@example.com"}, {"phone": "555"}],
    });
    let (status, err) = members(&s, &s.key, "vip", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(error_fields(&err), ["contact_ids[1]", "contacts[1]", "contacts[3].phone"]);
    let (status, err) = members(&s, &s.key, "vip", json!({"contacts": [{"phone": 5}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(error_fields(&err), ["contacts[0].phone"]);
    let (status, err) = members(&s, &s.key, "vip", json!({})).await;
    assert_eq!((status, error_fields(&err)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["contact_ids".to_string()]));
}

#[tokio::test]
async fn more_than_ten_thousand_entries_are_refused_naming_the_limit() {
    let s = TestServer::start().await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    let ids: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let body = json!({"contact_ids": ids, "contacts": [{"phone": "+14155550100"}]});
    let before = s.stored().await;
    let (status, err) = members(&s, &s.key, "vip", body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a well-formed body that breaks a rule: {err}");
    assert_eq!(
        (err["error"]["code"].clone(), error_fields(&err)),
        (json!("validation_failed"), vec!["contact_ids".into()])
    );
    assert!(err["error"]["message"].as_str().unwrap().contains("10000"), "{err}");
    assert_eq!(s.stored().await.changes_since(&before), Vec::<String>::new());
    let contacts: Vec<Value> = (0..10_001).map(|i| json!({"phone": format!("+1415{i:07}")})).collect();
    let (status, err) = s.call(Method::DELETE, "/v1/segments/vip/members", Some(json!({"contacts": contacts}))).await;
    assert_eq!((status, error_fields(&err)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["contacts".into()]), "{err}");
    let (status, err) = s.call(Method::DELETE, "/v1/segments/vip/members", Some(json!({"contact_ids": ids}))).await;
    assert_eq!((status, err["error"]["code"].clone()), (StatusCode::OK, Value::Null), "10,000 is allowed: {err}");
}

#[tokio::test]
async fn members_page_by_cursor_exactly_once() {
    let s = TestServer::start().await;
    s.put("/v1/segments/big", json!({"name": "Big"})).await;
    let contacts: Vec<Value> = (0..2_500).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let (status, added) = members(&s, &s.key, "big", json!({"contacts": contacts})).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["added"], json!(2_500));
    let mut all = listed(&s, "big", 1_000).await;
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2_500);
    let (status, page) = s.get("/v1/segments/big/members").await;
    assert_eq!((status, page["contact_ids"].as_array().unwrap().len()), (StatusCode::OK, 100), "100 by default");
}

#[tokio::test]
async fn a_bad_cursor_or_limit_is_a_400() {
    let s = TestServer::start().await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    let (status, err) = s.get("/v1/segments/vip/members?cursor=forged").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(
        (err["error"]["code"].clone(), error_fields(&err)),
        (json!("invalid_query"), vec!["cursor".to_string()]),
        "a query Herald cannot read is a 400, as GET /v1/broadcasts/{{id}}?cursor= and ?limit= are"
    );
    for limit in ["0", "1001", "x"] {
        let (status, err) = s.get(&format!("/v1/segments/vip/members?limit={limit}")).await;
        assert_eq!((status, error_fields(&err)), (StatusCode::BAD_REQUEST, vec!["limit".to_string()]), "limit={limit}");
    }
}

#[tokio::test]
async fn another_tenants_segment_is_not_found_everywhere() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/ada", json!({"phone": "+14155550100"})).await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    members(&s, &s.key, "vip", json!({"contact_ids": ["ada"]})).await;
    let other = s.key_for("other").await;
    for (method, path, body) in [
        (Method::GET, "/v1/segments/vip", None),
        (Method::DELETE, "/v1/segments/vip", None),
        (Method::GET, "/v1/segments/vip/members", None),
        (Method::POST, "/v1/segments/vip/members", Some(json!({"contacts": [{"phone": "+14155550100"}]}))),
        (Method::DELETE, "/v1/segments/vip/members", Some(json!({"contact_ids": ["ada"]}))),
        (Method::GET, "/v1/segments/nope", None),
        (Method::POST, "/v1/segments/nope/members", Some(json!({"contact_ids": ["ada"]}))),
    ] {
        let (status, err) = s.call_as(&other, method.clone(), path, body).await;
        assert_eq!(
            (status, err["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found")),
            "{method} {path}"
        );
    }
    assert_eq!(s.call_as(&other, Method::GET, "/v1/segments", None).await.1, json!({"segments": []}));
    let (status, _) = s.call_as(&other, Method::PUT, "/v1/segments/vip", Some(json!({"name": "Theirs"}))).await;
    assert_eq!(status, StatusCode::CREATED, "their own vip is new");
    let (_, own) = s.call_as(&other, Method::GET, "/v1/segments/vip", None).await;
    assert_eq!((own["name"].clone(), own["member_count"].clone()), (json!("Theirs"), json!(0)));
    assert_eq!(listed_count(&s, "vip").await, 1, "the first tenant's segment is untouched");
    let (status, err) = members(&s, &other, "vip", json!({"contact_ids": ["ada"]})).await;
    let expected = (StatusCode::UNPROCESSABLE_ENTITY, vec!["contact_ids[0]".to_string()]);
    assert_eq!((status, error_fields(&err)), expected, "{err}");
}

#[tokio::test]
async fn a_deleted_segment_created_again_is_empty() {
    let s = TestServer::start().await;
    s.put("/v1/segments/vip", json!({"name": "VIP"})).await;
    members(&s, &s.key, "vip", json!({"contacts": [{"phone": "+14155550100"}]})).await;
    s.call(Method::DELETE, "/v1/segments/vip", None).await;
    assert_eq!(s.put("/v1/segments/vip", json!({"name": "VIP"})).await.0, StatusCode::CREATED);
    assert_eq!(listed_count(&s, "vip").await, 0);
    assert!(listed(&s, "vip", 10).await.is_empty());
}

#[tokio::test]
async fn the_api_on_the_embedded_store() {
    let s = TestServer::start().await;
    let other = s.key_for("other").await;
    herald_tests::segments_over_http(&s.url(""), &s.key, &other).await;
}

/// README.md's segments example, run as written against this server.
#[tokio::test]
async fn the_readme_segments_example_works_as_written() {
    let s = TestServer::start().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- segments-example:start -->").expect("segments example start marker");
    let end = readme.find("<!-- segments-example:end -->").expect("segments example end marker");
    let script: String = readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("http://127.0.0.1:8080", &s.url(""));
    let key = s.key.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash").args(["-euo", "pipefail", "-c", &script]).env("HERALD_API_KEY", key).output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in
        [r#""name":"VIP""#, r#""added":2"#, r#""created_contacts":2"#, r#""member_count":2"#, r#""next_cursor":null"#]
    {
        assert!(stdout.contains(expected), "missing {expected} in:\n{stdout}");
    }
}
