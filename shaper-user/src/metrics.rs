//! Prometheus metrics, served at `GET /metrics` (text exposition format 0.0.4).
//!
//! Everything is read at scrape time by one custom collector: the data plane's per-CPU
//! counters (summed over CPUs) are exposed as counters whose value *is* the kernel's, so
//! nothing is cached or double counted, and a series disappears with its class.
//!
//! | metric                                  | type      | labels                               |
//! |-----------------------------------------|-----------|--------------------------------------|
//! | `shaper_class_packets_total`            | counter   | class, owner                         |
//! | `shaper_class_bytes_total`              | counter   | class, owner                         |
//! | `shaper_class_drops_total`              | counter   | class, owner, reason (police/mtu/block) |
//! | `shaper_class_mss_clamped_total`        | counter   | class, owner                         |
//! | `shaper_class_dscp_marked_total`        | counter   | class, owner                         |
//! | `shaper_class_icmp_sent_total`          | counter   | class, owner                         |
//! | `shaper_class_rate_bytes_per_second`    | gauge     | class, owner (policed classes only)  |
//! | `shaper_class_bucket_available_bytes`   | gauge     | class, owner (classes with one bucket) |
//! | `shaper_dataplane_packets_total`        | counter   | counter (`abi::gs::NAMES`)           |
//! | `shaper_top_flow_bytes`                 | gauge     | rank, src, dst, proto, sport, dport  |
//! | `shaper_modem_service_target`           | gauge     | modem, target                        |
//! | `shaper_events`                         | gauge     | source, state                        |
//! | `shaper_scheduler_lag_seconds`          | gauge     |                                      |
//! | `shaper_enforcements_total`             | counter   | result (ok/failed)                   |
//! | `shaper_controller_resyncs_total`       | counter   |                                      |
//! | `shaper_enforcement_latency_seconds`    | histogram |                                      |
//! | `shaper_metrics_read_errors`            | gauge     |                                      |
//! | `shaper_modem_pipeline_failing_modems`  | gauge     |                                      |
//! | `shaper_modem_pipeline_failures_total`  | counter   | stage (build/deliver/reboot)         |
//!
//! Label cardinality is bounded: `owner` is `modem:<id>` for a class the controller bound to a
//! modem and `class:<id>` otherwise, so it adds nothing to the class count; the top flows are
//! the [`TOP_FLOWS`] largest sampled flows, one series per rank, rebuilt on every scrape.
//! Service targets are stored with each QoS level and carried into the modem's configuration
//! file; `shaper_modem_service_target` reports them beside what the data plane measures, e.g.
//! loss under congestion as
//! `rate(shaper_class_drops_total{owner="modem:M",reason="police"}[5m]) /
//! rate(shaper_class_packets_total{owner="modem:M"}[5m]) * 1e6` against
//! `shaper_modem_service_target{modem="M",target="loss_ppm"}`.
//! The flow table is sampled (one packet in `2^flow_sample_shift`), so flow bytes are sampled
//! bytes, useful for ranking, not billing.
//! The two `shaper_modem_pipeline_*` families are there once the modem pipeline's state is
//! attached ([`Metrics::attach_pipeline`]): modems whose file or reboot is failing now, and
//! every failed attempt by stage (see [`crate::modem::pipeline::retry`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder as _, Registry, TextEncoder};

use crate::abi;
use crate::clock::Clock;
use crate::controller::{APPLY_BUCKETS_US, Controller, EnforceStats};
use crate::dataplane::Dataplane;
use crate::modem::pipeline::PipelineShared;
use crate::provision::{EventState, Source};

