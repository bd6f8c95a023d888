//! The `shaper` command.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{info, warn};

use shaper::modem::pipeline::ConfigDirHandler;
use shaper::modem::watch::Watcher;
use shaper::tftp::{ServerConfig, TftpServer};
use shaper::{api, config, gateway};

/// How long in-flight API requests get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Where the client commands find the API without `--api` or `SHAPER_API`.
const DEFAULT_API: &str = "http://127.0.0.1:8080";

#[derive(Parser)]
#[command(
    name = "shaper",
    version,
    about = "Dynamic QoS for broadband access networks: eBPF/XDP data plane and its controller"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration file and exit (non-zero, naming the offending key, if invalid).
    Check {
        #[arg(long, short, default_value = "configs/shaper.toml")]
        config: PathBuf,
    },
    /// Load the data plane, apply the configuration, attach to the interfaces and keep running.
    /// Enforcement stays in place after exit (pinned); `--detach-on-exit` removes it.
    Run {
        #[arg(long, short, default_value = "configs/shaper.toml")]
        config: PathBuf,
        /// Detach the programs and remove the pins when stopping.
        #[arg(long)]
        detach_on_exit: bool,
        /// Enter this named network namespace (`ip netns`) first. Prefer this to
        /// `ip netns exec`, which also gives the process a private mount namespace: pins made
        /// there die with the process, and enforcement with them.
        #[arg(long)]
        netns: Option<String>,
    },
    /// API token helpers.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Submit a QoS boost (or any grant) for a modem through the API (POST /v1/events).
    ///
    /// Prints the event id and whether the request was a duplicate of an earlier one with the
    /// same idempotency key. RATE is bit/s with an optional k/M/G suffix ("50M", "1.5G"); TIME is
    /// RFC 3339 ("2026-11-26T18:00:00Z") or relative to now ("+30m", "+2h", "+1d", "now").
    Provision {
        #[command(flatten)]
        api: ApiArgs,
        /// The modem to grant the QoS to.
        #[arg(long)]
        modem: String,
        /// Maximum downstream rate (network → modem).
        #[arg(long, value_name = "RATE")]
        max_down: Option<config::Rate>,
        /// Maximum upstream rate (modem → network).
        #[arg(long, value_name = "RATE")]
        max_up: Option<config::Rate>,
        /// Committed (reserved) downstream rate.
        #[arg(long, value_name = "RATE")]
        committed_down: Option<config::Rate>,
        /// Committed (reserved) upstream rate.
        #[arg(long, value_name = "RATE")]
        committed_up: Option<config::Rate>,
        /// Token-bucket depth in bytes.
        #[arg(long, value_name = "BYTES")]
        burst: Option<u32>,
        /// Traffic priority, 0..=7 (higher is better).
        #[arg(long, value_name = "N")]
        priority: Option<u8>,
        /// MTU in bytes.
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        #[command(flatten)]
        targets: TargetArgs,
        /// When the grant starts (default: now).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        start: Option<u64>,
        /// When the grant ends (default: never).
        #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "for_")]
        stop: Option<u64>,
        /// How long the grant lasts from its start ("90s", "30m", "2h", "1d").
        #[arg(long = "for", id = "for_", value_name = "DURATION", value_parser = parse_duration_ms)]
        for_: Option<u64>,
        /// Idempotency key: a retry with the same key and request returns the same event. Give
        /// retried requests absolute times: "+30m" is resolved anew at each invocation.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// List, show, modify or cancel provisioning events through the API.
    Events {
        #[command(subcommand)]
        cmd: EventsCmd,
    },
    /// Show a modem's base plan and effective QoS through the API (GET /v1/modems/{id}).
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// The modem.
        #[arg(long)]
        modem: String,
    },
    /// Change a modem's base plan, or show who changed it, through the API.
    Modems {
        #[command(subcommand)]
        cmd: ModemsCmd,
    },
    /// DOCSIS modem configuration files: decode to text, encode from text with MICs and an
    /// optional signature, verify, generate signing keys (docs/MODEM-CONFIG.md).
    ModemConfig {
        #[command(subcommand)]
        cmd: shaper::modem::cli::ModemConfigCmd,
    },
    /// Emulate a modem's reboot triggers: accept an authenticated FORCERENEW (UDP 68) and an
    /// SNMP SET of docsDevResetNow (UDP 161); print one JSON line per accepted trigger.
    ModemEmulator(shaper::modem::emulator::EmulatorArgs),
    /// The lab demo: network namespaces sub — gw — net joined by veth pairs, the data plane on
    /// gw, real traffic with iperf3. Needs root, iperf3, iproute2 and ping.
    Demo,
}

