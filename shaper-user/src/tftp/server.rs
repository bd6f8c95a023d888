//! The tokio shell around [`crate::proto::tftp`]: one listening socket, one task and one fresh
//! socket (a new TID, RFC 1350 §4) per transfer.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::handler::{Handler, Shown};
use crate::proto::tftp::{self, Accept, Outcome, Packet, ReadTransfer, packet};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listening address; default `0.0.0.0:69`. On a multi-homed host bind the address modems
    /// use: transfer sockets bind the same IP with port 0, so replies come from it.
    pub bind: SocketAddr,
    /// Protocol limits.
    pub protocol: tftp::Config,
    /// Transfers in flight at once, all clients together. Default 1024.
    pub max_transfers: usize,
    /// Transfers in flight for one client IP. Default 4.
    pub max_per_client: usize,
    /// How long [`ServerHandle::shutdown`] lets running transfers finish before aborting them
    /// with error 0. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 69),
            protocol: tftp::Config::default(),
            max_transfers: 1024,
            max_per_client: 4,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A protocol limit out of its RFC range.
    #[error("invalid TFTP configuration")]
    Config(#[from] tftp::ConfigError),
    /// A zero concurrency limit would refuse everything.
    #[error("max_transfers and max_per_client must be at least 1")]
    ZeroLimit,
    /// Binding the listening socket failed.
    #[error("binding TFTP socket {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Read requests received (including repeats).
    pub requests: AtomicU64,
    /// Transfers whose last block was acknowledged.
    pub completed: AtomicU64,
    /// Transfers that started and ended otherwise (timeout, client error, abort).
    pub failed: AtomicU64,
    /// Requests answered with an error (missing file, traversal, WRQ, bad opcode, bad mode).
    pub refused: AtomicU64,
    /// Requests dropped silently because a concurrency limit was reached.
    pub dropped_busy: AtomicU64,
    /// Datagrams from a wrong TID (answered with error 5).
    pub stray: AtomicU64,
}

/// Per-client bookkeeping shared by the accept loop and the transfer tasks.
#[derive(Default)]
struct Registry {
    next_id: u64,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    by_peer: HashMap<SocketAddr, Active>,
}

struct Active {
    /// Distinguishes this transfer from a later one of the same peer address.
    id: u64,
    request: Box<[u8]>,
    nudge: Arc<Notify>,
    /// Set by the task once the client acknowledged something.
    verified: Arc<AtomicBool>,
}

/// Releases a transfer's slot when its task ends, however it ends.
struct Slot {
    registry: Arc<Mutex<Registry>>,
    peer: SocketAddr,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = self.registry.lock().expect("registry lock");
        r.total -= 1;
        if let Some(n) = r.per_ip.get_mut(&self.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                r.per_ip.remove(&self.peer.ip());
            }
        }
        if r.by_peer.get(&self.peer).is_some_and(|a| a.id == self.id) {
            r.by_peer.remove(&self.peer);
        }
    }
}

/// Receive buffer asked for the listening socket. A reboot storm delivers thousands of RRQs in
/// a burst; the default 208 KiB holds about 200 of them, and a dropped RRQ costs the modem its
/// retransmission timeout. The kernel caps the value at `net.core.rmem_max`.
const LISTEN_RCVBUF: usize = 4 << 20;

