//! The routes of proxies and DNS servers (subscribers and vantages): the watch stream of
//! tables, the probe assignment, and probe and traffic reports.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use meridian_subscriber::report::{ProbeAssignment, VantageReport};
use tracing::warn;

use super::auth::{VANTAGES, WATCHERS, authorize};
use super::error::{ApiError, ApiResult, parse_body, parse_query_u64};
use super::views::ReportResponse;
use crate::publish::StreamRequest;
use crate::tls::Caller;
use crate::{Shared, now_ms};
use meridian_routing::Digest;

type Ctx = State<Arc<Shared>>;

/// The watch stream. By default newline-delimited JSON tables (a whole table first unless
/// `version` is the current one, then each new version), with empty heartbeat lines while
/// idle. With `encoding=binary` (what subscribers use): length-prefixed binary frames, a
/// snapshot or the deltas from the `version` and `digest` the subscriber holds (see
/// `publish.rs`), a zero length as the heartbeat; `snapshot=1` asks for a snapshot.
#[utoipa::path(get, path = "/api/v1/watch", tag = "subscribe",
    params(("version" = Option<u64>, Query, description = "The version the subscriber holds"),
           ("digest" = Option<String>, Query, description = "The digest of the table the subscriber holds (64 hex digits)"),
           ("encoding" = Option<String>, Query, description = "`json` (default) or `binary`"),
           ("snapshot" = Option<u64>, Query, description = "1: send a snapshot first, whatever the subscriber holds"),
           ("subscriber" = Option<String>, Query, description = "Who follows, for metrics")),
    responses((status = 200, description = "application/x-ndjson stream of tables, or application/vnd.meridian.table-frames")),
    security(("bearer" = [])))]
pub(crate) async fn watch(
    State(shared): Ctx,
    headers: Caller,
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
    let held_digest = match q.get("digest") {
        Some(d) => Some(
            d.parse::<Digest>()
                .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "digest", e))?,
        ),
        None => None,
    };
    let binary = match q.get("encoding").map(String::as_str) {
        None | Some("json") => false,
        Some("binary") => true,
        Some(other) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "encoding",
                format!("{other:?} is neither json nor binary"),
            ));
        }
    };
    let snapshot = parse_query_u64(&q, "snapshot")?.unwrap_or(0) != 0;
    let request = StreamRequest {
        held_version: held,
        held_digest,
        binary,
        snapshot,
    };
    let stream = shared.publisher.stream(
        request,
        subscriber,
        shared.heartbeat,
        shared.metrics.clone(),
        shared.shutdown.subscribe(),
    );
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if binary {
            "application/vnd.meridian.table-frames"
        } else {
            "application/x-ndjson"
        }),
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
pub(crate) async fn probes(
    State(shared): Ctx,
    headers: Caller,
) -> ApiResult<axum::Json<ProbeAssignment>> {
    authorize(&shared, &headers, VANTAGES)?;
    let inputs = shared.inputs();
    Ok(axum::Json(ProbeAssignment {
        jobs: inputs.jobs.clone(),
        report_interval_ms: inputs.report_interval.as_millis() as u64,
    }))
}

/// A vantage's probe results.
#[utoipa::path(post, path = "/api/v1/reports", tag = "subscribe",
    request_body(content = Object, description = "VantageReport"),
    responses((status = 200, body = ReportResponse), (status = 422, body = ApiError)),
    security(("bearer" = [])))]
pub(crate) async fn reports(
    State(shared): Ctx,
    headers: Caller,
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
    // A credential votes only as the vantages it names (token and client certificate):
    // one credential cannot add voters.
    if !who.may_speak_for(&report.vantage) {
        refused("forbidden-vantage");
        warn!(caller = %who.name, vantage = %report.vantage, "refused a report for a vantage its credential does not name");
        return Err(ApiError::field(
            StatusCode::FORBIDDEN,
            "vantage",
            who.refusal(&report.vantage),
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
    if !checked.traffic.is_empty() || !checked.answers.is_empty() {
        let mut st = shared.state();
        for sample in &checked.traffic {
            st.traffic.record(&report.vantage, sample, now);
        }
        for sample in &checked.answers {
            st.traffic.record_answers(&report.vantage, sample, now);
        }
    }
    shared.wake();
    Ok(axum::Json(ReportResponse { accepted }))
}
