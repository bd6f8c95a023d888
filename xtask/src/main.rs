//! `cargo xtask <task>`: the project's developer tasks. Each installs what a fresh Debian 12
//! machine lacks (Debian packages, as root) before it builds anything, so the README's two
//! commands work on a new machine.
//!
//! - `deps`  install the packages the build, tests, demo and benchmarks need (Debian packages,
//!   the Python venv `target/pyenv` of the API schema test, cargo-fuzz)
//! - `test`  deps, then every benchmark built and the fuzz crate type-checked (so that code
//!   no test runs still compiles), the whole test suite (unit, kernel, differential, lab, API
//!   schema), then each fuzz target for a bounded time
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
    // `python3 -m venv` for the API schema test's tools (ensurepip comes with it).
    ("python3-venv", "/usr/lib/python3.11/ensurepip/__init__.py"),
];

/// Everything `test` needs: the Debian packages, the Python tools, cargo-fuzz.
fn deps() -> anyhow::Result<()> {
    debian_packages()?;
    python_tools()?;
    cargo_fuzz()
}

/// The repository root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv `target/pyenv` with the pinned tools of `tests/schema/requirements.txt`
/// (Schemathesis, openapi-spec-validator). Idempotent: a stamp file holds the installed pins.
fn python_tools() -> anyhow::Result<()> {
    let venv = root().join("target/pyenv");
    let req = root().join("tests/schema/requirements.txt");
    let wanted =
        std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    eprintln!("xtask: installing the Python tools of {}", req.display());
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&req))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// The cargo-fuzz version `test` runs the fuzz targets with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz, from crates.io, when `cargo fuzz` is missing.
fn cargo_fuzz() -> anyhow::Result<()> {
    let have = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// The fuzz targets (`fuzz/fuzz_targets/`), each run for [`FUZZ_SECONDS`] by `test`.
const FUZZ_TARGETS: &[&str] = &[
    "docsis_tlv",
    "tftp_packet",
    "dhcp_packet",
    "snmp_packet",
    "radius_packet",
];
/// Seconds of fuzzing per target in `test`.
const FUZZ_SECONDS: u32 = 20;

/// Runs every fuzz target for a bounded time on nightly (libFuzzer needs it), starting from
/// its committed seeds (`fuzz/seeds/<target>`) and the corpus earlier runs grew
/// (`fuzz/corpus/<target>`, not committed). A crash, a failed assertion or a leak fails.
fn fuzz() -> anyhow::Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!(
            "the fuzz targets need the nightly toolchain (libFuzzer's sanitizer flags), and \
             `rustup run nightly rustc` fails: install it with `rustup toolchain install nightly`"
        );
    }
    let dir = root().join("fuzz");
    for target in FUZZ_TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {FUZZ_SECONDS} s");
        run(Command::new("cargo")
            .current_dir(&dir)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .args(["+nightly", "fuzz", "run", "-O", target])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={FUZZ_SECONDS}")))
        .with_context(|| {
            format!("fuzz target {target} failed (its input is in fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
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
            // The code's own rules first: formatting and every lint, warnings as errors.
            run(cargo().args(["fmt", "--all", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // Benchmarks (harness = false) and fuzz targets are not built by `cargo test`:
            // a change that breaks one would go unseen until someone runs it. Both are cheap
            // next to the suite (dev profile, the test build's dependencies; `check` only).
            run(cargo().args(["build", "--benches", "-p", "shaper-user"]))?;
            run(cargo()
                .arg("check")
                .arg("--manifest-path")
                .arg(root().join("fuzz").join("Cargo.toml")))?;
            // Lab tests measure rates with real traffic on a 2-core machine: one test at a time.
            run(cargo()
                .args(["test", "--workspace", "--"])
                .args(&args)
                .env("RUST_TEST_THREADS", "1"))?;
            fuzz()
        }
        Task::Demo => {
            debian_packages()?;
            run(cargo().args(["build", "--release", "-p", "shaper-user", "--bin", "shaper"]))?;
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            run(Command::new(root.join("target/release/shaper")).arg("demo"))
        }
        Task::Bench { name, args } => {
            debian_packages()?;
            let mut c = cargo();
            c.args(["bench", "-p", "shaper-user"]);
            if let Some(n) = name {
                c.args(["--bench", &n]);
            }
            run(c.arg("--").args(&args))
        }
    }
}
