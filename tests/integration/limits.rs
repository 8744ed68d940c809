//! Abuse limits: source ranges and X-Forwarded-For trust.

use crate::harness::*;

fn ranged_route(ranges: &str) -> String {
    format!(
        r#"  ranged:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    source_ranges: {ranges}
    allow:
      - callers: ["{READER}"]
        methods: ["GET"]
        paths: ["/**"]
"#
    )
}

async fn world(hops: usize, ranges: &str) -> World {
    World::custom(
        &ranged_route(ranges),
        |config| {
            config.replace(
                "server:\n",
                &format!("server:\n  trusted_proxy_hops: {hops}\n"),
            )
        },
        &default_env(),
    )
    .await
}

async fn get(w: &World, xff: Option<&str>) -> reqwest::Response {
    let mut r = w.app.request_as(reqwest::Method::GET, READER, "/ranged/x");
    if let Some(xff) = xff {
        r = r.header("X-Forwarded-For", xff);
    }
    r.send().await.expect("request")
}

#[tokio::test]
async fn without_trusted_hops_the_tcp_peer_counts_and_x_forwarded_for_is_ignored() {
    let w = world(0, r#"["127.0.0.0/8"]"#).await;
    assert_eq!(get(&w, None).await.status(), 200);
    assert_eq!(
        get(&w, Some("203.0.113.7")).await.status(),
        200,
        "a spoofed header changes nothing"
    );
    let w = world(0, r#"["10.8.0.0/24"]"#).await;
    let r = get(&w, Some("10.8.0.5")).await;
    assert_eq!(r.status(), 403, "spoofing an allowed address does not help");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = error_body(r).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{body}"
    );
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["reason"], "source_not_allowed");
    assert_eq!(w.upstream.started(), 0);
}

#[tokio::test]
async fn with_one_trusted_hop_only_the_last_entry_counts() {
    let w = world(1, r#"["10.8.0.0/24", "2001:db8::/32"]"#).await;
    // What Cloud Run's front end appends is the last entry.
    assert_eq!(get(&w, Some("10.8.0.5")).await.status(), 200);
    assert_eq!(get(&w, Some("2001:db8::1")).await.status(), 200);
    // A client-supplied entry further left is ignored.
    assert_eq!(get(&w, Some("10.8.0.5, 198.51.100.1")).await.status(), 403);
    // No header: the address is unknown and the route refuses.
    assert_eq!(get(&w, None).await.status(), 403);
    let r = get(&w, Some("10.8.0.7")).await;
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        w.app.audit_for(&id).await["httpRequest"]["remoteIp"],
        "10.8.0.7"
    );
}

async fn limited_world() -> World {
    let route = format!(
        r#"  metered:
    upstream: "{{UPSTREAM}}"
    credential: {{ secret: "env:API_SECRET", inject: {{ header: {{ name: "X-Key" }} }} }}
    rate_limit: {{ per_second: 0.2, burst: 3 }}
    route_rate_limit: {{ per_second: 0.2, burst: 5 }}
    allow:
      - callers: ["{READER}", "{WRITER}", "third@pipelines.iam.gserviceaccount.com"]
        methods: ["GET"]
        paths: ["/**"]
"#
    );
    World::custom(&route, |config| config, &default_env()).await
}

#[tokio::test]
async fn a_caller_over_its_burst_gets_429_and_others_are_unaffected() {
    let w = limited_world().await;
    for i in 0..3 {
        assert_eq!(
            w.app.get_as(READER, "/metered/x").await.status(),
            200,
            "request {i} within the burst"
        );
    }
    let r = w.app.get_as(READER, "/metered/x").await;
    assert_eq!(r.status(), 429, "one over the burst");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(error_body(r).await["error"], "rate_limited");
    let e = w.app.audit_for(&id).await;
    assert_eq!(e["reason"], "rate_limited");
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(
        w.upstream.requests().len(),
        3,
        "the upstream never saw the limited request"
    );
    // Another caller still has its own burst.
    assert_eq!(w.app.get_as(WRITER, "/metered/x").await.status(), 200);
}

#[tokio::test]
async fn the_route_wide_limit_covers_all_callers_together() {
    let w = limited_world().await;
    let mut ok = 0;
    for caller in [READER, READER, READER, WRITER, WRITER, WRITER] {
        if w.app.get_as(caller, "/metered/x").await.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "the route allows 5 in a burst across callers");
    let r = w
        .app
        .get_as("third@pipelines.iam.gserviceaccount.com", "/metered/x")
        .await;
    assert_eq!(r.status(), 429);
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(w.app.audit_for(&id).await["reason"], "route_rate_limited");
}
