//! The native API end to end: HTTP requests in; rows, outbox records and error bodies out.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use herald::providers::sandbox::{FailKind, SandboxBehaviour};
use herald_tests::{error_fields, fast_settings, tenant, TestServer};

const WAIT: Duration = Duration::from_secs(20);

async fn send(s: &TestServer, body: Value) -> (String, Value) {
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["request_id"].as_str().unwrap().to_string();
    (id.clone(), s.wait_terminal(&id, WAIT).await)
}

fn rows_of(done: &Value) -> Vec<Value> {
    done["recipients"].as_array().cloned().unwrap()
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let s = TestServer::start().await;
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn a_text_message_reaches_the_sandbox_and_its_row_says_sent() {
    let s = TestServer::start().await;
    let (id, done) = send(
        &s,
        json!({"recipients": [{"phone": "+1 415 555 0123", "name": "Ada Lovelace"}], "messages": [{"text": "Hi {{first_name}}!"}], "metadata": {"order": 42}}),
    )
    .await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["metadata"], json!({"order": 42}));
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "sent");
    assert_eq!(
        (row["is_sent"].clone(), row["is_queued"].clone(), row["is_failed"].clone()),
        (json!(true), json!(true), json!(false))
    );
    assert!(row["is_sent_at"].is_string());
    assert_eq!(row["phone"], "+14155550123");
    assert_eq!(
        row["channel"], "sms",
        "WhatsApp takes free-form text only inside its window: SMS is the first usable channel"
    );
    let outbox = s.outbox(&id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0]["id"], row["external_message_id"]);
    assert_eq!(outbox[0]["message"]["text"], "Hi Ada!");
    assert_eq!(outbox[0]["to"], "+14155550123");

    // The recipient was found-or-created as a contact.
    let (status, contact) = s.get(&format!("/v1/contacts/{}", row["contact_id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(contact["phone"], "+14155550123");
    assert_eq!(contact["name"], "Ada Lovelace");
    assert_eq!(contact["channels"].as_array().unwrap().len(), 2);

    // A second send to the same phone reuses the contact.
    let (_, again) =
        send(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "again"}]})).await;
    assert_eq!(rows_of(&again)[0]["contact_id"], row["contact_id"]);
}

