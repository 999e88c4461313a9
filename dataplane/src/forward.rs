//! The request path: refuse bad framing, route by host, pick a target, forward, and fail
//! over to another target when an attempt fails and the request may be replayed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use meridian_config::proxy::{AffinityConfig, ProxyConfig};
use meridian_routing::{AppId, NoTarget, Pick, Policy, RoutingTable, TargetSet};
use meridian_subscriber::TableCell;

use crate::access::{AccessLog, Line};
use crate::framing::FramingWatch;
use crate::headers::{self, Refusal};
use crate::idle::{self, Activity, Tracked};
use crate::metrics::{Metrics, class_index};
use crate::pool::{Pooled, SendError};
use crate::state::{AppRuntime, Registry, TableRuntime};
use crate::upload::{ClientFault, Upload, UploadState};

/// What the proxy sends upstream: a buffered body it can replay, or the client's stream.
pub(crate) type UpstreamBody = Either<Full<Bytes>, Upload>;
/// What the proxy answers: the upstream's stream, or a short body of its own.
pub type ProxyBody = Either<Pooled, Full<Bytes>>;

/// Where a session's affinity key is read from.
pub(crate) enum Affinity {
    Cookie(String),
    Header(HeaderName),
}

/// Everything the request path shares; one per running proxy.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) cell: Arc<TableCell>,
    pub(crate) runtime: ArcSwapOption<TableRuntime>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) metrics: Metrics,
    pub(crate) access_log: Option<AccessLog>,
    spread: AtomicU64,
    active: AtomicUsize,
    retrying: AtomicUsize,
    pub(crate) draining: AtomicBool,
    epoch: Instant,
    retry_header: HeaderName,
    retry_statuses: Vec<u16>,
    affinity: Option<Affinity>,
}

