//! Running the real `shaper run` binary in a test's namespace, and talking HTTP to its API.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shaper::lab::in_netns;

/// Kills the shaper process and removes its pins and temporary directory, also on panic.
pub struct Guard {
    pub child: Option<Child>,
    pub pins: PathBuf,
    pub dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `shaper run --netns NS`; stderr goes to `log`. (`--netns`, not `ip netns exec`:
/// the latter's private mount namespace would take the pins down with the process.)
pub fn start(ns: &str, config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(["run", "--netns", ns, "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shaper run")
}

/// One HTTP/1.1 exchange with the API on the namespace's loopback: (status, body).
pub fn http(
    ns: &str,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream =
        in_netns(ns, || TcpStream::connect(("127.0.0.1", port))).expect("enter the namespace")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
