//! The layer table of `lib.rs`'s module docs, held: every `crate::` path in a module's
//! non-test code must name a module of its own layer or a lower one, and no modules may
//! import each other in a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module -> layer` from the `| N | \`module\` | ... |` rows of lib.rs's docs.
fn table(lib: &str) -> BTreeMap<String, u32> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|row| {
            let mut cells = row.split('|').map(str::trim);
            let layer = cells.next()?.parse().ok()?;
            let module = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((module.to_string(), layer))
        })
        .collect()
}

/// The listed module a path belongs to: its longest listed prefix.
fn owner<'a>(table: &'a BTreeMap<String, u32>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|p| table.get_key_value(&p).map(|(k, _)| k.as_str()))
}

/// Code without tests and comments.
fn code(text: &str) -> String {
    let cut = text
        .find("#[cfg(test)]\nmod ")
        .or_else(|| text.find("#[cfg(test)]\npub mod "))
        .unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b` paths in `code`, braces of one level expanded (`crate::a::{b, c::D}`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let path: String = item
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                if !path.is_empty() {
                    out.push(path.trim_end_matches(':').to_string());
                }
            }
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(path.trim_end_matches(':').to_string());
    }
    out
}

/// Every source file of the library, as (module path, text), tests left out.
fn modules(src: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let name = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if stem == "lib" || stem == "main" || stem == "layers" || stem.ends_with("tests") {
                continue;
            }
            let module = stem.trim_end_matches("/mod").replace('/', "::");
            let text = std::fs::read_to_string(&path).expect("read file");
            out.push((module, code(&text)));
        }
    }
    out
}

#[test]
fn modules_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let table = table(&lib);
    assert!(table.len() > 10, "no layer table in lib.rs: {table:?}");
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let modules = modules(&src);
    for (module, code) in &modules {
        let Some(home) = owner(&table, module) else {
            problems.push(format!("{module} is not in lib.rs's layer table"));
            continue;
        };
        let layer = table[home];
        for path in crate_paths(code) {
            let Some(dep) = owner(&table, &path) else {
                continue; // the crate root (`crate::StartError`)
            };
            if dep == home {
                continue;
            }
            if table[dep] > layer {
                problems.push(format!(
                    "{module} (layer {layer}) imports crate::{path} ({dep}, layer {})",
                    table[dep]
                ));
            }
            edges.entry(home).or_default().insert(dep);
        }
    }
    // No loops among listed modules (same-layer imports are allowed, cycles are not).
    fn reaches<'a>(
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        from: &'a str,
        to: &str,
        seen: &mut BTreeSet<&'a str>,
    ) -> bool {
        edges.get(from).is_some_and(|next| {
            next.iter()
                .any(|n| *n == to || (seen.insert(n) && reaches(edges, n, to, seen)))
        })
    }
    for (from, deps) in &edges {
        for to in deps {
            if reaches(&edges, to, from, &mut BTreeSet::new()) {
                problems.push(format!("{from} and {to} import each other (a cycle)"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let table = table("//! | 0 | `headers` | x |\n//! | 5 | `pipeline` | y |\n");
    assert_eq!(table.get("pipeline"), Some(&5));
    let paths = crate_paths("use crate::pipeline::handle;\nuse crate::{headers::X, pipeline};");
    assert_eq!(paths, ["pipeline::handle", "headers::X", "pipeline"]);
    assert_eq!(owner(&table, "pipeline::handle"), Some("pipeline"));
    assert_eq!(owner(&table, "nothing::here"), None);
}
