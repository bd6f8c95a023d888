//! Controller benchmark (issue 3 item 9): events accepted per second end to end (HTTP API →
//! durable in SQLite → BPF maps updated) and API→enforced latency with 10k modems; one million
//! pending timed events: resident memory and firing lateness. Results and method:
//! `docs/PERFORMANCE.md`, section "Controller (issue 3)".
//!
//! A benchmark, not a test: it needs root (CAP_BPF) for the real maps and prints a table.
//!
//! ```text
//! cargo bench -p shaper-user --bench controller                 # both parts
//! cargo bench -p shaper-user --bench controller -- --quick      # shorter runs, 200k pending
//! cargo xtask bench controller
//! ```
//!
//! Options: `--quick`, `--secs S` (per throughput run, default 5), `--conns N` (default 64),
//! `--modems N` (default 10k), `--pending N` (default 1M), `--due N` (of those, how many come
//! due during the lateness run, default 10k), `--part throughput|pending` (default both, each
//! in its own process so one part's memory does not show in the other's RSS), `--dir PATH`
//! (where the SQLite files go; default the system temporary directory, which must be on a
//! real disk for the fsync figures to mean anything), `--no-dataplane` (Disabled enforcer).
//!
//! What runs is what `shaper run` runs: the same axum router and handlers (`api::router`,
//! with the group commit of `POST /v1/events`), the same [`Controller`] over a [`SqliteStore`]
//! on disk (WAL, `synchronous=FULL`), the same tick loop (`api::ticker::tick_loop`, woken by
//! accepted submissions), and the real [`DataplaneEnforcer`] writing the data plane's BPF maps
//! (programs loaded, not attached to an interface: map updates do not depend on it). The load
//! generator is in the same process on its own thread (one current-thread runtime, HTTP/1.1
//! keep-alive connections, a raw minimal client) and shares the machine's cores with the
//! server, as a client on the same host would.
//!
//! "Enforced" is the moment `DataplaneEnforcer::apply` returned for the modem with the event's
//! grant in force (a wrapper records it); every event carries a unique rate, so its record is
//! found by that rate. Baselines in the same run: an axum handler that does nothing (the
//! HTTP floor, same client) and bare fsync'd SQLite commits (one one-row `INSERT` per
//! transaction, same file system, same pragmas).

// One `target:` line per issue-3 target, so that a run that misses one says so (a figure
// nobody compared once regressed unseen: docs/PERFORMANCE.md, controller); a miss fails it.
#[path = "common/targets.rs"]
mod targets;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use shaper::api::{self, AppState, Role, TokenEntry, TokenTable, hash_token};
use shaper::controller::{
    Controller, ControllerConfig, DataplaneEnforcer, Disabled, EnforceError, Enforcer, ModemBinding,
};
use shaper::dataplane::{Dataplane, Limits, LoadOptions};
use shaper::policy::SubscriberKey;
use shaper::provision::{EventRequest, QosLevel, Source};
use shaper::store::SqliteStore;

const TOKEN: &str = "bench-token";
/// Base plan rate; event rates are `EVENT_RATE + k`, unique per event.
const BASE_RATE: u64 = 10_000_000;
const EVENT_RATE: u64 = 100_000_000;
const DUE_RATE: u64 = 900_000_000;

// ---- arguments ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Both,
    Throughput,
    Pending,
}

#[derive(Clone, Debug)]
struct Args {
    secs: f64,
    conns: usize,
    modems: u32,
    pending: u32,
    due: u32,
    part: Part,
    dir: PathBuf,
    dataplane: bool,
    quick: bool,
}

fn count(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1_000),
        Some('M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    Ok(num.parse::<u32>().with_context(|| format!("{s:?}"))? * mult)
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        secs: 5.0,
        conns: 64,
        modems: 10_000,
        pending: 1_000_000,
        due: 10_000,
        part: Part::Both,
        dir: std::env::temp_dir(),
        dataplane: true,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {
                a.quick = true;
                a.secs = 2.0;
                a.pending = 200_000;
            }
            "--secs" => a.secs = val()?.parse()?,
            "--conns" => a.conns = val()?.parse()?,
            "--modems" => a.modems = count(&val()?)?,
            "--pending" => a.pending = count(&val()?)?,
            "--due" => a.due = count(&val()?)?,
            "--part" => {
                a.part = match val()?.as_str() {
                    "throughput" => Part::Throughput,
                    "pending" => Part::Pending,
                    other => bail!("--part {other}: throughput or pending"),
                }
            }
            "--dir" => a.dir = PathBuf::from(val()?),
            "--no-dataplane" => a.dataplane = false,
            "--bench" => {} // cargo bench passes it to harness=false benches
            other => bail!("unknown option {other}"),
        }
    }
    ensure!(
        a.conns > 0 && a.modems > 0,
        "--conns and --modems must be > 0"
    );
    ensure!(a.due <= a.pending, "--due must not exceed --pending");
    Ok(a)
}