impl Shared {
    pub(crate) fn new(
        config: ProxyConfig,
        cell: Arc<TableCell>,
        metrics: Metrics,
        access_log: Option<AccessLog>,
    ) -> Self {
        let retry_header = HeaderName::from_bytes(config.retry.retryable_header.as_bytes())
            .unwrap_or(HeaderName::from_static("x-meridian-retryable"));
        let affinity = match &config.affinity {
            Some(AffinityConfig::Cookie(name)) => Some(Affinity::Cookie(name.clone())),
            Some(AffinityConfig::Header(name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(Affinity::Header),
            None => None,
        };
        Shared {
            retry_statuses: config.retry.on_status.iter().map(|s| s.0).collect(),
            config,
            cell,
            runtime: ArcSwapOption::empty(),
            registry: Mutex::new(Registry::default()),
            metrics,
            access_log,
            spread: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            retry_header,
            affinity,
        }
    }

    /// Milliseconds on the proxy's own monotonic clock, never 0.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The runtime view of `table`. Built once per table version, under a lock that only
    /// the first request after a swap takes.
    fn runtime_for(&self, table: &Arc<RoutingTable>) -> Arc<TableRuntime> {
        if let Some(rt) = self.runtime.load_full()
            && Arc::ptr_eq(&rt.table, table)
        {
            return rt;
        }
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.runtime.load_full();
        if let Some(rt) = &current
            && Arc::ptr_eq(&rt.table, table)
        {
            return rt.clone();
        }
        // A request that loaded an older table than the runtime's gets a view of its own:
        // it must not replace the newer one.
        let newer = current
            .as_ref()
            .is_none_or(|rt| table.version() >= rt.table.version());
        let rt = Arc::new(registry.build(table.clone(), &self.metrics, newer));
        if newer {
            self.runtime.store(Some(rt.clone()));
        }
        rt
    }

    fn retry_allowed(&self) -> bool {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let budget = (active * self.config.retry.budget_ratio)
            .max(f64::from(self.config.retry.budget_min_concurrent));
        (self.retrying.load(Ordering::Relaxed) as f64) < budget
    }

    fn affinity_key(&self, headers: &http::HeaderMap) -> Option<u64> {
        match self.affinity.as_ref()? {
            Affinity::Header(name) => headers.get(name).map(|v| fnv(v.as_bytes())),
            Affinity::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then(|| fnv(v.as_bytes()))
                }),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Counts a value up for as long as it lives.
struct CountGuard<'a>(&'a AtomicUsize);

impl<'a> CountGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        CountGuard(counter)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a target's requests in flight for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one request from a client at `peer`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    framing: Arc<FramingWatch>,
    forwarded: Arc<headers::ForwardedFor>,
    activity: Arc<Activity>,
) -> Result<Response<ProxyBody>, Infallible> {
    let _request = activity.request();
    let started = Instant::now();
    let _active = CountGuard::new(&shared.active);
    shared.metrics.active_requests.inc();
    // Kept for the log line of a request refused before forwarding (none when not logging).
    let request_line = shared
        .access_log
        .as_ref()
        .map(|_| (req.method().clone(), req.uri().path_and_query().cloned()));
    let (response, logged) =
        if headers::is_http1(req.version()) && framing.next_request_is_ambiguous() {
            (refuse(&shared, Refusal::AmbiguousOnWire), false)
        } else {
            forward(&shared, req, peer, &forwarded, started).await
        };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        framing.upgraded();
    }
    if !logged && let Some(log) = &shared.access_log {
        // Refused before a target was tried: still one access log line.
        let (method, path) = request_line.unwrap_or_default();
        log.log(&Line {
            client: peer.ip(),
            method: method.as_str(),
            path: path.as_ref().map_or("", |p| p.as_str()),
            app: "",
            target: "",
            attempts: 0,
            status: response.status().as_u16(),
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            upstream_ms: 0.0,
            table_version: shared.cell.version(),
        });
    }
    shared.metrics.active_requests.dec();
    shared
        .metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

fn plain(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        message.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn refuse(shared: &Shared, refusal: Refusal) -> Response<ProxyBody> {
    shared
        .metrics
        .refused
        .with_label_values(&[refusal.reason()])
        .inc();
    let mut response = plain(refusal.status(), refusal.message());
    // The connection's framing can no longer be trusted: close it after this answer.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A 503 of the proxy's own, with Retry-After: the condition is expected to pass (a table
/// arrives, a target turns healthy, a slot frees), so clients may come back in a second.
fn unavailable(message: &'static str) -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// How an attempt ended.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request on the stack; boxing the response would cost an allocation on the hot path"
)]
enum Attempt {
    /// No connection could be opened: nothing was sent, so any request may be replayed.
    Connect,
    /// The connection broke after the request may have been sent.
    Broken,
    /// No response head within the upstream timeout.
    Timeout,
    /// A response: a success, or a status in the retry set.
    Response(Response<Pooled>),
}

async fn forward(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
    forwarded: &headers::ForwardedFor,
    started: Instant,
) -> (Response<ProxyBody>, bool) {
    if req.method() == Method::CONNECT {
        return (refuse(shared, Refusal::Connect), false);
    }
    if req
        .uri()
        .path_and_query()
        .is_some_and(|p| p.as_str().len() > shared.config.max_uri_bytes)
    {
        return (refuse(shared, Refusal::UriTooLong), false);
    }
    if headers::is_http1(req.version())
        && let Err(refusal) = headers::check_framing(&req)
    {
        return (refuse(shared, refusal), false);
    }
    let Some(table) = shared.cell.load() else {
        shared
            .metrics
            .refused
            .with_label_values(&["no-table"])
            .inc();
        return (unavailable("no routing table yet\n"), false);
    };
    let app = match headers::request_host(&req) {
        Ok(host) => table.app_for_host(host),
        Err(refusal) => return (refuse(shared, refusal), false),
    };
    let Some(app) = app else {
        shared.metrics.refused.with_label_values(&["no-app"]).inc();
        return (
            plain(StatusCode::NOT_FOUND, "no app is served under this host\n"),
            false,
        );
    };
    let runtime = shared.runtime_for(&table);
    let app_rt = &runtime.apps[app.0 as usize];
    let (mut parts, body) = req.into_parts();

    // The body: replayable when small enough to buffer, else streamed once.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > shared.config.max_body_bytes) {
        // Refused before any byte goes upstream.
        return (client_fault_response(shared, ClientFault::TooLarge), false);
    }
    // Set when the body is streamed: says whether the client broke it.
    let mut upload_state: Option<Arc<UploadState>> = None;
    let (mut replay, mut stream) = if body.is_end_stream() {
        (Some(Bytes::new()), None)
    } else if length.is_some_and(|n| n <= shared.config.replay_buffer_bytes) {
        let limited = Limited::new(body, shared.config.replay_buffer_bytes as usize);
        match tokio::time::timeout(shared.config.body_timeout, limited.collect()).await {
            Ok(Ok(collected)) => (Some(collected.to_bytes()), None),
            Ok(Err(_)) => return (client_fault_response(shared, ClientFault::Malformed), false),
            Err(_) => return (client_fault_response(shared, ClientFault::Slow), false),
        }
    } else {
        let (upload, state) = Upload::new(
            body,
            shared.config.max_body_bytes,
            shared.config.body_timeout,
        );
        upload_state = Some(state);
        (None, Some(upload))
    };

    let marked = parts
        .headers
        .remove(&shared.retry_header)
        .is_some_and(|v| v == "true" || v == "1");
    let replay_after_send = marked || headers::is_idempotent(&parts.method);
    let affinity = shared.affinity_key(&parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        // HTTP/2 carries the host in :authority; HTTP/1.1 upstreams need a Host header.
        parts.headers.insert(header::HOST, value);
    }
    // An HTTP/1.1 upgrade (WebSocket and the like) is passed through: its Upgrade and
    // Connection headers go upstream, and on 101 the two connections are joined.
    let upgrade = headers::upgrade_request(&parts);
    let upgrading = upgrade.is_some();
    let mut client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    headers::add_forwarding(&mut parts.headers, forwarded);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    let client = meridian_routing::Client {
        addr: peer.ip(),
        // Only the geo and latency policies look at the region: skip the lookup otherwise.
        region: match table.app(app).policy {
            Policy::Geo | Policy::Latency => table.resolve_region(peer.ip(), None).map(|(r, _)| r),
            Policy::Weighted | Policy::Failover => None,
        },
    };
    let pick = match affinity {
        Some(key) => Pick::Affinity(key),
        None => Pick::Spread(shared.spread.fetch_add(1, Ordering::Relaxed)),
    };
    let max_attempts = shared.config.retry.max_attempts;
    let mut tried = TargetSet::EMPTY;
    let mut attempts = 0u32;
    let mut retry_guard = None;
    let mut last: Option<(Attempt, usize)> = None;
    let mut upstream_time = Duration::ZERO;

    let outcome = loop {
        let now = shared.now_ms();
        let target = match choose(shared, &table, app_rt, app, &client, pick, tried, now) {
            Ok(target) => target,
            Err(Unavailable::FailClosed) => {
                break Err(unavailable("no target of this app is serving\n"));
            }
            Err(Unavailable::Saturated) if attempts == 0 => {
                app_rt.shed.inc();
                break Err(unavailable("every target is at its concurrency limit\n"));
            }
            // Every target has been tried (or the rest are full): answer with what the
            // last attempt gave.
            Err(_) => break Ok(()),
        };
        attempts += 1;
        tried.insert(target);
        let state = &app_rt.targets[target];
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&state.in_flight);

        let endpoint = app_rt.endpoint(target);
        let may_retry = attempts < max_attempts && replay.is_some();
        let sent = Instant::now();
        let result = match &replay {
            // The hot path: a buffered body and no upgrade go on a direct connection,
            // the headers borrowed (no copy even when the request may be retried).
            Some(bytes) if !upgrading => {
                tokio::time::timeout(
                    shared.config.upstream_timeout,
                    endpoint.send_buffered(
                        &parts.method,
                        &path,
                        &parts.headers,
                        bytes,
                        shared.config.connect_timeout,
                        replay_after_send,
                    ),
                )
                .await
            }
            _ => {
                // Origin form: the request line carries only the path; Host says the rest.
                let uri = Uri::from(path.clone());
                let mut upstream = Request::new(match (&replay, stream.take()) {
                    (Some(bytes), _) => Either::Left(Full::new(bytes.clone())),
                    (None, Some(s)) => Either::Right(s),
                    (None, None) => Either::Left(Full::new(Bytes::new())),
                });
                *upstream.method_mut() = parts.method.clone();
                *upstream.uri_mut() = uri;
                *upstream.version_mut() = Version::HTTP_11;
                *upstream.headers_mut() = if may_retry {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                tokio::time::timeout(
                    shared.config.upstream_timeout,
                    endpoint.send(upstream, shared.config.connect_timeout, replay_after_send),
                )
                .await
            }
        };
        if !may_retry {
            replay = None;
        }
        let took = sent.elapsed();
        upstream_time += took;
        if let Some(fault) = client_fault(upload_state.as_deref(), &result) {
            // The client broke its own request: answer it, and neither blame the target
            // nor retry.
            break Err(client_fault_response(shared, fault));
        }
        state.latency.observe(took.as_secs_f64());
        let failure = match result {
            Ok(Ok(response)) if !shared.retry_statuses.contains(&response.status().as_u16()) => {
                state.record_success(shared.now_ms(), &shared.config.outlier);
                last = Some((Attempt::Response(response), target));
                break Ok(());
            }
            Ok(Ok(response)) => Attempt::Response(response),
            Ok(Err(err @ SendError::Connect(_))) => {
                tracing::debug!(app = %state.app, target = %state.cluster, %err, "upstream connect failed");
                Attempt::Connect
            }
            Ok(Err(err @ SendError::Broken(_))) => {
                tracing::debug!(app = %state.app, target = %state.cluster, %err, "upstream failed");
                Attempt::Broken
            }
            Err(_) => Attempt::Timeout,
        };
        app_rt.record_failure(target, shared.now_ms(), &shared.config.outlier);
        let replayable = match failure {
            Attempt::Connect => true,
            _ => replay_after_send,
        };
        let can_retry =
            may_retry && replayable && (retry_guard.is_some() || shared.retry_allowed());
        if may_retry && replayable && !can_retry {
            shared.metrics.budget_exhausted.inc();
        }
        last = Some((failure, target));
        if !can_retry {
            break Ok(());
        }
        state.retries.inc();
        if retry_guard.is_none() {
            retry_guard = Some(CountGuard::new(&shared.retrying));
        }
    };
    drop(retry_guard);

    let (response, target) = match outcome {
        Err(response) => (response, None),
        Ok(()) => match last.take() {
            Some((Attempt::Response(response), target))
                if response.status() == StatusCode::SWITCHING_PROTOCOLS
                    && client_upgrade.is_some() =>
            {
                let (mut head, _) = response.into_parts();
                match (
                    client_upgrade.take(),
                    head.extensions.remove::<hyper::upgrade::OnUpgrade>(),
                ) {
                    (Some(client), Some(upstream)) => {
                        tokio::spawn(tunnel(client, upstream, shared.config.tunnel_idle_timeout));
                        head.headers.remove(header::TRANSFER_ENCODING);
                        (
                            Response::from_parts(head, Either::Right(Full::new(Bytes::new()))),
                            Some(target),
                        )
                    }
                    _ => (
                        plain(StatusCode::BAD_GATEWAY, "upstream upgrade failed\n"),
                        Some(target),
                    ),
                }
            }
            Some((Attempt::Response(response), target)) => {
                let (mut head, body) = response.into_parts();
                headers::strip_hop_by_hop(&mut head.headers);
                let body = body.with_idle_timeout(shared.config.upstream_body_timeout);
                (Response::from_parts(head, Either::Left(body)), Some(target))
            }
            Some((Attempt::Timeout, target)) => (
                plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream did not answer in time\n",
                ),
                Some(target),
            ),
            Some((Attempt::Connect | Attempt::Broken, target)) => (
                plain(StatusCode::BAD_GATEWAY, "upstream failed\n"),
                Some(target),
            ),
            None => (unavailable("no target is available\n"), None),
        },
    };
    let status = response.status().as_u16();
    let class = class_index(status);
    let app_name = &table.app(app).name;
    match target {
        Some(t) => app_rt.targets[t].requests[class].inc(),
        None => shared
            .metrics
            .requests
            .with_label_values(&[app_name.as_str(), "", crate::metrics::CLASSES[class]])
            .inc(),
    }
    if let Some(log) = &shared.access_log {
        log.log(&Line {
            client: peer.ip(),
            method: parts.method.as_str(),
            path: path.as_str(),
            app: app_name.as_str(),
            target: target.map_or("", |t| &*app_rt.targets[t].cluster),
            attempts,
            status,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
            upstream_ms: upstream_time.as_secs_f64() * 1e3,
            table_version: table.version(),
        });
    }
    (response, true)
}

