//! Where files come from: the [`Handler`] seam (async-tftp's, docs/ARCHITECTURE.md §7) and a
//! filesystem implementation confined to one directory.
//!
//! Names come from clients: errors and log lines show them through [`Shown`] (at most
//! [`SHOWN_NAME_CHARS`] characters), and a name longer than a file name can be
//! ([`MAX_NAME_LEN`], [`MAX_COMPONENT_LEN`]) is refused before the filesystem sees it.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::proto::tftp::ErrorCode;

/// Longest name served, in bytes (Linux `PATH_MAX` is 4096; DOCSIS file names are short).
pub const MAX_NAME_LEN: usize = 1024;
/// Longest component of a name, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// How many characters of a client-supplied name messages and logs show.
pub const SHOWN_NAME_CHARS: usize = 64;

/// A client-supplied name as messages and logs show it: quoted and escaped like `{:?}`, cut
/// after [`SHOWN_NAME_CHARS`] characters (then `…` and its length in bytes).
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a>(pub &'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(SHOWN_NAME_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Maps a requested name to the file's bytes. Shared by the TFTP server and the HTTP router,
/// so both serve exactly the same files; a DOCSIS generator can build a file per modem here.
///
/// `open` is called on a runtime worker thread: it must be quick (a read of a small file from
/// the page cache, or a lookup in memory).
pub trait Handler: Send + Sync + 'static {
    /// The whole content of `path` (a name as the client sent it).
    ///
    /// # Errors
    /// Why the name is refused or cannot be read.
    fn open(&self, path: &str) -> Result<Arc<[u8]>, HandlerError>;
}

/// Why a requested name has no content.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The name breaks a rule before touching the filesystem.
    #[error("requested path {} rejected: {reason}", Shown(.path))]
    InvalidPath {
        /// The name as requested.
        path: String,
        /// Which rule.
        reason: PathRejection,
    },
    /// After resolving symlinks the name leaves the root.
    #[error("requested path {} resolves to {resolved:?}, outside the root {root:?}", Shown(.path))]
    OutsideRoot {
        /// The name as requested.
        path: String,
        /// Where it leads.
        resolved: PathBuf,
        /// The served root.
        root: PathBuf,
    },
    /// Nothing by that name.
    #[error("requested path {} not found", Shown(.path))]
    NotFound {
        /// The name as requested.
        path: String,
    },
    /// A directory, device, FIFO or socket.
    #[error("requested path {} is not a regular file", Shown(.path))]
    NotAFile {
        /// The name as requested.
        path: String,
    },
    /// Larger than the handler serves.
    #[error("requested path {} is {len} bytes, over the {max}-byte limit", Shown(.path))]
    TooLarge {
        /// The name as requested.
        path: String,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error("reading {}", Shown(.path))]
    Io {
        /// The name as requested.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The root itself is unusable.
    #[error("served root {root:?}")]
    Root {
        /// The configured root.
        root: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The rule a requested name broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRejection {
    /// Empty name.
    #[error("empty name")]
    Empty,
    /// Contains NUL (would cut the name in any C API).
    #[error("contains NUL")]
    Nul,
    /// Absolute path.
    #[error("absolute path")]
    Absolute,
    /// A `..` component.
    #[error("`..` component")]
    ParentDir,
    /// Longer than any file name can be.
    #[error("{len} bytes long, over the {max}-byte limit")]
    TooLong {
        /// The name's (or its longest component's) length.
        len: usize,
        /// [`MAX_NAME_LEN`] or [`MAX_COMPONENT_LEN`].
        max: usize,
    },
}

impl HandlerError {
    /// The TFTP error code for this failure (RFC 1350 appendix).
    #[must_use]
    pub fn tftp_code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::FileNotFound,
            Self::InvalidPath { .. } | Self::OutsideRoot { .. } | Self::NotAFile { .. } => {
                ErrorCode::AccessViolation
            }
            Self::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                ErrorCode::AccessViolation
            }
            Self::TooLarge { .. } | Self::Io { .. } | Self::Root { .. } => ErrorCode::NotDefined,
        }
    }

    /// A short message for the TFTP ERROR packet: it reveals nothing about the filesystem and
    /// keeps the reply small (amplification).
    #[must_use]
    pub fn tftp_message(&self) -> &'static str {
        match self.tftp_code() {
            ErrorCode::FileNotFound => "not found",
            ErrorCode::AccessViolation => "access denied",
            _ => "unavailable",
        }
    }
}