/// How to reach the API, shared by the client commands.
#[derive(clap::Args, Clone, Debug)]
struct ApiArgs {
    /// The API base URL (http://host:port). Default: the SHAPER_API environment variable, else
    /// http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// A file holding the raw bearer token (whitespace around it is ignored). Without it the
    /// token is taken from the SHAPER_TOKEN environment variable.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Print the API's raw JSON instead of the human-readable form.
    #[arg(long)]
    json: bool,
}

/// Service targets of a QoS level: stored, carried into the modem's configuration file and
/// reported against what the metrics measure (not enforced by the data plane).
#[derive(clap::Args, Clone, Debug, Default)]
struct TargetArgs {
    /// Target network availability, parts per million of time (999900 = 99.99 %).
    #[arg(long, value_name = "PPM")]
    target_availability: Option<u32>,
    /// Target errored-packet ratio (error performance), parts per million.
    #[arg(long, value_name = "PPM")]
    target_error_rate: Option<u32>,
    /// Target loss ratio under congestion, parts per million.
    #[arg(long, value_name = "PPM")]
    target_loss: Option<u32>,
    /// Target connection setup time, milliseconds.
    #[arg(long, value_name = "MS")]
    target_setup_time: Option<u32>,
    /// Target fault detection and correction time, milliseconds.
    #[arg(long, value_name = "MS")]
    target_repair_time: Option<u32>,
}

impl TargetArgs {
    /// Adds `"targets"` to a QoS body when any target is given.
    fn add_to(&self, qos: &mut serde_json::Map<String, serde_json::Value>) {
        let targets = qos_body(&[
            ("availability_ppm", self.target_availability.map(u64::from)),
            ("error_rate_ppm", self.target_error_rate.map(u64::from)),
            ("loss_ppm", self.target_loss.map(u64::from)),
            ("setup_time_ms", self.target_setup_time.map(u64::from)),
            ("repair_time_ms", self.target_repair_time.map(u64::from)),
        ]);
        if !targets.is_empty() {
            qos.insert("targets".into(), serde_json::Value::Object(targets));
        }
    }
}

#[derive(Subcommand)]
enum EventsCmd {
    /// List events (GET /v1/events), optionally filtered.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this modem's events.
        #[arg(long)]
        modem: Option<String>,
        /// Only events in this state.
        #[arg(long, value_parser = ["pending", "active", "completed", "cancelled"])]
        state: Option<String>,
    },
    /// Show one event (GET /v1/events/{id}).
    Show {
        #[command(flatten)]
        api: ApiArgs,
        /// The event id.
        id: u64,
    },
    /// Cancel an event (DELETE /v1/events/{id}); an active grant is reverted at once.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The event id.
        id: u64,
    },
    /// Change a pending event's start or stop (PATCH /v1/events/{id}). TIME is RFC 3339 or
    /// relative to now ("+30m"); "none" clears it (immediate start, no stop).
    Modify {
        #[command(flatten)]
        api: ApiArgs,
        /// The event id.
        id: u64,
        /// The new start.
        #[arg(long, value_name = "TIME", value_parser = parse_opt_time)]
        start: Option<MaybeTime>,
        /// The new stop.
        #[arg(long, value_name = "TIME", value_parser = parse_opt_time)]
        stop: Option<MaybeTime>,
    },
}

