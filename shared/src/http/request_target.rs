//! Request targets as clients really send them. The vendor pages Herald stands in for write URLs
//! such as SMAX's `…&messaging_tag="CONFIRMED_EVENT_UPDATE"`, and curl, PHP and Go send those
//! double quotes raw. hyper reads the request line with the `http` crate, which refuses a raw `"`
//! (and `<`, `>`, `` ` ``) and answers an empty `400` before any route runs; `lambda_http` builds
//! its request with the same crate and panics on them. Both paths percent-encode these bytes
//! first, which is what a strict client sends anyway, so the raw and the encoded form mean the
//! same request.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes a client may send raw in a request target that the `http` crate refuses there.
fn refused(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'`')
}

/// `target` with the bytes the `http` crate refuses percent-encoded (`"` → `%22`).
pub fn encode_target(target: &str) -> Cow<'_, str> {
    if !target.bytes().any(refused) {
        return Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len() + 8);
    for c in target.chars() {
        match u8::try_from(c) {
            Ok(b) if refused(b) => out.push_str(&format!("%{b:02X}")),
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An API Gateway HTTP API event (payload 2.0) with its raw path and query string encoded as
/// [`encode_target`] does, so that `lambda_http` can build a request from it.
pub fn encode_api_gateway_event(mut event: serde_json::Value) -> serde_json::Value {
    for key in ["rawPath", "rawQueryString"] {
        if let Some(serde_json::Value::String(s)) = event.get_mut(key) {
            if let Cow::Owned(encoded) = encode_target(s) {
                *s = encoded;
            }
        }
    }
    event
}

/// The longest request head rewritten; a longer one goes to hyper as it came (hyper refuses it).
const MAX_HEAD: usize = 64 * 1024;

/// Where the reader stands in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading a request head (request line and headers).
    Head,
    /// Inside a body of this many more bytes.
    Body(u64),
    /// Framing this reader does not follow (chunked bodies, odd headers): bytes pass unchanged.
    PassThrough,
}

/// A connection whose request lines are rewritten on the way in; writes pass straight through.
/// It follows `Content-Length` framing so that only request lines are touched, never a body.
pub struct TolerantIo<S> {
    inner: S,
    framing: Framing,
    /// The head read so far (until its blank line).
    head: Vec<u8>,
    /// Bytes ready for the reader, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    eof: bool,
}

impl<S> TolerantIo<S> {
    pub fn new(inner: S) -> TolerantIo<S> {
        TolerantIo { inner, framing: Framing::Head, head: Vec::new(), ready: Vec::new(), ready_at: 0, eof: false }
    }

    /// Takes bytes read from the client, moving what is ready to `ready`.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.framing {
                Framing::PassThrough => {
                    self.ready.extend_from_slice(bytes);
                    return;
                }
                Framing::Body(left) => {
                    let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.ready.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.framing = if left == n as u64 { Framing::Head } else { Framing::Body(left - n as u64) };
                }
                Framing::Head => {
                    let searched_from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(bytes);
                    bytes = &[];
                    let Some(end) = head_end(&self.head, searched_from) else {
                        if self.head.len() > MAX_HEAD {
                            self.ready.append(&mut self.head);
                            self.framing = Framing::PassThrough;
                        }
                        continue;
                    };
                    let rest = self.head.split_off(end);
                    let head = std::mem::take(&mut self.head);
                    self.framing = body_framing(&head);
                    self.ready.extend_from_slice(&rewrite_request_line(&head));
                    // What followed the head is fed again under the new framing.
                    self.feed(&rest);
                }
            }
        }
    }
}

/// Where a head ends: just after its first empty line (`\r\n` or a bare `\n`, as hyper reads
/// lines), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| match (buf[i], buf.get(i + 1), buf.get(i + 2)) {
        (b'\n', Some(b'\n'), _) => Some(i + 2),
        (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
        _ => None,
    })
}

