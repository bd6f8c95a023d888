//! Golden vector, round trips, MIC and signature failure modes.

use proptest::prelude::*;
use rand::SeedableRng as _;

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// docs/PROTOCOLS.md §1 "Vector B": rlaager/docsis `tests/docsis1_0_basic`, key `DOCSIS`.
const VECTOR_B: &str = "030101 120103 0412 010101 020401312d00 030400989680 070100 \
     0610817865a1f6e47e81a7364ff607a24648 0710f90e368f5d979a2d5093bbaba37f1497 ff00";

fn vector_b_settings() -> Vec<Tlv> {
    vec![
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
    ]
}

fn docsis_key() -> CmtsKey {
    CmtsKey::new(b"DOCSIS")
}

fn test_signer(n: u8) -> Signer {
    Signer::from_seed(&[n; 32])
}

#[test]
fn vector_b_encodes_byte_for_byte() {
    let want = unhex(VECTOR_B);
    assert_eq!(want.len(), 64);
    let got = build(&vector_b_settings(), &docsis_key(), None).unwrap();
    assert_eq!(got, want);
}

#[test]
fn vector_b_decodes_and_verifies() {
    let bytes = unhex(VECTOR_B);
    let scan = verify_mics(&bytes, &docsis_key()).unwrap();
    assert_eq!(scan.end_offset, 62);
    assert_eq!(scan.pad, 1);
    let f = ConfigFile::decode(&bytes).unwrap();
    assert_eq!(f.network_access().unwrap(), Some(true));
    assert_eq!(f.max_cpe().unwrap(), Some(3));
    let cos = f.class_of_service().unwrap().unwrap();
    assert_eq!(cos.class_id, 1);
    assert_eq!(cos.max_rate_down, Some(20_000_000));
    assert_eq!(cos.max_rate_up, Some(10_000_000));
    assert_eq!(cos.privacy_enable, Some(false));
    assert_eq!(cos.priority_up, None);
    assert_eq!(
        f.find(CM_MIC).unwrap().data().unwrap(),
        unhex("817865a1f6e47e81a7364ff607a24648")
    );
    assert_eq!(f.encode().unwrap(), bytes);
}

#[test]
fn key_file_is_read_like_rlaager() {
    assert_eq!(CmtsKey::from_key_file(b"DOCSIS\r\n").as_bytes(), b"DOCSIS");
    assert_eq!(CmtsKey::from_key_file(b"DOCSIS\n\n").as_bytes(), b"DOCSIS");
    assert_eq!(CmtsKey::from_key_file(b"DOC SIS ").as_bytes(), b"DOC SIS ");
    let long = [b'k'; 100];
    assert_eq!(CmtsKey::from_key_file(&long).as_bytes(), &long[..64]);
    assert_eq!(
        format!("{:?}", CmtsKey::new(b"secret")),
        "CmtsKey(<6 bytes redacted>)"
    );
}

#[test]
fn wrong_key_names_the_cmts_mic() {
    let bytes = unhex(VECTOR_B);
    let err = verify_mics(&bytes, &CmtsKey::new(b"other")).unwrap_err();
    let VerifyError::Mismatch {
        mic,
        offset,
        expected,
        actual,
    } = err.clone()
    else {
        panic!("{err:?}")
    };
    assert_eq!(mic, Mic::Cmts);
    assert_eq!(offset, 44);
    assert_eq!(actual.to_string(), "f90e368f5d979a2d5093bbaba37f1497");
    assert_ne!(expected, actual);
    assert!(err.to_string().contains("CMTS MIC"), "{err}");
}

#[test]
fn changed_setting_names_the_cm_mic() {
    let mut bytes = unhex(VECTOR_B);
    bytes[8] ^= 1; // ClassID 1 -> 0
    let err = verify_mics(&bytes, &docsis_key()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Mismatch {
                mic: Mic::Cm,
                offset: 26,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("CM MIC (type 6, MD5) mismatch at offset 26")
    );
}

#[test]
fn every_single_byte_change_of_vector_b_is_detected() {
    let good = unhex(VECTOR_B);
    for i in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut b = good.clone();
            b[i] ^= bit;
            assert!(
                verify_mics(&b, &docsis_key()).is_err(),
                "flip {bit:#x} at {i} went unnoticed"
            );
        }
    }
}

