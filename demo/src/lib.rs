//! Stand-in cluster ingresses for `meridian up --demo`.
//!
//! Each stand-in is a small HTTP server on a cluster's first ingress endpoint that answers every
//! request with a body whose first line is `cluster=<name>`, so a newcomer sees which cluster
//! served them. A stand-in can be made to fail — stop answering (its listener closes and open
//! connections drop, as a dead cluster's would) or answer 503 — and recover, from the CLI or the
//! dashboard through [`router`].
//!
//! What it must not do: take part in routing. It only stands where a real cluster's ingress
//! would, and is reached exactly as one would be.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_config::Config;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stand-in could not listen on its cluster's endpoint.
    #[error("stand-in for cluster {cluster}: cannot listen on {addr}: {source}")]
    Bind {
        /// The cluster.
        cluster: String,
        /// Its endpoint.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No stand-in has that name.
    #[error("no stand-in cluster named {0:?}")]
    UnknownCluster(String),
}

/// How a stand-in behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Answers every request with 200.
    Up,
    /// Listener closed, connections dropped: the cluster is gone.
    Down,
    /// Accepts connections and answers every request with 503.
    #[serde(rename = "http-503")]
    Http503,
}

struct StandIn {
    cluster: String,
    region: String,
    provider: String,
    addr: SocketAddr,
    mode: Mode,
    /// The accept loop and every connection: aborted together when the cluster goes down.
    tasks: JoinSet<()>,
    served: Arc<AtomicU64>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

/// Every stand-in cluster of the demo.
pub struct StandIns {
    by_name: Mutex<BTreeMap<String, StandIn>>,
}

/// One stand-in as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandInStatus {
    /// The cluster it stands in for.
    pub cluster: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How it behaves.
    pub mode: Mode,
    /// Requests it has answered.
    pub requests_served: u64,
}

impl StandIns {
    /// Starts a stand-in on the first ingress endpoint of every cluster in `config`.
    pub async fn start(config: &Config) -> Result<Arc<Self>, Error> {
        let mut by_name = BTreeMap::new();
        for cluster in &config.clusters {
            let Some(addr) = cluster.endpoints.first().copied() else {
                continue;
            };
            let mut stand_in = StandIn {
                cluster: cluster.name.clone(),
                region: cluster.region.clone(),
                provider: cluster.provider.clone(),
                addr,
                mode: Mode::Up,
                tasks: JoinSet::new(),
                served: Arc::new(AtomicU64::new(0)),
                failing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            };
            stand_in.listen().await?;
            by_name.insert(cluster.name.clone(), stand_in);
        }
        Ok(Arc::new(StandIns {
            by_name: Mutex::new(by_name),
        }))
    }

    /// Sets a stand-in's mode.
    pub async fn set_mode(&self, cluster: &str, mode: Mode) -> Result<StandInStatus, Error> {
        let mut by_name = self.by_name.lock().await;
        let stand_in = by_name
            .get_mut(cluster)
            .ok_or_else(|| Error::UnknownCluster(cluster.to_string()))?;
        if stand_in.mode != mode {
            match mode {
                Mode::Down => stand_in.tasks.abort_all(),
                Mode::Up | Mode::Http503 if stand_in.mode == Mode::Down => {
                    stand_in.listen().await?
                }
                _ => {}
            }
            stand_in
                .failing
                .store(mode == Mode::Http503, Ordering::Relaxed);
            stand_in.mode = mode;
            tracing::info!(cluster, ?mode, "demo stand-in cluster mode changed");
        }
        Ok(stand_in.status())
    }

    /// Every stand-in.
    pub async fn status(&self) -> Vec<StandInStatus> {
        self.by_name
            .lock()
            .await
            .values()
            .map(StandIn::status)
            .collect()
    }

    /// Stops every stand-in.
    pub async fn shutdown(&self) {
        for stand_in in self.by_name.lock().await.values_mut() {
            stand_in.tasks.abort_all();
        }
    }
}

impl StandIn {
    fn status(&self) -> StandInStatus {
        StandInStatus {
            cluster: self.cluster.clone(),
            addr: self.addr,
            mode: self.mode,
            requests_served: self.served.load(Ordering::Relaxed),
        }
    }

    async fn listen(&mut self) -> Result<(), Error> {
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Bind {
                cluster: self.cluster.clone(),
                addr: self.addr,
                source,
            })?;
        let identity: Arc<str> = format!(
            "cluster={}\nregion={}\nprovider={}\n",
            self.cluster, self.region, self.provider
        )
        .into();
        let served = self.served.clone();
        let failing = self.failing.clone();
        let mut connections = JoinSet::new();
        // Connections live in a JoinSet owned by the accept task, so aborting the accept task
        // drops them all, as a dead cluster would.
        self.tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let identity = identity.clone();
                let served = served.clone();
                let failing = failing.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let failing = failing.load(Ordering::Relaxed);
                        if !failing {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        let (status, body) = if failing {
                            (503, format!("{identity}status=failing\n"))
                        } else if request.uri().path() == "/healthz" {
                            (200, format!("{identity}status=ok\n"))
                        } else {
                            (200, format!("{identity}path={}\n", request.uri().path()))
                        };
                        let response = Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; charset=utf-8")
                            .body(Full::new(Bytes::from(body)));
                        async move { response }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(())
    }
}

#[derive(Deserialize)]
struct ModeBody {
    mode: Mode,
}

/// The demo's control API, to merge into the controller's router:
/// `GET /api/v1/demo/clusters` and `PUT /api/v1/demo/clusters/{cluster}` with `{"mode": "up" | "down" | "http-503"}`.
pub fn router(stand_ins: Arc<StandIns>) -> Router {
    Router::new()
        .route("/api/v1/demo/clusters", get(list))
        .route("/api/v1/demo/clusters/{cluster}", put(set))
        .with_state(stand_ins)
}

async fn list(State(stand_ins): State<Arc<StandIns>>) -> Json<Vec<StandInStatus>> {
    Json(stand_ins.status().await)
}

async fn set(
    State(stand_ins): State<Arc<StandIns>>,
    Path(cluster): Path<String>,
    body: Result<Json<ModeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<StandInStatus>, (StatusCode, String)> {
    let Json(body) =
        body.map_err(|e| (StatusCode::BAD_REQUEST, format!("mode: {}", e.body_text())))?;
    match stand_ins.set_mode(&cluster, body.mode).await {
        Ok(status) => Ok(Json(status)),
        Err(err @ Error::UnknownCluster(_)) => Err((StatusCode::NOT_FOUND, err.to_string())),
        Err(err) => Err((StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::Mode;

    #[test]
    fn modes_are_named_as_the_cli_and_the_dashboard_send_them() {
        for (mode, name) in [
            (Mode::Up, "up"),
            (Mode::Down, "down"),
            (Mode::Http503, "http-503"),
        ] {
            assert_eq!(serde_json::to_value(mode).unwrap(), name);
            assert_eq!(serde_json::from_value::<Mode>(name.into()).unwrap(), mode);
        }
    }
}
