//! The Python venv under `target/pyenv` with the pinned tools of `tests/schema/requirements.txt`
//! (Schemathesis, openapi-spec-validator). `cargo xtask deps` makes it; a test that needs it
//! calls [`ensure`], which makes it too when it is missing or its pins changed.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's `bin/` directory, with the pinned packages installed.
pub fn ensure() -> PathBuf {
    // Tests of one binary may run in parallel: one installs, the others wait.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = root().join("target/pyenv");
    let req = root().join("tests/schema/requirements.txt");
    let wanted = std::fs::read_to_string(&req).expect("tests/schema/requirements.txt");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return venv.join("bin");
    }
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&req));
    std::fs::write(&stamp, wanted).unwrap();
    venv.join("bin")
}
