//! The HTTP edge: what happens before a request reaches a route, so that every error the API
//! answers — also the ones no handler sees — is `application/problem+json` with a detail.
//!
//! - [`bounded_uri`] (router layer): a request target (path and query) longer than
//!   [`MAX_URI_LEN`] bytes is 414 with a problem body naming the limit.
//! - [`ProblemListener`] (around the listener given to `axum::serve`): hyper answers requests
//!   it cannot parse by itself, with an empty body, and never calls the router: 400 for a
//!   malformed request line or header (a control character in `Authorization`, say), 414 for
//!   a request target beyond its own 64 KiB, 431 for a head beyond its buffer. Its connections
//!   ([`ProblemIo`]) recognise such an automatic answer on its way out — an error status
//!   without `Content-Type` and without a body; every response of the router has a problem
//!   body — and send it with a problem body instead. hyper closes the connection after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{ApiError, PROBLEM_JSON};

/// Longest request target (path and query) the API reads, bytes.
pub const MAX_URI_LEN: usize = 8192;

/// Router layer: refuses a request target longer than [`MAX_URI_LEN`] with 414.
pub async fn bounded_uri(req: Request) -> Result<Request, ApiError> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > MAX_URI_LEN {
        return Err(ApiError::UriTooLong {
            detail: format!(
                "the request target (path and query) is {len} bytes long; the limit is \
                 {MAX_URI_LEN}"
            ),
        });
    }
    Ok(req)
}

/// A listener whose connections answer hyper's automatic errors with problem bodies (see the
/// module documentation): `axum::serve(ProblemListener(listener), app)`.
#[derive(Debug)]
pub struct ProblemListener<L>(pub L);

impl<L: Listener> Listener for ProblemListener<L> {
    type Io = ProblemIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (ProblemIo::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection of [`ProblemListener`].
#[derive(Debug)]
pub struct ProblemIo<T> {
    inner: T,
    /// A rewritten answer still to be written, from `pos`.
    pending: Vec<u8>,
    pos: usize,
}

impl<T> ProblemIo<T> {
    pub fn new(inner: T) -> Self {
        ProblemIo {
            inner,
            pending: Vec::new(),
            pos: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> ProblemIo<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
        }
        self.pending.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = with_problem_body(buf) {
            self.pending = answer;
            self.pos = 0;
            // Written as far as the socket takes it now; flush and shutdown finish it.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Not vectored: hyper then writes a response head in one buffer, which is what
    /// [`with_problem_body`] looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// What hyper's automatic answer to `status` means, for the problem detail.
fn automatic_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => {
            "the request is not valid HTTP/1.1: its request line or a header is malformed \
             (e.g. a control character in a header value such as Authorization)"
        }
        StatusCode::URI_TOO_LONG => {
            "the request target (path and query) is longer than the server reads (64 KiB); \
             the API's limit is 8192 bytes"
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request head (request line and headers) is larger than the server reads, or \
             has too many headers"
        }
        _ => "the request could not be processed",
    }
}

/// `buf` with a problem body if it is exactly an error response head without a body and
/// without a `Content-Type` (hyper's automatic answers); `None` for anything else.
fn with_problem_body(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let status = StatusCode::from_u16(code).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let head = std::str::from_utf8(buf.strip_suffix(b"\r\n\r\n")?).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return None;
            }
            continue;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        headers.push(line);
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": automatic_detail(status),
    })
    .to_string();
    let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_error_heads_are_rewritten() {
        let out =
            with_problem_body(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n")
                .unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("date: x"), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 414);
        assert!(v["detail"].as_str().unwrap().contains("8192"));
        // Not rewritten: success, a problem already, a head with a body, a partial head.
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: 9\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"{\"HTTP/1.1 400\"}",
        ] {
            assert_eq!(with_problem_body(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
