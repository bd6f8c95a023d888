//! Per-modem DOCSIS configuration files from effective QoS levels, and back (issue 4;
//! docs/ARCHITECTURE.md §1.3 and §1.5). Operator guide: docs/MODEM-CONFIG.md.
//!
//! - [`build`]: modem id + effective [`QosLevel`] → file bytes: network access on, max CPE,
//!   one upstream (24) and one downstream (25) service flow, shaper's targets block (43),
//!   optional Ed25519 signature, CM and CMTS MICs.
//! - [`load_and_verify`]: file → [`ModemConfig`] (the QoS the file grants), refusing files
//!   whose MICs or signature do not hold; the controller enforces operator-dropped files with
//!   it, and keeps the previous file in force when it fails.
//! - [`ConfigStore`]: atomic, versioned writes under names that cannot be guessed.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::proto::docsis::{
    self, ClassOfService, CmtsKey, ConfigFile, Direction, EncodeError, FieldError, KeyId,
    QOS_SET_ALL, SCHEDULING_BEST_EFFORT, SUB_AVAILABILITY, SUB_ERROR_RATE, SUB_LOSS, SUB_MODEM_ID,
    SUB_MTU, SUB_REPAIR_TIME, SUB_SETUP_TIME, ServiceFlow, SignatureError, Signer, Tlv, TlvPath,
    TrustedKeys, VENDOR_SPECIFIC, VendorSpecific, VerifyError, is_shaper_block, is_signature_block,
    shaper_block, uint,
};
use crate::provision::{QosError, QosLevel, ServiceTargets};

/// Service flow reference of the upstream flow shaper writes.
pub const US_FLOW_REF: u16 = 1;
/// Service flow reference of the downstream flow shaper writes.
pub const DS_FLOW_REF: u16 = 2;
/// Largest rate a DOCSIS service flow carries: sub-TLV 8/10 is 4 bytes (MULPI C.2.2.5.2).
pub const MAX_DOCSIS_RATE_BPS: u64 = u32::MAX as u64;
/// Longest modem id carried in the targets block (the block must stay ≤ 255 bytes).
pub const MAX_MODEM_ID_LEN: usize = 200;
/// Largest file [`load_and_verify`] reads; real files are a few hundred bytes.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// Why a file could not be built, stored, loaded or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("invalid QoS level: {0}")]
    Qos(#[from] QosError),
    #[error(
        "{field}: {value} bit/s is above 4294967295 bit/s, the largest rate a DOCSIS service flow carries (4-byte TLV 24/25.8 and .10)"
    )]
    RateAboveDocsis { field: &'static str, value: u64 },
    #[error("modem id: {len} bytes; 1..={MAX_MODEM_ID_LEN} are allowed")]
    ModemIdLength { len: usize },
    #[error("encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("setting: {0}")]
    Field(#[from] FieldError),
    #[error("MIC check failed: {0}")]
    Mic(#[from] VerifyError),
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `len` is the file's real size.
    #[error(
        "{path}: {len} bytes, larger than any configuration file (the limit is {MAX_FILE_LEN} bytes, 1 MiB)"
    )]
    TooLarge { path: PathBuf, len: u64 },
    #[error(
        "{path}: more than the {MAX_FILE_LEN}-byte (1 MiB) limit of a configuration file (it grew while being read)"
    )]
    GrewTooLarge { path: PathBuf },
    /// A directory, FIFO, socket, device or symbolic link.
    #[error("{path}: {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
}

