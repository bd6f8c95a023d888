//! The tokio shell of [`RadiusServer`]: binds the ports, feeds datagrams to the core on
//! blocking threads, sends what it returns, and ticks session expiry.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{DropReason, Handled, Listener, RadiusServer};
use crate::clock::Clock;

/// The running server: its bound addresses and tasks. Dropping it stops the listeners too.
#[derive(Debug)]
pub struct RadiusServerHandle {
    pub coa_addr: SocketAddr,
    pub acct_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RadiusServerHandle {
    /// Stops the listeners and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl RadiusServer {
    /// Binds the configured ports and serves until [`RadiusServerHandle::shutdown`]. Each
    /// request is handled on a blocking thread (the sink may write to a store).
    pub async fn spawn(self: Arc<Self>, clock: Clock) -> std::io::Result<RadiusServerHandle> {
        let coa = Arc::new(UdpSocket::bind(self.config.coa_listen).await?);
        let acct = match self.config.acct_listen {
            Some(a) => Some(Arc::new(UdpSocket::bind(a).await?)),
            None => None,
        };
        let (stop, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(serve(
            self.clone(),
            Listener::Coa,
            coa.clone(),
            clock.clone(),
            rx.clone(),
        ))];
        let acct_addr = match &acct {
            Some(s) => {
                tasks.push(tokio::spawn(serve(
                    self.clone(),
                    Listener::Accounting,
                    s.clone(),
                    clock.clone(),
                    rx.clone(),
                )));
                if let Some(t) = self.config.session_timeout_s {
                    tasks.push(tokio::spawn(expire_loop(self.clone(), t, clock, rx)));
                }
                Some(s.local_addr()?)
            }
            None => None,
        };
        Ok(RadiusServerHandle {
            coa_addr: coa.local_addr()?,
            acct_addr,
            stop,
            tasks,
        })
    }
}

/// Calls [`RadiusServer::expire_sessions`] every quarter of the timeout (between 250 ms and
/// 15 s).
async fn expire_loop(
    core: Arc<RadiusServer>,
    timeout_s: u64,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let every = std::time::Duration::from_millis((timeout_s * 250).clamp(250, 15_000));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        let (core, clock) = (core.clone(), clock.clone());
        let ended = tokio::task::spawn_blocking(move || core.expire_sessions(clock())).await;
        match ended {
            Ok(v) if !v.is_empty() => info!(n = v.len(), "silent RADIUS sessions ended"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "session expiry panicked"),
        }
    }
}

async fn serve(
    core: Arc<RadiusServer>,
    listener: Listener,
    sock: Arc<UdpSocket>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            r = stop.changed() => {
                // Shutdown, or the handle was dropped.
                if r.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        let (n, src) = match received {
            Ok(x) => x,
            Err(e) => {
                warn!(?listener, error = %e, "radius recv");
                // Do not spin on a persistent socket error.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = buf[..n].to_vec();
        let (core, sock, clock) = (core.clone(), sock.clone(), clock.clone());
        tokio::spawn(async move {
            let handled =
                tokio::task::spawn_blocking(move || core.handle(listener, clock(), src, &datagram))
                    .await;
            match handled {
                Ok(Handled::Reply(r) | Handled::Resend(r)) => {
                    if let Err(e) = sock.send_to(&r, src).await {
                        warn!(%src, error = %e, "radius send");
                    }
                }
                // Not recorded: the NAS retransmits, and the operator should see why.
                Ok(Handled::Drop(reason @ DropReason::Store(_))) => {
                    warn!(%src, ?listener, %reason, "radius drop");
                }
                Ok(Handled::Drop(reason)) => debug!(%src, ?listener, %reason, "radius drop"),
                Err(e) => warn!(%src, error = %e, "radius handler panicked"),
            }
        });
    }
}
