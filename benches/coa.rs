//! RADIUS CoA benchmark (issue 5): CoA round trips per second between our `CoaClient` and our
//! `RadiusServer` (with a sink that ACKs everything) over loopback UDP, at several numbers of
//! requests in flight, each beside a bare UDP echo round trip measured in the same run with the
//! same transport shape (one client socket, identifier-routed responses, N in flight); then
//! codec operations per second (sign, verify, decode) beside one MD5 over the same bytes.
//! Results and method: `docs/PERFORMANCE.md`, "RADIUS CoA (issue 5)".
//!
//! A benchmark, not a test: it prints a table. No root needed (host loopback).
//!
//! ```text
//! cargo bench -p shaper-user --bench coa                    # 3 s per row, in flight 1,16,64
//! cargo bench -p shaper-user --bench coa -- --quick         # 1 s per row
//! cargo bench -p shaper-user --bench coa -- --secs 5 --inflight 1,8,128
//! ```

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use shaper::api::{Clock, system_now_ms};
use shaper::notify::RateProfile;
use shaper::notify::{
    ClientConfig, CoaClient, CoaRefusal, CoaSink, NasTarget, RadiusServer, RadiusServerConfig,
    RetryPolicy,
};
use shaper::proto::auth::md5;
use shaper::proto::radius::{
    Code, Packet, dict, encode_request, encode_response, verify_request, verify_response,
};
use shaper::provision::QosLevel;
use shaper::sessions::{SessionSelector, SessionTable};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const SECRET: &str = "bench-secret";

/// ACKs every CoA and counts them.
#[derive(Default)]
struct AckSink(AtomicU64);

impl CoaSink for AckSink {
    fn coa(&self, _: SessionSelector, _: QosLevel) -> Result<(), CoaRefusal> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn disconnect(&self, _: SessionSelector) -> Result<(), CoaRefusal> {
        Ok(())
    }
}

struct Opts {
    secs: f64,
    inflight: Vec<usize>,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        secs: 3.0,
        inflight: vec![1, 16, 64],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.secs = 1.0,
            "--secs" => o.secs = args.next().context("--secs N")?.parse()?,
            "--inflight" => {
                o.inflight = args
                    .next()
                    .context("--inflight LIST")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--bench" => {}
            other => bail!("unknown option {other}"),
        }
    }
    if o.inflight.iter().any(|&n| n == 0 || n > 256) {
        bail!("--inflight values must be 1..=256 (one socket has 256 identifiers)");
    }
    Ok(o)
}

fn qos() -> QosLevel {
    QosLevel {
        max_up_bps: Some(10_000_000),
        max_down_bps: Some(50_000_000),
        ..QosLevel::default()
    }
}

/// CoA round trips with `n` in flight for `secs`: (round trips, elapsed).
async fn coa_round_trips(
    client: Arc<CoaClient>,
    nas: NasTarget,
    n: usize,
    secs: f64,
) -> Result<(u64, Duration)> {
    // Session ids never repeat across calls: the server's replay cache would drop a request
    // identical to an earlier one (same id, session and Event-Timestamp second).
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = &SEQ;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, nas) = (client.clone(), nas.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                // A distinct session id per request: the server's duplicate cache must not
                // answer from memory.
                let id = seq.fetch_add(1, Ordering::Relaxed);
                let sel = SessionSelector {
                    acct_session_id: Some(format!("s{id}")),
                    user_name: Some("bench".into()),
                    ..SessionSelector::default()
                };
                client.coa(&nas, &sel, &qos()).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, t0.elapsed()))
}