/// What kind of file `t` is, in words ("a FIFO", …).
#[must_use]
pub fn file_kind(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "an unknown kind of file"
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigFileError + '_ {
    move |source| ConfigFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a file says: the modem it was made for (if it carries shaper's targets block), the
/// QoS it grants, and how it was authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModemConfig {
    /// Modem id from the targets block (43.7); `None` in files shaper did not make.
    pub modem: Option<String>,
    /// The QoS the primary flows grant, with burst, priority, MTU and targets.
    pub qos: QosLevel,
    /// TLV 3; `None` when absent (DOCSIS then leaves the CPE side to the CMTS).
    pub network_access: Option<bool>,
    /// TLV 18.
    pub max_cpe: Option<u8>,
    /// Key that signed the file, when signatures were checked.
    pub signed_by: Option<KeyId>,
    /// Service flows beyond the primary upstream and downstream ones (not enforced).
    pub extra_flows: usize,
}

fn rate32(field: &'static str, v: Option<u64>) -> Result<Option<u32>, ConfigFileError> {
    v.map(|value| {
        u32::try_from(value).map_err(|_| ConfigFileError::RateAboveDocsis { field, value })
    })
    .transpose()
}

/// The settings (without signature and MICs) of `modem`'s file for `qos`.
///
/// Mapping (docs/MODEM-CONFIG.md "What the file holds"): max rates → 24/25.8, committed rates
/// → 24/25.10, burst → 24/25.9, priority → 24/25.7; MTU, service targets and the modem id go
/// in shaper's TLV 43 block. A rate above 4294967295 bit/s is an error, not a clamp: the file
/// must grant what the data plane enforces, and a silent clamp would make them disagree.
///
/// # Errors
/// An invalid level, a rate above the DOCSIS maximum, a modem id of 0 or > 200 bytes.
pub fn settings(modem: &str, qos: &QosLevel, max_cpe: u8) -> Result<Vec<Tlv>, ConfigFileError> {
    qos.validate()?;
    if modem.is_empty() || modem.len() > MAX_MODEM_ID_LEN {
        return Err(ConfigFileError::ModemIdLength { len: modem.len() });
    }
    let QosLevel {
        max_up_bps,
        max_down_bps,
        committed_up_bps,
        committed_down_bps,
        burst_bytes,
        priority,
        mtu,
        targets,
    } = *qos;
    let flow = |direction, reference, max, committed| -> Result<Tlv, ConfigFileError> {
        let mut f = ServiceFlow::new(direction);
        f.reference = Some(reference);
        f.qos_param_set_type = Some(QOS_SET_ALL);
        f.traffic_priority = priority;
        f.max_sustained_rate = max;
        f.max_traffic_burst = burst_bytes;
        f.min_reserved_rate = committed;
        if direction == Direction::Up {
            f.scheduling_type = Some(SCHEDULING_BEST_EFFORT);
        }
        Ok(f.to_tlv()?)
    };
    let us = flow(
        Direction::Up,
        US_FLOW_REF,
        rate32("max_up_bps", max_up_bps)?,
        rate32("committed_up_bps", committed_up_bps)?,
    )?;
    let ds = flow(
        Direction::Down,
        DS_FLOW_REF,
        rate32("max_down_bps", max_down_bps)?,
        rate32("committed_down_bps", committed_down_bps)?,
    )?;
    let ServiceTargets {
        availability_ppm,
        error_rate_ppm,
        loss_ppm,
        setup_time_ms,
        repair_time_ms,
    } = targets;
    let p = Some(VENDOR_SPECIFIC);
    let mut block = Vec::with_capacity(7);
    for (code, v) in [
        (SUB_AVAILABILITY, availability_ppm),
        (SUB_ERROR_RATE, error_rate_ppm),
        (SUB_LOSS, loss_ppm),
        (SUB_SETUP_TIME, setup_time_ms),
        (SUB_REPAIR_TIME, repair_time_ms),
    ] {
        block.extend(v.map(|v| Tlv::uint(p, code, 4, v)));
    }
    block.extend(mtu.map(|m| Tlv::uint(p, SUB_MTU, 2, m.into())));
    block.push(Tlv::leaf(p, SUB_MODEM_ID, modem.as_bytes().to_vec()));
    Ok(vec![
        Tlv::network_access(true),
        Tlv::max_cpe(max_cpe),
        us,
        ds,
        shaper_block(block),
    ])
}

/// What [`build`] needs besides the modem and its QoS.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions<'a> {
    /// The CMTS shared secret for the CMTS MIC.
    pub cmts_key: &'a CmtsKey,
    /// Signs the file when given.
    pub signer: Option<&'a Signer>,
    /// TLV 18, how many CPEs may sit behind the modem.
    pub max_cpe: u8,
}

