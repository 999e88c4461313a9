//! The read routes: status, one app, the table, explanations, history, audit, overrides,
//! leadership, inventory, capacity and the dry-run planner.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_capacity::{CapacityError, Scenario};
use meridian_routing::{Client, Pick, wire};

use super::auth::{READERS, WATCHERS, authorize};
use super::error::{ApiError, ApiResult, limit, parse_query_u64};
use super::views::{AppView, StatusView, current_table, status_view};
use crate::plan::{observed, parse_scenario, plan_input};
use crate::store::{AuditEntry, HistoryEntry};
use crate::tls::Caller;
use crate::{Shared, now_ms};

type Ctx = State<Arc<Shared>>;

/// Clusters and apps with live health, per-vantage verdict details and current weights.
#[utoipa::path(get, path = "/api/v1/status", tag = "read",
    responses((status = 200, body = StatusView), (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn status(
    State(shared): Ctx,
    headers: Caller,
) -> ApiResult<axum::Json<StatusView>> {
    authorize(&shared, &headers, READERS)?;
    status_view(&shared).map(axum::Json)
}

/// One app with its targets.
#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "read",
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, body = AppView), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn app_status(
    State(shared): Ctx,
    headers: Caller,
    UrlPath(app): UrlPath<String>,
) -> ApiResult<axum::Json<AppView>> {
    authorize(&shared, &headers, READERS)?;
    status_view(&shared)?
        .apps
        .into_iter()
        .find(|a| a.name == app)
        .map(axum::Json)
        .ok_or_else(|| ApiError::field(StatusCode::NOT_FOUND, "app", format!("no app {app:?}")))
}

/// The published routing table, in the wire format's JSON encoding.
#[utoipa::path(get, path = "/api/v1/table", tag = "read",
    responses((status = 200, description = "The table in the wire format (JSON)")),
    security(("bearer" = [])))]
pub(crate) async fn table(State(shared): Ctx, headers: Caller) -> ApiResult<Response> {
    authorize(&shared, &headers, WATCHERS)?;
    let table = current_table(&shared)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        wire::encode_json(&table),
    )
        .into_response())
}

/// Which target the current table chooses for a hostname and a client address, and why.
#[utoipa::path(get, path = "/api/v1/explain", tag = "read",
    params(("host" = String, Query, description = "Hostname"),
           ("client" = String, Query, description = "Client IP address"),
           ("key" = Option<String>, Query, description = "Affinity key; defaults to the client address")),
    responses((status = 200, description = "routing's Explanation", body = Object), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn explain(
    State(shared): Ctx,
    headers: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    authorize(&shared, &headers, READERS)?;
    let host = q
        .get("host")
        .ok_or_else(|| ApiError::field(StatusCode::BAD_REQUEST, "host", "is required"))?;
    let client_text = q
        .get("client")
        .ok_or_else(|| ApiError::field(StatusCode::BAD_REQUEST, "client", "is required"))?;
    let addr: IpAddr = client_text.parse().map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "client",
            format!("{client_text:?} is not an IP address"),
        )
    })?;
    let table = current_table(&shared)?;
    let app = table.app_for_host(host).ok_or_else(|| {
        ApiError::field(
            StatusCode::NOT_FOUND,
            "host",
            format!("no app serves {host:?}"),
        )
    })?;
    let region = table.resolve_region(addr, None).map(|(r, _)| r);
    let key = q.get("key").cloned().unwrap_or_else(|| addr.to_string());
    let explanation = table.explain(
        app,
        &Client { addr, region },
        Pick::Affinity(fnv1a(key.as_bytes())),
    );
    Ok(axum::Json(explanation).into_response())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Failover history: verdict changes with time, cause and the vantages' votes, newest first.
#[utoipa::path(get, path = "/api/v1/history", tag = "read",
    params(("limit" = Option<u64>, Query, description = "At most this many entries (default 100)")),
    responses((status = 200, body = Vec<HistoryEntry>), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn history(
    State(shared): Ctx,
    headers: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<HistoryEntry>>> {
    authorize(&shared, &headers, READERS)?;
    let limit = limit(&q)?;
    shared
        .store
        .history(limit)
        .map(axum::Json)
        .map_err(ApiError::internal)
}

/// The charts over time: per target, requests/s, error ratio, upstream p99, DNS answers/s and
/// replicas ready over the last `window_ms` (at most 6 h; 15 min at 2 s steps, 1 h at 15 s,
/// 6 h at 60 s), with the verdict changes, member events and operator changes in it.
#[utoipa::path(get, path = "/api/v1/timeline", tag = "read",
    params(("window_ms" = Option<u64>, Query, description = "How far back, ms (default 900000: 15 min; 60000 to 21600000)")),
    responses((status = 200, body = crate::timeline::TimelineView), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn timeline(
    State(shared): Ctx,
    headers: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<crate::timeline::TimelineView>> {
    authorize(&shared, &headers, READERS)?;
    const WINDOWS_MS: std::ops::RangeInclusive<u64> = 60_000..=21_600_000;
    let window_ms = parse_query_u64(&q, "window_ms")?.unwrap_or(900_000);
    if !WINDOWS_MS.contains(&window_ms) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "window_ms",
            format!(
                "{window_ms} is outside {}..={} (1 min to 6 h)",
                WINDOWS_MS.start(),
                WINDOWS_MS.end()
            ),
        ));
    }
    Ok(axum::Json(shared.timeline_window(window_ms, now_ms())?))
}

/// The audit log: every change, who made it and when, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "read",
    params(("limit" = Option<u64>, Query, description = "At most this many entries (default 100)")),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn audit(
    State(shared): Ctx,
    headers: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Vec<AuditEntry>>> {
    authorize(&shared, &headers, READERS)?;
    let limit = limit(&q)?;
    shared
        .store
        .audit(limit)
        .map(axum::Json)
        .map_err(ApiError::internal)
}

/// The operator overrides in force: weights, drains, recent undrains. Followers mirror
/// them from the leader.
#[utoipa::path(get, path = "/api/v1/overrides", tag = "read",
    responses((status = 200, description = "Overrides", body = Object)),
    security(("bearer" = [])))]