async fn seed_campaign(s: &TestServer) {
    let (st, _) = s.put("/v1/templates/greet", json!({"body": "Hello {{name}} from {{city}}", "channel": "sms"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .put(
            "/v1/templates/offer",
            json!({"body": "{{1}} off until {{2}}, {{name}}", "header": {"type": "image"}, "channel": "whatsapp",
                   "whatsapp": {"name": "festival_offer", "language": "en_US"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, camp) = s
        .put("/v1/campaigns/launch", json!({"name": "Launch", "template_ids": ["greet", "offer"], "defaults": {"city": "Paris", "name": "friend"}}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{camp}");
}

#[tokio::test]
async fn a_campaign_fires_each_template_with_variables_over_fields_over_defaults() {
    let s = TestServer::start().await;
    seed_campaign(&s).await;
    let (st, _) =
        s.put("/v1/contacts/c-1", json!({"name": "Grace", "phone": "+14155550101", "fields": {"city": "Lyon"}})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (id, done) = send(
        &s,
        json!({
            "campaign_id": "launch",
            "recipients": [
                {"contact_id": "c-1"},
                {"phone": "+14155550102", "variables": {"city": "Rome"}},
                {"phone": "+14155550103"}
            ],
            "body_params": ["20%", "Friday"],
            "media": {"link": "https://example.com/offer.png"}
        }),
    )
    .await;
    assert_eq!(done["row_count"], 6);
    assert_eq!(done["campaign_name"], "Launch");
    let rows = rows_of(&done);
    assert!(rows.iter().all(|r| r["status"] == "sent"), "{rows:?}");
    assert!(rows.iter().all(|r| r["broadcast_id"] == "launch"));
    let texts: Vec<(String, String)> = s
        .outbox(&id)
        .await
        .iter()
        .map(|e| (e["message"]["to"].as_str().unwrap().to_string(), e["message"]["text"].as_str().unwrap().to_string()))
        .collect();
    for expected in [
        ("+14155550101", "Hello Grace from Lyon"),
        ("+14155550102", "Hello friend from Rome"),
        ("+14155550103", "Hello friend from Paris"),
        ("+14155550101", "20% off until Friday, Grace"),
    ] {
        assert!(texts.iter().any(|(to, t)| to == expected.0 && t == expected.1), "missing {expected:?} in {texts:?}");
    }
    let offer = s
        .outbox(&id)
        .await
        .into_iter()
        .find(|e| e["message"]["whatsapp_template"]["name"] == "festival_offer")
        .unwrap();
    assert_eq!(offer["channel"], "whatsapp");
    assert_eq!(offer["message"]["header"], json!({"type": "image", "link": "https://example.com/offer.png"}));
    assert_eq!(offer["message"]["body_params"], json!(["20%", "Friday"]));

    // A subset of the campaign's templates.
    let (_, subset) =
        send(&s, json!({"campaign_id": "launch", "template_ids": ["greet"], "recipients": [{"contact_id": "c-1"}]}))
            .await;
    assert_eq!(subset["row_count"], 1);
    assert_eq!(rows_of(&subset)[0]["template_id"], "greet");
    assert_eq!(rows_of(&subset)[0]["channel"], "sms", "the template's channel");
}

#[tokio::test]
async fn background_false_delivers_inline_and_answers_the_outcome() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    let (status, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [{"email": "ada@example.com"}], "messages": [{"text": "now"}], "background": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let row = &answer["recipients"][0];
    assert_eq!(row["status"], "sent");
    assert_eq!(row["channel"], "email");
    assert!(row["external_message_id"].as_str().unwrap().starts_with("sbx_"));
    assert_eq!(answer["state"], "completed");
}

#[tokio::test]
async fn an_idempotency_key_sends_once_and_refuses_another_body() {
    let s = TestServer::start().await;
    let body = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "once"}]});
    let post = |b: Value| {
        s.http.post(s.url("/v1/broadcasts")).bearer_auth(&s.key).header("Idempotency-Key", "order-7").json(&b).send()
    };
    let first = post(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    // Same body, keys in another order: the first answer again.
    let again = post(json!({"messages": [{"text": "once"}], "recipients": [{"phone": "+14155550123"}]})).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["request_id"], first["request_id"]);
    let other =
        post(json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "twice"}]})).await.unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(other.json::<Value>().await.unwrap()["error"]["code"], "idempotency_key_reused");
    s.wait_terminal(first["request_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1);
    assert_eq!(s.local.store.counts().await.unwrap().outbox, 1);
}

#[tokio::test]
async fn a_thousand_recipients_reach_terminal_rows_and_page_by_cursor() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 32).await;
    let recipients: Vec<Value> = (0..1000).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let (id, done) = send(&s, json!({"recipients": recipients, "messages": [{"text": "hello {{phone}}"}]})).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 1000}));
    assert_eq!(done["recipients"].as_array().unwrap().len(), 1000);
    let (_, page) = s.get(&format!("/v1/broadcasts/{id}?limit=300")).await;
    assert_eq!(page["recipients"].as_array().unwrap().len(), 300);
    let mut seen = 300;
    let mut cursor = page["next_cursor"].as_u64();
    while let Some(c) = cursor {
        let (_, p) = s.get(&format!("/v1/broadcasts/{id}?limit=300&cursor={c}")).await;
        seen += p["recipients"].as_array().unwrap().len();
        cursor = p["next_cursor"].as_u64();
    }
    assert_eq!(seen, 1000);
    let outbox = s.outbox(&id).await;
    let mut row_ids: Vec<&str> = outbox.iter().map(|e| e["row_id"].as_str().unwrap()).collect();
    row_ids.sort();
    row_ids.dedup();
    assert_eq!(row_ids.len(), 1000, "one provider call per row");
}

