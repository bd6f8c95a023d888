//! Our TFTP server and HTTP router against real clients on loopback: curl, tftp-hpa, atftp
//! (Debian packages, see `xtask deps`), plus crafted datagrams for the rules clients never
//! exercise (duplicate ACK, wrong TID, WRQ, unknown opcode, concurrency limits, shutdown).
//!
//! The server binds 127.0.0.1 on a kernel-chosen port in the host namespace, so these tests need
//! no root. A missing client fails the test with the package to install.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shaper::lab::netns::output_with_timeout;
use shaper::tftp::{FsHandler, ServerConfig, ServerHandle, TftpServer};

const PEERS: &[(&str, &str)] = &[
    ("curl", "/usr/bin/curl"),
    ("tftp-hpa", "/usr/bin/tftp"),
    ("atftp", "/usr/bin/atftp"),
];

fn require_peers() {
    for (pkg, bin) in PEERS {
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: install the Debian package {pkg} (cargo xtask deps)"
        );
    }
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("shaper-tftp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}

/// Deterministic bytes with CR, LF and NUL in them, so netascii conversion is exercised.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 16 {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                _ => (x >> 8) as u8,
            }
        })
        .collect()
}

struct Rig {
    dir: Dir,
    root: PathBuf,
    rt: tokio::runtime::Runtime,
    server: Option<ServerHandle>,
    addr: SocketAddr,
}

impl Rig {
    fn new(tag: &str, config: ServerConfig) -> Rig {
        let dir = tempdir(tag);
        let root = dir.0.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.0.join("secret"), b"outside the root").unwrap();
        std::os::unix::fs::symlink(dir.0.join("secret"), root.join("escape")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handler = Arc::new(FsHandler::new(&root).unwrap());
        let server = rt.block_on(async {
            TftpServer::bind(
                ServerConfig {
                    bind: "127.0.0.1:0".parse().unwrap(),
                    ..config
                },
                handler,
            )
            .await
            .unwrap()
            .spawn()
        });
        let addr = server.local_addr();
        Rig {
            dir,
            root,
            rt,
            server: Some(server),
            addr,
        }
    }

    fn put(&self, name: &str, data: &[u8]) {
        std::fs::write(self.root.join(name), data).unwrap();
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.0.join(format!("out-{name}"))
    }

    fn stats(&self) -> &shaper::tftp::Stats {
        self.server.as_ref().unwrap().stats()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = self.rt.block_on(s.shutdown());
        }
    }
}

/// Runs a client, returns (exit code, stderr+stdout).
fn run(cmd: &mut Command) -> (i32, String) {
    let out = output_with_timeout(cmd, Duration::from_secs(60)).unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

/// The client invocations we interoperate with: (label, command builder).
fn clients(rig: &Rig, name: &str, out: &Path) -> Vec<(&'static str, Command)> {
    let port = rig.addr.port().to_string();
    let url = format!("tftp://127.0.0.1:{port}/{name}");
    let curl = |extra: &[&str]| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "60", "-o"])
            .arg(out)
            .args(extra)
            .arg(&url);
        c
    };
    let mut hpa_octet = Command::new("tftp");
    hpa_octet
        .args(["127.0.0.1", &port, "-m", "binary", "-c", "get", name])
        .arg(out);
    let mut hpa_netascii = Command::new("tftp");
    hpa_netascii
        .args(["127.0.0.1", &port, "-c", "get", name])
        .arg(out);
    let mut atftp = Command::new("atftp");
    atftp
        .args([
            "--option",
            "blksize 1428",
            "--option",
            "windowsize 8",
            "--option",
            "tsize enable",
            "-g",
            "-r",
            name,
            "-l",
        ])
        .arg(out)
        .args(["127.0.0.1", &port]);
    vec![
        ("curl (tsize, blksize 512, timeout)", curl(&[])),
        (
            "curl --tftp-blksize 1428",
            curl(&["--tftp-blksize", "1428"]),
        ),
        ("curl --tftp-no-options", curl(&["--tftp-no-options"])),
        ("tftp-hpa -m binary", hpa_octet),
        ("tftp-hpa netascii", hpa_netascii),
        ("atftp blksize 1428 windowsize 8 tsize", atftp),
    ]
}

