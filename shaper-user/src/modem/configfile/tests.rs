use std::path::PathBuf;

use super::*;
use crate::proto::docsis::{CM_MIC, ConfigFile, Mic, TlvPath, scan};

fn key() -> CmtsKey {
    CmtsKey::new(b"shared-secret")
}

fn signer(n: u8) -> Signer {
    Signer::from_seed(&[n; 32])
}

fn trusted(s: &[&Signer]) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    for k in s {
        t.add(k.verifying_key());
    }
    t
}

fn plan() -> QosLevel {
    QosLevel {
        max_up_bps: Some(20_000_000),
        max_down_bps: Some(200_000_000),
        committed_up_bps: Some(2_000_000),
        committed_down_bps: Some(50_000_000),
        burst_bytes: Some(30_000),
        priority: Some(5),
        mtu: Some(1500),
        targets: ServiceTargets {
            availability_ppm: Some(999_900),
            error_rate_ppm: Some(10),
            loss_ppm: Some(100),
            setup_time_ms: Some(2_000),
            repair_time_ms: Some(14_400_000),
        },
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("shaper-configfile-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts<'a>(k: &'a CmtsKey, s: Option<&'a Signer>) -> BuildOptions<'a> {
    BuildOptions {
        cmts_key: k,
        signer: s,
        max_cpe: 4,
    }
}

#[test]
fn built_file_loads_back_to_the_same_qos() {
    let dir = TempDir::new("roundtrip");
    let (k, s) = (key(), signer(1));
    let bytes = build("cm-0001", &plan(), &opts(&k, Some(&s))).unwrap();
    assert_eq!(bytes.len() % 4, 0);
    let path = dir.0.join("f.cfg");
    write_atomic(&path, &bytes).unwrap();
    let got = load_and_verify(&path, &k, &trusted(&[&s])).unwrap();
    assert_eq!(
        got,
        ModemConfig {
            modem: Some("cm-0001".into()),
            qos: plan(),
            network_access: Some(true),
            max_cpe: Some(4),
            signed_by: Some(s.key_id()),
            extra_flows: 0,
        }
    );
    // The file holds what DOCSIS parsers read: flows with ref, type 7, rates.
    let f = ConfigFile::decode(&bytes).unwrap();
    let flows = f.service_flows().unwrap();
    assert_eq!(flows[0].reference, Some(US_FLOW_REF));
    assert_eq!(flows[0].qos_param_set_type, Some(7));
    assert_eq!(flows[0].max_sustained_rate, Some(20_000_000));
    assert_eq!(flows[0].min_reserved_rate, Some(2_000_000));
    assert_eq!(flows[0].scheduling_type, Some(2));
    assert_eq!(flows[1].reference, Some(DS_FLOW_REF));
    assert_eq!(flows[1].max_sustained_rate, Some(200_000_000));
    assert_eq!(flows[1].max_traffic_burst, Some(30_000));
    assert_eq!(flows[1].traffic_priority, Some(5));
    // Without trusted keys the signature is not checked.
    assert_eq!(
        load_and_verify(&path, &k, &TrustedKeys::new())
            .unwrap()
            .signed_by,
        None
    );
}

#[test]
fn sparse_levels_round_trip_too() {
    let k = key();
    for q in [
        QosLevel::default(),
        QosLevel {
            max_down_bps: Some(MAX_DOCSIS_RATE_BPS),
            ..QosLevel::default()
        },
        QosLevel {
            committed_up_bps: Some(8),
            ..QosLevel::default()
        },
    ] {
        let bytes = build("m", &q, &opts(&k, None)).unwrap();
        let got = verify(&bytes, &k, &TrustedKeys::new()).unwrap();
        assert_eq!(got.qos, q);
        assert_eq!(got.modem.as_deref(), Some("m"));
    }
}

#[test]
fn rates_above_u32_are_an_error_naming_the_field() {
    let q = QosLevel {
        max_down_bps: Some(MAX_DOCSIS_RATE_BPS + 1),
        ..QosLevel::default()
    };
    // The level's own bounds are the DOCSIS ones (provision::MAX_RATE_BPS), so validation
    // refuses it first, naming the field.
    let e = build("m", &q, &opts(&key(), None)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigFileError::Qos(crate::provision::QosError::RateTooHigh {
                field: "max_down_bps",
                value: 4_294_967_296
            })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("4294967295"), "{e}");
}

#[test]
fn invalid_input_is_refused() {
    let bad = QosLevel {
        priority: Some(9),
        ..QosLevel::default()
    };
    assert!(matches!(
        build("m", &bad, &opts(&key(), None)),
        Err(ConfigFileError::Qos(QosError::PriorityOutOfRange(9)))
    ));
    assert!(matches!(
        build("", &plan(), &opts(&key(), None)),
        Err(ConfigFileError::ModemIdLength { len: 0 })
    ));
    assert!(matches!(
        build(&"x".repeat(201), &plan(), &opts(&key(), None)),
        Err(ConfigFileError::ModemIdLength { len: 201 })
    ));
}

#[test]
fn tampered_unsigned_and_foreign_files_are_refused() {
    let (k, s) = (key(), signer(2));
    let t = trusted(&[&s]);
    let good = build("cm", &plan(), &opts(&k, Some(&s))).unwrap();
    // A changed rate byte: the CM MIC catches it first.
    let mut b = good.clone();
    let at = b.windows(6).position(|w| w[..2] == [8, 4]).unwrap();
    b[at + 5] ^= 1;
    assert!(matches!(
        verify(&b, &k, &t),
        Err(ConfigFileError::Mic(VerifyError::Mismatch {
            mic: Mic::Cm,
            ..
        }))
    ));
    // The wrong shared secret: the CMTS MIC.
    let e = verify(&good, &CmtsKey::new(b"other"), &t).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigFileError::Mic(VerifyError::Mismatch { mic: Mic::Cmts, .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("CMTS MIC"), "{e}");
    // Signed with a key that is not trusted.
    let other = build("cm", &plan(), &opts(&k, Some(&signer(3)))).unwrap();
    assert!(matches!(
        verify(&other, &k, &t),
        Err(ConfigFileError::Signature(
            SignatureError::UnknownKey { .. }
        ))
    ));
    // Unsigned, while signatures are required.
    let unsigned = build("cm", &plan(), &opts(&k, None)).unwrap();
    let e = verify(&unsigned, &k, &t).unwrap_err();
    assert!(
        matches!(e, ConfigFileError::Signature(SignatureError::Missing)),
        "{e:?}"
    );
    // Malformed bytes.
    assert!(matches!(
        verify(&good[..good.len() - 30], &k, &t),
        Err(ConfigFileError::Mic(VerifyError::Malformed(_)))
    ));
}

#[test]
fn operator_files_are_read_conservatively() {
    let k = key();
    // Vector B style DOCSIS 1.0 file: class of service only.
    let v1 = crate::proto::docsis::build(
        &[
            Tlv::network_access(true),
            Tlv::max_cpe(3),
            ClassOfService {
                class_id: 1,
                max_rate_down: Some(20_000_000),
                max_rate_up: Some(10_000_000),
                privacy_enable: Some(false),
                ..ClassOfService::default()
            }
            .to_tlv(),
        ],
        &k,
        None,
    )
    .unwrap();
    let c = verify(&v1, &k, &TrustedKeys::new()).unwrap();
    assert_eq!(c.qos.max_down_bps, Some(20_000_000));
    assert_eq!(c.qos.max_up_bps, Some(10_000_000));
    assert_eq!(c.modem, None);
    // Two flows per direction, bursts and priorities differing, rate 0 = unset.
    let flow = |d, burst, prio, max| {
        let mut f = ServiceFlow::new(d);
        f.max_traffic_burst = Some(burst);
        f.traffic_priority = Some(prio);
        f.max_sustained_rate = Some(max);
        f.to_tlv().unwrap()
    };
    let bytes = crate::proto::docsis::build(
        &[
            flow(Direction::Up, 20_000, 3, 5_000_000),
            flow(Direction::Down, 10_000, 6, 0),
            flow(Direction::Down, 99_000, 7, 1_000),
        ],
        &k,
        None,
    )
    .unwrap();
    let c = verify(&bytes, &k, &TrustedKeys::new()).unwrap();
    assert_eq!(c.qos.burst_bytes, Some(10_000));
    assert_eq!(c.qos.priority, Some(3));
    assert_eq!(c.qos.max_up_bps, Some(5_000_000));
    assert_eq!(c.qos.max_down_bps, None);
    assert_eq!(c.extra_flows, 1);
    assert_eq!(c.network_access, None);
    // A file granting an inconsistent level is refused with the field named.
    let mut us = ServiceFlow::new(Direction::Up);
    us.max_sustained_rate = Some(1_000_000);
    us.min_reserved_rate = Some(2_000_000);
    let bytes = crate::proto::docsis::build(&[us.to_tlv().unwrap()], &k, None).unwrap();
    let e = verify(&bytes, &k, &TrustedKeys::new()).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigFileError::Qos(QosError::CommittedAboveMax {
                field: "committed_up_bps",
                ..
            })
        ),
        "{e:?}"
    );
    // A bad targets block names the sub-TLV.
    let bytes = crate::proto::docsis::build(
        &[shaper_block(vec![Tlv::leaf(Some(43), SUB_MTU, vec![1])])],
        &k,
        None,
    )
    .unwrap();
    let e = verify(&bytes, &k, &TrustedKeys::new()).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigFileError::Field(FieldError::Length { path, len: 1, .. })
                if path == TlvPath::new(Some(43), SUB_MTU)
        ),
        "{e:?}"
    );
}