#[tokio::test]
async fn suppression_and_channel_choice() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/blocked", json!({"phone": "+14155550111", "blocked": true})).await;
    s.put("/v1/contacts/gone", json!({"email": "gone@example.com", "unsubscribed": true})).await;
    s.put(
        "/v1/contacts/multi",
        json!({"phone": "+14155550112", "email": "multi@example.com", "telegram_chat_id": "9001"}),
    )
    .await;
    s.put("/v1/contacts/mail-only", json!({"email": "only@example.com"})).await;
    let (_, done) = send(
        &s,
        json!({"recipients": [
            {"contact_id": "blocked"}, {"contact_id": "gone"},
            {"contact_channel_id": "multi~telegram"}, {"contact_id": "mail-only"}, {"contact_id": "nobody"}
        ], "messages": [{"text": "hi"}], "priority": ["sms", "email"]}),
    )
    .await;
    let rows = rows_of(&done);
    let by = |i: usize| {
        (rows[i]["status"].as_str().unwrap().to_string(), rows[i]["error_message"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(by(0), ("skipped".into(), "contact is blocked".into()));
    assert_eq!(by(1), ("skipped".into(), "contact has unsubscribed".into()));
    assert_eq!(by(2).0, "sent");
    assert_eq!(rows[2]["channel"], "telegram", "contact_channel_id fixes the channel");
    assert_eq!(rows[3]["channel"], "email", "priority picks the first channel the contact has");
    assert_eq!(by(4), ("failed".into(), "contact nobody not found".into()));

    let (_, none) =
        send(&s, json!({"recipients": [{"contact_id": "mail-only"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!(rows_of(&none)[0]["status"], "skipped");
    assert_eq!(rows_of(&none)[0]["error_message"], "contact has no sms address");
}

#[tokio::test]
async fn a_row_records_how_far_its_attempt_got() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/bob", json!({"phone": "+14155550114", "name": "Bob Jones", "blocked": true})).await;
    let (_, done) = send(&s, json!({"recipients": [{"phone": "+14155550114"}], "messages": [{"text": "hi"}]})).await;
    let row = &rows_of(&done)[0];
    assert_eq!(
        (&row["status"], &row["contact_id"], &row["name"]),
        (&json!("skipped"), &json!("bob"), &json!("Bob Jones"))
    );
    assert_eq!((&row["channel"], &row["provider"]), (&Value::Null, &Value::Null), "stopped before a channel: {row}");

    let template = json!({"body": "See you in {{city}}"});
    let (_, done) = send(
        &s,
        json!({"recipients": [{"phone": "+14155550115", "name": "Ada"}], "template": template, "channel": "sms"}),
    )
    .await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "failed");
    assert!(row["contact_id"].is_string(), "the contact found or created: {row}");
    assert_eq!((&row["name"], &row["channel"]), (&json!("Ada"), &json!("sms")));
    assert_eq!(row["provider"], Value::Null, "stopped before a provider: {row}");

    let (_, done) =
        send(&s, json!({"recipients": [{"phone": "+14155550115"}], "messages": [{"text": "hi"}], "channel": "sms"}))
            .await;
    let row = &rows_of(&done)[0];
    assert_eq!((&row["status"], &row["channel"], &row["provider"]), (&json!("sent"), &json!("sms"), &json!("sandbox")));
    assert_eq!(row["phone"], "+14155550115");
}

#[tokio::test]
async fn a_missing_placeholder_fails_the_row_with_a_reason() {
    let s = TestServer::start().await;
    let (_, done) =
        send(&s, json!({"recipients": [{"phone": "+14155550123"}], "template": {"body": "See you in {{city}}"}})).await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "failed");
    assert!(row["error_message"].as_str().unwrap().contains("{{city}}"), "{row}");
    assert_eq!(s.local.store.counts().await.unwrap().outbox, 0, "nothing reached the provider");
}

#[tokio::test]
async fn reasons_and_errors_are_plain_sentences_without_rust_debug_text() {
    let s = TestServer::start().await;
    let (st, _) = s.put("/v1/templates/inv_sms", json!({"body": "Hi", "channel": "sms"})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, done) = send(
        &s,
        json!({"recipients": [{"phone": "+14155550123", "email": "a@example.com"}], "template": "inv_sms", "channel": "email"}),
    )
    .await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["error_message"], "template \"inv_sms\" is for sms, but the send asked for email", "{row}");
    let (_, body) = s.get("/v1/broadcasts/req_nope").await;
    assert_eq!(body["error"]["message"], "no send request \"req_nope\"");
}

#[tokio::test]
async fn transient_failures_are_retried_then_failed_after_the_last_attempt() {
    let behaviour = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Transient, ..Default::default() };
    let s = TestServer::start_with(fast_settings(), behaviour, 4).await;
    let (_, done) = send(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]})).await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "failed");
    assert_eq!(row["attempts"], 5);
    assert!(row["error_message"].as_str().unwrap().starts_with("gave up after 5 attempts"), "{row}");
}