/// The client's fault when an attempt with a streamed body failed because of the client:
/// its body broke, or the upstream gave no answer before the client finished sending it.
fn client_fault<T, E>(
    upload: Option<&UploadState>,
    result: &Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Option<ClientFault> {
    let upload = upload?;
    match result {
        Ok(Ok(_)) => None,
        Ok(Err(_)) => upload.fault(),
        Err(_) if !upload.is_complete() => Some(upload.fault().unwrap_or(ClientFault::Slow)),
        Err(_) => None,
    }
}

fn client_fault_response(shared: &Shared, fault: ClientFault) -> Response<ProxyBody> {
    shared
        .metrics
        .refused
        .with_label_values(&[fault.reason()])
        .inc();
    let mut response = plain(fault.status(), fault.message());
    // The rest of the body is unread: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Joins an upgraded client connection to the upgraded upstream one until either closes
/// or no byte moves either way for `idle_timeout`.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle_timeout: Duration,
) {
    match tokio::join!(client, upstream) {
        (Ok(client), Ok(upstream)) => {
            let activity = Arc::new(Activity::default());
            let mut client = Tracked::new(hyper_util::rt::TokioIo::new(client), activity.clone());
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(err) = copied {
                        tracing::debug!(%err, "upgraded connection ended with an error");
                    }
                }
                // Every byte either way passes the client side: counting there is enough.
                () = idle::idle_for(&activity, idle_timeout) => {
                    tracing::debug!(?idle_timeout, "upgraded connection idle; closing");
                }
            }
        }
        (Err(err), _) | (_, Err(err)) => tracing::debug!(%err, "upgrade did not complete"),
    }
}