#[test]
fn signature_sits_just_before_the_cm_mic() {
    let (k, s) = (key(), signer(4));
    let bytes = build("cm", &plan(), &opts(&k, Some(&s))).unwrap();
    let sc = scan(&bytes).unwrap();
    let n = sc.spans.len();
    assert_eq!(sc.spans[n - 2].code, CM_MIC);
    let sig = crate::proto::docsis::decode_span(&bytes, &sc.spans[n - 3]).unwrap();
    assert!(is_signature_block(&sig));
}

#[test]
fn store_names_are_stable_unguessable_and_versioned() {
    let dir = TempDir::new("store");
    let st = ConfigStore::new(&dir.0, [7; 32], 2);
    let n1 = st.file_name("cm-1", 1);
    assert_eq!(n1, st.file_name("cm-1", 1));
    assert_eq!(n1.len(), 32 + 4);
    assert!(n1.ends_with(".cfg"));
    assert!(n1[..32].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(n1, st.file_name("cm-1", 2));
    assert_ne!(n1, st.file_name("cm-2", 1));
    assert_ne!(
        n1,
        ConfigStore::new(&dir.0, [8; 32], 2).file_name("cm-1", 1)
    );
    // Length prefix: ("a", v) and ("", …) cannot collide by concatenation.
    assert_ne!(st.file_name("cm-11", 1), st.file_name("cm-1", 1));
    assert!(!format!("{st:?}").contains("7, 7"));

    let k = key();
    for v in 1..=4u64 {
        let q = QosLevel {
            max_down_bps: Some(v * 1_000_000),
            ..QosLevel::default()
        };
        let bytes = build("cm-1", &q, &opts(&k, None)).unwrap();
        let p = st.write("cm-1", v, &bytes).unwrap();
        assert_eq!(p, st.path("cm-1", v));
    }
    // keep = 2: versions 3 and 4 remain, 1 and 2 are gone; no temporary files left.
    let mut names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want = vec![st.file_name("cm-1", 3), st.file_name("cm-1", 4)];
    want.sort();
    assert_eq!(names, want);
    // The previous version is there for a revert, and says what it said.
    let prev = load_and_verify(&st.path("cm-1", 3), &k, &TrustedKeys::new()).unwrap();
    assert_eq!(prev.qos.max_down_bps, Some(3_000_000));
}

#[test]
fn load_errors_name_the_path() {
    let dir = TempDir::new("load");
    let missing = dir.0.join("nope.cfg");
    let e = load_and_verify(&missing, &key(), &TrustedKeys::new()).unwrap_err();
    assert!(matches!(e, ConfigFileError::Io { .. }));
    assert!(e.to_string().contains("nope.cfg"), "{e}");
    // A file over the limit is refused with its real size (not the limit + 1), unread.
    let big = dir.0.join("big.cfg");
    fs::File::create(&big)
        .unwrap()
        .set_len(50 * 1024 * 1024)
        .unwrap();
    let e = load_and_verify(&big, &key(), &TrustedKeys::new()).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigFileError::TooLarge {
                len: 52_428_800,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("52428800 bytes"), "{e}");
    // Not a regular file: refused, naming what it is.
    let e = load_and_verify(&dir.0, &key(), &TrustedKeys::new()).unwrap_err();
    assert!(
        e.to_string().contains("a directory, not a regular file"),
        "{e}"
    );
    // Atomic write replaces an existing file.
    let p = dir.0.join("x.cfg");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"two");
}

