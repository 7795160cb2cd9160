//! `.env.production.example` names every variable any crate reads: read
//! from the sources of core, store and http (not only the http crate's own
//! list), so a variable added anywhere without a line in the example fails
//! here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Functions through which the crates read a variable by its name.
const LOOKUPS: &[&str] = &[
    "get",
    "text",
    "secret",
    "parsed",
    "positive",
    "list",
    "switch",
    "var",
    "var_os",
    "parse_switch",
    "parse_number",
    "parse_positive",
    "usd",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // glTF attribute names (`COLOR_0`) are not variables.
            if path.file_name().is_some_and(|n| n != "gltf") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `NAME` of each `lookup("NAME"` in `code` (before its tests, with any
/// white space after the parenthesis), where NAME looks like a variable
/// (upper case, with an underscore).
fn read_names(code: &str, out: &mut BTreeSet<String>) {
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    for (at, _) in code.match_indices('(') {
        let func: String = code[..at]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Some(rest) = code[at + 1..].trim_start().strip_prefix('"') else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let is_variable = name.contains('_')
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && rest[name.len()..].starts_with('"');
        if LOOKUPS.contains(&func.as_str()) && is_variable {
            out.insert(name);
        }
    }
}

#[test]
fn the_example_file_names_every_variable_any_crate_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["image2model-core", "image2model-store", "image2model-http"] {
        sources(&root.join(krate).join("src"), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in &files {
        read_names(&std::fs::read_to_string(file).unwrap(), &mut names);
    }
    // The scan finds the variables it must (a broken scan passes nothing).
    for known in [
        "DATABASE_URL",
        "FAL_QUEUE_TIMEOUT_SECS",
        "AWS_SESSION_TOKEN",
        "WEBHOOK_POLL_MS",
    ] {
        assert!(names.contains(known), "the scan missed {known}: {names:?}");
    }
    let example = std::fs::read_to_string(root.join(".env.production.example")).unwrap();
    let listed: BTreeSet<&str> = example
        .lines()
        .filter_map(|l| l.trim_start_matches("# ").split_once('=').map(|(n, _)| n))
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        ".env.production.example does not name {missing:?} (read in the crates' sources)"
    );
}
