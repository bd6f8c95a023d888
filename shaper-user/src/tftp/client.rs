//! The TFTP client's tokio shell: one fetch on its own UDP socket (its transfer identifier).
//! The modem emulator fetches its configuration file with it, as a cable modem does after a
//! reboot.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::proto::tftp::client::ReadClient;
pub use crate::proto::tftp::client::{ClientConfig, ClientError};

/// Why a fetch did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("TFTP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("fetching {file:?} from {server}: {source}")]
    Transfer {
        file: String,
        server: SocketAddr,
        #[source]
        source: ClientError,
    },
}

/// Reads `filename` from the TFTP server at `server`.
pub async fn fetch(
    server: SocketAddr,
    filename: &str,
    cfg: ClientConfig,
) -> Result<Vec<u8>, FetchError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    let mut c = ReadClient::new(Instant::now(), server, filename, cfg);
    let mut buf = vec![0u8; 65536 + 4];
    loop {
        while let Some(t) = c.poll_transmit() {
            sock.send_to(&t.bytes, t.to).await?;
        }
        if let Some(r) = c.result() {
            return r.clone().map_err(|source| FetchError::Transfer {
                file: filename.to_string(),
                server,
                source,
            });
        }
        let deadline = c.poll_timeout().unwrap_or_else(Instant::now);
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => c.handle(Instant::now(), from, &buf[..n]),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => c.handle_timeout(Instant::now()),
        }
    }
}