#[tokio::test]
async fn a_row_retries_through_an_outage_and_is_sent_once() {
    let behaviour = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Transient, ..Default::default() };
    let s = TestServer::start_with(fast_settings(), behaviour, 4).await;
    let (_, answer) =
        s.post("/v1/broadcasts", json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]})).await;
    let id = answer["request_id"].as_str().unwrap();
    // Wait until the row shows it is retrying, then end the outage.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, b) = s.get(&format!("/v1/broadcasts/{id}")).await;
        let row = &b["recipients"][0];
        if row["status"] == "retrying" {
            assert!(row["next_attempt_at"].is_string());
            assert!(row["error_message"].as_str().unwrap().contains("sandbox_unavailable"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.local.sandbox.set_behaviour(SandboxBehaviour::default());
    let done = s.wait_terminal(id, WAIT).await;
    assert_eq!(rows_of(&done)[0]["status"], "sent");
    assert_eq!(rows_of(&done)[0]["error_message"], Value::Null);
    assert_eq!(s.outbox(id).await.len(), 1);
}

#[tokio::test]
async fn a_permanent_failure_keeps_the_providers_reason() {
    let behaviour = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Permanent, ..Default::default() };
    let s = TestServer::start_with(fast_settings(), behaviour, 4).await;
    let (_, done) = send(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]})).await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "failed");
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["error_message"], "sandbox: [sandbox_rejected] the sandbox was told to fail (permanent)");
}

#[tokio::test]
async fn a_slow_provider_times_out_and_is_retried_without_a_duplicate() {
    let mut settings = fast_settings();
    settings.provider_timeout = Duration::from_millis(100);
    let behaviour = SandboxBehaviour { delay: Duration::from_millis(400), ..Default::default() };
    let s = TestServer::start_with(settings, behaviour, 4).await;
    let (_, answer) =
        s.post("/v1/broadcasts", json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]})).await;
    let id = answer["request_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.local.sandbox.set_behaviour(SandboxBehaviour::default());
    let done = s.wait_terminal(id, WAIT).await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "sent");
    assert!(row["attempts"].as_u64().unwrap() >= 2, "{row}");
    assert_eq!(s.outbox(id).await.len(), 1);
}

#[tokio::test]
async fn a_scheduled_send_waits_for_send_at() {
    let s = TestServer::start().await;
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (_, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "later"}], "send_at": at}),
        )
        .await;
    let id = answer["request_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, early) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(early["state"], "scheduled", "nothing is sent before send_at");
    assert_eq!(early["summary"]["scheduled"], 1, "{early}");
    let done = s.wait_terminal(id, WAIT).await;
    let sent_at = chrono::DateTime::parse_from_rfc3339(done["recipients"][0]["is_sent_at"].as_str().unwrap()).unwrap();
    assert!(sent_at >= chrono::DateTime::parse_from_rfc3339(&at).unwrap());
}

#[tokio::test]
async fn a_pool_with_fewer_workers_than_a_job_has_rows_still_delivers_every_row_once() {
    // A ten-row job takes a slot per row, but never more slots than the pool has.
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 3).await;
    let recipients: Vec<Value> = (0..25).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let (id, done) = send(&s, json!({"recipients": recipients, "messages": [{"text": "hi"}]})).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 25}));
    let outbox = s.outbox(&id).await;
    let mut row_ids: Vec<&str> = outbox.iter().map(|e| e["row_id"].as_str().unwrap()).collect();
    row_ids.sort();
    row_ids.dedup();
    assert_eq!((outbox.len(), row_ids.len()), (25, 25), "one provider call per row");
}

