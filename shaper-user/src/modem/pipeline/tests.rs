use std::net::Ipv4Addr;

use super::*;
use crate::clock::Clock;
use crate::modem::configfile::load_and_verify;
use crate::policy::SubscriberKey;
use crate::proto::snmp::{ErrorStatus, Message};
use crate::store::TempDir;

fn keys() -> PipelineKeys {
    PipelineKeys {
        cmts: CmtsKey::new(b"cmts-secret"),
        signer: Some(Signer::from_seed(&[2; 32])),
        trusted: TrustedKeys::new(),
        name_key: [1; 32],
    }
}

fn own() -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(Signer::from_seed(&[2; 32]).verifying_key());
    t
}

fn opts(dir: &Path) -> PipelineOptions {
    let mut o = PipelineOptions::new(dir.join("cfg"), dir.join("cmts.key"), dir.join("name.key"));
    o.keep_versions = 2;
    o
}

fn binding(modem: &str, ip: &str) -> ModemBinding {
    ModemBinding {
        modem: modem.into(),
        addrs: vec![SubscriberKey {
            addr: ip.parse().unwrap(),
            len: 32,
        }],
        up_class: 10,
        down_class: 11,
        htb_minor_down: None,
        htb_minor_up: None,
    }
}

fn level(down: u64) -> QosLevel {
    QosLevel {
        max_down_bps: Some(down),
        max_up_bps: Some(2_000_000),
        priority: Some(3),
        ..QosLevel::default()
    }
}

#[tokio::test]
async fn versions_grow_survive_restarts_and_the_stable_name_holds_the_newest_file() {
    let dir = TempDir::new("pipeline-versions");
    let o = opts(dir.path());
    let rt = tokio::runtime::Handle::current();
    let mut p = DocsisPipeline::open(&o, keys(), BTreeMap::new(), rt.clone()).unwrap();
    let b = binding("cm1", "198.18.0.10");
    p.apply(&b, &level(10_000_000)).unwrap();
    assert_eq!(p.version("cm1"), 1);
    // The same level again (a restart, a retry) writes nothing and reboots nothing.
    p.apply(&b, &level(10_000_000)).unwrap();
    assert_eq!(p.version("cm1"), 1);
    assert_eq!(p.shared().reboots_recorded(), 1);
    p.apply(&b, &level(50_000_000)).unwrap();
    assert_eq!(p.version("cm1"), 2);
    let store = p.store().clone();
    let stable = std::fs::read(store.path("cm1", 0)).unwrap();
    assert_eq!(stable, std::fs::read(store.path("cm1", 2)).unwrap());
    let c = load_and_verify(&store.path("cm1", 0), &keys().cmts, &own()).unwrap();
    assert_eq!(c.qos, level(50_000_000));
    assert_eq!(c.modem.as_deref(), Some("cm1"));
    assert!(c.signed_by.is_some());
    // The names are the store's, and the version-1 file is still there for revert.
    assert!(store.path("cm1", 1).is_file());
    let st = p.shared().status("cm1").unwrap();
    assert_eq!(st.version, 2);
    assert_eq!(st.file, store.file_name("cm1", 0));
    assert_eq!(
        st.version_file.as_deref(),
        Some(store.file_name("cm1", 2).as_str())
    );
    // No reboot method: each new file's reboot is recorded as skipped.
    let r = st.last_reboot.unwrap();
    assert!(r.skipped && r.ok, "{r:?}");
    assert_eq!((r.method, r.attempts, r.version), ("none", 0, 2));
    drop(p);

    // A new pipeline over the same directory goes on from version 2.
    let mut p = DocsisPipeline::open(&o, keys(), BTreeMap::new(), rt).unwrap();
    assert_eq!(p.version("cm1"), 2);
    assert_eq!(p.shared().status("cm1").unwrap().version, 2);
    p.apply(&b, &level(50_000_000)).unwrap();
    assert_eq!(p.version("cm1"), 2, "same level: nothing new");
    p.apply(&b, &level(10_000_000)).unwrap();
    assert_eq!(p.version("cm1"), 3);
    // keep_versions = 2: version 1 is gone, 2 and 3 remain, the stable name too.
    assert!(!store.path("cm1", 1).exists());
    assert!(store.path("cm1", 2).is_file());
    let c = load_and_verify(&store.path("cm1", 0), &keys().cmts, &own()).unwrap();
    assert_eq!(c.qos, level(10_000_000));
    // remove keeps the files.
    p.remove(&b).unwrap();
    assert!(store.path("cm1", 0).is_file());
}