#[derive(Subcommand)]
enum ModemsCmd {
    /// Replace a modem's base plan (PUT /v1/modems/{id}/base): the QoS it has when no grant
    /// is active. Needs an admin, CSR or automation token.
    ///
    /// The options make the whole new plan: an option left out is unset, not kept from the
    /// old plan. Active grants stay layered over the new plan. The change is stored (with who
    /// made it: `shaper modems audit ID`) and enforced before the command returns, and it
    /// survives restarts: the configuration file's [[modem]] plan replaces it only once that
    /// plan is edited. RATE is bit/s with an optional k/M/G suffix ("50M", "1.5G").
    /// Prints the modem afterwards, as `shaper status` does.
    ///
    /// Example: shaper modems set-base cm-0001 --max-down 200M --max-up 20M --committed-down 10M
    #[command(name = "set-base")]
    SetBase {
        #[command(flatten)]
        api: ApiArgs,
        /// The modem.
        id: String,
        /// Maximum downstream rate (network → modem).
        #[arg(long, value_name = "RATE")]
        max_down: config::Rate,
        /// Maximum upstream rate (modem → network).
        #[arg(long, value_name = "RATE")]
        max_up: config::Rate,
        /// Committed (reserved) downstream rate, at most --max-down.
        #[arg(long, value_name = "RATE")]
        committed_down: Option<config::Rate>,
        /// Committed (reserved) upstream rate, at most --max-up.
        #[arg(long, value_name = "RATE")]
        committed_up: Option<config::Rate>,
        /// Token-bucket depth in bytes (at least one MTU).
        #[arg(long, value_name = "BYTES")]
        burst: Option<u32>,
        /// Traffic priority, 0..=7 (higher is better).
        #[arg(long, value_name = "N")]
        priority: Option<u8>,
        /// MTU in bytes.
        #[arg(long, value_name = "N")]
        mtu: Option<u16>,
        /// The plan's service targets (left out: none, like every other option).
        #[command(flatten)]
        targets: TargetArgs,
    },
    /// Show who changed a modem's base plan, when, from what to what, oldest first
    /// (GET /v1/modems/{id}/audit). Needs an admin or CSR token.
    Audit {
        #[command(flatten)]
        api: ApiArgs,
        /// The modem.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print the SHA-256 of TOKEN (64 hex digits): the `sha256` of a tokens-file entry.
    Hash { token: String },
}

fn read_config(path: &PathBuf) -> anyhow::Result<config::Validated> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::Path::new("."));
    let v =
        config::parse_in(&text, base).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Every file the run will read is checked now, before anything is applied.
    if let Some(plan) = &v.controller {
        plan.load_tokens()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(v)
}