#[test]
fn mic_structure_errors() {
    let key = docsis_key();
    let body = [0x03, 0x01, 0x01];
    let no_mics = [&body[..], &[0xff]].concat();
    assert_eq!(
        verify_mics(&no_mics, &key),
        Err(VerifyError::MissingMic(Mic::Cm))
    );
    let good = build(&[Tlv::network_access(true)], &key, None).unwrap();
    // Drop the CMTS MIC.
    let cm_only = [&good[..21], &[0xff]].concat();
    assert_eq!(
        verify_mics(&cm_only, &key),
        Err(VerifyError::MissingMic(Mic::Cmts))
    );
    // A setting after the CM MIC.
    let mut after = good[..39].to_vec();
    after.extend_from_slice(&[0x12, 0x01, 0x05, 0xff]);
    assert_eq!(
        verify_mics(&after, &key),
        Err(VerifyError::AfterCmMic {
            offset: 39,
            code: 18
        })
    );
    // A short MIC.
    let short = [&body[..], &[0x06, 0x01, 0x00, 0x07, 0x01, 0x00, 0xff]].concat();
    assert_eq!(
        verify_mics(&short, &key),
        Err(VerifyError::MicLength {
            mic: Mic::Cm,
            offset: 3,
            len: 1
        })
    );
    // Two CM MICs.
    let mut two = good[..21].to_vec();
    two.extend_from_slice(&good[3..21]);
    two.extend_from_slice(&good[21..]);
    assert_eq!(
        verify_mics(&two, &key),
        Err(VerifyError::DuplicateMic {
            mic: Mic::Cm,
            offset: 21
        })
    );
}

#[test]
fn malformed_files_give_offset_and_cause() {
    assert_eq!(
        ConfigFile::decode(&[0x03, 0x01, 0x01]),
        Err(DecodeError::MissingEnd { len: 3 })
    );
    assert_eq!(
        ConfigFile::decode(&[0x03, 0x05, 0x01, 0xff]),
        Err(DecodeError::Truncated {
            offset: 0,
            code: 3,
            len: 5,
            available: 2
        })
    );
    assert_eq!(
        ConfigFile::decode(&[0x03, 0x01, 0x01, 0x12]),
        Err(DecodeError::MissingLength {
            offset: 3,
            code: 18
        })
    );
    assert_eq!(
        ConfigFile::decode(&[0x03, 0x01, 0x01, 0x00, 0xff]),
        Err(DecodeError::PadBeforeEnd { offset: 3 })
    );
    assert_eq!(
        ConfigFile::decode(&[0xff, 0x00, 0x07]),
        Err(DecodeError::TrailingData { offset: 2, byte: 7 })
    );
    // Sub-TLV 4.2 claims 9 bytes inside a 6-byte aggregate.
    let e = ConfigFile::decode(&[0x04, 0x06, 0x02, 0x09, 0, 0, 0, 0, 0xff]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::SubTruncated {
            offset: 2,
            parent: 4,
            code: 2,
            len: 9,
            available: 4
        }
    );
    assert!(e.to_string().contains("sub-TLV 4.2"), "{e}");
    assert_eq!(
        ConfigFile::decode(&[0x18, 0x01, 0x01, 0xff]),
        Err(DecodeError::SubMissingLength {
            offset: 2,
            parent: 24,
            code: 1
        })
    );
}

#[test]
fn oversize_values_and_aggregates_are_errors_not_truncations() {
    let key = docsis_key();
    let big = Tlv::leaf(None, 9, vec![b'a'; 256]);
    assert_eq!(
        build(&[big], &key, None),
        Err(EncodeError::ValueTooLong {
            path: TlvPath::new(None, 9),
            len: 256
        })
    );
    // 43 { 8 = OUI, 200-byte, 60-byte } = 5 + 202 + 62 = 269 > 255.
    let agg = VendorSpecific {
        oui: [1, 2, 3],
        subs: vec![
            Tlv::leaf(Some(43), 1, vec![0; 200]),
            Tlv::leaf(Some(43), 2, vec![0; 60]),
        ],
    }
    .to_tlv();
    let e = build(std::slice::from_ref(&agg), &key, None).unwrap_err();
    assert_eq!(
        e,
        EncodeError::AggregateTooLong {
            path: TlvPath::new(None, 43),
            len: 269
        }
    );
    assert!(e.to_string().contains("43 (VendorSpecific)"), "{e}");
    assert!(
        ConfigFile {
            tlvs: vec![agg],
            pad: 0
        }
        .encode()
        .is_err()
    );
    // Exactly 255 is fine.
    let max = VendorSpecific {
        oui: [1, 2, 3],
        subs: vec![Tlv::leaf(Some(43), 1, vec![0; 248])],
    }
    .to_tlv();
    let bytes = build(std::slice::from_ref(&max), &key, None).unwrap();
    assert_eq!(bytes[1], 255);
    assert_eq!(ConfigFile::decode(&bytes).unwrap().tlvs[0], max);
}

