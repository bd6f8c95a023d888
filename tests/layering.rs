//! The layers of `docs/ARCHITECTURE.md` §2, checked on the code's own imports: a module may
//! name (`crate::x`) only modules of its own layer or below. Each upward import that exists
//! today is listed in [`KNOWN`] with the change that removes it; any other one fails the test,
//! and so does a listed one that is gone (the list only shrinks). `proto/` imports nothing of
//! the crate but `proto/` itself, except what [`KNOWN`] lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → layer (docs/ARCHITECTURE.md §2; 7 is the composition: wiring and commands).
const LAYERS: &[(&str, u8)] = &[
    ("clock", 1),
    ("tokens", 1),
    ("policy", 1),
    ("abi", 1),
    ("malloc", 1),
    ("client", 1),
    ("lab", 1),
    ("proto", 2),
    ("model", 2),
    ("dataplane", 3),
    ("store", 3),
    ("provision", 4),
    ("controller", 5),
    ("nsm", 5),
    ("modem", 5),
    ("sessions", 5),
    ("api", 6),
    ("notify", 6),
    ("tftp", 6),
    ("metrics", 6),
    ("config", 7),
    ("gateway", 7),
    ("demo", 7),
    ("demo_modem", 7),
];

/// Upward imports that exist today: (importing file, imported module, what removes it).
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "store/mod.rs",
        "provision",
        "the Store trait speaks provisioning types: it moves under provision/ (dependency inversion)",
    ),
    ("store/sqlite.rs", "provision", "as store/mod.rs"),
    (
        "store/nsm.rs",
        "nsm",
        "issue 12 item 2: the NSM store goes next to nsm/",
    ),
    (
        "modem/pipeline.rs",
        "tftp",
        "the file Handler trait moves down beside the pipeline",
    ),
    (
        "modem/emulator.rs",
        "tftp",
        "the emulator is a lab tool: it moves to lab/",
    ),
    ("modem/pipeline/tests.rs", "tftp", "as modem/pipeline.rs"),
    (
        "nsm/run.rs",
        "gateway",
        "issue 12 item 1: wiring moves to runtime/",
    ),
    (
        "nsm/run.rs",
        "config",
        "issue 12 item 1: wiring moves to runtime/",
    ),
    (
        "nsm/config.rs",
        "config",
        "issue 12 item 3: shared config types move to the ground floor",
    ),
    ("nsm/model.rs", "config", "issue 12 item 3"),
    ("notify/config.rs", "config", "issue 12 item 3"),
];

fn layer(m: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::name` paths in code (comments and doc comments excluded).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found: BTreeMap<(String, String), u8> = BTreeMap::new();
    let mut unknown_modules = BTreeSet::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module = rel.split(['/', '.']).next().unwrap().to_owned();
        let Some(own) = layer(&module) else {
            unknown_modules.insert(module);
            continue;
        };
        for imported in imports(&std::fs::read_to_string(f).unwrap()) {
            if imported == module {
                continue;
            }
            let Some(theirs) = layer(&imported) else {
                unknown_modules.insert(imported);
                continue;
            };
            let upward = theirs > own;
            let proto_impure = module == "proto";
            if upward || proto_impure {
                found.insert((rel.clone(), imported), theirs);
            }
        }
    }
    assert!(
        unknown_modules.is_empty(),
        "modules without a layer (add them to LAYERS and docs/ARCHITECTURE.md): {unknown_modules:?}"
    );
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(f, m, _)| ((*f).to_owned(), (*m).to_owned()))
        .collect();
    let new: Vec<String> = found
        .keys()
        .filter(|k| !known.contains(*k))
        .map(|(f, m)| {
            format!(
                "{f} imports crate::{m} (layer {})",
                found[&(f.clone(), m.clone())]
            )
        })
        .collect();
    assert!(
        new.is_empty(),
        "imports running up a layer (docs/ARCHITECTURE.md §2):\n  {}",
        new.join("\n  ")
    );
    let gone: Vec<String> = known
        .iter()
        .filter(|k| !found.contains_key(*k))
        .map(|(f, m)| format!("{f} → {m}"))
        .collect();
    assert!(
        gone.is_empty(),
        "these upward imports are gone: remove them from KNOWN so they cannot come back:\n  {}",
        gone.join("\n  ")
    );
}

#[test]
fn nothing_imports_the_http_adapter() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("api")) && !f.ends_with("main.rs"))
        .filter(|f| imports(&std::fs::read_to_string(f).unwrap()).contains("api"))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "api/ is an adapter; imported by {offenders:?}"
    );
}

#[test]
fn the_import_scan_sees_what_it_must() {
    let got =
        imports("use crate::api::Clock;\n// crate::nsm in a comment\nlet x = crate::store::X;");
    assert_eq!(got, BTreeSet::from(["api".to_owned(), "store".to_owned()]));
}
