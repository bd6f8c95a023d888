//! Tests of the manager's bounds and edge refusals: oversized strings and collections
//! ([`super::validate`]), a link capacity below what is committed, sessions behind unknown
//! gateways or beyond the sessions a subscriber may hold, and allocation ids beyond SQLite's
//! integers in the store.

use std::collections::BTreeSet;

use super::core::{CatalogError, NsmCore, Refusal};
use super::model::{Classifier, Dir};
use super::service::{NsmConfig, NsmError, NsmService};
use super::tests::{Recorder, app, link, provider, request, seeded_service, session};
use super::validate::{self, MAX_CLASSIFIERS, MAX_ID_LEN, MAX_PREFIXES};
use crate::store::{
    NsmStore, SessionStore, SessionStoreError, SqliteNsmStore, StoreError, TempDir,
};

fn invalid_field(e: &CatalogError) -> &str {
    match e {
        CatalogError::Invalid { field, .. } => field,
        other => panic!("not Invalid: {other:?}"),
    }
}

#[test]
fn provider_and_application_strings_and_collections_are_bounded() {
    let mut c = NsmCore::new(1000);
    let mb = "x".repeat(1 << 20);
    let mut p = provider("p1", "198.19.0.0/24");
    p.name = mb.clone();
    let e = c.put_provider(p).unwrap_err();
    assert_eq!(invalid_field(&e), "name");
    assert!(
        e.to_string()
            .contains("1048576 characters long; the limit is 256"),
        "{e}"
    );
    assert!(e.to_string().len() < 200, "the value is not echoed");
    let mut p = provider(&"p".repeat(MAX_ID_LEN + 1), "198.19.0.0/24");
    assert_eq!(invalid_field(&c.put_provider(p.clone()).unwrap_err()), "id");
    p.id = "p\u{7}".into();
    let e = c.put_provider(p).unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    let mut p = provider("p1", "198.19.0.0/24");
    p.prefixes = (0..=MAX_PREFIXES)
        .map(|i| format!("198.19.{i}.0/24"))
        .collect();
    assert_eq!(invalid_field(&c.put_provider(p).unwrap_err()), "prefixes");
    let mut p = provider("p1", "198.19.0.0/24");
    p.webhook_url = Some("http://h/".into());
    p.webhook_secret = Some(mb.clone());
    assert_eq!(
        invalid_field(&c.put_provider(p).unwrap_err()),
        "webhook_secret"
    );
    assert!(c.providers().next().is_none(), "nothing registered");

    c.put_provider(provider("p1", "198.19.0.0/24")).unwrap();
    let mut a = app("p1", "tv", "198.19.0.0/24", "5000");
    a.classifiers = vec![a.classifiers[0].clone(); MAX_CLASSIFIERS + 1];
    let e = c.put_application(a).unwrap_err();
    assert_eq!(invalid_field(&e), "classifiers");
    assert!(
        e.to_string().contains("has 33 entries; the limit is 32"),
        "{e}"
    );
    let mut a = app("p1", "tv", "198.19.0.0/24", "5000");
    a.classifiers[1] = Classifier {
        subscriber_ports: Some(mb.clone()),
        ..a.classifiers[1].clone()
    };
    assert_eq!(
        invalid_field(&c.put_application(a).unwrap_err()),
        "classifiers[1].subscriber_ports"
    );
    let mut a = app("p1", "tv", "198.19.0.0/24", "5000");
    a.name = mb;
    assert_eq!(invalid_field(&c.put_application(a).unwrap_err()), "name");
    assert!(c.applications("p1").is_empty());
}

#[test]
fn request_strings_are_bounded_before_any_lookup() {
    let mut c = NsmCore::new(1000);
    c.put_provider(provider("p1", "198.19.0.0/24")).unwrap();
    let mb = "x".repeat(1 << 20);
    let r = c.decide("p1", &request(&mb, "cm1", 1000)).unwrap_err();
    assert!(
        matches!(&r, Refusal::Invalid { field, .. } if field == "application"),
        "{r:?}"
    );
    assert!(r.to_string().len() < 200, "the value is not echoed");
    let r = c.decide("p1", &request("tv", &mb, 1000)).unwrap_err();
    assert!(
        matches!(&r, Refusal::Invalid { field, .. } if field == "scope.subscriber"),
        "{r:?}"
    );
}

#[test]
fn a_link_capacity_below_what_is_committed_is_refused_and_configuration_warns() {
    let dir = TempDir::new("nsm-link-committed");
    let mut svc = seeded_service(&dir.path().join("nsm.db"), Recorder::default());
    svc.allocate("p1", request("tv", "cm1", 60_000_000), 1)
        .unwrap();
    let e = svc
        .put_link(link("gw1", 100_000_000, 50_000_000))
        .unwrap_err();
    let NsmError::Catalog(CatalogError::BelowCommitted {
        link: ref named,
        dir,
        capacity_bps,
        limit_bps,
        committed_bps,
    }) = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (named.as_str(), dir, capacity_bps, limit_bps, committed_bps),
        ("gw1", Dir::Down, 50_000_000, 50_000_000, 60_000_000)
    );
    assert!(e.to_string().contains("60000000 bit/s committed"), "{e}");
    let gw1 = svc
        .links()
        .into_iter()
        .find(|l| l.link.id == "gw1")
        .unwrap();
    assert_eq!(gw1.link.capacity_down_bps, 100_000_000, "unchanged");
    // Exactly what is committed is fine.
    svc.put_link(link("gw1", 100_000_000, 60_000_000)).unwrap();
    // The configuration at start is applied anyway, with the shortfall to warn about.
    let shortfall = svc
        .put_configured_link(link("gw1", 100_000_000, 10_000_000))
        .unwrap();
    assert!(
        matches!(
            shortfall,
            Some(CatalogError::BelowCommitted {
                committed_bps: 60_000_000,
                ..
            })
        ),
        "{shortfall:?}"
    );
    assert_eq!(
        svc.links()[0].link.capacity_down_bps,
        10_000_000,
        "the configuration holds"
    );
}