#[test]
fn build_refuses_computed_and_reserved_types() {
    let key = docsis_key();
    assert!(matches!(
        build(&[Tlv::leaf(None, 6, vec![0; 16])], &key, None),
        Err(EncodeError::Computed { code: 6, .. })
    ));
    assert!(matches!(
        build(&[Tlv::leaf(None, 7, vec![0; 16])], &key, None),
        Err(EncodeError::Computed { code: 7, .. })
    ));
    assert_eq!(
        build(&[Tlv::leaf(None, 255, vec![])], &key, None),
        Err(EncodeError::ReservedType { code: 255 })
    );
    assert_eq!(
        build(&[Tlv::leaf(None, 0, vec![])], &key, None),
        Err(EncodeError::ReservedType { code: 0 })
    );
    let sig = signature_tlv(b"x", &test_signer(1));
    assert!(matches!(
        build(&[sig], &key, Some(&test_signer(1))),
        Err(EncodeError::Computed { code: 43, .. })
    ));
}

fn flows() -> Vec<Tlv> {
    let mut us = ServiceFlow::new(Direction::Up);
    us.reference = Some(1);
    us.class_name = Some("gold".into());
    us.qos_param_set_type = Some(QOS_SET_ALL);
    us.traffic_priority = Some(5);
    us.max_sustained_rate = Some(10_000_000);
    us.max_traffic_burst = Some(15_000);
    us.min_reserved_rate = Some(1_000_000);
    us.sub14 = Some(3044);
    us.scheduling_type = Some(SCHEDULING_BEST_EFFORT);
    us.other = vec![Tlv::leaf(Some(24), 99, vec![1, 2])];
    let mut ds = ServiceFlow::new(Direction::Down);
    ds.reference = Some(2);
    ds.sfid = Some(77);
    ds.qos_param_set_type = Some(QOS_SET_ALL);
    ds.max_sustained_rate = Some(200_000_000);
    ds.sub14 = Some(100_000);
    vec![us.to_tlv().unwrap(), ds.to_tlv().unwrap()]
}

#[test]
fn service_flows_round_trip_through_bytes() {
    let mut settings = vec![Tlv::network_access(true), Tlv::max_cpe(4)];
    settings.extend(flows());
    let bytes = build(&settings, &docsis_key(), None).unwrap();
    verify_mics(&bytes, &docsis_key()).unwrap();
    let f = ConfigFile::decode(&bytes).unwrap();
    let got = f.service_flows().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].to_tlv().unwrap(), settings[2]);
    assert_eq!(got[1].to_tlv().unwrap(), settings[3]);
    assert_eq!(got[0].class_name.as_deref(), Some("gold"));
    assert_eq!(
        got[0].other,
        vec![Tlv::Unknown {
            code: 99,
            data: vec![1, 2]
        }]
    );
    assert_eq!(got[1].sub14, Some(100_000));
    // 24.8 is 4 bytes: in the encoding, sub-TLV 8 of the US flow is `08 04 00 98 96 80`.
    assert!(bytes.windows(6).any(|w| w == [8, 4, 0, 0x98, 0x96, 0x80]));
}