fn main() -> ExitCode {
    // Before anything allocates: a fixed mmap threshold keeps the engine's freed tables from
    // staying resident (shaper::malloc).
    shaper::malloc::fix_mmap_threshold();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Check { config } => read_config(&config).map(|v| {
            let controller = v.controller.as_ref().map_or(String::new(), |p| {
                format!(
                    "; controller on {} with {} modems",
                    p.listen,
                    p.modems.len()
                )
            });
            println!(
                "{}: ok ({} interfaces, {} classes, {} subscribers, {} rules{controller})",
                config.display(),
                v.config.interfaces.len(),
                v.classes.len(),
                v.subscribers.len(),
                v.rules.len()
            );
        }),
        Cmd::Token {
            cmd: TokenCmd::Hash { token },
        } => {
            println!("{}", api::hash_token(&token));
            Ok(())
        }
        Cmd::Run {
            config,
            detach_on_exit,
            netns,
        } => read_config(&config).and_then(|v| {
            if let Some(ns) = netns {
                enter_netns(&ns)?;
            }
            run(&v, detach_on_exit)
        }),
        Cmd::Demo => shaper::demo::run(),
        Cmd::ModemConfig { cmd } => shaper::modem::cli::run(cmd),
        Cmd::ModemEmulator(args) => shaper::modem::emulator::run_cli(&args),
        Cmd::Provision {
            api,
            modem,
            max_down,
            max_up,
            committed_down,
            committed_up,
            burst,
            priority,
            mtu,
            targets,
            start,
            stop,
            for_,
            idempotency_key,
        } => {
            let stop = match (stop, for_) {
                (Some(s), _) => Some(s),
                (None, Some(d)) => Some(start.unwrap_or_else(api::system_now_ms).saturating_add(d)),
                (None, None) => None,
            };
            let mut qos = qos_body(&[
                ("max_down_bps", max_down.map(|r| r.0)),
                ("max_up_bps", max_up.map(|r| r.0)),
                ("committed_down_bps", committed_down.map(|r| r.0)),
                ("committed_up_bps", committed_up.map(|r| r.0)),
                ("burst_bytes", burst.map(u64::from)),
                ("priority", priority.map(u64::from)),
                ("mtu", mtu.map(u64::from)),
            ]);
            targets.add_to(&mut qos);
            let body = serde_json::json!({
                "modem": modem, "qos": qos, "start_ms": start, "stop_ms": stop,
            });
            let headers: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| ("Idempotency-Key", k))
                .into_iter()
                .collect();
            remote(&api, "POST", "/v1/events", Some(&body), &headers, |v| {
                let id = v.get("id").and_then(serde_json::Value::as_u64).unwrap_or(0);
                if v.get("duplicate").and_then(serde_json::Value::as_bool) == Some(true) {
                    println!("event {id} (duplicate: an earlier request with this key)");
                } else {
                    println!("event {id} created");
                }
            })
        }
        Cmd::Events { cmd } => match cmd {
            EventsCmd::List { api, modem, state } => {
                let mut query = Vec::new();
                if let Some(m) = modem {
                    query.push(format!("modem={}", encode(&m)));
                }
                if let Some(s) = state {
                    query.push(format!("state={s}"));
                }
                let path = if query.is_empty() {
                    "/v1/events".to_owned()
                } else {
                    format!("/v1/events?{}", query.join("&"))
                };
                remote(&api, "GET", &path, None, &[], print_event_table)
            }
            EventsCmd::Show { api, id } => remote(
                &api,
                "GET",
                &format!("/v1/events/{id}"),
                None,
                &[],
                print_event,
            ),
            EventsCmd::Cancel { api, id } => remote(
                &api,
                "DELETE",
                &format!("/v1/events/{id}"),
                None,
                &[],
                print_event,
            ),
            EventsCmd::Modify {
                api,
                id,
                start,
                stop,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(MaybeTime(s)) = start {
                    body.insert("start_ms".into(), s.into());
                }
                if let Some(MaybeTime(s)) = stop {
                    body.insert("stop_ms".into(), s.into());
                }
                if body.is_empty() {
                    Err(anyhow::anyhow!(
                        "nothing to modify: give --start and/or --stop"
                    ))
                } else {
                    let body = serde_json::Value::Object(body);
                    remote(
                        &api,
                        "PATCH",
                        &format!("/v1/events/{id}"),
                        Some(&body),
                        &[],
                        print_event,
                    )
                }
            }
        },
        Cmd::Modems { cmd } => match cmd {
            ModemsCmd::SetBase {
                api,
                id,
                max_down,
                max_up,
                committed_down,
                committed_up,
                burst,
                priority,
                mtu,
                targets,
            } => {
                let mut body = qos_body(&[
                    ("max_down_bps", Some(max_down.0)),
                    ("max_up_bps", Some(max_up.0)),
                    ("committed_down_bps", committed_down.map(|r| r.0)),
                    ("committed_up_bps", committed_up.map(|r| r.0)),
                    ("burst_bytes", burst.map(u64::from)),
                    ("priority", priority.map(u64::from)),
                    ("mtu", mtu.map(u64::from)),
                ]);
                targets.add_to(&mut body);
                remote(
                    &api,
                    "PUT",
                    &format!("/v1/modems/{}/base", encode(&id)),
                    Some(&serde_json::Value::Object(body)),
                    &[],
                    print_modem,
                )
            }
            ModemsCmd::Audit { api, id } => remote(
                &api,
                "GET",
                &format!("/v1/modems/{}/audit", encode(&id)),
                None,
                &[],
                print_modem_audit,
            ),
        },
        Cmd::Status { api, modem } => remote(
            &api,
            "GET",
            &format!("/v1/modems/{}", encode(&modem)),
            None,
            &[],
            print_modem,
        ),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Moves this (still single-threaded) process into a named network namespace; threads created
