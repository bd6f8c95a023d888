//! RADIUS against the reference peers (docs/PROTOCOLS.md §4), on 127.0.0.1 inside a fresh network
//! namespace per test:
//!
//! - radclient (freeradius-utils) → our CoA server: Mikrotik-Rate-Limit with
//!   Message-Authenticator is ACKed (radclient checks our Response Authenticator and
//!   Message-Authenticator) and the controller, through `ControllerSink`, has the new level;
//!   a wrong secret gets no answer; an unknown session gets a NAK with Error-Cause 503.
//! - radclient → our accounting server: Start / Interim-Update / Stop update the session table
//!   and each gets an Accounting-Response.
//! - our CoA client → FreeRADIUS 3.2 as a CoA receiver (`listen { type = coa }`, client with
//!   `require_message_authenticator = yes`, which checks both authenticators): ACK; a NAK with
//!   Error-Cause 503 recorded in the outcome; Disconnect ACK; a wrong secret times out.
//!
//! Needs root (`ip netns`) and the Debian packages freeradius-utils and freeradius
//! (`cargo xtask deps`). Run: `cargo test -p shaper-user --test radius_peers -- --nocapture`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shaper::api::{Clock, system_now_ms};
use shaper::controller::{Controller, ControllerConfig, Disabled};
use shaper::lab::{NetNs, in_netns};
use shaper::notify::RateProfile;
use shaper::notify::coa_server::NasIdentity;
use shaper::notify::{
    ClientConfig, CoaClient, CoaError, ControllerSink, NasTarget, RadiusServer, RadiusServerConfig,
    RetryPolicy,
};
use shaper::proto::radius::{Code, ErrorCause};
use shaper::provision::QosLevel;
use shaper::sessions::{SessionSelector, SessionStore, SessionTable};
use shaper::store::SqliteStore;
use tokio::sync::oneshot;

use common::radius::{freeradius_conf, require_tools};

const SECRET: &str = "s3cr3t-peers";
const COA_PORT: u16 = 13799;
const ACCT_PORT: u16 = 11813;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shaper-radius-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `radclient -x` in the namespace against our server on `127.0.0.1:port`.
fn radclient(ns: &NetNs, dir: &Path, port: u16, kind: &str, secret: &str, attrs: &str) -> String {
    common::radius::radclient(ns, dir, &format!("127.0.0.1:{port}"), kind, secret, attrs)
}

