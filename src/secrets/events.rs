//! Secret Manager event notifications, delivered by a Pub/Sub push subscription to
//! `POST /_credproxy/events/secret-manager`.
//!
//! The push body is `{"message": {"attributes": {...}, "data": BASE64, "messageId": "...",
//! "publishTime": "..."}, "subscription": "projects/P/subscriptions/S"}`. Secret Manager sets
//! the attributes `eventType`, `dataFormat`, `secretId` (`projects/NUMBER/secrets/ID`),
//! `timestamp`, and `versionId` for version events; `TOPIC_CONFIGURED` test messages carry
//! only `eventType`. (cloud.google.com/secret-manager/docs/event-notifications,
//! cloud.google.com/pubsub/docs/push.)
//!
//! An event is only a hint to re-read a secret now: it never carries a value credproxy uses,
//! and re-reads are rate-limited per secret, so a forged or replayed event gains nothing but
//! a bounded number of store reads. Delivery is at least once and unordered; every processed
//! or ignored event is acknowledged (204) so Pub/Sub does not retry it.

use std::collections::HashMap;

use serde::Deserialize;

/// The push envelope.
#[derive(Debug, Deserialize)]
pub struct PushEnvelope {
    /// The Pub/Sub message.
    pub message: PushMessage,
    /// `projects/P/subscriptions/S`.
    #[serde(default)]
    pub subscription: Option<String>,
}

/// The message inside a push envelope.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    /// Secret Manager's event attributes.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// Base64 JSON of the Secret or SecretVersion (not needed: the attributes say it all).
    #[serde(default)]
    pub data: Option<String>,
    /// Pub/Sub message id.
    #[serde(default)]
    pub message_id: Option<String>,
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    /// A version was added, enabled, disabled or destroyed: re-read the secret now.
    VersionChanged {
        /// `projects/NUMBER/secrets/ID`.
        secret_id: String,
        /// The event type, for logs.
        event_type: String,
    },
    /// Rotation is due: nothing new to read; remind the operators.
    RotationDue {
        /// `projects/NUMBER/secrets/ID`.
        secret_id: String,
    },
    /// Anything else (`SECRET_CREATE`, `TOPIC_CONFIGURED`, ...): acknowledged and ignored.
    Other {
        /// The event type, if any.
        event_type: Option<String>,
    },
}

/// Parses a push body; `Err` (400) when it is not a push envelope at all.
pub fn parse(body: &[u8]) -> Result<SecretEvent, String> {
    let envelope: PushEnvelope =
        serde_json::from_slice(body).map_err(|e| format!("not a Pub/Sub push envelope: {e}"))?;
    let attributes = &envelope.message.attributes;
    let event_type = attributes.get("eventType").cloned();
    let secret_id = attributes.get("secretId").cloned();
    Ok(match (event_type.as_deref(), secret_id) {
        (
            Some(
                t @ ("SECRET_VERSION_ADD"
                | "SECRET_VERSION_ENABLE"
                | "SECRET_VERSION_DISABLE"
                | "SECRET_VERSION_DESTROY"),
            ),
            Some(secret_id),
        ) => SecretEvent::VersionChanged {
            secret_id,
            event_type: t.to_string(),
        },
        (Some("SECRET_ROTATE"), Some(secret_id)) => SecretEvent::RotationDue { secret_id },
        _ => SecretEvent::Other { event_type },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(attributes: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "message": {
                "attributes": attributes,
                "data": "eyJuYW1lIjoicHJvamVjdHMvMTIzL3NlY3JldHMveC92ZXJzaW9ucy8yIn0=",
                "messageId": "136969346945",
                "publishTime": "2026-11-26T00:00:00.000Z"
            },
            "subscription": "projects/acme/subscriptions/credproxy-events"
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn parses_version_events() {
        let e = parse(&envelope(serde_json::json!({
            "eventType": "SECRET_VERSION_ADD",
            "dataFormat": "JSON_API_V1",
            "secretId": "projects/123456/secrets/stripe-key",
            "versionId": "projects/123456/secrets/stripe-key/versions/2",
            "timestamp": "2026-11-26T00:00:00.000000Z"
        })))
        .expect("envelope");
        assert_eq!(
            e,
            SecretEvent::VersionChanged {
                secret_id: "projects/123456/secrets/stripe-key".to_string(),
                event_type: "SECRET_VERSION_ADD".to_string()
            }
        );
    }

    #[test]
    fn rotation_and_other_events() {
        let e = parse(&envelope(serde_json::json!({
            "eventType": "SECRET_ROTATE",
            "secretId": "projects/123456/secrets/stripe-key"
        })))
        .expect("envelope");
        assert!(matches!(e, SecretEvent::RotationDue { .. }));
        let e = parse(&envelope(
            serde_json::json!({"eventType": "TOPIC_CONFIGURED"}),
        ))
        .expect("envelope");
        assert!(matches!(e, SecretEvent::Other { .. }));
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{\"subscription\":\"x\"}").is_err());
    }
}