#[tokio::test]
async fn in_the_pool_a_row_that_must_wait_holds_up_none_of_its_job() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 10).await;
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(1000);
    let at = due.to_rfc3339();
    let recipients: Vec<Value> = (0..10).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let (_, answer) =
        s.post("/v1/broadcasts", json!({"recipients": recipients, "messages": [{"text": "hi"}], "send_at": at})).await;
    let id = answer["request_id"].as_str().unwrap();
    // Before the one job of ten comes due, another worker takes one of its rows for a while.
    let h = s.herald();
    let held = h.requests.list_rows(&tenant("default"), id, None, 10).await.unwrap().remove(3);
    let lease = due + chrono::Duration::milliseconds(1500);
    assert!(matches!(
        h.requests.claim_row(&tenant("default"), &held.id, due, lease).await.unwrap(),
        herald::ports::Claim::Claimed(_)
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, b) = s.get(&format!("/v1/broadcasts/{id}")).await;
        if b["summary"]["by_status"]["sent"] == 9 {
            assert!(chrono::Utc::now() < lease, "the nine were sent without waiting for the held row");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", b["summary"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The held row went back alone and is sent once its holder's lease runs out.
    let done = s.wait_terminal(id, WAIT).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 10}));
    assert_eq!(s.outbox(id).await.len(), 10, "no row was sent twice");
}