/// Checks a requested name without touching the filesystem: not empty, at most
/// [`MAX_NAME_LEN`] bytes, no NUL, relative, no `..` component, no component over
/// [`MAX_COMPONENT_LEN`] bytes.
///
/// # Errors
/// The first rule broken.
pub fn check_name(path: &str) -> Result<(), PathRejection> {
    if path.is_empty() {
        return Err(PathRejection::Empty);
    }
    if path.len() > MAX_NAME_LEN {
        return Err(PathRejection::TooLong {
            len: path.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(len) = path
        .split('/')
        .map(str::len)
        .find(|l| *l > MAX_COMPONENT_LEN)
    {
        return Err(PathRejection::TooLong {
            len,
            max: MAX_COMPONENT_LEN,
        });
    }
    if path.contains('\0') {
        return Err(PathRejection::Nul);
    }
    for c in Path::new(path).components() {
        match c {
            Component::ParentDir => return Err(PathRejection::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(PathRejection::Absolute),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}

/// Serves regular files under one directory.
///
/// Names are checked by [`check_name`], then the joined path is canonicalized (resolving every
/// symlink) and must still lie under the canonical root, so a symlink pointing outside is
/// refused while one inside the root works. Residual race: someone who can write into the root
/// could swap a checked path for a symlink between the check and the open; the root must be
/// writable only by the controller.
#[derive(Debug, Clone)]
pub struct FsHandler {
    root: PathBuf,
    max_len: u64,
}

/// Default largest file [`FsHandler`] serves: 64 MiB, far above any modem configuration file
/// or firmware image it is meant for, and bounded because files are held in memory.
pub const DEFAULT_MAX_LEN: u64 = 64 << 20;

impl FsHandler {
    /// Serves `root`, which must exist and be a directory.
    ///
    /// # Errors
    /// [`HandlerError::Root`] when `root` cannot be canonicalized or is not a directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, HandlerError> {
        let given = root.as_ref();
        let root = std::fs::canonicalize(given).map_err(|source| HandlerError::Root {
            root: given.into(),
            source,
        })?;
        if !root.is_dir() {
            return Err(HandlerError::Root {
                root,
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Self {
            root,
            max_len: DEFAULT_MAX_LEN,
        })
    }

    /// Sets the largest file served.
    #[must_use]
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    /// The canonical root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Handler for FsHandler {
    fn open(&self, path: &str) -> Result<Arc<[u8]>, HandlerError> {
        check_name(path).map_err(|reason| HandlerError::InvalidPath {
            path: path.into(),
            reason,
        })?;
        let io_err = |source: io::Error| {
            // No file can have a name the filesystem finds invalid (ENAMETOOLONG, …).
            if matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidFilename
            ) {
                HandlerError::NotFound { path: path.into() }
            } else {
                HandlerError::Io {
                    path: path.into(),
                    source,
                }
            }
        };
        let resolved = std::fs::canonicalize(self.root.join(path)).map_err(io_err)?;
        if !resolved.starts_with(&self.root) {
            return Err(HandlerError::OutsideRoot {
                path: path.into(),
                resolved,
                root: self.root.clone(),
            });
        }
        let file = std::fs::File::open(&resolved).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(HandlerError::NotAFile { path: path.into() });
        }
        if meta.len() > self.max_len {
            return Err(HandlerError::TooLarge {
                path: path.into(),
                len: meta.len(),
                max: self.max_len,
            });
        }
        let cap = usize::try_from(meta.len()).unwrap_or(0);
        let mut data = Vec::with_capacity(cap);
        // `take` bounds a file that grows while being read.
        file.take(self.max_len + 1)
            .read_to_end(&mut data)
            .map_err(io_err)?;
        if data.len() as u64 > self.max_len {
            return Err(HandlerError::TooLarge {
                path: path.into(),
                len: data.len() as u64,
                max: self.max_len,
            });
        }
        Ok(data.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempdir::Dir, FsHandler) {
        let d = tempdir::Dir::new();
        std::fs::create_dir(d.0.join("root")).unwrap();
        std::fs::create_dir(d.0.join("root/sub")).unwrap();
        std::fs::write(d.0.join("root/cm.cfg"), b"config").unwrap();
        std::fs::write(d.0.join("root/sub/a.bin"), b"sub").unwrap();
        std::fs::write(d.0.join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.0.join("secret"), d.0.join("root/escape")).unwrap();
        std::os::unix::fs::symlink("cm.cfg", d.0.join("root/alias")).unwrap();
        let h = FsHandler::new(d.0.join("root")).unwrap();
        (d, h)
    }

    mod tempdir {
        use std::path::PathBuf;
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "shaper-tftp-h-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn serves_files_inside_the_root() {
        let (_d, h) = tmp();
        assert_eq!(&*h.open("cm.cfg").unwrap(), b"config");
        assert_eq!(&*h.open("sub/a.bin").unwrap(), b"sub");
        assert_eq!(&*h.open("./sub//a.bin").unwrap(), b"sub");
        assert_eq!(
            &*h.open("alias").unwrap(),
            b"config",
            "symlink inside the root"
        );
    }

    #[test]
    fn refuses_names_that_leave_the_root() {
        let (_d, h) = tmp();
        for (name, want) in [
            ("", PathRejection::Empty),
            ("a\0b", PathRejection::Nul),
            ("/etc/passwd", PathRejection::Absolute),
            ("../secret", PathRejection::ParentDir),
            ("sub/../../secret", PathRejection::ParentDir),
            ("sub/..", PathRejection::ParentDir),
            (
                "d/".repeat(600).as_str(),
                PathRejection::TooLong {
                    len: 1200,
                    max: MAX_NAME_LEN,
                },
            ),
            (
                format!("sub/{}.cfg", "a".repeat(300)).as_str(),
                PathRejection::TooLong {
                    len: 304,
                    max: MAX_COMPONENT_LEN,
                },
            ),
        ] {
            match h.open(name) {
                Err(HandlerError::InvalidPath { reason, .. }) => assert_eq!(reason, want, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let e = h.open("escape").unwrap_err();
        assert!(matches!(e, HandlerError::OutsideRoot { .. }), "{e:?}");
        assert_eq!(e.tftp_code(), ErrorCode::AccessViolation);
    }

    #[test]
    fn names_in_messages_are_cut_after_64_characters() {
        let long = format!("{}.cfg", "é".repeat(5000));
        let e = HandlerError::NotFound { path: long.clone() };
        let text = e.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.contains(&format!("\"{}\"… (10004 bytes)", "é".repeat(64))),
            "{text}"
        );
        assert_eq!(Shown("cm.cfg").to_string(), "\"cm.cfg\"");
        assert_eq!(Shown("a\nb").to_string(), "\"a\\nb\"");
        // Within the limits but no file: not found, not an I/O failure.
        let (_d, h) = tmp();
        let name = format!("{}.cfg", "a".repeat(250));
        assert!(matches!(h.open(&name), Err(HandlerError::NotFound { .. })));
    }

    #[test]
    fn missing_directories_and_large_files() {
        let (d, h) = tmp();
        let e = h.open("nope.cfg").unwrap_err();
        assert!(matches!(e, HandlerError::NotFound { .. }), "{e:?}");
        assert_eq!(e.tftp_code(), ErrorCode::FileNotFound);
        assert_eq!(e.tftp_message(), "not found");
        let e = h.open("sub").unwrap_err();
        assert!(matches!(e, HandlerError::NotAFile { .. }), "{e:?}");
        let small = FsHandler::new(d.0.join("root")).unwrap().with_max_len(3);
        assert!(small.open("sub/a.bin").is_ok());
        assert!(matches!(
            small.open("cm.cfg").unwrap_err(),
            HandlerError::TooLarge { len: 6, max: 3, .. }
        ));
        assert!(matches!(
            FsHandler::new(d.0.join("root/cm.cfg")).unwrap_err(),
            HandlerError::Root { .. }
        ));
    }
}
