use std::collections::BTreeMap;

use super::*;
use crate::controller::{ControllerConfig, Disabled, ModemPipeline};
use crate::modem::configfile::{BuildOptions, build, load_and_verify};
use crate::modem::pipeline::{DocsisPipeline, PipelineKeys, PipelineOptions};
use crate::policy::SubscriberKey;
use crate::proto::docsis::Signer;
use crate::provision::QosLevel;
use crate::store::{SqliteStore, Store as _, TempDir};

const T0: u64 = 1_700_000_000_000;

fn cmts() -> CmtsKey {
    CmtsKey::new(b"cmts-secret")
}

fn base() -> QosLevel {
    QosLevel {
        max_down_bps: Some(10_000_000),
        max_up_bps: Some(1_000_000),
        ..QosLevel::default()
    }
}

fn dropped() -> QosLevel {
    QosLevel {
        max_down_bps: Some(80_000_000),
        max_up_bps: Some(8_000_000),
        priority: Some(4),
        ..QosLevel::default()
    }
}

fn file(modem: &str, qos: &QosLevel, signer: Option<&Signer>) -> Vec<u8> {
    let key = cmts();
    build(
        modem,
        qos,
        &BuildOptions {
            cmts_key: &key,
            signer,
            max_cpe: 2,
        },
    )
    .unwrap()
}

/// A controller with modem cm1 over a store in `dir`, with `pipeline`.
fn controller(dir: &Path, pipeline: Box<dyn ModemPipeline>) -> Mutex<Controller> {
    let store = SqliteStore::open(dir.join("shaper.db")).unwrap();
    let (mut ctl, _) = Controller::open(
        ControllerConfig::default(),
        Box::new(store),
        Box::new(Disabled),
        pipeline,
        Vec::new(),
        T0,
    )
    .unwrap();
    let b = ctl
        .propose_binding(
            "cm1",
            vec![SubscriberKey {
                addr: "198.18.0.10".parse().unwrap(),
                len: 32,
            }],
        )
        .unwrap();
    ctl.add_modem(b, base(), T0).unwrap();
    Mutex::new(ctl)
}

fn stored_base(dir: &Path) -> QosLevel {
    let s = SqliteStore::open(dir.join("shaper.db")).unwrap();
    s.modem("cm1").unwrap().unwrap()
}

#[tokio::test]
async fn a_valid_file_becomes_the_base_plan_and_is_delivered() {
    let dir = TempDir::new("watch-valid");
    let mut o = PipelineOptions::new(
        dir.path().join("cfg"),
        dir.path().join("cmts.key"),
        dir.path().join("name.key"),
    );
    o.keep_versions = 2;
    let keys = PipelineKeys {
        cmts: cmts(),
        signer: None,
        trusted: TrustedKeys::new(),
        name_key: [7; 32],
    };
    let p =
        DocsisPipeline::open(&o, keys, BTreeMap::new(), tokio::runtime::Handle::current()).unwrap();
    let shared = p.shared();
    let store = p.store().clone();
    let ctl = controller(dir.path(), Box::new(p));
    // The base plan was delivered as version 1.
    assert_eq!(shared.status("cm1").unwrap().version, 1);
    let incoming = dir.path().join("incoming");
    // The change hook hears of each modem whose base plan a file changed.
    let told: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = told.clone();
    let hook: crate::controller::ChangeHook = Arc::new(move |_: &Controller, modems: &[String]| {
        log.lock().unwrap().extend(modems.iter().cloned());
    });
    let mut w = Watcher::new(&incoming, cmts(), TrustedKeys::new(), shared.clone())
        .unwrap()
        .with_change_hook(Some(hook));
    std::fs::write(
        incoming.join("operator-42.cfg"),
        file("cm1", &dropped(), None),
    )
    .unwrap();
    // First sight: left alone until it is seen unchanged.
    assert!(w.scan(&ctl, T0 + 1).is_empty());
    assert_eq!(ctl.lock().unwrap().engine().base("cm1"), Some(&base()));
    let records = w.scan(&ctl, T0 + 2);
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert!(r.ok, "{r:?}");
    assert_eq!(r.modem.as_deref(), Some("cm1"));
    assert_eq!(ctl.lock().unwrap().engine().base("cm1"), Some(&dropped()));
    assert_eq!(stored_base(dir.path()), dropped());
    assert_eq!(*told.lock().unwrap(), ["cm1"]);
    assert!(incoming.join(APPLIED).join("operator-42.cfg").is_file());
    assert!(!incoming.join("operator-42.cfg").exists());
    // The pipeline generated and delivered the new level as version 2.
    assert_eq!(shared.status("cm1").unwrap().version, 2);
    let c = load_and_verify(&store.path("cm1", 0), &cmts(), &TrustedKeys::new()).unwrap();
    assert_eq!(c.qos, dropped().normalized());
    assert_eq!(shared.files(), records);
    // Nothing more to do.
    assert!(w.scan(&ctl, T0 + 3).is_empty());

    // A file without a modem id in it, named after the modem.
    let plain =
        crate::modem::cli::encode_text("NetworkAccess 1\nMaxCPE 2\n", &cmts(), None).unwrap();
    std::fs::write(incoming.join("cm1.cfg"), plain).unwrap();
    w.scan(&ctl, T0 + 4);
    let records = w.scan(&ctl, T0 + 5);
    assert!(records[0].ok, "{records:?}");
    assert_eq!(stored_base(dir.path()), QosLevel::default());
    assert_eq!(*told.lock().unwrap(), ["cm1", "cm1"]);
    // Each change is in the modem's base-plan audit trail, naming its file.
    let trail = ctl.lock().unwrap().modem_audit("cm1").unwrap();
    let lines: Vec<_> = trail
        .iter()
        .map(|l| (l.at_ms, l.by.to_string(), l.old, l.new))
        .collect();
    assert_eq!(
        lines,
        [
            (T0 + 2, "file:operator-42.cfg".into(), base(), dropped()),
            (
                T0 + 5,
                "file:cm1.cfg".into(),
                dropped(),
                QosLevel::default()
            ),
        ]
    );
}

