//! The controller's HTTP surface on its one port: the API under `/api/v1/`, the OpenAPI
//! document at `/openapi.json` (generated from these handlers by utoipa), Prometheus
//! metrics at `/metrics`, and `/livez` and `/readyz`. `/` is left for the dashboard.
//!
//! Every API route needs a bearer token whose role allows it (unless no token is
//! configured at all). Bodies are parsed field by field, so a malformed one gets a 4xx that
//! names the field, and nothing changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use meridian_config::controller::{ControllerConfig, Role};
use meridian_routing::{Client, Health, Pick, RoutingTable, wire};
use meridian_subscriber::report::{ProbeAssignment, VantageReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use utoipa::{OpenApi, ToSchema};

use crate::compute::{Scope, target_key};
use crate::error::Error;
use crate::store::{AuditEntry, HistoryEntry};
use crate::verdict::Vote;
use crate::{Shared, now_ms};

/// Who made a request, from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// The vantages it may report as; `None` (an open API, no tokens) for any.
    pub vantages: Option<Vec<String>>,
}

impl Principal {
    /// Whether it may report probe results as `vantage`.
    pub fn may_speak_for(&self, vantage: &str) -> bool {
        self.vantages.as_ref().is_none_or(|allowed| {
            allowed.iter().any(|v| match v.strip_suffix('*') {
                Some(prefix) => vantage.starts_with(prefix),
                None => v == vantage,
            })
        })
    }
}

/// The configured tokens, by the SHA-256 of their secret. Only digests are kept in memory,
/// and tokens are never logged.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    /// The tokens of a controller section; token files are read relative to `base`.
    pub fn from_config(section: &ControllerConfig, base: &Path) -> Result<Self, Error> {
        let mut by_digest = HashMap::new();
        for (index, token) in section.tokens.iter().enumerate() {
            let digest: [u8; 32] = match (&token.sha256, &token.file) {
                (Some(hex_digest), _) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(hex_digest.to_ascii_lowercase(), &mut out).map_err(
                        |e| Error::Config {
                            file: base.to_path_buf(),
                            path: format!("controller.tokens[{index}].sha256"),
                            message: e.to_string(),
                        },
                    )?;
                    out
                }
                (None, Some(file)) => {
                    let path = base.join(file);
                    let secret =
                        std::fs::read_to_string(&path).map_err(|error| Error::TokenFile {
                            index,
                            path: path.clone(),
                            error,
                        })?;
                    Sha256::digest(secret.trim().as_bytes()).into()
                }
                (None, None) => {
                    return Err(Error::Config {
                        file: base.to_path_buf(),
                        path: format!("controller.tokens[{index}]"),
                        message: "give exactly one of `sha256` and `file`".into(),
                    });
                }
            };
            by_digest.insert(
                digest,
                Principal {
                    name: token.name.clone(),
                    role: token.role,
                    vantages: Some(token.allowed_vantages()),
                },
            );
        }
        Ok(Self { by_digest })
    }

    /// True when no token is configured: every request acts as an anonymous operator.
    pub fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.is_open() {
            return Ok(Principal {
                name: "anonymous".into(),
                role: Role::Operator,
                vantages: None,
            });
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// An API error: a status and a message, with the offending field when there is one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// What is wrong.
    pub error: String,
    /// The field it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
        }
    }
    pub(crate) fn field(
        status: StatusCode,
        field: impl Into<String>,
        error: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Self {
            status,
            error: format!("{field}: {}", error.into()),
            field: Some(field),
        }
    }
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    fn internal(err: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::NotLeader => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = axum::Json(&self).into_response();
        *response.status_mut() = self.status;
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Ctx = State<Arc<Shared>>;

pub(crate) const READERS: &[Role] = &[Role::ReadOnly, Role::Operator];
const WATCHERS: &[Role] = &[Role::ReadOnly, Role::Operator, Role::Subscriber];
const VANTAGES: &[Role] = &[Role::Subscriber, Role::Operator];
pub(crate) const OPERATORS: &[Role] = &[Role::Operator];

pub(crate) fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    roles: &[Role],
) -> ApiResult<Principal> {
    let principal = shared.tokens.authenticate(headers)?;
    if !roles.contains(&principal.role) {
        let allowed: Vec<&str> = roles.iter().map(Role::name).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has role {}; this needs one of: {}",
                principal.name,
                principal.role.name(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(principal)
}

/// Parses a JSON body, naming the field that is wrong.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "request body: expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        // serde names a missing or unknown field in its message, not in the path.
        let field = [("missing field `", '`'), ("unknown field `", '`')]
            .iter()
            .find_map(|(prefix, end)| {
                let rest = message.split_once(prefix)?.1;
                Some(rest.split(*end).next()?.to_string())
            });
        let field = match (path.as_str(), field) {
            (".", Some(f)) => f,
            (".", None) => "request body".to_string(),
            (p, _) => p.to_string(),
        };
        ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, field, message)
    })
}

