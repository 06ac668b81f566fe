//! The edge a hostile tenant or a slow client meets: URLs Herald or a provider would fetch, the
//! socket's read timeouts and connection cap, and error answers that are always Herald's JSON.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use herald::http::server::Limits;
use herald::Settings;
use herald_tests::{error_fields, fast_settings, TestServer};

/// `herald serve` as it starts without `--allow-loopback-urls`.
async fn strict_server() -> TestServer {
    let settings = Settings { allow_loopback_urls: false, ..fast_settings() };
    TestServer::start_with(settings, Default::default(), 0).await
}

fn with_media(link: &str) -> Value {
    json!({
        "recipients": [{"phone": "+14155550123"}],
        "template": {"body": "ticket", "header": {"type": "image"}},
        "media": {"link": link}
    })
}

const PRIVATE_LINKS: [&str; 8] = [
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.1/a.png",
    "https://[::127.0.0.1]/a.png",
    "https://[::a9fe:a9fe]/a.png",
    "https://[::ffff:0:a9fe:a9fe]/a.png",
    "https://[2002:a9fe:a9fe::1]/a.png",
    "https://[2002:0a00:0001::]/a.png",
    "https://localhost/a.png",
];

#[tokio::test]
async fn without_the_operators_allowance_no_tenant_url_reaches_this_machine_or_a_private_address() {
    let s = strict_server().await;
    let (status, body) = s.put("/v1/webhook", json!({"url": "http://127.0.0.1:9/hook"})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["url".to_string()]), "{body}");
    let (status, body) = s.put("/v1/webhook", json!({"url": "https://[::127.0.0.1]:9/hook"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    for link in PRIVATE_LINKS.into_iter().chain(["http://93.184.216.34/a.png"]) {
        let (status, body) = s.post("/v1/broadcasts", with_media(link)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{link}: {body}");
        assert_eq!(error_fields(&body), vec!["media.link"], "{link}");
    }
    // A template's own header link, stored or inline, is held to the same rule.
    let header = json!({"type": "image", "link": "https://10.0.0.1/h.png"});
    let (status, body) = s.put("/v1/templates/tpl.img", json!({"body": "hi", "header": header})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        s.post("/v1/broadcasts", json!({"recipients": [{"phone": "+14155550123"}], "template": "tpl.img"})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["template.header.link".into()]));
    let inline = json!({"recipients": [{"phone": "+14155550123"}], "template": {"body": "hi", "header": header}});
    let (status, body) = s.post("/v1/broadcasts", inline).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["template.header.link".into()]));

    let (status, body) = s.post("/v1/broadcasts", with_media("https://93.184.216.34/a.png")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a public https link is taken: {body}");
}

#[tokio::test]
async fn the_loopback_allowance_admits_this_machine_and_nothing_else() {
    let s = TestServer::start_with(fast_settings(), Default::default(), 0).await;
    let (status, body) = s.put("/v1/webhook", json!({"url": "http://127.0.0.1:9/hook"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The scheme is checked before the allowance.
    for url in ["ftp://localhost/x", "ftp://127.0.0.1/x", "http://bot.example.com/hook"] {
        let (status, body) = s.put("/v1/webhook", json!({ "url": url })).await;
        assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["url".into()]), "{url}");
    }
    // Private and metadata addresses, and v6 forms embedding them, stay refused.
    for link in &PRIVATE_LINKS[..7] {
        let (status, body) = s.post("/v1/broadcasts", with_media(link)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{link}: {body}");
    }
    let (status, body) = s.post("/v1/broadcasts", with_media("http://127.0.0.1:9/a.png")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

// ------------------------------------------------------------------ slow clients

async fn guarded_server(limits: Limits) -> TestServer {
    TestServer::start_serving(fast_settings(), Default::default(), 2, &Default::default(), limits).await
}

/// Reads what the server sends until it closes the connection or `within` passes.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    None
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_millis(800),
        body_timeout: Duration::from_millis(800),
        max_connections: 64,
    };
    let s = guarded_server(limits).await;

    // Headers at a byte every 100 ms: the connection is closed once the header time is up.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Slow: yes".iter().take(40) {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed = closed || read_until_closed(&mut slow, Duration::from_secs(3)).await.is_some();
    assert!(closed, "a client sending its headers a byte at a time kept its connection");
    assert!(started.elapsed() < Duration::from_secs(6));

    // A body at a byte every 300 ms: 408, in Herald's JSON error.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/broadcasts HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        s.key
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    let dribble = tokio::spawn(async move {
        for _ in 0..20 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
    dribble.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
}

#[tokio::test]
async fn many_half_sent_requests_do_not_starve_healthz_or_real_clients() {
    let limits =
        Limits { header_timeout: Duration::from_secs(30), body_timeout: Duration::from_secs(30), max_connections: 50 };
    let s = guarded_server(limits).await;
    // Three times the cap of connections that send half a request head and then wait.
    let mut hogs = Vec::new();
    for _ in 0..150 {
        let Ok(mut c) = TcpStream::connect(s.addr).await else { break };
        let _ = c.write_all(b"POST /v1/broadcasts HTTP/1.1\r\nHost: herald\r\n").await;
        hogs.push(c);
    }
    let client = herald_tests::unpooled_client();
    for _ in 0..3 {
        let started = Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(5), client.get(s.url("/healthz")).send()).await;
        let health = health.expect("/healthz answered in time").expect("/healthz answered");
        assert_eq!(health.status(), StatusCode::OK);
        let send = client
            .post(s.url("/v1/broadcasts"))
            .bearer_auth(&s.key)
            .json(&json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "hi"}]}));
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send()).await.expect("a send answered in time");
        assert_eq!(resp.expect("a send answered").status(), StatusCode::ACCEPTED);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The hogs try again.
        for _ in 0..50 {
            if let Ok(mut c) = TcpStream::connect(s.addr).await {
                let _ = c.write_all(b"GET /v1/outbox HTTP/1.1\r\n").await;
                hogs.push(c);
            }
        }
    }
    // The cap held: the hogs that waited longest were closed to make room.
    for (i, hog) in hogs.iter_mut().take(10).enumerate() {
        assert!(read_until_closed(hog, Duration::from_secs(2)).await.is_some(), "hog {i} is still open");
    }
}

