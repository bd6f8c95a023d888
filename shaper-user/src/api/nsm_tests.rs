//! API tests of the network service manager's routes: the role × provider authorization
//! matrix, refusals as problem+json (409 capacity naming the link and what is left, 422
//! invalid fields), and release freeing capacity. The manager runs on SQLite with a recording
//! data plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::nsm::NsmState;
use super::*;
use crate::controller::{ControllerConfig, Disabled};
use crate::nsm::{Notifiers, NsmConfig, NsmService};
use crate::store::{SqliteNsmStore, SqliteStore, TempDir};

const T0: u64 = 1_700_000_000_000;

const TOKENS: [(&str, Role, &str); 6] = [
    ("t-admin", Role::Admin, "root"),
    ("t-csr", Role::Csr, "alice"),
    ("t-sub", Role::Subscriber, "cm1"),
    ("t-p1", Role::Provider, "p1"),
    ("t-p2", Role::Provider, "p2"),
    ("t-auto", Role::Automation, "radius"),
];

pub(super) struct Rig {
    _dir: TempDir,
    pub(super) state: AppState,
}

impl Rig {
    pub(super) fn new(name: &str) -> Rig {
        Rig::with(
            name,
            NsmConfig::default(),
            Box::new(crate::nsm::NoDataplane),
        )
    }

    /// A rig whose manager has `config` and enforces into `target`.
    pub(super) fn with(
        name: &str,
        config: NsmConfig,
        target: Box<dyn crate::nsm::AllocationTarget>,
    ) -> Rig {
        let dir = TempDir::new(&format!("api-nsm-{name}"));
        let db = dir.path().join("shaper.db");
        let (ctl, _) = Controller::open(
            ControllerConfig::default(),
            Box::new(SqliteStore::open(&db).unwrap()),
            Box::new(Disabled),
            Box::new(Disabled),
            Vec::new(),
            T0,
        )
        .unwrap();
        let svc = NsmService::open(
            config,
            Box::new(SqliteNsmStore::open(&db).unwrap()),
            target,
            T0,
        )
        .unwrap();
        let tokens = TokenTable::new(TOKENS.iter().map(|(t, role, subject)| TokenEntry {
            sha256_hex: hash_token(t),
            role: *role,
            subject: (*subject).into(),
        }))
        .unwrap();
        let now = Arc::new(AtomicU64::new(T0));
        let state = AppState {
            csr_from_catalogue: ctl.csr_from_catalogue_flag(),
            controller: Arc::new(Mutex::new(ctl)),
            tokens: Arc::new(tokens),
            clock: Arc::new(move || now.load(Ordering::SeqCst)),
            metrics: None,
            nsm: None,
            submits: Arc::default(),
            wake: Arc::default(),
            tick_after_commit: false,
            on_changes: None,
            pipeline: None,
            files: None,
        }
        .with_nsm(NsmState {
            service: Arc::new(Mutex::new(svc)),
            notifiers: Notifiers::default(),
        });
        Rig { _dir: dir, state }
    }

    pub(super) fn app(&self) -> Router {
        router(self.state.clone())
    }

    pub(super) async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    pub(super) async fn ok(&self, method: &str, uri: &str, body: Value) -> Value {
        let (s, v) = self.call(method, uri, Some("t-admin"), Some(body)).await;
        assert!(s.is_success(), "{method} {uri}: {s} {v}");
        v
    }

    /// Two providers with one application each, one gateway of 50 Mbit/s down, two sessions.
    pub(super) async fn seed(&self) {
        for (p, prefix, port) in [
            ("p1", "198.19.0.0/24", "5201"),
            ("p2", "198.19.1.0/24", "5202"),
        ] {
            self.ok(
                "PUT",
                &format!("/v1/providers/{p}"),
                json!({ "kind": "asp", "name": p, "prefixes": [prefix] }),
            )
            .await;
            self.ok(
                "PUT",
                &format!("/v1/providers/{p}/applications/app"),
                json!({ "name": "app", "classifiers": [
                    { "direction": "down", "proto": 17, "provider_prefix": prefix, "provider_ports": port },
                    { "direction": "up", "proto": 17, "provider_prefix": prefix, "provider_ports": port }
                ] }),
            )
            .await;
        }
        self.ok(
            "PUT",
            "/v1/links/gw1",
            json!({ "kind": "gateway", "capacity_up_bps": 10_000_000, "capacity_down_bps": 50_000_000 }),
        )
        .await;
        for (id, sub, addr) in [("s1", "cm1", "198.18.0.10"), ("s2", "cm2", "198.18.0.11")] {
            self.ok(
                "PUT",
                &format!("/v1/sessions/{id}"),
                json!({ "subscriber": sub, "prefix": addr, "bras": "bras1", "gateway": "gw1" }),
            )
            .await;
        }
    }

