//! Problem JSON for the refusals actix-http's HTTP/1 parser writes itself.
//!
//! A request head over the parser's limit (128 KiB, or more than 96 headers) is answered `431`,
//! and a request it cannot parse `400`, by actix-http's dispatcher before any route or middleware
//! runs, with an empty body and no hook to change it. Every error response the application
//! writes has a problem JSON body (see [`crate::problem`]), so an error status with
//! `content-length: 0` at a response boundary can only be one of those. [`ParserRefusals`] wraps
//! each accepted connection, follows the HTTP/1 responses written on it, and writes such a
//! response with the same status and a problem JSON body instead.
//!
//! It stops looking at a connection for good once the connection switched protocols (a
//! WebSocket) or sent a body it does not frame itself (chunked, close-delimited), so WebSocket
//! traffic passes through untouched, after one status-line check.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::http::StatusCode;
use bytes::Bytes;
use prometheus::IntCounterVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::problem::ApiError;

/// A response head longer than this is not followed (actix-http never writes one).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Headers parsed per response head; actix-http writes a handful.
const MAX_HEADERS: usize = 64;

/// Where the next bytes written fall in the response stream.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// A response head, of which these bytes were written so far.
    Head(Vec<u8>),
    /// This many bytes of a body with a `content-length` are still to come.
    Body(u64),
    /// Switched protocols, or a body this wrapper does not frame: never looked at again.
    Opaque,
}

/// One accepted connection (see the module docs).
pub struct ParserRefusals<T> {
    io: T,
    framing: Framing,
    /// The problem response written instead of a parser refusal, and how much of it is out.
    replacement: Option<(Bytes, usize)>,
    /// `switchyard_http_errors_total{status}`: the middleware never sees these responses.
    http_errors: IntCounterVec,
}

