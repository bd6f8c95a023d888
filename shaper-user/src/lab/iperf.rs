//! `iperf3` and `ping` helpers with hard timeouts.
//!
//! Written against iperf3 3.12 (Debian 12). What it reports with `-J`:
//! - TCP client: `end.sum_sent` / `end.sum_received` (receiver-side rate).
//! - UDP client: `end.sum` (sender side, with the server's loss count) and, in 3.12 already,
//!   `end.sum_received` (receiver side: `bits_per_second`, `lost_packets`, `packets`).
//! - With `--get-server-output` the client JSON also carries `server_output_json`, the
//!   receiver's own report including its per-second `intervals` (the server's `end.sum` for
//!   UDP has `bytes: 0` in 3.12, so use `end.sum_received`).
//!
//! [`IperfReport`] takes the receiver-side numbers from those places, in that order.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::netns::{BgProcess, NetNs};

static PORT: AtomicU16 = AtomicU16::new(0);

/// A fresh TCP/UDP port for an iperf3 server (5201 + counter, wrapping inside 5201..=9200).
/// Namespaces are per test, so this only has to be unique within one topology.
pub fn next_port() -> u16 {
    5201 + PORT.fetch_add(1, Ordering::Relaxed) % 4000
}

/// A running `iperf3 -s -1 -J` (serves one test, then exits). Killed on drop.
pub struct IperfServer {
    proc: BgProcess,
    /// Address the server is bound to.
    pub addr: IpAddr,
    /// Port it listens on.
    pub port: u16,
}

