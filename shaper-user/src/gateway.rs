//! `shaper run`: brings the data plane to what the configuration says and keeps it there.
//!
//! Order matters for "nothing half-applied" and "no window of unshaped traffic": everything
//! is validated first; classes are written before the subscribers and rules that use them;
//! stale subscribers and rules go before the classes they used; the programs are attached (or
//! swapped into their pinned links) last, when the maps already hold the full policy.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use crate::abi;
use crate::config::{ControllerPlan, Validated};
use crate::controller::{ConfiguredBase, Controller, DataplaneEnforcer};
use crate::dataplane::{Dataplane, LoadOptions, htb};
use crate::modem::pipeline::{DocsisPipeline, PipelineError, PipelineShared};
use crate::store::{SqliteStore, Store as _};

/// The data plane (shared with the controller's enforcer) and the HTB trees the gateway
/// manages, one per interface with a link rate.
pub struct Gateway {
    pub dataplane: Arc<Mutex<Dataplane>>,
    pub trees: Vec<htb::HtbTree>,
}

impl Gateway {
    /// The data plane, locked. Its methods update their in-memory view only after the kernel
    /// write succeeded, so a lock poisoned by a panic elsewhere still guards a consistent view.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        self.dataplane
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Loads (or reuses) the data plane and applies `v` to it.
pub fn apply(v: &Validated) -> anyhow::Result<Gateway> {
    // Every interface must exist before anything is loaded, written or attached.
    for (i, it) in v.config.interfaces.iter().enumerate() {
        let c = std::ffi::CString::new(it.name.as_str())?;
        // SAFETY: valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            anyhow::bail!(
                "interface[{i}].name: no interface {:?} in this network namespace",
                it.name
            );
        }
    }
    let dpc = &v.config.dataplane;
    let mut dp = Dataplane::load(LoadOptions {
        pin_root: Some(dpc.pin_root.clone()),
        limits: dpc.limits,
        fail_closed: dpc.fail_closed,
        malformed_drop: dpc.malformed_drop,
        flow_sample_shift: dpc.flow_sample_shift,
        pools: v.pools.clone(),
        ..Default::default()
    })
    .context("loading the data plane")?;

    let mut trees = Vec::new();
    for it in &v.config.interfaces {
        if let Some(rate) = it.htb_link_rate {
            let tree = htb::HtbTree::new(
                &it.name,
                None,
                rate.0,
                it.htb_default_minor.unwrap_or(htb::MAX_MINOR),
            )
            .with_context(|| format!("HTB tree on {}", it.name))?;
            trees.push(tree);
        }
    }
    for (id, cfg, h) in &v.classes {
        if let Some(h) = h {
            let tree = trees
                .iter_mut()
                .find(|t| t.ifname() == h.interface)
                .expect("validated");
            tree.upsert_class(
                h.minor,
                htb::HtbClass::new(h.rate.0, h.ceil.0).with_prio(h.prio),
            )
            .with_context(|| format!("HTB class for class {id}"))?;
        }
        dp.upsert_class(*id, cfg)
            .with_context(|| format!("class {id}"))?;
    }
    // Subscribers: drop the ones no longer configured, then write all. The controller's
    // modems' addresses and class ids are its own: left for it to reconcile when it opens, so
    // a restart never leaves a modem unshaped in between.
    let mut wanted: std::collections::HashSet<_> = v.subscribers.iter().map(|(k, _)| *k).collect();
    if let Some(plan) = &v.controller {
        wanted.extend(plan.modems.iter().flat_map(|m| m.addrs.iter().copied()));
    }
    let controller_classes = v.controller.as_ref().map(|p| p.config.classes.clone());
    for (k, _) in dp.subscribers() {
        if !wanted.contains(&k) {
            dp.delete_subscriber(&k)?;
        }
    }
    dp.upsert_subscribers(&v.subscribers)
        .context("subscribers")?;
    dp.set_rules(&v.rules).context("rules")?;
    let keep: std::collections::HashSet<u32> = v.classes.iter().map(|c| c.0).collect();
    for id in dp.class_ids() {
        let controlled = controller_classes.as_ref().is_some_and(|r| r.contains(&id));
        if !keep.contains(&id) && !controlled {
            dp.delete_class(id)
                .with_context(|| format!("removing class {id}"))?;
        }
    }
    for it in &v.config.interfaces {
        dp.attach_xdp(&it.name, it.role)
            .with_context(|| format!("XDP on {}", it.name))?;
        dp.attach_tc(&it.name, it.role)
            .with_context(|| format!("TC egress on {}", it.name))?;
    }
    info!(
        classes = v.classes.len(),
        subscribers = v.subscribers.len(),
        rules = v.rules.len(),
        interfaces = v.config.interfaces.len(),
        "data plane in force"
    );
    Ok(Gateway {
        dataplane: Arc::new(Mutex::new(dp)),
        trees,
    })
}