/// The complete file for `modem` at `qos`: [`settings`], then signature and MICs.
///
/// # Errors
/// As [`settings`], and encoding errors.
pub fn build(
    modem: &str,
    qos: &QosLevel,
    opts: &BuildOptions<'_>,
) -> Result<Vec<u8>, ConfigFileError> {
    let BuildOptions {
        cmts_key,
        signer,
        max_cpe,
    } = *opts;
    let s = settings(modem, qos, max_cpe)?;
    Ok(docsis::build(&s, cmts_key, signer)?)
}

/// The files of many modems at once, in order: as [`build`] for each, but a signed batch is
/// signed with one Ed25519 signature per up to 32 files (`proto::docsis::build_batch`), the
/// fast path for regenerating every modem's file after a plan change. Each file verifies on
/// its own.
///
/// # Errors
/// As [`build`], for the first modem that fails.
pub fn build_batch(
    modems: &[(&str, &QosLevel)],
    opts: &BuildOptions<'_>,
) -> Result<Vec<Vec<u8>>, ConfigFileError> {
    let BuildOptions {
        cmts_key,
        signer,
        max_cpe,
    } = *opts;
    let all = modems
        .iter()
        .map(|(m, q)| settings(m, q, max_cpe))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match signer {
        Some(s) => docsis::build_batch(&all, cmts_key, s)?,
        None => all
            .iter()
            .map(|st| docsis::build(st, cmts_key, None))
            .collect::<Result<_, _>>()?,
    })
}

/// Reads shaper's targets block (MTU, targets, modem id) into `qos`; returns the modem id.
fn read_targets(file: &ConfigFile, qos: &mut QosLevel) -> Result<Option<String>, ConfigFileError> {
    let mut blocks = file
        .tlvs
        .iter()
        .filter(|t| is_shaper_block(t) && !is_signature_block(t));
    let Some(block) = blocks.next() else {
        return Ok(None);
    };
    if blocks.next().is_some() {
        return Err(FieldError::Duplicate {
            path: TlvPath::new(None, VENDOR_SPECIFIC),
        }
        .into());
    }
    let v = VendorSpecific::from_tlv(block)?;
    let p = Some(VENDOR_SPECIFIC);
    let mut modem = None;
    for s in &v.subs {
        let path = TlvPath::new(p, s.code());
        let data = s.data().unwrap_or_default();
        let slot = match s.code() {
            SUB_AVAILABILITY => &mut qos.targets.availability_ppm,
            SUB_ERROR_RATE => &mut qos.targets.error_rate_ppm,
            SUB_LOSS => &mut qos.targets.loss_ppm,
            SUB_SETUP_TIME => &mut qos.targets.setup_time_ms,
            SUB_REPAIR_TIME => &mut qos.targets.repair_time_ms,
            SUB_MTU => {
                let m = uint(path, data, 2)?;
                qos.mtu = Some(u16::try_from(m).expect("two bytes"));
                continue;
            }
            SUB_MODEM_ID => {
                let id = std::str::from_utf8(data).map_err(|_| FieldError::Invalid {
                    path,
                    what: "modem id is not UTF-8",
                })?;
                modem = Some(id.to_owned());
                continue;
            }
            _ => continue,
        };
        *slot = Some(uint(path, data, 4)?);
    }
    Ok(modem)
}

/// DOCSIS reads a max sustained or min reserved rate of 0 as "not set" (MULPI C.2.2.5.2,
/// C.2.2.5.4).
fn rate(v: Option<u32>) -> Option<u64> {
    v.filter(|&r| r != 0).map(u64::from)
}

