//! API tests: the router over a real controller (SQLite store in a temp dir, enforcement
//! disabled), driven with `tower::ServiceExt::oneshot`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::controller::{ControllerConfig, Disabled};
use crate::modem::pipeline::{ConfigDirHandler, FileRecord, PipelineShared};
use crate::policy::SubscriberKey;
use crate::provision::{EventRequest, EventState, QosLevel, Source};
use crate::store::{SqliteStore, Store, TempDir};

const T0: u64 = 1_700_000_000_000;

struct Rig {
    _dir: TempDir,
    db: PathBuf,
    state: AppState,
    now: Arc<AtomicU64>,
}

fn base() -> QosLevel {
    QosLevel {
        max_up_bps: Some(2_000_000),
        max_down_bps: Some(10_000_000),
        priority: Some(1),
        ..QosLevel::default()
    }
}

const TOKENS: [(&str, Role, &str); 5] = [
    ("t-admin", Role::Admin, "root"),
    ("t-csr", Role::Csr, "alice"),
    ("t-sub", Role::Subscriber, "cm1"),
    ("t-prov", Role::Provider, "isp1"),
    ("t-auto", Role::Automation, "billing"),
];

impl Rig {
    fn new(name: &str) -> Rig {
        let dir = TempDir::new(&format!("api-{name}"));
        let db = dir.path().join("shaper.db");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("x.cfg"), b"modem file").unwrap();
        let store = SqliteStore::open(&db).unwrap();
        let (mut ctl, _) = Controller::open(
            ControllerConfig::default(),
            Box::new(store),
            Box::new(Disabled),
            Box::new(Disabled),
            Vec::new(),
            T0,
        )
        .unwrap();
        for (i, m) in ["cm1", "cm2"].into_iter().enumerate() {
            let key = SubscriberKey {
                addr: format!("10.0.0.{}", i + 1).parse().unwrap(),
                len: 32,
            };
            let binding = ctl.propose_binding(m, vec![key]).unwrap();
            ctl.add_modem(binding, base(), T0).unwrap();
        }
        let tokens = TokenTable::new(TOKENS.iter().map(|(t, role, subject)| TokenEntry {
            sha256_hex: hash_token(t),
            role: *role,
            subject: (*subject).into(),
        }))
        .unwrap();
        let now = Arc::new(AtomicU64::new(T0));
        let clock_now = now.clone();
        ctl.set_catalogue(catalogue());
        let controller = Arc::new(Mutex::new(ctl));
        let clock: Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
        let metrics =
            crate::metrics::Metrics::new(None, Some(controller.clone()), clock.clone()).unwrap();
        let csr_from_catalogue = controller.lock().unwrap().csr_from_catalogue_flag();
        let state = AppState {
            controller,
            csr_from_catalogue,
            tokens: Arc::new(tokens),
            clock,
            metrics: Some(Arc::new(metrics)),
            nsm: None,
            submits: Arc::default(),
            wake: Arc::default(),
            tick_after_commit: false,
            on_changes: None,
            pipeline: Some(Arc::new(PipelineShared::default())),
            files: Some(Arc::new(ConfigDirHandler::new(&files).unwrap())),
        };
        Rig {
            _dir: dir,
            db,
            state,
            now,
        }
    }

    fn app(&self) -> Router {
        router(self.state.clone())
    }

    fn ctl(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.state.controller.lock().unwrap()
    }

    /// Submits an event directly through the controller.
    fn submit(&self, modem: &str, source: Source) -> u64 {
        let now = self.now.load(Ordering::SeqCst);
        self.ctl()
            .submit(
                EventRequest {
                    modem: modem.into(),
                    source,
                    qos: QosLevel {
                        max_down_bps: Some(50_000_000),
                        ..QosLevel::default()
                    },
                    start_ms: Some(now + 60_000),
                    stop_ms: Some(now + 120_000),
                    idempotency_key: None,
                    level: None,
                },
                now,
            )
            .unwrap()
            .id
    }

    /// The base plans of cm1 and cm2, in the engine and in a fresh store on the same file.
    fn bases(&self) -> [(Option<QosLevel>, Option<QosLevel>); 2] {
        let store = SqliteStore::open(&self.db).unwrap();
        ["cm1", "cm2"].map(|m| {
            (
                self.ctl().engine().base(m).copied(),
                store.modem(m).unwrap(),
            )
        })
    }

    fn stored_events(&self) -> usize {
        SqliteStore::open(&self.db)
            .unwrap()
            .load()
            .unwrap()
            .events
            .len()
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.raw(method, uri, token, body, &[]).await
    }

    async fn raw(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = headers.get("content-type").is_some_and(|ct| {
            ct.as_bytes().starts_with(b"text/plain") || ct == "application/octet-stream"
        });
        let value = if bytes.is_empty() {
            Value::Null
        } else if text {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {bytes:?}"))
        };
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                headers["content-type"], "application/problem+json",
                "{method} {uri}"
            );
            assert_eq!(value["status"], status.as_u16(), "{method} {uri}: {value}");
            assert!(value["type"].is_string() && value["title"].is_string());
            assert!(value["detail"].is_string());
        }
        (status, headers, value)
    }
}

/// The rig's grant catalogue: one level, the same grant as [`grant`].
fn catalogue() -> crate::provision::GrantCatalogue {
    crate::provision::GrantCatalogue::from_section(
        &toml::from_str(
            r#"
            [[level]]
            name = "boost-50"
            max_down_bps = 50_000_000
            max_duration_s = 3600
            per_month = 100
            "#,
        )
        .unwrap(),
    )
    .unwrap()
}

fn grant() -> Value {
    json!({ "max_down_bps": 50_000_000 })
}

/// A base plan, as `PUT /v1/modems/{id}/base` takes it.
fn plan() -> Value {
    json!({
        "max_up_bps": 4_000_000,
        "max_down_bps": 20_000_000,
        "committed_down_bps": 5_000_000,
        "priority": 3,
        "targets": { "availability_ppm": 999_000 }
    })
}

