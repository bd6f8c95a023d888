//! A model-based test of the controller (issue 11): random sequences of API requests (valid
//! and invalid, every role) through the real router, interleaved with clock advances, ticks,
//! restarts (the controller dropped and reopened from the same SQLite file) and store writes
//! made to fail, checked step by step against an independent reference model
//! (`common/model_ref.rs`).
//!
//! After **every** step:
//!
//! 1. memory equals a reload from the store: a second `SqliteStore` on the same file loads
//!    every event (all fields) and base plan, and they equal the engine's;
//! 2. the data plane equals the effective QoS: each bound modem's two classes, read back from
//!    the BPF class array, equal `class_entry(class_config(effective))`, and its addresses'
//!    subscriber slots (read from the BPF map) point at them;
//! 3. the model's base plans, events and effective levels equal the controller's;
//! 4. ids are never reused: an id the engine handed out for a request the store lost never
//!    appears again.
//!
//! Every request's status must be the model's (the exact code), and bodies of answers that
//! carry state (created ids, modem views, event views, lists) must match it too.
//!
//! Needs root (the test build of the data plane is loaded into the kernel, not attached), as
//! the other kernel tests. Runs `RUNS` runs of `STEPS` steps (10,000 in all, about 30 s in a
//! debug build); the seed of the first run is printed, and each run's seed also picks its
//! configuration (`csr_from_catalogue`, `tick_after_commit`), so `SHAPER_MODEL_SEED=<n>
//! SHAPER_MODEL_RUNS=1` replays one run exactly (`SHAPER_MODEL_STEPS=<n>` changes the steps
//! per run). A failing step prints the seed, the run, the step number and the last 20 steps.
//!
//! Run: `cargo test -p shaper-user --test controller_model -- --nocapture`.

mod common {
    pub mod model_gen;
    pub mod model_ref;
    pub mod model_rig;
}

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use common::model_gen::{self, MODEMS, Step};
use common::model_ref::{Answer, Fault, MEvent, Model, Post, Who};
use common::model_rig::{
    Rig, base_plan, catalogue, post_json, qos_json, qos_of, role_subject, state_name,
};
use shaper::controller::{Direction, class_config};
use shaper::dataplane::{Build, Dataplane, Limits, LoadOptions, class_entry};
use shaper::provision::{Event, QosLevel};
use shaper::store::Store;

const RUNS: u64 = 8;
const STEPS: u64 = 1250;

// ---- the checks -----------------------------------------------------------------------------

type Check = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(what()) }
}

/// The engine's event in the model's terms: the scoped idempotency key as the API makes it.
fn scoped(key: &Option<(Who, String)>) -> Option<String> {
    key.as_ref().map(|(who, k)| {
        let (role, subject) = role_subject(*who);
        format!("api:{role}:{}:{subject}:{k}", subject.len())
    })
}