/// afterwards, the runtime's workers among them, inherit it.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path)
        .with_context(|| format!("network namespace {name:?} ({path})"))?;
    // SAFETY: setns(2) on an open namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!(
            "entering network namespace {name:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn run(v: &config::Validated, detach_on_exit: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut gw = gateway::apply(v)?;
        // The HTB trees go to the network service manager when it gives allocations classes.
        let trees = match v.nsm.as_ref().filter(|n| n.htb_minors.is_some()) {
            Some(_) => std::mem::take(&mut gw.trees)
                .into_iter()
                .filter_map(|t| {
                    let role = v
                        .config
                        .interfaces
                        .iter()
                        .find(|i| i.name == t.ifname())?
                        .role;
                    let dir = match role {
                        shaper::dataplane::Role::Subscriber => shaper::nsm::model::Dir::Down,
                        shaper::dataplane::Role::Upstream => shaper::nsm::model::Dir::Up,
                    };
                    Some((dir, t))
                })
                .collect(),
            None => Vec::new(),
        };
        if let Some(rb) = gw.lock().take_events() {
            tokio::spawn(async move {
                if let Err(e) = gateway::log_events(rb).await {
                    tracing::error!("event reader stopped: {e:#}");
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = match &v.controller {
            Some(plan) => Some(
                start_controller(plan, v.nsm.as_ref(), v.radius.as_ref(), &gw, trees, stop_rx)
                    .await?,
            ),
            None => None,
        };
        let server_failed = async {
            match tasks.as_mut() {
                Some(t) => (&mut t.server).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupted"),
            _ = term.recv() => info!("terminated"),
            res = server_failed => {
                let _ = stop_tx.send(true);
                match res {
                    Ok(Ok(())) => anyhow::bail!("the API server stopped"),
                    Ok(Err(e)) => return Err(e.context("API server")),
                    Err(e) => anyhow::bail!("API server task: {e}"),
                }
            }
        }
        let _ = stop_tx.send(true);
        if let Some(t) = tasks {
            match tokio::time::timeout(SHUTDOWN_GRACE, t.server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!("API server: {e:#}"),
                Ok(Err(e)) => warn!("API server task: {e}"),
                Err(_) => warn!("API requests still running after {SHUTDOWN_GRACE:?}; dropped"),
            }
            if let Some(r) = t.radius {
                r.shutdown().await;
            }
            if let Err(e) = t.ticker.await {
                warn!("tick task: {e}");
            }
            if let Some(tftp) = t.tftp {
                tftp.shutdown().await;
                info!("TFTP server stopped");
            }
            info!("controller stopped; its state is in the store");
        }
        if detach_on_exit {
            gw.lock().detach_all()?;
            info!("detached: enforcement removed");
        } else {
            info!("exiting; the data plane stays in force (pinned)");
        }
        Ok(())
    })
}

/// The controller's running parts.
struct ControllerTasks {
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    ticker: tokio::task::JoinHandle<()>,
    /// The TFTP server of the modem files, when `tftp_listen` is set.
    tftp: Option<shaper::tftp::ServerHandle>,
    /// The RADIUS CoA/Disconnect and accounting servers, when `[radius]` has listeners.
    radius: Option<shaper::notify::RadiusServerHandle>,
}

/// Opens the controller on the gateway's data plane, then serves its API on `plan.listen` and
/// fires its timed events until `stop` turns true.
async fn start_controller(
    plan: &config::ControllerPlan,
    nsm_plan: Option<&shaper::nsm::config::NsmPlan>,
    radius_plan: Option<&shaper::notify::config::RadiusPlan>,
    gw: &gateway::Gateway,
    trees: Vec<(shaper::nsm::model::Dir, shaper::dataplane::htb::HtbTree)>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ControllerTasks> {
    let path = &plan.tokens_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("controller.tokens_file: reading {}", path.display()))?;
    let tokens =
        config::parse_tokens(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if tokens.is_empty() {
        warn!(file = %path.display(), "no API tokens: every modem and event request gets 401");
    }
    let (ctl, pipeline) = gateway::open_controller(plan, gw, api::system_now_ms())?;
    let ctl = Arc::new(Mutex::new(ctl));
    let mut tftp = None;
    let mut files: Option<Arc<dyn shaper::tftp::Handler>> = None;
    let mut watcher = None;
    if let (Some(opts), Some(shared)) = (&plan.pipeline, &pipeline) {
        let handler: Arc<dyn shaper::tftp::Handler> =
            Arc::new(ConfigDirHandler::new(&opts.config_dir).with_context(|| {
                format!(
                    "controller.modem_pipeline.config_dir: {}",
                    opts.config_dir.display()
                )
            })?);
        if let Some(addr) = opts.tftp_listen {
            let server = TftpServer::bind(
                ServerConfig {
                    bind: addr,
                    ..ServerConfig::default()
                },
                handler.clone(),
            )
            .await
            .with_context(|| format!("controller.modem_pipeline.tftp_listen: {addr}"))?;
            info!(listen = %server.local_addr(), dir = %opts.config_dir.display(), "TFTP serving modem files");
            tftp = Some(server.spawn());
        }
        if let Some(dir) = &opts.incoming_dir {
            let keys = opts.load_keys()?;
            // Started once the API's state (and its change hook) exists, below.
            watcher = Some(Watcher::new(dir, keys.cmts, keys.trusted, shared.clone())?);
        }
        files = Some(handler);
    }
    let listener = tokio::net::TcpListener::bind(plan.listen)
        .await
        .with_context(|| format!("controller.listen: binding {}", plan.listen))?;
    info!(listen = %listener.local_addr()?, tokens = tokens.len(), "API serving");
    let metrics = shaper::metrics::Metrics::new(
        Some(gw.dataplane.clone()),
        Some(ctl.clone()),
        Arc::new(api::system_now_ms),
    )
    .context("metrics registry")?;
    let mut state = api::AppState::new(ctl.clone(), Arc::new(tokens))
        .with_metrics(Arc::new(metrics))
        .ticking_after_commit();
    let nsm = match nsm_plan {
        Some(np) => {
            let mut nsm =
                shaper::nsm::run::open(np, plan, gw, trees, Arc::new(api::system_now_ms))?;
            if np.bras {
                let rp = radius_plan.context("nsm.bras needs [[radius.bras]]")?;
                let store = np.store.clone().unwrap_or_else(|| plan.store.clone());
                shaper::notify::run::attach_bras(
                    &mut nsm,
                    rp,
                    ctl.clone(),
                    &store,
                    Arc::new(api::system_now_ms),
                )
                .await?;
            }
            {
                let c = ctl
                    .lock()
                    .map_err(|_| anyhow::anyhow!("controller lock poisoned"))?;
                let mut s = nsm
                    .service
                    .lock()
                    .map_err(|_| anyhow::anyhow!("nsm lock poisoned"))?;
                shaper::nsm::run::feed_provisioned(&c, &mut s, None);
            }
            // Committed rates of new provisioning grants are admitted against link capacity.
            ctl.lock()
                .map_err(|_| anyhow::anyhow!("controller lock poisoned"))?
                .set_admission(Box::new(shaper::nsm::run::NsmAdmission(
                    nsm.service.clone(),
                )));
            // Provisioning grants hold committed capacity the manager must not hand out again.
            let n = nsm.clone();
            let hook: api::ChangeHook = Arc::new(move |c, modems| match n.service.lock() {
                Ok(mut s) => shaper::nsm::run::feed_provisioned(c, &mut s, Some(modems)),
                Err(_) => tracing::error!("the nsm lock is poisoned; committed rates not fed"),
            });
            state = state.with_nsm(nsm.clone()).with_change_hook(hook);
            Some(nsm)
        }
        None => None,
    };
    let radius = match radius_plan {
        Some(rp) => {
            shaper::notify::run::start(
                rp,
                ctl.clone(),
                nsm.as_ref(),
                nsm_plan.and_then(|n| n.local_gateway.clone()),
                Arc::new(api::system_now_ms),
            )
            .await?
        }
        None => None,
    };
    if let (Some(shared), Some(files)) = (pipeline, files) {
        state = state.with_pipeline(shared, files);
    }
    let (clock, wake, hook) = (
        state.clock.clone(),
        state.wake.clone(),
        state.on_changes.clone(),
    );
    if let Some(w) = watcher {
        tokio::spawn(
            w.with_change_hook(hook.clone())
                .run(ctl.clone(), stop.clone()),
        );
    }
    let app = api::router(state);
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(api::edge::ProblemListener(listener), app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(anyhow::Error::from)
    });
    let ticker = tokio::spawn(api::ticker::tick_loop(ctl, clock, wake, stop, hook));
    Ok(ControllerTasks {
        server,
        ticker,
        tftp,
        radius,
    })
}

// ---- API client commands ----------------------------------------------------------------

/// Makes one API request and prints the answer: raw JSON with `--json`, else with `human`.
fn remote(
    args: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
    human: impl FnOnce(&serde_json::Value),
) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--token-file: reading {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("SHAPER_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned()),
    }
    .filter(|t| !t.is_empty());
    let url = args
        .api
        .clone()
        .or_else(|| std::env::var("SHAPER_API").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_API.to_owned());
    let client = shaper::client::Client::new(&url, token)?;
    let resp = client.request(method, path, body, headers)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resp.body)?);
    } else {
        human(&resp.body);
    }
    Ok(())
}

