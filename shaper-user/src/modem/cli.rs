//! `shaper modem-config decode|encode|verify|keygen|name`: the operators' tools for DOCSIS
//! configuration files (docs/MODEM-CONFIG.md). The shell around [`crate::proto::docsis`] and
//! [`super::configfile`]: it reads and writes files and takes randomness from the OS.
//!
//! Key files are text: one line of 64 hex digits (the Ed25519 32-byte secret seed in
//! `NAME.key`, the 32-byte public key in `NAME.pub`); lines starting with `#` are comments.
//! The CMTS shared secret file is read as rlaager/docsis reads it (first 64 bytes, trailing
//! CR/LF stripped).

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::proto::docsis::{
    self, CM_MIC, CMTS_MIC, CmtsKey, ConfigFile, Signer, TrustedKeys, is_signature_block, text,
};

use super::configfile::{self, ModemConfig};

/// `shaper modem-config …`.
#[derive(clap::Subcommand, Debug)]
pub enum ModemConfigCmd {
    /// Print a binary configuration file in the text form: one TLV per line, names, units.
    /// MICs are printed, not checked (use `verify`).
    Decode {
        /// The binary file.
        file: PathBuf,
    },
    /// Read the text form (as `decode` prints it) and write the binary file. MIC lines in the
    /// input are ignored: both MICs are computed with the key from --cmts-key-file.
    Encode {
        /// The text file, or `-` for standard input.
        input: PathBuf,
        /// Where to write the binary file (atomically).
        #[arg(long, short)]
        out: PathBuf,
        /// File holding the CMTS shared secret.
        #[arg(long, value_name = "PATH")]
        cmts_key_file: PathBuf,
        /// Sign with this Ed25519 secret key file (`keygen`); a signature block in the
        /// input is replaced.
        #[arg(long, value_name = "PATH")]
        signing_key: Option<PathBuf>,
    },
    /// Check a file the way the controller does before enforcing it: both MICs, the signature
    /// when --trusted-key is given (then required), and the settings. Exits non-zero with the
    /// reason on failure.
    Verify {
        /// The binary file.
        file: PathBuf,
        /// File holding the CMTS shared secret.
        #[arg(long, value_name = "PATH")]
        cmts_key_file: PathBuf,
        /// A trusted Ed25519 public key file (repeat during a key rotation).
        #[arg(long, value_name = "PATH")]
        trusted_key: Vec<PathBuf>,
    },
    /// Generate an Ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub. Refuses
    /// to overwrite existing files.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print the file name the modem pipeline gives a modem's file: version 0 (the default)
    /// is the stable name a DHCP server hands the modem as its boot file; 1, 2, … are the
    /// kept versions.
    Name {
        /// The file-name key (`[controller.modem_pipeline] name_key_file`): 64 hex digits.
        #[arg(long, value_name = "PATH")]
        name_key_file: PathBuf,
        /// The modem id.
        #[arg(long)]
        modem: String,
        /// The version (0 = the stable "current" name).
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
}

/// Runs one `modem-config` command.
///
/// # Errors
/// Any failure, with the file concerned and the reason (MIC, offset, signature), each reason
/// once ([`each_once`]).
pub fn run(cmd: ModemConfigCmd) -> anyhow::Result<()> {
    run_cmd(cmd).map_err(|e| anyhow::Error::msg(each_once(&e)))
}

/// The error and its causes on one line, each text once: most errors here already carry their
/// source's text, so printing the chain (`{:#}`) would repeat a reason two or three times.
fn each_once(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn run_cmd(cmd: ModemConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ModemConfigCmd::Decode { file } => {
            let bytes = read(&file)?;
            let f = ConfigFile::decode(&bytes).with_context(|| format!("{}", file.display()))?;
            print!("{}", text::render(&f));
            Ok(())
        }
        ModemConfigCmd::Encode {
            input,
            out,
            cmts_key_file,
            signing_key,
        } => {
            let text_in = if input.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading standard input")?;
                s
            } else {
                std::fs::read_to_string(&input)
                    .with_context(|| format!("reading {}", input.display()))?
            };
            let key = cmts_key(&cmts_key_file)?;
            let signer = signing_key.as_deref().map(read_signer).transpose()?;
            let bytes = encode_text(&text_in, &key, signer.as_ref())
                .with_context(|| format!("{}", input.display()))?;
            configfile::write_atomic(&out, &bytes)?;
            match &signer {
                Some(s) => println!(
                    "wrote {} ({} bytes, signed by key {})",
                    out.display(),
                    bytes.len(),
                    s.key_id()
                ),
                None => println!("wrote {} ({} bytes)", out.display(), bytes.len()),
            }
            Ok(())
        }
        ModemConfigCmd::Verify {
            file,
            cmts_key_file,
            trusted_key,
        } => {
            let key = cmts_key(&cmts_key_file)?;
            let mut trusted = TrustedKeys::new();
            for p in &trusted_key {
                trusted.add(read_public(p)?);
            }
            let c = configfile::load_and_verify(&file, &key, &trusted)
                .with_context(|| format!("{}: refused", file.display()))?;
            println!("{}: ok", file.display());
            print_config(&c, trusted.is_empty());
            Ok(())
        }
        ModemConfigCmd::Keygen { out } => keygen(&out, &mut rand::rngs::OsRng),
        ModemConfigCmd::Name {
            name_key_file,
            modem,
            version,
        } => {
            let key = super::keys::key32(&name_key_file)?;
            println!(
                "{}",
                configfile::ConfigStore::new(".", key, 1).file_name(&modem, version)
            );
            Ok(())
        }
    }
}

