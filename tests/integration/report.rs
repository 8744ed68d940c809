//! Least privilege from evidence: rule attribution and shadow rules in the audit entry, and
//! `credproxy report` fed the server's own stdout (and its Cloud Logging export forms).

use crate::harness::*;

fn sha256_8(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn request_id(response: reqwest::Response) -> String {
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let _ = response.bytes().await;
    id
}

#[tokio::test]
async fn allowed_entries_name_their_rule_and_its_hash_denied_ones_neither() {
    let w = World::start().await;
    let read = request_id(w.app.get_as(READER, "/api/v1/things").await).await;
    let write = request_id(
        w.app
            .request_as(reqwest::Method::POST, WRITER, "/api/v1/things")
            .body("x")
            .send()
            .await
            .expect("request"),
    )
    .await;
    let denied = request_id(w.app.get_as(STRANGER, "/api/v1/things").await).await;

    let e = w.app.audit_for(&read).await;
    assert_eq!(e["rule"], "routes.api.allow[0]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{READER}"],"methods":["GET"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    let e = w.app.audit_for(&write).await;
    assert_eq!(e["rule"], "routes.api.allow[1]");
    assert_eq!(
        e["rule_hash"],
        sha256_8(&format!(
            r#"{{"callers":["{WRITER}"],"methods":["GET","POST","PUT"],"paths":["/v1/**"]}}"#
        ))
        .as_str()
    );
    // The expired grant matched but did not allow: a denial names no rule.
    let e = w.app.audit_for(&denied).await;
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["reason"], "grant_expired");
    let object = e.as_object().expect("object");
    assert!(
        !object.contains_key("rule") && !object.contains_key("rule_hash"),
        "{e}"
    );
    assert!(
        !object.contains_key("shadow"),
        "no shadow_allow on this route: {e}"
    );
}
