//! The controller's HTTP surface on its one port: the API under `/api/v1/`, the OpenAPI
//! document at `/openapi.json` (generated from these handlers by utoipa), Prometheus
//! metrics at `/metrics`, and `/livez` and `/readyz`. `/` is left for the dashboard.
//!
//! Every API route needs a bearer token whose role allows it (unless no token is
//! configured at all). Bodies are parsed field by field, so a malformed one gets a 4xx that
//! names the field, and nothing changes.
//!
//! The HTTP layer sits on top: its modules use the controller's state and domain modules
//! (leadership, planner, capacity, store), and none of those use it.
//!
//! - [`auth`]: tokens, principals and the roles each route needs;
//! - [`error`]: the error answer and the parsing of bodies and queries into it;
//! - [`views`]: what the API answers with and takes;
//! - `read`, `operate`, `subscribe`: the handlers, by who calls them;
//! - `forward`: on a follower, middleware that forwards writes to the leader;
//! - this module: the router and the OpenAPI document.
//!
//! The browser safety of writes (`crate::guard`) wraps this router and the extra routes
//! beside it, so it sits above this module.

pub mod auth;
pub mod error;
pub(crate) mod forward;
mod operate;
mod read;
mod subscribe;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tracing::warn;
use utoipa::OpenApi;

pub use self::auth::{Principal, Tokens};
pub use self::error::ApiError;
pub use self::views::{
    AppView, ChangeResponse, ClusterView, ReportResponse, StatusView, TargetView, VerdictView,
    WeightRequest,
};
use crate::Shared;

type Ctx = State<Arc<Shared>>;

async fn metrics(State(shared): Ctx) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): Ctx) -> Response {
    match shared.publisher.current() {
        Some(t) => format!("ok: table version {}\n", t.version()).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no table yet\n").into_response(),
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Meridian controller API", description = "Routing tables, health, weights, drains, explanations and history."),
    paths(read::status, read::app_status, read::table, operate::set_weight, operate::reset_weight, operate::drain_cluster, operate::undrain_cluster, operate::drain_target, operate::undrain_target, read::explain, read::history, read::timeline, read::audit, subscribe::watch, subscribe::probes, subscribe::reports, read::overrides, read::leader, read::inventory, read::capacity, read::plan),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// The admin listener's router (`controller.admin_listen`): health and metrics alone, for
/// probes and scrapers without a client certificate.
pub(crate) fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// The controller's router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    if shared.tokens.is_open() {
        warn!("no controller.tokens configured: the API is open to anyone who can reach it");
    }
    let metrics = shared.metrics.clone();
    Router::new()
        .route("/api/v1/status", get(read::status))
        .route("/api/v1/apps/{app}", get(read::app_status))
        .route("/api/v1/table", get(read::table))
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/weight",
            put(operate::set_weight).delete(operate::reset_weight),
        )
        .route(
            "/api/v1/clusters/{cluster}/drain",
            post(operate::drain_cluster),
        )
        .route(
            "/api/v1/clusters/{cluster}/undrain",
            post(operate::undrain_cluster),
        )
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/drain",
            post(operate::drain_target),
        )
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/undrain",
            post(operate::undrain_target),
        )
        .route("/api/v1/explain", get(read::explain))
        .route("/api/v1/history", get(read::history))
        .route("/api/v1/timeline", get(read::timeline))
        .route("/api/v1/audit", get(read::audit))
        .route("/api/v1/watch", get(subscribe::watch))
        .route("/api/v1/probes", get(subscribe::probes))
        .route("/api/v1/reports", post(subscribe::reports))
        .route("/api/v1/overrides", get(read::overrides))
        .route("/api/v1/leader", get(read::leader))
        .route("/api/v1/inventory", get(read::inventory))
        .route("/api/v1/capacity", get(read::capacity))
        .route("/api/v1/plan", get(read::plan))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(self::metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            forward::forward_writes,
        ))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let metrics = metrics.clone();
                async move {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "unmatched".into());
                    let response = next.run(req).await;
                    metrics
                        .api_requests
                        .with_label_values(&[route.as_str(), response.status().as_str()])
                        .inc();
                    response
                }
            },
        ))
        .with_state(shared)
}