pub(crate) async fn overrides(
    State(shared): Ctx,
    headers: Caller,
) -> ApiResult<axum::Json<crate::compute::Overrides>> {
    authorize(&shared, &headers, WATCHERS)?;
    Ok(axum::Json(shared.state().overrides.clone()))
}

/// Which replica leads (writes), and this replica's identity.
#[utoipa::path(get, path = "/api/v1/leader", tag = "read",
    responses((status = 200, body = crate::leadership::Leadership)),
    security(("bearer" = [])))]
pub(crate) async fn leader(
    State(shared): Ctx,
    headers: Caller,
) -> ApiResult<axum::Json<crate::leadership::Leadership>> {
    authorize(&shared, &headers, WATCHERS)?;
    Ok(axum::Json(shared.leadership.borrow().clone()))
}

/// The member clusters as their API servers describe them (Kubernetes mode): reachability,
/// discovered ingress endpoints, Kubernetes version, nodes, CPU and memory, and each app's
/// desired and ready replicas. Empty in file mode.
#[utoipa::path(get, path = "/api/v1/inventory", tag = "read",
    responses((status = 200, description = "MemberView per cluster", body = Object)),
    security(("bearer" = [])))]
pub(crate) async fn inventory(State(shared): Ctx, headers: Caller) -> ApiResult<Response> {
    authorize(&shared, &headers, READERS)?;
    let members = shared
        .members
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(axum::Json(members.values().collect::<Vec<_>>()).into_response())
}

/// Capacity-first failover (Kubernetes mode): per app with a placement, where its transition
/// stands (converged, waiting for capacity, capacity short) and each cluster's replicas
/// desired, ready and wanted, and the weight allowed now. Empty in file mode.
#[utoipa::path(get, path = "/api/v1/capacity", tag = "read",
    responses((status = 200, body = Vec<crate::capacity::AppCapacity>)),
    security(("bearer" = [])))]
pub(crate) async fn capacity(
    State(shared): Ctx,
    headers: Caller,
) -> ApiResult<axum::Json<Vec<crate::capacity::AppCapacity>>> {
    authorize(&shared, &headers, READERS)?;
    let capacity = shared
        .capacity
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(axum::Json(capacity.as_ref().clone()))
}

/// What-if: the weights, traffic, replicas, sufficiency and cost change of a scenario,
/// computed by the capacity engine from the current table, traffic and replicas.
#[utoipa::path(get, path = "/api/v1/plan", tag = "read",
    params(("scenario" = Option<String>, Query,
        description = "now (default), fail:CLUSTER, drain:CLUSTER or peak:FACTOR")),
    responses((status = 200, description = "meridian_capacity's Plan", body = Object),
        (status = 422, body = ApiError), (status = 503, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn plan(
    State(shared): State<Arc<Shared>>,
    headers: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&shared, &headers, READERS)?;
    let bad =
        |message: String| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "scenario", message);
    let scenario = match q.get("scenario") {
        Some(text) => parse_scenario(text).map_err(|e| bad(e.to_string()))?,
        None => Scenario::Now,
    };
    let inputs = shared.inputs();
    let config = &inputs.config;
    if let Scenario::Fail { cluster } | Scenario::Drain { cluster } = &scenario
        && !config.clusters.iter().any(|c| c.name == *cluster)
    {
        let known: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        return Err(bad(format!(
            "unknown cluster {cluster:?} (clusters: {})",
            known.join(", ")
        )));
    }
    let table = current_table(&shared)?;
    let (traffic, replicas) = observed(&shared, &table);
    let result = plan_input(
        config,
        &table,
        &traffic,
        replicas.as_ref(),
        scenario,
        now_ms(),
    )
    .and_then(|input| meridian_capacity::plan(&input));
    match result {
        Ok(plan) => Ok(axum::Json(plan).into_response()),
        Err(CapacityError::UnknownCluster(c)) => Err(bad(format!("unknown cluster {c:?}"))),
        // Anything else is the config's or the state's, not the request's.
        Err(err) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("planning failed: {err}"),
        )),
    }
}