/// Which fresh event (if any) a matrix row needs, made anew for every principal.
#[derive(Clone, Copy)]
enum Target {
    None,
    Event(&'static str, Who),
    Id(u64),
}

#[derive(Clone, Copy)]
enum Who {
    Csr,
    Subscriber,
}

/// A matrix row: method, path, the event it needs, body, expected status per principal.
type Row = (&'static str, &'static str, Target, Option<Value>, [u16; 7]);

/// The route template a matrix row's path belongs to.
fn template(path: &str) -> &str {
    let path = path.split('?').next().unwrap();
    if path.starts_with("/v1/modems/") {
        if path.ends_with("/base") {
            "/v1/modems/{id}/base"
        } else if path.ends_with("/audit") {
            "/v1/modems/{id}/audit"
        } else {
            "/v1/modems/{id}"
        }
    } else if path.starts_with("/files/") {
        "/files/{name}"
    } else {
        path
    }
}

#[tokio::test]
async fn authorization_matrix() {
    let rig = Rig::new("matrix");
    // Columns: admin, csr, subscriber(cm1), provider, automation, no token, unknown token.
    let principals: [Option<&str>; 7] = [
        Some("t-admin"),
        Some("t-csr"),
        Some("t-sub"),
        Some("t-prov"),
        Some("t-auto"),
        None,
        Some("bogus"),
    ];
    let patch = || Some(json!({ "qos": { "max_down_bps": 60_000_000 } }));
    let post = |m: &str| Some(json!({ "modem": m, "qos": grant() }));
    let level = |m: &str| Some(json!({ "modem": m, "level": "boost-50", "stop_ms": T0 + 60_000 }));
    let plan = || Some(plan());
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("GET", "/v1/modems/cm1", Target::None, None, [200, 200, 200, 403, 200, 401, 401]),
        ("GET", "/v1/modems/cm2", Target::None, None, [200, 200, 403, 403, 200, 401, 401]),
        ("GET", "/v1/modems/nope", Target::None, None, [404, 404, 403, 403, 404, 401, 401]),
        ("PUT", "/v1/modems/cm1/base", Target::None, plan(), [200, 200, 403, 403, 200, 401, 401]),
        ("PUT", "/v1/modems/cm2/base", Target::None, plan(), [200, 200, 403, 403, 200, 401, 401]),
        ("PUT", "/v1/modems/nope/base", Target::None, plan(), [404, 404, 403, 403, 404, 401, 401]),
        ("GET", "/v1/modems/cm1/audit", Target::None, None, [200, 200, 403, 403, 403, 401, 401]),
        ("GET", "/v1/modems/nope/audit", Target::None, None, [404, 404, 403, 403, 403, 401, 401]),
        // Subscribers choose from the catalogue; a grant of their own is refused.
        ("POST", "/v1/events", Target::None, post("cm1"), [201, 201, 403, 403, 201, 401, 401]),
        ("POST", "/v1/events", Target::None, level("cm1"), [201, 201, 201, 403, 201, 401, 401]),
        ("POST", "/v1/events", Target::None, level("cm2"), [201, 201, 403, 403, 201, 401, 401]),
        ("POST", "/v1/events", Target::None, post("cm2"), [201, 201, 403, 403, 201, 401, 401]),
        ("POST", "/v1/events", Target::None, post("nope"), [404, 404, 403, 403, 404, 401, 401]),
        ("GET", "/v1/events", Target::None, None, [200, 200, 200, 403, 200, 401, 401]),
        ("GET", "/v1/events?modem=cm2", Target::None, None, [200, 200, 403, 403, 200, 401, 401]),
        ("GET", "/v1/events/{id}", Target::Event("cm1", Who::Csr), None, [200, 200, 200, 403, 200, 401, 401]),
        ("GET", "/v1/events/{id}", Target::Event("cm2", Who::Csr), None, [200, 200, 403, 403, 200, 401, 401]),
        ("GET", "/v1/events/{id}", Target::Id(9999), None, [404, 404, 404, 403, 404, 401, 401]),
        ("PATCH", "/v1/events/{id}", Target::Event("cm1", Who::Csr), patch(), [200, 200, 403, 403, 200, 401, 401]),
        // A subscriber changes only the times of its grants, never their QoS.
        ("PATCH", "/v1/events/{id}", Target::Event("cm1", Who::Subscriber), patch(), [200, 200, 403, 403, 200, 401, 401]),
        ("GET", "/v1/catalogue", Target::None, None, [200, 200, 200, 403, 200, 401, 401]),
        ("PATCH", "/v1/events/{id}", Target::Event("cm2", Who::Csr), patch(), [200, 200, 403, 403, 200, 401, 401]),
        ("PATCH", "/v1/events/{id}", Target::Id(9999), patch(), [404, 404, 403, 403, 404, 401, 401]),
        ("DELETE", "/v1/events/{id}", Target::Event("cm1", Who::Csr), None, [200, 200, 403, 403, 200, 401, 401]),
        ("DELETE", "/v1/events/{id}", Target::Event("cm1", Who::Subscriber), None, [200, 200, 200, 403, 200, 401, 401]),
        ("DELETE", "/v1/events/{id}", Target::Event("cm2", Who::Subscriber), None, [200, 200, 403, 403, 200, 401, 401]),
        ("DELETE", "/v1/events/{id}", Target::Id(9999), None, [404, 404, 404, 403, 404, 401, 401]),
        ("GET", "/openapi.json", Target::None, None, [200; 7]),
        ("GET", "/metrics", Target::None, None, [200, 403, 403, 403, 403, 401, 401]),
        ("GET", "/v1/modem-files", Target::None, None, [200, 200, 403, 403, 403, 401, 401]),
        ("GET", "/files/0123456789abcdef0123456789abcdef.cfg", Target::None, None, [404; 7]),
    ];
    // The network service manager's routes have their own matrix (api::nsm_tests).
    for route in ROUTES.iter().filter(|r| !nsm::is_nsm_path(r.path)) {
        assert!(
            rows.iter()
                .any(|(m, p, ..)| *m == route.method && template(p) == route.path),
            "{} {} is missing from the matrix",
            route.method,
            route.path
        );
    }
    for (method, path, target, body, expected) in &rows {
        for (token, want) in principals.iter().zip(expected) {
            let uri = match *target {
                Target::None => path.to_string(),
                Target::Id(id) => path.replace("{id}", &id.to_string()),
                Target::Event(modem, who) => {
                    let source = match who {
                        Who::Csr => Source::Csr { user: "bob".into() },
                        Who::Subscriber => Source::Subscriber,
                    };
                    path.replace("{id}", &rig.submit(modem, source).to_string())
                }
            };
            let events_before = rig.ctl().engine().events().count();
            let bases_before = rig.bases();
            let (status, headers, value) = rig.call(method, &uri, *token, body.clone()).await;
            assert_eq!(
                status.as_u16(),
                *want,
                "{method} {uri} as {token:?}: {value}"
            );
            if *want == 401 {
                assert!(
                    headers["www-authenticate"]
                        .to_str()
                        .unwrap()
                        .starts_with("Bearer"),
                    "{method} {uri}"
                );
            }
            if status.is_client_error() {
                // A refusal changes nothing.
                assert_eq!(rig.ctl().engine().events().count(), events_before);
                assert_eq!(rig.bases(), bases_before, "{method} {uri} as {token:?}");
            }
        }
    }
}

