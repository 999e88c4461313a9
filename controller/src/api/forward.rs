//! On a follower, writes go to the leader: the middleware that forwards every API write
//! (operator changes, vantage reports) with the caller's own token and the names of its
//! client certificate, over TLS with the controller's own certificate when it has one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use meridian_subscriber::http::ControllerClient;
use meridian_subscriber::tls::ClientTls;

use super::error::ApiError;
use crate::Shared;
use crate::tls::{Caller, FORWARDED_NAMES};

/// Largest request body a follower forwards (operator changes and reports are small).
const MAX_FORWARD_BODY: usize = 4 * 1024 * 1024;

/// Middleware on the API: on a follower, writes go to the leader.
pub(crate) async fn forward_writes(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path().starts_with("/api/v1/");
    let role = shared.leadership.borrow().clone();
    if !write || role.is_leader {
        return next.run(request).await;
    }
    let Some(leader) = role.other_leader() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is a follower and no leader is known yet; retry shortly",
        )
        .into_response();
    };
    forward(leader, &shared.peer_tls, request)
        .await
        .unwrap_or_else(|message| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "this replica is a follower and could not reach the leader {leader}: {message}"
                ),
            )
            .into_response()
        })
}

async fn forward(leader: &str, tls: &ClientTls, request: Request) -> Result<Response, String> {
    let (parts, body) = request.into_parts();
    // So do the names of the caller's client certificate, which the leader cannot see: it
    // takes them from a replica (one presenting the controller's own certificate) only.
    let names = Caller::of(&parts)
        .peer
        .and_then(|peer| peer.cert_names)
        .and_then(|names| serde_json::to_string(&names[..]).ok())
        .and_then(|json| HeaderValue::from_str(&json).ok());
    // The caller's own token travels on: the leader authorizes it, not this replica.
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = axum::body::to_bytes(body, MAX_FORWARD_BODY)
        .await
        .map_err(|e| format!("reading the request body: {e}"))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let client = ControllerClient::with_tls(leader, token, tls).map_err(|e| e.to_string())?;
    let response = client
        .send_with(
            parts.method,
            path,
            (!body.is_empty()).then(|| body.to_vec()),
            names.map(|names| (FORWARDED_NAMES, names)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(meridian_subscriber::http::REQUEST_TIMEOUT, body.collect())
        .await
        .map_err(|_| "the leader's answer did not arrive in time".to_string())?
        .map_err(|e| format!("reading the leader's answer: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
