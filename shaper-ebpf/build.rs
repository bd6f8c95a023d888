//! Compiles the C eBPF programs with clang-19 (Rust eBPF needs nightly and bpf-linker, which
//! our machines lack: see docs/ARCHITECTURE.md §4) and leaves the objects in OUT_DIR for
//! `src/lib.rs`.

use std::{env, path::PathBuf, process::Command};

/// (source, output object, extra defines)
const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("shaper.bpf.c", "shaper.bpf.o", &[]),
    ("shaper.bpf.c", "shaper_test.bpf.o", &["-DSHAPER_TEST"]),
    (
        "shaper.bpf.c",
        "shaper_bench_spread.bpf.o",
        &["-DSHAPER_BENCH_SPREAD"],
    ),
    ("floor.bpf.c", "floor.bpf.o", &[]),
];

fn clang() -> String {
    if let Ok(c) = env::var("SHAPER_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c).arg("--version").output().is_ok() {
            return c.to_string();
        }
    }
    panic!(
        "clang-19 not found: the eBPF programs are C compiled by clang-19 \
         (apt-get install clang-19 libbpf-dev), or set SHAPER_CLANG"
    );
}

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = clang();
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    for sub in ["", "include", "lib"] {
        let d = dir.join(sub);
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("c" | "h")) {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=SHAPER_CLANG");
    for (src, obj, defines) in OBJECTS {
        let status = Command::new(&clang)
            .args([
                "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Wextra", "-Werror",
            ])
            .args(["-Wno-unused-parameter", "-Wno-missing-field-initializers"])
            .arg(format!("-I{}", dir.join("include").display()))
            .arg(format!("-I{}", dir.join("lib").display()))
            .arg(format!("-I/usr/include/{arch}"))
            .args(*defines)
            .arg("-c")
            .arg(dir.join(src))
            .arg("-o")
            .arg(out.join(obj))
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed to compile {src} -> {obj}");
    }
}
