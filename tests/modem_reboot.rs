//! Modem reboot against real peers, each test in a fresh network namespace (needs root):
//!
//! - net-snmp `snmpd` (configured as in docs/PROTOCOLS.md §3, with a `pass` script for
//!   docsDevResetNow) as the agent our `SnmpReset` talks to;
//! - net-snmp `snmpset`/`snmpget` as the manager our emulator's agent answers;
//! - our `ForceRenewSender` → our emulator's DHCP listener (authenticated, unauthenticated,
//!   wrong key, replay, wrong chaddr);
//! - our `ForceRenewSender` → dhcpcd 9.4.1 leased by a test DHCP server built on our codec
//!   (the independent check of our RFC 6704 HMAC: dhcpcd renews only on the signed one);
//! - `tcpdump` + `tshark` decoding what we put on the wire;
//! - the `shaper modem-emulator` binary printing its JSON lines.
//!
//! Missing tools fail the test naming the Debian package (`cargo xtask deps` installs them).
//! Run: `cargo test -p shaper-user --test modem_reboot`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use shaper::lab::NetNs;
use shaper::modem::emulator::{
    Agent, Emulator, EmulatorConfig, RebootTrigger, Rejection, TriggerMethod,
};
use shaper::modem::reboot::{
    ForceRenewKey, ForceRenewSender, MethodName, RebootMethod, RebootTarget, Rebooter, RetryPolicy,
    SnmpReset,
};
use shaper::proto::dhcp::{self, ForceRenew, ForceRenewAuth, ForceRenewReject};
use shaper::proto::snmp::{self, ErrorStatus, Message, Oid, Value, VarBind};

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
const KEY: [u8; 16] = *b"reconfigure-key!";
const RESET_OID: &str = "1.3.6.1.2.1.69.1.1.3.0";
const SNMP_PORT: u16 = 1161;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "modem_reboot needs root (ip netns)");
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (cargo xtask deps)"
    );
}

fn tmp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "shaper-modem-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run `f` on a thread inside `ns` with a multi-thread runtime whose workers (created from
/// that thread) are inside too, so every socket lives in the namespace.
fn in_ns<F, Fut, T>(ns: &NetNs, f: F) -> T
where
    F: FnOnce(String) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    in_named_ns(ns.name(), f)
}

/// [`in_ns`] by namespace name.
fn in_named_ns<F, Fut, T>(name: &str, f: F) -> T
where
    F: FnOnce(String) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    let owned = name.to_string();
    shaper::lab::in_netns(name, move || {
        let name = owned;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f(name))
    })
    .unwrap()
}