/// (1) memory equals a reload from the store, (3) the model equals memory.
fn check_state(rig: &Rig, model: &Model) -> Check {
    let snap = rig.reader.load().map_err(|e| format!("reload: {e}"))?;
    let ctl = rig.ctl();
    let engine = ctl.engine();
    let stored: BTreeMap<u64, &Event> =
        snap.events.iter().map(|s| (s.event.id, &s.event)).collect();
    let memory: BTreeMap<u64, Event> = engine.events().map(|e| (e.id, e)).collect();
    ensure(stored.keys().eq(memory.keys()), || {
        format!(
            "(1) event ids in memory {:?} != in the store {:?}",
            memory.keys().collect::<Vec<_>>(),
            stored.keys().collect::<Vec<_>>()
        )
    })?;
    for (id, e) in &memory {
        ensure(*stored[id] == *e, || {
            format!("(1) event {id}: memory {e:?}\n  != store {:?}", stored[id])
        })?;
    }
    let stored_bases: BTreeMap<&str, QosLevel> = snap
        .modems
        .iter()
        .map(|m| (m.id.as_str(), m.base))
        .collect();
    ensure(stored_bases.keys().copied().eq(MODEMS), || {
        format!("(1) stored modems {:?}", stored_bases.keys())
    })?;
    for m in MODEMS {
        let mem = engine.base(m).copied();
        ensure(mem == Some(stored_bases[m]), || {
            format!(
                "(1) {m}: base in memory {mem:?} != stored {:?}",
                stored_bases[m]
            )
        })?;
        ensure(mem.as_ref() == model.bases.get(m), || {
            format!("(3) {m}: base {mem:?} != model {:?}", model.bases.get(m))
        })?;
        let (eff, want) = (ctl.effective(m), model.effective(m));
        ensure(eff == want, || {
            format!("(3) {m}: effective {eff:?}\n  != model {want:?}")
        })?;
    }
    ensure(memory.keys().eq(model.events.keys()), || {
        format!(
            "(3) event ids {:?} != model {:?}",
            memory.keys().collect::<Vec<_>>(),
            model.events.keys().collect::<Vec<_>>()
        )
    })?;
    for (id, m) in &model.events {
        let e = &memory[id];
        let want = Event {
            id: *id,
            modem: m.modem.clone(),
            source: m.source.clone(),
            qos: m.qos,
            start_ms: m.start_ms,
            stop_ms: m.stop_ms,
            idempotency_key: scoped(&m.key),
            level: m.level.clone(),
            created_ms: m.created_ms,
            start_due_ms: m.start_due_ms,
            state: m.state,
        };
        ensure(*e == want, || {
            format!("(3) event {id}: {e:?}\n  != model {want:?}")
        })?;
    }
    // (4) no id the engine burned is held by an event.
    if let Some(id) = model.burned.iter().find(|id| memory.contains_key(id)) {
        return Err(format!(
            "(4) id {id}, refused earlier, belongs to {:?}",
            memory[id]
        ));
    }
    ensure(ctl.poisoned().is_none(), || {
        format!("poisoned: {:?}", ctl.poisoned())
    })?;
    ensure(ctl.unenforced().is_empty(), || {
        format!("unenforced: {:?}", ctl.unenforced())
    })
}

/// (2) the data plane holds each bound modem's effective level, read back from the maps.
fn check_dataplane(rig: &Rig) -> Check {
    let ctl = rig.ctl();
    let dp = rig.dp.lock().unwrap();
    let mut subs = Vec::new();
    for b in ctl.bindings() {
        let eff = ctl.effective(&b.modem).unwrap();
        for dir in Direction::BOTH {
            let id = b.class(dir);
            let want = class_config(&eff, dir, 0);
            let raw = dp.class_raw(id).map_err(|e| format!("class {id}: {e}"))?;
            ensure(raw == class_entry(&want, raw.tat), || {
                format!(
                    "(2) {} {dir} class {id}: kernel {raw:?}\n  != {want:?}",
                    b.modem
                )
            })?;
            ensure(dp.class(id) == Some(&want), || {
                format!(
                    "(2) {} {dir} class {id}: view {:?} != {want:?}",
                    b.modem,
                    dp.class(id)
                )
            })?;
        }
        for key in &b.addrs {
            let slot = dp
                .subscriber_slot(key)
                .map_err(|e| format!("(2) {}: slot of {}: {e}", b.modem, key.addr))?;
            let got = [slot.d[0].class_id, slot.d[1].class_id];
            ensure(got == [b.up_class, b.down_class], || {
                format!("(2) {}: {} points at {got:?}", b.modem, key.addr)
            })?;
            subs.push((*key, [b.up_class, b.down_class]));
        }
    }
    let mut classes: Vec<u32> = ctl
        .bindings()
        .flat_map(|b| [b.up_class, b.down_class])
        .collect();
    classes.sort_unstable();
    ensure(dp.class_ids() == classes, || {
        format!("(2) classes {:?} != bound {classes:?}", dp.class_ids())
    })?;
    subs.sort_by_key(|(k, c)| (k.addr, k.len, *c));
    let mut have = dp.subscribers();
    have.sort_by_key(|(k, c)| (k.addr, k.len, *c));
    ensure(have == subs, || {
        format!("(2) subscribers {have:?} != {subs:?}")
    })
}

/// An event view against the model's event.
fn check_view(v: &Value, e: &MEvent) -> Check {
    let ok = v["id"] == json!(e.id)
        && v["modem"] == json!(e.modem)
        && v["state"] == json!(state_name(e.state))
        && v["start_ms"] == json!(e.start_ms)
        && v["stop_ms"] == json!(e.stop_ms)
        && v["start_due_ms"] == json!(e.start_due_ms)
        && v["created_ms"] == json!(e.created_ms)
        && v["level"] == json!(e.level)
        && v["idempotency_key"] == json!(e.key.as_ref().map(|k| &k.1))
        && qos_of(&v["qos"]) == e.qos;
    ensure(ok, || format!("view {v} != model {e:?}"))
}