fn parse_query_u64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    name,
                    format!("{v:?} is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

pub(crate) fn current_table(shared: &Shared) -> ApiResult<Arc<RoutingTable>> {
    shared
        .publisher
        .current()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no table computed yet"))
}

/// A cluster with its drain state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Provider.
    pub provider: String,
    /// Ingress endpoints.
    pub endpoints: Vec<String>,
    /// When a drain of the whole cluster began, if one is active.
    pub drain_started_at_ms: Option<u64>,
}

/// A target's verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerdictView {
    /// Whether the verdict lets it serve.
    pub healthy: bool,
    /// False until a quorum of vantages that probed it decided: unknown is not up.
    #[serde(default)]
    pub known: bool,
    /// When it last changed (0: never).
    pub changed_at_ms: u64,
    /// A recovery held down until then, by flap damping.
    pub held_until_ms: Option<u64>,
    /// Every vantage's latest vote.
    pub votes: Vec<Vote>,
}

/// A target with live health, weights and verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    /// The cluster.
    pub cluster: String,
    /// Tier.
    pub tier: u8,
    /// The configured weight.
    pub configured_weight: u32,
    /// The operator's weight, when set.
    pub weight_override: Option<u32>,
    /// The weight in the table.
    pub weight: u32,
    /// The weight selection uses (1/1000 units, after health).
    pub effective_weight: u32,
    /// Health in the table, such as `healthy`, `draining`, `slow-start`.
    pub health: String,
    /// Progress of a drain or slow start, 0 to 1.
    pub progress: Option<f64>,
    /// When an active drain of this target (or its cluster) began.
    pub drain_started_at_ms: Option<u64>,
    /// The verdict and its votes.
    pub verdict: VerdictView,
    /// Live traffic from the proxies' reports; absent when no proxy reports any.
    pub traffic: Option<crate::traffic::TrafficView>,
}

/// An app with its targets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    /// Name.
    pub name: String,
    /// Hostnames.
    pub hostnames: Vec<String>,
    /// Policy.
    pub policy: String,
    /// `fail-open` or `fail-closed`.
    pub failure_mode: String,
    /// Targets.
    pub targets: Vec<TargetView>,
}

/// The whole picture.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// The published table's version.
    pub table_version: u64,
    /// When it was computed.
    pub generated_at_ms: u64,
    /// Clusters.
    pub clusters: Vec<ClusterView>,
    /// Apps.
    pub apps: Vec<AppView>,
}

