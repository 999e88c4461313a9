//! Helpers of the controller's integration tests: real HTTP backends on loopback, a
//! controller started in-process on an ephemeral port, and a real HTTP client.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use meridian_controller::{Controller, ControllerOptions, RunningController};
use meridian_routing::{Health, RoutingTable};
use meridian_subscriber::http::ControllerClient;

/// A stand-in cluster ingress: answers `/healthz` with 200 while healthy, 503 otherwise;
/// `stop` closes it so connections are refused.
pub struct Backend {
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(move || {
                let flag = flag.clone();
                async move {
                    if flag.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "down")
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            healthy,
            task,
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Stops answering at all: the listener closes.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SHA-256 hex of the tokens used in tests.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A config with two clusters (one backend each) and one app, probed every 100 ms.
pub fn config_yaml(c1: SocketAddr, c2: SocketAddr, extra_controller: &str) -> String {
    format!(
        r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
  - {{ name: us, location: {{ lat: 39.0, lon: -77.0 }} }}
geo:
  subnets:
    - {{ cidr: 192.0.2.0/24, region: eu }}
clusters:
  - {{ name: c1, region: eu, provider: aws, endpoints: ["{c1}"] }}
  - {{ name: c2, region: us, provider: gcp, endpoints: ["{c2}"] }}
probes:
  - name: healthz
    kind: http
    path: /healthz
    interval: 100ms
    timeout: 80ms
    rise: 2
    fall: 2
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-closed
    probe: healthz
    drain_period: 1s
    slow_start: 1s
    targets:
      - {{ cluster: c1, weight: 100 }}
      - {{ cluster: c2, weight: 100 }}
controller:
  listen: 127.0.0.1:0
  vantage_ttl: 1s
  heartbeat: 200ms
{extra_controller}
proxy:
  listen: 127.0.0.1:1
dns:
  listen: 127.0.0.1:2
"#
    )
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meridian-ctl-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn start_controller(yaml: &str, dir: &Path, probe: bool) -> RunningController {
    let file = dir.join("meridian.yaml");
    std::fs::write(&file, yaml).unwrap();
    let loaded = meridian_config::load(&file).unwrap();
    Controller::start(
        loaded,
        ControllerOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.join("data")),
            probe,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

pub fn client(ctl: &RunningController, token: Option<&str>) -> ControllerClient {
    ControllerClient::new(&ctl.url(), token.map(str::to_string)).unwrap()
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn health_of(table: &RoutingTable, app: &str, cluster: &str) -> Health {
    let app = &table.apps()[table.app_by_name(app).unwrap().0 as usize];
    app.targets
        .iter()
        .find(|t| t.cluster == cluster)
        .unwrap()
        .health
}

/// Sends a raw request and returns status and JSON body.
pub async fn call(
    client: &ControllerClient,
    method: http::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let response = client
        .send(method, path, body.map(|b| b.as_bytes().to_vec()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

/// Waits until every target of the published table is healthy: a fresh controller
/// publishes its targets as not up until a vantage has probed them.
pub async fn wait_all_healthy(ctl: &RunningController) -> Arc<RoutingTable> {
    wait_for(Duration::from_secs(5), || {
        ctl.table().filter(|t| {
            t.apps()
                .iter()
                .all(|a| a.targets.iter().all(|t| t.health == Health::Healthy))
        })
    })
    .await
    .expect("every target is probed and found healthy")
}
