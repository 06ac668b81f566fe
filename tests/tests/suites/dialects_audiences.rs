//! Pabbly's and SMAX's broadcasts to Herald segments, through the front door: every member of
//! the named segments gets exactly one sandbox record (excluded members none), the answer keeps
//! the vendor's shape, and an unknown segment is refused in the vendor's error shape.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

use herald_tests::{error_fields, TestServer};

const WAIT: Duration = Duration::from_secs(20);
const PABBLY_BROADCASTS: &str = "/compat/pabbly/api/v1/broadcasts";
const SMAX_V2: &str = "/compat/smax/public/bots/default/send";

/// Creates segment `id` holding the contacts with these phones (found or created).
async fn segment(s: &TestServer, id: &str, phones: &[&str]) {
    let (status, body) = s.put(&format!("/v1/segments/{id}"), json!({"name": id})).await;
    assert!(status.is_success(), "{status} {body}");
    let contacts: Vec<Value> = phones.iter().map(|p| json!({"phone": p})).collect();
    let (status, body) = s.post(&format!("/v1/segments/{id}/members"), json!({"contacts": contacts})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Two overlapping segments and one to exclude: `+14155550101` is in both `vip` and `beta`,
/// `+14155550103` is excluded, so three numbers are addressed, each once.
async fn audiences(s: &TestServer) -> Vec<String> {
    segment(s, "vip", &["+14155550101", "+14155550102", "+14155550103"]).await;
    segment(s, "beta", &["+14155550101", "+14155550104"]).await;
    segment(s, "optout", &["+14155550103"]).await;
    vec!["+14155550101".into(), "+14155550102".into(), "+14155550104".into()]
}

/// The numbers the sandbox recorded a message to for the request, sorted, repeats kept.
async fn recorded(s: &TestServer, request_id: &str) -> Vec<String> {
    let done = s.wait_terminal(request_id, WAIT).await;
    assert_eq!(done["state"], "completed", "{done}");
    let mut to: Vec<String> =
        s.outbox(request_id).await.iter().map(|m| m["to"].as_str().unwrap().to_string()).collect();
    to.sort();
    to
}

async fn bearer(s: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    s.post(path, body).await
}

#[tokio::test]
async fn pabbly_a_broadcast_to_segments_reaches_each_member_once() {
    let s = TestServer::start().await;
    let expected = audiences(&s).await;
    let template =
        json!({"channel": "whatsapp", "body": "Happy {{1}}!", "whatsapp": {"name": "festival", "language": "en"}});
    assert!(s.put("/v1/templates/festival", template).await.0.is_success());

    let body = json!({"broadcastName": "Diwali", "templateName": "festival", "bodyParams": ["Diwali"],
                      "segments": ["vip", "beta"], "excludeSegments": ["optout"]});
    let (status, a) = bearer(&s, PABBLY_BROADCASTS, body).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["success"], "true", "{a}");
    let data = &a["data"];
    assert_eq!((data["messaging_product"].clone(), data["code"].clone()), (json!("whatsapp"), json!(200)));
    assert_eq!((data["contacts"].clone(), data["messages"].clone()), (json!([]), json!([])), "made by fan-out");
    assert_eq!(
        (data["segments"].clone(), data["excludeSegments"].clone()),
        (json!(["vip", "beta"]), json!(["optout"]))
    );
    let id = data["broadcastId"].as_str().unwrap();
    assert_eq!(recorded(&s, id).await, expected);
    let sent = s.outbox(id).await;
    assert!(sent.iter().all(|m| m["channel"] == "whatsapp"), "{sent:?}");
    let (_, native) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(
        (native["source"].clone(), native["metadata"]["broadcastName"].clone()),
        (json!("pabbly"), json!("Diwali"))
    );
}

#[tokio::test]
async fn pabbly_an_unknown_segment_is_a_404_and_bad_audiences_are_named() {
    let s = TestServer::start().await;
    segment(&s, "vip", &["+14155550101"]).await;
    let other = s.key_for("other").await;
    let body = json!({"broadcastName": "x", "message": "m", "segments": ["vip", "nope"]});
    let (status, err) = bearer(&s, PABBLY_BROADCASTS, body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "not_found");
    assert_eq!(err["error"]["message"], "no segment \"nope\"");
    let body = json!({"broadcastName": "x", "message": "m", "segments": ["vip"]});
    let (status, err) = s.call_as(&other, reqwest::Method::POST, PABBLY_BROADCASTS, Some(body)).await;
    assert_eq!((status, err["error"]["message"].clone()), (StatusCode::NOT_FOUND, json!("no segment \"vip\"")));

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"segments": ["vip"], "destinations": ["14155550123"]}), vec!["segments"]),
        (json!({"segments": []}), vec!["segments"]),
        (json!({"segments": ["has space"]}), vec!["segments[0]"]),
        (json!({"segments": ["vip"], "excludeSegments": ["vip"]}), vec!["excludeSegments[0]"]),
        (json!({"destinations": ["14155550123"], "excludeSegments": ["vip"]}), vec!["excludeSegments"]),
        (json!({}), vec!["destinations"]),
    ];
    for (extra, fields) in cases {
        let mut body = json!({"broadcastName": "x", "message": "m"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, err) = bearer(&s, PABBLY_BROADCASTS, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(error_fields(&err), fields, "{body}: {err}");
    }
}

#[tokio::test]
async fn smax_v2_a_block_to_segments_reaches_each_member_once() {
    let s = TestServer::start().await;
    let expected = audiences(&s).await;
    assert!(s.put("/v1/templates/voucher", json!({"body": "Your voucher is ready"})).await.0.is_success());
    let campaign = json!({"name": "Promo", "template_ids": ["voucher"]});
    assert!(s.put("/v1/campaigns/promo", campaign).await.0.is_success());

    let body = json!({"segments": ["vip", "beta"], "exclude_segments": ["optout"], "block_id": "promo", "priority": ["phone"]});
    let (status, a) = bearer(&s, SMAX_V2, body).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["success"], json!(true), "{a}");
    let result = a["result"].as_str().unwrap();
    assert!(result.starts_with("block \"Promo\" queued for the members of segments vip, beta (request "), "{result}");
    let id = result.rsplit_once("(request ").unwrap().1.trim_end_matches(')');
    assert_eq!(recorded(&s, id).await, expected);
    let (_, native) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(native["source"], "smax_v2");

    // Free text to a segment: the phones have no WhatsApp window open, so it goes by SMS.
    let body = json!({"segments": ["beta"], "messages": [{"text": "Noi dung tin nhan"}], "priority": ["phone"]});
    let (status, a) = bearer(&s, SMAX_V2, body).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let id = a["result"].as_str().unwrap().rsplit_once("(request ").unwrap().1.trim_end_matches(')').to_string();
    assert_eq!(recorded(&s, &id).await, ["+14155550101", "+14155550104"]);
    assert!(s.outbox(&id).await.iter().all(|m| m["message"]["text"] == "Noi dung tin nhan"));
}

