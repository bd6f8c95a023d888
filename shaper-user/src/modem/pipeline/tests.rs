use std::net::Ipv4Addr;

use super::*;
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