#[test]
fn real_clients_fetch_every_size_byte_for_byte() {
    require_peers();
    let rig = Rig::new("sizes", ServerConfig::default());
    let sizes = [
        0,
        511,
        512,
        513,
        4 * 512,      // N * 512
        3 * 1428,     // N * 1428
        8 * 1428 * 5, // N * 1428, several full windows of 8
        4 << 20,      // 4 MiB
    ];
    let mut fetched = 0;
    for (i, &len) in sizes.iter().enumerate() {
        let name = format!("f{len}.bin");
        let data = content(len, u32::try_from(i).unwrap() + 1);
        rig.put(&name, &data);
        for (label, mut cmd) in clients(&rig, &name, &rig.out(&name)) {
            let _ = std::fs::remove_file(rig.out(&name));
            let (rc, log) = run(&mut cmd);
            assert_eq!(rc, 0, "{label} fetching {len} bytes: {log}");
            let got = std::fs::read(rig.out(&name))
                .unwrap_or_else(|e| panic!("{label}, {len} bytes: no output ({e}): {log}"));
            assert!(
                got == data,
                "{label}: {len}-byte file differs (got {} bytes)",
                got.len()
            );
            fetched += 1;
        }
    }
    assert_eq!(fetched, sizes.len() * 6);
    assert_eq!(rig.stats().failed.load(Ordering::Relaxed), 0);
    assert!(rig.stats().completed.load(Ordering::Relaxed) >= fetched as u64);
}

#[test]
fn curl_fetches_past_block_65535() {
    require_peers();
    let rig = Rig::new("rollover", ServerConfig::default());
    // 65536 full 512-byte blocks and a partial one: block numbers wrap to 0.
    let data = content(65_536 * 512 + 1000, 99);
    rig.put("big.bin", &data);
    let out = rig.out("big");
    let (rc, log) = run(Command::new("curl")
        .args(["-sS", "--max-time", "120", "--tftp-no-options", "-o"])
        .arg(&out)
        .arg(format!("tftp://{}/big.bin", rig.addr)));
    assert_eq!(rc, 0, "{log}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "rolled-over file differs"
    );
}