/// The QoS a decoded file grants.
///
/// The primary flows are the first TLV 24 and the first TLV 25 (MULPI: the first upstream
/// flow is the primary one); others are counted in `extra_flows`. When the two directions
/// disagree on burst or priority, the smaller is taken (the data plane has one of each per
/// modem; the smaller never exceeds what either direction grants). A file without service
/// flows is read through its DOCSIS 1.0 class of service (TLV 4). The result must pass
/// [`QosLevel::validate`].
///
/// # Errors
/// A malformed setting, or a level that does not validate (the error names the field).
pub fn modem_config(file: &ConfigFile) -> Result<ModemConfig, ConfigFileError> {
    let flows = file.service_flows()?;
    let us = flows.iter().find(|f| f.direction == Direction::Up);
    let ds = flows.iter().find(|f| f.direction == Direction::Down);
    let mut qos = QosLevel::default();
    if us.is_some() || ds.is_some() {
        let min2 = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        qos.max_up_bps = rate(us.and_then(|f| f.max_sustained_rate));
        qos.committed_up_bps = rate(us.and_then(|f| f.min_reserved_rate));
        qos.max_down_bps = rate(ds.and_then(|f| f.max_sustained_rate));
        qos.committed_down_bps = rate(ds.and_then(|f| f.min_reserved_rate));
        qos.burst_bytes = min2(
            us.and_then(|f| f.max_traffic_burst),
            ds.and_then(|f| f.max_traffic_burst),
        );
        qos.priority = min2(
            us.and_then(|f| f.traffic_priority).map(u32::from),
            ds.and_then(|f| f.traffic_priority).map(u32::from),
        )
        .map(|p| u8::try_from(p).expect("0..=7"));
    } else if let Some(cos) = file.class_of_service()? {
        let ClassOfService {
            max_rate_down,
            max_rate_up,
            priority_up,
            guaranteed_up,
            max_burst_up,
            ..
        } = cos;
        qos.max_down_bps = rate(max_rate_down);
        qos.max_up_bps = rate(max_rate_up);
        qos.committed_up_bps = rate(guaranteed_up);
        qos.priority = priority_up;
        qos.burst_bytes = max_burst_up.map(u32::from);
    }
    let modem = read_targets(file, &mut qos)?;
    qos.validate()?;
    Ok(ModemConfig {
        modem,
        qos,
        network_access: file.network_access()?,
        max_cpe: file.max_cpe()?,
        signed_by: None,
        extra_flows: flows.len() - usize::from(us.is_some()) - usize::from(ds.is_some()),
    })
}

/// Checks `bytes` and returns what it grants: both MICs with `cmts_key`; and, when `trusted`
/// is not empty, a valid signature by one of its keys is required (an unsigned file is then
/// refused). With no trusted keys, signatures are not checked.
///
/// # Errors
/// The first check that fails, naming the MIC, signature or setting at fault.
pub fn verify(
    bytes: &[u8],
    cmts_key: &CmtsKey,
    trusted: &TrustedKeys,
) -> Result<ModemConfig, ConfigFileError> {
    docsis::verify_mics(bytes, cmts_key)?;
    let signed_by = if trusted.is_empty() {
        None
    } else {
        Some(docsis::verify_signature(bytes, trusted)?)
    };
    let file = ConfigFile::decode(bytes).map_err(VerifyError::from)?;
    Ok(ModemConfig {
        signed_by,
        ..modem_config(&file)?
    })
}

/// Reads the file at `path` and [`verify`]s it. The controller calls this on files it made
/// and on files an operator dropped in; on error the previous file stays in force.
///
/// # Errors
/// I/O errors with the path, a file over [`MAX_FILE_LEN`], and [`verify`]'s errors.
pub fn load_and_verify(
    path: &Path,
    cmts_secret: &CmtsKey,
    trusted_keys: &TrustedKeys,
) -> Result<ModemConfig, ConfigFileError> {
    let f = File::open(path).map_err(io_err(path))?;
    verify(&read_opened(f, path)?, cmts_secret, trusted_keys)
}

