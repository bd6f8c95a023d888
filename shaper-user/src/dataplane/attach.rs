//! Attaching the programs to interfaces: XDP (native, or generic with a warning) and TC
//! egress (TCX), as bpf_links pinned beside the maps so that they outlive the process; a
//! restarted controller swaps its programs into the pinned links with `BPF_LINK_UPDATE`.

use std::path::Path;

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
    xdp::XdpLink,
};
use tracing::{info, warn};

use super::{Dataplane, DataplaneError, Result, Role, prog_err};
use crate::abi::ABI_VERSION;

/// An attachment made by this process.
#[derive(Debug)]
pub(super) enum Attached {
    /// Pinned, or kept open by this process (dropped = detached).
    Xdp {
        ifname: String,
        link: Option<FdLink>,
        generic: bool,
    },
    Tc {
        ifname: String,
        link: Option<FdLink>,
    },
}

/// Mounts a bpffs at `/sys/fs/bpf` when none is mounted there (docs/ARCHITECTURE.md §4).
pub fn ensure_bpffs() -> Result<()> {
    let path = Path::new("/sys/fs/bpf");
    let c = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    // SAFETY: statfs on a valid NUL-terminated path into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    if rc == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| DataplaneError::Bpffs {
        path: path.into(),
        source,
    })?;
    let fstype = std::ffi::CString::new("bpf").unwrap();
    // SAFETY: valid C strings; mounting a bpffs has no other preconditions.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Bpffs {
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    warn!("no bpffs was mounted at /sys/fs/bpf: mounted one");
    Ok(())
}