fn bind_listener(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(LISTEN_RCVBUF);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// A bound, not yet running TFTP server.
pub struct TftpServer {
    socket: UdpSocket,
    config: ServerConfig,
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
}

/// A running server: its address, counters, and the way to stop it.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TftpServer {
    /// Validates `config` and binds the listening socket (config first, then bind: linkerd's
    /// order, docs/ARCHITECTURE.md §7).
    ///
    /// # Errors
    /// Invalid limits, or the bind failing.
    pub async fn bind(
        config: ServerConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, ServerError> {
        config.protocol.validate()?;
        if config.max_transfers == 0 || config.max_per_client == 0 {
            return Err(ServerError::ZeroLimit);
        }
        let socket = bind_listener(config.bind).map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        Ok(Self {
            socket,
            config,
            handler,
            stats: Arc::default(),
        })
    }

    /// The bound address (port 0 in the config becomes the real port).
    ///
    /// # Panics
    /// If the socket has no local address, which a bound UDP socket always has.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound socket")
    }

    /// Runs the server on the current runtime until [`ServerHandle::shutdown`].
    #[must_use]
    pub fn spawn(self) -> ServerHandle {
        let local_addr = self.local_addr();
        let stats = self.stats.clone();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(async move {
            let mut rx = stop_rx;
            // Either a stop signal or the handle being dropped ends the server.
            let _ = rx.wait_for(|s| *s).await;
        }));
        ServerHandle {
            local_addr,
            stats,
            stop,
            task,
        }
    }

    /// Serves until `shutdown` completes, then drains: no new requests, running transfers get
    /// [`ServerConfig::shutdown_grace`] to finish, the rest are aborted with error 0.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            socket,
            config,
            handler,
            stats,
        } = self;
        let config = Arc::new(config);
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (abort_tx, abort_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut buf = vec![0u8; 2048];
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                r = socket.recv_from(&mut buf) => {
                    let (n, peer) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "tftp: receive failed");
                            continue;
                        }
                    };
                    let bytes = &buf[..n];
                    match tftp::accept(bytes) {
                        Accept::Ignore => {}
                        Accept::Reply(err) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.send_to(&err, peer).await;
                        }
                        Accept::Read(_) => {
                            stats.requests.fetch_add(1, Ordering::Relaxed);
                            let Some((slot, nudge, verified)) = admit(&registry, &config, peer, bytes, &stats)
                            else {
                                continue;
                            };
                            tasks.spawn(transfer(
                                bytes.into(),
                                peer,
                                config.clone(),
                                handler.clone(),
                                stats.clone(),
                                slot,
                                nudge,
                                verified,
                                abort_rx.clone(),
                            ));
                        }
                    }
                }
            }
        }
        drop(socket);
        debug!(running = tasks.len(), "tftp: draining");
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_grace, drain)
            .await
            .is_err()
        {
            let _ = abort_tx.send(true);
            let last = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(Duration::from_secs(1), last)
                .await
                .is_err()
            {
                tasks.abort_all();
            }
        }
    }
}

