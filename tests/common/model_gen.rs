//! Random steps for `tests/controller_model.rs`: API requests (valid and invalid, every role),
//! clock advances, ticks, restarts, and store failures injected into single steps.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use shaper::provision::{EventState, QosLevel, ServiceTargets};

use super::model_ref::{Fault, MAX_TIME_MS, Model, Patch, Post, Who};

/// Highest rate a level may carry (u32::MAX bit/s).
const MAX_RATE: u64 = 4_294_967_295;

pub const MODEMS: [&str; 3] = ["cm1", "cm2", "cm3"];

#[derive(Clone, Debug)]
pub enum Step {
    Post(Post, Option<Fault>),
    /// A request refused before it is read (malformed body or header): 400 after the gates.
    PostRaw {
        who: Who,
        body: String,
        content_type: &'static str,
        key: Option<String>,
    },
    Patch(Patch, Option<Fault>),
    /// PATCH with a malformed path id or body.
    PatchRaw {
        who: Who,
        path: String,
        body: String,
    },
    Delete {
        who: Who,
        id: u64,
        fault: Option<Fault>,
    },
    DeleteRaw {
        who: Who,
        path: String,
    },
    PutBase {
        who: Who,
        modem: String,
        plan: QosLevel,
        valid: bool,
        fault: Option<Fault>,
    },
    PutBaseRaw {
        who: Who,
        modem: String,
        body: String,
    },
    GetModem {
        who: Who,
        modem: String,
    },
    GetEvent {
        who: Who,
        id: u64,
    },
    List {
        who: Who,
        modem: Option<String>,
        state: Option<EventState>,
        /// A query parameter that makes it a 400 (bad state value, unknown name).
        bad: Option<(&'static str, &'static str)>,
    },
    /// The clock moves on, nothing fires.
    Advance(u64),
    /// The clock moves on, then `tick(now)`.
    Tick(u64, Option<Fault>),
    /// The clock moves on, then the controller is dropped and reopened from the store.
    Restart(u64),
}

fn who(rng: &mut StdRng) -> Who {
    let r = rng.gen_range(0..100);
    match r {
        0..20 => Who::Admin,
        20..40 => Who::Csr,
        40..60 => Who::Sub1,
        60..75 => Who::Sub2,
        75..95 => Who::Auto,
        95..97 => Who::Provider,
        97..99 => Who::NoToken,
        _ => Who::BadToken,
    }
}

/// A valid grant (one to a few fields).
pub fn grant(rng: &mut StdRng) -> QosLevel {
    let mut q = QosLevel::default();
    let p = |rng: &mut StdRng, pct: u32| rng.gen_range(0..100) < pct;
    if p(rng, 50) {
        q.max_down_bps = Some(
            *[5_000_000, 50_000_000, 100_000_000, MAX_RATE]
                .choose(rng)
                .unwrap(),
        );
    }
    if p(rng, 30) {
        q.max_up_bps = Some(*[1_000_000, 8_000_000].choose(rng).unwrap());
    }
    if p(rng, 20) {
        q.committed_down_bps = Some(*[500_000, 2_000_000].choose(rng).unwrap());
    }
    if p(rng, 10) {
        q.committed_up_bps = Some(250_000);
    }
    if p(rng, 15) {
        q.burst_bytes = Some(*[20_000, 100_000].choose(rng).unwrap());
    }
    if p(rng, 25) {
        q.priority = Some(rng.gen_range(0..=7));
    }
    if p(rng, 10) {
        q.mtu = Some(*[1280, 1500, 9000].choose(rng).unwrap());
    }
    if p(rng, 10) {
        q.targets.availability_ppm = Some(999_000);
    }
    if p(rng, 5) {
        q.targets.repair_time_ms = Some(60_000);
    }
    if q.is_empty() {
        q.priority = Some(rng.gen_range(0..=7));
    }
    q
}

/// A valid base plan (sometimes the empty plan: no limits at all).
fn plan(rng: &mut StdRng) -> QosLevel {
    if rng.gen_range(0..20) == 0 {
        return QosLevel::default();
    }
    QosLevel {
        max_up_bps: Some(rng.gen_range(1..=10) * 1_000_000),
        max_down_bps: Some(*[5_000_000, 10_000_000, 20_000_000].choose(rng).unwrap()),
        committed_down_bps: rng.gen_bool(0.3).then_some(1_000_000),
        burst_bytes: rng.gen_bool(0.2).then_some(30_000),
        priority: rng.gen_bool(0.5).then(|| rng.gen_range(0..=7)),
        targets: ServiceTargets {
            availability_ppm: rng.gen_bool(0.2).then_some(999_900),
            ..ServiceTargets::default()
        },
        ..QosLevel::default()
    }
}