// ---- running a step ---------------------------------------------------------------------

fn expect(what: &str, got: u16, want: u16) -> Check {
    ensure(got == want, || {
        format!("{what}: status {got}, model says {want}")
    })
}

/// Runs one step on the rig and the model; checks the answer.
fn run_step(
    rig: &mut Rig,
    model: &mut Model,
    step: &Step,
    seen: &mut Vec<u64>,
) -> Result<String, String> {
    let arm = |rig: &Rig, f: &Option<Fault>| *rig.fault.lock().unwrap() = *f;
    let now = rig.now();
    let out = match step {
        Step::Post(p, f) => {
            arm(rig, f);
            let body = post_json(p);
            let (s, v) = rig.call(
                "POST",
                "/v1/events",
                p.who,
                Some(("application/json", body)),
                p.key.as_deref(),
            );
            let want = model.post(p, now, *f);
            expect("POST", s, want.status())?;
            match want {
                Answer::Created(id) => {
                    ensure(v == json!({"id": id, "duplicate": false}), || {
                        format!("201 body {v}, model id {id}")
                    })?;
                    ensure(!seen.contains(&id) && !model.burned.contains(&id), || {
                        format!("(4) id {id} handed out again")
                    })?;
                    seen.push(id);
                }
                Answer::Duplicate(id) => {
                    ensure(v == json!({"id": id, "duplicate": true}), || {
                        format!("200 body {v}, model id {id}")
                    })?;
                }
                Answer::Status(_) => {}
            }
            format!("{s} {v}")
        }
        Step::PostRaw {
            who,
            body,
            content_type,
            key,
        } => {
            let (s, _) = rig.call(
                "POST",
                "/v1/events",
                *who,
                Some((content_type, body.clone())),
                key.as_deref(),
            );
            let want = gate(*who).unwrap_or(400);
            expect("POST (malformed)", s, want)?;
            s.to_string()
        }
        Step::Patch(p, f) => {
            arm(rig, f);
            let mut body = json!({});
            if let Some(s) = p.start_ms {
                body["start_ms"] = json!(s);
            }
            if let Some(s) = p.stop_ms {
                body["stop_ms"] = json!(s);
            }
            if let Some((q, _)) = &p.qos {
                body["qos"] = qos_json(q);
            }
            let uri = format!("/v1/events/{}", p.id);
            let (s, v) = rig.call(
                "PATCH",
                &uri,
                p.who,
                Some(("application/json", body.to_string())),
                None,
            );
            let want = model.patch(p, now, *f);
            expect("PATCH", s, want)?;
            if s == 200 {
                check_view(&v, &model.events[&p.id])?;
            }
            format!("{s} {}", v["state"])
        }
        Step::PatchRaw { who, path, body } => {
            let uri = format!("/v1/events/{path}");
            let (s, _) = rig.call(
                "PATCH",
                &uri,
                *who,
                Some(("application/json", body.clone())),
                None,
            );
            expect("PATCH (malformed)", s, gate(*who).unwrap_or(400))?;
            s.to_string()
        }
        Step::Delete { who, id, fault } => {
            arm(rig, fault);
            let (s, v) = rig.call("DELETE", &format!("/v1/events/{id}"), *who, None, None);
            let want = model.delete(*who, *id, now, *fault);
            expect("DELETE", s, want)?;
            if s == 200 {
                check_view(&v, &model.events[id])?;
            }
            s.to_string()
        }
        Step::DeleteRaw { who, path } => {
            let (s, _) = rig.call("DELETE", &format!("/v1/events/{path}"), *who, None, None);
            expect("DELETE (malformed)", s, gate(*who).unwrap_or(400))?;
            s.to_string()
        }
        Step::PutBase {
            who,
            modem,
            plan,
            valid,
            fault,
        } => {
            arm(rig, fault);
            let body = qos_json(plan).to_string();
            let uri = format!("/v1/modems/{modem}/base");
            let (s, v) = rig.call("PUT", &uri, *who, Some(("application/json", body)), None);
            let want = model.put_base(*who, modem, *plan, *valid, *fault);
            expect("PUT base", s, want)?;
            if s == 200 {
                check_modem_view(&v, model, modem)?;
            }
            s.to_string()
        }
        Step::PutBaseRaw { who, modem, body } => {
            let uri = format!("/v1/modems/{modem}/base");
            let (s, _) = rig.call(
                "PUT",
                &uri,
                *who,
                Some(("application/json", body.clone())),
                None,
            );
            let want = gate(*who).unwrap_or(if who.subscriber_of().is_some() {
                403
            } else {
                400
            });
            expect("PUT base (malformed)", s, want)?;
            s.to_string()
        }
        Step::GetModem { who, modem } => {
            let (s, v) = rig.call("GET", &format!("/v1/modems/{modem}"), *who, None, None);
            let (want, _) = model.get_modem(*who, modem);
            expect("GET modem", s, want)?;
            if s == 200 {
                check_modem_view(&v, model, modem)?;
            }
            s.to_string()
        }
        Step::GetEvent { who, id } => {
            let (s, v) = rig.call("GET", &format!("/v1/events/{id}"), *who, None, None);
            let (want, e) = model.get_event(*who, *id);
            expect("GET event", s, want)?;
            if let Some(e) = e {
                check_view(&v, e)?;
            }
            s.to_string()
        }
        Step::List {
            who,
            modem,
            state,
            bad,
        } => {
            let mut q: Vec<String> = Vec::new();
            if let Some(m) = modem {
                q.push(format!("modem={m}"));
            }
            if let Some(st) = state {
                q.push(format!("state={}", state_name(*st)));
            }
            if let Some((k, v)) = bad {
                q.push(format!("{k}={v}"));
            }
            let uri = format!("/v1/events?{}", q.join("&"));
            let (s, v) = rig.call("GET", &uri, *who, None, None);
            let (want, ids) = model.list(*who, modem.as_deref(), *state);
            let want = match (gate(*who), bad) {
                (Some(g), _) => g,
                (None, Some(_)) => 400,
                (None, None) => want,
            };
            expect("GET events", s, want)?;
            if s == 200 {
                let got: Vec<u64> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_u64().unwrap())
                    .collect();
                ensure(got == ids, || format!("list {got:?} != model {ids:?}"))?;
            }
            format!("{s} ({} events)", ids.len())
        }
        Step::Advance(dt) => {
            rig.now.fetch_add(*dt, Ordering::SeqCst);
            String::new()
        }
        Step::Tick(dt, f) => {
            let now = rig.now.fetch_add(*dt, Ordering::SeqCst) + dt;
            arm(rig, f);
            let r = rig.ctl().tick(now);
            model.tick(now);
            match (r, f) {
                (Ok(c), _) => format!("{} changes", c.len()),
                (Err(e), Some(_)) => format!("failed as injected: {e}"),
                (Err(e), None) => return Err(format!("tick: {e}")),
            }
        }
        Step::Restart(dt) => {
            let now = rig.now.fetch_add(*dt, Ordering::SeqCst) + dt;
            rig.restart();
            model.restart(now);
            String::new()
        }
    };
    Ok(out)
}

