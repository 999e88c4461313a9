//! The operator dashboard: one page, embedded in the binary, served by the controller at `/`.
//!
//! The page is static HTML, CSS and a small hand-written script (no build step, no Node): the
//! script reads the controller's own API (`/api/v1/status`, `/history`, `/explain`, `/table`,
//! `/timeline`, and `/api/v1/demo/…` when the demo runs) every second and renders clusters,
//! per-vantage health, weights, traffic, charts over time, per-region answers and history; its
//! buttons call the same API an operator's CLI does, with the bearer token the user gives it.
//! The charts are drawn by uPlot (MIT), vendored as its released minified file under
//! `assets/vendor/` with its licence: small (50 KB), no dependencies, fast on canvas.
//!
//! What it must not do: hold state or decide anything. Every number on the page comes from the
//! API; every action goes through it, with its roles and audit log.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
const UPLOT_SCRIPT: &str = include_str!("../assets/vendor/uPlot.iife.min.js");
const UPLOT_STYLE: &str = include_str!("../assets/vendor/uPlot.min.css");

/// The dashboard's routes: `/`, `/dashboard.js`, `/dashboard.css`, and uPlot under `/vendor/`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/vendor/uPlot.iife.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_SCRIPT) }),
        )
        .route(
            "/vendor/uPlot.min.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page is tiny and must never show a stale script after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn serves_the_page_and_its_assets() {
        for (path, kind, needle) in [
            ("/", "text/html", "<script src=\"/dashboard.js\""),
            ("/dashboard.js", "text/javascript", "/api/v1/status"),
            ("/dashboard.css", "text/css", "body"),
            ("/vendor/uPlot.iife.min.js", "text/javascript", "uPlot"),
            ("/vendor/uPlot.min.css", "text/css", ".uplot"),
        ] {
            let response = router()
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let content_type = response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_string();
            assert!(content_type.starts_with(kind), "{path}: {content_type}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        }
    }
}
