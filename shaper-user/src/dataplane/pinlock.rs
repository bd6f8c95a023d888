//! One process per pinned data plane. Two processes loading the same pins would both swap
//! their programs into the same links and rewrite the same maps; a restart after that was seen
//! to miss the link pin and fail to attach (docs/PERFORMANCE.md, "Found on the way"). A
//! pinning [`super::Dataplane`] therefore holds an exclusive `flock` on a lock file named after
//! its pin root for as long as it lives. The kernel drops the lock when the process exits,
//! SIGKILL included, so a crashed daemon never blocks its own restart.
//!
//! bpffs holds no regular files, so the lock lives in `/run/shaper/` (the temporary directory
//! where `/run` is not writable).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::DataplaneError;

/// An exclusive lock on a pin root, released on drop (or process exit).
#[derive(Debug)]
pub struct PinLock {
    _file: File,
    path: PathBuf,
}

impl PinLock {
    /// Takes the lock of `root`, or names the process holding it.
    pub fn acquire(root: &Path) -> Result<PinLock, DataplaneError> {
        let name = lock_name(root);
        let run = Path::new("/run/shaper");
        let dir = if std::fs::create_dir_all(run).is_ok() {
            run.to_path_buf()
        } else {
            std::env::temp_dir().join("shaper-locks")
        };
        std::fs::create_dir_all(&dir).map_err(|source| DataplaneError::Bpffs {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| DataplaneError::Bpffs {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(DataplaneError::Bpffs { path, source: err });
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "a process".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(DataplaneError::PinsBusy {
                root: root.to_path_buf(),
                lock: path,
                holder,
            });
        }
        // The holder's pid, for the next one's error message.
        let pid = std::process::id().to_string();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        if let Err(source) = written {
            return Err(DataplaneError::Bpffs { path, source });
        }
        Ok(PinLock { _file: file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<root with '/' as '_'>.lock`, the lock's file name in `/run/shaper/` (or, where `/run`
/// is not writable, in the temporary directory).
fn lock_name(root: &Path) -> String {
    let name: String = root
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .collect();
    format!("{name}.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_may_take_it_after() {
        let root = std::env::temp_dir().join(format!("shaper-pinlock-test-{}", std::process::id()));
        let first = PinLock::acquire(&root).unwrap();
        let err = PinLock::acquire(&root).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains(&*root.to_string_lossy()),
            "{msg}"
        );
        let lock = first.path().to_path_buf();
        drop(first);
        let again = PinLock::acquire(&root).unwrap();
        assert_eq!(again.path(), lock);
        drop(again);
        let _ = std::fs::remove_file(lock);
    }
}
