//! `POST /_credproxy/events/secret-manager`: Pub/Sub pushes of Secret Manager events. A
//! version event wakes the matching secrets' refreshers (at most once per interval); a
//! rotation reminder is logged for configured secrets only. The pusher is verified like a
//! caller (OIDC token, audience) and must be one of `events.pubsub_push_callers`.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::audit::RequestContext;
use crate::error::ProxyError;
use crate::headers::X_REQUEST_ID;
use crate::secrets::events::SecretEvent;
use crate::state::App;

/// `POST /_credproxy/events/secret-manager`: Pub/Sub push of Secret Manager events.
pub async fn receive(
    app: &App,
    cx: &mut RequestContext,
    request: Request,
) -> Result<Response, ProxyError> {
    let (parts, body) = request.into_parts();
    let Some(settings) = &app.config.events else {
        return Err(ProxyError::NotFound);
    };
    if parts.method != http::Method::POST {
        return Err(ProxyError::NotFound);
    }
    let pusher = app
        .verifier
        .verify_push(
            &parts.headers,
            &settings.audience,
            app.config.identity.cloud_run_invoker_check,
        )
        .await?;
    cx.caller = Some(pusher.email.clone());
    if !settings.callers.iter().any(|c| c.matches(&pusher.email)) {
        return Err(ProxyError::Forbidden {
            message: format!("{} may not deliver Secret Manager events", pusher.email),
            reason: "forbidden",
        });
    }
    cx.allowed = true;
    use http_body_util::BodyExt as _;
    let bytes = http_body_util::Limited::new(body, EVENT_BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| {
            ProxyError::BadRequest(format!(
                "the event body is unreadable or over {EVENT_BODY_LIMIT} bytes"
            ))
        })?
        .to_bytes();
    let event = crate::secrets::events::parse(&bytes).map_err(ProxyError::BadRequest)?;
    match event {
        SecretEvent::VersionChanged {
            secret_id,
            event_type,
        } => {
            let outcome = app.secrets.on_version_event(&secret_id);
            tracing::info!(secret_id, event_type, outcome = ?outcome, "Secret Manager event");
        }
        SecretEvent::RotationDue { secret_id } => {
            let configured = app.secrets.rotation_reminders(&secret_id);
            if !configured.is_empty() {
                tracing::warn!(
                    secret_id,
                    configured = ?configured,
                    "rotation is due for this secret: add a new version (credproxy picks it up at once)"
                );
            }
        }
        SecretEvent::Other { event_type } => {
            tracing::debug!(event_type = ?event_type, "Secret Manager event ignored");
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(X_REQUEST_ID, cx.request_id.clone());
    Ok(response)
}

/// Largest Pub/Sub push body read.
const EVENT_BODY_LIMIT: usize = 1024 * 1024;