impl IperfServer {
    /// Start a one-shot server bound to `addr`:`port` inside `ns` and wait (≤ 5 s) until it
    /// listens.
    pub fn start(ns: &NetNs, addr: IpAddr, port: u16) -> Result<IperfServer> {
        let addr_s = addr.to_string();
        let port_s = port.to_string();
        let mut proc = ns.spawn(["iperf3", "-s", "-1", "-J", "-B", &addr_s, "-p", &port_s])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let sport = format!(":{port}");
            let out = ns.exec(["ss", "-Hltn", "sport", "=", &sport])?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                break;
            }
            if !proc.is_running() {
                let out = proc.kill();
                bail!(
                    "iperf3 server on {addr_s}:{port} exited early: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() >= deadline {
                bail!("iperf3 server on {addr_s}:{port} did not listen within 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(IperfServer { proc, addr, port })
    }

    /// Wait (≤ `timeout`) for the server to finish its one test; return its JSON report.
    pub fn finish(self, timeout: Duration) -> Result<Value> {
        let out = self.proc.wait_timeout(timeout)?;
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "iperf3 server JSON: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Client options (`iperf3 -c SERVER -p PORT -J --get-server-output ...`).
#[derive(Debug, Clone)]
pub struct IperfOpts {
    /// Server address (`-c`).
    pub server: IpAddr,
    /// Server port (`-p`).
    pub port: u16,
    /// `Some(rate)`: UDP (`-u -b RATE`, bit/s); `None`: TCP.
    pub udp_rate_bps: Option<u64>,
    /// Test duration (`-t`), seconds.
    pub secs: u32,
    /// Local bind address (`-B`).
    pub bind: Option<IpAddr>,
    /// Read/write length (`-l`), bytes; UDP datagram payload size.
    pub len: Option<u32>,
    /// `--connect-timeout`, milliseconds.
    pub connect_timeout_ms: u32,
    /// Extra raw arguments appended at the end.
    pub extra: Vec<String>,
}

impl IperfOpts {
    /// TCP for `secs` seconds to `server`:`port`, 3 s connect timeout.
    pub fn tcp(server: IpAddr, port: u16, secs: u32) -> IperfOpts {
        IperfOpts {
            server,
            port,
            udp_rate_bps: None,
            secs,
            bind: None,
            len: None,
            connect_timeout_ms: 3000,
            extra: Vec::new(),
        }
    }

    /// UDP at `rate_bps` offered for `secs` seconds.
    pub fn udp(server: IpAddr, port: u16, secs: u32, rate_bps: u64) -> IperfOpts {
        IperfOpts {
            udp_rate_bps: Some(rate_bps),
            ..IperfOpts::tcp(server, port, secs)
        }
    }

    /// The iperf3 argument vector (without the namespace wrapper).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "iperf3".into(),
            "-c".into(),
            self.server.to_string(),
            "-p".into(),
            self.port.to_string(),
            "-J".into(),
            "--get-server-output".into(),
            "-t".into(),
            self.secs.to_string(),
            "--connect-timeout".into(),
            self.connect_timeout_ms.to_string(),
        ];
        if let Some(r) = self.udp_rate_bps {
            a.extend(["-u".into(), "-b".into(), r.to_string()]);
        }
        if let Some(b) = self.bind {
            a.extend(["-B".into(), b.to_string()]);
        }
        if let Some(l) = self.len {
            a.extend(["-l".into(), l.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Hard limit for the client process: test time + connect timeout + 10 s.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.secs as u64 + 10)
            + Duration::from_millis(self.connect_timeout_ms as u64)
    }
}

/// A running iperf3 client (killed on drop).
pub struct IperfClient {
    proc: BgProcess,
    opts: IperfOpts,
}

impl IperfClient {
    /// Start the client in `ns` in the background.
    pub fn spawn(ns: &NetNs, opts: &IperfOpts) -> Result<IperfClient> {
        Ok(IperfClient {
            proc: ns.spawn(opts.args())?,
            opts: opts.clone(),
        })
    }

    /// Wait for it (killing it after [`IperfOpts::timeout`]) and parse the report.
    pub fn wait(self) -> Result<IperfReport> {
        let desc = self.proc.desc().to_string();
        let out = self.proc.wait_timeout(self.opts.timeout())?;
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "`{desc}` printed no JSON ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            bail!("`{desc}`: iperf3 error: {e}");
        }
        IperfReport::from_client_json(v)
    }

    /// Run a client to completion.
    pub fn run(ns: &NetNs, opts: &IperfOpts) -> Result<IperfReport> {
        IperfClient::spawn(ns, opts)?.wait()
    }
}

/// Receiver-side results of one iperf3 test.
#[derive(Debug, Clone)]
pub struct IperfReport {
    /// Rate at the receiver, bit/s.
    pub bits_per_second: f64,
    /// Bytes at the receiver.
    pub bytes: u64,
    /// Rate the sender offered, bit/s.
    pub sender_bits_per_second: f64,
    /// UDP only: datagrams lost.
    pub lost_packets: Option<u64>,
    /// UDP only: datagrams sent.
    pub packets: Option<u64>,
    /// Per-interval receiver rates, bit/s, with interval length in seconds
    /// (from the server's report when present, else the client's).
    pub intervals: Vec<(f64, f64)>,
    /// The client's full JSON.
    pub raw: Value,
}

impl IperfReport {
    /// Extract the receiver-side numbers from a client's `-J --get-server-output` JSON.
    pub fn from_client_json(v: Value) -> Result<IperfReport> {
        let end = v
            .get("end")
            .ok_or_else(|| anyhow!("iperf3 JSON has no `end`"))?;
        let recv = end
            .get("sum_received")
            .or_else(|| {
                v.pointer("/server_output_json/end/sum_received")
                    .filter(|s| s.get("bytes").and_then(Value::as_u64).unwrap_or(0) > 0)
            })
            .or_else(|| end.get("sum"))
            .ok_or_else(|| anyhow!("iperf3 JSON has no end.sum_received / end.sum"))?;
        let sent = end
            .get("sum_sent")
            .or_else(|| end.get("sum"))
            .unwrap_or(recv);
        let f = |o: &Value, k: &str| o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let is_udp = recv.get("lost_packets").is_some();
        let lost_packets = recv
            .get("lost_packets")
            .or_else(|| end.pointer("/sum/lost_packets"))
            .and_then(Value::as_u64);
        let packets = recv
            .get("packets")
            .or_else(|| end.pointer("/sum/packets"))
            .and_then(Value::as_u64);
        let intervals_src = v
            .pointer("/server_output_json/intervals")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .or_else(|| v.get("intervals").and_then(Value::as_array));
        let intervals = intervals_src
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        let s = i.get("sum")?;
                        Some((f(s, "bits_per_second"), f(s, "seconds")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(IperfReport {
            bits_per_second: f(recv, "bits_per_second"),
            bytes: recv.get("bytes").and_then(Value::as_u64).unwrap_or(0),
            sender_bits_per_second: f(sent, "bits_per_second"),
            lost_packets: if is_udp { lost_packets } else { None },
            packets: if is_udp { packets } else { None },
            intervals,
            raw: v,
        })
    }

    /// Receiver rate in Mbit/s.
    pub fn mbps(&self) -> f64 {
        self.bits_per_second / 1e6
    }
}

/// Run `ping -n [extra...] dst` inside `ns`, killed after `timeout`. Returns the raw output;
/// check `status` yourself (ping exits 1 when no reply came, 2 on other errors).
///
/// Example: `ping(&topo.sub, dst, &["-c", "1", "-W", "1", "-M", "do", "-s", "1400"], t)`.
pub fn ping(
    ns: &NetNs,
    dst: IpAddr,
    extra: &[&str],
    timeout: Duration,
) -> Result<std::process::Output> {
    let dst = dst.to_string();
    let mut args = vec!["ping", "-n"];
    args.extend_from_slice(extra);
    args.push(&dst);
    ns.exec_timeout(args, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_args() {
        let mut o = IperfOpts::udp("198.18.0.10".parse().unwrap(), 5301, 5, 200_000_000);
        o.bind = Some("198.19.0.2".parse().unwrap());
        o.len = Some(1400);
        let a = o.args().join(" ");
        assert_eq!(
            a,
            "iperf3 -c 198.18.0.10 -p 5301 -J --get-server-output -t 5 --connect-timeout 3000 \
             -u -b 200000000 -B 198.19.0.2 -l 1400"
        );
        assert_eq!(o.timeout(), Duration::from_secs(18));
    }

    #[test]
    fn parse_udp_312() {
        let v: Value = serde_json::from_str(
            r#"{"end":{"sum":{"bytes":100,"bits_per_second":50e6,"lost_packets":3,"packets":10},
                "sum_sent":{"bytes":100,"bits_per_second":50e6,"lost_packets":3,"packets":10},
                "sum_received":{"bytes":90,"bits_per_second":45e6,"lost_packets":3,"packets":10}},
               "intervals":[{"sum":{"bits_per_second":1.0,"seconds":1.0}}],
               "server_output_json":{"intervals":[{"sum":{"bits_per_second":2.0,"seconds":1.0}},
                                                  {"sum":{"bits_per_second":3.0,"seconds":0.5}}]}}"#,
        )
        .unwrap();
        let r = IperfReport::from_client_json(v).unwrap();
        assert_eq!(r.bits_per_second, 45e6);
        assert_eq!(r.sender_bits_per_second, 50e6);
        assert_eq!(r.lost_packets, Some(3));
        assert_eq!(r.bytes, 90);
        assert_eq!(r.intervals, vec![(2.0, 1.0), (3.0, 0.5)]);
    }

    #[test]
    fn parse_tcp() {
        let v: Value = serde_json::from_str(
            r#"{"end":{"sum_sent":{"bytes":100,"bits_per_second":9e7},
                "sum_received":{"bytes":99,"bits_per_second":8.9e7}},
               "intervals":[{"sum":{"bits_per_second":8.8e7,"seconds":1.0}}]}"#,
        )
        .unwrap();
        let r = IperfReport::from_client_json(v).unwrap();
        assert_eq!(r.bits_per_second, 8.9e7);
        assert_eq!(r.lost_packets, None);
        assert_eq!(r.intervals, vec![(8.8e7, 1.0)]);
    }
}
