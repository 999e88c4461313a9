//! Browser safety of writes on the controller's port. A web page the operator visits can
//! make the browser send requests to the controller (a form post, a `no-cors` fetch); the
//! browser adds no bearer token on its own, but it does reach an open API (no tokens
//! configured), and such requests carry a content type other than JSON or an origin other
//! than the controller's. So every write (any method but GET and HEAD) needs
//! `Content-Type: application/json` (a cross-site form cannot send it without a CORS
//! preflight, which the controller never grants), and on an open API a write is accepted
//! only from a loopback peer, with `Origin` (when sent) one of the controller's own and
//! `Sec-Fetch-Site` (when sent) `same-origin` or `none`. Routes added beside the API (the
//! demo's controls) need the operator role for writes whenever tokens are configured.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::api::auth::{OPERATORS, authorize};
use crate::api::error::ApiError;
use crate::tls::{Caller, Peer};

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The origins a page served by this controller has: its advertised URL and its port on
/// every loopback name.
pub(crate) fn own_origins(addr: SocketAddr, advertise_url: &str) -> Vec<String> {
    let port = addr.port();
    let mut origins = vec![advertise_url.trim_end_matches('/').to_string()];
    for scheme in ["http", "https"] {
        origins.extend([
            format!("{scheme}://{addr}"),
            format!("{scheme}://localhost:{port}"),
            format!("{scheme}://127.0.0.1:{port}"),
            format!("{scheme}://[::1]:{port}"),
        ]);
    }
    origins.sort();
    origins.dedup();
    origins
}

/// Whether a write may proceed: `open` when no token is configured, `peer` the TCP peer
/// (unknown when the router is served without connection info), `certified` when it
/// presented a verified client certificate (mutual TLS: only holders of the configured
/// CA's certificates reach the port, so they may write from anywhere, as from loopback).
pub(crate) fn check_write(
    headers: &HeaderMap,
    open: bool,
    peer: Option<SocketAddr>,
    certified: bool,
    origins: &[String],
) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "writes need Content-Type: application/json",
        ));
    }
    if !open {
        return Ok(());
    }
    let forbidden = |why: String| Err(ApiError::new(StatusCode::FORBIDDEN, why));
    // On a dual-stack listener an IPv4 client shows as ::ffff:127.0.0.1.
    if !certified && !peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
        let from = peer.map_or("an unknown peer".into(), |p| p.ip().to_string());
        return forbidden(format!(
            "no controller.tokens are configured, so writes are accepted from loopback (or a client certificate of controller.tls.client_ca) only, not from {from}"
        ));
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !matches!(site, "same-origin" | "none") {
            return forbidden(format!(
                "a {site} request from a browser may not write (Sec-Fetch-Site)"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !origins.iter().any(|o| o == origin) {
            return forbidden(format!(
                "origin {origin:?} is not this controller's; writes from other sites are refused"
            ));
        }
    }
    Ok(())
}

/// Middleware over every route on the port: [`check_write`] for each write.
pub(crate) async fn guard_writes(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if is_write(request.method()) {
        let peer = request.extensions().get::<ConnectInfo<Peer>>();
        if let Err(err) = check_write(
            request.headers(),
            shared.tokens.is_open(),
            peer.map(|p| p.0.addr),
            peer.is_some_and(|p| p.0.cert_names.is_some()),
            &shared.origins,
        ) {
            return err.into_response();
        }
    }
    next.run(request).await
}

/// Middleware over the routes added beside the API: a write needs the operator role.
pub(crate) async fn operator_writes(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if is_write(request.method()) {
        let (parts, body) = request.into_parts();
        if let Err(err) = authorize(&shared, &Caller::of(&parts), OPERATORS) {
            return err.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn open_writes_only_from_loopback_same_origin_json() {
        let addr: SocketAddr = "127.0.0.1:8090".parse().unwrap();
        let origins = own_origins(addr, "http://127.0.0.1:8090");
        let local = Some("127.0.0.1:5555".parse().unwrap());
        let json = ("content-type", "application/json; charset=utf-8");
        let status = |h: &[(&'static str, &str)], open, peer| {
            check_write(&headers(h), open, peer, false, &origins).map_err(|e| e.status())
        };
        assert_eq!(status(&[json], true, local), Ok(()));
        assert_eq!(
            status(&[json, ("origin", "http://localhost:8090")], true, local),
            Ok(())
        );
        assert_eq!(
            status(&[("content-type", "text/plain")], true, local),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&[], false, local),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "with tokens too"
        );
        assert_eq!(
            status(&[json, ("origin", "http://evil.example")], true, local),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&[json, ("sec-fetch-site", "cross-site")], true, local),
            Err(StatusCode::FORBIDDEN)
        );
        let mapped = Some("[::ffff:127.0.0.1]:5555".parse().unwrap());
        assert_eq!(
            status(&[json], true, mapped),
            Ok(()),
            "IPv4 loopback on [::]"
        );
        let remote = Some("192.0.2.7:5555".parse().unwrap());
        assert_eq!(status(&[json], true, remote), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(&[json], true, None), Err(StatusCode::FORBIDDEN));
        // A verified client certificate may write from anywhere, still not cross-site.
        let json_headers = headers(&[json]);
        assert!(check_write(&json_headers, true, remote, true, &origins).is_ok());
        let evil = headers(&[json, ("origin", "https://evil.example")]);
        assert!(check_write(&evil, true, remote, true, &origins).is_err());
        // With tokens, a bearer token (which no browser adds by itself) decides.
        assert_eq!(
            status(&[json, ("origin", "http://evil.example")], false, remote),
            Ok(())
        );
    }
}
