//! Narrowing a path pattern to the paths observed under it, in bounded memory.
//!
//! The observed paths of one pattern go into a segment tree. A node keeps at most
//! [`FANOUT`] distinct literal children; beyond that its non-empty children are folded into
//! one `*` child (their subtrees merged), so a pattern like `/v1/charges/*` emerges from a
//! thousand charge ids while `/v1/charges` and `/v1/customers` stay literal. The tree never
//! holds more than [`MAX_NODES`] nodes: past that it stops learning and the pattern is kept
//! as it is. Every proposed pattern is checked to lie within the pattern it narrows
//! ([`PathPattern::within`]); one that cannot be shown to is replaced by the original, so a
//! proposal is never broader than today's rule.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::policy::PathPattern;

/// Distinct literal segments kept under one node before they are folded into `*`.
pub const FANOUT: usize = 8;
/// Nodes one tree may hold.
pub const MAX_NODES: usize = 4096;
/// Patterns one narrowing may propose; more than this keeps the original.
pub const MAX_PATTERNS: usize = 8;

/// Characters written percent-encoded in a proposed literal segment: what the pattern
/// syntax or YAML would read otherwise (`*`, `%`, `?`, `#`, quotes, spaces, controls).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'*')
    .add(b'?')
    .add(b'#')
    .add(b'\\')
    .add(b'"')
    .add(b'\'')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

#[derive(Debug, Default, Clone)]
struct Node {
    end: bool,
    children: BTreeMap<String, Node>,
    wild: Option<Box<Node>>,
}

impl Node {
    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
            + self.wild.as_ref().map_or(0, |w| w.count())
    }

    fn merge(&mut self, other: Node) {
        self.end |= other.end;
        for (seg, child) in other.children {
            self.children.entry(seg).or_default().merge(child);
        }
        if let Some(w) = other.wild {
            self.wild.get_or_insert_with(Box::default).merge(*w);
        }
        self.fold();
    }

    /// Folds non-empty literal children into `*` when there is a `*` or too many literals.
    fn fold(&mut self) {
        if self.wild.is_none() && self.children.len() <= FANOUT {
            return;
        }
        let literals: Vec<String> = self
            .children
            .keys()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        if literals.is_empty() {
            return;
        }
        let mut wild = self.wild.take().map(|w| *w).unwrap_or_default();
        for key in literals {
            if let Some(child) = self.children.remove(&key) {
                wild.merge(child);
            }
        }
        self.wild = Some(Box::new(wild));
    }
}

/// The observed paths of one pattern.
#[derive(Debug, Default, Clone)]
pub struct PathTree {
    root: Node,
    nodes: usize,
    /// Set when the tree was full: the pattern is not narrowed.
    full: bool,
}

impl PathTree {
    /// Records one decoded, normalised path (starting with `/`).
    pub fn insert(&mut self, path: &str) {
        if self.full {
            return;
        }
        let Some(body) = path.strip_prefix('/') else {
            return;
        };
        let mut node = &mut self.root;
        let mut added = 0;
        let mut recount = false;
        for seg in body.split('/') {
            if node.children.contains_key(seg) {
                node = node.children.get_mut(seg).expect("present");
                continue;
            }
            if !seg.is_empty() && node.wild.is_some() {
                node = node.wild.as_deref_mut().expect("present");
                continue;
            }
            node.children.insert(seg.to_string(), Node::default());
            added += 1;
            if !seg.is_empty() && node.children.len() > FANOUT {
                node.fold();
                node = node.wild.as_deref_mut().expect("folded");
                // The tree changed shape: recount below.
                recount = true;
            } else {
                node = node.children.get_mut(seg).expect("inserted");
            }
        }
        node.end = true;
        self.nodes = if recount {
            self.root.count()
        } else {
            self.nodes + added
        };
        if self.nodes > MAX_NODES {
            self.full = true;
            self.root = Node::default();
        }
    }

    /// The patterns covering every recorded path, each within `original`; `None` when the
    /// tree was full, nothing was recorded, or more than [`MAX_PATTERNS`] would be needed.
    pub fn narrowed(&self, original: &PathPattern) -> Option<Vec<String>> {
        if self.full {
            return None;
        }
        let mut out = Vec::new();
        collect(&self.root, &mut String::new(), &mut out);
        if out.is_empty() || out.len() > MAX_PATTERNS {
            return None;
        }
        let mut patterns: Vec<String> = out
            .into_iter()
            .map(|p| {
                let ok = PathPattern::parse(&p).is_ok_and(|q| q.within(original));
                if ok { p } else { original.as_str().to_string() }
            })
            .collect();
        patterns.sort();
        patterns.dedup();
        Some(patterns)
    }
}