#[tokio::test]
async fn a_level_no_file_can_carry_is_an_error_naming_the_modem() {
    let dir = TempDir::new("pipeline-error");
    let mut p = DocsisPipeline::open(
        &opts(dir.path()),
        keys(),
        BTreeMap::new(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let e = p
        .apply(&binding("cm9", "198.18.0.9"), &level(5_000_000_000))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("modem cm9: modem pipeline: generating"),
        "{text}"
    );
    assert!(text.contains("max_down_bps"), "{text}");
    assert_eq!(p.version("cm9"), 0);
    assert!(!p.store().path("cm9", 0).exists());
    // A corrupt index is refused with its path.
    std::fs::write(dir.path().join("cfg").join(INDEX_FILE), b"{").unwrap();
    let e = DocsisPipeline::open(
        &opts(dir.path()),
        keys(),
        BTreeMap::new(),
        tokio::runtime::Handle::current(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(INDEX_FILE), "{e}");
}

#[tokio::test]
async fn snmp_reboots_are_recorded_with_their_attempts() {
    // An agent on loopback that answers the first SetRequest with noError.
    let agent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = agent.local_addr().unwrap().port();
    let answered = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let (n, peer) = agent.recv_from(&mut buf).await.unwrap();
        let req = Message::decode(&buf[..n]).unwrap();
        let resp = req.response(ErrorStatus::NoError, 0, req.pdu.varbinds.clone());
        agent.send_to(&resp.encode().unwrap(), peer).await.unwrap();
        req.community
    });
    let dir = TempDir::new("pipeline-snmp");
    let mut o = opts(dir.path());
    o.snmp_port = port;
    o.reboot_attempts = 2;
    o.reboot_backoff_ms = 1;
    let snmp = |c: &str| ModemReboot {
        mac: [2, 0, 0x5e, 0, 0, 1],
        method: RebootMethod::Snmp {
            community: c.into(),
        },
    };
    let reboots = BTreeMap::from([("cm1".to_owned(), snmp("private"))]);
    let mut p =
        DocsisPipeline::open(&o, keys(), reboots, tokio::runtime::Handle::current()).unwrap();
    let shared = p.shared();
    // The first file reboots nothing (recorded as skipped, synchronously).
    p.apply(&binding("cm1", "127.0.0.1"), &level(5_000_000))
        .unwrap();
    let r = shared.status("cm1").unwrap().last_reboot.unwrap();
    assert_eq!(
        (r.method, r.skipped, r.attempts, r.version),
        ("snmp", true, 0, 1)
    );
    p.apply(&binding("cm1", "127.0.0.1"), &level(10_000_000))
        .unwrap();
    shared.wait_reboots(2).await;
    assert_eq!(answered.await.unwrap(), b"private");
    let r = shared.status("cm1").unwrap().last_reboot.unwrap();
    assert_eq!(
        r,
        RebootRecord {
            method: "snmp",
            ok: true,
            skipped: false,
            attempts: 1,
            last_error: None,
            at_ms: r.at_ms,
            version: 2,
        }
    );

    // A port nothing listens on: every attempt fails (ICMP port unreachable), all recorded.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    o.snmp_port = closed.local_addr().unwrap().port();
    drop(closed);
    let reboots = BTreeMap::from([("cm1".to_owned(), snmp("private"))]);
    let mut p =
        DocsisPipeline::open(&o, keys(), reboots, tokio::runtime::Handle::current()).unwrap();
    let shared = p.shared();
    p.apply(&binding("cm1", "127.0.0.1"), &level(20_000_000))
        .unwrap();
    shared.wait_reboots(1).await;
    let r = shared.status("cm1").unwrap().last_reboot.unwrap();
    assert!(!r.ok && !r.skipped, "{r:?}");
    assert_eq!((r.method, r.attempts, r.version), ("snmp", 2, 3));
    assert!(r.last_error.unwrap().contains("127.0.0.1"));

    // A modem with no IPv4 address cannot be rebooted: recorded, not attempted.
    let mut b = binding("cm1", "2001:db8::1");
    b.addrs[0].len = 128;
    p.apply(&b, &level(30_000_000)).unwrap();
    shared.wait_reboots(2).await;
    let r = shared.status("cm1").unwrap().last_reboot.unwrap();
    assert_eq!((r.ok, r.attempts), (false, 0));
    assert!(r.last_error.unwrap().contains("no IPv4 address"));
}

