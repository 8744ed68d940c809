//! Usage per route and rule, accumulated entry by entry in bounded memory: counters and
//! bitmasks per rule and caller pattern, a [`PathTree`] per path pattern, and capped maps
//! and samples for what callers (attacker-influenced) can grow: denied callers, decoy hits,
//! sample paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use http::Method;

use super::input::Entry;
use super::paths::PathTree;
use crate::config::{Config, RouteSpec};
use crate::policy::{self, Rule};

/// Methods a rule can name, in a fixed order: bit `i` of a mask is `METHODS[i]`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Sample paths kept per rule.
pub const SAMPLE_PATHS: usize = 20;
/// Samples kept per finding (denials, decoy hits, shadow would-deny).
pub const SAMPLES: usize = 5;
/// Distinct (route, caller) pairs tracked for denials and for decoy hits, each; more are
/// counted together.
pub const MAX_TRACKED: usize = 1000;

fn method_bit(method: &str) -> Option<u8> {
    METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
}

/// Usage of one caller pattern of a rule.
#[derive(Debug, Default, Clone)]
pub struct CallerUse {
    /// Requests.
    pub requests: u64,
    /// Newest.
    pub last_used: Option<DateTime<Utc>>,
    /// Methods used (bits of [`METHODS`]).
    pub methods: u8,
}

/// Usage of one rule.
#[derive(Debug, Default, Clone)]
pub struct RuleUse {
    /// Requests attributed.
    pub requests: u64,
    /// Newest.
    pub last_used: Option<DateTime<Utc>>,
    /// Per caller pattern, in the rule's order.
    pub callers: Vec<CallerUse>,
    /// Methods used (bits of [`METHODS`]).
    pub methods: u8,
    /// Per path pattern: requests and the observed paths.
    pub paths: Vec<(u64, PathTree)>,
    /// Distinct decoded paths, at most [`SAMPLE_PATHS`].
    pub samples: BTreeSet<String>,
}

impl RuleUse {
    fn new(rule: &Rule) -> Self {
        RuleUse {
            callers: vec![CallerUse::default(); rule.callers.len()],
            paths: vec![(0, PathTree::default()); rule.paths.len()],
            ..RuleUse::default()
        }
    }
}

/// Evidence for one (route, caller) group of entries: denials, decoy hits, shadow misses.
#[derive(Debug, Default, Clone)]
pub struct Group {
    /// Entries.
    pub count: u64,
    /// Newest.
    pub last: Option<DateTime<Utc>>,
    /// `METHOD path` samples, at most [`SAMPLES`].
    pub samples: BTreeSet<String>,
    /// Count per reason (denials).
    pub reasons: BTreeMap<String, u64>,
}

impl Group {
    fn add(&mut self, e: &Entry, sample: String, reason: Option<&str>) {
        self.count += 1;
        self.last = self.last.max(Some(e.time));
        if self.samples.len() < SAMPLES {
            self.samples.insert(sample);
        }
        if let Some(r) = reason {
            *self.reasons.entry(r.to_string()).or_default() += 1;
        }
    }
}

/// Shadow decisions of one route.
#[derive(Debug, Default, Clone)]
pub struct ShadowUse {
    /// `[enforced][shadow]`, 0 allow and 1 deny.
    pub counts: [[u64; 2]; 2],
    /// Allowed today, denied by `shadow_allow`: per enforced rule key.
    pub would_deny: BTreeMap<String, Group>,
    /// Requests per shadow rule index that it would allow.
    pub rules: Vec<u64>,
}

/// Everything accumulated from the entries of the window.
#[derive(Debug)]
pub struct Usage<'c> {
    config: &'c Config,
    /// Per route of the config (same order), per allow rule.
    pub rules: Vec<Vec<RuleUse>>,
    /// Per route of the config with `shadow_allow`.
    pub shadow: Vec<Option<ShadowUse>>,
    /// Policy denials per (route, caller).
    pub denied: BTreeMap<(String, String), Group>,
    /// Decoy hits per (route as requested, caller).
    pub decoys: BTreeMap<(String, Option<String>), Group>,
    /// Denials, decoy hits or shadow misses beyond [`MAX_TRACKED`] groups each.
    pub untracked: u64,
    /// Allowed entries matched to no rule of the config (rule gone, or no `rule` field).
    pub unattributed: u64,
    /// Entries of the window.
    pub entries: u64,
    /// Oldest and newest entry of the window.
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    hashes: Vec<HashMap<&'c str, usize>>,
    route_index: HashMap<&'c str, usize>,
}

impl<'c> Usage<'c> {
    /// Empty usage for `config`.
    pub fn new(config: &'c Config) -> Self {
        let rules = config
            .routes
            .iter()
            .map(|r| r.allow.iter().map(RuleUse::new).collect())
            .collect();
        let shadow = config
            .routes
            .iter()
            .map(|r| {
                r.shadow_allow.as_ref().map(|s| ShadowUse {
                    rules: vec![0; s.len()],
                    ..ShadowUse::default()
                })
            })
            .collect();
        let hashes = config
            .routes
            .iter()
            .map(|r| {
                let mut index = HashMap::new();
                for (i, rule) in r.allow.iter().enumerate() {
                    index.entry(&*rule.id.hash).or_insert(i);
                }
                index
            })
            .collect();
        let route_index = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        Usage {
            config,
            rules,
            shadow,
            denied: BTreeMap::new(),
            decoys: BTreeMap::new(),
            untracked: 0,
            unattributed: 0,
            entries: 0,
            span: None,
            hashes,
            route_index,
        }
    }