#[test]
fn traversal_is_refused_for_every_client() {
    require_peers();
    let rig = Rig::new("traversal", ServerConfig::default());
    rig.put("ok.cfg", b"fine");
    let port = rig.addr.port().to_string();
    for name in ["../secret", "escape", "/etc/passwd", "sub/../../secret"] {
        let out = rig.out("trav");
        let _ = std::fs::remove_file(&out);
        let (rc, log) = run(Command::new("curl")
            .args(["-sS", "--path-as-is", "--max-time", "10", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{port}/{name}")));
        assert_ne!(rc, 0, "curl got {name}: {log}");
        let got = std::fs::read(&out).unwrap_or_default();
        assert!(!got.starts_with(b"outside"), "curl leaked {name}");
        let (_, log) = run(Command::new("tftp")
            .args(["127.0.0.1", &port, "-m", "binary", "-c", "get", name])
            .arg(&out));
        let got = std::fs::read(&out).unwrap_or_default();
        assert!(
            !got.starts_with(b"outside"),
            "tftp-hpa leaked {name}: {log}"
        );
    }
    // The error codes on the wire: access violation for traversal, not found for absent files.
    let c = Raw::new(rig.addr);
    for (name, code) in [
        ("../secret", 2),
        ("escape", 2),
        ("/etc/passwd", 2),
        ("missing.cfg", 1),
    ] {
        c.send_rrq(name, &[]);
        let (_, p) = c.recv().expect("an error reply");
        assert_eq!(&p[..4], &[0, 5, 0, code], "{name}: {p:?}");
    }
}

/// A hand-driven client socket.
struct Raw {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Raw {
    fn new(server: SocketAddr) -> Raw {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        Raw { sock, server }
    }

    fn send_rrq(&self, name: &str, options: &[(&str, &str)]) {
        let mut p = vec![0, 1];
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(b"\0octet\0");
        for (n, v) in options {
            p.extend_from_slice(n.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        self.sock.send_to(&p, self.server).unwrap();
    }

    fn recv(&self) -> Option<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 2048];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((from, buf[..n].to_vec())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn ack(&self, to: SocketAddr, block: u16) {
        let [a, b] = block.to_be_bytes();
        self.sock.send_to(&[0, 4, a, b], to).unwrap();
    }
}

fn data_block(p: &[u8]) -> u16 {
    assert_eq!(&p[..2], &[0, 3], "expected DATA, got {p:?}");
    u16::from_be_bytes([p[2], p[3]])
}

#[test]
fn duplicate_ack_does_not_trigger_a_retransmission() {
    let rig = Rig::new("dupack", ServerConfig::default());
    rig.put("f.bin", &content(3000, 5));
    let c = Raw::new(rig.addr);
    c.send_rrq("f.bin", &[]);
    let (tid, p) = c.recv().expect("DATA 1");
    assert_ne!(tid, rig.addr, "the transfer uses a new TID");
    assert_eq!(data_block(&p), 1);
    c.ack(tid, 1);
    let (_, p) = c.recv().expect("DATA 2");
    assert_eq!(data_block(&p), 2);
    // Sorcerer's Apprentice: a duplicate ACK 1 must not resend DATA 2.
    c.ack(tid, 1);
    c.ack(tid, 1);
    assert_eq!(c.recv(), None, "duplicate ACK caused a send");
    // The server's own timeout (1 s) does resend DATA 2, once.
    std::thread::sleep(Duration::from_millis(700));
    let (_, p) = c.recv().expect("retransmission on timeout");
    assert_eq!(data_block(&p), 2);
    c.ack(tid, 2);
    let (_, p) = c.recv().expect("DATA 3");
    assert_eq!(data_block(&p), 3);
}

#[test]
fn wrong_tid_gets_error_5_and_the_transfer_goes_on() {
    let rig = Rig::new("tid", ServerConfig::default());
    rig.put("f.bin", &content(1500, 6));
    let c = Raw::new(rig.addr);
    c.send_rrq("f.bin", &[("blksize", "1000")]);
    let (tid, p) = c.recv().expect("OACK");
    assert_eq!(p, b"\x00\x06blksize\x001000\x00");
    let intruder = Raw::new(rig.addr);
    intruder.ack(tid, 0);
    let (from, p) = intruder.recv().expect("error 5");
    assert_eq!(from, tid);
    assert_eq!(&p[..4], &[0, 5, 0, 5]);
    assert_eq!(c.recv(), None, "the intruder's ACK 0 moved the transfer");
    c.ack(tid, 0);
    let (_, p) = c.recv().expect("DATA 1");
    assert_eq!((data_block(&p), p.len()), (1, 1004));
    c.ack(tid, 1);
    let (_, p) = c.recv().expect("DATA 2");
    assert_eq!((data_block(&p), p.len()), (2, 504));
    c.ack(tid, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rig.stats().completed.load(Ordering::Relaxed), 1);
    assert_eq!(rig.stats().stray.load(Ordering::Relaxed), 1);
}

#[test]
fn write_requests_and_unknown_opcodes_are_refused() {
    require_peers();
    let rig = Rig::new("wrq", ServerConfig::default());
    let c = Raw::new(rig.addr);
    c.sock
        .send_to(b"\x00\x02upload-attempt.bin\x00octet\x00", rig.addr)
        .unwrap();
    let (_, p) = c.recv().expect("error reply to WRQ");
    assert_eq!(&p[..4], &[0, 5, 0, 2], "access violation: {p:?}");
    c.sock.send_to(b"\x00\x09junkjunkjunk", rig.addr).unwrap();
    let (_, p) = c.recv().expect("error reply to opcode 9");
    assert_eq!(&p[..4], &[0, 5, 0, 4], "illegal operation: {p:?}");
    // tftp-hpa's put fails and nothing is written.
    let src = rig.dir.0.join("upload.bin");
    std::fs::write(&src, b"data").unwrap();
    let (_, log) = run(Command::new("tftp")
        .args([
            "127.0.0.1",
            &rig.addr.port().to_string(),
            "-m",
            "binary",
            "-c",
            "put",
        ])
        .arg(&src)
        .arg("upload.bin"));
    assert!(!rig.root.join("upload.bin").exists(), "{log}");
    assert!(
        log.to_lowercase().contains("read-only") || log.contains("Error"),
        "{log}"
    );
}

#[test]
fn per_client_limit_drops_excess_requests_silently() {
    let rig = Rig::new(
        "limit",
        ServerConfig {
            max_per_client: 1,
            ..ServerConfig::default()
        },
    );
    rig.put("f.bin", &content(2000, 7));
    let a = Raw::new(rig.addr);
    a.send_rrq("f.bin", &[]);
    let (tid, _) = a.recv().expect("first transfer starts");
    let b = Raw::new(rig.addr);
    b.send_rrq("f.bin", &[]);
    assert_eq!(b.recv(), None, "over the limit: no reply at all");
    assert_eq!(rig.stats().dropped_busy.load(Ordering::Relaxed), 1);
    // A repeat of the running request from the same TID gets DATA 1 again from that TID.
    a.send_rrq("f.bin", &[]);
    let (tid2, p) = a.recv().expect("repeat answered");
    assert_eq!((tid2, data_block(&p)), (tid, 1));
    // Once the first transfer ends, the second client's retry is served.
    a.sock.send_to(b"\x00\x05\x00\x00bye\x00", tid).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    b.send_rrq("f.bin", &[]);
    let (_, p) = b.recv().expect("served after the slot freed");
    assert_eq!(data_block(&p), 1);
}

#[test]
fn shutdown_aborts_running_transfers_with_error_0_and_stops_listening() {
    let mut rig = Rig::new(
        "shutdown",
        ServerConfig {
            shutdown_grace: Duration::from_millis(200),
            ..ServerConfig::default()
        },
    );
    rig.put("f.bin", &content(5000, 8));
    let c = Raw::new(rig.addr);
    c.send_rrq("f.bin", &[("blksize", "512"), ("timeout", "10")]);
    let (tid, _) = c.recv().expect("OACK");
    c.ack(tid, 0);
    c.recv().expect("DATA 1");
    let server = rig.server.take().unwrap();
    let stats = rig.rt.block_on(server.shutdown());
    assert_eq!(stats.completed.load(Ordering::Relaxed), 0);
    let (_, p) = c.recv().expect("error at shutdown");
    assert_eq!(&p[..4], &[0, 5, 0, 0], "{p:?}");
    assert!(String::from_utf8_lossy(&p).contains("shutting down"));
    c.send_rrq("f.bin", &[]);
    assert_eq!(c.recv(), None, "still answering after shutdown");
}

#[test]
fn http_serves_the_same_files_to_curl() {
    require_peers();
    let rig = Rig::new("http", ServerConfig::default());
    let data = content(100_000, 9);
    rig.put("cm.cfg", &data);
    let handler = Arc::new(FsHandler::new(&rig.root).unwrap());
    let listener = rig
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let http = listener.local_addr().unwrap();
    rig.rt.spawn(async move {
        axum::serve(listener, shaper::tftp::http::router(handler))
            .await
            .unwrap();
    });
    let out = rig.out("http");
    let (rc, log) = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o"])
        .arg(&out)
        .arg(format!("http://{http}/cm.cfg")));
    assert_eq!(rc, 0, "{log}");
    assert!(
        log.to_lowercase().contains("content-length: 100000"),
        "{log}"
    );
    assert!(std::fs::read(&out).unwrap() == data);
    for (path, code) in [
        ("/missing.cfg", "404"),
        ("/../secret", "400"),
        ("/%2e%2e/secret", "400"),
        ("/escape", "403"),
    ] {
        let (rc, log) = run(Command::new("curl")
            .args([
                "-sS",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://{http}{path}")));
        assert_eq!(rc, 0, "{log}");
        assert!(log.ends_with(code), "{path}: {log}");
    }
}

#[test]
fn a_new_request_from_a_reused_client_port_starts_a_new_transfer() {
    // Under load the kernel hands a finished client's port to the next one while our transfer
    // for the old client may still be waiting for its last ACK; the new request must not wait.
    let rig = Rig::new(
        "reuse",
        ServerConfig {
            shutdown_grace: Duration::from_millis(100),
            ..ServerConfig::default()
        },
    );
    rig.put("a.bin", &content(2000, 10));
    rig.put("b.bin", &content(100, 11));
    let c = Raw::new(rig.addr);
    c.send_rrq("a.bin", &[]);
    let (tid_a, _) = c.recv().expect("DATA 1 of a.bin");
    c.ack(tid_a, 1); // verified, still running
    c.recv().expect("DATA 2 of a.bin");
    c.send_rrq("b.bin", &[]);
    let (tid_b, p) = c.recv().expect("DATA 1 of b.bin");
    assert_ne!(tid_b, tid_a);
    assert_eq!((data_block(&p), p.len()), (1, 104));
}

#[test]
fn total_limit_drops_excess_requests_silently() {
    let rig = Rig::new(
        "total",
        ServerConfig {
            max_transfers: 2,
            max_per_client: 10,
            shutdown_grace: Duration::from_millis(100),
            ..ServerConfig::default()
        },
    );
    rig.put("f.bin", &content(2000, 12));
    let clients: Vec<Raw> = (0..3).map(|_| Raw::new(rig.addr)).collect();
    for c in &clients {
        c.send_rrq("f.bin", &[]);
    }
    let answered = clients.iter().filter(|c| c.recv().is_some()).count();
    assert_eq!(answered, 2, "two slots in total");
    assert_eq!(rig.stats().dropped_busy.load(Ordering::Relaxed), 1);
}
