//! A typed client of the controller's API, used by the `meridian` operator commands.

use http::Method;
use meridian_subscriber::Error;
use meridian_subscriber::http::ControllerClient;
use meridian_subscriber::tls::ClientTls;
use serde::de::DeserializeOwned;

use crate::api::{ChangeResponse, StatusView, WeightRequest};
use crate::plan::{Plan, Scenario, scenario_text};
use crate::store::{AuditEntry, HistoryEntry};

/// A client of one controller.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: ControllerClient,
}

fn json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| Error::Json {
        what: what.into(),
        error,
    })
}

fn seg(s: &str) -> String {
    // Names are validated lower-case identifiers; anything else is percent-encoded.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl ApiClient {
    /// A client of the controller at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        Ok(Self {
            http: ControllerClient::new(base, token)?,
        })
    }

    /// A client of the controller at `base` (`http://` or `https://host:port`), with the
    /// CA and client certificate of `tls`.
    pub fn with_tls(base: &str, token: Option<String>, tls: &ClientTls) -> Result<Self, Error> {
        Ok(Self {
            http: ControllerClient::with_tls(base, token, tls)?,
        })
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<StatusView, Error> {
        let (_, b) = self.http.call(Method::GET, "/api/v1/status", None).await?;
        json("status", &b)
    }

    /// `PUT …/weight`.
    pub async fn set_weight(
        &self,
        app: &str,
        cluster: &str,
        weight: u32,
    ) -> Result<ChangeResponse, Error> {
        let body = serde_json::to_vec(&WeightRequest { weight }).unwrap_or_default();
        let path = format!("/api/v1/apps/{}/targets/{}/weight", seg(app), seg(cluster));
        let (_, b) = self.http.call(Method::PUT, &path, Some(body)).await?;
        json("weight change", &b)
    }

    /// `DELETE …/weight`.
    pub async fn reset_weight(&self, app: &str, cluster: &str) -> Result<ChangeResponse, Error> {
        let path = format!("/api/v1/apps/{}/targets/{}/weight", seg(app), seg(cluster));
        let (_, b) = self.http.call(Method::DELETE, &path, None).await?;
        json("weight reset", &b)
    }

    /// Drains (or undrains) a cluster, or one app's target in it when `app` is given.
    pub async fn drain(
        &self,
        cluster: &str,
        app: Option<&str>,
        drain: bool,
    ) -> Result<ChangeResponse, Error> {
        let verb = if drain { "drain" } else { "undrain" };
        let path = match app {
            Some(app) => format!("/api/v1/apps/{}/targets/{}/{verb}", seg(app), seg(cluster)),
            None => format!("/api/v1/clusters/{}/{verb}", seg(cluster)),
        };
        let (_, b) = self.http.call(Method::POST, &path, None).await?;
        json(verb, &b)
    }

    /// `GET /api/v1/explain`.
    pub async fn explain(&self, host: &str, client: &str) -> Result<serde_json::Value, Error> {
        let path = format!("/api/v1/explain?host={}&client={}", seg(host), seg(client));
        let (_, b) = self.http.call(Method::GET, &path, None).await?;
        json("explanation", &b)
    }

    /// `GET /api/v1/plan?scenario=…`: the dry-run planner's answer.
    pub async fn plan(&self, scenario: &Scenario) -> Result<Plan, Error> {
        let path = format!("/api/v1/plan?scenario={}", seg(&scenario_text(scenario)));
        let (_, b) = self.http.call(Method::GET, &path, None).await?;
        json("plan", &b)
    }

    /// `GET /api/v1/history`.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        let path = format!("/api/v1/history?limit={limit}");
        let (_, b) = self.http.call(Method::GET, &path, None).await?;
        json("history", &b)
    }

    /// `GET /api/v1/audit`.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let path = format!("/api/v1/audit?limit={limit}");
        let (_, b) = self.http.call(Method::GET, &path, None).await?;
        json("audit log", &b)
    }
}