/// A QoS level's JSON object: the fields that are set.
fn qos_body(fields: &[(&str, Option<u64>)]) -> serde_json::Map<String, serde_json::Value> {
    fields
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v.into())))
        .collect()
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-26T18:00:00Z`).
fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration: a number with an s/m/h/d suffix ("90s", "30m", "2h", "1d"), in milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let err = || format!("{s:?} is not a duration (examples: 90s, 30m, 2h, 1d)");
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let mult: u64 = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(mult).ok_or_else(err)
}

/// A time: RFC 3339 (`2026-11-26T18:00:00Z`, `2026-11-26T19:00:00+01:00`, fractions of a
/// second allowed), `now`, or `+DURATION` from now; in milliseconds since the epoch.
fn parse_time(s: &str) -> Result<u64, String> {
    parse_time_at(s, api::system_now_ms())
}

/// A time or "none" (`events modify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MaybeTime(Option<u64>);

/// [`parse_time`], or `none` for "no time".
fn parse_opt_time(s: &str) -> Result<MaybeTime, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        Ok(MaybeTime(None))
    } else {
        parse_time(s).map(|t| MaybeTime(Some(t)))
    }
}

fn parse_time_at(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('+') {
        return Ok(now_ms.saturating_add(parse_duration_ms(rel)?));
    }
    let err = || {
        format!("{s:?} is not a time (RFC 3339 such as 2026-11-26T18:00:00Z, or +30m, +2h, now)")
    };
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(err)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        t.parse().map_err(|_| err())
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(err());
    }
    let mut rest = &s[19..];
    let mut frac_ms = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let mut ms = 0;
        for (i, c) in f.bytes().take(3).take(digits).enumerate() {
            ms += i64::from(c - b'0') * [100, 10, 1][i];
        }
        frac_ms = ms;
        rest = &f[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return Err(err());
            }
            let oh: i64 = rest[1..3].parse().map_err(|_| err())?;
            let om: i64 = rest[4..6].parse().map_err(|_| err())?;
            let o = oh * 3600 + om * 60;
            if ob[0] == b'-' { -o } else { o }
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    let ms = secs * 1000 + frac_ms;
    u64::try_from(ms).map_err(|_| err())
}