#[test]
fn typed_accessors_name_the_bad_sub_tlv() {
    let bad = Tlv::Aggregate {
        code: 24,
        subs: vec![Tlv::leaf(Some(24), 8, vec![1, 2, 3])],
    };
    let e = ServiceFlow::from_tlv(&bad).unwrap_err();
    assert_eq!(
        e,
        FieldError::Length {
            path: TlvPath::new(Some(24), 8),
            len: 3,
            expected: "4"
        }
    );
    assert_eq!(
        e.to_string(),
        "TLV 24.8 (MaxRateSustained): 3 value bytes, expected 4"
    );
    let prio = Tlv::Aggregate {
        code: 25,
        subs: vec![Tlv::uint(Some(25), 7, 1, 9)],
    };
    assert!(matches!(
        ServiceFlow::from_tlv(&prio),
        Err(FieldError::Range { value: 9, .. })
    ));
    let dup = Tlv::Aggregate {
        code: 25,
        subs: vec![Tlv::uint(Some(25), 1, 2, 1), Tlv::uint(Some(25), 1, 2, 2)],
    };
    assert!(matches!(
        ServiceFlow::from_tlv(&dup),
        Err(FieldError::Duplicate { .. })
    ));
    let mut ds = ServiceFlow::new(Direction::Down);
    ds.scheduling_type = Some(2);
    assert!(matches!(ds.to_tlv(), Err(FieldError::Invalid { .. })));
    let mut us = ServiceFlow::new(Direction::Up);
    us.sub14 = Some(70_000);
    assert!(matches!(us.to_tlv(), Err(FieldError::Range { .. })));
    let f = ConfigFile {
        tlvs: vec![Tlv::leaf(None, 3, vec![2])],
        pad: 0,
    };
    assert!(matches!(
        f.network_access(),
        Err(FieldError::Range { value: 2, .. })
    ));
    let no_oui = Tlv::Aggregate {
        code: 43,
        subs: vec![Tlv::leaf(Some(43), 1, vec![0])],
    };
    assert!(matches!(
        VendorSpecific::from_tlv(&no_oui),
        Err(FieldError::Invalid { .. })
    ));
}

#[test]
fn snmp_object_is_kept_and_decodable() {
    let vb = VarBind::new(&[1, 3, 6, 1, 2, 1, 69, 1, 3, 5, 0], &SnmpValue::Integer(2));
    let settings = vec![Tlv::network_access(true), Tlv::leaf(None, 11, vb.0.clone())];
    let bytes = build(&settings, &docsis_key(), None).unwrap();
    let f = ConfigFile::decode(&bytes).unwrap();
    assert_eq!(f.snmp_objects(), vec![vb.clone()]);
    let text = text::render(&f);
    assert!(
        text.contains("# 11: 1.3.6.1.2.1.69.1.3.5.0 = INTEGER 2"),
        "{text}"
    );
    // TLV 11 is outside the CMTS MIC: changing it breaks only the CM MIC.
    let mut b = bytes.clone();
    let pos = 3 + 2 + vb.0.len() - 1; // the INTEGER value byte
    b[pos] ^= 1;
    assert!(matches!(
        verify_mics(&b, &docsis_key()),
        Err(VerifyError::Mismatch { mic: Mic::Cm, .. })
    ));
}

#[test]
fn cmts_mic_excludes_tlv_11_and_follows_the_fixed_order() {
    // The same settings in another file order give a different CM MIC but the same CMTS MIC
    // (the CMTS digest collects by type, not by position), apart from the CM MIC it includes.
    let a = vec![Tlv::max_cpe(3), Tlv::network_access(true)];
    let b = vec![Tlv::network_access(true), Tlv::max_cpe(3)];
    let fa = build(&a, &docsis_key(), None).unwrap();
    let fb = build(&b, &docsis_key(), None).unwrap();
    let sa = scan(&fa).unwrap();
    // Recompute A's CMTS MIC by hand: 3, then 6 (CM MIC), then 18.
    let parts: Vec<&[u8]> = vec![&fa[3..6], &fa[6..24], &fa[0..3]];
    assert_eq!(
        &fa[26..42],
        crate::proto::auth::hmac_md5(b"DOCSIS", &parts).as_slice()
    );
    assert_eq!(sa.spans.len(), 4);
    assert_ne!(fa, fb);
    assert_eq!(
        verify_mics(&fb, &docsis_key()).unwrap().spans.len(),
        4,
        "the other order verifies too"
    );
    // A TLV 11 is left out of the CMTS digest: the same bytes plus a TLV 11 span give the
    // same CMTS MIC.
    let mut with11 = fa[..24].to_vec();
    with11.extend_from_slice(&[11, 2, 0x30, 0x00]);
    let mut spans11 = sa.spans[..3].to_vec();
    spans11.push(Span {
        code: 11,
        start: 24,
        end: 28,
    });
    assert_eq!(
        cmts_mic(&with11, &spans11, &docsis_key()),
        cmts_mic(&fa, &sa.spans[..3], &docsis_key())
    );
}

// ---- signature --------------------------------------------------------------------------

fn signed_file(signer: &Signer) -> Vec<u8> {
    let mut settings = vec![Tlv::network_access(true), Tlv::max_cpe(2)];
    settings.extend(flows());
    build(&settings, &docsis_key(), Some(signer)).unwrap()
}