/// The baseline: a UDP echo server and a client with the CoA client's transport shape.
async fn echo_round_trips(n: usize, secs: f64, payload: Vec<u8>) -> Result<(u64, Duration)> {
    let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let server_addr = server.local_addr()?;
    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, src)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..len], src).await;
            }
        }
    });
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    type Waiters = Arc<Mutex<HashMap<u8, oneshot::Sender<Vec<u8>>>>>;
    let waiters: Waiters = Arc::default();
    let recv = tokio::spawn({
        let (sock, waiters) = (sock.clone(), waiters.clone());
        async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, _)) = sock.recv_from(&mut buf).await {
                if let Some(tx) = waiters.lock().unwrap().remove(&buf[1]) {
                    let _ = tx.send(buf[..len].to_vec());
                }
            }
        }
    });
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..n {
        let (sock, waiters, mut payload) = (sock.clone(), waiters.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            // Each worker owns one identifier, as the CoA client's allocator gives each request
            // its own.
            let id = u8::try_from(w).expect("n <= 256");
            payload[1] = id;
            while Instant::now() < end {
                let (tx, rx) = oneshot::channel();
                waiters.lock().unwrap().insert(id, tx);
                sock.send_to(&payload, server_addr).await?;
                black_box(rx.await?);
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = t0.elapsed();
    echo.abort();
    recv.abort();
    Ok((total, elapsed))
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let n = n as f64;
    n / d.as_secs_f64()
}

/// Runs `f` for about `secs`; returns operations per second.
fn ops_per_sec(secs: f64, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    per_sec(n, t0.elapsed())
}

fn codec(secs: f64) -> Result<()> {
    let mut p = Packet::new(Code::CoaRequest, 1);
    SessionSelector {
        acct_session_id: Some("sess-0001".into()),
        user_name: Some("subscriber-0001".into()),
        framed_ipv4: Some("198.18.0.10".parse()?),
        ..SessionSelector::default()
    }
    .write_to(&mut p);
    p.attributes.extend(RateProfile::Mikrotik.encode(&qos())?);
    p.push_integer(dict::EVENT_TIMESTAMP, 1_764_000_000);
    p.add_message_authenticator();
    let req = encode_request(&p, SECRET.as_bytes())?;
    let auth: [u8; 16] = req[4..20].try_into()?;
    let mut ack = Packet::new(Code::CoaAck, 1);
    ack.add_message_authenticator();
    let resp = encode_response(&ack, &auth, SECRET.as_bytes())?;

    let floor = ops_per_sec(secs, || {
        black_box(md5(&[black_box(&req), SECRET.as_bytes()]));
    });
    println!(
        "\ncodec ({} B CoA-Request with Mikrotik-Rate-Limit + Message-Authenticator):",
        req.len()
    );
    println!(
        "  {:<44} {:>12} {:>9} {:>8}",
        "operation", "ops/s", "ns/op", "vs MD5"
    );
    let row = |name: &str, ops: f64| {
        println!(
            "  {name:<44} {ops:>12.0} {:>9.0} {:>7.1}×",
            1e9 / ops,
            floor / ops
        );
    };
    row("MD5 over the packet + secret (floor)", floor);
    row(
        "decode",
        ops_per_sec(secs, || {
            black_box(Packet::decode(black_box(&req)).unwrap());
        }),
    );
    row(
        "sign request (encode + HMAC-MD5 + MD5)",
        ops_per_sec(secs, || {
            black_box(encode_request(black_box(&p), SECRET.as_bytes()).unwrap());
        }),
    );
    row(
        "verify request (MD5 + HMAC-MD5)",
        ops_per_sec(secs, || {
            verify_request(black_box(&req), SECRET.as_bytes(), true).unwrap();
        }),
    );
    row(
        "sign response (ACK + Message-Authenticator)",
        ops_per_sec(secs, || {
            black_box(encode_response(black_box(&ack), &auth, SECRET.as_bytes()).unwrap());
        }),
    );
    row(
        "verify response",
        ops_per_sec(secs, || {
            verify_response(black_box(&resp), &auth, SECRET.as_bytes(), true).unwrap();
        }),
    );
    Ok(())
}

fn main() -> Result<()> {
    let opts = parse_opts()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sink = Arc::new(AckSink::default());
        let config = RadiusServerConfig {
            coa_listen: "127.0.0.1:0".parse()?,
            acct_listen: None,
            clients: vec![ClientConfig {
                addr: "127.0.0.1".parse()?,
                secret: SECRET.into(),
                require_message_authenticator: true,
                name: None,
            }],
            // Every round trip is a new request the replay cache remembers for 300 s.
            replay_cache_per_client: 10_000_000,
            ..RadiusServerConfig::default()
        };
        let server = Arc::new(RadiusServer::new(
            config,
            sink.clone(),
            Arc::new(SessionTable::new()),
        )?);
        let clock: Clock = Arc::new(system_now_ms);
        let handle = server.clone().spawn(clock).await?;
        let nas = NasTarget {
            addr: handle.coa_addr,
            secret: SECRET.into(),
            profile: RateProfile::Mikrotik,
            message_authenticator: true,
            require_response_message_authenticator: true,
        };
        let client = Arc::new(
            CoaClient::bind(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                RetryPolicy {
                    initial_timeout: Duration::from_secs(2),
                    max_timeout: Duration::from_secs(2),
                    attempts: 3,
                },
            )
            .await?,
        );
        // Warm-up (threads of the blocking pool, socket buffers).
        coa_round_trips(client.clone(), nas.clone(), 4, 0.3).await?;
        let mut sample = Packet::new(Code::CoaRequest, 0);
        SessionSelector::by_session_id("s0").write_to(&mut sample);
        sample
            .attributes
            .extend(RateProfile::Mikrotik.encode(&qos())?);
        sample.add_message_authenticator();
        let payload = encode_request(&sample, SECRET.as_bytes())?;

        println!(
            "CoA round trips over loopback UDP, {} s per row (tokio, 2 worker threads; server \
             handles each request on the blocking pool):",
            opts.secs
        );
        println!(
            "  {:>9} {:>14} {:>14} {:>10} {:>10} {:>7}",
            "in flight", "CoA rt/s", "echo rt/s", "CoA µs", "echo µs", "ratio"
        );
        for &n in &opts.inflight {
            let (echo_n, echo_d) = echo_round_trips(n, opts.secs, payload.clone()).await?;
            let (coa_n, coa_d) = coa_round_trips(client.clone(), nas.clone(), n, opts.secs).await?;
            let (coa_rate, echo_rate) = (per_sec(coa_n, coa_d), per_sec(echo_n, echo_d));
            let nf = n as f64;
            println!(
                "  {n:>9} {coa_rate:>14.0} {echo_rate:>14.0} {:>10.1} {:>10.1} {:>6.2}×",
                nf * 1e6 / coa_rate,
                nf * 1e6 / echo_rate,
                echo_rate / coa_rate
            );
        }
        println!(
            "  (ratio = echo rate / CoA rate; µs = mean round-trip latency = in flight / rate; \
             sink calls: {}; server resent {} from its duplicate cache)",
            sink.0.load(Ordering::Relaxed),
            server.stats().resent.load(Ordering::Relaxed)
        );
        handle.shutdown().await;
        anyhow::Ok(())
    })?;
    codec(opts.secs.min(2.0))
}
