//! One HTTP/1.1 exchange with a `shaper run` API inside a lab namespace, for tests and the demo
//! (the CLI's `client` speaks to an address in the caller's own namespace).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use super::in_netns;

/// `method path` with a bearer token and an optional JSON body to the API on the loopback of
/// namespace `ns`: (status, body).
pub fn http(
    ns: &str,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = in_netns(ns, || TcpStream::connect(("127.0.0.1", port)))
        .map_err(|e| std::io::Error::other(format!("entering namespace {ns}: {e}")))??;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