// ---- measurement helpers ------------------------------------------------------------------

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time the hypervisor took from this guest's vCPUs so far, all CPUs together, in ms
/// (`steal` of the `cpu` line of `/proc/stat`, in USER_HZ ticks of 10 ms); `None` if
/// unreadable. A run whose vCPUs were descheduled by the host shows it here: its latency
/// tail is the host's, not the controller's.
fn steal_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    Some(ticks * 10)
}

/// The `q` quantile (0..=1) of sorted values; an event never enforced is in `sorted` as
/// `+∞` (see [`with_misses`]), so a quantile that reaches one is `inf`, not a flattering
/// figure over the events that made it.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `lat` (the latencies of the events that were enforced) with `missing` events that never
/// were, as `+∞`: a miss counts in the percentiles instead of vanishing from them.
fn with_misses(mut lat: Vec<f64>, missing: usize) -> Vec<f64> {
    lat.extend(std::iter::repeat_n(f64::INFINITY, missing));
    sorted(lat)
}

/// When each grant rate was enforced: rate → (monotonic instant, wall µs).
#[derive(Clone, Default)]
struct Marks(Arc<Mutex<HashMap<u64, (Instant, u64)>>>);

/// The real enforcer, recording when each level's apply returned.
struct Timed {
    inner: Box<dyn Enforcer>,
    marks: Marks,
}

impl Enforcer for Timed {
    fn apply(&mut self, modem: &ModemBinding, qos: &QosLevel) -> Result<(), EnforceError> {
        self.inner.apply(modem, qos)?;
        if let Some(rate) = qos.max_down_bps {
            let at = (Instant::now(), wall_us());
            self.marks.0.lock().expect("marks lock").insert(rate, at);
        }
        Ok(())
    }
    fn remove(&mut self, modem: &ModemBinding) -> Result<(), EnforceError> {
        self.inner.remove(modem)
    }
}

// ---- set-up -------------------------------------------------------------------------------

fn load_dataplane(modems: u32) -> Result<Arc<Mutex<Dataplane>>> {
    let dp = Dataplane::load(LoadOptions {
        limits: Limits {
            max_subscribers: (modems + 1024).next_power_of_two(),
            max_classes: (2 * modems + 1024).next_power_of_two(),
            max_rule_keys: 64,
            max_rule_entries: 64,
            max_flows: 64,
        },
        ..LoadOptions::default()
    })
    .context("loading the data plane (needs root)")?;
    Ok(Arc::new(Mutex::new(dp)))
}

fn modem_name(i: u32) -> String {
    format!("cm{i}")
}

fn modem_binding(i: u32) -> ModemBinding {
    let [_, b, c, d] = (0x0b00_0000u32 + i).to_be_bytes();
    ModemBinding {
        modem: modem_name(i),
        addrs: vec![SubscriberKey {
            addr: std::net::IpAddr::from([11, b, c, d]),
            len: 32,
        }],
        up_class: 2 * i + 1,
        down_class: 2 * i + 2,
        htb_minor_down: None,
        htb_minor_up: None,
    }
}

fn base_plan() -> QosLevel {
    QosLevel {
        max_down_bps: Some(BASE_RATE),
        max_up_bps: Some(BASE_RATE / 5),
        burst_bytes: Some(15_000),
        ..QosLevel::default()
    }
}