    pub(super) async fn allocate(
        &self,
        token: &str,
        provider: &str,
        down: u64,
    ) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/v1/providers/{provider}/allocations"),
            Some(token),
            Some(json!({ "application": "app", "scope": { "subscriber": "cm1" }, "down_bps": down, "priority": 6 })),
        )
        .await
    }
}

#[tokio::test]
async fn providers_reach_only_their_own_allocations() {
    let rig = Rig::new("matrix");
    rig.seed().await;
    let (s, a1) = rig.allocate("t-p1", "p1", 1_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{a1}");
    let (s, a2) = rig.allocate("t-p2", "p2", 1_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{a2}");
    let id1 = a1["id"].as_u64().unwrap();
    let id2 = a2["id"].as_u64().unwrap();
    let alloc = json!({ "application": "app", "scope": { "ip": "198.18.0.10" }, "down_bps": 1000 });
    let session =
        json!({ "subscriber": "cm3", "prefix": "198.18.0.30", "bras": "b", "gateway": "gw1" });
    // Order of tokens: admin, csr, subscriber, p1, p2, automation, none.
    let tokens = [
        Some("t-admin"),
        Some("t-csr"),
        Some("t-sub"),
        Some("t-p1"),
        Some("t-p2"),
        Some("t-auto"),
        None,
    ];
    type Row = (&'static str, String, Option<Value>, [u16; 7]);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("GET", "/v1/providers".into(), None, [200, 200, 403, 403, 403, 403, 401]),
        ("GET", "/v1/providers/p1".into(), None, [200, 200, 403, 200, 403, 403, 401]),
        ("PUT", "/v1/providers/p1".into(), Some(json!({ "kind": "asp", "name": "p1", "prefixes": ["198.19.0.0/24"] })), [200, 403, 403, 403, 403, 403, 401]),
        ("GET", "/v1/providers/p1/applications".into(), None, [200, 200, 403, 200, 403, 403, 401]),
        ("PUT", "/v1/providers/p1/applications/app".into(), Some(json!({ "name": "x", "classifiers": [] })), [422, 403, 403, 403, 403, 403, 401]),
        ("DELETE", "/v1/providers/p1/applications/app".into(), None, [409, 403, 403, 403, 403, 403, 401]),
        ("DELETE", "/v1/providers/p1".into(), None, [409, 403, 403, 403, 403, 403, 401]),
        ("POST", "/v1/providers/p1/allocations".into(), Some(alloc.clone()), [201, 201, 403, 201, 403, 403, 401]),
        ("GET", "/v1/providers/p1/allocations".into(), None, [200, 200, 403, 200, 403, 403, 401]),
        ("GET", format!("/v1/providers/p1/allocations/{id1}"), None, [200, 200, 403, 200, 403, 403, 401]),
        // p2's allocation under p1's path: not p1's to see, for anyone.
        ("GET", format!("/v1/providers/p1/allocations/{id2}"), None, [404, 404, 403, 404, 403, 403, 401]),
        ("GET", format!("/v1/providers/p2/allocations/{id2}"), None, [200, 200, 403, 403, 200, 403, 401]),
        ("DELETE", format!("/v1/providers/p1/allocations/{id2}"), None, [404, 404, 403, 404, 403, 403, 401]),
        ("GET", "/v1/providers/p1/deliveries".into(), None, [200, 403, 403, 200, 403, 403, 401]),
        ("GET", "/v1/links".into(), None, [200, 200, 403, 403, 403, 200, 401]),
        ("PUT", "/v1/links/gw2".into(), Some(json!({ "kind": "link", "capacity_up_bps": 1, "capacity_down_bps": 1 })), [200, 403, 403, 403, 403, 403, 401]),
        ("GET", "/v1/sessions".into(), None, [200, 403, 403, 403, 403, 200, 401]),
        ("PUT", "/v1/sessions/s3".into(), Some(session), [200, 403, 403, 403, 403, 200, 401]),
        ("GET", "/v1/sessions/s1".into(), None, [200, 403, 403, 403, 403, 200, 401]),
        ("DELETE", "/v1/sessions/nope".into(), None, [404, 403, 403, 403, 403, 404, 401]),
    ];
    for route in ROUTES.iter().filter(|r| super::nsm::is_nsm_path(r.path)) {
        let covered = rows.iter().any(|(m, p, ..)| {
            *m == route.method && {
                let shape: Vec<&str> = route.path.split('/').collect();
                let got: Vec<&str> = p.split('/').collect();
                shape.len() == got.len()
                    && shape
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.starts_with('{') || a == b)
            }
        });
        assert!(
            covered,
            "{} {} is missing from the matrix",
            route.method, route.path
        );
    }
    for (method, uri, body, expected) in &rows {
        for (token, want) in tokens.iter().zip(expected) {
            let (s, v) = rig.call(method, uri, *token, body.clone()).await;
            assert_eq!(s.as_u16(), *want, "{method} {uri} as {token:?}: {v}");
        }
    }
    // p2's allocation is still there, untouched by p1's attempts.
    let (s, v) = rig
        .call(
            "GET",
            &format!("/v1/providers/p2/allocations/{id2}"),
            Some("t-p2"),
            None,
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("active")));
    // A provider's list holds only its own.
    let (_, list) = rig
        .call("GET", "/v1/providers/p1/allocations", Some("t-p1"), None)
        .await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|a| a["provider"] == "p1")
    );
    // Secrets are never shown.
    let (_, p) = rig
        .call("GET", "/v1/providers/p1", Some("t-admin"), None)
        .await;
    assert!(p.get("webhook_secret").is_none());
}