#[tokio::test]
async fn smax_v2_an_unknown_segment_and_bad_audiences_answer_in_smax_shape() {
    let s = TestServer::start().await;
    segment(&s, "vip", &["+14155550101"]).await;
    let (status, a) = bearer(&s, SMAX_V2, json!({"segments": ["vip", "nope"], "messages": [{"text": "hi"}]})).await;
    assert_eq!((status, a), (StatusCode::NOT_FOUND, json!({"success": false, "result": "no segment \"nope\""})));

    let cases: Vec<(Value, &str)> = vec![
        (json!({"segments": ["vip"], "customer_id": "cus-1"}), "segments give one customer"),
        (json!({"segments": ["vip"], "one_time_notif_token": "t"}), "one_time_notif_token addresses one customer"),
        (json!({"customer_id": "cus-1", "exclude_segments": ["vip"]}), "exclude_segments is only taken with segments"),
        (json!({"segments": ["has space"]}), "segments[0] "),
        (json!({}), "customer_id give at least one of"),
    ];
    for (extra, start) in cases {
        let mut body = json!({"messages": [{"text": "hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, a) = bearer(&s, SMAX_V2, body.clone()).await;
        assert_eq!((status, a["success"].clone()), (StatusCode::BAD_REQUEST, json!(false)), "{body}: {a}");
        assert!(a["result"].as_str().unwrap().starts_with(start), "{body}: {a}");
        assert_eq!(a.as_object().unwrap().len(), 2, "only success and result: {a}");
    }
}