// ------------------------------------------------------------------ every error in JSON

async fn raw_request(s: &TestServer, request: &[u8]) -> (u16, Value) {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let text = read_until_closed(&mut c, Duration::from_secs(10)).await.expect("the server answered and closed");
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::String(text.clone())))
}

fn is_herald_error(body: &Value) -> bool {
    body["error"]["code"].is_string() && body["error"]["message"].is_string() && body["error"]["fields"].is_array()
}

#[tokio::test]
async fn every_client_error_is_herald_json() {
    let s = TestServer::start_with(fast_settings(), Default::default(), 0).await;
    let key = &s.key;
    let bad_path = format!(
        "GET /v1/broadcasts/%ff HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_request(&s, bad_path.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(is_herald_error(&body), "{body}");

    let bad_template = format!(
        "GET /v1/templates/%ff%fe HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_request(&s, bad_template.as_bytes()).await;
    assert!((400..500).contains(&status) && is_herald_error(&body), "{status} {body}");

    // Callbacks read no more than any other endpoint: 1.5 MiB is 413, not read and then 404.
    let big = vec![b'a'; 1536 * 1024];
    let resp = herald_tests::unpooled_client()
        .post(s.url("/v1/providers/whatsapp/events"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = herald_tests::read(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(is_herald_error(&body), "{body}");

    let (status, body) = s.call(Method::PATCH, "/v1/broadcasts", None).await;
    assert!(status.is_client_error() && is_herald_error(&body), "{status} {body}");
}

#[tokio::test]
async fn a_request_target_too_long_is_a_json_414() {
    let s = TestServer::start_with(fast_settings(), Default::default(), 0).await;
    let long = format!("GET /v1/broadcasts/{} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "a".repeat(70 * 1024));
    let (status, body) = raw_request(&s, long.as_bytes()).await;
    assert_eq!(status, 414, "{body}");
    assert!(is_herald_error(&body), "{body}");
}