impl Dataplane {
    /// Attaches the XDP ingress program for `role` to `ifname`: native mode, or generic with a
    /// warning when the driver has no native XDP. With pinning, an existing pinned link is
    /// updated in place (no gap), otherwise a new link is created and pinned.
    pub fn attach_xdp(&mut self, ifname: &str, role: Role) -> Result<()> {
        let ifindex = ifindex(ifname)?;
        let name = role.xdp_program();
        let link_path = self
            .dir
            .as_ref()
            .map(|d| d.join("links").join(format!("xdp-{ifname}")));
        self.adopt_older_link(link_path.as_deref())?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .expect("loaded")
            .try_into()
            .map_err(prog_err(name))?;
        if let Some(path) = link_path.as_ref().filter(|p| p.exists()) {
            let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let link =
                XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
            let id = prog.attach_to_link(link).map_err(prog_err(name))?;
            let link = prog.take_link(id).map_err(prog_err(name))?;
            let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: Box::new(e),
            })?;
            info!(
                ifname,
                ifindex,
                program = name,
                "XDP program replaced in the pinned link"
            );
            self.attached.push(Attached::Xdp {
                ifname: ifname.into(),
                link: Some(fd),
                generic: false,
            });
            return Ok(());
        }
        let (id, generic) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(id) => (id, false),
            Err(e) => {
                warn!(ifname, error = %e, "native XDP unavailable, falling back to generic (skb) mode: slower");
                (
                    prog.attach_to_if_index(ifindex, XdpMode::Skb)
                        .map_err(prog_err(name))?,
                    true,
                )
            }
        };
        let link = prog.take_link(id).map_err(prog_err(name))?;
        let fd = match FdLink::try_from(link) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(DataplaneError::Pin {
                    path: link_path.unwrap_or_default(),
                    source: format!("the kernel attached XDP without a bpf_link ({e}); shaper needs kernel >= 5.9").into(),
                });
            }
        };
        let fd = match link_path {
            Some(path) => {
                let pinned = fd.pin(&path).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                FdLink::from(pinned)
            }
            None => fd,
        };
        info!(ifname, ifindex, program = name, generic, "XDP attached");
        self.attached.push(Attached::Xdp {
            ifname: ifname.into(),
            link: Some(fd),
            generic,
        });
        Ok(())
    }

    /// Attaches the TC egress program for `role` to `ifname` as a TCX link (kernel ≥ 6.6),
    /// replacing a pinned one in place.
    pub fn attach_tc(&mut self, ifname: &str, role: Role) -> Result<()> {
        ifindex(ifname)?;
        let name = role.tc_program();
        let link_path = self
            .dir
            .as_ref()
            .map(|d| d.join("links").join(format!("tc-{ifname}")));
        self.adopt_older_link(link_path.as_deref())?;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .expect("loaded")
            .try_into()
            .map_err(prog_err(name))?;
        let id = if let Some(path) = link_path.as_ref().filter(|p| p.exists()) {
            let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Pin {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| {
                DataplaneError::Pin {
                    path: path.clone(),
                    source: Box::new(e),
                }
            })?;
            prog.attach_to_link(link).map_err(prog_err(name))?
        } else {
            prog.attach_with_options(
                ifname,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(prog_err(name))?
        };
        let link = prog.take_link(id).map_err(prog_err(name))?;
        let fd = FdLink::try_from(link).map_err(|e| DataplaneError::Pin {
            path: link_path.clone().unwrap_or_default(),
            source: format!(
                "TC attached without a bpf_link ({e}); shaper needs kernel >= 6.6 (TCX)"
            )
            .into(),
        })?;
        let fd = match link_path {
            Some(path) if !path.exists() => {
                let pinned = fd.pin(&path).map_err(|e| DataplaneError::Pin {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                FdLink::from(pinned)
            }
            _ => fd,
        };
        info!(ifname, program = name, "TC egress attached");
        self.attached.push(Attached::Tc {
            ifname: ifname.into(),
            link: Some(fd),
        });
        Ok(())
    }

    /// An upgrade across ABI versions: the interface's link may be pinned under an older
    /// version's directory (`<pin_root>/v<N>/links/`), attached with the old programs. Moving
    /// the pin to this version's path lets the caller swap the new program into the same link
    /// (no gap, and no EBUSY from a second XDP attach). Once an old version has no links
    /// left, its maps are unpinned: no program uses them any more.
    fn adopt_older_link(&self, link_path: Option<&Path>) -> Result<()> {
        let (Some(path), Some(dir)) = (link_path, self.dir.as_ref()) else {
            return Ok(());
        };
        if path.exists() {
            return Ok(());
        }
        let (Some(root), Some(file)) = (dir.parent(), path.file_name()) else {
            return Ok(());
        };
        for v in (1..ABI_VERSION).rev() {
            let old_dir = root.join(format!("v{v}"));
            let old = old_dir.join("links").join(file);
            if !old.exists() {
                continue;
            }
            std::fs::rename(&old, path).map_err(|source| DataplaneError::Bpffs {
                path: old.clone(),
                source,
            })?;
            info!(from = %old.display(), to = %path.display(), "adopted a link pinned by ABI v{v}");
            let links_left = std::fs::read_dir(old_dir.join("links"))
                .map(|d| d.count())
                .unwrap_or(0);
            if links_left == 0 {
                let _ = std::fs::remove_dir_all(&old_dir);
                info!(dir = %old_dir.display(), "unpinned the maps of ABI v{v}: no link uses them");
            }
            return Ok(());
        }
        Ok(())
    }

    /// Detaches everything this data plane attached and removes the pins: enforcement stops.
    /// (Dropping the `Dataplane` does not detach pinned links: that is the point of pinning.)
    pub fn detach_all(&mut self) -> Result<()> {
        for a in self.attached.drain(..) {
            let (kind, ifname, link) = match a {
                Attached::Xdp { ifname, link, .. } => ("xdp", ifname, link),
                Attached::Tc { ifname, link } => ("tc", ifname, link),
            };
            if let Some(dir) = &self.dir {
                let path = dir.join("links").join(format!("{kind}-{ifname}"));
                if path.exists() {
                    std::fs::remove_file(&path)
                        .map_err(|source| DataplaneError::Bpffs { path, source })?;
                }
            }
            drop(link);
        }
        Ok(())
    }

    /// Interfaces attached by this process (name, kind, generic-mode flag).
    #[must_use]
    pub fn attachments(&self) -> Vec<(String, &'static str, bool)> {
        self.attached
            .iter()
            .map(|a| match a {
                Attached::Xdp {
                    ifname, generic, ..
                } => {
                    let generic: bool = *generic;
                    (ifname.clone(), "xdp", generic)
                }
                Attached::Tc { ifname, .. } => (ifname.clone(), "tc", false),
            })
            .collect()
    }
}

fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|_| DataplaneError::UnknownInterface(ifname.into()))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DataplaneError::UnknownInterface(ifname.into()));
    }
    Ok(idx)
}