fn service_with_gateways(dir: &TempDir, gateways: &[&str]) -> NsmService {
    let store = SqliteNsmStore::open(dir.path().join("nsm.db")).unwrap();
    let config = NsmConfig {
        gateways: Some(
            gateways
                .iter()
                .map(|g| (*g).to_owned())
                .collect::<BTreeSet<_>>(),
        ),
        ..NsmConfig::default()
    };
    NsmService::open(config, Box::new(store), Box::new(Recorder::default()), 0).unwrap()
}

fn refused(r: Result<(), SessionStoreError>) -> CatalogError {
    match r {
        Err(SessionStoreError::Refused(e)) => e,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn sessions_need_a_known_gateway_and_bounded_fields() {
    let dir = TempDir::new("nsm-gateways-known");
    let mut svc = service_with_gateways(&dir, &["gw1", "gw2"]);
    let e = refused(svc.upsert_session(&session("s1", "cm1", "198.18.0.10", "gw9")));
    assert_eq!(invalid_field(&e), "gateway");
    assert!(
        e.to_string()
            .contains("gateway gw9 is unknown; the known gateways are gw1, gw2"),
        "{e}"
    );
    assert!(svc.core().session("s1").is_none());
    svc.upsert_session(&session("s1", "cm1", "198.18.0.10", "gw2"))
        .unwrap();
    // Moving it behind an unknown gateway is refused too, and it stays where it was.
    refused(svc.upsert_session(&session("s1", "cm1", "198.18.0.10", "gw9")));
    assert_eq!(svc.core().session("s1").unwrap().gateway, "gw2");
    let mut s = session("s2", "cm1", "198.18.0.11", "gw1");
    s.bras = "b".repeat(MAX_ID_LEN + 1);
    assert_eq!(invalid_field(&refused(svc.upsert_session(&s))), "bras");
    let mut s = session("s2", "cm1", "198.18.0.11", "gw1");
    s.prefix = format!("198.18.0.11{}", " ".repeat(1 << 20));
    assert_eq!(invalid_field(&refused(svc.upsert_session(&s))), "prefix");

    let dir = TempDir::new("nsm-gateways-none");
    let mut svc = service_with_gateways(&dir, &[]);
    let e = refused(svc.upsert_session(&session("s1", "cm1", "198.18.0.10", "gw1")));
    assert!(e.to_string().contains("no gateway is configured"), "{e}");
}

#[test]
fn a_subscriber_holds_a_bounded_number_of_sessions() {
    let dir = TempDir::new("nsm-sessions-per-subscriber");
    let mut svc = service_with_gateways(&dir, &["gw1"]);
    let max = validate::MAX_SESSIONS_PER_SUBSCRIBER;
    for i in 0..max {
        svc.upsert_session(&session(
            &format!("s{i}"),
            "cm1",
            &format!("198.18.1.{i}"),
            "gw1",
        ))
        .unwrap();
    }
    let e = refused(svc.upsert_session(&session("one-more", "cm1", "198.18.2.1", "gw1")));
    assert!(
        matches!(&e, CatalogError::Limit { field, .. } if field == "subscriber"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&format!("the limit is {max}")),
        "{e}"
    );
    // A held session may still change; another subscriber is not affected.
    svc.upsert_session(&session("s0", "cm1", "198.18.3.1", "gw1"))
        .unwrap();
    svc.upsert_session(&session("x", "cm2", "198.18.2.1", "gw1"))
        .unwrap();
}

#[test]
fn the_store_refuses_ids_beyond_sqlite_integers_instead_of_wrapping() {
    let dir = TempDir::new("nsm-store-ids");
    let mut svc = seeded_service(&dir.path().join("nsm.db"), Recorder::default());
    let mut a = svc
        .allocate("p1", request("tv", "cm1", 1_000_000), 1)
        .unwrap();
    drop(svc);
    let mut st = SqliteNsmStore::open(dir.path().join("nsm.db")).unwrap();
    for id in [1u64 << 63, u64::MAX] {
        assert_eq!(st.allocation(id).unwrap(), None);
        a.id = id;
        let e = st.put_allocations(&[&a]).unwrap_err();
        assert!(
            matches!(e, StoreError::OutOfRange { what: "allocation id", value } if value == id),
            "{e:?}"
        );
    }
    assert_eq!(st.allocations_of("p1").unwrap().len(), 1, "nothing written");
    assert!(st.session("s1").unwrap().is_some());
}