#[tokio::test]
async fn the_file_handler_serves_only_config_files_at_the_top() {
    let dir = TempDir::new("pipeline-handler");
    let mut p = DocsisPipeline::open(
        &opts(dir.path()),
        keys(),
        BTreeMap::new(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    p.apply(&binding("cm1", "198.18.0.10"), &level(10_000_000))
        .unwrap();
    let cfg = dir.path().join("cfg");
    std::fs::create_dir_all(cfg.join("incoming")).unwrap();
    std::fs::write(cfg.join("incoming/cm1.cfg"), b"x").unwrap();
    let h = ConfigDirHandler::new(&cfg).unwrap();
    let name = p.store().file_name("cm1", 0);
    assert_eq!(
        &*h.open(&name).unwrap(),
        std::fs::read(cfg.join(&name)).unwrap().as_slice()
    );
    for refused in [
        INDEX_FILE,
        "incoming/cm1.cfg",
        "../cfg/x.cfg",
        ".hidden.cfg",
    ] {
        assert!(
            matches!(h.open(refused), Err(HandlerError::NotFound { .. })),
            "{refused}"
        );
    }
    assert!(server_id_for(Ipv4Addr::LOCALHOST).is_some());
}

#[test]
fn a_late_outcome_for_an_older_file_does_not_hide_the_newer_one() {
    let shared = PipelineShared::default();
    shared.set_file("cm1", 3, "a.cfg".into(), "c.cfg".into());
    let rec = |version, ok| RebootRecord {
        method: "snmp",
        ok,
        skipped: false,
        attempts: 1,
        last_error: None,
        at_ms: 0,
        version,
    };
    shared.record_reboot("cm1", rec(3, true));
    shared.record_reboot("cm1", rec(2, false));
    assert_eq!(
        shared.status("cm1").unwrap().last_reboot,
        Some(rec(3, true))
    );
    assert_eq!(shared.reboots_recorded(), 2);
}

/// A clock the test sets (ms since the Unix epoch).
fn manual_clock(t: u64) -> (Arc<std::sync::atomic::AtomicU64>, Clock) {
    let now = Arc::new(std::sync::atomic::AtomicU64::new(t));
    let n = now.clone();
    (
        now,
        Arc::new(move || n.load(std::sync::atomic::Ordering::SeqCst)),
    )
}

#[tokio::test]
async fn a_failing_file_is_shown_retried_with_backoff_and_cleared_by_a_success() {
    use std::sync::atomic::Ordering::SeqCst;
    const T0: u64 = 1_700_000_000_000;
    let dir = TempDir::new("pipeline-backoff");
    let (logs, _guard) = crate::tftp::testlog::capture();
    let count = |what: &str| logs.text().lines().filter(|l| l.contains(what)).count();
    let (now, clock) = manual_clock(T0);
    let mut p = DocsisPipeline::open(
        &opts(dir.path()),
        keys(),
        BTreeMap::new(),
        tokio::runtime::Handle::current(),
    )
    .unwrap()
    .with_clock(clock);
    let shared = p.shared();
    let b = binding("cm1", "198.18.0.10");
    // 5 Gbit/s: no DOCSIS file can carry it. The modem had no file yet, and still shows it.
    let e1 = p.apply(&b, &level(5_000_000_000)).unwrap_err().to_string();
    let st = shared.status("cm1").unwrap();
    assert!(st.failing, "{st:?}");
    assert_eq!((st.version, st.version_file), (0, None));
    let f = st.file_failure.unwrap();
    assert_eq!(f.stage, Stage::Build);
    assert!(f.last_error.contains("max_down_bps"), "{f:?}");
    assert!(e1.ends_with(&f.last_error), "{e1} / {f:?}");
    assert_eq!((f.failing_since_ms, f.attempts), (T0, 1));
    assert_eq!(f.next_retry_ms, Some(T0 + 1_000));
    assert_eq!(shared.failing_modems(), 1);
    // Before the retry time: the same error (same text), no new attempt.
    now.store(T0 + 999, SeqCst);
    for _ in 0..5 {
        let e = p.apply(&b, &level(5_000_000_000)).unwrap_err().to_string();
        assert_eq!(e, e1);
    }
    assert_eq!(shared.failures_total()[0], (Stage::Build, 1));
    assert_eq!(
        shared.status("cm1").unwrap().file_failure.unwrap().attempts,
        1
    );
    // At the retry time: one attempt, and the next wait doubles (1 s, 2 s, 4 s, …).
    let mut at = T0 + 1_000;
    for (attempts, wait) in [(2, 2_000), (3, 4_000), (4, 8_000)] {
        now.store(at, SeqCst);
        assert_eq!(
            p.apply(&b, &level(5_000_000_000)).unwrap_err().to_string(),
            e1
        );
        let f = shared.status("cm1").unwrap().file_failure.unwrap();
        assert_eq!(
            (f.attempts, f.failing_since_ms, f.next_retry_ms),
            (attempts, T0, Some(at + wait))
        );
        now.store(at + wait - 1, SeqCst);
        p.apply(&b, &level(5_000_000_000)).unwrap_err();
        assert_eq!(
            shared.status("cm1").unwrap().file_failure.unwrap().attempts,
            attempts
        );
        at += wait;
    }
    assert_eq!(shared.failures_total()[0], (Stage::Build, 4));
    // Logged once (WARN); the retries with the same error at DEBUG; the skipped calls not.
    assert_eq!(count("WARN"), 1, "{}", logs.text());
    assert_eq!(count("modem pipeline failing"), 1);
    assert_eq!(count("modem pipeline still failing"), 3);
    // A level that works clears it at once (no waiting for the retry time).
    p.apply(&b, &level(10_000_000)).unwrap();
    let st = shared.status("cm1").unwrap();
    assert!(!st.failing && st.file_failure.is_none(), "{st:?}");
    assert_eq!(st.version, 1);
    assert_eq!(shared.failing_modems(), 0);
    assert_eq!(count("modem pipeline recovered"), 1);

    // Deliver: the stable name is taken by a directory, so the file cannot be written there.
    let stable = p.store().path("cm1", 0);
    std::fs::remove_file(&stable).unwrap();
    std::fs::create_dir(&stable).unwrap();
    now.store(T0 + 100_000, SeqCst);
    p.apply(&b, &level(20_000_000)).unwrap_err();
    let f = shared.status("cm1").unwrap().file_failure.unwrap();
    assert_eq!((f.stage, f.attempts), (Stage::Deliver, 1));
    assert_eq!(f.failing_since_ms, T0 + 100_000);
    assert_eq!(shared.failures_total()[1], (Stage::Deliver, 1));
    assert_eq!(count("modem pipeline failing"), 2, "a new error is logged");
    // Fixed: the next retry (not before) succeeds and clears it.
    std::fs::remove_dir(&stable).unwrap();
    p.apply(&b, &level(20_000_000)).unwrap_err();
    assert!(!stable.exists(), "retried before its time");
    now.store(T0 + 101_000, SeqCst);
    p.apply(&b, &level(20_000_000)).unwrap();
    assert!(stable.is_file());
    let st = shared.status("cm1").unwrap();
    assert!(!st.failing, "{st:?}");
    // The failed attempts recorded nothing in the index: the retry wrote version 2 again.
    assert_eq!(st.version, 2);

    // remove drops a failure.
    now.store(T0 + 200_000, SeqCst);
    p.apply(&b, &level(6_000_000_000)).unwrap_err();
    assert_eq!(shared.failing_modems(), 1);
    p.remove(&b).unwrap();
    assert_eq!(shared.failing_modems(), 0);
}

/// Polls `f` every 10 ms for up to 10 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_failed_reboot_is_retried_with_backoff_until_it_works() {
    let dir = TempDir::new("pipeline-reboot-retry");
    let mut o = opts(dir.path());
    // A port nothing listens on yet: every SET fails at once (ICMP port unreachable).
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    o.snmp_port = closed.local_addr().unwrap().port();
    drop(closed);
    o.reboot_attempts = 1;
    let reboots = BTreeMap::from([(
        "cm1".to_owned(),
        ModemReboot {
            mac: [2, 0, 0x5e, 0, 0, 1],
            method: RebootMethod::Snmp {
                community: "private".into(),
            },
        },
    )]);
    let mut p = DocsisPipeline::open(&o, keys(), reboots, tokio::runtime::Handle::current())
        .unwrap()
        .with_backoff(Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(40),
        });
    let shared = p.shared();
    let b = binding("cm1", "127.0.0.1");
    p.apply(&b, &level(5_000_000)).unwrap(); // version 1: no reboot
    p.apply(&b, &level(10_000_000)).unwrap();
    until("the first reboot fails", || shared.reboots_recorded() >= 2).await;
    let st = shared.status("cm1").unwrap();
    assert!(st.failing, "{st:?}");
    let f = st.reboot_failure.unwrap();
    assert_eq!(f.stage, Stage::Reboot);
    assert!(f.last_error.contains("version 2 by snmp"), "{f:?}");
    assert!(f.next_retry_ms.is_some());
    assert!(st.file_failure.is_none());
    // It keeps retrying on its own (the controller calls nothing).
    until("two retries", || shared.reboots_recorded() >= 4).await;
    let f = shared.status("cm1").unwrap().reboot_failure.unwrap();
    assert!(f.attempts >= 3, "{f:?}");
    assert!(shared.failures_total()[2].1 >= 3);

    // An agent appears on the port: a retry succeeds and clears the failure.
    let agent = tokio::net::UdpSocket::bind(("127.0.0.1", o.snmp_port))
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, peer) = agent.recv_from(&mut buf).await.unwrap();
    let req = Message::decode(&buf[..n]).unwrap();
    let resp = req.response(ErrorStatus::NoError, 0, req.pdu.varbinds.clone());
    agent.send_to(&resp.encode().unwrap(), peer).await.unwrap();
    until("the reboot succeeds", || {
        shared
            .status("cm1")
            .is_some_and(|s| s.last_reboot.is_some_and(|r| r.ok && r.version == 2))
    })
    .await;
    let st = shared.status("cm1").unwrap();
    assert!(!st.failing && st.reboot_failure.is_none(), "{st:?}");
    assert!(st.last_reboot.unwrap().ok);
    assert_eq!(shared.failing_modems(), 0);

    // Failing again (the agent gone); removing the modem stops the retries.
    drop(agent);
    p.apply(&b, &level(20_000_000)).unwrap();
    let n = shared.reboots_recorded() + 2;
    until("the new file's reboot fails", || {
        shared.reboots_recorded() >= n
    })
    .await;
    assert_eq!(shared.failing_modems(), 1);
    p.remove(&b).unwrap();
    assert_eq!(shared.failing_modems(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = shared.reboots_recorded();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.reboots_recorded(), stopped, "retries went on");
    assert_eq!(shared.failing_modems(), 0);
}