fn trust(keys: &[&Signer]) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    for k in keys {
        t.add(k.verifying_key());
    }
    t
}

#[test]
fn signed_file_verifies_and_both_mics_cover_the_signature() {
    let s = test_signer(7);
    let bytes = signed_file(&s);
    verify_mics(&bytes, &docsis_key()).unwrap();
    assert_eq!(verify_signature(&bytes, &trust(&[&s])), Ok(s.key_id()));
    let f = ConfigFile::decode(&bytes).unwrap();
    let n = f.tlvs.len();
    assert!(is_signature_block(&f.tlvs[n - 3]));
    assert_eq!(f.tlvs[n - 3].encoded_len(), SIGNATURE_TLV_LEN);
    assert_eq!(f.tlvs[n - 2].code(), CM_MIC);
    // Deterministic (RFC 8032): same key, same bytes.
    assert_eq!(signed_file(&s), bytes);
    // Decode → encode is exact for signed files too.
    assert_eq!(f.encode().unwrap(), bytes);
}

#[test]
fn flipping_any_byte_of_a_signed_file_fails_verification() {
    let s = test_signer(7);
    let trusted = trust(&[&s]);
    let good = signed_file(&s);
    let sig_start = scan(&good)
        .unwrap()
        .spans
        .iter()
        .rev()
        .nth(2)
        .unwrap()
        .start;
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x01;
        let mics = verify_mics(&b, &docsis_key());
        let sig = verify_signature(&b, &trusted);
        assert!(
            mics.is_err() || sig.is_err(),
            "flip at {i} passed both checks"
        );
        // The signature alone catches every change to the signed bytes and the block itself.
        if i < sig_start + SIGNATURE_TLV_LEN {
            assert!(sig.is_err(), "flip at {i} passed the signature check");
        }
    }
    // The error for a changed setting names the signing key and the signed range.
    let mut b = good.clone();
    b[2] ^= 1;
    let e = verify_signature(&b, &trusted).unwrap_err();
    assert_eq!(
        e,
        SignatureError::Invalid {
            key_id: s.key_id(),
            offset: sig_start
        }
    );
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn signature_rotation_and_rejections() {
    let old = test_signer(1);
    let new = test_signer(2);
    let stranger = test_signer(3);
    let both = trust(&[&old, &new]);
    assert_eq!(
        verify_signature(&signed_file(&old), &both),
        Ok(old.key_id())
    );
    assert_eq!(
        verify_signature(&signed_file(&new), &both),
        Ok(new.key_id())
    );
    assert_eq!(
        verify_signature(&signed_file(&stranger), &both),
        Err(SignatureError::UnknownKey {
            key_id: stranger.key_id()
        })
    );
    // After the roll, the old key's files are refused.
    assert_eq!(
        verify_signature(&signed_file(&old), &trust(&[&new])),
        Err(SignatureError::UnknownKey {
            key_id: old.key_id()
        })
    );
    // Unsigned files: no signature.
    let unsigned = build(&[Tlv::network_access(true)], &docsis_key(), None).unwrap();
    assert_eq!(
        verify_signature(&unsigned, &both),
        Err(SignatureError::Missing)
    );
    // A key id forged onto another key's signature fails as invalid.
    let mut forged = signed_file(&old);
    let at = scan(&forged)
        .unwrap()
        .spans
        .iter()
        .rev()
        .nth(2)
        .unwrap()
        .start;
    forged[at + 2 + 5 + 2..at + 2 + 5 + 10].copy_from_slice(&new.key_id().0);
    assert!(matches!(
        verify_signature(&forged, &both),
        Err(SignatureError::Invalid { .. })
    ));
}

#[test]
fn misplaced_signature_is_refused() {
    let s = test_signer(4);
    // A signature block followed by another setting before the MICs.
    let sig = signature_tlv(&[3, 1, 1], &s);
    let bytes = build(
        &[Tlv::network_access(true), sig, Tlv::max_cpe(1)],
        &docsis_key(),
        None,
    )
    .unwrap();
    assert_eq!(
        verify_signature(&bytes, &trust(&[&s])),
        Err(SignatureError::Misplaced { offset: 3 })
    );
}