fn opt_time(v: &serde_json::Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), fmt_time)
}

fn rate(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(b) if b >= 1_000_000_000 && b % 1_000_000 == 0 => {
            format!("{}G", b as f64 / 1e9)
        }
        Some(b) if b >= 1_000_000 && b % 1000 == 0 => format!("{}M", b as f64 / 1e6),
        Some(b) if b >= 1000 && b % 1000 == 0 => format!("{}k", b / 1000),
        Some(b) => b.to_string(),
    }
}

/// A QoS level in one line: only the fields it sets.
fn qos_line(q: &serde_json::Value) -> String {
    let get = |k: &str| q.get(k).and_then(serde_json::Value::as_u64);
    let mut parts = Vec::new();
    for (label, key) in [
        ("down", "max_down_bps"),
        ("up", "max_up_bps"),
        ("committed-down", "committed_down_bps"),
        ("committed-up", "committed_up_bps"),
    ] {
        if let Some(v) = get(key) {
            parts.push(format!("{label} {}", rate(Some(v))));
        }
    }
    for (label, key) in [
        ("burst", "burst_bytes"),
        ("priority", "priority"),
        ("mtu", "mtu"),
    ] {
        if let Some(v) = get(key) {
            parts.push(format!("{label} {v}"));
        }
    }
    if parts.is_empty() {
        "(nothing set)".into()
    } else {
        parts.join(", ")
    }
}

fn source_text(s: &serde_json::Value) -> String {
    let kind = s
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    match (s.get("user"), s.get("trigger")) {
        (Some(u), _) => format!("{kind}:{}", u.as_str().unwrap_or("?")),
        (_, Some(t)) => format!("{kind}:{}", t.as_str().unwrap_or("?")),
        _ => kind.to_owned(),
    }
}

fn print_event(e: &serde_json::Value) {
    let s = |k: &str| e.get(k).and_then(serde_json::Value::as_str).unwrap_or("-");
    let n = |k: &str| e.get(k).cloned().unwrap_or_default();
    println!("event      {}", n("id"));
    println!("modem      {}", s("modem"));
    println!("state      {}", s("state"));
    println!("source     {}", source_text(&n("source")));
    println!("qos        {}", qos_line(&n("qos")));
    println!("start      {}", opt_time(&n("start_ms")));
    println!("stop       {}", opt_time(&n("stop_ms")));
    println!("start due  {}", opt_time(&n("start_due_ms")));
    println!("created    {}", opt_time(&n("created_ms")));
    if let Some(k) = e.get("idempotency_key").and_then(serde_json::Value::as_str) {
        println!("key        {k}");
    }
}

fn print_event_table(list: &serde_json::Value) {
    let events = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if events.is_empty() {
        println!("no events");
        return;
    }
    println!(
        "{:>6}  {:<12} {:<10} {:<20} {:<20}  QOS",
        "ID", "MODEM", "STATE", "START", "STOP"
    );
    for e in events {
        let s = |k: &str| e.get(k).and_then(serde_json::Value::as_str).unwrap_or("-");
        let n = |k: &str| e.get(k).cloned().unwrap_or_default();
        println!(
            "{:>6}  {:<12} {:<10} {:<20} {:<20}  {}",
            n("id"),
            s("modem"),
            s("state"),
            opt_time(&n("start_due_ms")),
            opt_time(&n("stop_ms")),
            qos_line(&n("qos"))
        );
    }
}

