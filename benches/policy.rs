//! Policy micro-benchmarks: path normalisation, route lookup among 100 routes, and the rule
//! matcher over 20 rules per route; and the scale checks `scale_routes/{10,100,1000}` (the
//! per-request policy work with that many routes) and `scale_rules/{1,10,100}` (allowing by
//! the last of that many rules), so that a cost growing with the size of the configuration
//! shows in `cargo bench`.
//!
//! The policy is synthetic but shaped like a real one: exact service-account emails and
//! `*@PROJECT.iam.gserviceaccount.com` patterns, 1–3 callers, methods and paths per rule,
//! path patterns mixing literals, `*` and `**`, and a few time-bound grants. In every route
//! the caller `loader@analytics.iam.gserviceaccount.com` matches the callers of rules 3, 7,
//! 11, 15 and 19 (a project wildcard), but only rule 19 allows its method and path, so
//! `authorize/allow_last_rule` walks 19 rules (five of them down to the method and path
//! checks) before allowing, and `authorize/deny_no_rule` scans all 20.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use credproxy::policy::{
    CallerPattern, Decision, DenyReason, PathPattern, Rule, authorize, normalise,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

const ROUTES: usize = 100;
const RULES_PER_ROUTE: usize = 20;
/// The route the request-level benches hit (neither first nor last in any order).
const HOT_ROUTE: usize = 57;

const VENDORS: [&str; 10] = [
    "stripe",
    "github",
    "slack",
    "salesforce",
    "hubspot",
    "zendesk",
    "twilio",
    "sendgrid",
    "shopify",
    "datadog",
];

/// Path patterns of the ordinary rules. None of them matches `ALLOWED_PATH` or
/// `DENIED_PATH`; several share a prefix with them, so matching goes a few segments deep.
const PATHS: [&str; 16] = [
    "/v1/charges",
    "/v1/charges/*",
    "/v1/customers/*/sources/**",
    "/v2/**/items",
    "/v1/invoices/*/lines",
    "/api/**",
    "/repos/*/*/pulls/*",
    "/v3/reports/*/download",
    "/v1/files/**",
    "/chat.postMessage",
    "/v1/customers/*/charges/**",
    "/v2/**/lines",
    "/v1/customers/*/invoices/*",
    "/v1/customers/*",
    "/v1/customers/*/invoices/*/lines/*",
    "/v1/subscriptions/*/items/**",
];

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

const CALLER: &str = "loader@analytics.iam.gserviceaccount.com";
const STRANGER: &str = "intruder@elsewhere.iam.gserviceaccount.com";
const ALLOWED_PATH: &str = "/v1/customers/cus_42/invoices/in_7/lines";
const DENIED_PATH: &str = "/v1/customers/cus_42/refunds/re_9";

fn route_name(r: usize) -> String {
    format!("{}-{}", VENDORS[r % VENDORS.len()], r / VENDORS.len())
}

fn caller(text: &str) -> CallerPattern {
    CallerPattern::parse(text).expect("caller pattern")
}

fn path(text: &str) -> PathPattern {
    PathPattern::parse(text).expect("path pattern")
}

fn rule(r: usize, j: usize, rules: usize, now: DateTime<Utc>) -> Rule {
    // Callers: a rule-specific exact email, sometimes a second exact email or a project
    // wildcard; every fourth rule also admits the whole `analytics` project.
    let mut callers = vec![caller(&format!(
        "job-{j}@proj-{}.iam.gserviceaccount.com",
        r % 7
    ))];
    if j % 3 == 1 {
        callers.push(caller(&format!("*@team-{}.iam.gserviceaccount.com", j % 5)));
    }
    if j % 5 == 2 {
        callers.push(caller(&format!(
            "ops-{r}@shared-ops.iam.gserviceaccount.com"
        )));
    }
    let analytics = j % 4 == 3;
    if analytics {
        callers.push(caller("*@analytics.iam.gserviceaccount.com"));
    }

    // Methods: 1–3 of them.
    let mut methods: Vec<Method> = (0..1 + (j + r) % 3)
        .map(|k| METHODS[(2 * j + r + k) % METHODS.len()].clone())
        .collect();
    // Paths: 1–3 of them.
    let mut paths: Vec<PathPattern> = (0..1 + (j + 2 * r) % 3)
        .map(|k| path(PATHS[(j * 5 + r + k * 3) % PATHS.len()]))
        .collect();

    if j + 1 == rules {
        // The rule that allows `CALLER`: GET last among its methods, the matching pattern
        // last among its paths.
        if !analytics {
            callers.push(caller("*@analytics.iam.gserviceaccount.com"));
        }
        methods = vec![Method::HEAD, Method::GET];
        paths.push(path("/v1/customers/*/invoices/**"));
    } else if analytics && j == 3 {
        // Fails on the method.
        methods = vec![Method::POST];
    }

    Rule {
        callers,
        methods,
        paths,
        expires: j
            .is_multiple_of(5)
            .then(|| now + chrono::Duration::days(30)),
        id: Default::default(),
    }
}

fn policy(routes: usize, rules: usize, now: DateTime<Utc>) -> HashMap<String, Vec<Rule>> {
    (0..routes)
        .map(|r| {
            let rules = (0..rules).map(|j| rule(r, j, rules, now)).collect();
            (route_name(r), rules)
        })
        .collect()
}

