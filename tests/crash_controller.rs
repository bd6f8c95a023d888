//! Crash consistency of the controller with the real binary (issue 3 items 4 and 8): `shaper
//! run` with a `[controller]` section in a fresh network namespace (a veth pair, no traffic)
//! takes a burst of events over its API from several client threads — immediate ones, ones
//! with a start, a stop, or both, some of them due within the burst — and is killed with
//! SIGKILL at a random moment in the middle of it. It is started again on the same store and
//! pins, and then:
//!
//! - every acknowledged event (201) is in the store, with its id, key and request;
//! - nothing was applied twice: each event has at most one `applied` and one `reverted` audit
//!   line, exactly the ones its timing calls for, and a retry of an acknowledged request with
//!   its idempotency key gets the same id back (200, duplicate);
//! - starts and stops that fell due while the process was down fired at once, in order: the
//!   `applied`/`reverted` lines of the whole store are in due order;
//! - the pending schedule (`GET /v1/events?state=pending`) and every event's state are what
//!   the acknowledged and stored requests call for at the time of the check;
//! - each modem's effective QoS (API) and its entries in the pinned BPF maps (opened from
//!   their pins) equal the base plan with the active grants layered in activation order.
//!
//! Three rounds with fixed seeds; each round's burst goes to the process the previous round
//! restarted, so the checks cover everything acknowledged so far.
//! Needs root and iproute2. The namespace, pins and files are removed on exit, also on panic.
//!
//! Run: `cargo test -p shaper-user --test crash_controller`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::shaper_run::{self, Guard, start};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use shaper::abi;
use shaper::controller::{Direction, class_config};
use shaper::dataplane::class_entry;
use shaper::lab::NetNs;
use shaper::provision::{AuditWhat, Event, EventState, QosLevel};
use shaper::store::{SqliteStore, Store as _};

const PORT: u16 = 18090;
const TOKEN: &str = "crash-csr-token";
const SUBJECT: &str = "carol";
const MODEMS: u8 = 6;
const CLIENTS: usize = 4;
const ROUNDS: u64 = 3;
const BASE_DOWN: u64 = 10_000_000;
const BASE_UP: u64 = 2_000_000;
/// Short start/stop offsets (ms after sending): due during the burst or the restart.
const SHORT_MS: std::ops::Range<u64> = 20..400;
/// Long offsets: never due while the test runs.
const LONG_MS: std::ops::Range<u64> = 3_600_000..7_200_000;

fn now_ms() -> u64 {
    shaper::api::system_now_ms()
}

fn modem_id(i: u8) -> String {
    format!("cm{i}")
}

fn modem_addr(i: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([198, 18, 0, 10 + i])
}

fn http(ns: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    shaper_run::http(ns, PORT, TOKEN, method, path, body)
}