impl<T> ParserRefusals<T> {
    pub fn new(io: T, http_errors: IntCounterVec) -> Self {
        Self {
            io,
            framing: Framing::Head(Vec::new()),
            replacement: None,
            http_errors,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

/// What one complete response head says, read once.
struct ResponseHead {
    /// Where the bytes after the head fall.
    next: Framing,
    /// An error status with `content-length: 0`: a parser refusal (see the module docs).
    refusal: Option<StatusCode>,
}

/// Reads a complete response head; an unreadable one makes the connection opaque.
fn read_head(head: &[u8]) -> ResponseHead {
    let opaque = ResponseHead {
        next: Framing::Opaque,
        refusal: None,
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let (Ok(httparse::Status::Complete(_)), Some(code)) = (res.parse(head), res.code) else {
        return opaque;
    };
    let header = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let length = header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let next = if code == 101 || header("transfer-encoding").is_some() {
        Framing::Opaque
    } else if (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Head(Vec::new())
    } else {
        match length {
            Some(0) => Framing::Head(Vec::new()),
            Some(n) => Framing::Body(n),
            None => Framing::Opaque,
        }
    };
    let refusal = StatusCode::from_u16(code)
        .ok()
        .filter(|s| length == Some(0) && (s.is_client_error() || s.is_server_error()));
    ResponseHead { next, refusal }
}

/// The end of a response head at the start of `buf`, if `buf` holds all of it.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The problem response written instead of a parser refusal with `status`.
fn problem_response(status: StatusCode) -> Bytes {
    let detail = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request head is larger than this server accepts (128 KiB of request line and headers, at most 96 headers)"
        }
        StatusCode::BAD_REQUEST => "the request is not valid HTTP/1.1",
        _ => "the request could not be read",
    };
    let body = ApiError::from_status(status, detail.to_owned()).problem_body();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl<T: AsyncWrite + Unpin> ParserRefusals<T> {
    /// Follows the response stream over `bytes`, which were just written.
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.framing {
                Framing::Opaque => return,
                Framing::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.framing = Framing::Head(Vec::new());
                    }
                }
                Framing::Head(head) => {
                    // The end marker may straddle two writes: search from 3 bytes back.
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(bytes);
                    match head_end(&head[from..]) {
                        Some(end) => {
                            let end = from + end;
                            let rest = head.len() - end;
                            let next = read_head(&head[..end]).next;
                            bytes = &bytes[bytes.len() - rest..];
                            self.framing = next;
                        }
                        None if head.len() > MAX_HEAD_BYTES => self.framing = Framing::Opaque,
                        None => return,
                    }
                }
            }
        }
    }

    /// Writes what is left of a replacement; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacement {
            if *done == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ParserRefusals<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ParserRefusals<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        // A response starts this write with its whole head (the common case): read the head
        // once, and write one response per write, so that every response head starts a write
        // (pipelined responses come back to back in one buffer).
        if this.framing == Framing::Head(Vec::new()) {
            if let Some(end) = head_end(buf) {
                let head = read_head(&buf[..end]);
                if let Some(status) = head.refusal {
                    this.http_errors.with_label_values(&[status.as_str()]).inc();
                    log::info!("refused a request the HTTP parser could not take: {status}");
                    // The connection closes after this response: nothing is followed after it.
                    this.framing = Framing::Opaque;
                    this.replacement = Some((problem_response(status), 0));
                    // Accepted now; written by this and the next poll_write/flush/shutdown.
                    if let Poll::Ready(Err(e)) = this.poll_replacement(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(end));
                }
                let buf = match head.next {
                    Framing::Body(n) => {
                        let response_end = (end as u64).saturating_add(n);
                        &buf[..buf
                            .len()
                            .min(usize::try_from(response_end).unwrap_or(usize::MAX))]
                    }
                    _ => buf,
                };
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
                if n >= end {
                    this.framing = head.next;
                    this.advance(&buf[end..n]);
                } else {
                    // Part of the head went out: follow it byte-wise from here.
                    this.advance(&buf[..n]);
                }
                return Poll::Ready(Ok(n));
            }
        }
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.advance(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["status"]).unwrap()
    }

    /// Writes `chunks` through a wrapper and returns what reached the other end.
    async fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut w = ParserRefusals::new(server, counter());
        for c in chunks {
            w.write_all(c).await.unwrap();
        }
        w.shutdown().await.unwrap();
        drop(w);
        let mut out = Vec::new();
        let mut client = client;
        client.read_to_end(&mut out).await.unwrap();
        out
    }

    const REFUSAL: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\ndate: Sun, 06 Dec 2026 06:00:00 GMT\r\n\r\n";

    #[actix_web::test]
    async fn a_parser_refusal_gets_a_problem_body() {
        let out = String::from_utf8(through(&[REFUSAL]).await).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(out.contains("content-type: application/problem+json\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["status"], 431);
        assert_eq!(body["code"], "header_too_large");
    }

    #[actix_web::test]
    async fn responses_with_bodies_and_after_an_upgrade_pass_untouched() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        // After these, a body that looks like a refusal is data, not a response.
        let chunks: [&[u8]; 4] = [ok, &ok[..10], &ok[10..], upgrade];
        let mut expected: Vec<u8> = chunks.concat();
        expected.extend_from_slice(REFUSAL);
        let mut with_lookalike = chunks.to_vec();
        with_lookalike.push(REFUSAL);
        assert_eq!(through(&with_lookalike).await, expected);
    }

    #[actix_web::test]
    async fn a_refusal_after_a_sized_response_on_the_same_connection_is_found() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let out = String::from_utf8(through(&[ok, REFUSAL]).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 431"));
        assert!(out.contains("application/problem+json"), "{out}");
        // Pipelined: both responses in one buffer.
        let out = String::from_utf8(through(&[&[&ok[..], REFUSAL].concat()]).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 431"));
        assert!(out.contains("application/problem+json"), "{out}");
    }

    #[test]
    fn a_body_that_looks_like_a_refusal_is_not_one() {
        let mut w = ParserRefusals::new(tokio::io::sink(), counter());
        w.advance(b"HTTP/1.1 200 OK\r\ncontent-length: 200\r\n\r\n");
        assert_eq!(w.framing, Framing::Body(200));
        let lookalike = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        w.advance(lookalike);
        assert_eq!(w.framing, Framing::Body(200 - lookalike.len() as u64));
    }
}
