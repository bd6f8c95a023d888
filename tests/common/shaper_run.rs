//! Running the real `shaper run` binary in a test's namespace, and talking HTTP to its API.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
    shaper::lab::http(ns, port, token, method, path, body)
}

/// The `[dataplane]` section every `shaper run` lab test uses (pins under `pins`, small
/// limits) and its two interfaces: `sub_if` facing the subscribers (with an HTB tree at
/// `htb_link_rate` when given) and `up_if` upstream.
pub fn dataplane_toml(
    pins: &Path,
    sub_if: &str,
    up_if: &str,
    htb_link_rate: Option<&str>,
) -> String {
    let htb = htb_link_rate.map_or(String::new(), |r| format!("htb_link_rate = \"{r}\"\n"));
    format!(
        "[dataplane]\npin_root = \"{}\"\n[dataplane.limits]\nmax_subscribers = 64\n\
         max_classes = 256\nmax_rule_keys = 64\nmax_rule_entries = 64\nmax_flows = 64\n\
         [[interface]]\nname = \"{sub_if}\"\nrole = \"subscriber\"\n{htb}\
         [[interface]]\nname = \"{up_if}\"\nrole = \"upstream\"\n",
        pins.display()
    )
}

/// Writes an API tokens file at `path`: one `[[token]]` per (token, role, subject), stored
/// as its digest.
pub fn write_tokens(path: &Path, tokens: &[(&str, &str, &str)]) {
    let text: String = tokens
        .iter()
        .map(|(token, role, subject)| {
            format!(
                "[[token]]\nsha256 = \"{}\"\nrole = \"{role}\"\nsubject = \"{subject}\"\n",
                shaper::api::hash_token(token)
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}