/// Our server, running on a tokio runtime in a thread inside the namespace.
struct ServerInNs {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerInNs {
    fn start(ns: &NetNs, server: Arc<RadiusServer>) -> ServerInNs {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let name = ns.name().to_owned();
        let thread = std::thread::spawn(move || {
            in_netns(&name, move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let clock: Clock = Arc::new(system_now_ms);
                    let h = server.spawn(clock).await.unwrap();
                    ready_tx.send((h.coa_addr, h.acct_addr)).unwrap();
                    let _ = stop_rx.await;
                    h.shutdown().await;
                });
            })
            .unwrap();
        });
        let (coa, acct) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server ready");
        println!("our server: coa {coa}, accounting {acct:?}");
        ServerInNs {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerInNs {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server_config(require_ma: bool) -> RadiusServerConfig {
    RadiusServerConfig {
        coa_listen: SocketAddr::from(([127, 0, 0, 1], COA_PORT)),
        acct_listen: Some(SocketAddr::from(([127, 0, 0, 1], ACCT_PORT))),
        clients: vec![ClientConfig {
            addr: "127.0.0.1".parse().unwrap(),
            secret: SECRET.into(),
            require_message_authenticator: require_ma,
            name: Some("radclient".into()),
        }],
        gateway: Some("gw-test".into()),
        nas_identity: Some(NasIdentity::default()),
        ..RadiusServerConfig::default()
    }
}

fn controller(dir: &Path) -> Arc<Mutex<Controller>> {
    let now = system_now_ms();
    let store = SqliteStore::open(dir.join("shaper.db")).unwrap();
    let (mut c, _) = Controller::open(
        ControllerConfig::default(),
        Box::new(store),
        Box::new(Disabled),
        Box::new(Disabled),
        Vec::new(),
        now,
    )
    .unwrap();
    let b = c.propose_binding("cm1", Vec::new()).unwrap();
    let base = QosLevel {
        max_down_bps: Some(10_000_000),
        max_up_bps: Some(2_000_000),
        ..QosLevel::default()
    };
    c.add_modem(b, base, now).unwrap();
    Arc::new(Mutex::new(c))
}

const START: &str = "Acct-Status-Type = Start\nAcct-Session-Id = \"sess-cm1\"\nUser-Name = \"cm1\"\nFramed-IP-Address = 198.18.0.10\nNAS-IP-Address = 198.18.1.1\nNAS-Identifier = \"bras1\"\nDelegated-IPv6-Prefix = 2001:db8:100::/56\n";

#[test]
fn radclient_coa_and_accounting_against_our_server() {
    require_tools();
    let ns = NetNs::unique("rad-srv").unwrap();
    let dir = tmpdir("srv");
    let table = Arc::new(SessionTable::new());
    let ctl = controller(&dir);
    let clock: Clock = Arc::new(system_now_ms);
    let sink = Arc::new(ControllerSink::new(ctl.clone(), table.clone(), clock));
    let server = Arc::new(RadiusServer::new(server_config(true), sink, table.clone()).unwrap());
    let _running = ServerInNs::start(&ns, server.clone());

    // Accounting Start → session recorded → Accounting-Response.
    let out = radclient(&ns, &dir, ACCT_PORT, "acct", SECRET, START);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let s = table.all().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].subscriber.as_deref(), Some("cm1"));
    assert_eq!(s[0].framed_ipv4, Some("198.18.0.10".parse().unwrap()));
    assert_eq!(s[0].nas_identifier.as_deref(), Some("bras1"));
    assert_eq!(s[0].gateway.as_deref(), Some("gw-test"));

    // Interim-Update with a new address.
    let interim = START
        .replace("Start", "Interim-Update")
        .replace("198.18.0.10", "198.18.0.20");
    let out = radclient(&ns, &dir, ACCT_PORT, "acct", SECRET, &interim);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let by_ip = SessionSelector {
        framed_ipv4: Some("198.18.0.20".parse().unwrap()),
        ..SessionSelector::default()
    };
    assert_eq!(table.find(&by_ip).unwrap().len(), 1);

    // CoA by Framed-IP-Address with Mikrotik-Rate-Limit and Message-Authenticator → ACK; the
    // controller's level for cm1 is the new one (rx = client upload).
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "coa",
        SECRET,
        "Framed-IP-Address = 198.18.0.20\nMikrotik-Rate-Limit = \"5M/40M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-ACK"), "{out}");
    let eff = ctl.lock().unwrap().effective("cm1").unwrap();
    assert_eq!(eff.max_down_bps, Some(40_000_000));
    assert_eq!(eff.max_up_bps, Some(5_000_000));

    // Plain profile (Filter-Id down/up kbit/s) by User-Name replaces the CoA grant.
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "coa",
        SECRET,
        "User-Name = \"cm1\"\nFilter-Id = \"80000/8000\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-ACK"), "{out}");
    let eff = ctl.lock().unwrap().effective("cm1").unwrap();
    assert_eq!(
        (eff.max_down_bps, eff.max_up_bps),
        (Some(80_000_000), Some(8_000_000))
    );

    // Unknown session → NAK with Error-Cause Session-Context-Not-Found.
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "coa",
        SECRET,
        "User-Name = \"nobody\"\nMikrotik-Rate-Limit = \"1M/1M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-NAK"), "{out}");
    assert!(
        out.contains("Error-Cause = Session-Context-Not-Found"),
        "{out}"
    );

    // Wrong secret → we drop it, radclient gets no reply.
    let naks_before = server
        .stats()
        .naks
        .load(std::sync::atomic::Ordering::Relaxed);
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "coa",
        "wrong-secret",
        "User-Name = \"cm1\"\nMikrotik-Rate-Limit = \"1M/1M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("No reply from server"), "{out}");
    assert!(!out.contains("Received CoA"), "{out}");
    assert_eq!(
        server
            .stats()
            .naks
            .load(std::sync::atomic::Ordering::Relaxed),
        naks_before
    );

    // Without Message-Authenticator while the client requires it → dropped, no reply.
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "coa",
        SECRET,
        "User-Name = \"cm1\"\nMikrotik-Rate-Limit = \"1M/1M\"\n",
    );
    assert!(out.contains("No reply from server"), "{out}");

    // Disconnect → ACK; the CoA grant is cancelled (back to the plan) and the session gone.
    let out = radclient(
        &ns,
        &dir,
        COA_PORT,
        "disconnect",
        SECRET,
        "Acct-Session-Id = \"sess-cm1\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received Disconnect-ACK"), "{out}");
    let eff = ctl.lock().unwrap().effective("cm1").unwrap();
    assert_eq!(eff.max_down_bps, Some(10_000_000));
    assert!(table.all().unwrap().is_empty());

    // Stop for a session the table no longer has: still recorded and answered.
    let stop = START.replace("Start", "Stop");
    let out = radclient(&ns, &dir, ACCT_PORT, "acct", SECRET, &stop);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn our_coa_client_against_freeradius() {
    require_tools();
    let ns = NetNs::unique("rad-cli").unwrap();
    let dir = tmpdir("cli");
    let port = 23799;
    freeradius_conf(&dir, port, SECRET);
    let fr = ns
        .spawn([
            "freeradius",
            "-X",
            "-d",
            dir.to_str().unwrap(),
            "-l",
            "stdout",
        ])
        .unwrap();
    let name = ns.name().to_owned();
    let results = in_netns(&name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // FreeRADIUS takes a moment to start: the first request retries until it is up.
            let patient = RetryPolicy {
                initial_timeout: Duration::from_millis(300),
                max_timeout: Duration::from_millis(300),
                attempts: 30,
            };
            let client = CoaClient::bind("127.0.0.1:0".parse().unwrap(), patient)
                .await
                .unwrap();
            let nas = NasTarget {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                secret: SECRET.into(),
                profile: RateProfile::Mikrotik,
                message_authenticator: true,
                require_response_message_authenticator: false,
            };
            let qos = QosLevel {
                max_up_bps: Some(5_000_000),
                max_down_bps: Some(40_000_000),
                ..QosLevel::default()
            };
            let alice = SessionSelector {
                user_name: Some("alice".into()),
                acct_session_id: Some("sess-1".into()),
                ..SessionSelector::default()
            };
            let ack = client.coa(&nas, &alice, &qos).await;
            let nobody = SessionSelector {
                user_name: Some("nobody".into()),
                ..SessionSelector::default()
            };
            let nak = client.coa(&nas, &nobody, &qos).await;
            let disc = client.disconnect(&nas, &alice).await;
            // Every profile's attributes pass FreeRADIUS's authenticator checks.
            let mut profiles = Vec::new();
            for profile in [
                RateProfile::Plain,
                RateProfile::Cisco,
                RateProfile::Juniper {
                    service: "svc-rate".into(),
                },
            ] {
                let n = NasTarget {
                    profile,
                    ..nas.clone()
                };
                profiles.push(client.coa(&n, &alice, &qos).await);
            }
            let quick = CoaClient::bind(
                "127.0.0.1:0".parse().unwrap(),
                RetryPolicy {
                    initial_timeout: Duration::from_millis(200),
                    max_timeout: Duration::from_millis(400),
                    attempts: 3,
                },
            )
            .await
            .unwrap();
            let wrong = NasTarget {
                secret: "wrong".into(),
                ..nas.clone()
            };
            let timeout = quick.coa(&wrong, &alice, &qos).await;
            (ack, nak, disc, profiles, timeout)
        })
    })
    .unwrap();
    let log = fr.kill();
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    let (ack, nak, disc, profiles, timeout) = results;

    let ack = ack.unwrap_or_else(|e| panic!("CoA to FreeRADIUS: {e}\n{log}"));
    assert_eq!(ack.code, Some(Code::CoaAck));
    println!("ACK outcome: {ack:?}");
    match nak {
        Err(CoaError::Nak { code, outcome }) => {
            assert_eq!(code, Code::CoaNak);
            assert_eq!(
                outcome.error_cause,
                Some(ErrorCause::SessionContextNotFound)
            );
            assert_eq!(outcome.attempts, 1);
            println!("NAK outcome: {outcome:?}");
        }
        other => panic!("expected a NAK, got {other:?}\n{log}"),
    }
    assert_eq!(disc.unwrap().code, Some(Code::DisconnectAck));
    for p in profiles {
        assert_eq!(p.unwrap().code, Some(Code::CoaAck));
    }
    match timeout {
        Err(CoaError::Timeout { outcome }) => {
            assert_eq!(outcome.attempts, 3);
            assert_eq!(outcome.code, None);
        }
        other => panic!("wrong secret: expected a timeout, got {other:?}"),
    }
    // FreeRADIUS saw what we sent, rate attribute included.
    assert!(log.contains("Mikrotik-Rate-Limit = \"5M/40M\""), "{log}");
    assert!(log.contains("Message-Authenticator"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
