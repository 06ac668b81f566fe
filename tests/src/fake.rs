//! A loopback fake of any provider: records each request exactly (method, path with query,
//! headers, body) and answers from a script of replies, so tests can check the request shape and
//! play 429s, 5xx, slow answers and malformed bodies.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// When the fake received it.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
    /// The body as form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply { status, body: body.to_string(), headers: vec![], delay: Duration::ZERO }
    }
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply { status, body: body.to_string(), headers: vec![], delay: Duration::ZERO }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeProvider {
    /// Starts a fake whose default answer is `default`.
    pub async fn start(default: Reply) -> FakeProvider {
        let state = Arc::new(Mutex::new(State { default: Some(default), ..Default::default() }));
        let s = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let reply = {
                    let mut st = s.lock().unwrap();
                    st.requests.push(Recorded {
                        method: method.to_string(),
                        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: std::time::Instant::now(),
                    });
                    st.script.pop_front().or_else(|| st.default.clone()).unwrap()
                };
                tokio::time::sleep(reply.delay).await;
                let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
                resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
                for (k, v) in reply.headers {
                    resp.headers_mut()
                        .insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
                }
                resp
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeProvider { url: format!("http://{addr}"), state }
    }

    /// Answers the next requests with these replies, in order, before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}
