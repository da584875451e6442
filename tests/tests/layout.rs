//! The code's layout: no crate has modules that import each other in a loop (a newcomer
//! reads a crate's modules in one order; a loop means neither can be read first).
//!
//! What it reads, as text: `crate::` paths (in `use` groups too) in each file up to its
//! first `#[cfg(test)]`, whole-line comments left out. It does not follow `super::` paths
//! (none cross a top-level module today), and a `crate::` path in a comment after code
//! counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src` belongs to (`None` for the crate root and `bin/`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    if first == "bin" || first == "lib.rs" || first == "main.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The first path segment of each item in a `use crate::{…}` group (depth 0 only).
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut item, mut heads) = (0, String::new(), vec![]);
    for ch in group.chars().chain(std::iter::once(',')) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let head: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !head.is_empty() {
                    heads.push(head);
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(ch);
    }
    heads
}

/// The modules `text` (code, comments left out, tests left out) refers to as `crate::m`.
fn referenced(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            found.extend(group_heads(&group[..end]));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The loops (strongly connected components of two or more modules) of a module graph.
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one loop when each reaches the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if graph.contains_key(n) && seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = vec![];
    for m in graph.keys() {
        if out.iter().any(|l| l.contains(m)) || !reached[m].contains(m) {
            continue;
        }
        let l: Vec<String> = graph
            .keys()
            .filter(|n| reached[m].contains(*n) && reached[*n].contains(m))
            .cloned()
            .collect();
        out.push(l);
    }
    out
}

#[test]
fn the_loop_finder_finds_a_loop_and_reads_use_groups() {
    let text = "use crate::{a::X, b::{self, Y}, c};\nfn f() { crate::d::g() }\n// crate::e\n";
    let found: Vec<_> = referenced(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(loops(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_loop() {
    let crates = repo().join("crates");
    let mut problems = vec![];
    for entry in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = entry.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = vec![];
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(top) = top_module(&src, f) else {
                continue;
            };
            let refs = referenced(&std::fs::read_to_string(f).unwrap());
            let e = graph.entry(top.clone()).or_default();
            e.extend(refs.into_iter().filter(|r| *r != top));
        }
        for l in loops(&graph) {
            problems.push(format!(
                "{}: {}",
                entry.file_name().to_string_lossy(),
                l.join(" <-> ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "modules that import each other (move what both need into one of them or a third):\n{}",
        problems.join("\n")
    );
}