fn status_view(shared: &Shared) -> ApiResult<StatusView> {
    let table = current_table(shared)?;
    let st = shared.state();
    let clusters = table
        .clusters()
        .iter()
        .map(|c| ClusterView {
            name: c.name.clone(),
            region: c.region.clone(),
            provider: c.provider.clone(),
            endpoints: c.endpoints.iter().map(ToString::to_string).collect(),
            drain_started_at_ms: st
                .overrides
                .drains
                .get(
                    &Scope::Cluster {
                        cluster: c.name.clone(),
                    }
                    .key(),
                )
                .copied(),
        })
        .collect();
    let now = now_ms();
    // Rates older than a few report intervals describe traffic that has stopped.
    let inputs = shared.inputs();
    let traffic_max_age_ms = (inputs.report_interval.as_millis() as u64 * 3).max(3_000);
    let apps = table
        .apps()
        .iter()
        .map(|app| (app, inputs.config.apps.iter().find(|a| a.name == app.name)))
        .map(|(app, cfg)| AppView {
            name: app.name.clone(),
            hostnames: app.hostnames.clone(),
            policy: app.policy.name().into(),
            failure_mode: match app.failure_mode {
                meridian_routing::FailureMode::FailOpen => "fail-open".into(),
                meridian_routing::FailureMode::FailClosed => "fail-closed".into(),
            },
            targets: app
                .targets
                .iter()
                .map(|t| {
                    // The table may be a moment older than a config just swapped in.
                    let configured_weight = cfg
                        .and_then(|c| c.targets.iter().find(|tc| tc.cluster == t.cluster))
                        .map_or(t.weight, |tc| tc.weight);
                    let verdict = st.verdicts.verdict(&app.name, &t.cluster);
                    let drains = [
                        Scope::Target {
                            app: app.name.clone(),
                            cluster: t.cluster.clone(),
                        }
                        .key(),
                        Scope::Cluster {
                            cluster: t.cluster.clone(),
                        }
                        .key(),
                    ];
                    TargetView {
                        cluster: t.cluster.clone(),
                        tier: t.tier,
                        configured_weight,
                        weight_override: st
                            .overrides
                            .weights
                            .get(&target_key(&app.name, &t.cluster))
                            .copied(),
                        weight: t.weight,
                        effective_weight: t.effective_weight(),
                        health: t.health.name().into(),
                        progress: match t.health {
                            Health::Draining { progress } | Health::SlowStart { progress } => {
                                Some(progress)
                            }
                            _ => None,
                        },
                        drain_started_at_ms: drains
                            .iter()
                            .filter_map(|k| st.overrides.drains.get(k).copied())
                            .min(),
                        traffic: st
                            .traffic
                            .target(&app.name, &t.cluster, now, traffic_max_age_ms),
                        verdict: VerdictView {
                            healthy: verdict.is_some_and(|v| v.healthy),
                            known: verdict.is_some_and(|v| v.known),
                            changed_at_ms: verdict.map_or(0, |v| v.changed_at_ms),
                            held_until_ms: verdict.and_then(|v| v.held_until_ms),
                            votes: st.verdicts.votes(&app.name, &t.cluster),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    Ok(StatusView {
        table_version: table.version(),
        generated_at_ms: table.data().generated_at_ms,
        clusters,
        apps,
    })
}

/// Clusters and apps with live health, per-vantage verdict details and current weights.
#[utoipa::path(get, path = "/api/v1/status", tag = "read",
    responses((status = 200, body = StatusView), (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("bearer" = [])))]
async fn status(State(shared): Ctx, headers: HeaderMap) -> ApiResult<axum::Json<StatusView>> {
    authorize(&shared, &headers, READERS)?;
    status_view(&shared).map(axum::Json)
}

/// One app with its targets.
#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "read",
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, body = AppView), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn app_status(
    State(shared): Ctx,
    headers: HeaderMap,
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

/// The published routing table, in the wire format.
#[utoipa::path(get, path = "/api/v1/table", tag = "read",
    responses((status = 200, description = "The table in the wire format (JSON)")),
    security(("bearer" = [])))]
async fn table(State(shared): Ctx, headers: HeaderMap) -> ApiResult<Response> {
    authorize(&shared, &headers, WATCHERS)?;
    let table = current_table(&shared)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        wire::encode(&table),
    )
        .into_response())
}

/// Body of a weight change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    /// The new weight, 0 to 10000.
    pub weight: u32,
}