/// `q` broken in one field, so that it is invalid whatever else it sets.
fn corrupt(rng: &mut StdRng, mut q: QosLevel) -> QosLevel {
    match rng.gen_range(0..10) {
        0 => q.max_down_bps = Some(7),
        1 => q.max_down_bps = Some(5_000_000_000),
        2 => q.max_up_bps = Some(MAX_RATE + 1),
        3 => {
            q.max_down_bps = Some(5_000_000);
            q.committed_down_bps = Some(10_000_000);
        }
        4 => q.priority = Some(*[8, 255].choose(rng).unwrap()),
        5 => q.mtu = Some(1000),
        6 => {
            q.mtu = None;
            q.burst_bytes = Some(1000);
        }
        7 => {
            q.mtu = Some(9000);
            q.burst_bytes = Some(3000);
        }
        8 => q.targets.availability_ppm = Some(1_000_001),
        _ => q.targets.setup_time_ms = Some(0),
    }
    q
}

fn grant_or_bad(rng: &mut StdRng) -> (QosLevel, bool) {
    match rng.gen_range(0..100) {
        0..85 => (grant(rng), true),
        85..95 => {
            let g = grant(rng);
            (corrupt(rng, g), false)
        }
        // The empty grant: valid JSON, changes nothing, refused.
        _ => (QosLevel::default(), true),
    }
}

fn start(rng: &mut StdRng, now: u64) -> Option<u64> {
    match rng.gen_range(0..100) {
        0..40 => None,
        40..55 => Some(now.saturating_sub(rng.gen_range(0..60_000))),
        55..75 => Some(now + rng.gen_range(0..600_000)),
        75..90 => Some(now + rng.gen_range(600_000..7_200_000)),
        90..95 => Some(now + rng.gen_range(1..5_000)),
        95..98 => Some(MAX_TIME_MS + rng.gen_range(1..1000)),
        _ => Some(u64::MAX),
    }
}

fn stop(rng: &mut StdRng, start: Option<u64>, now: u64, none_pct: u32) -> Option<u64> {
    let from = start.unwrap_or(now).min(MAX_TIME_MS);
    if rng.gen_range(0..100) < none_pct {
        return None;
    }
    Some(match rng.gen_range(0..100) {
        0..40 => from.saturating_add(rng.gen_range(1..600_000)),
        40..85 => from.saturating_add(rng.gen_range(600_000..4_000_000)),
        85..89 => from,
        89..93 => now.saturating_sub(rng.gen_range(1..10_000)),
        93..96 => MAX_TIME_MS,
        96..98 => MAX_TIME_MS + 1,
        _ => u64::MAX,
    })
}

fn modem_for(rng: &mut StdRng, who: Who) -> String {
    if let Some(own) = who.subscriber_of() {
        if rng.gen_range(0..10) != 0 {
            return own.into();
        }
    }
    match rng.gen_range(0..100) {
        0..85 => (*MODEMS.choose(rng).unwrap()).into(),
        85..95 => "cm9".into(),
        95..97 => String::new(),
        97..99 => "m".repeat(129),
        _ => "cm\u{1}".into(),
    }
}

fn level_name(rng: &mut StdRng) -> String {
    match rng.gen_range(0..100) {
        0..45 => "boost-50".into(),
        45..90 => "prio".into(),
        90..95 => "nope".into(),
        95..97 => String::new(),
        _ => "l".repeat(65),
    }
}

fn fault(rng: &mut StdRng, choices: &[Fault]) -> Option<Fault> {
    (rng.gen_range(0..100) < 5).then(|| *choices.choose(rng).unwrap())
}