/// `ip netns exec NS args…` from async code, killed after 30 s.
async fn exec(ns: &str, args: &[&str]) -> Output {
    let fut = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{args:?} timed out"))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// Poll `snmpget` until the agent on `port` answers docsDevResetNow (it must read 2).
async fn wait_agent(ns: &str, community: &str, port: u16) {
    let agent = format!("127.0.0.1:{port}");
    let mut last = String::new();
    for _ in 0..100 {
        let o = exec(
            ns,
            &[
                "snmpget", "-v2c", "-c", community, "-t", "0.2", "-r", "0", &agent, RESET_OID,
            ],
        )
        .await;
        if o.status.success() {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains("INTEGER: 2"), "docsDevResetNow reads {out}");
            return;
        }
        last = text(&o);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("SNMP agent on {agent} never answered: {last}");
}

fn rebooter(attempts: u32) -> Rebooter {
    Rebooter {
        snmp: SnmpReset {
            port: SNMP_PORT,
            timeout: Duration::from_secs(2),
        },
        forcerenew: Some(ForceRenewSender {
            source: "127.0.0.1:67".parse().unwrap(),
            server_id: Ipv4Addr::LOCALHOST,
            client_port: dhcp::CLIENT_PORT,
        }),
        hook: None,
        retry: RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
    }
}

fn target(method: RebootMethod) -> RebootTarget {
    RebootTarget {
        modem: "cm-lab-1".into(),
        mac: MAC,
        ip: Ipv4Addr::LOCALHOST,
        method,
    }
}

fn emulator_config(dhcp: Option<u16>, snmp: Option<u16>) -> EmulatorConfig {
    EmulatorConfig {
        mac: MAC,
        dhcp_listen: dhcp.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
        snmp_listen: snmp.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
        reconfigure_key: Some(KEY),
        delayed: None,
        initial_replay: None,
        agent: Agent {
            rw_community: b"private".to_vec(),
            ro_community: Some(b"public".to_vec()),
        },
    }
}

async fn next_trigger(rx: &mut mpsc::UnboundedReceiver<RebootTrigger>) -> RebootTrigger {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no reboot trigger within 5 s")
        .expect("emulator channel closed")
}

/// One SNMP request from our codec over a plain socket; returns the decoded answer.
async fn snmp_exchange(port: u16, req: &Message) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", port)).await.unwrap();
    sock.send(&req.encode().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
        .await
        .expect("no SNMP response")
        .unwrap();
    Message::decode(&buf[..n]).unwrap()
}

fn reset_vb(v: i32) -> VarBind {
    VarBind {
        oid: Oid::from(snmp::DOCS_DEV_RESET_NOW),
        value: Value::Integer(v),
    }
}

/// snmpd configured like docs/PROTOCOLS.md §3; the `pass` script logs every call to `log`.
fn start_snmpd(ns: &NetNs, dir: &Path) -> (shaper::lab::BgProcess, PathBuf) {
    require("/usr/sbin/snmpd", "snmpd");
    let log = dir.join("pass.log");
    let script = dir.join("reset_pass.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# snmpd pass protocol (snmpd.conf(5)): -g OID | -n OID | -s OID TYPE VALUE
echo "$@" >> {log}
case "$1" in
  -g) if [ "$2" = ".{RESET_OID}" ]; then echo "$2"; echo integer; echo 2; fi ;;
  -s) if [ "$2" != ".{RESET_OID}" ]; then echo not-writable
      elif [ "$3" != integer ]; then echo wrong-type
      elif [ "$4" = 1 ]; then :
      else echo wrong-value; fi ;;
esac
"#,
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.join("snmpd.conf");
    std::fs::write(
        &conf,
        format!(
            "agentaddress udp:127.0.0.1:{SNMP_PORT}\n\
             rwcommunity private 127.0.0.1\n\
             rocommunity public 127.0.0.1\n\
             pass .1.3.6.1.2.1.69.1.1.3 {}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut cmd = ns.command("snmpd");
    cmd.args(["-f", "-Lo", "-C", "-c"])
        .arg(&conf)
        .env("SNMP_PERSISTENT_DIR", dir);
    let p = shaper::lab::BgProcess::spawn(&mut cmd, "snmpd").unwrap();
    (p, log)
}

#[test]
fn snmp_reset_against_net_snmp_snmpd() {
    require_root();
    require("/usr/bin/snmpget", "snmp");
    let ns = NetNs::unique("mrb-snmpd").unwrap();
    let dir = tmp_dir("snmpd");
    let (mut snmpd, pass_log) = start_snmpd(&ns, &dir);
    let pass_log_in = pass_log.clone();
    in_ns(&ns, |name| async move {
        let pass_log = pass_log_in;
        wait_agent(&name, "public", SNMP_PORT).await;

        // The write community: success, recorded by the pass script.
        let rb = rebooter(2);
        let ok = rb
            .reboot(
                &target(RebootMethod::Snmp {
                    community: "private".into(),
                }),
                0,
            )
            .await;
        assert!(ok.ok, "{ok:?}");
        assert_eq!((ok.method, ok.attempts), (MethodName::Snmp, 1));
        let log = std::fs::read_to_string(&pass_log).unwrap();
        assert!(
            log.lines()
                .any(|l| l == format!("-s .{RESET_OID} integer 1")),
            "pass script log: {log}"
        );

        // The read-only community: snmpd answers noAccess, a failure naming it; a definite
        // refusal is not retried.
        let denied = rb
            .reboot(
                &target(RebootMethod::Snmp {
                    community: "public".into(),
                }),
                0,
            )
            .await;
        assert!(!denied.ok);
        assert_eq!(denied.attempts, 1);
        let e = denied.last_error.clone().unwrap();
        assert!(e.contains("noAccess"), "{e}");
        let json = serde_json::to_value(&denied).unwrap();
        assert_eq!(json["method"], "snmp");
        assert_eq!(json["errors"].as_array().unwrap().len(), 1);

        // No agent on another port: retried, with backoff.
        let mut silent = rebooter(2);
        silent.snmp.port = SNMP_PORT + 1;
        silent.snmp.timeout = Duration::from_millis(200);
        let lost = silent
            .reboot(
                &target(RebootMethod::Snmp {
                    community: "private".into(),
                }),
                0,
            )
            .await;
        assert!(!lost.ok);
        assert_eq!(lost.attempts, 2);
        assert!(
            lost.last_error.as_deref().unwrap().contains("unreachable"),
            "{lost:?}"
        );
        assert!(lost.duration_ms >= 50, "{lost:?}");

        // Value check through our codec: 2 is wrongValue (index 1), a read gives false(2).
        let resp = snmp_exchange(
            SNMP_PORT,
            &Message::set_request(b"private", 4242, vec![reset_vb(2)]),
        )
        .await;
        assert_eq!(resp.pdu.request_id, 4242);
        assert_eq!(resp.pdu.error_status, ErrorStatus::WrongValue);
        assert_eq!(resp.pdu.error_index, 1);
        let resp = snmp_exchange(
            SNMP_PORT,
            &Message::get_request(b"public", 7, &[Oid::from(snmp::DOCS_DEV_RESET_NOW)]),
        )
        .await;
        assert_eq!(resp.check_response(7).unwrap(), &[reset_vb(2)]);
    });
    assert!(snmpd.is_running(), "snmpd died");
    let out = snmpd.kill();
    let log = std::fs::read_to_string(&pass_log).unwrap();
    assert!(
        log.contains("-s .1.3.6.1.2.1.69.1.1.3.0 integer 2"),
        "{log}\nsnmpd: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn emulator_agent_answers_net_snmp_snmpset() {
    require_root();
    require("/usr/bin/snmpset", "snmp");
    let ns = NetNs::unique("mrb-agent").unwrap();
    in_ns(&ns, |name| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let emu = Emulator::start(emulator_config(None, Some(SNMP_PORT)), tx)
            .await
            .unwrap();
        wait_agent(&name, "public", SNMP_PORT).await;
        let agent = format!("127.0.0.1:{SNMP_PORT}");
        let set = |community: &'static str, value: &'static str| {
            let agent = agent.clone();
            let name = name.clone();
            async move {
                exec(
                    &name,
                    &[
                        "snmpset", "-v2c", "-c", community, "-t", "1", "-r", "0", &agent,
                        RESET_OID, "i", value,
                    ],
                )
                .await
            }
        };

        let o = set("private", "1").await;
        assert!(o.status.success(), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("INTEGER: 1"));
        let t = next_trigger(&mut rx).await;
        assert_eq!(t.method, TriggerMethod::Snmp);

        for (community, value, status) in [
            ("private", "2", "wrongValue"),
            ("public", "1", "noAccess"),
            ("guessed", "1", "authorizationError"),
        ] {
            let o = set(community, value).await;
            assert!(!o.status.success(), "{community} {value}: {}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(status),
                "{community} {value}: expected {status}: {}",
                text(&o)
            );
        }
        // Nothing but the one valid SET triggered a reboot.
        assert!(rx.try_recv().is_err());
        assert_eq!(
            emu.stats.rejections(),
            vec![
                Rejection::Snmp(ErrorStatus::WrongValue),
                Rejection::Snmp(ErrorStatus::NoAccess),
                Rejection::Snmp(ErrorStatus::AuthorizationError),
            ]
        );
        assert_eq!(emu.stats.snmp_resets.load(Ordering::Relaxed), 1);
    });
}

/// Poll until the emulator has recorded `n` rejections.
async fn wait_rejections(emu: &Emulator, n: usize) -> Vec<Rejection> {
    for _ in 0..100 {
        let r = emu.stats.rejections();
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {n} rejections, have {:?}", emu.stats.rejections());
}

#[test]
fn forcerenew_to_emulator() {
    require_root();
    let ns = NetNs::unique("mrb-fr").unwrap();
    in_ns(&ns, |_name| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let emu = Emulator::start(emulator_config(Some(dhcp::CLIENT_PORT), None), tx)
            .await
            .unwrap();
        let rb = rebooter(1);
        let method = RebootMethod::ForceRenew {
            key: ForceRenewKey::Reconfigure(KEY),
            xid: 0,
        };

        // Authenticated: accepted, from port 67.
        let out = rb.reboot(&target(method.clone()), 1_000).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.replay_counter, Some(1_000));
        let t = next_trigger(&mut rx).await;
        assert_eq!(t.method, TriggerMethod::ForceRenew);
        assert_eq!(t.peer, "127.0.0.1:67".parse().unwrap());

        let sender = rb.forcerenew.clone().unwrap();
        let fr = ForceRenew {
            client_mac: MAC,
            client_ip: Ipv4Addr::LOCALHOST,
            server_id: Ipv4Addr::LOCALHOST,
            xid: 0,
        };
        // Unauthenticated (RFC 3203 §6 forbids it; sent by hand).
        let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        raw.send_to(
            &dhcp::encode_forcerenew(&fr, ForceRenewAuth::Unauthenticated, 0),
            ("127.0.0.1", dhcp::CLIENT_PORT),
        )
        .await
        .unwrap();
        wait_rejections(&emu, 1).await;
        // Wrong key.
        sender
            .send(
                MAC,
                Ipv4Addr::LOCALHOST,
                &ForceRenewKey::Reconfigure([0x55; 16]),
                0,
                2_000,
            )
            .await
            .unwrap();
        wait_rejections(&emu, 2).await;
        // Replay of the accepted counter, then an older one.
        let key = ForceRenewKey::Reconfigure(KEY);
        sender
            .send(MAC, Ipv4Addr::LOCALHOST, &key, 0, 1_000)
            .await
            .unwrap();
        wait_rejections(&emu, 3).await;
        sender
            .send(MAC, Ipv4Addr::LOCALHOST, &key, 0, 999)
            .await
            .unwrap();
        wait_rejections(&emu, 4).await;
        // Another modem's MAC.
        sender
            .send([2, 0, 0, 0, 0, 9], Ipv4Addr::LOCALHOST, &key, 0, 3_000)
            .await
            .unwrap();
        let rejections = wait_rejections(&emu, 5).await;
        assert_eq!(
            rejections[..4],
            [
                Rejection::ForceRenew(ForceRenewReject::Unauthenticated),
                Rejection::ForceRenew(ForceRenewReject::WrongKey),
                Rejection::ForceRenew(ForceRenewReject::Replayed {
                    last: 1_000,
                    got: 1_000
                }),
                Rejection::ForceRenew(ForceRenewReject::Replayed {
                    last: 1_000,
                    got: 999
                }),
            ]
        );
        assert!(
            matches!(
                &rejections[4],
                Rejection::ForceRenew(ForceRenewReject::WrongChaddr { got, .. }) if got == &[2, 0, 0, 0, 0, 9]
            ),
            "{rejections:?}"
        );
        assert!(rx.try_recv().is_err(), "a rejected FORCERENEW triggered");

        // A fresh counter is accepted again.
        let out = rb.reboot(&target(method), 1_001).await;
        assert!(out.ok);
        next_trigger(&mut rx).await;
        assert_eq!(emu.stats.forcerenew_accepted.load(Ordering::Relaxed), 2);
        assert_eq!(emu.stats.forcerenew_rejected.load(Ordering::Relaxed), 5);
    });
}

#[test]
fn tshark_decodes_our_forcerenew_and_snmp_set() {
    require_root();
    require("/usr/bin/tcpdump", "tcpdump");
    require("/usr/bin/tshark", "tshark");
    let ns = NetNs::unique("mrb-wire").unwrap();
    let dir = tmp_dir("pcap");
    let pcap = dir.join("reboot.pcap");
    // Two FORCERENEWs (RFC 6704, RFC 3118), SNMP SET and its Response: 4 packets.
    let mut tcpdump = ns
        .spawn([
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "-n",
            "-c",
            "4",
            "-w",
            pcap.to_str().unwrap(),
            "udp",
        ])
        .unwrap();
    for _ in 0..200 {
        if std::fs::metadata(&pcap).is_ok_and(|m| m.len() >= 24) {
            break;
        }
        assert!(tcpdump.is_running(), "tcpdump exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    in_ns(&ns, |_| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cfg = emulator_config(Some(dhcp::CLIENT_PORT), Some(161));
        cfg.delayed = Some((0x0000_1234, b"delayed secret".to_vec()));
        let _emu = Emulator::start(cfg, tx).await.unwrap();
        let mut rb = rebooter(1);
        rb.snmp.port = 161;
        let out = rb
            .reboot(
                &target(RebootMethod::ForceRenew {
                    key: ForceRenewKey::Reconfigure(KEY),
                    xid: 0x0bad_cafe,
                }),
                0x0102_0304_0506_0708,
            )
            .await;
        assert!(out.ok, "{out:?}");
        next_trigger(&mut rx).await;
        let out = rb
            .reboot(
                &target(RebootMethod::ForceRenew {
                    key: ForceRenewKey::Delayed {
                        secret_id: 0x0000_1234,
                        key: b"delayed secret".to_vec(),
                    },
                    xid: 0x0bad_cafe,
                }),
                0x0102_0304_0506_0709,
            )
            .await;
        assert!(out.ok, "{out:?}");
        next_trigger(&mut rx).await;
        let out = rb
            .reboot(
                &target(RebootMethod::Snmp {
                    community: "private".into(),
                }),
                0,
            )
            .await;
        assert!(out.ok, "{out:?}");
        next_trigger(&mut rx).await;
    });
    let cap = tcpdump.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(cap.status.success(), "tcpdump: {}", text(&cap));
    let o = std::process::Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(o.status.success(), "tshark: {}", text(&o));
    let v = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Dynamic Host Configuration Protocol (Force Renew)",
        "Option: (53) DHCP Message Type (Force Renew)",
        "DHCP: Force Renew (9)",
        "DHCP Server Identifier: 127.0.0.1",
        "Option: (90) Authentication",
        // RFC 6704: tshark 4.0 does not name protocol 3 but parses the option's fields.
        "Length: 28",
        "Algorithm: 1",
        "Replay Detection Method: Monotonically-increasing counter (0)",
        "RDM Replay Detection Value: 0x0102030405060708",
        // RFC 3118 delayed authentication, fully decoded.
        "Length: 31",
        "Protocol: delayed authentication (1)",
        "Delay Algorithm: HMAC_MD5 (1)",
        "RDM Replay Detection Value: 0x0102030405060709",
        "Secret ID: 0x00001234",
        "HMAC MD5 Hash:",
        "Client MAC address: 02:00:5e:00:53:01",
        "Transaction ID: 0x0badcafe",
        "set-request",
        "get-response",
        "1.3.6.1.2.1.69.1.1.3.0",
        "community: private",
    ] {
        assert!(v.contains(want), "tshark output lacks {want:?}:\n{v}");
    }
    for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
        assert!(!v.contains(bad), "tshark reports {bad:?}:\n{v}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn modem_emulator_binary_prints_json_lines() {
    require_root();
    require("/usr/bin/snmpset", "snmp");
    let ns = NetNs::unique("mrb-bin").unwrap();
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let emu = ns
        .spawn([
            env!("CARGO_BIN_EXE_shaper"),
            "modem-emulator",
            "--mac",
            "02:00:5e:00:53:01",
            "--dhcp-listen",
            "127.0.0.1:68",
            "--snmp-listen",
            &format!("127.0.0.1:{SNMP_PORT}"),
            "--forcerenew-key",
            &key_hex,
            "--community",
            "private",
        ])
        .unwrap();
    in_ns(&ns, |name| async move {
        wait_agent(&name, "private", SNMP_PORT).await;
        let o = exec(
            &name,
            &[
                "snmpset",
                "-v2c",
                "-c",
                "private",
                &format!("127.0.0.1:{SNMP_PORT}"),
                RESET_OID,
                "i",
                "1",
            ],
        )
        .await;
        assert!(o.status.success(), "{}", text(&o));
        let out = rebooter(1)
            .reboot(
                &target(RebootMethod::ForceRenew {
                    key: ForceRenewKey::Reconfigure(KEY),
                    xid: 0,
                }),
                1,
            )
            .await;
        assert!(out.ok, "{out:?}");
        // Give the emulator a moment to print.
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    let out = emu.kill();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let methods: Vec<&str> = events
        .iter()
        .map(|e| {
            assert_eq!(e["event"], "reboot");
            assert!(e["at_ms"].as_u64().unwrap() > 0);
            e["method"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        methods,
        ["snmp", "forcerenew"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the test DHCP server saw: each DHCPREQUEST's xid, ciaddr and whether the client
/// offered RFC 6704 option 145.
#[derive(Clone, Debug)]
struct SeenRequest {
    xid: u32,
    ciaddr: Ipv4Addr,
    mac: [u8; 6],
    nonce_capable: bool,
}

const SRV_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const CLI_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);

/// A minimal DHCP server for one client, built on our codec: OFFER to DISCOVER, ACK to
/// REQUEST. The first ACK carries the RFC 6704 reconfigure key (`5a 1c 03 01 00 <replay>
/// 01 <key>`); later ones do not, so dhcpcd keeps checking the replay counter.
async fn dhcp_server(ifname: String, requests: mpsc::UnboundedSender<SeenRequest>) {
    use shaper::proto::dhcp::{AuthOption, DhcpOption, Message as Dhcp, MessageType};
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.set_broadcast(true).unwrap();
    sock.bind_device(Some(ifname.as_bytes())).unwrap();
    sock.set_nonblocking(true).unwrap();
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, dhcp::SERVER_PORT)).into())
        .unwrap();
    let sock = UdpSocket::from_std(sock.into()).unwrap();
    let mut key_sent = false;
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, _peer) = sock.recv_from(&mut buf).await.unwrap();
        let Ok(req) = Dhcp::decode(&buf[..n]) else {
            continue;
        };
        if req.op != dhcp::BOOTREQUEST {
            continue;
        }
        let reply_type = match req.message_type() {
            Some(MessageType::DISCOVER) => MessageType::OFFER,
            Some(MessageType::REQUEST) => MessageType::ACK,
            _ => continue,
        };
        let mac: [u8; 6] = req.chaddr[..6].try_into().unwrap();
        let mut reply = Dhcp::reply_to(mac, req.xid);
        reply.flags = req.flags;
        reply.ciaddr = req.ciaddr;
        reply.yiaddr = CLI_IP;
        reply.options = vec![
            DhcpOption::MessageType(reply_type),
            DhcpOption::ServerId(SRV_IP),
            DhcpOption::Unknown {
                code: 51, // lease time
                data: 3600u32.to_be_bytes().to_vec(),
            },
            DhcpOption::Unknown {
                code: 1, // subnet mask
                data: vec![255, 255, 255, 0],
            },
        ];
        if reply_type == MessageType::ACK {
            let nonce_capable = req
                .options
                .iter()
                .any(|o| matches!(o, DhcpOption::ForcerenewNonceCapable(a) if a.contains(&1)));
            if !key_sent {
                reply
                    .options
                    .push(DhcpOption::Authentication(AuthOption::reconfigure_key(
                        100, &KEY,
                    )));
                key_sent = true;
            }
            requests
                .send(SeenRequest {
                    xid: req.xid,
                    ciaddr: req.ciaddr,
                    mac,
                    nonce_capable,
                })
                .unwrap();
        }
        let mut bytes = reply.encode().unwrap();
        bytes.resize(bytes.len().max(dhcp::MIN_BOOTP_LEN), 0);
        let to: SocketAddr = if req.ciaddr.is_unspecified() {
            (Ipv4Addr::BROADCAST, dhcp::CLIENT_PORT).into()
        } else {
            (req.ciaddr, dhcp::CLIENT_PORT).into()
        };
        sock.send_to(&bytes, to).await.unwrap();
    }
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<SeenRequest>, what: &str) -> SeenRequest {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no DHCPREQUEST from dhcpcd: {what}"))
        .unwrap()
}

async fn no_request(rx: &mut mpsc::UnboundedReceiver<SeenRequest>, what: &str) {
    if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await {
        panic!("dhcpcd renewed after {what}: {r:?}");
    }
}

/// Our signed FORCERENEW against a real client: dhcpcd 9.4.1 (docs/PROTOCOLS.md §3) gets a lease
/// and the reconfigure key from our test server, renews on a correctly signed FORCERENEW and
/// ignores a wrongly keyed or replayed one ("authentication failed").
#[test]
fn forcerenew_to_dhcpcd() {
    require_root();
    require("/usr/sbin/dhcpcd", "dhcpcd-base");
    let srv = NetNs::unique("mrb-dsrv").unwrap();
    let cli = NetNs::unique("mrb-dcli").unwrap();
    let ifname = format!("rbc{}", std::process::id() % 100_000);
    srv.run([
        "ip",
        "link",
        "add",
        "s0",
        "type",
        "veth",
        "peer",
        "name",
        &ifname,
        "netns",
        cli.name(),
    ])
    .unwrap();
    srv.run(["ip", "addr", "add", "198.18.7.1/24", "dev", "s0"])
        .unwrap();
    srv.run(["ip", "link", "set", "s0", "up"]).unwrap();
    cli.run(["ip", "link", "set", &ifname, "up"]).unwrap();
    let dir = tmp_dir("dhcpcd");
    let conf = dir.join("dhcpcd.conf");
    // No hooks (they would write the host's resolv.conf), IPv4 only, no ARP probing.
    std::fs::write(&conf, "ipv4only\nnoarp\nnoipv4ll\nnohook resolv.conf\n").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server_if = "s0".to_string();
    let srv_name = srv.name().to_string();
    std::thread::scope(|s| {
        // The server runs in `srv` for the whole test, on its own thread and runtime.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = s.spawn(move || {
            in_named_ns(&srv_name, move |_| async move {
                tokio::select! {
                    () = dhcp_server(server_if, tx) => {}
                    _ = stop_rx => {}
                }
            })
        });
        // dhcpcd forks privilege-separated helpers that would hold a pipe open: log to a file.
        let log_path = dir.join("dhcpcd.log");
        let log_file = std::fs::File::create(&log_path).unwrap();
        let mut dhcpcd = cli
            .command("dhcpcd")
            .args(["-B", "-d", "-f"])
            .arg(&conf)
            .args(["-c", "/bin/true", &ifname])
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_ns(&srv, |_| async move {
                let first = next_request(&mut rx, "initial lease").await;
                assert!(first.nonce_capable, "dhcpcd did not offer option 145");
                // Let dhcpcd configure the address and open its bound socket.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let sender = ForceRenewSender {
                    source: (SRV_IP, dhcp::SERVER_PORT).into(),
                    server_id: SRV_IP,
                    client_port: dhcp::CLIENT_PORT,
                };
                let key = ForceRenewKey::Reconfigure(KEY);
                let wrong = ForceRenewKey::Reconfigure([0x33; 16]);

                sender
                    .send(first.mac, CLI_IP, &wrong, first.xid, 200)
                    .await
                    .unwrap();
                no_request(&mut rx, "a wrongly keyed FORCERENEW").await;

                sender
                    .send(first.mac, CLI_IP, &key, first.xid, 201)
                    .await
                    .unwrap();
                let renew = next_request(&mut rx, "a signed FORCERENEW").await;
                assert_eq!(renew.ciaddr, CLI_IP, "a renewal carries ciaddr");
                tokio::time::sleep(Duration::from_millis(500)).await;

                sender
                    .send(first.mac, CLI_IP, &key, renew.xid, 201)
                    .await
                    .unwrap();
                no_request(&mut rx, "a replayed FORCERENEW").await;

                sender
                    .send(first.mac, CLI_IP, &key, renew.xid, 202)
                    .await
                    .unwrap();
                next_request(&mut rx, "a fresh FORCERENEW").await;
            })
        }));
        let _ = stop_tx.send(());
        // `dhcpcd -x` stops the daemon and its helpers; the namespace guard kills leftovers.
        let _ = cli.exec(["dhcpcd", "-x", &ifname]);
        let _ = dhcpcd.kill();
        let _ = dhcpcd.wait();
        server.join().unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Err(p) = ok {
            eprintln!("dhcpcd log:\n{log}");
            std::panic::resume_unwind(p);
        }
        assert_eq!(
            log.matches("authentication failed").count(),
            2,
            "dhcpcd log:\n{log}"
        );
        assert_eq!(log.matches("Force Renew from").count(), 2, "{log}");
        assert!(log.contains("accepted reconfigure key"), "{log}");
    });
    drop(cli);
    drop(srv);
    // dhcpcd's per-interface state (the interface name is unique to this run).
    for f in [
        format!("/var/lib/dhcpcd/{ifname}.lease"),
        format!("/run/dhcpcd/{ifname}.pid"),
        format!("/run/dhcpcd/{ifname}-4.sock"),
        format!("/run/dhcpcd/{ifname}-4.unpriv.sock"),
    ] {
        let _ = std::fs::remove_file(f);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