/// The outcome of a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeResponse {
    /// The audit entry that records it.
    pub audit: AuditEntry,
    /// The table version that carries it.
    pub table_version: u64,
}

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
async fn set_weight(
    State(shared): Ctx,
    headers: HeaderMap,
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
async fn reset_weight(
    State(shared): Ctx,
    headers: HeaderMap,
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

async fn drain_change(
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
async fn drain_cluster(
    State(shared): Ctx,
    headers: HeaderMap,
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
async fn undrain_cluster(
    State(shared): Ctx,
    headers: HeaderMap,
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
async fn drain_target(
    State(shared): Ctx,
    headers: HeaderMap,
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
async fn undrain_target(
    State(shared): Ctx,
    headers: HeaderMap,
    UrlPath((app, cluster)): UrlPath<(String, String)>,
) -> ApiResult<axum::Json<ChangeResponse>> {
    let who = authorize(&shared, &headers, OPERATORS)?;
    check_target(&shared, &app, &cluster)?;
    drain_change(shared, who, Scope::Target { app, cluster }, false)
        .await
        .map(axum::Json)
}

/// Which target the current table chooses for a hostname and a client address, and why.
#[utoipa::path(get, path = "/api/v1/explain", tag = "read",
    params(("host" = String, Query, description = "Hostname"),
           ("client" = String, Query, description = "Client IP address"),
           ("key" = Option<String>, Query, description = "Affinity key; defaults to the client address")),
    responses((status = 200, description = "routing's Explanation", body = Object), (status = 400, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn explain(
    State(shared): Ctx,
    headers: HeaderMap,
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

fn limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    Ok(parse_query_u64(q, "limit")?.unwrap_or(100).min(10_000) as usize)
}

/// Failover history: verdict changes with time, cause and the vantages' votes, newest first.
#[utoipa::path(get, path = "/api/v1/history", tag = "read",
    params(("limit" = Option<u64>, Query, description = "At most this many entries (default 100)")),
    responses((status = 200, body = Vec<HistoryEntry>), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
async fn history(
    State(shared): Ctx,
    headers: HeaderMap,
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

/// The audit log: every change, who made it and when, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "read",
    params(("limit" = Option<u64>, Query, description = "At most this many entries (default 100)")),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError)),
    security(("bearer" = [])))]
async fn audit(
    State(shared): Ctx,
    headers: HeaderMap,
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

/// The watch stream: newline-delimited tables in the wire format (a snapshot first unless
/// `version` is the current one), with empty heartbeat lines while idle.
#[utoipa::path(get, path = "/api/v1/watch", tag = "subscribe",
    params(("version" = Option<u64>, Query, description = "The version the subscriber holds"),
           ("subscriber" = Option<String>, Query, description = "Who follows, for metrics")),
    responses((status = 200, description = "application/x-ndjson stream of tables")),
    security(("bearer" = [])))]
async fn watch(
    State(shared): Ctx,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let who = authorize(&shared, &headers, WATCHERS)?;
    let held = parse_query_u64(&q, "version")?.unwrap_or(0);
    let subscriber = q.get("subscriber").cloned().unwrap_or(who.name);
    // The name becomes a metric label: bounded, printable.
    if subscriber.is_empty()
        || subscriber.len() > crate::intake::MAX_VANTAGE_LEN
        || subscriber.chars().any(char::is_control)
    {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "subscriber",
            format!(
                "must be 1 to {} printable characters",
                crate::intake::MAX_VANTAGE_LEN
            ),
        ));
    }
    let stream = shared.publisher.stream(
        held,
        subscriber,
        shared.heartbeat,
        shared.metrics.clone(),
        shared.shutdown.subscribe(),
    );
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&shared.heartbeat.as_millis().to_string()) {
        h.insert("meridian-heartbeat-ms", v);
    }
    Ok(response)
}

/// The probes vantages run, and how often they report.
#[utoipa::path(get, path = "/api/v1/probes", tag = "subscribe",
    responses((status = 200, description = "ProbeAssignment", body = Object)),
    security(("bearer" = [])))]
async fn probes(State(shared): Ctx, headers: HeaderMap) -> ApiResult<axum::Json<ProbeAssignment>> {
    authorize(&shared, &headers, VANTAGES)?;
    let inputs = shared.inputs();
    Ok(axum::Json(ProbeAssignment {
        jobs: inputs.jobs.clone(),
        report_interval_ms: inputs.report_interval.as_millis() as u64,
    }))
}

/// Accepted observations of a report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    /// Observations recorded.
    pub accepted: usize,
}

/// A vantage's probe results.
#[utoipa::path(post, path = "/api/v1/reports", tag = "subscribe",
    request_body(content = Object, description = "VantageReport"),
    responses((status = 200, body = ReportResponse), (status = 422, body = ApiError)),
    security(("bearer" = [])))]