#[test]
fn invalid_files_are_refused_and_change_nothing() {
    let dir = TempDir::new("watch-invalid");
    let ctl = controller(dir.path(), Box::new(Disabled));
    let incoming = dir.path().join("incoming");
    let shared = Arc::new(PipelineShared::default());
    let signer = Signer::from_seed(&[9; 32]);
    let mut trusted = TrustedKeys::new();
    trusted.add(signer.verifying_key());
    let mut w = Watcher::new(&incoming, cmts(), trusted, shared.clone()).unwrap();

    let mut bad_mic = file("cm1", &dropped(), Some(&signer));
    let n = bad_mic.len();
    bad_mic[n - 6] ^= 1; // inside the CMTS MIC
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad-mic.cfg", bad_mic, "MIC"),
        ("unsigned.cfg", file("cm1", &dropped(), None), "signature"),
        (
            "other-key.cfg",
            file("cm1", &dropped(), Some(&Signer::from_seed(&[8; 32]))),
            "not among the trusted keys",
        ),
        ("garbage.cfg", b"garbage".to_vec(), "MIC"),
        (
            "unknown.cfg",
            file("cm9", &dropped(), Some(&signer)),
            "unknown modem \"cm9\"",
        ),
    ];
    for (name, bytes, _) in &cases {
        std::fs::write(incoming.join(name), bytes).unwrap();
    }
    std::fs::write(incoming.join("notes.txt"), b"ignored").unwrap();
    assert!(w.scan(&ctl, T0 + 1).is_empty());
    let records = w.scan(&ctl, T0 + 2);
    assert_eq!(records.len(), cases.len(), "{records:?}");
    for (name, _, reason) in &cases {
        let r = records.iter().find(|r| r.name == *name).unwrap();
        assert!(!r.ok, "{r:?}");
        assert!(r.reason.contains(reason), "{name}: {}", r.reason);
        assert!(incoming.join(REJECTED).join(name).is_file(), "{name}");
    }
    // The previous configuration stays in force.
    assert_eq!(ctl.lock().unwrap().engine().base("cm1"), Some(&base()));
    assert_eq!(stored_base(dir.path()), base());
    assert_eq!(ctl.lock().unwrap().modem_audit("cm1").unwrap(), []);
    assert!(incoming.join("notes.txt").is_file());
    assert_eq!(shared.files().len(), cases.len());
}