#[tokio::test]
async fn submitted_event_source_and_views() {
    let rig = Rig::new("source");
    for (token, source) in [
        ("t-admin", json!({ "kind": "csr", "user": "root" })),
        ("t-csr", json!({ "kind": "csr", "user": "alice" })),
        ("t-sub", json!({ "kind": "subscriber" })),
        (
            "t-auto",
            json!({ "kind": "automation", "trigger": "billing" }),
        ),
    ] {
        let body = if token == "t-sub" {
            json!({ "modem": "cm1", "level": "boost-50", "stop_ms": T0 + 60_000 })
        } else {
            json!({ "modem": "cm1", "qos": grant(), "stop_ms": T0 + 60_000 })
        };
        let (status, headers, v) = rig
            .call("POST", "/v1/events", Some(token), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["duplicate"], false);
        let id = v["id"].as_u64().unwrap();
        assert_eq!(headers["location"], format!("/v1/events/{id}"));
        let (status, _, e) = rig
            .call("GET", &format!("/v1/events/{id}"), Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(e["source"], source);
        assert_eq!(e["state"], "pending");
        assert_eq!(e["qos"]["max_down_bps"], 50_000_000);
        assert_eq!(e["stop_ms"], T0 + 60_000);
    }
    // The tick applies them; the modem view shows the effective level.
    rig.ctl().tick(T0 + 1).unwrap();
    let (status, _, m) = rig.call("GET", "/v1/modems/cm1", Some("t-sub"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["id"], "cm1");
    assert_eq!(m["bound"], true);
    assert_eq!(m["base"]["max_down_bps"], 10_000_000);
    assert_eq!(m["effective"]["max_down_bps"], 50_000_000);
    assert_eq!(m["effective"]["max_up_bps"], 2_000_000);
    // Listing with filters; the subscriber sees only its modem.
    rig.submit("cm2", Source::Subscriber);
    let (_, _, all) = rig.call("GET", "/v1/events", Some("t-csr"), None).await;
    assert_eq!(all.as_array().unwrap().len(), 5);
    let (_, _, own) = rig.call("GET", "/v1/events", Some("t-sub"), None).await;
    let own = own.as_array().unwrap();
    assert_eq!(own.len(), 4);
    assert!(own.iter().all(|e| e["modem"] == "cm1"));
    let (_, _, active) = rig
        .call(
            "GET",
            "/v1/events?state=active&modem=cm1",
            Some("t-auto"),
            None,
        )
        .await;
    assert_eq!(active.as_array().unwrap().len(), 4);
    let (_, _, pending) = rig
        .call("GET", "/v1/events?state=pending", Some("t-auto"), None)
        .await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["modem"], "cm2");
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let rig = Rig::new("badinput");
    let post = |body: Value| rig.call("POST", "/v1/events", Some("t-csr"), Some(body));
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (
            json!({ "modem": "cm1", "qos": { "priority": 9 } }),
            422,
            Some("qos.priority"),
        ),
        (
            json!({ "modem": "cm1", "qos": { "max_down_bps": 1, "max_up_bps": 1000 } }),
            422,
            Some("qos.max_down_bps"),
        ),
        (
            json!({ "modem": "cm1", "qos": { "targets": { "loss_ppm": 2_000_000 } } }),
            422,
            Some("qos.targets.loss_ppm"),
        ),
        (json!({ "modem": "cm1", "qos": {} }), 422, Some("qos")),
        (json!({ "modem": "", "qos": grant() }), 422, Some("modem")),
        (
            json!({ "modem": "cm1", "qos": grant(), "start_ms": T0 + 10, "stop_ms": T0 + 5 }),
            422,
            Some("stop_ms"),
        ),
        (
            json!({ "modem": "cm1", "qos": grant(), "stop_ms": T0 - 1 }),
            422,
            Some("stop_ms"),
        ),
        (
            json!({ "modem": "cm1", "qos": { "max_dwn_bps": 5 } }),
            400,
            Some("qos.max_dwn_bps"),
        ),
        // serde would take an array for a struct, fields by position: refused by shape.
        (json!({ "modem": "cm1", "qos": [100] }), 400, Some("qos")),
        (
            json!({ "modem": "cm1", "qos": { "targets": [1, 2] } }),
            400,
            Some("qos.targets"),
        ),
        (json!(["cm1", grant()]), 400, None),
        (
            json!({ "modem": "cm1", "qos": { "priority": "high" } }),
            400,
            Some("qos.priority"),
        ),
        (
            json!({ "modem": "cm1", "qos": grant(), "start_ms": -5 }),
            400,
            Some("start_ms"),
        ),
        (
            json!({ "modem": "cm1", "qos": grant(), "colour": "red" }),
            400,
            Some("colour"),
        ),
        (json!({ "qos": grant() }), 400, Some("modem")),
        (
            json!({ "modem": "cm1", "qos": { "targets": 5 } }),
            400,
            Some("qos.targets"),
        ),
        (json!("text"), 400, None),
    ];
    for (body, status, field) in cases {
        let (got, _, v) = post(body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body}: {v}");
        assert_eq!(v["field"].as_str(), field, "{body}: {v}");
        if let Some(f) = field {
            let last = f.rsplit('.').next().unwrap();
            assert!(v["detail"].as_str().unwrap().contains(last), "{v}");
        }
    }
    // A base plan sent as an array would have set max_up_bps and max_down_bps by position.
    let (s, _, v) = rig
        .call(
            "PUT",
            "/v1/modems/cm1/base",
            Some("t-admin"),
            Some(json!([1_000_000, 5_000_000])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object, found an array"),
        "{v}"
    );
    assert_eq!(rig.ctl().engine().base("cm1"), Some(&base()));
    // Malformed JSON, content type, headers, path and query.
    let csr = Some("t-csr");
    let (s, _, v) = rig
        .raw(
            "POST",
            "/v1/events",
            csr,
            Some(("application/json", "{\"modem\": ".into())),
            &[],
        )
        .await;
    // Truncated inside `modem`: the problem points there.
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("modem"))
    );
    assert!(v["detail"].as_str().unwrap().contains("EOF"), "{v}");
    let (s, _, v) = rig
        .raw(
            "POST",
            "/v1/events",
            csr,
            Some((
                "application/json",
                format!("{} x", json!({"modem": "cm1", "qos": grant()})),
            )),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = rig
        .raw(
            "POST",
            "/v1/events",
            csr,
            Some((
                "text/plain",
                json!({"modem": "cm1", "qos": grant()}).to_string(),
            )),
            &[],
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Content-Type"))
    );
    for key in ["", "has space"] {
        let (s, _, v) = rig
            .raw(
                "POST",
                "/v1/events",
                csr,
                Some((
                    "application/json",
                    json!({"modem": "cm1", "qos": grant()}).to_string(),
                )),
                &[("idempotency-key", key)],
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("Idempotency-Key")),
            "{key:?}"
        );
    }
    let (s, _, v) = rig.call("GET", "/v1/events/abc", csr, None).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (s, _, v) = rig.call("GET", "/v1/events?state=done", csr, None).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("state"))
    );
    let (s, _, v) = rig.call("GET", "/v1/events?colour=red", csr, None).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("colour"))
    );
    let (s, headers, v) = rig
        .raw(
            "GET",
            "/v1/events",
            None,
            None,
            &[("authorization", "Basic YTpi")],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"shaper\"");
    let (s, headers, _) = rig.call("GET", "/v1/events", Some("bogus"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // PATCH input.
    let id = rig.submit("cm1", Source::Subscriber);
    let uri = format!("/v1/events/{id}");
    let (s, _, v) = rig.call("PATCH", &uri, csr, Some(json!({}))).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("body"))
    );
    let (s, _, v) = rig
        .call("PATCH", &uri, csr, Some(json!({ "qos": { "mtu": 100 } })))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("qos.mtu"))
    );
    let (s, _, v) = rig
        .call("PATCH", &uri, csr, Some(json!({ "stop_ms": T0 + 1_000 })))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("stop_ms"))
    );
    // Unknown routes and methods are problem+json too.
    let (s, _, _) = rig.call("GET", "/v2/nothing", csr, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, headers, _) = rig.call("PUT", "/v1/events", csr, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.contains_key("allow"));
}