/// A controller on a fresh SQLite file in `dir`, with `modems` modems registered and bound.
fn open_controller(
    dir: &Path,
    name: &str,
    modems: u32,
    dp: Option<Arc<Mutex<Dataplane>>>,
    marks: Marks,
) -> Result<Controller> {
    let path = dir.join(format!("shaper-bench-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path).with_context(|| format!("{}", path.display()))?;
    let inner: Box<dyn Enforcer> = match dp {
        Some(dp) => Box::new(DataplaneEnforcer::new(dp)),
        None => Box::new(Disabled),
    };
    let config = ControllerConfig {
        classes: 1..=2 * modems,
        htb_minors_down: None,
        htb_minors_up: None,
    };
    let (mut ctl, _) = Controller::open(
        config,
        Box::new(store),
        Box::new(Timed { inner, marks }),
        Box::new(Disabled),
        Vec::new(),
        api::system_now_ms(),
    )?;
    let t = Instant::now();
    for i in 0..modems {
        ctl.add_modem(modem_binding(i), base_plan(), api::system_now_ms())
            .with_context(|| format!("adding modem {i}"))?;
    }
    eprintln!(
        "  {modems} modems registered and enforced in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(ctl)
}

fn tokens() -> Arc<TokenTable> {
    Arc::new(
        TokenTable::new([TokenEntry {
            sha256_hex: hash_token(TOKEN),
            role: Role::Csr,
            subject: "bench".into(),
        }])
        .expect("a valid token table"),
    )
}

// ---- the load generator -------------------------------------------------------------------

/// One exchange: (event rate, sent, answered).
type Sample = (u64, Instant, Instant);

/// Reads one HTTP/1.1 response (headers, then `Content-Length` bytes) and returns its status.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..p])?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (p + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = std::str::from_utf8(&buf[..head_end])?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP response")?;
    Ok(status)
}

#[derive(Clone, Copy)]
struct Load {
    addr: SocketAddr,
    path: &'static str,
    conns: usize,
    secs: f64,
    /// Offered events per second over all connections; `None` = closed loop (saturation).
    rate: Option<f64>,
    modems: u32,
}

/// Runs `load` from a fresh thread with its own runtime; returns every exchange. Each POST
/// is an immediate grant for modem `k % modems` with rate `EVENT_RATE + k`, `k` counting
/// from `first`.
fn generate(load: Load, first: u64) -> Result<Vec<Sample>> {
    let next = Arc::new(AtomicU64::new(first));
    std::thread::spawn(move || -> Result<Vec<Sample>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let start = tokio::time::Instant::now();
            let deadline = start + Duration::from_secs_f64(load.secs);
            let mut tasks = Vec::new();
            for c in 0..load.conns {
                let next = next.clone();
                tasks.push(tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(load.addr).await?;
                    s.set_nodelay(true)?;
                    let mut buf = Vec::with_capacity(4096);
                    let mut out = Vec::new();
                    let interval = load
                        .rate
                        .map(|r| Duration::from_secs_f64(load.conns as f64 / r));
                    // Paced connections start spread over one interval.
                    let mut due = start
                        + interval.map_or(Duration::ZERO, |i| i * c as u32 / load.conns as u32);
                    loop {
                        if let Some(i) = interval {
                            tokio::time::sleep_until(due).await;
                            due += i;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let rate = EVENT_RATE + k;
                        let body = format!(
                            r#"{{"modem":"{}","qos":{{"max_down_bps":{rate}}}}}"#,
                            modem_name(u32::try_from(k % u64::from(load.modems))?)
                        );
                        let req = format!(
                            "POST {} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\
                             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            load.path,
                            body.len()
                        );
                        let t0 = Instant::now();
                        s.write_all(req.as_bytes()).await?;
                        let status = read_response(&mut s, &mut buf).await?;
                        let t1 = Instant::now();
                        ensure!(
                            status == 201,
                            "POST {}: status {status}: {}",
                            load.path,
                            String::from_utf8_lossy(&buf)
                        );
                        out.push((rate, t0, t1));
                    }
                    anyhow::Ok(out)
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            Ok(all)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load generator panicked"))?
}

// ---- results ------------------------------------------------------------------------------

struct Row {
    name: String,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    note: String,
}

fn print_rows(rows: &[Row]) {
    println!();
    println!(
        "{:<52} {:>12} {:>9} {:>9}  note",
        "run", "per second", "p50 ms", "p99 ms"
    );
    for r in rows {
        println!(
            "{:<52} {:>12.0} {:>9.3} {:>9.3}  {}",
            r.name, r.rate, r.p50_ms, r.p99_ms, r.note
        );
    }
}

/// Exchanges per second and answer latency of one load run.
fn answer_row(name: &str, samples: &[Sample], secs: f64) -> Row {
    let lat = sorted(
        samples
            .iter()
            .map(|(_, a, b)| (*b - *a).as_secs_f64() * 1e3)
            .collect(),
    );
    Row {
        name: name.into(),
        rate: samples.len() as f64 / secs,
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        note: format!("{} answered", samples.len()),
    }
}

/// End to end: events enforced per second (first send → last enforcement) and API→enforced
/// latency, matched by rate.
fn enforced_row(name: &str, samples: &[Sample], marks: &Marks) -> Row {
    let marks = marks.0.lock().expect("marks lock");
    let mut lat = Vec::with_capacity(samples.len());
    let mut missing = 0usize;
    let first = samples.iter().map(|s| s.1).min();
    let mut last = first;
    for (rate, sent, _) in samples {
        match marks.get(rate) {
            Some((at, _)) => {
                lat.push((*at - *sent).as_secs_f64() * 1e3);
                last = last.max(Some(*at));
            }
            None => missing += 1,
        }
    }
    let span = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    let enforced = lat.len();
    let lat = with_misses(lat, missing);
    Row {
        name: name.into(),
        rate: enforced as f64 / span,
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        note: format!(
            "{enforced} enforced, {missing} never enforced (superseded before a tick; \
             counted as ∞ in p50/p99)"
        ),
    }
}

// ---- part (a): throughput and latency -------------------------------------------------------

/// Bare SQLite: one-row `INSERT` transactions, WAL + `synchronous=FULL`, for `secs`.
fn fsync_floor(dir: &Path, secs: f64) -> Result<Row> {
    let path = dir.join(format!("shaper-bench-fsync-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute("INSERT INTO t (v) VALUES ('x')", [])?;
        conn.execute_batch("COMMIT")?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let n = lat.len();
    let lat = sorted(lat);
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(Row {
        name: "floor: SQLite commit (1-row INSERT, WAL, sync=FULL)".into(),
        rate: n as f64 / t0.elapsed().as_secs_f64(),
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        note: format!("{n} commits"),
    })
}

fn throughput(args: &Args) -> Result<()> {
    let dp = if args.dataplane {
        Some(load_dataplane(args.modems)?)
    } else {
        None
    };
    let marks = Marks::default();
    let ctl = open_controller(&args.dir, "api", args.modems, dp, marks.clone())?;
    let ctl = Arc::new(Mutex::new(ctl));
    let mut rows = vec![fsync_floor(&args.dir, args.secs.min(3.0))?];
    let fsync_rate = rows[0].rate;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (addr, floor_addr, stop) = rt.block_on(async {
        let state = AppState::new(ctl.clone(), tokens()).ticking_after_commit();
        let (clock, wake) = (state.clock.clone(), state.wake.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(api::ticker::tick_loop(
            ctl.clone(),
            clock,
            wake,
            stop_rx,
            None,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        // The HTTP floor: an axum handler that does nothing but answer like POST /v1/events.
        let floor = axum::Router::new().route(
            "/noop",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::CREATED,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"id":0,"duplicate":false}"#,
                )
            }),
        );
        let floor_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let floor_addr = floor_listener.local_addr()?;
        tokio::spawn(async move { axum::serve(floor_listener, floor).await });
        anyhow::Ok((addr, floor_addr, stop_tx))
    })?;

    let load = |addr, path, conns, rate| Load {
        addr,
        path,
        conns,
        secs: args.secs,
        rate,
        modems: args.modems,
    };
    let mut k = 0u64;
    let mut run = |name: &str, l: Load, rows: &mut Vec<Row>| -> Result<()> {
        eprintln!("  {name} ...");
        let stolen = steal_ms();
        let samples = generate(l, k)?;
        let stolen = steal_ms().zip(stolen).map(|(b, a)| b.saturating_sub(a));
        k += samples.len() as u64 + 1;
        let mut row = answer_row(&format!("{name}: answered"), &samples, l.secs);
        if let Some(ms) = stolen {
            row.note.push_str(&format!("; vCPU steal {ms} ms"));
        }
        rows.push(row);
        if l.path != "/noop" {
            // Let the last tick land.
            std::thread::sleep(Duration::from_millis(300));
            rows.push(enforced_row(&format!("{name}: enforced"), &samples, &marks));
        }
        Ok(())
    };
    let c = args.conns;
    run(
        &format!("floor: axum no-op POST, {c} conns"),
        load(floor_addr, "/noop", c, None),
        &mut rows,
    )?;
    let http_floor = rows.last().map_or(f64::NAN, |r| r.rate);
    run(
        &format!("API POST /v1/events, {c} conns, saturated"),
        load(addr, "/v1/events", c, None),
        &mut rows,
    )?;
    let saturated = rows.last().map_or(f64::NAN, |r| r.rate);
    run(
        &format!("API POST /v1/events, {c} conns, 10k/s offered"),
        load(addr, "/v1/events", c, Some(10_000.0)),
        &mut rows,
    )?;
    let paced_p99_ms = rows.last().map_or(f64::NAN, |r| r.p99_ms);
    run(
        "API POST /v1/events, 1 conn",
        load(addr, "/v1/events", 1, None),
        &mut rows,
    )?;
    let _ = stop.send(true);
    let stats = *ctl.lock().expect("controller lock").stats();
    rt.shutdown_timeout(Duration::from_secs(2));
    print_rows(&rows);
    println!();
    println!(
        "ratios: saturated end to end / SQLite commit floor = {:.1}× (group commit: many \
         events per fsync), / HTTP floor = {:.2}",
        saturated / fsync_rate,
        saturated / http_floor
    );
    let mean_apply_us = stats.total_apply.as_secs_f64() * 1e6 / stats.enforced.max(1) as f64;
    println!(
        "enforcer: {} enforcements, mean apply {mean_apply_us:.1} µs, max {:.1} ms",
        stats.enforced,
        stats.max_apply.as_secs_f64() * 1e3
    );
    if args.modems == 10_000 {
        targets::target(
            "events/s end to end, saturated",
            saturated,
            10_000.0,
            "events/s",
            true,
        );
        targets::target(
            "API→enforced p99 at 10k/s offered",
            paced_p99_ms,
            2.0,
            "ms",
            false,
        );
    }
    Ok(())
}

// ---- part (b): one million pending events ---------------------------------------------------

fn pending(args: &Args) -> Result<()> {
    let dp = if args.dataplane {
        Some(load_dataplane(args.modems)?)
    } else {
        None
    };
    let marks = Marks::default();
    let (rss_before, _) = rss_kib();
    let mut ctl = open_controller(&args.dir, "pending", args.modems, dp, marks.clone())?;
    let (rss_modems, _) = rss_kib();
    let far = args.pending - args.due;
    let t = Instant::now();
    let now = api::system_now_ms();
    const CHUNK: u32 = 10_000;
    let mut i = 0u32;
    while i < far {
        let reqs: Vec<EventRequest> = (i..(i + CHUNK).min(far))
            .map(|j| {
                // Starts spread over the coming 10 hours; every other one with a stop.
                let start = now + 3_600_000 + u64::from(j % 36_000) * 1000;
                EventRequest {
                    modem: modem_name(j % args.modems),
                    source: Source::Automation {
                        trigger: "bench".into(),
                    },
                    qos: QosLevel {
                        max_down_bps: Some(EVENT_RATE + u64::from(j)),
                        ..QosLevel::default()
                    },
                    start_ms: Some(start),
                    stop_ms: (j % 2 == 0).then_some(start + 1_800_000),
                    idempotency_key: None,
                    level: None,
                }
            })
            .collect();
        i += u32::try_from(reqs.len())?;
        for r in ctl.submit_batch(reqs, api::system_now_ms()) {
            r?;
        }
    }
    // The batch that comes due: `due` events, 10 per millisecond, starting 2 s from now.
    let due_start = api::system_now_ms() + 2000;
    let reqs: Vec<EventRequest> = (0..args.due)
        .map(|j| EventRequest {
            modem: modem_name(j % args.modems),
            source: Source::Automation {
                trigger: "bench".into(),
            },
            qos: QosLevel {
                max_down_bps: Some(DUE_RATE + u64::from(j)),
                ..QosLevel::default()
            },
            start_ms: Some(due_start + u64::from(j / 10)),
            stop_ms: None,
            idempotency_key: None,
            level: None,
        })
        .collect();
    let due_ms: Vec<(u64, u64)> = reqs
        .iter()
        .map(|r| (r.qos.max_down_bps.unwrap_or(0), r.start_ms.unwrap_or(0)))
        .collect();
    for r in ctl.submit_batch(reqs, api::system_now_ms()) {
        r?;
    }
    let load_secs = t.elapsed().as_secs_f64();
    let (rss_loaded, _) = rss_kib();
    let pending_now = ctl.engine().pending_count();
    eprintln!(
        "  {} pending events loaded in {load_secs:.1} s ({:.0}/s); firing {} of them from {}",
        pending_now,
        f64::from(args.pending) / load_secs,
        args.due,
        due_start
    );
    ensure!(
        api::system_now_ms() < due_start,
        "loading overran the due batch's start: give fewer --pending or a faster disk"
    );

    let ctl = Arc::new(Mutex::new(ctl));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let last_due = due_ms.iter().map(|d| d.1).max().unwrap_or(due_start);
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let clock: api::Clock = Arc::new(api::system_now_ms);
        let ticker = tokio::spawn(api::ticker::tick_loop(
            ctl.clone(),
            clock,
            Arc::default(),
            stop_rx,
            None,
        ));
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let done = {
                let m = marks.0.lock().expect("marks lock");
                due_ms.iter().all(|(rate, _)| m.contains_key(rate))
            };
            if done || Instant::now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(true);
        let _ = ticker.await;
    });
    let (rss_after, hwm) = rss_kib();
    let marks = marks.0.lock().expect("marks lock");
    let mut late = Vec::new();
    let mut missing = 0;
    for (rate, due) in &due_ms {
        match marks.get(rate) {
            Some((_, at_us)) => late.push((*at_us as f64 - (*due * 1000) as f64) / 1e3),
            None => missing += 1,
        }
    }
    let enforced = late.len();
    let late = with_misses(late, missing);
    println!();
    println!(
        "pending events: {} ({} far, {} due from +2 s at 10 per ms), {} modems",
        args.pending, far, args.due, args.modems
    );
    println!(
        "  load: {load_secs:.1} s via Controller::submit_batch (10k per commit), {:.0} events/s",
        f64::from(args.pending) / load_secs
    );
    println!(
        "  RSS: {:.0} MiB before, {:.0} MiB with {} modems, {:.0} MiB loaded, {:.0} MiB after \
         firing (peak {:.0} MiB); {:.0} bytes per pending event",
        rss_before as f64 / 1024.0,
        rss_modems as f64 / 1024.0,
        args.modems,
        rss_loaded as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (rss_loaded.saturating_sub(rss_modems) * 1024) as f64 / f64::from(args.pending)
    );
    println!(
        "  firing lateness (enforced − due, wall clock): p50 {:.3} ms, p99 {:.3} ms, max {:.3} \
         ms over {} events ({missing} not enforced within 30 s, counted as ∞); the last was \
         due at +{} ms",
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
        enforced + missing,
        last_due - due_start
    );
    if args.pending == 1_000_000 {
        let mb = |kib: u64| (kib * 1024) as f64 / 1e6;
        targets::target("RSS with 1M pending", mb(rss_loaded), 300.0, "MB", false);
        targets::target("RSS peak (after firing)", mb(hwm), 300.0, "MB", false);
        targets::target(
            "firing lateness p99",
            quantile(&late, 0.99),
            10.0,
            "ms",
            false,
        );
    }
    Ok(())
}

// ---- main -----------------------------------------------------------------------------------

fn main() -> Result<()> {
    // As `shaper` does at start (its memory is what part (b) measures).
    shaper::malloc::fix_mmap_threshold();
    let args = parse_args()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    match args.part {
        Part::Both => {
            eprintln!(
                "shaper controller bench: kernel {kernel}, {cpus} CPUs, {} modems, {} conns, \
                 {} s per run, data plane {}, SQLite files in {}",
                args.modems,
                args.conns,
                args.secs,
                if args.dataplane {
                    "real maps"
                } else {
                    "Disabled"
                },
                args.dir.display()
            );
            // Each part in its own process: RSS of one must not include the other. Both run
            // even when the first fails (a missed target exits 1), then the run fails.
            let mut failed = Vec::new();
            for part in ["throughput", "pending"] {
                let mut cmd = std::process::Command::new(std::env::current_exe()?);
                cmd.args(std::env::args().skip(1)).args(["--part", part]);
                let status = cmd.status()?;
                if !status.success() {
                    failed.push(format!("part {part}: {status}"));
                }
            }
            ensure!(failed.is_empty(), "{}", failed.join("; "));
            Ok(())
        }
        Part::Throughput => {
            eprintln!("(a) events over the API, {} modems", args.modems);
            throughput(&args)?;
            targets::exit_if_missed();
            Ok(())
        }
        Part::Pending => {
            eprintln!("(b) {} pending timed events", args.pending);
            pending(&args)?;
            targets::exit_if_missed();
            Ok(())
        }
    }
}
