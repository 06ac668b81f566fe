//! A loopback provider that misbehaves on purpose, for `herald soak`: it speaks Twilio's
//! Messages API and answers each request with success or, at the chosen rate, one of the faults
//! real providers show — 5xx, 429 with Retry-After, a timeout, a connection reset, a garbled
//! body. It records every message it accepted, by recipient.

use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Tally {
    /// Messages accepted, per recipient (`To`).
    pub accepted: HashMap<String, u32>,
    /// Faults injected, by kind.
    pub faults: HashMap<&'static str, u64>,
}

pub struct Chaos {
    pub url: String,
    pub tally: Arc<Mutex<Tally>>,
}

impl Chaos {
    /// `timeout`: how long a "timeout" fault holds the answer (longer than Herald waits).
    pub async fn start(fault_rate: f64, timeout: Duration) -> std::io::Result<Chaos> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let t = tally.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let t = t.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, t, fault_rate, timeout).await;
                });
            }
        });
        Ok(Chaos { url, tally })
    }
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes of body).
async fn read_request(sock: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned()));
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut sock: TcpStream,
    tally: Arc<Mutex<Tally>>,
    fault_rate: f64,
    timeout: Duration,
) -> std::io::Result<()> {
    while let Some(body) = read_request(&mut sock).await? {
        let fault = {
            let mut rng = rand::rng();
            rng.random_bool(fault_rate.clamp(0.0, 1.0))
                .then(|| ["5xx", "429", "timeout", "reset", "garbage"][rng.random_range(0..5)])
        };
        if let Some(kind) = fault {
            *tally.lock().unwrap().faults.entry(kind).or_insert(0) += 1;
        }
        let (status, extra, answer) = match fault {
            Some("5xx") => (503, "", r#"{"code": 20503, "message": "Service Unavailable"}"#.to_string()),
            Some("429") => {
                (429, "Retry-After: 1\r\n", r#"{"code": 20429, "message": "Too Many Requests"}"#.to_string())
            }
            Some("timeout") => {
                tokio::time::sleep(timeout).await;
                return Ok(());
            }
            Some("reset") => return Ok(()),
            Some(_) => (502, "", "<html><body>Bad Gateway</body>".to_string()),
            None => {
                let to = url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "To")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let mut t = tally.lock().unwrap();
                let n = t.accepted.entry(to).or_insert(0);
                *n += 1;
                (201, "", format!(r#"{{"sid": "SM{:032x}", "status": "queued"}}"#, rand::rng().random::<u128>()))
            }
        };
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{answer}",
            answer.len()
        );
        sock.write_all(reply.as_bytes()).await?;
    }
    Ok(())
}
