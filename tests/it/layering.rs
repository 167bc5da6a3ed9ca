//! The architecture, checked: every module of the crate uses only modules
//! below it, so that following a request through the code never climbs back
//! up. Uses through the crate root's re-exports count as uses of the module
//! that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each module and the tier it sits in; a module may use lower tiers only.
/// Integrations (axum's extractor, tonic, Redis, documents) sit on top, and
/// nothing else may use them.
const TIERS: &[(&str, u8)] = &[
    ("error", 0),
    ("parse", 1),
    // Timekeeping off tokio's wheel, for connections and rate limits.
    ("alarm", 1),
    ("rules", 2),
    // The audit output is the sink every part reports to.
    ("audit", 3),
    ("limit", 4),
    ("ban", 4),
    ("connection", 4),
    ("layer", 5),
    // The TLS gate judges with the layer's rules, and the serve loop
    // plugs it in.
    ("tls", 6),
    ("server", 7),
    ("extract", 8),
    ("grpc", 8),
    ("redis", 8),
    ("config", 8),
    ("crowdsec", 8),
];

fn tier(module: &str) -> u8 {
    TIERS
        .iter()
        .find(|(name, _)| *name == module)
        .unwrap_or_else(|| panic!("module `{module}` has no tier in tests/it/layering.rs"))
        .1
}

/// The root's `pub use` lines: re-exported name to the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut statement = String::new();
    for line in lib.lines() {
        let line = line.trim();
        if statement.is_empty() && !line.starts_with("pub use ") {
            continue;
        }
        statement.push_str(line);
        statement.push(' ');
        if !line.ends_with(';') {
            continue;
        }
        let body = statement
            .trim_start_matches("pub use ")
            .trim_end()
            .trim_end_matches(';');
        let module = body.split("::").next().unwrap().to_owned();
        for word in body.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if word.starts_with(|c: char| c.is_ascii_uppercase()) {
                names.insert(word.to_owned(), module.clone());
            }
        }
        statement.clear();
    }
    names
}

/// Every `crate::x` a file names in code (comments stripped), as modules.
fn uses(source: &str, reexported: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group
                    .split('}')
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap())
                    .collect()
            } else {
                vec![
                    rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap(),
                ]
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                let module = if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    reexported
                        .get(name)
                        .unwrap_or_else(|| panic!("`crate::{name}` is not re-exported"))
                        .clone()
                } else {
                    name.to_owned()
                };
                found.insert(module);
            }
        }
    }
    found
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn modules_use_only_the_tiers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexported = reexports(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let own = tier(module);
        for used in uses(&fs::read_to_string(&file).unwrap(), &reexported) {
            checked += 1;
            if used != module && tier(&used) >= own {
                wrong.push(format!("{} uses {used}", relative.display()));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} uses found: the scan is broken"
    );
    assert!(wrong.is_empty(), "uses against the layering: {wrong:#?}");
}

/// The scan itself: it sees a use through a re-export and a grouped import.
#[test]
fn the_scan_sees_every_form_of_use() {
    let reexported = reexports("pub use layer::{NoResponse, NoResponseLayer};\n");
    let found = uses(
        "use crate::{NoResponseLayer, rules::X};\nlet x = crate::audit::f(); // crate::server\n",
        &reexported,
    );
    let expected: BTreeSet<String> = ["layer", "rules", "audit"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(found, expected);
}