/// The framing after `head`: a body of its `Content-Length`, none, or one this reader leaves
/// alone (any `Transfer-Encoding`, or a `Content-Length` that is not one plain number).
fn body_framing(head: &[u8]) -> Framing {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some((name, value)) = line.split_once_byte(b':') else { continue };
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Framing::PassThrough;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value.trim_ascii()).ok().and_then(|v| v.parse::<u64>().ok());
            match (length, parsed) {
                (None, Some(n)) => length = Some(n),
                _ => return Framing::PassThrough,
            }
        }
    }
    match length {
        None | Some(0) => Framing::Head,
        Some(n) => Framing::Body(n),
    }
}

/// The head with its request line's target encoded; anything not shaped like
/// `METHOD SP target SP version` is left for hyper to judge.
fn rewrite_request_line(head: &[u8]) -> Cow<'_, [u8]> {
    // hyper skips blank lines before a request line; so does this.
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(0);
    let Some(line_len) = head[start..].iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Cow::Borrowed(head);
    };
    let line = &head[start..start + line_len];
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else { return Cow::Borrowed(head) };
    if !target.iter().copied().any(refused) {
        return Cow::Borrowed(head);
    }
    let mut out = Vec::with_capacity(head.len() + 16);
    out.extend_from_slice(&head[..start]);
    out.extend_from_slice(method);
    out.push(b' ');
    for &b in target {
        if refused(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(&head[start + line_len..]);
    Cow::Owned(out)
}

trait SplitOnce {
    fn split_once_byte(&self, at: u8) -> Option<(&[u8], &[u8])>;
}

impl SplitOnce for [u8] {
    fn split_once_byte(&self, at: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().position(|&b| b == at)?;
        Some((&self[..i], &self[i + 1..]))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TolerantIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.framing == Framing::PassThrough {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client is done: an unfinished head goes to hyper as it came.
                this.eof = true;
                this.ready.append(&mut this.head);
                continue;
            }
            let filled = read.filled().to_vec();
            this.feed(&filled);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TolerantIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let mut io = TolerantIo::new(());
        for c in chunks {
            io.feed(c);
        }
        io.ready
    }

    #[test]
    fn quotes_in_a_target_are_encoded_and_nothing_else_changes() {
        assert_eq!(encode_target("/x?tag=\"A\"&b=<c>"), "/x?tag=%22A%22&b=%3Cc%3E");
        assert!(matches!(encode_target("/x?tag=A%22"), Cow::Borrowed(_)));
        let out = through(&[b"POST /s?tag=\"A\" HTTP/1.1\r\nHost: h\r\n\r\n"]);
        assert_eq!(out, b"POST /s?tag=%22A%22 HTTP/1.1\r\nHost: h\r\n\r\n");
        let bare = through(&[b"POST /s?tag=\"A\" HTTP/1.1\nHost: h\n\n"]);
        assert_eq!(bare, b"POST /s?tag=%22A%22 HTTP/1.1\nHost: h\n\n", "bare line feeds end a head too");
    }

    #[test]
    fn a_head_split_across_reads_and_pipelined_requests_are_each_rewritten() {
        let out = through(&[
            b"POST /a?q=\"1\" HT",
            b"TP/1.1\r\nContent-Length: 5\r",
            b"\n\r\nx=\"y\"GET /b?q=\"2\" HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?q=%221%22 HTTP/1.1\r\nContent-Length: 5\r\n\r\nx=\"y\"GET /b?q=%222%22 HTTP/1.1\r\n\r\n",
            "the body is left as it came; the next request line is rewritten"
        );
    }

    #[test]
    fn framing_it_does_not_follow_passes_through() {
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\"x\"\r\n0\r\n\r\nGET /b?q=\"2\" HTTP/1.1\r\n\r\n";
        assert_eq!(through(&[chunked]), chunked.to_vec());
        let twice = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(body_framing(twice), Framing::PassThrough);
    }

    #[test]
    fn api_gateway_events_get_the_same_encoding() {
        let e = encode_api_gateway_event(serde_json::json!({"rawPath": "/a", "rawQueryString": "t=\"X\""}));
        assert_eq!(e["rawQueryString"], "t=%22X%22");
    }
}