#[test]
fn batch_built_files_load_back_each_to_its_own_qos() {
    let (k, s) = (key(), signer(5));
    let ids: Vec<String> = (0..40).map(|i| format!("cm-{i:03}")).collect();
    let levels: Vec<QosLevel> = (0..40u64)
        .map(|i| QosLevel {
            max_down_bps: Some((i + 51) * 1_000_000),
            ..plan()
        })
        .collect();
    let items: Vec<(&str, &QosLevel)> = ids.iter().map(String::as_str).zip(&levels).collect();
    let files = build_batch(&items, &opts(&k, Some(&s))).unwrap();
    assert_eq!(files.len(), 40);
    for (i, f) in files.iter().enumerate() {
        let c = verify(f, &k, &trusted(&[&s])).unwrap();
        assert_eq!(c.modem.as_deref(), Some(ids[i].as_str()));
        assert_eq!(c.qos, levels[i]);
        assert_eq!(c.signed_by, Some(s.key_id()));
    }
    // Unsigned batches are plain builds.
    let plain = build_batch(&items[..2], &opts(&k, None)).unwrap();
    assert_eq!(
        plain[1],
        build(ids[1].as_str(), &levels[1], &opts(&k, None)).unwrap()
    );
    // One bad level fails the batch with its error.
    let bad = QosLevel {
        max_up_bps: Some(MAX_DOCSIS_RATE_BPS + 1),
        ..QosLevel::default()
    };
    assert!(matches!(
        build_batch(&[("a", &plan()), ("b", &bad)], &opts(&k, Some(&s))),
        Err(ConfigFileError::Qos(
            crate::provision::QosError::RateTooHigh { .. }
        ))
    ));
}
