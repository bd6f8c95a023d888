//! A small blocking HTTP/1.1 client for the shaper API (`http://host:port` only), used by the
//! `shaper provision`, `events` and `status` commands. One request per connection
//! (`Connection: close`); JSON bodies; `application/problem+json` errors become
//! [`ClientError::Api`].

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use serde_json::Value;

/// Connect, read and write timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad API URL {0:?}: only http://host:port is supported")]
    Url(String),
    #[error("connecting to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("talking to {addr}: {error}")]
    Io { addr: String, error: std::io::Error },
    #[error("malformed HTTP response: {0}")]
    Protocol(String),
    /// An error status from the API: `403 Forbidden: <detail> (field: <field>)`.
    #[error("{status} {title}: {detail}{}", field.as_ref().map_or(String::new(), |f| format!(" (field: {f})")))]
    Api {
        status: u16,
        title: String,
        detail: String,
        field: Option<String>,
    },
}

/// A response with a success status.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// The API client.
#[derive(Clone, Debug)]
pub struct Client {
    host: String,
    port: u16,
    token: Option<String>,
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

impl Client {
    /// A client for `url` (`http://host:port`, optionally with a trailing `/`).
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = || ClientError::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_owned(), p.parse().map_err(|_| bad())?)
            }
            _ => (rest.to_owned(), 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Client { host, port, token })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path, None, &[])
    }

    /// `method path` with a JSON body and extra headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let addr = self.authority();
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let sock = (host, self.port)
            .to_socket_addrs()
            .map_err(|error| ClientError::Connect {
                addr: addr.clone(),
                error,
            })?
            .next()
            .ok_or_else(|| ClientError::Connect {
                addr: addr.clone(),
                error: std::io::Error::other("no address"),
            })?;
        let mut stream =
            TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|error| ClientError::Connect {
                addr: addr.clone(),
                error,
            })?;
        let io = |error| ClientError::Io {
            addr: addr.clone(),
            error,
        };
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let body = body.map(|b| b.to_string());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: shaper-cli\r\n"
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => req.push_str("Content-Length: 0\r\n\r\n"),
        }
        stream.write_all(req.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        let (status, body) = parse_response(&raw)?;
        let json: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ClientError::Protocol(format!("status {status}: body is not JSON: {e}"))
            })?
        };
        if (200..300).contains(&status) {
            return Ok(Response { status, body: json });
        }
        let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(ClientError::Api {
            status,
            title: reason(status).to_owned(),
            detail: text("detail")
                .or_else(|| text("title"))
                .unwrap_or_else(|| "(no detail)".into()),
            field: text("field"),
        })
    }
}

/// Splits a full HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |m: &str| ClientError::Protocol(m.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status code"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| bad("bad Content-Length"))?);
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Client::new("http://127.0.0.1:8080/", None).unwrap();
        assert_eq!(c.authority(), "127.0.0.1:8080");
        assert_eq!(Client::new("http://h", None).unwrap().port, 80);
        assert!(Client::new("https://h:1", None).is_err());
        assert!(Client::new("http://h:1/x", None).is_err());
        assert!(Client::new("http://h:x", None).is_err());
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (201, b"{}".to_vec()));
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, b"abcd".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn api_error_message() {
        let e = ClientError::Api {
            status: 403,
            title: "Forbidden".into(),
            detail: "no".into(),
            field: Some("modem".into()),
        };
        assert_eq!(e.to_string(), "403 Forbidden: no (field: modem)");
    }
}