fn long_path() -> String {
    let mut p = String::from("/stripe");
    for i in 0..30 {
        p.push_str(&format!("/seg{i}_abc"));
    }
    p
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

fn bench_normalise(c: &mut Criterion) {
    let long = long_path();
    let cases = [
        ("plain", "/stripe/v1/charges/ch_123"),
        ("percent_encoded", "/stripe/v1/caf%C3%A9/a%20b"),
        ("long_30_segments", long.as_str()),
    ];
    for (_, raw) in cases {
        normalise(raw).expect("bench path normalises");
    }
    let mut group = configure(c, "normalise");
    for (name, raw) in cases {
        group.bench_function(name, |b| b.iter(|| black_box(normalise(black_box(raw)))));
    }
    group.finish();
}

fn bench_policy(c: &mut Criterion) {
    let now = Utc::now();
    let routes = policy(ROUTES, RULES_PER_ROUTE, now);
    assert_eq!(routes.len(), ROUTES);

    // The synthetic policy must give the decisions the bench names claim, in every route.
    for rules in routes.values() {
        assert_eq!(rules.len(), RULES_PER_ROUTE);
        assert_eq!(
            authorize(rules, CALLER, &Method::GET, ALLOWED_PATH, now),
            Decision::Allow {
                rule: RULES_PER_ROUTE - 1
            }
        );
        assert_eq!(
            authorize(rules, CALLER, &Method::GET, DENIED_PATH, now),
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            authorize(rules, STRANGER, &Method::GET, ALLOWED_PATH, now),
            Decision::Deny(DenyReason::NoRule)
        );
    }
    let hot_name = route_name(HOT_ROUTE);
    let hot = &routes[&hot_name];

    let mut group = configure(c, "authorize");
    group.bench_function("allow_last_rule", |b| {
        b.iter(|| {
            black_box(authorize(
                black_box(hot),
                black_box(CALLER),
                black_box(&Method::GET),
                black_box(ALLOWED_PATH),
                now,
            ))
        })
    });
    group.bench_function("deny_no_rule", |b| {
        b.iter(|| {
            black_box(authorize(
                black_box(hot),
                black_box(CALLER),
                black_box(&Method::GET),
                black_box(DENIED_PATH),
                now,
            ))
        })
    });
    group.bench_function("deny_unknown_caller", |b| {
        b.iter(|| {
            black_box(authorize(
                black_box(hot),
                black_box(STRANGER),
                black_box(&Method::GET),
                black_box(ALLOWED_PATH),
                now,
            ))
        })
    });
    group.finish();

    let mut group = configure(c, "route_lookup");
    group.bench_function("hit_of_100", |b| {
        b.iter(|| black_box(routes.get(black_box(hot_name.as_str()))))
    });
    group.bench_function("miss_of_100", |b| {
        b.iter(|| black_box(routes.get(black_box("no-such-route"))))
    });
    group.finish();

    // What the server does per request before credentials: normalise the target, find the
    // route by its decoded name, authorize.
    let target = format!("/{hot_name}{ALLOWED_PATH}");
    let mut group = configure(c, "request");
    group.bench_function("normalise_lookup_authorize", |b| {
        b.iter(|| {
            let t = normalise(black_box(&target)).expect("normalises");
            let rules = routes.get(t.route.as_ref()).expect("route");
            black_box(authorize(rules, CALLER, &Method::GET, &t.path, now))
        })
    });
    group.finish();
}

/// Normalise, look up and authorize (allowed by the last rule) with `routes` routes of
/// `rules` rules each.
fn bench_request_at(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: usize,
    routes: usize,
    rules: usize,
) {
    let now = Utc::now();
    let policy = policy(routes, rules, now);
    assert_eq!(policy.len(), routes);
    // Neither first nor last: the same place in every size.
    let hot = route_name(routes * HOT_ROUTE / ROUTES);
    let target = format!("/{hot}{ALLOWED_PATH}");
    let t = normalise(&target).expect("normalises");
    assert_eq!(
        authorize(
            &policy[t.route.as_ref()],
            CALLER,
            &Method::GET,
            &t.path,
            now
        ),
        Decision::Allow { rule: rules - 1 },
        "the last rule allows"
    );
    group.bench_function(name.to_string(), |b| {
        b.iter(|| {
            let t = normalise(black_box(&target)).expect("normalises");
            let rules = policy.get(t.route.as_ref()).expect("route");
            black_box(authorize(rules, CALLER, &Method::GET, &t.path, now))
        })
    });
}

/// The scale checks are kept short: a second each.
fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    group
}

fn bench_scale(c: &mut Criterion) {
    let mut group = short(c, "scale_routes");
    for routes in [10, 100, 1000] {
        bench_request_at(&mut group, routes, routes, RULES_PER_ROUTE);
    }
    group.finish();
    let mut group = short(c, "scale_rules");
    for rules in [1, 10, 100] {
        bench_request_at(&mut group, rules, ROUTES, rules);
    }
    group.finish();
}

criterion_group!(benches, bench_normalise, bench_policy, bench_scale);
criterion_main!(benches);
