//! `shaper modem-config` as an operator uses it, on docs/PROTOCOLS.md §1 "Vector B" (rlaager/docsis
//! `tests/docsis1_0_basic`, key `DOCSIS`): decode → encode gives the same bytes, verify accepts
//! it, a changed byte is refused naming the MIC; signing keys and rotation; and Wireshark's
//! DOCSIS dissector reads a generated per-modem file without complaint.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use shaper::{
    modem::{BuildOptions, build, build_batch},
    proto::docsis::{CmtsKey, Signer},
    provision::{QosLevel, ServiceTargets},
};

const VECTOR_B: &str = "030101120103041201010102040131\
    2d00030400989680070100\
    0610817865a1f6e47e81a7364ff607a24648\
    0710f90e368f5d979a2d5093bbaba37f1497ff00";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("shaper-mc-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// Vector B as `vb.cfg` and its key as `cmts.key` (with a trailing newline, which the
    /// key reader strips).
    fn vector_b(&self) {
        std::fs::write(self.path("vb.cfg"), unhex(VECTOR_B)).unwrap();
        std::fs::write(self.path("cmts.key"), "DOCSIS\n").unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shaper(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(args)
        .output()
        .expect("run shaper");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn vector_b_decode_then_encode_gives_identical_bytes() {
    let d = Scratch::new("roundtrip");
    d.vector_b();
    let (code, text, err) = shaper(&["modem-config", "decode", &d.s("vb.cfg")]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "NetworkAccess 1",
        "MaxCPE 3",
        "    MaxRateDown 20000000 bit/s",
        "CmtsMic 0xf90e368f5d979a2d5093bbaba37f1497",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    std::fs::write(d.path("vb.txt"), &text).unwrap();
    let (code, out, err) = shaper(&[
        "modem-config",
        "encode",
        &d.s("vb.txt"),
        "--out",
        &d.s("vb2.cfg"),
        "--cmts-key-file",
        &d.s("cmts.key"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("64 bytes"), "{out}");
    assert_eq!(std::fs::read(d.path("vb2.cfg")).unwrap(), unhex(VECTOR_B));
}

#[test]
fn verify_accepts_vector_b_and_names_the_mic_of_a_corrupted_byte() {
    let d = Scratch::new("verify");
    d.vector_b();
    let verify = |file: &str, key: &str| {
        shaper(&[
            "modem-config",
            "verify",
            &d.s(file),
            "--cmts-key-file",
            &d.s(key),
        ])
    };
    let (code, out, err) = verify("vb.cfg", "cmts.key");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vb.cfg: ok"), "{out}");
    assert!(out.contains("max down    20000000 bit/s"), "{out}");

    // ClassID byte changed: the CM MIC no longer matches.
    let mut b = unhex(VECTOR_B);
    b[8] ^= 0x01;
    std::fs::write(d.path("cm.cfg"), &b).unwrap();
    let (code, _, err) = verify("cm.cfg", "cmts.key");
    assert_eq!(code, 1);
    assert!(
        err.contains("CM MIC (type 6, MD5) mismatch at offset 26"),
        "{err}"
    );

    // A byte of the CMTS MIC changed: the CMTS MIC.
    let mut b = unhex(VECTOR_B);
    b[50] ^= 0x80;
    std::fs::write(d.path("cmts.cfg"), &b).unwrap();
    let (code, _, err) = verify("cmts.cfg", "cmts.key");
    assert_eq!(code, 1);
    assert!(err.contains("CMTS MIC"), "{err}");
    assert!(err.contains("offset 44"), "{err}");

    // The wrong shared secret: the CMTS MIC too.
    std::fs::write(d.path("wrong.key"), "NOTDOCSIS").unwrap();
    let (code, _, err) = verify("vb.cfg", "wrong.key");
    assert_eq!(code, 1);
    assert!(err.contains("CMTS MIC"), "{err}");

    // Truncated: malformed, with the offset.
    std::fs::write(d.path("short.cfg"), &unhex(VECTOR_B)[..30]).unwrap();
    let (code, _, err) = verify("short.cfg", "cmts.key");
    assert_eq!(code, 1);
    assert!(err.contains("malformed file: offset 26"), "{err}");
}

#[test]
fn keygen_sign_verify_and_rotate() {
    let d = Scratch::new("sign");
    d.vector_b();
    for k in ["old", "new"] {
        let (code, out, err) = shaper(&["modem-config", "keygen", "--out", &d.s(k)]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("key id "), "{out}");
    }
    // keygen never overwrites.
    let (code, _, err) = shaper(&["modem-config", "keygen", "--out", &d.s("old")]);
    assert_eq!(code, 1);
    assert!(err.contains("never overwritten"), "{err}");

    let (_, text, _) = shaper(&["modem-config", "decode", &d.s("vb.cfg")]);
    std::fs::write(d.path("vb.txt"), &text).unwrap();
    let (code, out, err) = shaper(&[
        "modem-config",
        "encode",
        &d.s("vb.txt"),
        "-o",
        &d.s("signed.cfg"),
        "--cmts-key-file",
        &d.s("cmts.key"),
        "--signing-key",
        &d.s("old.key"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed by key"), "{out}");
    let verify = |trusted: &[&str]| {
        let mut args = vec![
            "modem-config".to_owned(),
            "verify".into(),
            d.s("signed.cfg"),
            "--cmts-key-file".into(),
            d.s("cmts.key"),
        ];
        for t in trusted {
            args.push("--trusted-key".into());
            args.push(d.s(t));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shaper(&args)
    };
    // During a rotation both keys are trusted.
    let (code, out, err) = verify(&["old.pub", "new.pub"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signature   valid"), "{out}");
    // After it, the old key's files are refused.
    let (code, _, err) = verify(&["new.pub"]);
    assert_eq!(code, 1);
    assert!(err.contains("not among the trusted keys"), "{err}");
    // An unsigned file is refused when a key is trusted.
    let (code, _, err) = shaper(&[
        "modem-config",
        "verify",
        &d.s("vb.cfg"),
        "--cmts-key-file",
        &d.s("cmts.key"),
        "--trusted-key",
        &d.s("old.pub"),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no signature"), "{err}");
}

/// `od -Ax -tx1` style dump that text2pcap reads.
fn hexdump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        s.push_str(&format!("{:06x}", i * 16));
        for b in chunk {
            s.push_str(&format!(" {b:02x}"));
        }
        s.push('\n');
    }
    s
}

fn tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} not found: install the Debian package tshark (apt-get install tshark; \
         `cargo xtask deps` does it) to check generated files against Wireshark's DOCSIS dissector",
        p.display()
    );
    p
}

/// Wireshark's `docsis_tlv` dissector (DOCSIS Appendix C TLVs) reads the file: it is wrapped
/// as one frame of link type DLT_USER0 (147) with text2pcap, and the user DLT table maps
/// DLT 147 to `docsis_tlv`.
fn tshark_dissect(d: &Scratch, name: &str, bytes: &[u8]) -> String {
    let (text2pcap, tshark) = (tool("text2pcap"), tool("tshark"));
    let hex = d.path(&format!("{name}.hex"));
    let pcap = d.path(&format!("{name}.pcap"));
    std::fs::write(&hex, hexdump(bytes)).unwrap();
    let st = Command::new(text2pcap)
        .args(["-q", "-l", "147"])
        .arg(&hex)
        .arg(&pcap)
        .status()
        .unwrap();
    assert!(st.success(), "text2pcap failed");
    let out = Command::new(tshark)
        .arg("-r")
        .arg(&pcap)
        .args([
            "-o",
            r#"uat:user_dlts:"User 0 (DLT=147)","docsis_tlv","0","","0","""#,
            "-V",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tshark_dissects_a_generated_file_without_errors() {
    let d = Scratch::new("tshark");
    let qos = QosLevel {
        max_up_bps: Some(20_000_000),
        max_down_bps: Some(200_000_000),
        committed_up_bps: Some(2_000_000),
        committed_down_bps: Some(50_000_000),
        burst_bytes: Some(30_000),
        priority: Some(5),
        mtu: Some(1500),
        targets: ServiceTargets {
            availability_ppm: Some(999_900),
            ..ServiceTargets::default()
        },
    };
    let key = CmtsKey::new(b"DOCSIS");
    let signer = Signer::from_seed(&[1; 32]);
    let bytes = build(
        "cm-0001",
        &qos,
        &BuildOptions {
            cmts_key: &key,
            signer: Some(&signer),
            max_cpe: 4,
        },
    )
    .unwrap();
    let out = tshark_dissect(&d, "gen", &bytes);
    for bad in ["Malformed", "Expert Info (Error"] {
        assert!(!out.contains(bad), "{bad:?} in tshark output:\n{out}");
    }
    for want in [
        "Payload: docsis_tlv",
        "3 Network Access: On",
        "18 Max # of CPE's: 4",
        "24 Upstream Service Flow",
        "25 Downstream Service Flow",
        ".8 Maximum Sustained Traffic Rate (bps): 20000000",
        ".8 Maximum Sustained Traffic Rate (bps): 200000000",
        ".10 Minimum Traffic Rate (bps): 50000000",
        ".9 Maximum Burst (bps): 30000",
        ".7 Traffic Priority: 5",
        "Vendor ID: Unknown (0x025348)",
        "6 CM MIC: ",
        "7 CMTS MIC: ",
    ] {
        assert!(out.contains(want), "{want:?} not in tshark output:\n{out}");
    }
    // A batch-signed file (signature block with a Merkle path, 247 bytes) reads as cleanly.
    let opts = BuildOptions {
        cmts_key: &key,
        signer: Some(&signer),
        max_cpe: 4,
    };
    let batch = build_batch(
        &[("cm-0001", &qos), ("cm-0002", &qos), ("cm-0003", &qos)],
        &opts,
    )
    .unwrap();
    let out = tshark_dissect(&d, "batch", &batch[2]);
    for bad in ["Malformed", "Expert Info (Error"] {
        assert!(!out.contains(bad), "{bad:?} in tshark output:\n{out}");
    }
    assert!(out.contains("7 CMTS MIC: "), "{out}");
    // The check can fail: a truncated file is reported malformed.
    let out = tshark_dissect(&d, "cut", &bytes[..40]);
    assert!(out.contains("Malformed"), "{out}");
}