/// `http` with an `Idempotency-Key` (the shared helper sends none).
fn post_event(ns: &str, key: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        shaper::lab::in_netns(ns, || std::net::TcpStream::connect(("127.0.0.1", PORT)))
            .expect("enter the namespace")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The pinned links under `pins` (for failure messages).
fn pinned_links(pins: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(pins).into_iter().flatten().flatten() {
        for link in std::fs::read_dir(dir.path().join("links"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(link.path().display().to_string());
        }
    }
    out
}

fn wait_ready(child: &mut Child, ns: &str, log: &Path, pins: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "shaper run exited with {status} (pinned links: {:?}): {}",
                pinned_links(pins),
                log_text(log)
            );
        }
        if let Ok((200, _)) = http(ns, "GET", "/v1/modems/cm0", None) {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    panic!("the API did not answer within 30 s: {}", log_text(log));
}

/// One request a client sent, as the store must keep it.
#[derive(Clone, Debug)]
struct Sent {
    key: String,
    body: String,
    modem: String,
    qos: QosLevel,
    start_ms: Option<u64>,
    stop_ms: Option<u64>,
}

/// One start or stop offset: short (due soon) or long (never due in the test).
fn offset(rng: &mut StdRng) -> u64 {
    if rng.gen_bool(0.5) {
        rng.gen_range(SHORT_MS)
    } else {
        rng.gen_range(LONG_MS)
    }
}

fn make_request(rng: &mut StdRng, key: String) -> Sent {
    let now = now_ms();
    let modem = modem_id(rng.gen_range(0..MODEMS));
    // Distinct-looking rates so a wrong layer order shows.
    let qos = QosLevel {
        max_down_bps: Some(rng.gen_range(20..400u64) * 1_000_000),
        max_up_bps: Some(rng.gen_range(3..40u64) * 1_000_000),
        ..QosLevel::default()
    };
    let (start_ms, stop_ms) = match rng.gen_range(0..4) {
        0 => (None, None),
        1 => (Some(now + offset(rng)), None),
        2 => (None, Some(now + offset(rng))),
        _ => {
            let start = now + offset(rng);
            (Some(start), Some(start + offset(rng)))
        }
    };
    let body = serde_json::json!({
        "modem": modem,
        "qos": {
            "max_down_bps": qos.max_down_bps,
            "max_up_bps": qos.max_up_bps,
        },
        "start_ms": start_ms,
        "stop_ms": stop_ms,
    })
    .to_string();
    Sent {
        key,
        body,
        modem,
        qos,
        start_ms,
        stop_ms,
    }
}

/// What the clients of one burst saw.
#[derive(Default)]
struct Burst {
    /// Acknowledged (201): key → (id, request).
    acked: BTreeMap<String, (u64, Sent)>,
    /// Sent, but no answer (the process died first): these may or may not be stored.
    unanswered: Vec<Sent>,
}

/// Runs `CLIENTS` threads posting events until the process dies; kills it with SIGKILL
/// after `kill_after`.
fn burst(ns: &str, round: u64, child: &mut Child, kill_after: Duration) -> Burst {
    let out = Arc::new(Mutex::new(Burst::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (ns, out, stop) = (ns.to_owned(), out.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(round * 1000 + c as u64);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = make_request(&mut rng, format!("r{round}-c{c}-{i}"));
                    match post_event(&ns, &sent.key, &sent.body) {
                        Ok((201, body)) => {
                            let v: Value = serde_json::from_str(&body).unwrap();
                            let id = v["id"].as_u64().unwrap();
                            out.lock()
                                .unwrap()
                                .acked
                                .insert(sent.key.clone(), (id, sent));
                        }
                        Ok((status, body)) => panic!("POST {}: {status} {body}", sent.body),
                        Err(_) => {
                            out.lock().unwrap().unanswered.push(sent);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    sleep(kill_after);
    child.kill().expect("SIGKILL shaper run");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "killed mid-burst, not exited: {status:?}"
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    Arc::into_inner(out).unwrap().into_inner().unwrap()
}

/// What an event's state must be at `now`, from its timing alone (no event is due near the
/// time of the check: short offsets are long past, long ones far ahead).
fn expected_state(e: &Event, now: u64) -> EventState {
    if e.start_due_ms > now {
        EventState::Pending
    } else if e.stop_ms.is_some_and(|s| s <= now) {
        EventState::Completed
    } else {
        EventState::Active
    }
}

fn base_plan() -> QosLevel {
    QosLevel {
        max_down_bps: Some(BASE_DOWN),
        max_up_bps: Some(BASE_UP),
        burst_bytes: Some(15_000),
        ..QosLevel::default()
    }
}

/// The effective QoS the model expects: base plan, the grants active at `now` layered in
/// activation order `(start_due_ms, id)`, normalized.
fn model_effective(events: &[Event], modem: &str, now: u64) -> QosLevel {
    let mut active: Vec<&Event> = events
        .iter()
        .filter(|e| e.modem == modem && expected_state(e, now) == EventState::Active)
        .collect();
    active.sort_by_key(|e| (e.start_due_ms, e.id));
    active
        .iter()
        .fold(base_plan(), |acc, e| e.qos.overlay(&acc))
        .normalized()
}

struct Rig {
    ns: String,
    config: PathBuf,
    db: PathBuf,
    log: PathBuf,
    pins: PathBuf,
}

/// Everything the module documentation promises, after a restart.
fn check(rig: &Rig, acked: &BTreeMap<String, (u64, Sent)>, unanswered: usize) {
    let ns = rig.ns.as_str();
    let scoped = |key: &str| format!("api:csr:{}:{SUBJECT}:{key}", SUBJECT.len());
    let latest_short = acked
        .values()
        .flat_map(|(_, s)| [s.start_ms, s.stop_ms])
        .flatten()
        .filter(|t| *t < now_ms() + SHORT_MS.end + 1000)
        .max()
        .unwrap_or(0);
    // Liveness, not timing: wait until the short starts and stops have all fired (the tick
    // loop fires them when due), then check everything at one instant.
    let t0 = Instant::now();
    let (store, now) = loop {
        let store = SqliteStore::open(&rig.db).expect("open the store");
        let now = now_ms();
        let snapshot = store.load().unwrap();
        let settled = now > latest_short
            && snapshot
                .events
                .iter()
                .all(|s| s.event.state == expected_state(&s.event, now));
        if settled {
            break (store, now);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "starts and stops not fired 30 s after they were due: {}",
            log_text(&rig.log)
        );
        sleep(Duration::from_millis(100));
    };
    let stored: Vec<Event> = store
        .load()
        .unwrap()
        .events
        .into_iter()
        .map(|s| s.event)
        .collect();
    let by_key: BTreeMap<&str, &Event> = stored
        .iter()
        .filter_map(|e| Some((e.idempotency_key.as_deref()?, e)))
        .collect();
    assert_eq!(by_key.len(), stored.len(), "every event has its own key");

    // 1. Every acknowledged event is stored as it was sent; at most the unanswered ones more.
    for (key, (id, sent)) in acked {
        let e = by_key
            .get(scoped(key).as_str())
            .unwrap_or_else(|| panic!("acknowledged event {id} ({key}) lost"));
        assert_eq!(e.id, *id, "{key}");
        assert_eq!(
            (&e.modem, e.qos, e.start_ms, e.stop_ms),
            (&sent.modem, sent.qos, sent.start_ms, sent.stop_ms),
            "event {id}"
        );
    }
    assert!(
        stored.len() <= acked.len() + unanswered,
        "{} stored, {} acknowledged, {unanswered} unanswered",
        stored.len(),
        acked.len()
    );

    // 2. Each event fired exactly as its timing says, once; fired lines are in due order.
    for e in &stored {
        let state = expected_state(e, now);
        assert_eq!(e.state, state, "event {}", e.id);
        let audit = store.audit(e.id).unwrap();
        let applied: Vec<u64> = audit
            .iter()
            .filter_map(|a| match a.what {
                AuditWhat::Applied { due_ms } => Some(due_ms),
                _ => None,
            })
            .collect();
        let reverted: Vec<u64> = audit
            .iter()
            .filter_map(|a| match a.what {
                AuditWhat::Reverted { due_ms } => Some(due_ms),
                _ => None,
            })
            .collect();
        let submitted = audit
            .iter()
            .filter(|a| a.what == AuditWhat::Submitted)
            .count();
        assert_eq!(submitted, 1, "event {}: {audit:?}", e.id);
        let want_applied: Vec<u64> = match state {
            EventState::Pending => vec![],
            _ => vec![e.start_due_ms],
        };
        let want_reverted: Vec<u64> = match state {
            EventState::Completed => e.stop_ms.into_iter().collect(),
            _ => vec![],
        };
        assert_eq!(applied, want_applied, "event {}: {audit:?}", e.id);
        assert_eq!(reverted, want_reverted, "event {}: {audit:?}", e.id);
    }
    let raw =
        rusqlite::Connection::open_with_flags(&rig.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let fired: Vec<(i64, u64, u64)> = raw
        .prepare(
            "SELECT seq, event, due_ms FROM audit WHERE what IN ('applied', 'reverted') \
             ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for pair in fired.windows(2) {
        assert!(
            pair[0].2 <= pair[1].2,
            "starts and stops fired out of due order: {pair:?}"
        );
    }

    // 3. The running controller agrees: states, the pending schedule.
    let (status, body) = http(ns, "GET", "/v1/events", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: Vec<Value> = serde_json::from_str(&body).unwrap();
    let api_states: BTreeMap<u64, String> = listed
        .iter()
        .map(|v| {
            (
                v["id"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let store_states: BTreeMap<u64, String> = stored
        .iter()
        .map(|e| (e.id, shaper::api::routes::state_name(e.state).to_owned()))
        .collect();
    assert_eq!(api_states, store_states);
    let (status, body) = http(ns, "GET", "/v1/events?state=pending", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let pending: BTreeSet<u64> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    let want_pending: BTreeSet<u64> = stored
        .iter()
        .filter(|e| e.start_due_ms > now)
        .map(|e| e.id)
        .collect();
    assert_eq!(pending, want_pending, "the pending schedule");

    // 4. Effective QoS (API) and the pinned maps, opened read-only from their pins (the
    // programs are not loaded a second time).
    let maps = pinned_maps_dir(&rig.pins);
    let open = |name: &str| {
        MapData::from_pin(maps.join(name)).unwrap_or_else(|e| panic!("pinned map {name}: {e}"))
    };
    let subs: BpfHashMap<MapData, abi::SubKeyV4, abi::SubValue> =
        BpfHashMap::try_from(Map::HashMap(open("shaper_subs_v4"))).unwrap();
    let slots: Array<MapData, abi::SubSlot> =
        Array::try_from(Map::Array(open("shaper_sub_slots"))).unwrap();
    let classes: Array<MapData, abi::ClassEntry> =
        Array::try_from(Map::Array(open("shaper_classes"))).unwrap();
    for i in 0..MODEMS {
        let modem = modem_id(i);
        let want = model_effective(&stored, &modem, now);
        let (status, body) = http(ns, "GET", &format!("/v1/modems/{modem}"), None).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let effective: QosLevel = serde_json::from_value(v["effective"].clone()).unwrap();
        assert_eq!(effective, want, "{modem}: effective QoS");
        let std::net::IpAddr::V4(addr) = modem_addr(i) else {
            unreachable!("modems have IPv4 addresses")
        };
        // The subscriber's hash entry leads to its slot, which holds its class per direction.
        let abi::SubValue { slot } = subs
            .get(
                &abi::SubKeyV4 {
                    addr: addr.octets(),
                },
                0,
            )
            .unwrap_or_else(|e| panic!("{modem}: no subscriber entry ({e})"));
        let s = slots.get(&slot, 0).unwrap();
        let (up, down) = (s.d[abi::DIR_UP].class_id, s.d[abi::DIR_DOWN].class_id);
        for (dir, class) in [(Direction::Up, up), (Direction::Down, down)] {
            let entry = classes.get(&class, 0).unwrap();
            // The policer state (`tat`) is the data plane's own; everything else is config.
            let expected = class_entry(&class_config(&want, dir, 0), entry.tat);
            assert_eq!(
                entry, expected,
                "{modem} {dir}: class {class} in the pinned map"
            );
        }
    }
}

/// `<pins>/v<ABI>/maps`.
fn pinned_maps_dir(pins: &Path) -> PathBuf {
    std::fs::read_dir(pins)
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('v'))
        })
        .expect("a versioned pin directory")
        .join("maps")
}

#[test]
fn kill_9_mid_burst_loses_nothing_and_reconciles() {
    let ns = NetNs::unique("crashctl").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-crashctl-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-crashctl-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.dir);
    let _ = std::fs::remove_dir_all(&guard.pins);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &[(TOKEN, "csr", SUBJECT)]);
    let modems: String = (0..MODEMS)
        .map(|i| {
            format!(
                "[[modem]]\nid = \"{}\"\naddrs = [\"{}\"]\nmax_down = {BASE_DOWN}\n\
                 max_up = {BASE_UP}\nburst = 15000\n",
                modem_id(i),
                modem_addr(i)
            )
        })
        .collect();
    let db = guard.dir.join("db/shaper.db");
    let config_text = format!(
        r#"
{dataplane}[controller]
store = "{store}"
listen = "127.0.0.1:{PORT}"
tokens_file = "{tokens}"
class_first = 16
class_last = 255
{modems}"#,
        dataplane = shaper_run::dataplane_toml(&guard.pins, "d0", "d1", None),
        store = db.display(),
        tokens = tokens.display(),
    );
    shaper::config::parse(&config_text).expect("the test's configuration");
    let config = guard.dir.join("shaper.toml");
    std::fs::write(&config, &config_text).unwrap();
    let rig = Rig {
        ns: ns.name().to_string(),
        config,
        db,
        log: guard.dir.join("shaper.log"),
        pins: guard.pins.clone(),
    };

    let child = guard.child.insert(start(&rig.ns, &rig.config, &rig.log));
    wait_ready(child, &rig.ns, &rig.log, &guard.pins);
    let mut acked = BTreeMap::new();
    let mut unanswered = 0;
    for round in 0..ROUNDS {
        let mut rng = StdRng::seed_from_u64(0xC0FFEE + round);
        let kill_after = Duration::from_millis(rng.gen_range(150..600));
        let b = burst(&rig.ns, round, guard.child.as_mut().unwrap(), kill_after);
        guard.child = None;
        assert!(
            !b.acked.is_empty(),
            "round {round}: nothing acknowledged before the kill: {}",
            log_text(&rig.log)
        );
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} acknowledged, {} unanswered",
            b.acked.len(),
            b.unanswered.len()
        );
        acked.extend(b.acked);
        unanswered += b.unanswered.len();

        let child = guard.child.insert(start(&rig.ns, &rig.config, &rig.log));
        wait_ready(child, &rig.ns, &rig.log, &guard.pins);
        check(&rig, &acked, unanswered);

        // Retries of acknowledged requests with their keys are duplicates: same id, nothing
        // new stored, nothing applied again.
        // What was accepted, by id (states may move meanwhile: the ticker fires starts and
        // stops due during the retries, which under load take long enough to see some).
        let accepted = || -> Vec<(u64, shaper::provision::EventRequest)> {
            let events = SqliteStore::open(&rig.db).unwrap().load().unwrap().events;
            events
                .into_iter()
                .map(|e| (e.event.id, e.request))
                .collect()
        };
        let before = accepted();
        for (key, (id, sent)) in acked.iter().step_by(7).take(5) {
            let (status, body) = post_event(&rig.ns, key, &sent.body).unwrap();
            assert_eq!(status, 200, "retry of {key}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["id"].as_u64(), Some(*id), "retry of {key}: {body}");
            assert_eq!(v["duplicate"], Value::Bool(true), "retry of {key}: {body}");
        }
        assert_eq!(accepted(), before, "retries stored something new");
    }
}