#[test]
fn key_ids_are_stable() {
    let s = test_signer(9);
    assert_eq!(KeyId::of(&s.verifying_key()), s.key_id());
    assert_eq!(s.key_id().to_string().len(), 16);
    assert_eq!(format!("{s:?}"), format!("Signer({})", s.key_id()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let g = Signer::generate(&mut rng);
    assert_eq!(Signer::from_seed(&g.seed()).key_id(), g.key_id());
}

fn batch_settings(n: usize) -> Vec<Vec<Tlv>> {
    (0..n)
        .map(|i| {
            vec![
                Tlv::network_access(true),
                Tlv::max_cpe(u8::try_from(i % 250).unwrap() + 1),
                shaper_block(vec![Tlv::leaf(
                    Some(43),
                    SUB_MODEM_ID,
                    format!("cm-{i}").into_bytes(),
                )]),
            ]
        })
        .collect()
}

/// The settings of a decoded file with its signature block replaced by `block`, MICs dropped.
fn with_block(file: &[u8], block: Tlv) -> Vec<Tlv> {
    let f = ConfigFile::decode(file).unwrap();
    let mut out: Vec<Tlv> = f
        .tlvs
        .into_iter()
        .filter(|t| !matches!(t.code(), CM_MIC | CMTS_MIC) && !is_signature_block(t))
        .collect();
    out.push(block);
    out
}

fn sig_block(file: &[u8]) -> Tlv {
    ConfigFile::decode(file)
        .unwrap()
        .tlvs
        .into_iter()
        .find(is_signature_block)
        .unwrap()
}

#[test]
fn batch_signed_files_each_verify_on_their_own() {
    let s = test_signer(11);
    let t = trust(&[&s]);
    for n in [1, 2, 3, 5, 16, 17, 32, 33, 70] {
        let files = build_batch(&batch_settings(n), &docsis_key(), &s).unwrap();
        assert_eq!(files.len(), n);
        for (i, f) in files.iter().enumerate() {
            verify_mics(f, &docsis_key()).unwrap();
            assert_eq!(verify_signature(f, &t), Ok(s.key_id()), "n={n} i={i}");
            assert_eq!(&ConfigFile::decode(f).unwrap().encode().unwrap(), f);
        }
    }
    // A batch of one is a plainly signed file.
    let one = batch_settings(1);
    assert_eq!(
        build_batch(&one, &docsis_key(), &s).unwrap()[0],
        build(&one[0], &docsis_key(), Some(&s)).unwrap()
    );
    // A full batch's block (depth 5) still fits one TLV: 5 + 10 + 66 + 2 + 2 + 160 = 245.
    let full = build_batch(&batch_settings(32), &docsis_key(), &s).unwrap();
    assert_eq!(sig_block(&full[31]).encoded_len(), 2 + 245);
    // Batch signing refuses a signature block among the settings, like build.
    let mut bad = batch_settings(2);
    bad[1].push(signature_tlv(b"x", &s));
    assert!(matches!(
        build_batch(&bad, &docsis_key(), &s),
        Err(EncodeError::Computed { code: 43, .. })
    ));
}

#[test]
fn batch_signatures_catch_every_change_and_do_not_travel() {
    let s = test_signer(12);
    let t = trust(&[&s]);
    let files = build_batch(&batch_settings(5), &docsis_key(), &s).unwrap();
    let good = &files[3];
    let sig_end = {
        let sc = scan(good).unwrap();
        sc.spans[sc.spans.len() - 2].start
    };
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x01;
        let sig = verify_signature(&b, &t);
        assert!(
            verify_mics(&b, &docsis_key()).is_err() || sig.is_err(),
            "flip at {i} passed both checks"
        );
        if i < sig_end {
            assert!(sig.is_err(), "flip at {i} passed the signature check");
        }
    }
    // File 1's signature block on file 3's settings (MICs recomputed): refused.
    let moved = build(
        &with_block(&files[3], sig_block(&files[1])),
        &docsis_key(),
        None,
    )
    .unwrap();
    assert!(matches!(
        verify_signature(&moved, &t),
        Err(SignatureError::Invalid { .. })
    ));
    // Another index in the same tree: refused; an index outside the tree: malformed block.
    let block = sig_block(&files[3]);
    let Tlv::Aggregate { code, mut subs } = block.clone() else {
        panic!()
    };
    let Tlv::Unknown { data, .. } = &mut subs[3] else {
        panic!("{:?}", subs[3])
    };
    data[1] = 2;
    let other = Tlv::Aggregate {
        code,
        subs: subs.clone(),
    };
    let b = build(&with_block(&files[3], other), &docsis_key(), None).unwrap();
    assert!(matches!(
        verify_signature(&b, &t),
        Err(SignatureError::Invalid { .. })
    ));
    let Tlv::Unknown { data, .. } = &mut subs[3] else {
        panic!()
    };
    data[1] = 8; // depth 3 holds indices 0..8
    let outside = Tlv::Aggregate {
        code,
        subs: subs.clone(),
    };
    let b = build(&with_block(&files[3], outside), &docsis_key(), None).unwrap();
    assert!(matches!(
        verify_signature(&b, &t),
        Err(SignatureError::BadBlock { .. })
    ));
    // A path that is not whole hashes: malformed block.
    let Tlv::Unknown { data, .. } = &mut subs[3] else {
        panic!()
    };
    data.truncate(2 + 31);
    let b = build(
        &with_block(&files[3], Tlv::Aggregate { code, subs }),
        &docsis_key(),
        None,
    )
    .unwrap();
    assert!(matches!(
        verify_signature(&b, &t),
        Err(SignatureError::BadBlock { .. })
    ));
}

// ---- text form --------------------------------------------------------------------------

#[test]
fn text_form_of_vector_b() {
    let f = ConfigFile::decode(&unhex(VECTOR_B)).unwrap();
    let t = text::render(&f);
    for line in [
        "NetworkAccess 1",
        "MaxCPE 3",
        "ClassOfService {",
        "    ClassID 1",
        "    MaxRateDown 20000000 bit/s",
        "    MaxRateUp 10000000 bit/s",
        "    PrivacyEnable 0",
        "CmMic 0x817865a1f6e47e81a7364ff607a24648",
        "CmtsMic 0xf90e368f5d979a2d5093bbaba37f1497",
    ] {
        assert!(t.lines().any(|l| l.starts_with(line)), "{line:?} in\n{t}");
    }
    assert_eq!(text::parse(&t).unwrap(), f.tlvs);
}

#[test]
fn text_form_round_trips_flows_vendor_and_unknowns() {
    let s = test_signer(5);
    let mut settings = vec![
        Tlv::network_access(true),
        Tlv::leaf(None, 20, vec![10, 0, 0, 1]),
        Tlv::leaf(None, 14, vec![0, 1, 2, 3, 4, 5]),
        Tlv::leaf(None, 9, b"fw.bin".to_vec()),
        Tlv::leaf(None, 3, vec![1, 2]), // wrong length: stays hex
        Tlv::leaf(None, 200, vec![0xde, 0xad]),
        shaper_block(vec![
            Tlv::uint(Some(43), SUB_AVAILABILITY, 4, 999_900),
            Tlv::leaf(Some(43), SUB_MODEM_ID, b"cm-1".to_vec()),
        ]),
    ];
    settings.extend(flows());
    let bytes = build(&settings, &docsis_key(), Some(&s)).unwrap();
    let f = ConfigFile::decode(&bytes).unwrap();
    let t = text::render(&f);
    for needle in [
        "TftpModemAddress 10.0.0.1",
        "CpeMacAddress 00:01:02:03:04:05",
        "SwUpgradeFilename \"fw.bin\"",
        "NetworkAccess 0x0102",
        "Tlv200 0xdead",
        "ShaperAvailability 999900 ppm",
        "ShaperModemId \"cm-1\"",
        "ServiceClassName \"gold\"",
        "MaxRateSustained 10000000 bit/s",
        "MaxConcatenatedBurst 3044 bytes",
        "MaxDsLatency 100000 us",
        "ShaperSignature 0x",
        "VendorIdentifier 02:53:48",
    ] {
        assert!(t.contains(needle), "{needle:?} in\n{t}");
    }
    let parsed = text::parse(&t).unwrap();
    assert_eq!(parsed, f.tlvs);
    // Re-encoding the parsed settings (MICs recomputed) gives the same bytes.
    let settings: Vec<Tlv> = parsed
        .into_iter()
        .filter(|t| !matches!(t.code(), CM_MIC | CMTS_MIC))
        .collect();
    assert_eq!(build(&settings, &docsis_key(), None).unwrap(), bytes);
}

#[test]
fn text_errors_name_the_line() {
    use text::TextError;
    assert_eq!(
        text::parse("NetworkAccess 1\nBogus 3\n"),
        Err(TextError::UnknownName {
            line: 2,
            name: "Bogus".into()
        })
    );
    assert!(matches!(
        text::parse("MaxCPE 300"),
        Err(TextError::BadValue { line: 1, .. })
    ));
    assert!(matches!(
        text::parse("UsServiceFlow {\n MaxRateSustained 5 kbit/s\n}"),
        Err(TextError::BadValue { line: 2, .. })
    ));
    assert_eq!(
        text::parse("UsServiceFlow {\n"),
        Err(TextError::Unclosed { line: 1 })
    );
    assert_eq!(text::parse("}"), Err(TextError::Unbalanced { line: 1 }));
    assert!(matches!(
        text::parse("UsServiceFlow 0x01"),
        Err(TextError::AggregateNeedsBlock { .. })
    ));
    assert!(matches!(
        text::parse("MaxCPE {"),
        Err(TextError::NotAggregate { .. })
    ));
    assert!(matches!(
        text::parse("UsServiceFlow {\nTlv43 {\n"),
        Err(TextError::TooDeep { line: 2 })
    ));
    // Comments and `#` inside quotes.
    assert_eq!(
        text::parse("SwUpgradeFilename \"a#b\" # c").unwrap(),
        vec![Tlv::leaf(None, 9, b"a#b".to_vec())]
    );
}

// ---- property tests ---------------------------------------------------------------------

fn leaf_strategy(parent: Option<u8>) -> impl Strategy<Value = Tlv> {
    (1u8..=254, prop::collection::vec(any::<u8>(), 0..40))
        .prop_filter("aggregate codes hold sub-TLVs at the top", move |(c, _)| {
            parent.is_some() || !is_aggregate(*c)
        })
        .prop_map(move |(code, data)| Tlv::leaf(parent, code, data))
}

fn top_strategy() -> impl Strategy<Value = Tlv> {
    let agg = prop::sample::select(AGGREGATES.to_vec()).prop_flat_map(|code| {
        prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..30))
                .prop_map(move |(c, d)| Tlv::leaf(Some(code), c, d)),
            0..6,
        )
        .prop_map(move |subs| Tlv::Aggregate { code, subs })
    });
    prop_oneof![leaf_strategy(None), agg]
}

