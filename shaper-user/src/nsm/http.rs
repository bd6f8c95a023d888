//! A small HTTP/1.1 client for notifications (provider webhooks, remote gateways): one POST per
//! connection over hyper 1's connection API (already in the tree through axum), plain
//! `http://` only. TLS is left to a local proxy (a sidecar or the provider's ingress); a
//! controller talking to its own gateways runs on a management network.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// An `http://host[:port][/path]` URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a notification POST failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("URL {url:?}: {detail}")]
    BadUrl { url: String, detail: &'static str },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Exchange {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
}

impl HttpUrl {
    /// Parses a plain-HTTP URL. `https://` is refused (see the module documentation).
    pub fn parse(url: &str) -> Result<HttpUrl, HttpError> {
        let bad = |detail| HttpError::BadUrl {
            url: url.to_owned(),
            detail,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host and no user info"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if tail.is_empty() => 80,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("bad host or path"));
        }
        Ok(HttpUrl {
            host,
            port,
            path: path.to_owned(),
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// POSTs `body` as JSON with `headers` and returns the response status. The whole exchange
/// (connect, send, read the response) is bounded by `timeout`.
pub async fn post_json(
    url: &HttpUrl,
    headers: &[(&str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, HttpError> {
    let addr = url.addr();
    let exchange = async {
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::net::TcpStream::connect((host, url.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| HttpError::Exchange {
                addr: addr.clone(),
                source,
            })?;
        let conn = tokio::spawn(conn);
        let mut req = hyper::Request::post(&url.path)
            .header(hyper::header::HOST, &addr)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "shaper-nsm");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| HttpError::Exchange {
                addr: addr.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        // Drain the body so the connection ends cleanly; its content is not used.
        let _ = resp.into_body().collect().await;
        conn.abort();
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            addr: url.addr(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_https_is_refused() {
        assert_eq!(
            HttpUrl::parse("http://198.18.0.1:8080/hook?x=1").unwrap(),
            HttpUrl {
                host: "198.18.0.1".into(),
                port: 8080,
                path: "/hook?x=1".into()
            }
        );
        assert_eq!(HttpUrl::parse("http://gw1").unwrap().port, 80);
        assert_eq!(
            HttpUrl::parse("http://[2001:db8::1]:81/").unwrap().host,
            "[2001:db8::1]"
        );
        assert!(matches!(
            HttpUrl::parse("https://x/"),
            Err(HttpError::BadUrl { .. })
        ));
        assert!(HttpUrl::parse("http://a:b/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
    }
}