#[test]
fn entries_that_are_not_regular_files_are_refused_unopened_moved_and_recorded() {
    let dir = TempDir::new("watch-special");
    let ctl = controller(dir.path(), Box::new(Disabled));
    let incoming = dir.path().join("incoming");
    let shared = Arc::new(PipelineShared::default());
    let mut w = Watcher::new(&incoming, cmts(), TrustedKeys::new(), shared.clone()).unwrap();
    // A valid file for cm1 outside, and a symbolic link to it: the link is not followed.
    let outside = dir.path().join("outside.cfg");
    std::fs::write(&outside, file("cm1", &dropped(), None)).unwrap();
    std::os::unix::fs::symlink(&outside, incoming.join("link.cfg")).unwrap();
    // A FIFO no one writes to: opening it for reading without O_NONBLOCK would hang the scan.
    let fifo =
        std::ffi::CString::new(incoming.join("pipe.cfg").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(incoming.join("sock.cfg")).unwrap();
    std::fs::create_dir(incoming.join("dir.cfg")).unwrap();
    assert!(w.scan(&ctl, T0 + 1).is_empty());
    let records = w.scan(&ctl, T0 + 2);
    let mut seen: Vec<_> = records
        .iter()
        .map(|r| (r.name.as_str(), r.ok, r.moved_to.clone()))
        .collect();
    seen.sort();
    let rejected = |n: &str| (false, Some(format!("{REJECTED}/{n}")));
    assert_eq!(
        seen,
        ["dir.cfg", "link.cfg", "pipe.cfg", "sock.cfg"].map(|n| (n, rejected(n).0, rejected(n).1))
    );
    for (name, kind) in [
        ("link.cfg", "a symbolic link"),
        ("pipe.cfg", "a FIFO"),
        ("sock.cfg", "a socket"),
        ("dir.cfg", "a directory"),
    ] {
        let r = records.iter().find(|r| r.name == name).unwrap();
        assert!(
            r.reason.starts_with(&format!("{kind}, not a regular file")),
            "{name}: {}",
            r.reason
        );
        assert!(
            std::fs::symlink_metadata(incoming.join(REJECTED).join(name)).is_ok(),
            "{name}"
        );
        assert!(
            std::fs::symlink_metadata(incoming.join(name)).is_err(),
            "{name}"
        );
    }
    // The link was moved, not its target; nothing changed.
    assert!(outside.is_file());
    assert_eq!(ctl.lock().unwrap().engine().base("cm1"), Some(&base()));
    assert_eq!(shared.files().len(), 4);

    // An entry that cannot be moved (rejected/ is no directory now) is recorded once, with
    // why it stayed, and not again on later scans.
    std::fs::rename(incoming.join(REJECTED), dir.path().join("old-rejected")).unwrap();
    std::fs::write(incoming.join(REJECTED), b"not a directory").unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    w.scan(&ctl, T0 + 3);
    let records = w.scan(&ctl, T0 + 4);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].moved_to, None);
    assert!(records[0].reason.contains("left in place"), "{records:?}");
    for t in 5..8 {
        assert!(w.scan(&ctl, T0 + t).is_empty());
    }
    assert_eq!(shared.files().len(), 5);
}

#[test]
fn a_second_rejection_of_a_name_keeps_the_first_and_says_where_it_went() {
    let dir = TempDir::new("watch-unique");
    let ctl = controller(dir.path(), Box::new(Disabled));
    let incoming = dir.path().join("incoming");
    let shared = Arc::new(PipelineShared::default());
    let mut w = Watcher::new(&incoming, cmts(), TrustedKeys::new(), shared).unwrap();
    let rejected = incoming.join(REJECTED);
    let mut drop_and_scan = |bytes: &[u8], now: u64| {
        std::fs::write(incoming.join("x.cfg"), bytes).unwrap();
        assert!(w.scan(&ctl, now).is_empty());
        let r = w.scan(&ctl, now);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(!r[0].ok);
        r[0].moved_to.clone().unwrap()
    };
    assert_eq!(drop_and_scan(b"first", T0), "rejected/x.cfg");
    assert_eq!(
        drop_and_scan(b"second", T0 + 7),
        format!("rejected/x.cfg.{}", T0 + 7)
    );
    assert_eq!(
        drop_and_scan(b"third", T0 + 7),
        format!("rejected/x.cfg.{}-2", T0 + 7)
    );
    assert_eq!(std::fs::read(rejected.join("x.cfg")).unwrap(), b"first");
    assert_eq!(
        std::fs::read(rejected.join(format!("x.cfg.{}", T0 + 7))).unwrap(),
        b"second"
    );
    assert_eq!(
        std::fs::read(rejected.join(format!("x.cfg.{}-2", T0 + 7))).unwrap(),
        b"third"
    );
}

#[test]
fn a_file_over_the_limit_is_refused_with_its_real_size() {
    let dir = TempDir::new("watch-big");
    let ctl = controller(dir.path(), Box::new(Disabled));
    let incoming = dir.path().join("incoming");
    let shared = Arc::new(PipelineShared::default());
    let mut w = Watcher::new(&incoming, cmts(), TrustedKeys::new(), shared).unwrap();
    std::fs::File::create(incoming.join("big.cfg"))
        .unwrap()
        .set_len(50 * 1024 * 1024)
        .unwrap();
    w.scan(&ctl, T0);
    let r = w.scan(&ctl, T0 + 1);
    assert!(r[0].reason.contains("52428800 bytes"), "{}", r[0].reason);
    assert!(!r[0].reason.contains("1048577"), "{}", r[0].reason);
}
