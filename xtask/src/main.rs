//! `cargo xtask <task>`: the project's developer tasks. Each installs what a fresh Debian 12
//! machine lacks (Debian packages, as root) before it builds anything, so the README's two
//! commands work on a new machine.
//!
//! - `deps`  install the packages the build, tests, demo and benchmarks need
//! - `test`  deps, then the whole test suite (unit, kernel, differential, lab)
//! - `demo`  deps, then the lab demo (`shaper demo`)
//! - `bench` deps, then the benchmarks (`bench dataplane` for one)

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Debian packages the project needs (apt-get; needs root).
    Deps,
    /// Install what is missing, then run every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Install what is missing, then run the lab demo.
    Demo,
    /// Install what is missing, then run the benchmarks (all, or the one named).
    Bench {
        name: Option<String>,
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

/// Debian packages and a file each provides (to see whether it is installed).
const PACKAGES: &[(&str, &str)] = &[
    ("clang-19", "/usr/bin/clang-19"),
    ("libbpf-dev", "/usr/include/bpf/bpf_helpers.h"),
    ("linux-libc-dev", "/usr/include/linux/bpf.h"),
    ("iproute2", "/usr/sbin/tc"),
    ("iperf3", "/usr/bin/iperf3"),
    ("iputils-ping", "/usr/bin/ping"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("procps", "/usr/bin/pgrep"),
    ("prometheus", "/usr/bin/promtool"),
    ("freeradius-utils", "/usr/bin/radclient"),
    ("freeradius", "/usr/sbin/freeradius"),
    ("tshark", "/usr/bin/tshark"),
    ("curl", "/usr/bin/curl"),
    ("tftp-hpa", "/usr/bin/tftp"),
    ("atftp", "/usr/bin/atftp"),
    ("tftpd-hpa", "/usr/sbin/in.tftpd"),
    ("snmpd", "/usr/sbin/snmpd"),
    ("snmp", "/usr/bin/snmpset"),
    ("dhcpcd-base", "/usr/sbin/dhcpcd"),
];

fn deps() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !std::path::Path::new(file).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "missing Debian packages {missing:?}: run as root (apt-get install {})",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if missing.contains(&"tftpd-hpa") {
        // The package starts a daemon on :69 where the host has an init system; the TFTP
        // benchmark runs its own `in.tftpd` on another port, and :69 belongs to shaper.
        // Best effort: containers have neither systemd nor a started daemon.
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "tftpd-hpa"])
            .status();
        let _ = Command::new("service").args(["tftpd-hpa", "stop"]).status();
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Deps => deps(),
        Task::Test { args } => {
            deps()?;
            // Lab tests measure rates with real traffic on a 2-core machine: one test at a time.
            run(cargo()
                .args(["test", "--workspace", "--"])
                .args(&args)
                .env("RUST_TEST_THREADS", "1"))
        }
        Task::Demo => {
            deps()?;
            run(cargo().args(["build", "--release", "-p", "shaper-user", "--bin", "shaper"]))?;
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            run(Command::new(root.join("target/release/shaper")).arg("demo"))
        }
        Task::Bench { name, args } => {
            deps()?;
            let mut c = cargo();
            c.args(["bench", "-p", "shaper-user"]);
            if let Some(n) = name {
                c.args(["--bench", &n]);
            }
            run(c.arg("--").args(&args))
        }
    }
}