/// Admits a request under the concurrency limits. A repeat of the request of a running,
/// still unverified transfer from the same TID nudges that transfer instead (the client missed
/// our first reply). Any other request from that TID is a new transfer: the client has moved
/// on (ports are reused quickly under load), and the old transfer ends on its own. Over a limit the request is dropped silently: the
/// client repeats it after its own timeout, which is the back-off a reboot storm needs, and an
/// error would make a cable modem abandon its provisioning cycle and start over with DHCP;
/// silence also gives a spoofed source nothing.
fn admit(
    registry: &Arc<Mutex<Registry>>,
    config: &ServerConfig,
    peer: SocketAddr,
    request: &[u8],
    stats: &Stats,
) -> Option<(Slot, Arc<Notify>, Arc<AtomicBool>)> {
    let mut r = registry.lock().expect("registry lock");
    if let Some(active) = r.by_peer.get(&peer) {
        if *active.request == *request && !active.verified.load(Ordering::Relaxed) {
            active.nudge.notify_one();
            return None;
        }
    }
    let per_ip = r.per_ip.get(&peer.ip()).copied().unwrap_or(0);
    if r.total >= config.max_transfers || per_ip >= config.max_per_client {
        stats.dropped_busy.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    r.total += 1;
    *r.per_ip.entry(peer.ip()).or_default() += 1;
    let nudge = Arc::new(Notify::new());
    let verified = Arc::new(AtomicBool::new(false));
    r.next_id += 1;
    let id = r.next_id;
    r.by_peer.insert(
        peer,
        Active {
            id,
            request: request.into(),
            nudge: nudge.clone(),
            verified: verified.clone(),
        },
    );
    Some((
        Slot {
            registry: registry.clone(),
            peer,
            id,
        },
        nudge,
        verified,
    ))
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// One transfer: fresh socket, open the file, drive the state machine.
#[expect(
    clippy::too_many_arguments,
    reason = "one task's owned inputs, passed once"
)]
async fn transfer(
    request: Box<[u8]>,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    stats: Arc<Stats>,
    _slot: Slot,
    nudge: Arc<Notify>,
    verified: Arc<AtomicBool>,
    mut abort: watch::Receiver<bool>,
) {
    let Ok(Packet::Rrq(req)) = Packet::parse(&request) else {
        return; // accept() checked it
    };
    let socket = match UdpSocket::bind(SocketAddr::new(config.bind.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "tftp: cannot bind a transfer socket");
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let data = match handler.open(req.filename) {
        Ok(d) => d,
        Err(e) => {
            debug!(%peer, file = %Shown(req.filename), error = %e, "tftp: refused");
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            packet::encode_error(e.tftp_code(), e.tftp_message(), request.len(), &mut out);
            let _ = socket.send_to(&out, peer).await;
            return;
        }
    };
    let mut t = ReadTransfer::new(now(), peer, &req, data, &config.protocol);
    let mut out = Vec::with_capacity(t.blksize() + 4);
    let mut inb = [0u8; 1024];
    let mut aborted = false;
    loop {
        while let Some(tx) = t.poll_transmit(&mut out) {
            if let Err(e) = socket.send_to(&out, tx.destination).await {
                debug!(%peer, error = %e, "tftp: send failed");
            }
        }
        if t.is_finished() {
            break;
        }
        let deadline = t.poll_timeout().map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            Instant::from_std,
        );
        tokio::select! {
            r = socket.recv_from(&mut inb) => match r {
                Ok((n, from)) => {
                    if from != peer {
                        stats.stray.fetch_add(1, Ordering::Relaxed);
                    }
                    t.handle(now(), from, &inb[..n]);
                    if t.is_verified() && !verified.load(Ordering::Relaxed) {
                        verified.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => debug!(%peer, error = %e, "tftp: receive failed"),
            },
            () = tokio::time::sleep_until(deadline) => t.handle_timeout(now()),
            () = nudge.notified() => t.handle_duplicate_request(now()),
            _ = abort.changed(), if !aborted => {
                aborted = true;
                t.abort("server shutting down");
            }
        }
    }
    match t.outcome() {
        Some(Outcome::Complete) => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        Some(Outcome::UnsupportedMode | Outcome::OptionsRefused(_)) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        other => {
            debug!(%peer, file = %Shown(req.filename), outcome = ?other, "tftp: transfer failed");
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ServerHandle {
    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters since start.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting requests, waits for the drain described in [`TftpServer::run`] and
    /// returns the final counters.
    pub async fn shutdown(self) -> Arc<Stats> {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            warn!(error = %e, "tftp: server task failed");
        }
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::FsHandler;
    use crate::tftp::client::{ClientConfig, fetch};

    #[tokio::test]
    async fn an_overlong_name_is_refused_and_logged_cut_below_error() {
        let (logs, _guard) = crate::tftp::testlog::capture();
        let dir = std::env::temp_dir().join(format!("shaper-tftp-srv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = TftpServer::bind(
            ServerConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                ..ServerConfig::default()
            },
            Arc::new(FsHandler::new(&dir).unwrap()),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let handle = server.spawn();
        let name = format!("{}.cfg", "a".repeat(400));
        assert!(fetch(addr, &name, ClientConfig::default()).await.is_err());
        let stats = handle.shutdown().await;
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        let text = logs.text();
        assert!(text.contains("tftp: refused"), "{text}");
        assert!(text.contains("… (404 bytes)"), "{text}");
        assert!(!text.contains(&"a".repeat(65)), "{text}");
        assert!(!text.contains("ERROR"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