fn gate(who: Who) -> Option<u16> {
    match who {
        Who::NoToken | Who::BadToken => Some(401),
        Who::Provider => Some(403),
        _ => None,
    }
}

fn check_modem_view(v: &Value, model: &Model, modem: &str) -> Check {
    let (base, eff) = (qos_of(&v["base"]), qos_of(&v["effective"]));
    let want = (model.bases[modem], model.effective(modem).unwrap());
    ensure((base, eff) == want && v["bound"] == json!(true), || {
        format!("modem view {v} != model {want:?}")
    })
}

/// One run: a fresh store and modems, `steps` steps from `seed` (which also chooses the
/// configuration, so that the seed alone replays a run).
fn run(seed: u64, run: u64, steps: u64, dp: Arc<Mutex<Dataplane>>) -> u64 {
    let csr = seed % 2 == 1;
    let fire = (seed / 2) % 3 == 2;
    let mut rig = Rig::new(&format!("{seed}-{run}"), dp, csr, fire);
    let bases = MODEMS
        .iter()
        .map(|m| ((*m).to_owned(), base_plan()))
        .collect();
    let mut model = Model::new(bases, catalogue(csr).1, Some(6), csr);
    model.fire_on_submit = fire;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history: VecDeque<String> = VecDeque::new();
    let mut seen = Vec::new();
    let mut sent: Vec<Post> = Vec::new();
    let fail = |step: u64, history: &VecDeque<String>, msg: String| -> ! {
        let h: Vec<&str> = history.iter().map(String::as_str).collect();
        panic!(
            "controller model: seed {seed} (run {run}, csr_from_catalogue {csr}, tick_after_commit {fire}) step {step}: {msg}\n\
             replay: SHAPER_MODEL_SEED={seed} SHAPER_MODEL_RUNS=1 (or the first seed printed)\n\
             last steps:\n  {}",
            h.join("\n  ")
        );
    };
    if let Err(e) = check_state(&rig, &model).and_then(|()| check_dataplane(&rig)) {
        fail(0, &history, e);
    }
    let mut faults = [0u32; 2];
    let mut statuses: BTreeMap<(String, Option<u16>), u32> = BTreeMap::new();
    for n in 1..=steps {
        let now = rig.now();
        let step = model_gen::step(&mut rng, &model, now, &sent);
        if let Step::Post(p, _) = &step {
            if sent.len() == 64 {
                sent.remove(0);
            }
            sent.push(p.clone());
        }
        let armed = matches!(
            &step,
            Step::Post(_, Some(_))
                | Step::Patch(_, Some(_))
                | Step::Tick(_, Some(_))
                | Step::Delete { fault: Some(_), .. }
                | Step::PutBase { fault: Some(_), .. }
        );
        let result = run_step(&mut rig, &mut model, &step, &mut seen);
        // A fault the step did not reach is disarmed, not left for the next step.
        let unspent = rig.fault.lock().unwrap().take();
        faults[0] += u32::from(armed);
        faults[1] += u32::from(armed && unspent.is_none());
        if let Ok(out) = &result {
            let status = out.split(' ').next().and_then(|s| s.parse::<u16>().ok());
            let kind = format!("{step:?}");
            let kind = kind
                .split([' ', '(', '{'])
                .next()
                .unwrap_or_default()
                .to_owned();
            *statuses.entry((kind, status)).or_insert(0u32) += 1;
        }
        let line = format!(
            "#{n} t={} {step:?} -> {}",
            rig.now(),
            result.as_deref().unwrap_or("FAILED")
        );
        history.push_back(line);
        if history.len() > 20 {
            history.pop_front();
        }
        if let Err(e) = result
            .map(|_| ())
            .and_then(|()| check_state(&rig, &model))
            .and_then(|()| check_dataplane(&rig))
        {
            fail(n, &history, e);
        }
    }
    let states = model.events.values().fold([0; 4], |mut a, e| {
        a[e.state as usize] += 1;
        a
    });
    println!(
        "run {run} seed {seed}: {steps} steps, {} events (pending/active/completed/cancelled {states:?}), {} ids burned, {} faults injected ({} reached a write), ends at {} ms\n  statuses: {}",
        model.events.len(),
        model.burned.len(),
        faults[0],
        faults[1],
        rig.now(),
        statuses
            .iter()
            .map(|((k, s), n)| format!("{k} {}: {n}", s.map_or("-".into(), |s| s.to_string())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    steps
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

#[test]
fn api_and_ticks_and_restarts_match_the_model() {
    let seed = env_u64("SHAPER_MODEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let steps = env_u64("SHAPER_MODEL_STEPS").unwrap_or(STEPS);
    let runs = env_u64("SHAPER_MODEL_RUNS").unwrap_or(RUNS);
    println!(
        "controller model: SHAPER_MODEL_SEED={seed} ({runs} runs of {steps} steps; run i uses seed {seed}+i)"
    );
    let dp = Arc::new(Mutex::new(
        Dataplane::load(LoadOptions {
            build: Build::Test,
            limits: Limits {
                max_subscribers: 64,
                max_classes: 256,
                max_rule_keys: 64,
                max_rule_entries: 64,
                max_flows: 64,
            },
            ..Default::default()
        })
        .expect("load the test build of the data plane (needs root)"),
    ));
    let started = Instant::now();
    let mut total = 0;
    for r in 0..runs {
        total += run(seed.wrapping_add(r), r, steps, dp.clone());
        // The next run starts over with fresh modems: clear what this one left.
        let mut d = dp.lock().unwrap();
        for (key, _) in d.subscribers() {
            d.delete_subscriber(&key).unwrap();
        }
        for id in d.class_ids() {
            d.delete_class(id).unwrap();
        }
    }
    println!(
        "controller model: {total} steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        total >= 10_000
            || env_u64("SHAPER_MODEL_STEPS").is_some()
            || env_u64("SHAPER_MODEL_RUNS").is_some()
    );
}
