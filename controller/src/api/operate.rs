//! The operator's routes: weight overrides and drains of clusters and targets. Each change
//! is applied with its audit entry and the table it gives, all or nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use tracing::info;

use super::auth::{OPERATORS, Principal, authorize};
use super::error::{ApiError, ApiResult, parse_body};
use super::views::{ChangeResponse, WeightRequest};
use crate::Shared;
use crate::compute::{Scope, target_key};
use crate::store::AuditEntry;
use crate::tls::Caller;

type Ctx = State<Arc<Shared>>;

fn check_target(shared: &Shared, app: &str, cluster: &str) -> ApiResult<()> {
    let inputs = shared.inputs();
    let Some(a) = inputs.config.apps.iter().find(|a| a.name == app) else {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "app",
            format!("no app {app:?}"),
        ));
    };
    if !a.targets.iter().any(|t| t.cluster == cluster) {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "cluster",
            format!("app {app:?} has no target in cluster {cluster:?}"),
        ));
    }
    Ok(())
}

fn check_cluster(shared: &Shared, cluster: &str) -> ApiResult<()> {
    if shared
        .inputs()
        .config
        .clusters
        .iter()
        .any(|c| c.name == cluster)
    {
        Ok(())
    } else {
        Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "cluster",
            format!("no cluster {cluster:?}"),
        ))
    }
}

/// Applies an override change, its audit entry and the table it gives, all or nothing.
/// The compute and the store's fsync run on a blocking thread, never on the async workers
/// that serve every other request.
async fn apply_change(
    shared: Arc<Shared>,
    who: Principal,
    action: &'static str,
    subject: String,
    detail: serde_json::Value,
    change: impl FnOnce(&mut crate::compute::Overrides, u64) -> ApiResult<()> + Send + 'static,
) -> ApiResult<ChangeResponse> {
    let (audit, table_version) = tokio::task::spawn_blocking(move || {
        shared.change_overrides(|next, now| {
            change(next, now)?;
            Ok::<_, ApiError>(AuditEntry {
                seq: 0,
                at_ms: now,
                who: who.name,
                role: who.role.name().into(),
                action: action.into(),
                subject,
                detail,
            })
        })
    })
    .await
    .map_err(ApiError::internal)??;
    info!(who = %audit.who, action = %audit.action, subject = %audit.subject, "operator change");
    Ok(ChangeResponse {
        audit,
        table_version,
    })
}

/// Sets a target's weight, replacing the configured one.
#[utoipa::path(put, path = "/api/v1/apps/{app}/targets/{cluster}/weight", tag = "operate",
    params(("app" = String, Path), ("cluster" = String, Path)),
    request_body = WeightRequest,
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 422, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn set_weight(
    State(shared): Ctx,
    headers: Caller,
    UrlPath((app, cluster)): UrlPath<(String, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_target(&shared, &app, &cluster)?;
    let req: WeightRequest = parse_body(&body)?;
    if req.weight > meridian_routing::app::MAX_WEIGHT {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weight",
            format!(
                "{} is above the maximum {}",
                req.weight,
                meridian_routing::app::MAX_WEIGHT
            ),
        ));
    }
    let key = target_key(&app, &cluster);
    apply_change(
        shared,
        who,
        "set-weight",
        format!("target:{key}"),
        serde_json::json!({ "weight": req.weight }),
        move |o, _| {
            o.weights.insert(key, req.weight);
            Ok(())
        },
    )
    .await
    .map(axum::Json)
}

/// Removes a target's weight override: the configured weight applies again.
#[utoipa::path(delete, path = "/api/v1/apps/{app}/targets/{cluster}/weight", tag = "operate",
    params(("app" = String, Path), ("cluster" = String, Path)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn reset_weight(
    State(shared): Ctx,
    headers: Caller,
    UrlPath((app, cluster)): UrlPath<(String, String)>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_target(&shared, &app, &cluster)?;
    let key = target_key(&app, &cluster);
    apply_change(
        shared,
        who,
        "reset-weight",
        format!("target:{key}"),
        serde_json::json!({}),
        move |o, _| {
            o.weights.remove(&key).map(|_| ()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    format!("target {key} has no weight override"),
                )
            })
        },
    )
    .await
    .map(axum::Json)
}

pub(crate) async fn drain_change(
    shared: Arc<Shared>,
    who: Principal,
    scope: Scope,
    drain: bool,
) -> ApiResult<ChangeResponse> {
    let key = scope.key();
    let action = if drain { "drain" } else { "undrain" };
    apply_change(
        shared,
        who,
        action,
        key.clone(),
        serde_json::to_value(&scope).unwrap_or_default(),
        move |o, now| {
            if drain {
                if o.drains.contains_key(&key) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("{key} is already draining"),
                    ));
                }
                o.drains.insert(key.clone(), now);
                o.undrains.remove(&key);
            } else {
                if o.drains.remove(&key).is_none() {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("{key} is not drained"),
                    ));
                }
                o.undrains.insert(key.clone(), now);
            }
            Ok(())
        },
    )
    .await
}

/// Drains a cluster: every target in it ramps to zero over its app's drain period.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/drain", tag = "operate",
    params(("cluster" = String, Path)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn drain_cluster(
    State(shared): Ctx,
    headers: Caller,
    UrlPath(cluster): UrlPath<String>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_cluster(&shared, &cluster)?;
    drain_change(shared, who, Scope::Cluster { cluster }, true)
        .await
        .map(axum::Json)
}

/// Ends a cluster's drain: its targets ramp back over their apps' slow start.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/undrain", tag = "operate",
    params(("cluster" = String, Path)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn undrain_cluster(
    State(shared): Ctx,
    headers: Caller,
    UrlPath(cluster): UrlPath<String>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_cluster(&shared, &cluster)?;
    drain_change(shared, who, Scope::Cluster { cluster }, false)
        .await
        .map(axum::Json)
}

/// Drains one target.
#[utoipa::path(post, path = "/api/v1/apps/{app}/targets/{cluster}/drain", tag = "operate",
    params(("app" = String, Path), ("cluster" = String, Path)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn drain_target(
    State(shared): Ctx,
    headers: Caller,
    UrlPath((app, cluster)): UrlPath<(String, String)>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_target(&shared, &app, &cluster)?;
    drain_change(shared, who, Scope::Target { app, cluster }, true)
        .await
        .map(axum::Json)
}

/// Ends one target's drain.
#[utoipa::path(post, path = "/api/v1/apps/{app}/targets/{cluster}/undrain", tag = "operate",
    params(("app" = String, Path), ("cluster" = String, Path)),
    responses((status = 200, body = ChangeResponse), (status = 404, body = ApiError), (status = 409, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn undrain_target(
    State(shared): Ctx,
    headers: Caller,
    UrlPath((app, cluster)): UrlPath<(String, String)>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_target(&shared, &app, &cluster)?;
    drain_change(shared, who, Scope::Target { app, cluster }, false)
        .await
        .map(axum::Json)
}
