//! The small HTTP/1.1 client subscribers and vantages use to reach the controller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::Error;
use crate::tls::{ClientTls, ReloadingClientConfig};

/// How long a request may wait for the controller's response head, and a `call` for the
/// whole body: a controller that accepts a connection and then stalls must not hang a
/// vantage's reports, an operator command or a follower's forwarding. (A watch stream's
/// body is bounded by its heartbeats instead.)
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A client of one controller: its base URL and the bearer token it presents.
#[derive(Clone, Debug)]
pub struct ControllerClient {
    base: String,
    token: Option<String>,
    timeout: std::time::Duration,
    client: Client<Connector, Full<Bytes>>,
}

/// Opens connections to the controller: plain TCP for `http://`, TLS with the current
/// client config (reloaded when its files change) for `https://`.
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<ReloadingClientConfig>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match &self.tls {
            Some(tls) => {
                // A fresh connector per connection is cheap (two Arcs) and picks up a
                // reloaded certificate.
                let mut https = HttpsConnector::from((self.http.clone(), tls.current()));
                https.enforce_https();
                Box::pin(async move { https.call(uri).await })
            }
            None => {
                let mut http = self.http.clone();
                Box::pin(async move {
                    let io = http.call(uri).await?;
                    Ok(MaybeHttpsStream::Http(io))
                })
            }
        }
    }
}

impl ControllerClient {
    /// A client for `base` (`http://host:port`, no path) over plain HTTP: fit for a
    /// controller on loopback (the only place it serves plain HTTP).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        Self::with_tls(base, token, &ClientTls::default())
    }

    /// A client for `base`, `http://host:port` or `https://host:port` (no path). Over
    /// `https://` the controller's certificate is checked against `tls.ca`, and the client
    /// certificate in `tls` (if any) is presented; both are read again when they change.
    pub fn with_tls(base: &str, token: Option<String>, tls: &ClientTls) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|e| Error::BadUrl {
            url: base.clone(),
            reason: format!("{e}"),
        })?;
        let tls = match uri.scheme_str() {
            Some("https") => Some(Arc::new(ReloadingClientConfig::new(tls.clone())?)),
            Some("http") if tls.is_empty() => None,
            Some("http") => {
                return Err(Error::BadUrl {
                    url: base,
                    reason: "a CA or client certificate is given, so the URL must be https://"
                        .into(),
                });
            }
            _ => {
                return Err(Error::BadUrl {
                    url: base,
                    reason: "only http:// (loopback) and https:// are supported".into(),
                });
            }
        };
        if uri.authority().is_none() || uri.path().len() > 1 {
            return Err(Error::BadUrl {
                url: base,
                reason: "expected http(s)://host:port with no path".into(),
            });
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // The TLS layer above it handles https:// URLs.
        http.enforce_http(false);
        let client = Client::builder(TokioExecutor::new()).build(Connector { http, tls });
        Ok(Self {
            base,
            token,
            timeout: REQUEST_TIMEOUT,
            client,
        })
    }

    /// The same client with another request timeout (default [`REQUEST_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<Incoming>, Error> {
        self.send_with(method, path_and_query, body, None).await
    }

    /// As [`send`](Self::send), with one more header.
    pub async fn send_with(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        extra: Option<(&'static str, http::HeaderValue)>,
    ) -> Result<http::Response<Incoming>, Error> {
        let url = format!("{}{}", self.base, path_and_query);
        let write = !matches!(method, Method::GET | Method::HEAD);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some((name, value)) = extra {
            builder = builder.header(name, value);
        }
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // The controller takes writes only as JSON (a browser's cross-site form cannot send
        // that), bodiless ones included.
        if body.is_some() || write {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(result) => result.map_err(|e| Error::Transport {
                url,
                message: error_chain(&e),
            }),
            Err(_) => Err(Error::Transport {
                url,
                message: format!("no response within {:?}", self.timeout),
            }),
        }
    }

    /// Sends a request and reads the whole body; a status outside 2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let url = format!("{}{}", self.base, path_and_query);
        let response = self.send(method, path_and_query, body).await?;
        let status = response.status();
        let bytes = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| Error::Transport {
                url: url.clone(),
                message: format!("body not read within {:?}", self.timeout),
            })?
            .map_err(|e| Error::Transport {
                url: url.clone(),
                message: error_chain(&e),
            })?
            .to_bytes();
        check_status(&url, status, &bytes)?;
        Ok((status, bytes))
    }
}

/// Turns a non-2xx status into the matching error, with the controller's message.
pub(crate) fn check_status(url: &str, status: StatusCode, body: &[u8]) -> Result<(), Error> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let (url, status) = (url.to_string(), status.as_u16());
    Err(if status == 401 || status == 403 {
        Error::Refused {
            url,
            status,
            message,
        }
    } else {
        Error::Status {
            url,
            status,
            message,
        }
    })
}

/// An error with its sources, as one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_controller_that_accepts_and_stalls_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts connections and never answers.
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let client = ControllerClient::new(&format!("http://{addr}"), None)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let err = client
            .call(Method::POST, "/api/v1/reports", Some(b"{}".to_vec()))
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(err.to_string().contains("no response within"), "{err}");
        held.abort();
    }
}