/// An event id: mostly one the model holds (pending ones preferred), sometimes one that was
/// refused (burned) or never existed.
fn event_id(rng: &mut StdRng, model: &Model) -> u64 {
    let pending: Vec<u64> = model
        .events
        .values()
        .filter(|e| e.state == EventState::Pending)
        .map(|e| e.id)
        .collect();
    let all: Vec<u64> = model.events.keys().copied().collect();
    let burned: Vec<u64> = model.burned.iter().copied().collect();
    match rng.gen_range(0..100) {
        0..65 if !pending.is_empty() => *pending.choose(rng).unwrap(),
        0..88 if !all.is_empty() => *all.choose(rng).unwrap(),
        88..94 if !burned.is_empty() => *burned.choose(rng).unwrap(),
        _ => model.last_id + rng.gen_range(1..50),
    }
}

fn bad_path(rng: &mut StdRng) -> String {
    (*["0", "abc", "-3", "9223372036854775808", "1.5"]
        .choose(rng)
        .unwrap())
    .into()
}

/// The next step. A request of `sent` (earlier submissions) is resent now and then: an
/// idempotent retry, or (changed) a reuse of its key for another request.
pub fn step(rng: &mut StdRng, model: &Model, now: u64, sent: &[Post]) -> Step {
    let r = rng.gen_range(0..1000);
    match r {
        0..350 => {
            if let (Some(p), true) = (sent.choose(rng), rng.gen_range(0..8) == 0) {
                let mut p = p.clone();
                if rng.gen_range(0..4) == 0 {
                    p.stop_ms = p.stop_ms.map(|s| s.saturating_add(1));
                }
                let f = fault(rng, &[Fault::AppendAudit, Fault::CommitBatch]);
                return Step::Post(p, f);
            }
            let who = who(rng);
            let restricted =
                who.subscriber_of().is_some() || (who == Who::Csr && model.csr_from_catalogue);
            let kind = rng.gen_range(0..100);
            let (qos, level) = match (restricted, kind) {
                (true, 0..85) | (false, 0..25) => (None, Some(level_name(rng))),
                (true, 85..95) | (false, 25..95) => (Some(grant_or_bad(rng)), None),
                (_, 95..98) => (Some(grant_or_bad(rng)), Some(level_name(rng))),
                _ => (None, None),
            };
            let start_ms = start(rng, now);
            let none_pct = if level.is_some() { 5 } else { 30 };
            let stop_ms = stop(rng, start_ms, now, none_pct);
            let key = rng
                .gen_bool(0.5)
                .then(|| format!("k{}", rng.gen_range(0..400)));
            let post = Post {
                who,
                key,
                modem: modem_for(rng, who),
                qos,
                level,
                start_ms,
                stop_ms,
            };
            let f = fault(
                rng,
                &[
                    Fault::AppendEvent,
                    Fault::AppendEventLost,
                    Fault::CommitBatch,
                    Fault::AppendAudit,
                ],
            );
            Step::Post(post, f)
        }
        350..380 => {
            let (body, content_type, key) = match rng.gen_range(0..8) {
                0 => (
                    r#"{"modem":"cm1","qos":{"max_down_bps":-5}}"#,
                    "application/json",
                    None,
                ),
                1 => (
                    r#"{"modem":"cm1","qos":{"max_dwn_bps":1}}"#,
                    "application/json",
                    None,
                ),
                2 => (
                    r#"{"modem":"cm1","qos":{"max_down_bps":18446744073709551616}}"#,
                    "application/json",
                    None,
                ),
                3 => (r#"{"modem":"cm1","level":"prio""#, "application/json", None),
                4 => (r#"{"modem":"cm1","level":"prio"}"#, "text/plain", None),
                5 => (r#"[{"modem":"cm1"}]"#, "application/json", None),
                6 => (
                    r#"{"modem":"cm1","start_ms":1.5,"level":"prio"}"#,
                    "application/json",
                    None,
                ),
                _ => (
                    r#"{"modem":"cm1","level":"prio"}"#,
                    "application/json",
                    Some(if rng.gen_bool(0.5) {
                        "a b".into()
                    } else {
                        "k".repeat(201)
                    }),
                ),
            };
            Step::PostRaw {
                who: who(rng),
                body: body.into(),
                content_type,
                key,
            }
        }
        380..500 => {
            let id = event_id(rng, model);
            let ev = model.events.get(&id);
            let field = |rng: &mut StdRng| rng.gen_range(0..100);
            let start_ms = match field(rng) {
                0..40 => None,
                40..50 => Some(None),
                _ => Some(start(rng, now)),
            };
            let from = start_ms.flatten().or(ev.and_then(|e| e.start_ms));
            let stop_ms = match field(rng) {
                0..40 => None,
                40..48 => Some(None),
                _ => Some(stop(rng, from, now, 0)),
            };
            let qos = match field(rng) {
                0..70 => None,
                70..90 => Some((grant(rng), true)),
                90..95 => {
                    let g = grant(rng);
                    Some((corrupt(rng, g), false))
                }
                _ => match ev.and_then(|e| e.level.as_ref()) {
                    Some(l) => Some((model.levels[l].qos, true)),
                    None => Some((QosLevel::default(), true)),
                },
            };
            let patch = Patch {
                who: who(rng),
                id,
                start_ms,
                stop_ms,
                qos,
            };
            let f = fault(
                rng,
                &[Fault::AmendEvent, Fault::CommitBatch, Fault::AppendAudit],
            );
            Step::Patch(patch, f)
        }
        500..515 => {
            let (path, body) = if rng.gen_bool(0.5) {
                (bad_path(rng), r#"{"stop_ms":null}"#.to_owned())
            } else {
                let id = event_id(rng, model).to_string();
                let body = *[
                    r#"{"stop_ms":"soon"}"#,
                    r#"{"stop":1}"#,
                    r#"{"qos":{"mtu":70000}}"#,
                ]
                .choose(rng)
                .unwrap();
                (id, body.to_owned())
            };
            Step::PatchRaw {
                who: who(rng),
                path,
                body,
            }
        }
        515..595 => Step::Delete {
            who: who(rng),
            id: event_id(rng, model),
            fault: fault(
                rng,
                &[Fault::SetEventState, Fault::CommitBatch, Fault::AppendAudit],
            ),
        },
        595..605 => Step::DeleteRaw {
            who: who(rng),
            path: bad_path(rng),
        },
        605..655 => {
            let modem: String = if rng.gen_range(0..10) == 0 {
                "cm9".into()
            } else {
                (*MODEMS.choose(rng).unwrap()).into()
            };
            let (plan, valid) = match rng.gen_range(0..100) {
                0..10 => (model.bases.get(&modem).copied().unwrap_or_default(), true),
                10..85 => (plan(rng), true),
                _ => {
                    let p = plan(rng);
                    (corrupt(rng, p), false)
                }
            };
            Step::PutBase {
                who: who(rng),
                modem,
                plan,
                valid,
                fault: fault(
                    rng,
                    &[Fault::PutModem, Fault::AppendModemAudit, Fault::CommitBatch],
                ),
            }
        }
        655..665 => Step::PutBaseRaw {
            who: who(rng),
            modem: (*MODEMS.choose(rng).unwrap()).into(),
            body: (*[r#"{"priority":300}"#, r#"{"max_down":1}"#, "nope"]
                .choose(rng)
                .unwrap())
            .into(),
        },
        665..695 => Step::GetModem {
            who: who(rng),
            modem: if rng.gen_range(0..8) == 0 {
                "cm9".into()
            } else {
                (*MODEMS.choose(rng).unwrap()).into()
            },
        },
        695..725 => Step::GetEvent {
            who: who(rng),
            id: event_id(rng, model),
        },
        725..755 => {
            let states = [
                EventState::Pending,
                EventState::Active,
                EventState::Completed,
                EventState::Cancelled,
            ];
            Step::List {
                who: who(rng),
                modem: rng
                    .gen_bool(0.5)
                    .then(|| (*MODEMS.choose(rng).unwrap()).into()),
                state: rng.gen_bool(0.4).then(|| *states.choose(rng).unwrap()),
                bad: match rng.gen_range(0..30) {
                    0 => Some(("state", "bogus")),
                    1 => Some(("limit", "5")),
                    _ => None,
                },
            }
        }
        755..800 => Step::Advance(rng.gen_range(1..120_000)),
        800..993 => {
            let dt = match rng.gen_range(0..100) {
                0..30 => 0,
                30..70 => rng.gen_range(1..60_000),
                70..95 => rng.gen_range(60_000..1_800_000),
                _ => rng.gen_range(3_600_000..3 * 86_400_000),
            };
            let f = fault(
                rng,
                &[Fault::SetEventState, Fault::CommitBatch, Fault::AppendAudit],
            );
            Step::Tick(dt, f)
        }
        _ => Step::Restart(rng.gen_range(0..600_000)),
    }
}