#[tokio::test]
async fn idempotent_retries() {
    let rig = Rig::new("idem");
    let body = json!({ "modem": "cm1", "qos": grant(), "start_ms": T0 + 1_000 });
    async fn send_with(
        rig: &Rig,
        token: &str,
        body: Value,
        key: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        rig.raw(
            "POST",
            "/v1/events",
            Some(token),
            Some(("application/json", body.to_string())),
            &[("idempotency-key", key)],
        )
        .await
    }
    let send =
        |token: &'static str, body: Value, key: &'static str| send_with(&rig, token, body, key);
    let (s, _, first) = send("t-csr", body.clone(), "k-1").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(first["duplicate"], false);
    let id = first["id"].as_u64().unwrap();
    rig.now.store(T0 + 5_000, Ordering::SeqCst);
    let (s, _, retry) = send("t-csr", body.clone(), "k-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(retry, json!({ "id": id, "duplicate": true }));
    let mut other = body.clone();
    other["qos"]["max_down_bps"] = json!(70_000_000);
    let (s, _, v) = send("t-csr", other, "k-1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Keys are scoped to the caller: another principal's "k-1" is its own.
    let (s, _, v) = send("t-auto", body.clone(), "k-1").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_ne!(v["id"].as_u64().unwrap(), id);
    assert_eq!(rig.ctl().engine().events().count(), 2);
    assert_eq!(rig.stored_events(), 2);
    let (_, _, e) = rig
        .call("GET", &format!("/v1/events/{id}"), Some("t-csr"), None)
        .await;
    assert_eq!(e["idempotency_key"], "k-1");
}

#[tokio::test]
async fn acknowledged_events_are_durable_and_refusals_leave_nothing() {
    let rig = Rig::new("durable");
    let (s, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-sub"),
            Some(json!({ "modem": "cm1", "level": "boost-50", "stop_ms": T0 + 60_000 })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_u64().unwrap();
    // A fresh store on the same file (what a restarted controller reads) has it.
    let snapshot = SqliteStore::open(&rig.db).unwrap().load().unwrap();
    let stored = snapshot
        .events
        .iter()
        .find(|e| e.event.id == id)
        .expect("acknowledged event is stored");
    assert_eq!(stored.event.modem, "cm1");
    assert_eq!(stored.event.source, Source::Subscriber);
    assert_eq!(stored.event.qos.max_down_bps, Some(50_000_000));
    assert_eq!(stored.event.stop_ms, Some(T0 + 60_000));
    // Refused submissions store nothing.
    for body in [
        json!({ "modem": "cm1", "qos": { "priority": 8 } }),
        json!({ "modem": "cm1", "qos": grant(), "stop_ms": T0 }),
        json!({ "modem": "nope", "qos": grant() }),
    ] {
        let (s, _, v) = rig
            .call("POST", "/v1/events", Some("t-csr"), Some(body))
            .await;
        assert!(s.is_client_error(), "{v}");
        assert_eq!(rig.stored_events(), 1);
        assert_eq!(rig.ctl().engine().events().count(), 1);
    }
    // A refused amendment leaves the event as it was, in memory and in the store.
    let uri = format!("/v1/events/{id}");
    let (s, _, _) = rig
        .call(
            "PATCH",
            &uri,
            Some("t-sub"),
            Some(json!({ "start_ms": T0 + 10, "stop_ms": T0 + 5 })),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let reread = SqliteStore::open(&rig.db).unwrap().load().unwrap();
    assert_eq!(reread.events[0].event, stored.event);
    assert_eq!(rig.ctl().engine().event(id), Some(stored.event.clone()));
    // An accepted amendment is stored.
    let (s, _, e) = rig
        .call(
            "PATCH",
            &uri,
            Some("t-sub"),
            Some(json!({ "start_ms": T0 + 10_000 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(e["start_ms"], T0 + 10_000);
    assert_eq!(e["stop_ms"], T0 + 60_000, "absent fields are kept");
    let reread = SqliteStore::open(&rig.db).unwrap().load().unwrap();
    assert_eq!(reread.events[0].event.qos.max_down_bps, Some(50_000_000));
    assert_eq!(reread.events[0].event.start_ms, Some(T0 + 10_000));
}

#[tokio::test]
async fn lifecycle_conflicts() {
    let rig = Rig::new("lifecycle");
    let id = rig.submit("cm1", Source::Subscriber);
    let uri = format!("/v1/events/{id}");
    rig.ctl().tick(T0 + 60_000).unwrap();
    rig.now.store(T0 + 60_000, Ordering::SeqCst);
    assert_eq!(
        rig.ctl().effective("cm1").unwrap().max_down_bps,
        Some(50_000_000)
    );
    let (s, _, v) = rig
        .call(
            "PATCH",
            &uri,
            Some("t-csr"),
            Some(json!({ "stop_ms": null })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("pending"));
    let (s, _, e) = rig.call("DELETE", &uri, Some("t-sub"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["state"], "cancelled");
    assert_eq!(
        rig.ctl().effective("cm1").unwrap().max_down_bps,
        Some(10_000_000),
        "cancelling an active grant reverts it at once"
    );
    let reread = SqliteStore::open(&rig.db).unwrap().load().unwrap();
    assert_eq!(reread.events[0].event.state, EventState::Cancelled);
    let (s, _, _) = rig.call("DELETE", &uri, Some("t-sub"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn metrics_exposition() {
    let rig = Rig::new("metrics");
    rig.submit("cm1", Source::Csr { user: "bob".into() });
    let (s, headers, body) = rig.call("GET", "/metrics", Some("t-admin"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
    let text = body.as_str().unwrap();
    assert!(
        text.contains("shaper_events{source=\"csr\",state=\"pending\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("shaper_enforcements_total{result=\"ok\"} 2\n"),
        "{text}"
    );
    // No data plane here: no class series.
    assert!(!text.contains("shaper_class_"));
    // A process without metrics answers 404.
    let mut state = rig.state.clone();
    state.metrics = None;
    let req = Request::builder()
        .uri("/metrics")
        .header("authorization", "Bearer t-admin")
        .body(Body::empty())
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_covers_exactly_the_routes() {
    let rig = Rig::new("openapi");
    let (s, headers, doc) = rig.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "{r}");
    }
    // The router really serves each documented operation, and only those.
    for (method, path) in &served {
        let uri = path
            .replace("{id}", "1")
            .replace("{app}", "a")
            .replace("{alloc}", "1")
            .replace("{name}", "x.cfg");
        let (s, _, _) = rig.call(method, &uri, None, None).await;
        assert!(
            s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {s}"
        );
        for other in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if served.iter().any(|(m, p)| m == other && p == path) {
                continue;
            }
            let (s, _, _) = rig.call(other, &uri, None, None).await;
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{other} {uri}");
        }
    }
}

#[tokio::test]
async fn pipeline_files_and_records() {
    let rig = Rig::new("files");
    // Files: no token needed; only top-level *.cfg names; 404 otherwise.
    let (s, headers, body) = rig.call("GET", "/files/x.cfg", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(body, "modem file");
    for missing in ["/files/y.cfg", "/files/..%2Fshaper.db", "/files/shaper.db"] {
        let (s, _, _) = rig.call("GET", missing, None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
    }
    // Modem-file records, as the watcher leaves them.
    let shared = rig.state.pipeline.clone().unwrap();
    shared.record_file(FileRecord {
        name: "cm1.cfg".into(),
        ok: false,
        modem: None,
        reason: "MIC check failed: CM MIC mismatch".into(),
        at_ms: T0,
        moved_to: Some("rejected/cm1.cfg".into()),
    });
    let (s, _, list) = rig
        .call("GET", "/v1/modem-files", Some("t-csr"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list[0]["name"], "cm1.cfg");
    assert_eq!(list[0]["ok"], false);
    assert!(list[0]["reason"].as_str().unwrap().contains("MIC"));
    // No file made for cm1 yet: its pipeline state is null.
    let (s, _, modem) = rig.call("GET", "/v1/modems/cm1", Some("t-csr"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(modem["pipeline"].is_null(), "{modem}");
}

#[tokio::test]
async fn put_base_replaces_the_plan_under_the_active_grants_and_is_audited() {
    let rig = Rig::new("put-base");
    // An active grant on cm1: 50 Mbit/s down.
    rig.submit("cm1", Source::Csr { user: "bob".into() });
    rig.ctl().tick(T0 + 60_000).unwrap();
    rig.now.store(T0 + 61_000, Ordering::SeqCst);
    let (s, _, m) = rig.call("GET", "/v1/modems/cm1", Some("t-csr"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["effective"]["max_down_bps"], 50_000_000);
    assert_eq!(m["effective"]["max_up_bps"], 2_000_000);

    let (s, _, m) = rig
        .call("PUT", "/v1/modems/cm1/base", Some("t-auto"), Some(plan()))
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let new_plan = QosLevel {
        max_up_bps: Some(4_000_000),
        max_down_bps: Some(20_000_000),
        committed_down_bps: Some(5_000_000),
        priority: Some(3),
        targets: crate::provision::ServiceTargets {
            availability_ppm: Some(999_000),
            ..Default::default()
        },
        ..QosLevel::default()
    };
    assert_eq!(m["id"], "cm1");
    assert_eq!(m["bound"], true);
    assert_eq!(m["base"], serde_json::to_value(new_plan).unwrap());
    // The grant stays layered: its downstream rate over the new plan's other fields.
    let effective = QosLevel {
        max_down_bps: Some(50_000_000),
        ..new_plan
    }
    .normalized();
    assert_eq!(m["effective"], serde_json::to_value(effective).unwrap());
    assert_eq!(rig.ctl().engine().base("cm1"), Some(&new_plan));
    assert_eq!(rig.ctl().effective("cm1"), Some(effective));
    // GET shows the same; the other modem is untouched.
    let (_, _, again) = rig.call("GET", "/v1/modems/cm1", Some("t-sub"), None).await;
    assert_eq!(again, m);
    assert_eq!(rig.ctl().engine().base("cm2"), Some(&base()));
    // Durable before the answer: a fresh store on the same file has the plan and its audit.
    let store = SqliteStore::open(&rig.db).unwrap();
    assert_eq!(store.modem("cm1").unwrap(), Some(new_plan));
    let trail = store.modem_audit("cm1").unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0].at_ms, &trail[0].by, trail[0].old, trail[0].new),
        (
            T0 + 61_000,
            &crate::provision::BaseSource::Api {
                role: "automation".into(),
                subject: "billing".into()
            },
            base(),
            new_plan
        )
    );
    // The audit route shows it.
    let (s, _, audit) = rig
        .call("GET", "/v1/modems/cm1/audit", Some("t-csr"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        audit,
        json!([{
            "at_ms": T0 + 61_000,
            "by": { "kind": "api", "role": "automation", "subject": "billing" },
            "old": serde_json::to_value(base()).unwrap(),
            "new": serde_json::to_value(new_plan).unwrap(),
        }])
    );
    // PUT is idempotent: the same plan again changes and audits nothing.
    rig.now.store(T0 + 62_000, Ordering::SeqCst);
    let (s, _, same) = rig
        .call("PUT", "/v1/modems/cm1/base", Some("t-csr"), Some(plan()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(same, m);
    let (_, _, audit) = rig
        .call("GET", "/v1/modems/cm1/audit", Some("t-admin"), None)
        .await;
    assert_eq!(audit.as_array().unwrap().len(), 1);
    // A whole plan: fields left out are unset, not kept.
    let (s, _, m) = rig
        .call(
            "PUT",
            "/v1/modems/cm1/base",
            Some("t-admin"),
            Some(json!({ "max_down_bps": 30_000_000 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["base"]["max_down_bps"], 30_000_000);
    assert!(m["base"]["max_up_bps"].is_null(), "{m}");
    assert!(m["base"]["priority"].is_null(), "{m}");
    let (_, _, audit) = rig
        .call("GET", "/v1/modems/cm1/audit", Some("t-admin"), None)
        .await;
    assert_eq!(
        audit[1]["by"],
        json!({ "kind": "api", "role": "admin", "subject": "root" })
    );
    assert_eq!(audit[1]["old"], audit[0]["new"]);
    // A modem never changed has an empty trail.
    let (s, _, audit) = rig
        .call("GET", "/v1/modems/cm2/audit", Some("t-csr"), None)
        .await;
    assert_eq!((s, audit), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn put_base_refusals_name_the_field_and_change_nothing() {
    let rig = Rig::new("put-base-bad");
    let put = |token: &'static str, uri: &'static str, body: Value| {
        rig.call("PUT", uri, Some(token), Some(body))
    };
    let cm1 = "/v1/modems/cm1/base";
    let before = rig.bases();
    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (json!({ "max_down_bps": 0 }), 422, Some("max_down_bps")),
        (
            json!({ "max_up_bps": 1_000_000, "committed_up_bps": 2_000_000 }),
            422,
            Some("committed_up_bps"),
        ),
        (
            json!({ "max_down_bps": 10_000_000, "priority": 9 }),
            422,
            Some("priority"),
        ),
        (
            json!({ "max_down_bps": 10_000_000, "burst_bytes": 100 }),
            422,
            Some("burst_bytes"),
        ),
        (json!({ "mtu": 100 }), 422, Some("mtu")),
        (
            json!({ "targets": { "loss_ppm": 2_000_000 } }),
            422,
            Some("targets.loss_ppm"),
        ),
        (json!({ "max_dwn_bps": 5 }), 400, Some("max_dwn_bps")),
        (json!({ "qos": plan() }), 400, Some("qos")),
        (json!({ "priority": "high" }), 400, Some("priority")),
        (json!({ "max_down_bps": -1 }), 400, Some("max_down_bps")),
        (
            json!({ "targets": { "colour": 1 } }),
            400,
            Some("targets.colour"),
        ),
        (json!("text"), 400, None),
    ];
    for (body, status, field) in cases {
        let (got, _, v) = put("t-csr", cm1, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body}: {v}");
        assert_eq!(v["field"].as_str(), field, "{body}: {v}");
        if let Some(f) = field {
            let last = f.rsplit('.').next().unwrap();
            assert!(v["detail"].as_str().unwrap().contains(last), "{v}");
        }
    }
    // Malformed JSON and content type.
    let csr = Some("t-csr");
    let (s, _, v) = rig
        .raw(
            "PUT",
            cm1,
            csr,
            Some(("application/json", "{\"max_down_bps\": ".into())),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = rig
        .raw(
            "PUT",
            cm1,
            csr,
            Some(("application/json", format!("{} x", plan()))),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = rig
        .raw(
            "PUT",
            cm1,
            csr,
            Some(("text/plain", plan().to_string())),
            &[],
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Content-Type"))
    );
    let (s, _, v) = rig.raw("PUT", cm1, csr, None, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Unknown modem, with a valid and with an invalid plan (the plan is checked first).
    let (s, _, v) = put("t-csr", "/v1/modems/nope/base", plan()).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("nope"), "{v}");
    let (s, _, _) = put(
        "t-csr",
        "/v1/modems/nope/base",
        json!({ "max_down_bps": 0 }),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Roles: the subscriber may not change even its own plan; a provider reaches no modem;
    // the role is checked before the body.
    for token in ["t-sub", "t-prov"] {
        for body in [plan(), json!({ "max_down_bps": 0 }), json!({ "x": 1 })] {
            let (s, _, v) = put(token, cm1, body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{token}: {v}");
        }
    }
    // Nothing changed, in memory or in the store, and nothing was audited.
    assert_eq!(rig.bases(), before);
    assert_eq!(rig.ctl().modem_audit("cm1").unwrap(), []);
    let (s, _, audit) = rig
        .call("GET", "/v1/modems/cm1/audit", Some("t-csr"), None)
        .await;
    assert_eq!((s, audit), (StatusCode::OK, json!([])));
}

/// A base-plan change and the cancellation of an active grant change the modem's effective
/// QoS outside the tick loop and the commit thread: both reach the change hook (through which
/// the network service manager learns the modem's committed rates), once, with the new level
/// already in force; an unchanged plan and a pending cancellation do not.
#[tokio::test]
async fn base_changes_and_cancellations_reach_the_change_hook() {
    let mut rig = Rig::new("hook");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    rig.state =
        rig.state
            .clone()
            .with_change_hook(Arc::new(move |c: &Controller, modems: &[String]| {
                for m in modems {
                    let committed = c.effective(m).and_then(|q| q.committed_down_bps);
                    log.lock().unwrap().push(format!("{m}:{committed:?}"));
                }
            }));
    let plan = json!({
        "max_down_bps": 20_000_000,
        "max_up_bps": 2_000_000,
        "committed_down_bps": 5_000_000,
    });
    let (s, _, v) = rig
        .call(
            "PUT",
            "/v1/modems/cm1/base",
            Some("t-auto"),
            Some(plan.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(*seen.lock().unwrap(), ["cm1:Some(5000000)"]);
    let (s, _, _) = rig
        .call("PUT", "/v1/modems/cm1/base", Some("t-auto"), Some(plan))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the same plan changes nothing"
    );

    // A pending grant cancelled: no change in force.
    let pending = rig.submit("cm2", Source::Subscriber);
    let (s, _, _) = rig
        .call(
            "DELETE",
            &format!("/v1/events/{pending}"),
            Some("t-csr"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 1);

    // An active grant (committed 8 Mbit/s over the base's 5) cancelled: back to the base.
    let now = rig.now.load(Ordering::SeqCst);
    let id = rig
        .ctl()
        .submit(
            EventRequest {
                modem: "cm1".into(),
                source: Source::Csr { user: "bob".into() },
                qos: QosLevel {
                    committed_down_bps: Some(8_000_000),
                    ..QosLevel::default()
                },
                start_ms: None,
                stop_ms: None,
                idempotency_key: None,
                level: None,
            },
            now,
        )
        .unwrap()
        .id;
    rig.ctl().tick(now).unwrap();
    assert_eq!(
        rig.ctl().effective("cm1").unwrap().committed_down_bps,
        Some(8_000_000)
    );
    let (s, _, v) = rig
        .call("DELETE", &format!("/v1/events/{id}"), Some("t-csr"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["cm1:Some(5000000)", "cm1:Some(5000000)"]
    );
}

/// Issue 11 item 1: a number no sink can hold is refused at the edge, naming the field and
/// the limit, and the next writes of every kind go through (before, the store's refusal of
/// start_ms = u64::MAX poisoned the controller until a restart).
#[tokio::test]
async fn numbers_beyond_what_the_store_and_the_modem_file_hold_are_refused_and_writes_go_on() {
    let rig = Rig::new("edge-bounds");
    let own = |body: Value| rig.call("POST", "/v1/events", Some("t-sub"), Some(body));
    let (status, _, v) = own(json!({
        "modem": "cm1", "level": "boost-50", "start_ms": u64::MAX
    }))
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["field"], "start_ms");
    assert!(
        v["detail"].as_str().unwrap().contains("253402300799999"),
        "{v}"
    );
    let (status, _, v) = own(json!({
        "modem": "cm1", "level": "boost-50", "stop_ms": 1u64 << 63
    }))
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["field"], "stop_ms");
    // A rate the DOCSIS file cannot carry (5 Gbit/s) is refused in a grant and a base plan.
    let (status, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-csr"),
            Some(json!({ "modem": "cm1", "qos": { "max_down_bps": 5_000_000_000u64 } })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["field"].as_str()),
        (422, Some("qos.max_down_bps"))
    );
    let (status, _, v) = rig
        .call(
            "PUT",
            "/v1/modems/cm1/base",
            Some("t-csr"),
            Some(json!({ "max_down_bps": 5_000_000_000u64 })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["field"].as_str()),
        (422, Some("max_down_bps"))
    );
    assert!(v["detail"].as_str().unwrap().contains("4294967295"), "{v}");
    // A modem id longer than any stored one.
    let (status, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-csr"),
            Some(json!({ "modem": "m".repeat(129), "qos": grant() })),
        )
        .await;
    assert_eq!((status.as_u16(), v["field"].as_str()), (422, Some("modem")));
    assert_eq!(rig.stored_events(), 0, "nothing refused was stored");

    // Every kind of write works afterwards.
    let (status, _, v) = own(json!({
        "modem": "cm1", "level": "boost-50", "start_ms": T0 + 60_000, "stop_ms": T0 + 90_000
    }))
    .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    let (status, _, v) = rig
        .call(
            "PATCH",
            &format!("/v1/events/{id}"),
            Some("t-sub"),
            Some(json!({ "stop_ms": (1u64 << 63) + 5 })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), v["field"].as_str()),
        (422, Some("stop_ms"))
    );
    let (status, _, v) = rig
        .call(
            "PATCH",
            &format!("/v1/events/{id}"),
            Some("t-sub"),
            Some(json!({ "stop_ms": T0 + 120_000 })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, _) = rig
        .call("PUT", "/v1/modems/cm1/base", Some("t-csr"), Some(plan()))
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = rig
        .call("DELETE", &format!("/v1/events/{id}"), Some("t-sub"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(rig.stored_events(), 1);
    assert!(rig.ctl().poisoned().is_none());
}

/// Issue 11 item 2: a subscriber grants itself only what the catalogue offers, within the
/// level's duration and monthly quota; the quota survives a restart (it is counted from the
/// store) and renews with the calendar month.
#[tokio::test]
async fn subscribers_choose_from_the_catalogue_within_duration_and_quota() {
    let rig = Rig::new("catalogue");
    let mut c = catalogue();
    c = crate::provision::GrantCatalogue::from_section(
        &toml::from_str(
            r#"
            [[level]]
            name = "boost-50"
            max_down_bps = 50_000_000
            max_duration_s = 3600
            per_month = 2
            "#,
        )
        .unwrap(),
    )
    .map(|n| {
        assert_ne!(n, c);
        n
    })
    .unwrap();
    rig.ctl().set_catalogue(c);
    let post = |body: Value| rig.call("POST", "/v1/events", Some("t-sub"), Some(body));
    // The issue's request: 1 Gbit/s committed, by the subscriber itself.
    let (s, _, v) = post(json!({ "modem": "cm1",
        "qos": { "max_down_bps": 1_000_000_000u64, "committed_down_bps": 1_000_000_000u64 } }))
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("catalogue"), "{v}");
    let (s, _, v) = post(json!({ "modem": "cm1", "level": "turbo", "stop_ms": T0 + 1000 })).await;
    assert_eq!(
        (s.as_u16(), v["field"].as_str()),
        (422, Some("level")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("boost-50"), "{v}");
    let (s, _, v) = post(json!({ "modem": "cm1", "level": "boost-50" })).await;
    assert_eq!(
        (s.as_u16(), v["field"].as_str()),
        (422, Some("stop_ms")),
        "{v}"
    );
    let (s, _, v) =
        post(json!({ "modem": "cm1", "level": "boost-50", "stop_ms": T0 + 3_600_001 })).await;
    assert_eq!(
        (s.as_u16(), v["field"].as_str()),
        (422, Some("stop_ms")),
        "{v}"
    );
    let (s, _, v) = post(json!({ "modem": "cm1", "level": "boost-50",
        "qos": { "max_down_bps": 60_000_000 }, "stop_ms": T0 + 1000 }))
    .await;
    assert_eq!((s.as_u16(), v["field"].as_str()), (422, Some("qos")), "{v}");
    assert_eq!(rig.stored_events(), 0);
    // Two grants this month: the level's grant, as the catalogue defines it.
    for i in 0..2 {
        let (s, _, v) = post(json!({ "modem": "cm1", "level": "boost-50",
            "start_ms": T0 + 60_000, "stop_ms": T0 + 3_660_000 }))
        .await;
        assert_eq!(s, 201, "grant {i}: {v}");
        let (_, _, e) = rig
            .call(
                "GET",
                &format!("/v1/events/{}", v["id"]),
                Some("t-sub"),
                None,
            )
            .await;
        assert_eq!(e["level"], "boost-50");
        assert_eq!(e["qos"]["max_down_bps"], 50_000_000);
    }
    let (s, _, v) =
        post(json!({ "modem": "cm1", "level": "boost-50", "stop_ms": T0 + 3_600_000 })).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("2 of 2"), "{v}");
    // A restart counts the quota from the store.
    let c = rig.ctl().catalogue().clone();
    {
        let store = SqliteStore::open(&rig.db).unwrap();
        let (mut reopened, _) = Controller::open(
            ControllerConfig::default(),
            Box::new(store),
            Box::new(Disabled),
            Box::new(Disabled),
            Vec::new(),
            T0,
        )
        .unwrap();
        reopened.set_catalogue(c);
        *rig.ctl() = reopened;
    }
    let (s, _, _) =
        post(json!({ "modem": "cm1", "level": "boost-50", "stop_ms": T0 + 3_600_000 })).await;
    assert_eq!(
        s, 403,
        "the quota is counted from the store after a restart"
    );
    // A subscriber may move its grant's times (within the level's duration), not its QoS.
    let (s, _, v) = rig
        .call(
            "PATCH",
            "/v1/events/1",
            Some("t-sub"),
            Some(json!({ "stop_ms": T0 + 3_660_001 })),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["field"].as_str()),
        (422, Some("stop_ms")),
        "{v}"
    );
    let (s, _, v) = rig
        .call(
            "PATCH",
            "/v1/events/1",
            Some("t-sub"),
            Some(json!({ "stop_ms": T0 + 1_860_000 })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The next calendar month renews it (2023-12-01T00:00:00Z follows T0's November).
    rig.now.store(1_701_388_800_000, Ordering::SeqCst);
    let (s, _, v) = post(json!({ "modem": "cm1", "level": "boost-50",
        "stop_ms": 1_701_388_800_000u64 + 60_000 }))
    .await;
    assert_eq!(s, 201, "{v}");
    // Admin and automation keep full control; the catalogue lists what subscribers get.
    let (s, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-auto"),
            Some(json!({ "modem": "cm1", "qos": { "max_down_bps": 900_000_000 } })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = rig.call("GET", "/v1/catalogue", Some("t-sub"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["levels"][0]["name"], "boost-50");
    assert_eq!(v["levels"][0]["per_month"], 2);
    assert_eq!(v["levels"][0]["max_duration_s"], 3600);
}
/// Behaviours Schemathesis found (tests/api_schema.rs).
mod schema_found;

/// With `controller.grants.csr_from_catalogue`, CSR tokens choose from the catalogue too
/// (read without the controller's lock: the flag follows `set_catalogue`).
#[tokio::test]
async fn csrs_choose_from_the_catalogue_when_configured() {
    let rig = Rig::new("csr-catalogue");
    let post = |body: Value| rig.call("POST", "/v1/events", Some("t-csr"), Some(body));
    let own = json!({ "modem": "cm2", "qos": { "max_down_bps": 900_000_000 } });
    let (s, _, v) = post(own.clone()).await;
    assert_eq!(s, 201, "off by default: {v}");
    let mut c = rig.ctl().catalogue().clone();
    c.csr_from_catalogue = true;
    rig.ctl().set_catalogue(c);
    let (s, _, v) = post(own).await;
    assert_eq!(s, 403, "{v}");
    let (s, _, v) =
        post(json!({ "modem": "cm2", "level": "boost-50", "stop_ms": T0 + 60_000 })).await;
    assert_eq!(s, 201, "{v}");
    // Admin tokens keep full control.
    let (s, _, v) = rig
        .call(
            "POST",
            "/v1/events",
            Some("t-admin"),
            Some(json!({ "modem": "cm2", "qos": { "max_down_bps": 900_000_000 } })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}