/// Text form → file bytes: MIC settings dropped (recomputed), a signature block replaced when
/// signing.
///
/// # Errors
/// Text errors with the line, encode errors with the TLV.
pub fn encode_text(
    text_in: &str,
    key: &CmtsKey,
    signer: Option<&Signer>,
) -> anyhow::Result<Vec<u8>> {
    let settings: Vec<_> = text::parse(text_in)?
        .into_iter()
        .filter(|t| !matches!(t.code(), CM_MIC | CMTS_MIC))
        .filter(|t| signer.is_none() || !is_signature_block(t))
        .collect();
    Ok(docsis::build(&settings, key, signer)?)
}

fn print_config(c: &ModemConfig, unsigned_check: bool) {
    let ModemConfig {
        modem,
        qos,
        network_access,
        max_cpe,
        signed_by,
        extra_flows,
    } = c;
    println!("  MICs        CM MIC and CMTS MIC valid");
    match (signed_by, unsigned_check) {
        (Some(k), _) => println!("  signature   valid, key {k}"),
        (None, true) => println!("  signature   not checked (no --trusted-key)"),
        (None, false) => {}
    }
    if let Some(m) = modem {
        println!("  modem       {m}");
    }
    let onoff = |b: Option<bool>| b.map_or("-", |b| if b { "on" } else { "off" });
    println!("  access      {}", onoff(*network_access));
    println!(
        "  max CPE     {}",
        max_cpe.map_or_else(|| "-".into(), |n| n.to_string())
    );
    let bps = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} bit/s"));
    println!("  max down    {}", bps(qos.max_down_bps));
    println!("  max up      {}", bps(qos.max_up_bps));
    println!("  commit down {}", bps(qos.committed_down_bps));
    println!("  commit up   {}", bps(qos.committed_up_bps));
    let n = |v: Option<u32>, unit: &str| v.map_or_else(|| "-".into(), |v| format!("{v}{unit}"));
    println!("  burst       {}", n(qos.burst_bytes, " bytes"));
    println!("  priority    {}", n(qos.priority.map(u32::from), ""));
    println!("  mtu         {}", n(qos.mtu.map(u32::from), " bytes"));
    if *extra_flows > 0 {
        println!("  note        {extra_flows} further service flow(s) not enforced");
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn cmts_key(path: &Path) -> anyhow::Result<CmtsKey> {
    Ok(super::keys::cmts_key(path)?)
}

fn read_signer(path: &Path) -> anyhow::Result<Signer> {
    Ok(super::keys::signer(path)?)
}

fn read_public(path: &Path) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    Ok(super::keys::public(path)?)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn create_new(path: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (existing keys are never overwritten)",
                path.display()
            )
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `PREFIX.key` (0600) and `PREFIX.pub` for a key drawn from `rng`.
///
/// # Errors
/// When either file exists or cannot be written.
pub fn keygen<R: rand::CryptoRng + rand::RngCore>(
    prefix: &Path,
    rng: &mut R,
) -> anyhow::Result<()> {
    let s = Signer::generate(rng);
    let id = s.key_id();
    let (key_path, pub_path) = (with_ext(prefix, ".key"), with_ext(prefix, ".pub"));
    create_new(
        &key_path,
        0o600,
        &format!(
            "# shaper Ed25519 secret key (seed), key id {id}. Keep secret.\n{}\n",
            hex(&s.seed())
        ),
    )?;
    create_new(
        &pub_path,
        0o644,
        &format!(
            "# shaper Ed25519 public key, key id {id}\n{}\n",
            hex(s.verifying_key().as_bytes())
        ),
    )?;
    println!(
        "key id {id}: secret {}, public {}",
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn verify_prints_each_reason_once() {
        let dir = std::env::temp_dir().join(format!("shaper-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmts.key"), b"secret").unwrap();
        let verify = |file: &str, trusted_key: Vec<PathBuf>| {
            let e = run(ModemConfigCmd::Verify {
                file: dir.join(file),
                cmts_key_file: dir.join("cmts.key"),
                trusted_key,
            })
            .unwrap_err();
            format!("{e:#}")
        };
        std::fs::write(dir.join("g.cfg"), b"garbage\n").unwrap();
        let text = verify("g.cfg", Vec::new());
        assert_eq!(text.matches("declares").count(), 1, "{text}");
        assert!(text.contains("g.cfg: refused: MIC check failed"), "{text}");
        // An unsigned file with a trusted key: the signature reason, once.
        let key = CmtsKey::new(b"secret");
        let bytes = encode_text("NetworkAccess 1\n", &key, None).unwrap();
        std::fs::write(dir.join("u.cfg"), bytes).unwrap();
        keygen(&dir.join("k"), &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap();
        let text = verify("u.cfg", vec![with_ext(&dir.join("k"), ".pub")]);
        assert_eq!(text.matches("no signature").count(), 1, "{text}");
        // A file over 1 MiB: its real size.
        std::fs::File::create(dir.join("big.cfg"))
            .unwrap()
            .set_len(3_000_000)
            .unwrap();
        let text = verify("big.cfg", Vec::new());
        assert!(text.contains("3000000 bytes"), "{text}");
        assert_eq!(text.matches("big.cfg").count(), 2, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keygen_writes_a_usable_pair_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("shaper-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("site-a");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        keygen(&prefix, &mut rng).unwrap();
        let s = read_signer(&with_ext(&prefix, ".key")).unwrap();
        let p = read_public(&with_ext(&prefix, ".pub")).unwrap();
        assert_eq!(s.verifying_key(), p);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(with_ext(&prefix, ".key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = keygen(&prefix, &mut rng).unwrap_err();
        assert!(format!("{e:#}").contains("never overwritten"), "{e:#}");
        // Signed text → bytes verifies with the public key.
        let mut t = TrustedKeys::new();
        t.add(p);
        let key = CmtsKey::new(b"k");
        let bytes = encode_text("NetworkAccess 1\nMaxCPE 2\n", &key, Some(&s)).unwrap();
        assert_eq!(docsis::verify_signature(&bytes, &t), Ok(s.key_id()));
        // Re-encoding a decoded signed file with a key replaces the signature block.
        let text = text::render(&ConfigFile::decode(&bytes).unwrap());
        assert_eq!(encode_text(&text, &key, Some(&s)).unwrap(), bytes);
        assert_eq!(encode_text(&text, &key, None).unwrap(), bytes);
        std::fs::write(dir.join("bad.pub"), "# c\nxyz\n").unwrap();
        let e = read_public(&dir.join("bad.pub")).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
