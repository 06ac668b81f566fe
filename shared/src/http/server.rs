//! The router on a socket (`herald serve`, the test kit): HTTP/1.1 through hyper, with the limits
//! a socket open to clients needs. `axum::serve` has none: a client sending its headers or its body
//! a byte at a time could hold a connection for minutes, and a thousand such clients would starve
//! `/healthz` and every real caller. (The Lambda shape is behind API Gateway, which has its own.)
//!
//! - the request head must arrive within `header_timeout` (hyper closes the connection),
//! - a request line longer than 60 KiB is answered `414` in Herald's JSON,
//! - a body must arrive within `body_timeout` of its head (`408`, Herald's JSON error),
//! - at most `max_connections` are open; when a new one would pass the cap, the connection that
//!   has waited longest for a request is closed to make room (one in the middle of a request is
//!   never cut), and only when every connection is busy with a request is the newcomer answered
//!   `503` and closed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

/// How `serve` guards its socket. Every field is a `herald serve` flag.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30), max_connections: 1024 }
    }
}

/// A body that did not arrive within the body timeout; the body extractors answer `408`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether an error from reading a body is (or wraps) a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in hand finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let conns = Arc::new(Conns::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if conns.len() >= limits.max_connections && !conns.evict_longest_waiting() {
            tokio::spawn(refuse_busy(stream));
            continue;
        }
        let (id, evicted) = conns.open();
        let (conns, app, stop_rx) = (conns.clone(), app.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(stream, app, limits, &conns, id, evicted, stop_rx).await;
            conns.close(id);
        });
    }
    let _ = stop_tx.send(true);
    conns.wait_empty().await;
    Ok(())
}

async fn connection(
    mut stream: TcpStream,
    app: Router,
    limits: Limits,
    conns: &Arc<Conns>,
    id: u64,
    evicted: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let first = tokio::select! {
        first = first_line(&mut stream, limits.header_timeout) => first,
        _ = evicted.notified() => return,
        _ = stop.wait_for(|s| *s) => return,
    };
    let stream = match first {
        FirstLine::Read(prefix) => Rewind { prefix, at: 0, inner: stream },
        FirstLine::TooLong => return refuse(stream, URI_TOO_LONG).await,
        FirstLine::Gone => return,
    };
    let svc_conns = conns.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (app, conns) = (app.clone(), svc_conns.clone());
        conns.busy(id, true);
        let req = req.map(|b| Body::new(TimedBody::new(b, limits.body_timeout)));
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await;
            conns.busy(id, false);
            resp
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Raw `"` in a query (SMAX's documented URL) would otherwise be an empty 400 from hyper.
        .serve_connection(TokioIo::new(super::request_target::TolerantIo::new(stream)), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = evicted.notified() => return,
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Longest request line (method, target, version) taken. Past it hyper would answer an empty
/// `414` of its own, so a connection's first request line is read here and refused in JSON.
const MAX_REQUEST_LINE: usize = 60 * 1024;

/// A status line, an error code and a message.
type Refusal = (&'static str, &'static str, &'static str);

const URI_TOO_LONG: Refusal =
    ("414 URI Too Long", "uri_too_long", "the request target is too long; send the data in the body");
const BUSY: Refusal = ("503 Service Unavailable", "unavailable", "Herald is at its connection limit; retry shortly");

enum FirstLine {
    Read(Vec<u8>),
    TooLong,
    Gone,
}

/// Reads up to the end of the first request line (all of it, for hyper to parse again).
async fn first_line(stream: &mut TcpStream, within: Duration) -> FirstLine {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut got = Vec::with_capacity(1024);
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return FirstLine::Gone;
            }
            got.extend_from_slice(&buf[..n]);
            match got.iter().position(|b| *b == b'\n') {
                Some(end) if end <= MAX_REQUEST_LINE => return FirstLine::Read(got),
                None if got.len() <= MAX_REQUEST_LINE => {}
                _ => return FirstLine::TooLong,
            }
        }
    };
    tokio::time::timeout(within, read).await.unwrap_or(FirstLine::Gone)
}

/// The answer to a connection over the cap when no open one can make room.
async fn refuse_busy(stream: TcpStream) {
    refuse(stream, BUSY).await
}

/// Answers Herald's JSON error without hyper, and closes the connection.
async fn refuse(mut stream: TcpStream, (status, code, message): Refusal) {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}","fields":[]}}}}"#);
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with unread bytes would reset the connection, and the client could lose the
        // answer: read what it still sends, for a moment.
        let mut sink = [0u8; 8192];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// One open connection: since when it has waited for a request, and its closing signal.
type Open = (Option<Instant>, Arc<Notify>);

/// The open connections: for each, since when it has been waiting for a request (`None` while a
/// request is in hand), and how to close it.
#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, Open>>,
    next: AtomicU64,
    emptied: Notify,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn open(&self) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        self.lock().insert(id, (Some(Instant::now()), evicted.clone()));
        (id, evicted)
    }

    fn busy(&self, id: u64, busy: bool) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.0 = (!busy).then(Instant::now);
        }
    }

    /// Closes the connection that has waited longest for a request; false when all are busy.
    fn evict_longest_waiting(&self) -> bool {
        let mut open = self.lock();
        let Some(id) = open.iter().filter_map(|(id, (since, _))| since.map(|s| (s, *id))).min().map(|(_, id)| id)
        else {
            return false;
        };
        if let Some((_, evicted)) = open.remove(&id) {
            // `notify_one` keeps the wake-up for a task not yet waiting on it.
            evicted.notify_one();
        }
        true
    }

    fn close(&self, id: u64) {
        let mut open = self.lock();
        open.remove(&id);
        if open.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.len() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// The connection with the bytes already read put back in front.
struct Rewind {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A body's time grows by one second per this many bytes received: a large upload (a CSV import)
/// that keeps coming at a modem's pace is not cut off, while a body that trickles still is.
const BYTES_PER_SECOND: u64 = 64 * 1024;

/// A request body that fails with [`BodyTimeout`] once its time is up.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> TimedBody {
        TimedBody { inner: Body::new(inner), deadline: Box::pin(tokio::time::sleep(limit)), limit }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                let more = Duration::from_secs_f64(data.map_or(0, |d| d.len()) as f64 / BYTES_PER_SECOND as f64);
                let until = self.deadline.deadline() + more;
                self.deadline.as_mut().reset(until);
            }
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