/// How many flows `shaper_top_flow_bytes` shows.
pub const TOP_FLOWS: usize = 10;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Name, help, type and label names of every family the collector produces.
const FAMILIES: [(&str, &str, MetricType, &[&str]); 19] = [
    (
        "shaper_class_packets_total",
        "Packets the data plane classified into the class (kernel counter, all CPUs).",
        MetricType::COUNTER,
        &["class", "owner"],
    ),
    (
        "shaper_class_bytes_total",
        "L3 bytes the data plane classified into the class (kernel counter, all CPUs).",
        MetricType::COUNTER,
        &["class", "owner"],
    ),
    (
        "shaper_class_drops_total",
        "Packets of the class the data plane dropped, by reason: police (over rate), mtu (over the class MTU), block (class blocked).",
        MetricType::COUNTER,
        &["class", "owner", "reason"],
    ),
    (
        "shaper_class_mss_clamped_total",
        "TCP SYNs of the class whose MSS option was clamped.",
        MetricType::COUNTER,
        &["class", "owner"],
    ),
    (
        "shaper_class_dscp_marked_total",
        "Packets of the class whose DSCP was rewritten.",
        MetricType::COUNTER,
        &["class", "owner"],
    ),
    (
        "shaper_class_icmp_sent_total",
        "ICMP too-big / fragmentation-needed answers sent for oversize packets of the class.",
        MetricType::COUNTER,
        &["class", "owner"],
    ),
    (
        "shaper_class_rate_bytes_per_second",
        "Configured policer rate of the class (L3 bytes per second).",
        MetricType::GAUGE,
        &["class", "owner"],
    ),
    (
        "shaper_class_bucket_available_bytes",
        "Bytes the class's policer bucket would pass at once now (burst minus backlog).",
        MetricType::GAUGE,
        &["class", "owner"],
    ),
    (
        "shaper_dataplane_packets_total",
        "Global data-plane counters by name (kernel counters, all CPUs).",
        MetricType::COUNTER,
        &["counter"],
    ),
    (
        "shaper_top_flow_bytes",
        "Sampled bytes of the largest sampled flows, one series per rank (1 = largest).",
        MetricType::GAUGE,
        &["rank", "src", "dst", "proto", "sport", "dport"],
    ),
    (
        "shaper_modem_service_target",
        "A service target of the modem's effective QoS (availability, error rate and loss in ppm; setup and repair time in ms), to compare with what the class metrics measure.",
        MetricType::GAUGE,
        &["modem", "target"],
    ),
    (
        "shaper_events",
        "Provisioning events the controller holds, by source kind and state.",
        MetricType::GAUGE,
        &["source", "state"],
    ),
    (
        "shaper_scheduler_lag_seconds",
        "How long the oldest overdue start or stop has been due (0 if none is overdue).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "shaper_enforcements_total",
        "Modem enforcements by result: ok (every target applied) or failed (retried on the next tick).",
        MetricType::COUNTER,
        &["result"],
    ),
    (
        "shaper_controller_resyncs_total",
        "Times the controller found its memory ahead of its store (a lost commit, a panic) and rebuilt it from the store without a restart.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "shaper_enforcement_latency_seconds",
        "Time one modem enforcement took to apply to the data plane and pipeline.",
        MetricType::HISTOGRAM,
        &[],
    ),
    (
        "shaper_metrics_read_errors",
        "Data-plane map reads that failed during this scrape (their series are missing).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "shaper_modem_pipeline_failing_modems",
        "Modems whose configuration file cannot be built or written, or whose reboot onto it fails, now (retried with backoff; see GET /v1/modems/{id} pipeline).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "shaper_modem_pipeline_failures_total",
        "Failed modem-pipeline attempts by stage: build (generating the file), deliver (writing it where TFTP and HTTP serve it), reboot.",
        MetricType::COUNTER,
        &["stage"],
    ),
];

/// The metrics registry of a running shaper.
pub struct Metrics {
    registry: Registry,
    pipeline: Arc<OnceLock<Arc<PipelineShared>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics over the data plane and the controller, either of which may be absent (its
    /// families are then absent too). `clock` is the controller's (milliseconds since the
    /// Unix epoch), for the scheduler lag.
    pub fn new(
        dataplane: Option<Arc<Mutex<Dataplane>>>,
        controller: Option<Arc<Mutex<Controller>>>,
        clock: Clock,
    ) -> prometheus::Result<Metrics> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, labels)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        let registry = Registry::new();
        let pipeline = Arc::new(OnceLock::new());
        registry.register(Box::new(ShaperCollector {
            dataplane,
            controller,
            pipeline: pipeline.clone(),
            clock,
            descs,
        }))?;
        Ok(Metrics { registry, pipeline })
    }

    /// Reports the modem pipeline's failures from `shared` (the first one attached stays).
    pub fn attach_pipeline(&self, shared: Arc<PipelineShared>) {
        let _ = self.pipeline.set(shared);
    }

    /// The registry (to add more collectors).
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Scrapes everything and renders it in the text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> prometheus::Result<String> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

struct ShaperCollector {
    dataplane: Option<Arc<Mutex<Dataplane>>>,
    controller: Option<Arc<Mutex<Controller>>>,
    pipeline: Arc<OnceLock<Arc<PipelineShared>>>,
    clock: Clock,
    descs: Vec<Desc>,
}