#[tokio::test]
async fn capacity_refusal_is_409_naming_the_link_and_release_frees_it() {
    let rig = Rig::new("capacity");
    rig.seed().await;
    let (s, a) = rig.allocate("t-p1", "p1", 40_000_000).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let (s, p) = rig.allocate("t-p2", "p2", 20_000_000).await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["reason"], "capacity_exceeded");
    assert_eq!(p["result_code"], 5006);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("link gw1 down")
            && detail.contains("requested 20000000")
            && detail.contains("only 10000000 bit/s"),
        "{detail}"
    );
    // Links show the committed rate.
    let (_, links) = rig.call("GET", "/v1/links", Some("t-admin"), None).await;
    assert_eq!(links[0]["committed_down_bps"], 40_000_000);
    // Release frees the capacity; a second release is a conflict.
    let uri = format!("/v1/providers/p1/allocations/{}", a["id"]);
    let (s, r) = rig.call("DELETE", &uri, Some("t-p1"), None).await;
    assert_eq!((s, r["state"].as_str()), (StatusCode::OK, Some("released")));
    let (s, _) = rig.call("DELETE", &uri, Some("t-p1"), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = rig.allocate("t-p2", "p2", 20_000_000).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn refusals_name_the_field() {
    let rig = Rig::new("invalid");
    rig.seed().await;
    let cases = [
        (
            json!({ "application": "app", "scope": { "subscriber": "cm1" }, "down_bps": 1000, "priority": 9 }),
            422,
            "priority",
        ),
        (
            json!({ "application": "nope", "scope": { "subscriber": "cm1" }, "down_bps": 1000 }),
            422,
            "application",
        ),
        (
            json!({ "application": "app", "scope": {}, "down_bps": 1000 }),
            422,
            "scope",
        ),
        (
            json!({ "application": "app", "scope": { "subscriber": "cm9" }, "down_bps": 1000 }),
            409,
            "scope.subscriber",
        ),
        (
            json!({ "application": "app", "scope": { "ip": "198.18.9.9" }, "down_bps": 1000 }),
            409,
            "scope.ip",
        ),
        (
            json!({ "application": "app", "scope": { "subscriber": "cm1" }, "down_bps": "fast" }),
            400,
            "down_bps",
        ),
        (
            json!({ "application": "app", "scope": { "subscriber": "cm1" }, "down_bps": 1000, "colour": 1 }),
            400,
            "",
        ),
    ];
    for (body, status, field) in cases {
        let (s, p) = rig
            .call(
                "POST",
                "/v1/providers/p1/allocations",
                Some("t-p1"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s.as_u16(), status, "{body}: {p}");
        if !field.is_empty() {
            assert_eq!(p["field"], field, "{body}: {p}");
        }
    }
    // Nothing was admitted by any of them.
    let (_, list) = rig
        .call("GET", "/v1/providers/p1/allocations", Some("t-p1"), None)
        .await;
    assert_eq!(list, json!([]));
    // Session intake: an address held by another session is a conflict.
    let (s, p) = rig
        .call(
            "PUT",
            "/v1/sessions/s9",
            Some("t-auto"),
            Some(json!({ "subscriber": "cm9", "prefix": "198.18.0.10", "bras": "b", "gateway": "gw1" })),
        )
        .await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::CONFLICT, Some("prefix")),
        "{p}"
    );
}