/// Opens the provisioning controller of `plan` on the gateway's data plane at `now_ms`:
/// the store's modems that the configuration lists are bound (and reconciled), the listed
/// modems the store does not know yet are added with their configured base plan, and a known
/// modem's configured plan replaces its stored one only if the configuration changed it since
/// the last run ([`Controller::apply_configured_base`]).
/// Also returns the modem pipeline's shared state when the DOCSIS pipeline is on. Must be
/// called within a tokio runtime (the pipeline reboots modems on it).
pub fn open_controller(
    plan: &ControllerPlan,
    gw: &Gateway,
    now_ms: u64,
) -> anyhow::Result<(Controller, Option<Arc<PipelineShared>>)> {
    if let Some(dir) = plan.store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("controller.store: creating {}", dir.display()))?;
    }
    let store = SqliteStore::open(&plan.store)
        .with_context(|| format!("controller.store: opening {}", plan.store.display()))?;
    let stored = store
        .load()
        .with_context(|| format!("controller.store: reading {}", plan.store.display()))?;
    let known: std::collections::HashSet<&str> =
        stored.modems.iter().map(|m| m.id.as_str()).collect();
    let (bind_now, add): (Vec<_>, Vec<_>) = plan
        .bindings()
        .into_iter()
        .zip(&plan.modems)
        .partition(|(b, _)| known.contains(b.modem.as_str()));
    let dp = gw.dataplane.clone();
    // The modems' HTB classes (controller.htb_minor_*): trees of their own on the same
    // interfaces. `HtbTree::new` keeps a root that is already ours with its classes, so the
    // configuration's classes and the modems' share each tree.
    let mut trees = Vec::new();
    if plan.config.htb_minors_down.is_some() || plan.config.htb_minors_up.is_some() {
        for (dir, ifname, link, default_minor) in &plan.htb_trees {
            let tree = htb::HtbTree::new(ifname, None, *link, *default_minor)
                .with_context(|| format!("HTB tree on {ifname} for the modems"))?;
            trees.push((*dir, tree));
        }
    }
    let enforcer = plan.enforcement.enforcer(|| {
        let mut e = DataplaneEnforcer::new(dp);
        for (dir, tree) in trees {
            e = e.with_htb(dir, tree);
        }
        e
    });
    let mut shared = None;
    let docsis = plan.pipeline.as_ref().map(|opts| {
        || -> Result<DocsisPipeline, PipelineError> {
            let keys = opts.load_keys()?;
            let reboots = plan
                .modems
                .iter()
                .filter_map(|m| m.reboot.clone().map(|r| (m.id.clone(), r)))
                .collect();
            let p = DocsisPipeline::open(opts, keys, reboots, tokio::runtime::Handle::current())?;
            shared = Some(p.shared());
            Ok(p)
        }
    });
    let pipeline = plan.enforcement.pipeline(docsis)?;
    let (mut ctl, changes) = Controller::open(
        plan.config.clone(),
        Box::new(store),
        enforcer,
        pipeline,
        bind_now.into_iter().map(|(b, _)| b).collect(),
        now_ms,
    )
    .context("opening the controller")?;
    ctl.set_catalogue(plan.catalogue.clone());
    for (binding, m) in add {
        let id = binding.modem.clone();
        ctl.add_modem(binding, m.base, now_ms)
            .with_context(|| format!("adding modem {id}"))?;
    }
    // Base plans: the configuration's replaces the stored one only if it changed since the
    // last run (the configuration was edited); otherwise the stored one stays, which the API
    // or a dropped file may have set since: a restart does not undo their change.
    for m in &plan.modems {
        let outcome = ctl
            .apply_configured_base(&m.id, m.base, now_ms)
            .with_context(|| format!("applying the configured base plan of modem {}", m.id))?;
        match outcome {
            ConfiguredBase::InForce => {
                debug!(modem = m.id, "base plan: the configured one is in force");
            }
            ConfiguredBase::Applied { previous } => info!(
                modem = m.id,
                configured = ?m.base,
                previous = ?previous,
                "base plan changed in the configuration since the last run: the configured \
                 plan wins and replaces the stored one"
            ),
            ConfiguredBase::StoredKept { stored } => info!(
                modem = m.id,
                stored = ?stored,
                configured = ?m.base,
                "base plan unchanged in the configuration since the last run: the stored plan \
                 (set through the API or a dropped file) wins; edit the configuration's plan \
                 to replace it"
            ),
        }
    }
    for modem in ctl.unbound() {
        warn!(
            modem,
            "modem in the store but not in the configuration: not enforced"
        );
    }
    for (modem, target, error) in ctl.unenforced() {
        warn!(
            modem,
            ?target,
            error,
            "enforcement failed; retried on every tick"
        );
    }
    info!(
        modems = plan.modems.len(),
        restored_changes = changes.len(),
        store = %plan.store.display(),
        "controller open"
    );
    Ok((ctl, shared))
}

/// Reads kernel events (malformed packets, ICMP answers sent, ...) into `tracing`.
pub async fn log_events(rb: aya::maps::RingBuf<aya::maps::MapData>) -> anyhow::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for its whole life.
    let mut fd = unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the event ring buffer: {e}"))?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let rb = guard.get_inner_mut();
        while let Some(item) = rb.next() {
            if item.len() < std::mem::size_of::<abi::ShaperEvent>() {
                warn!(len = item.len(), "short kernel event");
                continue;
            }
            // SAFETY: the kernel wrote a struct shaper_event (checked against BTF by tests);
            // read_unaligned copes with the ring buffer's 8-byte alignment either way.
            let ev: abi::ShaperEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            match ev.kind {
                abi::EV_MALFORMED => warn!(
                    ifindex = ev.ifindex,
                    parse_error = ev.detail,
                    "malformed packet (rate-limited report)"
                ),
                abi::EV_UNSUPPORTED => info!(
                    ifindex = ev.ifindex,
                    "packet with too many VLAN tags or IPv6 extension headers"
                ),
                abi::EV_ICMP_SENT => debug!(
                    ifindex = ev.ifindex,
                    mtu = ev.detail,
                    "answered an oversize packet with ICMP"
                ),
                k => warn!(kind = k, "unknown kernel event"),
            }
        }
        guard.clear_ready();
    }
}