#[tokio::test]
async fn duplicate_jobs_and_racing_workers_call_the_provider_once() {
    let s = TestServer::start_with(
        fast_settings(),
        SandboxBehaviour { delay: Duration::from_millis(50), ..Default::default() },
        0,
    )
    .await;
    let (_, answer) =
        s.post("/v1/broadcasts", json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]})).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    let h = s.herald();
    let row = h.requests.list_rows(&tenant("default"), &id, None, 1).await.unwrap().remove(0);
    // The same job delivered to eight workers at once, as duplicate SQS deliveries would.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h, row) = (h.clone(), row.clone());
        tasks.push(tokio::spawn(async move {
            herald::service::deliver::deliver(&h.deliver, &row.tenant_id, &row.id).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.outbox(&id).await.len(), 1);
    // And once more after it was sent: nothing to do.
    assert_eq!(
        herald::service::deliver::deliver(&h.deliver, &row.tenant_id, &row.id).await.unwrap(),
        herald::service::deliver::Delivery::Done
    );
    assert_eq!(s.outbox(&id).await.len(), 1);
}

#[tokio::test]
async fn templates_and_campaigns_are_created_read_replaced_listed_and_deleted() {
    let s = TestServer::start().await;
    let (st, t) = s.put("/v1/templates/t1", json!({"body": "v1"})).await;
    assert_eq!((st, t["body"].clone()), (StatusCode::CREATED, json!("v1")));
    let (st, t2) = s.put("/v1/templates/t1", json!({"body": "v2", "channel": "email", "subject": "Hi"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(t2["created_at"], t["created_at"], "replacing keeps created_at");
    assert_eq!(s.get("/v1/templates/t1").await.1["body"], "v2");
    assert_eq!(s.get("/v1/templates").await.1["templates"].as_array().unwrap().len(), 1);
    let (st, c) = s.put("/v1/campaigns/c1", json!({"name": "C", "template_ids": ["t1"]})).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(s.get("/v1/campaigns").await.1["campaigns"][0]["id"], "c1");
    assert_eq!(s.call(Method::DELETE, "/v1/campaigns/c1", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.call(Method::DELETE, "/v1/templates/t1", None).await.0, StatusCode::NO_CONTENT);
    let (st, body) = s.get("/v1/templates/t1").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(s.call(Method::DELETE, "/v1/templates/t1", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn contacts_upsert_by_phone_or_email_and_keep_keys_unique() {
    let s = TestServer::start().await;
    let (st, a) =
        s.post("/v1/contacts", json!({"phone": "+14155550130", "name": "Ann", "fields": {"tier": "gold"}})).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, a2) = s
        .post(
            "/v1/contacts",
            json!({"phone": "+1 (415) 555-0130", "email": "ann@example.com", "fields": {"city": "Oslo"}}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "the same phone updates the same contact");
    assert_eq!(a2["id"], a["id"]);
    assert_eq!(a2["fields"], json!({"tier": "gold", "city": "Oslo"}));
    assert_eq!(a2["name"], "Ann");
    let (st, b) = s.put("/v1/contacts/bob", json!({"email": "ann@example.com"})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&b), vec!["email"]);
    assert!(b["error"]["fields"][0]["message"].as_str().unwrap().contains(a["id"].as_str().unwrap()));
}

#[tokio::test]
async fn a_job_that_arrives_before_send_at_waits_instead_of_sending() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    let at = chrono::Utc::now() + chrono::Duration::hours(2);
    let (_, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "later"}], "send_at": at.to_rfc3339()}),
        )
        .await;
    let id = answer["request_id"].as_str().unwrap();
    assert!(answer["recipients"][0]["next_attempt_at"].is_string(), "the row shows when it will be sent");
    let h = s.herald();
    let row = h.requests.list_rows(&tenant("default"), id, None, 1).await.unwrap().remove(0);
    // A queue that cannot delay that long (SQS: 15 minutes) hands the job over early.
    let delivery = herald::service::deliver::deliver(&h.deliver, &row.tenant_id, &row.id).await.unwrap();
    let herald::service::deliver::Delivery::RetryAfter(wait) = delivery else { panic!("sent early: {delivery:?}") };
    assert!(wait > Duration::from_secs(7100) && wait < Duration::from_secs(7300), "{wait:?}");
    assert_eq!(s.get(&format!("/v1/broadcasts/{id}")).await.1["recipients"][0]["status"], "scheduled");
    assert_eq!(s.local.store.counts().await.unwrap().outbox, 0);
}

#[tokio::test]
async fn messaging_windows_decide_whatsapp_and_messenger_sends() {
    let s = TestServer::start().await;
    s.put("/v1/contacts/wa", json!({"phone": "+14155550150", "messenger_psid": "psid-150"})).await;
    s.put(
        "/v1/templates/wa-offer",
        json!({"body": "Offer {{1}}", "channel": "whatsapp", "whatsapp": {"name": "offer", "language": "en"}}),
    )
    .await;
    let (_, done) = send(
        &s,
        json!({"recipients": [{"contact_id": "wa"}], "messages": [{"text": "free-form"}], "channel": "whatsapp"}),
    )
    .await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "failed", "an explicit WhatsApp free-form send outside the window is refused");
    assert!(row["error_message"].as_str().unwrap().contains("within 24 h"), "{row}");

    let (_, done) =
        send(&s, json!({"recipients": [{"contact_id": "wa"}], "template": "wa-offer", "body_params": ["10%"]})).await;
    assert_eq!(
        (rows_of(&done)[0]["status"].clone(), rows_of(&done)[0]["channel"].clone()),
        (json!("sent"), json!("whatsapp"))
    );

    let (_, done) =
        send(&s, json!({"recipients": [{"contact_id": "wa"}], "messages": [{"text": "hi"}], "channel": "messenger"}))
            .await;
    assert_eq!(rows_of(&done)[0]["status"], "failed");
    assert!(rows_of(&done)[0]["error_message"].as_str().unwrap().contains("messaging_tag"));
    let (id, done) = send(
        &s,
        json!({"recipients": [{"contact_id": "wa"}], "messages": [{"text": "hi"}], "channel": "messenger", "messaging_tag": "ACCOUNT_UPDATE"}),
    )
    .await;
    assert_eq!(rows_of(&done)[0]["status"], "sent", "a tag allows Messenger outside the window");
    assert_eq!(s.outbox(&id).await[0]["message"]["messaging_tag"], "ACCOUNT_UPDATE");

    // With no channel named, channels whose rules refuse the message are passed over.
    let (_, done) = send(&s, json!({"recipients": [{"contact_id": "wa"}], "messages": [{"text": "hi"}], "priority": ["whatsapp", "messenger"]}))
        .await;
    let row = &rows_of(&done)[0];
    assert_eq!(row["status"], "skipped");
    let reason = row["error_message"].as_str().unwrap();
    assert!(reason.contains("WhatsApp") && reason.contains("Messenger"), "{reason}");
}

#[tokio::test]
async fn a_tenant_over_its_sending_rate_gets_429_with_retry_after_and_nothing_is_stored() {
    let mut settings = fast_settings();
    settings.tenant_limits =
        herald::service::admission::Limits { requests_per_second: 0.5, request_burst: 2.0, recipients_per_minute: 5.0 };
    let s = TestServer::start_with(settings, SandboxBehaviour::default(), 0).await;
    let one = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}]});
    assert_eq!(s.post("/v1/broadcasts", one.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(s.post("/v1/broadcasts", one.clone()).await.0, StatusCode::ACCEPTED);
    let resp = s.http.post(s.url("/v1/broadcasts")).bearer_auth(&s.key).json(&one).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 2, "a refused request stores nothing");

    // Another tenant has its own allowance; more recipients than a minute's cap is refused outright.
    let b = s.key_for("tenant-b").await;
    let six: Vec<Value> = (0..6).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let (status, body) = s
        .call_as(
            &b,
            reqwest::Method::POST,
            "/v1/broadcasts",
            Some(json!({"recipients": six, "messages": [{"text": "x"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), vec!["recipients"]);
    let (status, _) = s.call_as(&b, reqwest::Method::POST, "/v1/broadcasts", Some(one)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_send_once() {
    let s = TestServer::start().await;
    let body = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "only once"}]});
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (http, url, key, body) = (s.http.clone(), s.url("/v1/broadcasts"), s.key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let resp =
                http.post(url).bearer_auth(key).header("Idempotency-Key", "race-1").json(&body).send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (status, answer) = t.await.unwrap();
        match status {
            StatusCode::ACCEPTED => ids.push(answer["request_id"].as_str().unwrap().to_string()),
            // The losers of the race are told the first request is still being handled.
            StatusCode::CONFLICT => assert_eq!(answer["error"]["code"], "idempotency_key_in_progress"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every accepted answer names the same request: {ids:?}");
    s.wait_terminal(&ids[0], WAIT).await;
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1);
    assert_eq!(s.outbox(&ids[0]).await.len(), 1, "one message sent");
}

#[tokio::test]
async fn outside_the_local_shape_media_links_must_be_https_and_public() {
    use herald::app::{Herald, Stores};
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = herald::adapters::embedded::open(dir.path(), 10).unwrap();
    let sandbox = std::sync::Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    // The AWS shape's settings: no loopback, https only.
    let settings = herald::Settings { allow_loopback_urls: false, ..fast_settings() };
    let h = Herald::new(Stores::from_one(store), queue, herald::providers::Providers::all(sandbox), settings);
    let plan = |link: &str| {
        serde_json::from_value::<herald::domain::BroadcastBody>(json!({
            "recipients": [{"phone": "+14155550123"}],
            "template": {"body": "ticket", "header": {"type": "image"}},
            "media": {"link": link}
        }))
        .unwrap()
        .validate()
        .unwrap()
    };
    for bad in [
        "http://cdn.example.com/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/a.png",
        "https://localhost/a.png",
    ] {
        match herald::service::ingest::ingest(&h.ingest, &tenant("t"), plan(bad), "native").await {
            Err(herald::service::ServiceError::Invalid(e)) => assert_eq!(e.0[0].field, "media.link", "{bad}"),
            other => panic!("{bad} accepted: {other:?}"),
        }
    }
    assert!(herald::service::ingest::ingest(&h.ingest, &tenant("t"), plan("https://93.184.216.34/a.png"), "native")
        .await
        .is_ok());
}

/// `{"n": {"n": … "leaf"}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!("leaf"), |v, _| json!({ "n": v }))
}

#[tokio::test]
async fn metadata_nesting_is_limited_at_the_edge_and_every_stored_value_reads_back() {
    let s = TestServer::start().await;
    for levels in [16, 123] {
        let body = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "metadata": {"k": nested(levels)}});
        let (status, answer) = s.post("/v1/broadcasts", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{levels} levels below metadata: {answer}");
        assert_eq!(error_fields(&answer), vec!["metadata.k"]);
        assert!(answer["error"]["message"].as_str().unwrap().contains("16 levels"), "{answer}");
    }
    // The deepest metadata allowed (16 levels, the object itself included) is stored, sent and
    // read back by every reader: the request, its rows, the outbox, a replayed answer.
    let body =
        json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "metadata": {"k": nested(15)}});
    let resp = s.http.post(s.url("/v1/broadcasts")).bearer_auth(&s.key).header("idempotency-key", "deep").json(&body);
    let (status, answer) = herald_tests::read(resp.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let done = s.wait_terminal(id, WAIT).await;
    assert_eq!(done["metadata"]["k"], nested(15));
    let (status, page) = s.get("/v1/outbox?limit=10").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let resp = s.http.post(s.url("/v1/broadcasts")).bearer_auth(&s.key).header("idempotency-key", "deep").json(&body);
    let (status, again) = herald_tests::read(resp.send().await.unwrap()).await;
    assert_eq!((status, again["request_id"].as_str()), (StatusCode::ACCEPTED, Some(id)), "{again}");
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second_even_when_revoked_by_another_process() {
    use herald::ports::ApiKeys;
    let s = TestServer::start().await;
    let key = herald::service::keys::create_key(s.herald().keys.as_ref(), "acme", None).await.unwrap();
    let (_, lookup) = herald::service::keys::digest(&key);
    let get = |key: String| {
        let s = &s;
        async move { s.http.get(s.url("/v1/templates")).bearer_auth(key).send().await.unwrap().status() }
    };
    assert_eq!(get(key.clone()).await, StatusCode::OK);

    // `herald keys revoke` writes to the store from another process: the server learns of it
    // when its cached copy of the key runs out.
    s.local.store.revoke_key(&tenant("acme"), &lookup, herald::domain::now()).await.unwrap();
    let revoked_at = std::time::Instant::now();
    while get(key.clone()).await == StatusCode::OK {
        assert!(revoked_at.elapsed() < Duration::from_secs(3), "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(key.clone()).await, StatusCode::UNAUTHORIZED);

    // Revoked through the server's own port, a key stops at once.
    let second = herald::service::keys::create_key(s.herald().keys.as_ref(), "acme", None).await.unwrap();
    assert_eq!(get(second.clone()).await, StatusCode::OK);
    let (_, lookup) = herald::service::keys::digest(&second);
    s.herald().keys.revoke_key(&tenant("acme"), &lookup, herald::domain::now()).await.unwrap();
    assert_eq!(get(second).await, StatusCode::UNAUTHORIZED);
}

/// Pages of `GET /v1/broadcasts/{id}?status=…`, `limit` at a time, as (seq, status) in order.
async fn filtered(s: &TestServer, id: &str, status: &str, limit: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cursor: Option<u64> = None;
    for _ in 0..100 {
        let after = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (code, page) = s.get(&format!("/v1/broadcasts/{id}?status={status}&limit={limit}{after}")).await;
        assert_eq!(code, StatusCode::OK, "{page}");
        let rows = rows_of(&page);
        assert!(rows.len() as u32 <= limit, "{page}");
        out.extend(
            rows.iter().map(|r| (r["id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string())),
        );
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("the filtered pages never ended");
}

#[tokio::test]
async fn a_requests_rows_are_filtered_by_status_and_paged() {
    let behaviour = SandboxBehaviour { fail_rate: 0.5, fail_kind: FailKind::Permanent, ..Default::default() };
    let s = TestServer::start_with(fast_settings(), behaviour, 4).await;
    let recipients: Vec<Value> = (0..40).map(|i| json!({"phone": format!("+1415555{:04}", 1000 + i)})).collect();
    let (id, done) = send(&s, json!({"recipients": recipients, "messages": [{"text": "x"}]})).await;
    let all: Vec<(String, String)> = rows_of(&done)
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().into()))
        .collect();
    let only = |names: &[&str]| all.iter().filter(|(_, st)| names.contains(&st.as_str())).cloned().collect::<Vec<_>>();
    let failed = only(&["failed"]);
    assert!(!failed.is_empty() && failed.len() < all.len(), "a mix of outcomes: {all:?}");

    assert_eq!(filtered(&s, &id, "failed", 3).await, failed, "every failed row once, in seq order");
    assert_eq!(filtered(&s, &id, "failed", 1000).await, failed);
    let mut names: Vec<&str> = all.iter().map(|(_, st)| st.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(filtered(&s, &id, &names.join(","), 7).await, all, "several statuses");
    assert!(filtered(&s, &id, "canceled", 5).await.is_empty());

    let (code, body) = s.get(&format!("/v1/broadcasts/{id}?status=failed,lost")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_fields(&body), ["status"], "{body}");
    let (code, body) = s.get(&format!("/v1/broadcasts/{id}?status=")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}