async fn reports(
    State(shared): Ctx,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<ReportResponse>> {
    let who = authorize(&shared, &headers, VANTAGES)?;
    let refused = |reason: &str| {
        shared
            .metrics
            .reports_refused
            .with_label_values(&[reason])
            .inc()
    };
    let report: VantageReport = parse_body(&body).inspect_err(|_| refused("invalid"))?;
    // A credential votes only as the vantages it names: one token cannot add voters.
    if !who.may_speak_for(&report.vantage) {
        refused("forbidden-vantage");
        warn!(token = %who.name, vantage = %report.vantage, "refused a report for a vantage the token does not name");
        return Err(ApiError::field(
            StatusCode::FORBIDDEN,
            "vantage",
            format!(
                "token {:?} may report as {}, not as {:?} (controller.tokens[].vantages)",
                who.name,
                who.vantages.as_deref().unwrap_or_default().join(", "),
                report.vantage
            ),
        ));
    }
    // Check the whole report before recording any of it, so a bad report changes nothing.
    let now = now_ms();
    let checked = crate::intake::check_report(
        &report,
        &shared.inputs(),
        &shared.vantage,
        now,
        shared.opts.forget_after_ms(),
    )
    .map_err(|p| {
        refused("invalid");
        ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, p.field, p.message)
    })?;
    if !shared.admit_vantage(&report.vantage, now) {
        refused("too-many-vantages");
        return Err(ApiError::field(
            StatusCode::TOO_MANY_REQUESTS,
            "vantage",
            format!(
                "{} vantages report already (the most kept at once); {:?} is refused until some fall silent",
                crate::intake::MAX_VANTAGES,
                report.vantage
            ),
        ));
    }
    if checked.stale > 0 {
        shared
            .metrics
            .samples_ignored
            .with_label_values(&["stale"])
            .inc_by(checked.stale as u64);
    }
    let accepted = checked
        .observations
        .iter()
        .filter(|obs| shared.observe(&report.vantage, report.region.as_deref(), obs))
        .count();
    if !checked.traffic.is_empty() {
        let mut st = shared.state();
        for sample in &checked.traffic {
            st.traffic.record(&report.vantage, sample, now);
        }
    }
    shared.wake();
    Ok(axum::Json(ReportResponse { accepted }))
}

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
    paths(status, app_status, table, set_weight, reset_weight, drain_cluster, undrain_cluster,
          drain_target, undrain_target, explain, history, audit, watch, probes, reports,
          overrides, leader, inventory, capacity, crate::plan::plan),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

/// The operator overrides in force: weights, drains, recent undrains. Followers mirror
/// them from the leader.
#[utoipa::path(get, path = "/api/v1/overrides", tag = "read",
    responses((status = 200, description = "Overrides", body = Object)),
    security(("bearer" = [])))]
async fn overrides(
    State(shared): Ctx,
    headers: HeaderMap,
) -> ApiResult<axum::Json<crate::compute::Overrides>> {
    authorize(&shared, &headers, WATCHERS)?;
    Ok(axum::Json(shared.state().overrides.clone()))
}

/// Which replica leads (writes), and this replica's identity.
#[utoipa::path(get, path = "/api/v1/leader", tag = "read",
    responses((status = 200, body = crate::leadership::Leadership)),
    security(("bearer" = [])))]
async fn leader(
    State(shared): Ctx,
    headers: HeaderMap,
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
async fn inventory(State(shared): Ctx, headers: HeaderMap) -> ApiResult<Response> {
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
async fn capacity(
    State(shared): Ctx,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Vec<crate::capacity::AppCapacity>>> {
    authorize(&shared, &headers, READERS)?;
    let capacity = shared
        .capacity
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(axum::Json(capacity.as_ref().clone()))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// The controller's router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    if shared.tokens.is_open() {
        warn!("no controller.tokens configured: the API is open to anyone who can reach it");
    }
    let metrics = shared.metrics.clone();
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/apps/{app}", get(app_status))
        .route("/api/v1/table", get(table))
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/weight",
            put(set_weight).delete(reset_weight),
        )
        .route("/api/v1/clusters/{cluster}/drain", post(drain_cluster))
        .route("/api/v1/clusters/{cluster}/undrain", post(undrain_cluster))
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/drain",
            post(drain_target),
        )
        .route(
            "/api/v1/apps/{app}/targets/{cluster}/undrain",
            post(undrain_target),
        )
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/history", get(history))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/watch", get(watch))
        .route("/api/v1/probes", get(probes))
        .route("/api/v1/reports", post(reports))
        .route("/api/v1/overrides", get(overrides))
        .route("/api/v1/leader", get(leader))
        .route("/api/v1/inventory", get(inventory))
        .route("/api/v1/capacity", get(capacity))
        .route("/api/v1/plan", get(crate::plan::plan))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(self::metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::leadership::forward_writes,
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