/// What one scrape read from the controller (under its lock, released before the data plane's
/// is taken: the controller's enforcer locks the data plane inside the controller's lock).
struct ControllerView {
    owners: HashMap<u32, String>,
    events: BTreeMap<(&'static str, &'static str), u64>,
    stats: EnforceStats,
    resyncs: u64,
    next_due_ms: Option<u64>,
    /// (modem, target name, value) of every service target set in an effective QoS.
    targets: Vec<(String, &'static str, u32)>,
}

/// Samples by family name.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<proto::Metric>>);

impl Samples {
    fn push(&mut self, family: &'static str, labels: &[(&str, &str)], value: f64) {
        let ty = FAMILIES
            .iter()
            .find(|f| f.0 == family)
            .map(|f| f.2)
            .expect("known family");
        let mut m = proto::Metric::from_label(label_pairs(labels));
        match ty {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.0.entry(family).or_default().push(m);
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value((*v).to_owned());
            p
        })
        .collect()
}

fn source_kind(s: &Source) -> &'static str {
    match s {
        Source::Csr { .. } => "csr",
        Source::Subscriber => "subscriber",
        Source::Automation { .. } => "automation",
    }
}

fn state_name(s: EventState) -> &'static str {
    s.as_str()
}

fn flow_addr(b: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl ShaperCollector {
    fn controller_view(&self) -> Option<ControllerView> {
        let ctl = self.controller.as_ref()?;
        let ctl = ctl.lock().unwrap_or_else(PoisonError::into_inner);
        let mut owners = HashMap::new();
        let mut targets = Vec::new();
        for b in ctl.bindings() {
            let owner = format!("modem:{}", b.modem);
            owners.insert(b.up_class, owner.clone());
            owners.insert(b.down_class, owner);
            if let Some(q) = ctl.effective(&b.modem) {
                let t = q.targets;
                for (name, v) in [
                    ("availability_ppm", t.availability_ppm),
                    ("error_rate_ppm", t.error_rate_ppm),
                    ("loss_ppm", t.loss_ppm),
                    ("setup_time_ms", t.setup_time_ms),
                    ("repair_time_ms", t.repair_time_ms),
                ] {
                    if let Some(v) = v {
                        targets.push((b.modem.clone(), name, v));
                    }
                }
            }
        }
        let mut events = BTreeMap::new();
        for source in ["csr", "subscriber", "automation"] {
            for state in [
                EventState::Pending,
                EventState::Active,
                EventState::Completed,
                EventState::Cancelled,
            ] {
                events.insert((source, state_name(state)), 0);
            }
        }
        for (source, state) in ctl.engine().sources_and_states() {
            *events
                .entry((source_kind(source), state_name(state)))
                .or_default() += 1;
        }
        Some(ControllerView {
            owners,
            events,
            stats: *ctl.stats(),
            resyncs: ctl.resyncs(),
            next_due_ms: ctl.next_due(),
            targets,
        })
    }

    fn controller_samples(
        &self,
        view: &ControllerView,
        out: &mut Samples,
    ) -> Option<proto::Metric> {
        for (modem, target, v) in &view.targets {
            out.push(
                "shaper_modem_service_target",
                &[("modem", modem.as_str()), ("target", target)],
                f64::from(*v),
            );
        }
        for ((source, state), n) in &view.events {
            out.push(
                "shaper_events",
                &[("source", source), ("state", state)],
                *n as f64,
            );
        }
        let now_ms = (self.clock)();
        let lag_ms = view.next_due_ms.map_or(0, |d| now_ms.saturating_sub(d));
        out.push("shaper_scheduler_lag_seconds", &[], lag_ms as f64 / 1e3);
        let s = &view.stats;
        out.push(
            "shaper_enforcements_total",
            &[("result", "ok")],
            s.enforced as f64,
        );
        out.push(
            "shaper_enforcements_total",
            &[("result", "failed")],
            s.failed as f64,
        );
        out.push("shaper_controller_resyncs_total", &[], view.resyncs as f64);
        let mut cumulative = 0;
        let buckets = APPLY_BUCKETS_US
            .iter()
            .zip(s.apply_buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(s.enforced + s.failed);
        h.set_sample_sum(s.total_apply.as_secs_f64());
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        Some(m)
    }

    /// Reads the data plane's counters; returns how many reads failed.
    fn dataplane_samples(&self, owners: &HashMap<u32, String>, out: &mut Samples) -> Option<u32> {
        let dp = self.dataplane.as_ref()?;
        let dp = dp.lock().unwrap_or_else(PoisonError::into_inner);
        let mut errors = 0;
        let now_ns = dp.policer_clock_ns().map_err(|e| {
            tracing::warn!(error = %e, "metrics: reading the policer clock");
            errors += 1;
        });
        let buckets = dp.class_buckets();
        for id in dp.class_ids() {
            let class = id.to_string();
            let owner = owners
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("class:{id}"));
            let l = [("class", class.as_str()), ("owner", owner.as_str())];
            match dp.class_stats(id) {
                Ok(st) => {
                    out.push("shaper_class_packets_total", &l, st.pkts as f64);
                    out.push("shaper_class_bytes_total", &l, st.bytes as f64);
                    for (reason, n) in [
                        ("police", st.drop_police),
                        ("mtu", st.drop_mtu),
                        ("block", st.drop_block),
                    ] {
                        out.push(
                            "shaper_class_drops_total",
                            &[l[0], l[1], ("reason", reason)],
                            n as f64,
                        );
                    }
                    out.push("shaper_class_mss_clamped_total", &l, st.mss_clamped as f64);
                    out.push("shaper_class_dscp_marked_total", &l, st.dscp_marked as f64);
                    out.push("shaper_class_icmp_sent_total", &l, st.icmp_sent as f64);
                }
                Err(e) => {
                    tracing::warn!(class = id, error = %e, "metrics: reading class counters");
                    errors += 1;
                }
            }
            let Some(cfg) = dp.class(id).copied() else {
                continue;
            };
            let (Some(rate), npb) = (cfg.rate_bps, cfg.ns_per_byte_q16()) else {
                continue;
            };
            out.push("shaper_class_rate_bytes_per_second", &l, rate as f64 / 8.0);
            let Ok(now_ns) = now_ns else { continue };
            match &buckets {
                Ok(b) if npb > 0 => {
                    if let Some(&tat) = b.get(&id) {
                        let backlog_ns = u128::from(tat.saturating_sub(now_ns));
                        let backlog_bytes = (backlog_ns << 16) / u128::from(npb);
                        let avail = u128::from(cfg.burst_bytes).saturating_sub(backlog_bytes);
                        out.push("shaper_class_bucket_available_bytes", &l, avail as f64);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(class = id, error = %e, "metrics: reading the policer state");
                    errors += 1;
                }
            }
        }
        match dp.global_stats() {
            Ok(gs) => {
                for (name, v) in abi::gs::NAMES.iter().zip(gs.v) {
                    out.push(
                        "shaper_dataplane_packets_total",
                        &[("counter", name)],
                        v as f64,
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading global counters");
                errors += 1;
            }
        }
        match dp.top_flows(TOP_FLOWS) {
            Ok(flows) => {
                for (rank, (k, v)) in flows.iter().take(TOP_FLOWS).enumerate() {
                    let rank = (rank + 1).to_string();
                    let src = flow_addr(k.src).to_string();
                    let dst = flow_addr(k.dst).to_string();
                    let proto = k.proto.to_string();
                    let sport = u16::from_be(k.sport).to_string();
                    let dport = u16::from_be(k.dport).to_string();
                    out.push(
                        "shaper_top_flow_bytes",
                        &[
                            ("rank", &rank),
                            ("src", &src),
                            ("dst", &dst),
                            ("proto", &proto),
                            ("sport", &sport),
                            ("dport", &dport),
                        ],
                        v.bytes as f64,
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the flow table");
                errors += 1;
            }
        }
        Some(errors)
    }
}

impl Collector for ShaperCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Samples::default();
        let view = self.controller_view();
        let histogram = view
            .as_ref()
            .and_then(|v| self.controller_samples(v, &mut out));
        let owners = view.map(|v| v.owners).unwrap_or_default();
        if let Some(errors) = self.dataplane_samples(&owners, &mut out) {
            out.push("shaper_metrics_read_errors", &[], f64::from(errors));
        }
        if let Some(h) = histogram {
            out.0.insert("shaper_enforcement_latency_seconds", vec![h]);
        }
        if let Some(p) = self.pipeline.get() {
            out.push(
                "shaper_modem_pipeline_failing_modems",
                &[],
                p.failing_modems() as f64,
            );
            for (stage, n) in p.failures_total() {
                out.push(
                    "shaper_modem_pipeline_failures_total",
                    &[("stage", stage.name())],
                    n as f64,
                );
            }
        }
        FAMILIES
            .iter()
            .filter_map(|(name, help, ty, _)| {
                let metrics = out.0.remove(name)?;
                let mut mf = MetricFamily::default();
                mf.set_name((*name).to_owned());
                mf.set_help((*help).to_owned());
                mf.set_field_type(*ty);
                mf.set_metric(metrics);
                Some(mf)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