fn collect(node: &Node, prefix: &mut String, out: &mut Vec<String>) {
    if out.len() > MAX_PATTERNS {
        return;
    }
    if node.end && !prefix.is_empty() {
        out.push(prefix.clone());
    }
    let len = prefix.len();
    for (seg, child) in &node.children {
        prefix.push('/');
        prefix.extend(utf8_percent_encode(seg, SEGMENT));
        collect(child, prefix, out);
        prefix.truncate(len);
    }
    if let Some(w) = &node.wild {
        prefix.push_str("/*");
        collect(w, prefix, out);
        prefix.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn narrow(pattern: &str, paths: &[&str]) -> Option<Vec<String>> {
        let mut tree = PathTree::default();
        for p in paths {
            tree.insert(p);
        }
        tree.narrowed(&PathPattern::parse(pattern).expect("pattern"))
    }

    #[test]
    fn keeps_few_literals_and_folds_many_into_one_segment() {
        assert_eq!(
            narrow("/v1/**", &["/v1/charges", "/v1/customers", "/v1/charges"]),
            Some(vec!["/v1/charges".to_string(), "/v1/customers".to_string()])
        );
        let ids: Vec<String> = (0..50).map(|i| format!("/v1/charges/ch_{i}")).collect();
        let mut paths: Vec<&str> = ids.iter().map(String::as_str).collect();
        paths.push("/v1/charges");
        assert_eq!(
            narrow("/v1/**", &paths),
            Some(vec!["/v1/charges".to_string(), "/v1/charges/*".to_string()])
        );
        // Deeper paths under folded ids fold with them.
        let refunds: Vec<String> = (0..20)
            .map(|i| format!("/v1/charges/ch_{i}/refunds"))
            .collect();
        let mut more = paths.clone();
        more.extend(refunds.iter().map(String::as_str));
        assert_eq!(
            narrow("/v1/**", &more),
            Some(vec![
                "/v1/charges".to_string(),
                "/v1/charges/*".to_string(),
                "/v1/charges/*/refunds".to_string()
            ])
        );
    }

    #[test]
    fn never_proposes_broader_than_the_original() {
        // `*` matches one segment only; the fold gives `/v1/*`, which is the pattern itself.
        let ids: Vec<String> = (0..20).map(|i| format!("/v1/x{i}")).collect();
        let paths: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(narrow("/v1/*", &paths), Some(vec!["/v1/*".to_string()]));
        // Many segments under one literal that the original fixes.
        let p: Vec<String> = (0..20).map(|i| format!("/a/{i}/b")).collect();
        let paths: Vec<&str> = p.iter().map(String::as_str).collect();
        assert_eq!(narrow("/a/*/b", &paths), Some(vec!["/a/*/b".to_string()]));
        for p in narrow("/v1/**", &["/v1/a/", "/v1/a"]).expect("narrowed") {
            let q = PathPattern::parse(&p).expect("parses");
            assert!(q.within(&PathPattern::parse("/v1/**").expect("p")));
        }
        assert_eq!(
            narrow("/v1/**", &["/v1/a/", "/v1/a"]),
            Some(vec!["/v1/a".to_string(), "/v1/a/".to_string()])
        );
    }

    #[test]
    fn literal_segments_are_written_so_the_pattern_reads_them_back() {
        let got = narrow("/v1/**", &["/v1/a b", "/v1/50%", "/v1/<x>*"]).expect("narrowed");
        assert_eq!(got, ["/v1/%3Cx%3E%2A", "/v1/50%25", "/v1/a%20b"]);
        for (p, path) in got.iter().zip(["/v1/<x>*", "/v1/50%", "/v1/a b"]) {
            assert!(PathPattern::parse(p).expect("parses").matches(path), "{p}");
        }
    }

    #[test]
    fn memory_is_bounded_and_a_full_tree_keeps_the_pattern() {
        let mut tree = PathTree::default();
        for i in 0..100_000 {
            // Each path adds distinct literal segments below a folded one.
            tree.insert(&format!("/v1/{i}/{}/{}", i * 7, i * 13));
        }
        assert!(tree.full || tree.nodes <= MAX_NODES);
        assert!(tree.root.count() <= MAX_NODES + 1);
        let got = tree.narrowed(&PathPattern::parse("/v1/**").expect("p"));
        assert!(got.as_ref().is_none_or(|g| g == &["/v1/*/*/*"]), "{got:?}");
        assert_eq!(narrow("/v1/**", &[]), None);
    }
}
