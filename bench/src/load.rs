//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending
//! its next request as soon as the last is answered, for a fixed time after a warm-up.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Load {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub key: &'static str,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// The body of the `n`th request.
    pub body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    /// The status every answer must have.
    pub expect: u16,
}

pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies of the measured, successful requests, in milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
    pub first_error: Option<String>,
}

impl Load {
    pub async fn run(&self) -> Outcome {
        let counter = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;
        let mut tasks = Vec::new();
        for _ in 0..self.connections {
            let (addr, path, key, body, expect, counter) =
                (self.addr, self.path, self.key, self.body.clone(), self.expect, counter.clone());
            tasks.push(tokio::spawn(async move {
                connection(addr, path, key, body, expect, counter, measure_from, end).await
            }));
        }
        let mut out = Outcome {
            ok: 0,
            errors: 0,
            seconds: self.duration.as_secs_f64(),
            latencies_ms: Vec::new(),
            first_error: None,
        };
        for t in tasks {
            let (lat, errors, first_error) = t.await.unwrap_or_else(|e| (Vec::new(), 1, Some(e.to_string())));
            out.ok += lat.len() as u64;
            out.errors += errors;
            out.latencies_ms.extend(lat);
            out.first_error = out.first_error.or(first_error);
        }
        out.latencies_ms.sort_by(f64::total_cmp);
        out
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    path: &'static str,
    key: &'static str,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    expect: u16,
    counter: Arc<AtomicU64>,
    measure_from: Instant,
    end: Instant,
) -> (Vec<f64>, u64, Option<String>) {
    let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
    let mut sender = None;
    while Instant::now() < end {
        if sender.is_none() {
            match connect(addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let request = hyper::Request::post(path)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(body(n)))
            .expect("request");
        let sent = Instant::now();
        let answer = async {
            let r = s.send_request(request).await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let text = r.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, text))
        }
        .await;
        let took = sent.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok((status, _)) if status == expect => {
                if sent >= measure_from && Instant::now() <= end {
                    latencies.push(took);
                }
            }
            Ok((status, text)) => {
                errors += 1;
                first_error.get_or_insert(format!("{status}: {}", String::from_utf8_lossy(&text)));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
                sender = None;
            }
        }
    }
    (latencies, errors, first_error)
}

async fn connect(addr: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}
