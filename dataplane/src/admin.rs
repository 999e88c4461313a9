//! The admin listener: `/livez`, `/readyz` (503 while draining or without a table),
//! `/metrics` (Prometheus text). Separate from client traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::forward::Shared;

/// Serves until `handed_over` turns true: the next process answers on this listener then
/// (it shares the socket), and a draining proxy's 503 must not reach the health checks.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut handed_over: tokio::sync::watch::Receiver<bool>,
) {
    let mut watching = true;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = handed_over.wait_for(|done| *done), if watching => {
                if changed.is_ok() {
                    return;
                }
                // The sender went without a handover: there will be none.
                watching = false;
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(%err, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    match req.uri().path() {
        "/livez" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let status = crate::status(shared);
            let code = if status.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "ready": status.ready,
                "draining": status.draining,
                "table_version": status.table_version,
                "table_staleness_seconds": status.table_staleness.map(|d| d.as_secs_f64()),
            });
            text(code, "application/json", format!("{body}\n"))
        }
        "/metrics" => {
            let m = &shared.metrics;
            m.table_version.set(shared.cell.version() as i64);
            m.table_staleness.set(
                shared
                    .cell
                    .staleness()
                    .map_or(f64::NAN, |d| d.as_secs_f64()),
            );
            m.draining
                .set(i64::from(shared.draining.load(Ordering::Relaxed)));
            text(StatusCode::OK, "text/plain; version=0.0.4", m.render())
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