/// Who changed a base plan (`by` of an audit line) in one word.
fn base_source_text(by: &serde_json::Value) -> String {
    let s = |k: &str| by.get(k).and_then(serde_json::Value::as_str).unwrap_or("?");
    match s("kind") {
        "api" => format!("api:{}:{}", s("role"), s("subject")),
        "file" => format!("file:{}", s("name")),
        other => other.to_owned(),
    }
}

fn print_modem_audit(list: &serde_json::Value) {
    let lines = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if lines.is_empty() {
        println!("no base-plan changes");
        return;
    }
    for l in lines {
        let n = |k: &str| l.get(k).cloned().unwrap_or_default();
        println!("{}  {}", opt_time(&n("at_ms")), base_source_text(&n("by")));
        println!("  old  {}", qos_line(&n("old")));
        println!("  new  {}", qos_line(&n("new")));
    }
}

fn print_modem(m: &serde_json::Value) {
    let n = |k: &str| m.get(k).cloned().unwrap_or_default();
    println!(
        "modem      {}",
        m.get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
    );
    println!("base       {}", qos_line(&n("base")));
    println!("effective  {}", qos_line(&n("effective")));
    println!(
        "enforced   {}",
        if n("bound").as_bool() == Some(true) {
            "yes (bound to the data plane)"
        } else {
            "no (no data-plane binding)"
        }
    );
    let p = n("pipeline");
    if !p.is_null() {
        println!(
            "file       {} (version {})",
            p["file"].as_str().unwrap_or("-"),
            p["version"]
        );
        let r = &p["last_reboot"];
        if !r.is_null() {
            let what = if r["skipped"].as_bool() == Some(true) {
                "skipped".to_owned()
            } else if r["ok"].as_bool() == Some(true) {
                format!("ok after {} attempt(s)", r["attempts"])
            } else {
                format!(
                    "failed after {} attempt(s): {}",
                    r["attempts"],
                    r["last_error"].as_str().unwrap_or("-")
                )
            };
            println!(
                "reboot     {} {what}, version {}, at {}",
                r["method"].as_str().unwrap_or("-"),
                r["version"],
                opt_time(&r["at_ms"])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = parse_time_at("2026-11-26T18:00:00Z", 0).unwrap();
        assert_eq!(fmt_time(t), "2026-11-26T18:00:00Z");
        assert_eq!(t, 1_795_716_000_000);
        assert_eq!(
            parse_time_at("2026-11-26T19:00:00.5+01:00", 0).unwrap(),
            t + 500
        );
        assert_eq!(parse_time_at("1970-01-01T00:00:00Z", 0).unwrap(), 0);
        assert_eq!(parse_time_at("+30m", 1000).unwrap(), 1000 + 1_800_000);
        assert_eq!(parse_time_at("+2h", 0).unwrap(), 7_200_000);
        assert_eq!(parse_time_at("now", 42).unwrap(), 42);
        for bad in [
            "",
            "+",
            "+5",
            "+5x",
            "2026-13-01T00:00:00Z",
            "2026-11-26 18:00",
            "tomorrow",
        ] {
            assert!(parse_time_at(bad, 0).is_err(), "{bad}");
        }
        assert_eq!(parse_opt_time("none").unwrap(), MaybeTime(None));
    }

    #[test]
    fn cli_definition() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_and_encoding() {
        assert_eq!(rate(Some(50_000_000)), "50M");
        assert_eq!(rate(Some(1_500_000_000)), "1.5G");
        assert_eq!(rate(Some(64_000)), "64k");
        assert_eq!(rate(Some(1234)), "1234");
        assert_eq!(encode("cm 1/x"), "cm%201%2Fx");
        assert_eq!(
            serde_json::Value::Object(qos_body(&[("max_down_bps", Some(5)), ("mtu", None)])),
            serde_json::json!({ "max_down_bps": 5 })
        );
        let api = serde_json::json!({ "kind": "api", "role": "csr", "subject": "alice" });
        assert_eq!(base_source_text(&api), "api:csr:alice");
        assert_eq!(
            base_source_text(&serde_json::json!({ "kind": "config" })),
            "config"
        );
        let file = serde_json::json!({ "kind": "file", "name": "cm1.cfg" });
        assert_eq!(base_source_text(&file), "file:cm1.cfg");
    }
}
