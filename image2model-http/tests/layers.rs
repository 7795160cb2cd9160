//! The crates' modules form stacks: no top-level module of core, store or
//! http imports (through `crate::…`) a module that imports it back, directly
//! or round a longer loop. Read from the sources, as a newcomer would draw
//! them; doc comments and `#[cfg(test)]` code do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level module a source file belongs to (`None` for the crate
/// root, `lib.rs` or `main.rs`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules named by `crate::…` paths in `code`, outside
/// comments and before the first `#[cfg(test)]`.
fn imports(code: &str) -> BTreeSet<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `image2model_crate::`, not `crate::`
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Who imports whom among a crate's top-level modules.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(src) {
        let Some(module) = top_module(src, &file) else {
            continue;
        };
        let code = std::fs::read_to_string(&file).unwrap();
        let targets = imports(&code)
            .into_iter()
            .filter(|t| *t != module)
            .collect::<BTreeSet<_>>();
        g.entry(module).or_default().extend(targets);
    }
    g
}

/// A loop in `g`, if there is one, as the modules along it.
fn find_loop(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(at.to_owned(), Mark::Open);
        path.push(at.to_owned());
        for next in g.get(at).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|m| m == next).unwrap();
                    let mut found = path[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(found) = visit(g, next, marks, path) {
                        return Some(found);
                    }
                }
            }
        }
        path.pop();
        marks.insert(at.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for start in g.keys() {
        if !marks.contains_key(start)
            && let Some(found) = visit(g, start, &mut marks, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn no_crate_has_an_import_loop_between_its_top_level_modules() {
    for name in ["image2model-core", "image2model-store", "image2model-http"] {
        let g = graph(&crate_src(name));
        assert!(g.len() > 3, "{name}: only {} modules read", g.len());
        if let Some(found) = find_loop(&g) {
            panic!("{name}: import loop {}", found.join(" -> "));
        }
    }
}

#[test]
fn the_loop_finder_finds_a_loop_and_the_reader_skips_comments() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_loop(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    let found = find_loop(&g).expect("a -> b -> c -> a");
    assert_eq!(found.first(), found.last());
    assert_eq!(found.len(), 4);

    let code = "use crate::state::AppState;\n/// See [`crate::app::App`].\n\
                let x = image2model_crate::y; // crate::error\n\
                #[cfg(test)]\nuse crate::testing;";
    assert_eq!(imports(code), BTreeSet::from(["state".to_owned()]));
}
