//! RADIUS peers for tests: radclient as a client, FreeRADIUS 3.2 as a CoA receiver (a BRAS).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;
use std::time::Duration;

use shaper::lab::{NetNs, output_with_timeout};

/// Asserts root and the radclient and freeradius binaries.
pub fn require_tools() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (ip netns)");
    for bin in ["/usr/bin/radclient", "/usr/sbin/freeradius"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: run `cargo xtask deps` (freeradius-utils, freeradius)"
        );
    }
}

/// Runs `radclient -x` in the namespace against `server` ("ip:port") with the attribute list
/// `attrs`; returns stdout + stderr. A CoA or Disconnect whose `attrs` name no Event-Timestamp
/// gets one (now), as a policy server sends it: shaper requires it by default (replay
/// protection, RFC 5176 §3.6).
pub fn radclient(
    ns: &NetNs,
    dir: &Path,
    server: &str,
    kind: &str,
    secret: &str,
    attrs: &str,
) -> String {
    let file = dir.join(format!("attrs-{kind}.txt"));
    let attrs = if matches!(kind, "coa" | "disconnect") && !attrs.contains("Event-Timestamp") {
        format!("{}\nEvent-Timestamp = {}\n", attrs.trim_end(), unix_now_s())
    } else {
        attrs.to_owned()
    };
    std::fs::write(&file, attrs).unwrap();
    let mut cmd = ns.command("radclient");
    cmd.args(["-x", "-r", "2", "-t", "1", "-f"])
        .arg(&file)
        .arg(server)
        .args([kind, secret]);
    let out = output_with_timeout(&mut cmd, Duration::from_secs(20)).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- radclient {kind} {server} ---\n{text}");
    text
}

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Minimal FreeRADIUS 3.2 configuration in `dir`: a CoA listener on `127.0.0.1:port`
/// (`sites-available/coa`) for client 127.0.0.1 with `secret` and
/// `require_message_authenticator = yes`, that ACKs CoA and Disconnect, and NAKs User-Name
/// "nobody" with Session-Context-Not-Found.
pub fn freeradius_conf(dir: &Path, port: u16, secret: &str) {
    let d = dir.display();
    let conf = format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {d}
raddbdir = {d}
radacctdir = {d}
name = freeradius
confdir = {d}
modconfdir = {d}/mods-config
run_dir = {d}
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
  destination = stdout
}}
security {{
  allow_core_dumps = no
}}
thread pool {{
  start_servers = 1
  max_servers = 2
  min_spare_servers = 1
  max_spare_servers = 2
}}
modules {{
  always reject {{
    rcode = reject
  }}
  always ok {{
    rcode = ok
  }}
}}
client shaper {{
  ipaddr = 127.0.0.1
  secret = {secret}
  require_message_authenticator = yes
}}
listen {{
  type = coa
  ipaddr = 127.0.0.1
  port = {port}
  virtual_server = coa
}}
server coa {{
  recv-coa {{
    if (&User-Name == "nobody") {{
      update reply {{
        Error-Cause := Session-Context-Not-Found
      }}
      reject
    }}
    ok
  }}
  send-coa {{
    ok
  }}
}}
"#
    );
    std::fs::write(dir.join("radiusd.conf"), conf).unwrap();
}