    /// The rule an allowed entry used: by `rule_hash`, else by `rule` (SPEC).
    fn attribute(&self, route: usize, spec: &RouteSpec, e: &Entry) -> Option<usize> {
        if let Some(hash) = e.rule_hash.as_deref() {
            // Identical rules share a hash: prefer the one at the entry's key.
            if let Some(i) = e
                .rule
                .as_deref()
                .and_then(|k| spec.allow.iter().position(|r| &*r.id.key == k))
                .filter(|i| &*spec.allow[*i].id.hash == hash)
            {
                return Some(i);
            }
            if let Some(i) = self.hashes[route].get(hash) {
                return Some(*i);
            }
        }
        let key = e.rule.as_deref()?;
        spec.allow.iter().position(|r| &*r.id.key == key)
    }

    /// Adds one entry of the window.
    pub fn add(&mut self, e: &Entry) {
        self.entries += 1;
        self.span = Some(match self.span {
            None => (e.time, e.time),
            Some((from, to)) => (from.min(e.time), to.max(e.time)),
        });
        let raw_path = e.url.split('?').next().unwrap_or_default();
        let target = policy::normalise(raw_path).ok();
        let path = target.as_ref().map_or(raw_path, |t| t.path.as_ref());
        let sample = || format!("{} {path}", e.method);
        let route = e
            .route
            .as_deref()
            .and_then(|r| self.route_index.get(r).copied());
        if let Some(r) = route
            && let (Some(shadow), Some((would_allow, rule))) = (&mut self.shadow[r], &e.shadow)
        {
            shadow.counts[usize::from(!e.allowed)][usize::from(!would_allow)] += 1;
            if let Some(i) = rule.as_deref().and_then(|k| {
                k.rsplit_once('[')?
                    .1
                    .strip_suffix(']')?
                    .parse::<usize>()
                    .ok()
            }) && let Some(n) = shadow.rules.get_mut(i)
            {
                *n += 1;
            }
            if e.allowed && !would_allow {
                let key = e.rule.clone().unwrap_or_default();
                track(
                    &mut shadow.would_deny,
                    &mut self.untracked,
                    key,
                    e,
                    sample(),
                    None,
                );
            }
        }
        if e.reason.as_deref() == Some("decoy") {
            let route = e
                .route
                .clone()
                .or_else(|| target.as_ref().map(|t| t.route.to_string()))
                .unwrap_or_default();
            let key = (route, e.caller.clone());
            track(
                &mut self.decoys,
                &mut self.untracked,
                key,
                e,
                sample(),
                None,
            );
            return;
        }
        let Some(route) = route else {
            if e.allowed {
                self.unattributed += 1;
            }
            return;
        };
        let spec = &self.config.routes[route];
        if !e.allowed {
            if let (Some(caller), Some(reason)) = (&e.caller, e.reason.as_deref())
                && matches!(reason, "forbidden" | "grant_expired" | "source_not_allowed")
            {
                let key = (spec.name.clone(), caller.clone());
                track(
                    &mut self.denied,
                    &mut self.untracked,
                    key,
                    e,
                    sample(),
                    Some(reason),
                );
            }
            return;
        }
        let Some(index) = self.attribute(route, spec, e) else {
            self.unattributed += 1;
            return;
        };
        let rule = &spec.allow[index];
        let usage = &mut self.rules[route][index];
        usage.requests += 1;
        usage.last_used = usage.last_used.max(Some(e.time));
        let bit = method_bit(&e.method).unwrap_or(0);
        usage.methods |= bit;
        if let Some(caller) = &e.caller {
            for (c, pattern) in usage.callers.iter_mut().zip(&rule.callers) {
                if pattern.matches(caller) {
                    c.requests += 1;
                    c.last_used = c.last_used.max(Some(e.time));
                    c.methods |= bit;
                }
            }
        }
        if usage.samples.len() < SAMPLE_PATHS {
            usage.samples.insert(path.to_string());
        }
        if target.is_some()
            && let Some(j) = rule.paths.iter().position(|p| p.matches(path))
        {
            usage.paths[j].0 += 1;
            usage.paths[j].1.insert(path);
        }
    }

    /// Whether method `m` (as the rule names it) was used under mask `mask`.
    pub fn used(mask: u8, m: &Method) -> bool {
        method_bit(m.as_str()).is_some_and(|b| mask & b != 0)
    }
}

fn track<K: Ord>(
    map: &mut BTreeMap<K, Group>,
    untracked: &mut u64,
    key: K,
    e: &Entry,
    sample: String,
    reason: Option<&str>,
) {
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        *untracked += 1;
        return;
    }
    map.entry(key).or_default().add(e, sample, reason);
}
