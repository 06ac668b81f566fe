//! `GET /v1/broadcasts`: a tenant's send requests newest first, each with its source, state and
//! summary as `GET /v1/broadcasts/{id}` shows them, paged by cursor, refused by field when a
//! query parameter is wrong.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use herald_tests::{error_fields, TestServer};

const WAIT: Duration = Duration::from_secs(20);

async fn send_as(s: &TestServer, key: &str, text: &str) -> String {
    let body = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": text}]});
    let (status, answer) = s.call_as(key, Method::POST, "/v1/broadcasts", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // Requests made in one millisecond list by id: a pause keeps the order the order they were made.
    tokio::time::sleep(Duration::from_millis(3)).await;
    answer["request_id"].as_str().unwrap().to_string()
}

/// Every page of the list, `limit` at a time, following `next_cursor` until it is null.
async fn all_pages(s: &TestServer, key: &str, query: &str) -> Vec<Vec<Value>> {
    let (mut pages, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let after = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, body) = s.call_as(key, Method::GET, &format!("/v1/broadcasts?{query}{after}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages.push(body["data"].as_array().unwrap().clone());
        match &body["next_cursor"] {
            Value::Null => return pages,
            next => cursor = Some(next.as_str().expect("a cursor is a string").to_string()),
        }
        assert!(pages.len() < 50, "the list never ended");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["request_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn the_list_pages_newest_first_with_each_requests_state_and_summary() {
    let s = TestServer::start().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(send_as(&s, &s.key, &format!("hello {i}")).await);
    }
    let mut views = Vec::new();
    for id in &made {
        views.push(s.wait_terminal(id, WAIT).await);
    }
    made.reverse();
    views.reverse();

    let pages = all_pages(&s, &s.key, "limit=2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    let listed: Vec<Value> = pages.concat();
    assert_eq!(ids(&listed), made, "newest first, each once");
    for (item, mut view) in listed.into_iter().zip(views) {
        // The list shows a request as its own page does, less its rows.
        let fields = view.as_object_mut().unwrap();
        fields.remove("recipients");
        fields.remove("next_cursor");
        assert_eq!(item, view);
        assert_eq!((item["source"].as_str(), item["state"].as_str()), (Some("native"), Some("completed")));
        assert_eq!(item["summary"]["by_status"], json!({"sent": 1}));
    }
    let (status, first) = s.get("/v1/broadcasts").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(first["data"].as_array().unwrap()), made, "50 a page unless limit says otherwise");
    assert_eq!(first["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_list_is_the_tenants_own_and_names_each_requests_source() {
    let s = TestServer::start().await;
    let other = s.key_for("list-other").await;
    let mine = send_as(&s, &s.key, "mine").await;
    let theirs = send_as(&s, &other, "theirs").await;
    // A message sent through the Twilio dialect is a request of source `twilio`.
    let account = s.get("/v1/account").await.1["twilio_account_sid"].as_str().unwrap().to_string();
    let twilio = s
        .http
        .post(s.url(&format!("/compat/twilio/2010-04-01/Accounts/{account}/Messages.json")))
        .basic_auth(&account, Some(&s.key))
        .form(&[("To", "+14155550123"), ("From", "+15005550006"), ("Body", "via Twilio")])
        .send()
        .await
        .unwrap();
    assert_eq!(twilio.status(), StatusCode::CREATED);
    let twilio_id = twilio.headers()["herald-request-id"].to_str().unwrap().to_string();

    let listed = all_pages(&s, &s.key, "limit=200").await.concat();
    assert_eq!(ids(&listed), vec![twilio_id.clone(), mine.clone()]);
    assert_eq!(listed[0]["source"], "twilio");
    assert_eq!(listed[1]["source"], "native");
    assert_eq!(ids(&all_pages(&s, &other, "").await.concat()), vec![theirs], "another tenant sees its own only");
    assert_eq!(ids(&all_pages(&s, &s.key, "source=twilio").await.concat()), vec![twilio_id]);
    assert_eq!(ids(&all_pages(&s, &s.key, "source=native&limit=1").await.concat()), vec![mine]);
    assert!(all_pages(&s, &s.key, "source=smax_v1").await.concat().is_empty());
}

#[tokio::test]
async fn a_bad_limit_cursor_or_source_is_refused_by_name() {
    let s = TestServer::start().await;
    send_as(&s, &s.key, "one").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=", "cursor"),
        ("source=Not%20a%20source", "source"),
    ] {
        let (status, body) = s.get(&format!("/v1/broadcasts?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(error_fields(&body), vec![field], "{query}: {body}");
    }
    let (status, body) = s.get("/v1/broadcasts?limit=0&cursor=x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), vec!["limit", "cursor"], "every bad field in one answer");
    let (status, _) = s.get("/v1/broadcasts?limit=200").await;
    assert_eq!(status, StatusCode::OK);
    let unsigned = s.http.get(s.url("/v1/broadcasts")).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
}