/// Reads an opened configuration file (`path` names it in errors): it must be a regular file
/// of at most [`MAX_FILE_LEN`] bytes; a larger one is refused with its real size, unread.
///
/// # Errors
/// Not a regular file, too large, or an I/O error.
pub fn read_opened(f: File, path: &Path) -> Result<Vec<u8>, ConfigFileError> {
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(ConfigFileError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(meta.file_type()),
        });
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(ConfigFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(ConfigFileError::GrewTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. A reader (the TFTP server) sees the old file
/// or the new one, never a mix, and a crash leaves one of them.
///
/// # Errors
/// Any I/O error, with the path it concerns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConfigFileError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "cfg".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Where the generated files live, and under which names.
///
/// A modem learns its file name from DHCP (`file`/option 67) and fetches it by TFTP, where
/// anyone on the cable segment can ask for any name; a guessable name (`<mac>.cfg`) would let
/// one subscriber fetch another's file. The name of version `v` of modem `m` is
/// `hex(HMAC-SHA256(name_key, "shaper-docsis-name-v1" ‖ 0x00 ‖ len(m) as u32 BE ‖ m ‖ v as u64
/// BE)[..16]) + ".cfg"`: 128 bits no one without `name_key` can predict, yet stable, so the
/// controller recomputes it to tell the modem (and to revert to the previous version) without
/// keeping an index.
///
/// Versions are consecutive per modem from 1; writing version `v` removes version `v - keep`,
/// so the last `keep` versions stay on disk for revert. Version 0 is reserved: the modem
/// pipeline ([`super::pipeline`]) keeps a copy of the newest version under it, the stable name
/// a DHCP server hands the modem as its boot file; it is never pruned.
#[derive(Clone)]
pub struct ConfigStore {
    dir: PathBuf,
    name_key: [u8; 32],
    keep: u64,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("dir", &self.dir)
            .field("name_key", &"<redacted>")
            .field("keep", &self.keep)
            .finish()
    }
}

/// Domain separation of the file-name HMAC.
const NAME_CONTEXT: &[u8] = b"shaper-docsis-name-v1\0";

impl ConfigStore {
    /// A store in `dir` naming files with `name_key` (32 random bytes from the caller, kept
    /// secret and stable across restarts) and keeping `keep` (≥ 1) versions per modem.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, name_key: [u8; 32], keep: u64) -> ConfigStore {
        ConfigStore {
            dir: dir.into(),
            name_key,
            keep: keep.max(1),
        }
    }

    /// The file name of `version` of `modem`'s file.
    #[must_use]
    pub fn file_name(&self, modem: &str, version: u64) -> String {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.name_key)
            .expect("HMAC accepts keys of any length");
        mac.update(NAME_CONTEXT);
        let len = u32::try_from(modem.len()).unwrap_or(u32::MAX);
        mac.update(&len.to_be_bytes());
        mac.update(modem.as_bytes());
        mac.update(&version.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut name: String = tag[..16].iter().map(|b| format!("{b:02x}")).collect();
        name.push_str(".cfg");
        name
    }

    /// The path of `version` of `modem`'s file.
    #[must_use]
    pub fn path(&self, modem: &str, version: u64) -> PathBuf {
        self.dir.join(self.file_name(modem, version))
    }

    /// Writes `version` of `modem`'s file atomically and removes version `version - keep`.
    /// Returns the path written.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn write(
        &self,
        modem: &str,
        version: u64,
        bytes: &[u8],
    ) -> Result<PathBuf, ConfigFileError> {
        let path = self.path(modem, version);
        write_atomic(&path, bytes)?;
        // Version 0 is the stable "current" name (docs/MODEM-CONFIG.md): never pruned.
        if let Some(old) = version.checked_sub(self.keep).filter(|&v| v > 0) {
            let old = self.path(modem, old);
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&old)(e)),
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests;