#[tokio::test]
async fn ending_a_session_releases_its_allocations() {
    let rig = Rig::new("session-end");
    rig.seed().await;
    let (_, a) = rig.allocate("t-p1", "p1", 5_000_000).await;
    let (s, _) = rig
        .call("DELETE", "/v1/sessions/s1", Some("t-auto"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = rig
        .call(
            "GET",
            &format!("/v1/providers/p1/allocations/{}", a["id"]),
            Some("t-p1"),
            None,
        )
        .await;
    assert_eq!(v["state"], "released");
    assert_eq!(v["release_reason"], "session s1 ended");
    let (_, links) = rig.call("GET", "/v1/links", Some("t-admin"), None).await;
    assert_eq!(links[0]["committed_down_bps"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_intake_outside_the_api_releases_and_is_visible() {
    let rig = Rig::new("intake");
    rig.seed().await;
    let (_, a) = rig.allocate("t-p1", "p1", 5_000_000).await;
    let nsm = rig.state.nsm.clone().unwrap();
    // What a RADIUS Accounting-Stop handler does (here without its packet parsing).
    let ended = tokio::task::spawn_blocking(move || {
        nsm.session_intake(|s| s.end_session("s1", T0 + 5).unwrap())
    })
    .await
    .unwrap()
    .expect("s1 was active");
    assert_eq!(ended.ended_ms, Some(T0 + 5));
    let (_, v) = rig
        .call(
            "GET",
            &format!("/v1/providers/p1/allocations/{}", a["id"]),
            Some("t-p1"),
            None,
        )
        .await;
    assert_eq!(v["state"], "released");
    let (s, _) = rig
        .call("GET", "/v1/sessions/s1", Some("t-auto"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A BRAS notifier standing in for the RADIUS CoA client: forwards every job to a channel.
struct ChannelNotifier(tokio::sync::mpsc::UnboundedSender<crate::nsm::Job>);

impl crate::nsm::Notifier for ChannelNotifier {
    fn notify<'a>(
        &'a self,
        job: &'a crate::nsm::Job,
    ) -> crate::nsm::BoxFuture<'a, Result<(), crate::nsm::NotifyError>> {
        let _ = self.0.send(job.clone());
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bras_is_notified_through_the_notifier_trait() {
    let mut rig = Rig::new("bras");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let nsm = rig.state.nsm.take().unwrap();
    rig.state.nsm = Some(NsmState {
        notifiers: Notifiers {
            bras: Some(Arc::new(ChannelNotifier(tx))),
            ..nsm.notifiers.clone()
        },
        ..nsm
    });
    rig.seed().await;
    let (s, a) = rig.allocate("t-p1", "p1", 5_000_000).await;
    assert_eq!(s, StatusCode::CREATED);
    let job = rx.recv().await.unwrap();
    assert_eq!(job.target, crate::nsm::Target::Bras("bras1".into()));
    assert_eq!(job.notice.event, crate::nsm::notify::NoticeEvent::Allocated);
    assert_eq!(job.notice.allocation.id, a["id"].as_u64().unwrap());
    assert_eq!(job.notice.sessions[0].prefix, "198.18.0.10");
    // A session ending outside the API (blocking context) notifies the release too.
    let nsm = rig.state.nsm.clone().unwrap();
    tokio::task::spawn_blocking(move || nsm.session_intake(|s| s.end_session("s1", T0 + 9)))
        .await
        .unwrap()
        .unwrap();
    let job = rx.recv().await.unwrap();
    assert_eq!(job.notice.event, crate::nsm::notify::NoticeEvent::Released);
    assert_eq!(
        job.notice.allocation.release_reason.as_deref(),
        Some("session s1 ended")
    );
}