/// Why no target could be chosen for an attempt.
enum Unavailable {
    FailClosed,
    Exhausted,
    Saturated,
}

/// Chooses a target not yet tried. Ejected targets are left out while another candidate
/// remains (an ejection never fails a request on its own); targets at their concurrency
/// limit are left out, and when nothing else is left the request is shed.
#[allow(clippy::too_many_arguments)]
fn choose(
    shared: &Shared,
    table: &RoutingTable,
    app_rt: &AppRuntime,
    app: AppId,
    client: &meridian_routing::Client,
    pick: Pick,
    tried: TargetSet,
    now_ms: u64,
) -> Result<usize, Unavailable> {
    let ejected = app_rt.ejected(now_ms);
    let mut exclude = TargetSet(tried.0 | ejected.0);
    let mut saturated = false;
    loop {
        let choice = match table.select(app, client, pick, exclude) {
            Ok(choice) => choice,
            Err(NoTarget::FailClosed) => return Err(Unavailable::FailClosed),
            Err(NoTarget::AllExcluded) => {
                let unejected = TargetSet(exclude.0 & !ejected.0);
                if exclude != unejected {
                    // Only ejected targets are left: use them rather than fail.
                    exclude = unejected;
                    continue;
                }
                return Err(if saturated {
                    Unavailable::Saturated
                } else {
                    Unavailable::Exhausted
                });
            }
        };
        match shared.config.max_requests_per_target {
            Some(limit)
                if app_rt.targets[choice.target]
                    .in_flight
                    .load(Ordering::Relaxed)
                    >= limit =>
            {
                saturated = true;
                exclude.insert(choice.target);
            }
            _ => return Ok(choice.target),
        }
    }
}