proptest! {
    #[test]
    fn random_trees_round_trip(tlvs in prop::collection::vec(top_strategy(), 0..12), pad in 0usize..6) {
        let f = ConfigFile { tlvs, pad };
        let bytes = f.encode().unwrap();
        let back = ConfigFile::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn random_files_sign_verify_and_round_trip_through_text(
        tlvs in prop::collection::vec(top_strategy(), 0..10)
    ) {
        let settings: Vec<Tlv> = tlvs
            .into_iter()
            .filter(|t| !matches!(t.code(), CM_MIC | CMTS_MIC) && !is_signature_block(t))
            .collect();
        let s = test_signer(8);
        let bytes = build(&settings, &docsis_key(), Some(&s)).unwrap();
        prop_assert_eq!(bytes.len() % 4, 0);
        verify_mics(&bytes, &docsis_key()).unwrap();
        prop_assert_eq!(verify_signature(&bytes, &trust(&[&s])), Ok(s.key_id()));
        let f = ConfigFile::decode(&bytes).unwrap();
        prop_assert_eq!(text::parse(&text::render(&f)).unwrap(), f.tlvs);
    }

    #[test]
    fn mutated_signed_files_never_panic_and_are_never_accepted(
        muts in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let s = test_signer(6);
        let good = signed_file(&s);
        let mut b = good.clone();
        for (at, x) in &muts {
            b[at.index(good.len())] ^= x;
        }
        if truncate {
            b.truncate(cut.index(good.len()));
        }
        let mics = verify_mics(&b, &docsis_key());
        let sig = verify_signature(&b, &trust(&[&s]));
        if b != good {
            prop_assert!(mics.is_err() || sig.is_err(), "a changed file passed both checks");
        }
        if let Ok(f) = ConfigFile::decode(&b) {
            prop_assert_eq!(f.encode().unwrap(), b.clone());
            prop_assert_eq!(text::parse(&text::render(&f)).unwrap(), f.tlvs.clone());
            let _ = f.service_flows();
            let _ = f.vendor_specific();
            let _ = f.network_access();
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decoded_ones_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        if let Ok(f) = ConfigFile::decode(&bytes) {
            prop_assert_eq!(f.encode().unwrap(), bytes.clone());
        }
        let _ = verify_mics(&bytes, &docsis_key());
        let _ = verify_signature(&bytes, &TrustedKeys::new());
    }
}
