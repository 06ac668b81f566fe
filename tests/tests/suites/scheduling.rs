//! Scheduling through the front door: each row due at 09:00 in its recipient's own timezone
//! (the contact's, else its phone's country's one zone, else the tenant's), send windows,
//! throttles, the 365-day limit, and cancel before anything is due.

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use herald_tests::{error_fields, TestServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn at(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

/// 09:00 on `day` in `tz`, as UTC.
fn nine(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_hms_opt(9, 0, 0).unwrap()).single().unwrap().with_timezone(&Utc)
}

async fn contact(s: &TestServer, body: Value) -> String {
    let (status, c) = s.post("/v1/contacts", body).await;
    assert!(status.is_success(), "{status} {c}");
    c["id"].as_str().unwrap().to_string()
}

async fn rows(s: &TestServer, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/broadcasts/{id}?limit=1000&cursor={c}"),
            None => format!("/v1/broadcasts/{id}?limit=1000"),
        };
        let (_, page) = s.get(&path).await;
        out.extend(page["recipients"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn each_recipient_gets_nine_oclock_in_their_own_timezone() {
    let s = TestServer::start().await;
    let (status, set) = s.put("/v1/settings", json!({"timezone": "America/Chicago"})).await;
    assert_eq!((status.as_u16(), &set["timezone"]), (200, &json!("America/Chicago")), "{set}");
    assert_eq!(s.get("/v1/settings").await.1["timezone"], "America/Chicago");
    let (status, bad) = s.put("/v1/settings", json!({"timezone": "Mars/Olympus"})).await;
    assert_eq!((status.as_u16(), error_fields(&bad)), (422, vec!["timezone".to_string()]), "{bad}");

    let tokyo = contact(&s, json!({"email": "aiko@example.com", "timezone": "Asia/Tokyo"})).await;
    let berlin = contact(&s, json!({"email": "jonas@example.com", "timezone": "Europe/Berlin"})).await;
    let new_york = contact(&s, json!({"email": "ada@example.com", "timezone": "America/New_York"})).await;
    let day = (Utc::now() + Span::days(30)).date_naive();
    let body = json!({
        "recipients": [
            {"contact_id": tokyo}, {"contact_id": berlin}, {"contact_id": new_york},
            {"phone": "+81312345678"}, {"phone": "+4930123456"}, {"phone": "+14155550100"},
        ],
        "messages": [{"text": "Good morning"}],
        "send_at_local": format!("{day}T09:00"),
    });
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let (_, got) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(got["state"], "scheduled", "{got}");
    assert_eq!(got["summary"]["scheduled"], 6, "{got}");
    assert_eq!(got["send_at_local"], format!("{day}T09:00"));
    let expected = [
        chrono_tz::Asia::Tokyo,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Tokyo,
        chrono_tz::Europe::Berlin,
        // +1 is several zones: the tenant's.
        chrono_tz::America::Chicago,
    ];
    let rows = rows(&s, id).await;
    for (row, tz) in rows.iter().zip(expected) {
        assert_eq!(row["status"], "scheduled", "{row}");
        assert_eq!(row["timezone"], tz.name(), "{row}");
        assert_eq!(at(&row["due_at"]), nine(day, tz), "{row}");
    }
    assert!(s.outbox(id).await.is_empty(), "nothing is sent before it is due");

    // Cancel before anything is due: every row ends canceled, at once.
    let (status, canceled) = s.post(&format!("/v1/broadcasts/{id}/cancel"), json!({})).await;
    assert_eq!(status.as_u16(), 200, "{canceled}");
    assert_eq!(canceled["state"], "canceled");
    assert_eq!(canceled["summary"]["by_status"], json!({"canceled": 6}), "{canceled}");
}

#[tokio::test]
async fn a_row_due_in_quiet_hours_waits_for_the_next_allowed_day() {
    let s = TestServer::start().await;
    let berlin = contact(&s, json!({"email": "jonas@example.com", "timezone": "Europe/Berlin"})).await;
    // A Friday a few weeks out, 22:00 in Berlin: after the window, and the weekend is closed.
    let mut day = (Utc::now() + Span::days(20)).date_naive();
    while day.weekday() != Weekday::Fri {
        day = day.succ_opt().unwrap();
    }
    let late = chrono_tz::Europe::Berlin.from_local_datetime(&day.and_hms_opt(22, 0, 0).unwrap()).single().unwrap();
    let body = json!({
        "recipients": [{"contact_id": berlin}],
        "messages": [{"text": "Your weekly digest"}],
        "send_at": late.to_rfc3339(),
        "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "until": "20:00"},
    });
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let row = &rows(&s, id).await[0];
    let monday = day + Span::days(3);
    assert_eq!(at(&row["due_at"]), nine(monday, chrono_tz::Europe::Berlin), "{row}");
    let (_, got) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(
        got["send_window"],
        json!({"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "until": "20:00"})
    );

    // A campaign's window applies to its sends that have none of their own.
    let (status, t) = s.put("/v1/templates/digest", json!({"body": "Your digest"})).await;
    assert!(status.is_success(), "{t}");
    let campaign = json!({"name": "Digest", "template_ids": ["digest"], "send_window": {"days": ["sat"], "from": "10:00", "until": "12:00"}});
    let (status, c) = s.put("/v1/campaigns/digest", campaign).await;
    assert!(status.is_success(), "{c}");
    let body = json!({"recipients": [{"contact_id": berlin}], "campaign_id": "digest", "send_at": late.to_rfc3339()});
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let row = &rows(&s, answer["request_id"].as_str().unwrap()).await[0];
    let saturday_ten = chrono_tz::Europe::Berlin
        .from_local_datetime(&(day + Span::days(1)).and_hms_opt(10, 0, 0).unwrap())
        .single()
        .unwrap();
    assert_eq!(at(&row["due_at"]), saturday_ten.with_timezone(&Utc), "{row}");
}

#[tokio::test]
async fn a_throttle_of_600_a_minute_spreads_3000_rows_over_five_minutes() {
    let s = TestServer::start().await;
    let recipients: Vec<Value> = (0..1000).map(|i| json!({"email": format!("r{i}@example.com")})).collect();
    let body = json!({
        "recipients": recipients,
        "messages": [{"text": "one"}, {"text": "two"}, {"text": "three"}],
        "send_at": (Utc::now() + Span::days(1)).to_rfc3339(),
        "throttle": {"per_minute": 600},
    });
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let due: Vec<DateTime<Utc>> = rows(&s, id).await.iter().map(|r| at(&r["due_at"])).collect();
    assert_eq!(due.len(), 3000);
    let (first, last) = (*due.iter().min().unwrap(), *due.iter().max().unwrap());
    let minutes = (last - first).num_milliseconds() as f64 / 60_000.0;
    assert!((minutes - 5.0).abs() <= 0.25, "3,000 rows at 600 a minute took {minutes} minutes");
    let mut per_minute: HashMap<i64, usize> = HashMap::new();
    for d in &due {
        *per_minute.entry((*d - first).num_seconds() / 60).or_default() += 1;
    }
    assert!(per_minute.values().all(|n| *n <= 600), "{per_minute:?}");
}

#[tokio::test]
async fn a_year_ahead_is_the_limit_and_the_schedule_fields_are_checked() {
    let s = TestServer::start().await;
    let send = |extra: Value| {
        let mut body = json!({"recipients": [{"email": "a@example.com"}], "messages": [{"text": "hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let in_days = |d: i64| (Utc::now() + Span::days(d)).to_rfc3339();
    let (status, ok) = s.post("/v1/broadcasts", send(json!({"send_at": in_days(365) }))).await;
    assert_eq!(status.as_u16(), 202, "365 days ahead is accepted: {ok}");
    let (status, refused) = s.post("/v1/broadcasts", send(json!({"send_at": in_days(366)}))).await;
    assert_eq!((status.as_u16(), error_fields(&refused)), (422, vec!["send_at".to_string()]), "{refused}");
    let local = (Utc::now() + Span::days(367)).format("%Y-%m-%dT09:00").to_string();
    let (status, refused) = s.post("/v1/broadcasts", send(json!({"send_at_local": local}))).await;
    assert_eq!((status.as_u16(), error_fields(&refused)), (422, vec!["send_at_local".to_string()]), "{refused}");
    let cases = [
        (json!({"send_at": in_days(1), "send_at_local": "2027-01-01T09:00"}), "send_at_local"),
        (json!({"send_at_local": "2027-01-01T09:00+01:00"}), "send_at_local"),
        (json!({"throttle": {"per_minute": 0}}), "throttle.per_minute"),
        (json!({"send_window": {"days": ["mon"], "from": "20:00", "until": "09:00"}}), "send_window.until"),
        (json!({"send_window": {"days": [], "from": "09:00", "until": "17:00"}}), "send_window.days"),
        (json!({"send_at_local": "2027-01-01T09:00", "background": false}), "send_at_local"),
    ];
    for (extra, field) in cases {
        let (status, refused) = s.post("/v1/broadcasts", send(extra.clone())).await;
        assert_eq!(status.as_u16(), 422, "{extra}: {refused}");
        assert!(error_fields(&refused).contains(&field.to_string()), "{extra}: {refused}");
    }
}

#[tokio::test]
async fn a_row_is_sent_once_its_due_time_comes() {
    let s = TestServer::start().await;
    let soon = Utc::now() + Span::seconds(2);
    let body =
        json!({"recipients": [{"email": "a@example.com"}], "messages": [{"text": "hi"}], "send_at": soon.to_rfc3339()});
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    assert_eq!(rows(&s, id).await[0]["status"], "scheduled");
    let done = s.wait_terminal(id, Duration::from_secs(30)).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 1}), "{done}");
    let sent = at(&s.outbox(id).await[0]["created_at"]);
    assert!(sent >= soon - Span::milliseconds(5), "sent at {sent}, due at {soon}");
}

#[tokio::test]
async fn an_audience_is_scheduled_in_each_members_timezone_as_it_fans_out() {
    let s = TestServer::start().await;
    let zones = [chrono_tz::Asia::Tokyo, chrono_tz::Europe::Berlin, chrono_tz::America::New_York];
    let mut members = Vec::new();
    for (i, tz) in zones.iter().enumerate() {
        members.push(json!({"email": format!("m{i}@example.com"), "timezone": tz.name()}));
    }
    // A phone-only member: its country's one zone.
    members.push(json!({"phone": "+81312345678"}));
    let (status, seg) = s.put("/v1/segments/all", json!({"name": "All"})).await;
    assert!(status.is_success(), "{seg}");
    let (status, added) = s.post("/v1/segments/all/members", json!({"contacts": members})).await;
    assert!(status.is_success(), "{added}");
    let day = (Utc::now() + Span::days(10)).date_naive();
    let body = json!({"audience": {"segments": ["all"]}, "messages": [{"text": "hi"}], "send_at_local": format!("{day}T09:00")});
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let (_, got) = s.get(&format!("/v1/broadcasts/{id}")).await;
        if got["state"] != "fanning_out" {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "fan-out did not finish: {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((got["state"].clone(), got["summary"]["scheduled"].clone()), (json!("scheduled"), json!(4)), "{got}");
    let mut due: Vec<(String, DateTime<Utc>)> =
        rows(&s, id).await.iter().map(|r| (r["timezone"].as_str().unwrap().to_string(), at(&r["due_at"]))).collect();
    due.sort();
    let mut expected: Vec<(String, DateTime<Utc>)> =
        zones.iter().map(|tz| (tz.name().to_string(), nine(day, *tz))).collect();
    expected.push(("Asia/Tokyo".into(), nine(day, chrono_tz::Asia::Tokyo)));
    expected.sort();
    assert_eq!(due, expected);
}

/// README.md's scheduling example, run as written against this server.
#[tokio::test]
async fn the_readme_scheduling_example_works_as_written() {
    let s = TestServer::start().await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- scheduling-example:start -->").expect("scheduling example start marker");
    let end = readme.find("<!-- scheduling-example:end -->").expect("scheduling example end marker");
    let script: String = readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("http://127.0.0.1:8080", &s.url(""));
    let key = s.key.clone();
    let posted = Utc::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash").args(["-euo", "pipefail", "-c", &script]).env("HERALD_API_KEY", key).output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Two answers, back to back: the settings, then the broadcast.
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&stdout).into_iter().map(Result::unwrap).collect();
    assert_eq!(answers[0]["timezone"], "America/Chicago", "{stdout}");
    let answer = &answers[1];
    let id = answer["request_id"].as_str().unwrap_or_else(|| panic!("{stdout}"));
    let day = NaiveDate::from_ymd_opt(2027, 1, 4).unwrap();
    let zones = [chrono_tz::Asia::Tokyo, chrono_tz::Europe::Berlin, chrono_tz::America::Chicago];
    for (i, (row, tz)) in rows(&s, id).await.iter().zip(zones).enumerate() {
        // 600 a minute: a tenth of a second apart. A date already past is due at once.
        let expected = (nine(day, tz) + Span::milliseconds(100 * i as i64)).max(posted);
        let due = at(&row["due_at"]);
        assert!((due - expected).num_milliseconds().abs() < 2_000, "{row}: expected {expected}");
        assert_eq!(row["timezone"], tz.name());
    }
}
