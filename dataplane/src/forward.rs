//! The request path: refuse bad framing, route by host, pick a target, forward, and fail
//! over to another target when an attempt fails and the request may be replayed (under the
//! retry budget, see `retry`), or hedge a slow replayable one on a second target.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use tokio::time::error::Elapsed;

use crate::access::{AccessLog, Line};
use crate::clients::{Admitted, ClientLimits, RetryAfter};
use crate::framing::FramingWatch;
use crate::headers::{self, Refusal};
use crate::idle::{self, Activity, Tracked};
use crate::metrics::{Metrics, class_index};
use crate::pool::{ConnOptions, Endpoint, Pooled, SendError};
use crate::retry::{self, RetryBudget};
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
    /// Limits per client address; none when not configured.
    pub(crate) clients: Option<ClientLimits>,
    spread: AtomicU64,
    budget: RetryBudget,
    conn_options: ConnOptions,
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
        let budget = RetryBudget::new(&config.retry);
        let conn_options = ConnOptions::from_config(&config);
        let clients = config
            .per_client
            .as_ref()
            .and_then(|limits| ClientLimits::new(limits, metrics.client_limit_untracked.clone()));
        Shared {
            retry_statuses: config.retry.on_status.iter().map(|s| s.0).collect(),
            config,
            cell,
            runtime: ArcSwapOption::empty(),
            registry: Mutex::new(Registry::default()),
            metrics,
            access_log,
            clients,
            spread: AtomicU64::new(0),
            budget,
            conn_options,
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            retry_header,
            affinity,
        }
    }

    /// For a proxy of `workers` workers, each keeping its own idle upstream connections.
    pub(crate) fn with_workers(mut self, workers: usize) -> Self {
        self.conn_options.workers = workers.max(1);
        self
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
        let rt = Arc::new(registry.build(table.clone(), &self.metrics, self.conn_options, newer));
        if newer {
            self.runtime.store(Some(rt.clone()));
        }
        rt
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

/// Counts a target's requests in flight for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every request on one client connection shares, behind one `Arc`: a request
/// clones one pointer, not one per part.
pub(crate) struct ClientConnection {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) framing: Arc<FramingWatch>,
    pub(crate) forwarded: headers::ForwardedFor,
    pub(crate) activity: Arc<Activity>,
    /// Set once the proxy stops accepting: HTTP/1.1 answers then carry `Connection: close`.
    pub(crate) closing: Arc<AtomicBool>,
    /// The connection's hold on its client address's limits, when there are any.
    pub(crate) admitted: Option<Admitted>,
}

/// Serves one request on `conn`.
///
/// A function returning a block rather than an `async fn`, here and in `forward`: an
/// `async fn` keeps each argument twice in its future (as passed, and as bound), and this
/// future is written into its box once per request.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold the request twice in its future"
)]
pub(crate) fn handle(
    conn: Arc<ClientConnection>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
    async move {
        let _request = conn.activity.request();
        let started = Instant::now();
        let version = req.version();
        if version == Version::HTTP_2 {
            conn.activity.mark_h2();
        }
        conn.shared.metrics.active_requests.inc();
        let (table, app) = match early(&conn, &req, started) {
            Ok(routed) => routed,
            Err(response) => return Ok(finish(&conn, version, started, response)),
        };
        let (parts, body) = req.into_parts();
        let response = forward(&conn, table, app, parts, body, started).await;
        Ok(finish(&conn, version, started, response))
    }
}

/// The table and app of a request to forward, or the proxy's own answer, logged: over the
/// client's request rate (see `clients`), ambiguous framing on the wire, refused, no table
/// or no app.
#[expect(
    clippy::result_large_err,
    reason = "once per request, on the stack; boxing the answer would allocate"
)]
fn early(
    conn: &ClientConnection,
    req: &Request<Incoming>,
    started: Instant,
) -> Result<(Arc<RoutingTable>, AppId), Response<ProxyBody>> {
    let shared = &*conn.shared;
    let limited = match (&shared.clients, &conn.admitted) {
        (Some(limits), Some(admitted)) => limits.request(admitted, started).err(),
        _ => None,
    };
    let routed = if let Some(after) = limited {
        Err(too_many_requests(shared, after))
    } else if headers::is_http1(req.version()) && conn.framing.next_request_is_ambiguous() {
        Err(refuse(shared, Refusal::AmbiguousOnWire))
    } else {
        admit(shared, req)
            .and_then(|()| route(shared, req))
            .map_err(|early| early.response(shared))
    };
    if let Err(response) = &routed {
        log_unrouted(
            shared,
            &conn.forwarded,
            req.method(),
            req.uri(),
            response,
            started,
        );
    }
    routed
}

/// The end of every request: an upgrade hands the connection over, a stopping proxy tells
/// an HTTP/1.1 client to reconnect (to whichever process, or behind a balancer proxy,
/// accepts now), and the request is counted.
fn finish(
    conn: &ClientConnection,
    version: Version,
    started: Instant,
    mut response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        conn.framing.upgraded();
    } else if version < Version::HTTP_2 && conn.closing.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let metrics = &conn.shared.metrics;
    metrics.active_requests.dec();
    metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The access log line of a request answered before a target was chosen (refused, over
/// its rate, no table or app): no app, target or attempt. Borrows what it logs, so a
/// request that is logged costs no copy of its method or path.
fn log_unrouted(
    shared: &Shared,
    forwarded: &headers::ForwardedFor,
    method: &Method,
    uri: &Uri,
    response: &Response<ProxyBody>,
    started: Instant,
) {
    if let Some(log) = &shared.access_log {
        let now = Instant::now();
        log.log(&Line {
            client: forwarded.client(),
            method: method.as_str(),
            path: uri.path_and_query().map_or("", |p| p.as_str()),
            app: "",
            target: "",
            attempts: 0,
            status: response.status().as_u16(),
            at: now,
            duration: now.saturating_duration_since(started),
            upstream: Duration::ZERO,
            table_version: shared.cell.version(),
        });
    }
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

/// 429 for a client over its request rate, with when to come back. The connection stays
/// open: the client did nothing wrong but go too fast.
fn too_many_requests(shared: &Shared, after: RetryAfter) -> Response<ProxyBody> {
    shared
        .metrics
        .refused
        .with_label_values(&["client-rate"])
        .inc();
    let mut response = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests from this address\n",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(after.0));
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

/// The request body as it goes upstream.
struct RequestBody {
    /// Buffered: sent again on each attempt while a retry may follow.
    replay: Option<Bytes>,
    /// Streamed: sent once.
    stream: Option<Upload>,
    /// Whether the client of a streamed body broke it.
    upload: Option<Arc<UploadState>>,
}

/// The request head made ready for upstreams, and what the request path learnt from it.
struct Prepared {
    path: PathAndQuery,
    /// Idempotent or marked: may be sent again after a byte of it may have left.
    replayable: bool,
    affinity: Option<u64>,
    /// An HTTP/1.1 upgrade was asked for; its client side, when hyper offers one.
    upgrading: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// What the attempts came to.
struct Tries {
    /// The proxy's own answer (no target, shedding, a client fault), or the last attempt
    /// and its target (none when no target could be chosen).
    outcome: Result<Option<(Attempt, usize)>, Response<ProxyBody>>,
    attempts: u32,
    upstream_time: Duration,
}

/// The request path, in phases, each a function below in the order it runs: `early` (in
/// `handle`: `admit`, refusals that need no table, and `route`, table and app), `read_body`
/// (buffer or stream), `prepare` (the upstream head), `try_targets` (per attempt: `choose`, `send`, `classify`,
/// then retry or stop), `answer` (the client's response) and `record` (metrics, access log).
/// Every outcome writes its access log line.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold the request head twice in its future (see `handle`)"
)]
fn forward<'a>(
    conn: &'a ClientConnection,
    table: Arc<RoutingTable>,
    app: AppId,
    mut parts: http::request::Parts,
    body: Incoming,
    started: Instant,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'a {
    async move {
        let (shared, forwarded, peer) = (&*conn.shared, &conn.forwarded, conn.peer);
        let runtime = shared.runtime_for(&table);
        let app_rt = &runtime.apps[app.0 as usize];
        let mut body = match read_body(shared, &parts.headers, body).await {
            Ok(body) => body,
            Err(early) => {
                let response = early.response(shared);
                log_unrouted(
                    shared,
                    forwarded,
                    &parts.method,
                    &parts.uri,
                    &response,
                    started,
                );
                return response;
            }
        };
        let mut request = prepare(shared, &mut parts, forwarded);
        let client = meridian_routing::Client {
            addr: peer.ip(),
            // Only the geo and latency policies look at the region: skip the lookup otherwise.
            region: match table.app(app).policy {
                Policy::Geo | Policy::Latency => {
                    table.resolve_region(peer.ip(), None).map(|(r, _)| r)
                }
                Policy::Weighted | Policy::Failover => None,
            },
        };
        let pick = match request.affinity {
            Some(key) => Pick::Affinity(key),
            None => Pick::Spread(shared.spread.fetch_add(1, Ordering::Relaxed)),
        };
        let target = Targets {
            table: &table,
            app,
            app_rt,
            client: &client,
            pick,
        };
        let tries = try_targets(shared, &target, &mut parts, &request, &mut body).await;
        let (response, answered_by) = answer(shared, tries.outcome, &mut request.client_upgrade);
        let now = Instant::now();
        record(
            shared,
            &target,
            &Line {
                client: forwarded.client(),
                method: parts.method.as_str(),
                path: request.path.as_str(),
                app: &table.app(app).name,
                target: answered_by.map_or("", |t| &*app_rt.targets[t].cluster),
                attempts: tries.attempts,
                status: response.status().as_u16(),
                at: now,
                duration: now.saturating_duration_since(started),
                upstream: tries.upstream_time,
                table_version: table.version(),
            },
            answered_by,
        );
        response
    }
}

/// Why the proxy answers a request itself, before any attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Early {
    Refused(Refusal),
    ClientFault(ClientFault),
    NoTable,
    NoApp,
}

impl Early {
    /// The response, counted in `meridian_proxy_refused_total`.
    fn response(self, shared: &Shared) -> Response<ProxyBody> {
        match self {
            Early::Refused(refusal) => refuse(shared, refusal),
            Early::ClientFault(fault) => client_fault_response(shared, fault),
            Early::NoTable => {
                shared
                    .metrics
                    .refused
                    .with_label_values(&["no-table"])
                    .inc();
                unavailable("no routing table yet\n")
            }
            Early::NoApp => {
                shared.metrics.refused.with_label_values(&["no-app"]).inc();
                plain(StatusCode::NOT_FOUND, "no app is served under this host\n")
            }
        }
    }
}

/// Refusals that need no table: CONNECT, an over-long request target, ambiguous framing.
fn admit<B>(shared: &Shared, req: &Request<B>) -> Result<(), Early> {
    if req.method() == Method::CONNECT {
        return Err(Early::Refused(Refusal::Connect));
    }
    if req
        .uri()
        .path_and_query()
        .is_some_and(|p| p.as_str().len() > shared.config.max_uri_bytes)
    {
        return Err(Early::Refused(Refusal::UriTooLong));
    }
    if headers::is_http1(req.version()) {
        headers::check_framing(req).map_err(Early::Refused)?;
    }
    Ok(())
}

/// The table in force and the app serving the request's host.
fn route<B>(shared: &Shared, req: &Request<B>) -> Result<(Arc<RoutingTable>, AppId), Early> {
    let table = shared.cell.load().ok_or(Early::NoTable)?;
    let host = headers::request_host(req).map_err(Early::Refused)?;
    let app = table.app_for_host(host).ok_or(Early::NoApp)?;
    Ok((table, app))
}

/// The body: buffered (so it can be replayed) when its length is known and small enough,
/// else streamed once. A length over the limit is refused before any byte goes upstream.
async fn read_body(
    shared: &Shared,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<RequestBody, Early> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > shared.config.max_body_bytes) {
        return Err(Early::ClientFault(ClientFault::TooLarge));
    }
    if body.is_end_stream() {
        return Ok(RequestBody {
            replay: Some(Bytes::new()),
            stream: None,
            upload: None,
        });
    }
    if length.is_some_and(|n| n <= shared.config.replay_buffer_bytes) {
        let limited = Limited::new(body, shared.config.replay_buffer_bytes as usize);
        return match tokio::time::timeout(shared.config.body_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(RequestBody {
                replay: Some(collected.to_bytes()),
                stream: None,
                upload: None,
            }),
            Ok(Err(_)) => Err(Early::ClientFault(ClientFault::Malformed)),
            Err(_) => Err(Early::ClientFault(ClientFault::Slow)),
        };
    }
    let (upload, state) = Upload::new(
        body,
        shared.config.max_body_bytes,
        shared.config.body_timeout,
    );
    Ok(RequestBody {
        replay: None,
        stream: Some(upload),
        upload: Some(state),
    })
}

/// Makes the head ready for upstreams: takes the retry marker off, reads the affinity key,
/// gives an HTTP/2 request a Host, passes an upgrade through, drops hop-by-hop headers and
/// adds the forwarding ones.
fn prepare(
    shared: &Shared,
    parts: &mut http::request::Parts,
    forwarded: &headers::ForwardedFor,
) -> Prepared {
    let marked = parts
        .headers
        .remove(&shared.retry_header)
        .is_some_and(|v| v == "true" || v == "1");
    let replayable = marked || headers::is_idempotent(&parts.method);
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
    let upgrade = headers::upgrade_request(parts);
    let upgrading = upgrade.is_some();
    let client_upgrade = upgrade
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
    Prepared {
        path,
        replayable,
        affinity,
        upgrading,
        client_upgrade,
    }
}

/// Where a request's attempts may go.
#[derive(Clone, Copy)]
struct Targets<'a> {
    table: &'a RoutingTable,
    app: AppId,
    app_rt: &'a AppRuntime,
    client: &'a meridian_routing::Client,
    pick: Pick,
}

/// Tries targets until one answers, the request may not be tried again, or none is left.
async fn try_targets(
    shared: &Shared,
    targets: &Targets<'_>,
    parts: &mut http::request::Parts,
    request: &Prepared,
    body: &mut RequestBody,
) -> Tries {
    let app_rt = targets.app_rt;
    let max_attempts = shared.config.retry.max_attempts;
    shared.budget.deposit();
    let mut tried = TargetSet::EMPTY;
    let mut tries = Tries {
        outcome: Ok(None),
        attempts: 0,
        upstream_time: Duration::ZERO,
    };
    loop {
        let now = shared.now_ms();
        let target = match choose(shared, targets, tried, now) {
            Ok(target) => target,
            Err(Unavailable::FailClosed) => {
                tries.outcome = Err(unavailable("no target of this app is serving\n"));
                return tries;
            }
            Err(Unavailable::Saturated) if tries.attempts == 0 => {
                app_rt.shed.inc();
                tries.outcome = Err(unavailable("every target is at its concurrency limit\n"));
                return tries;
            }
            // Every target has been tried (or the rest are full): answer with what the
            // last attempt gave.
            Err(_) => return tries,
        };
        tries.attempts += 1;
        tried.insert(target);

        let may_retry = tries.attempts < max_attempts && body.replay.is_some();
        let hedge = match (shared.config.retry.hedge_delay, &body.replay) {
            (Some(delay), Some(bytes)) if may_retry && request.replayable && !request.upgrading => {
                Some((delay, bytes.clone()))
            }
            _ => None,
        };
        let (target, verdict, took) = match hedge {
            Some((delay, bytes)) => {
                let race = Race {
                    shared,
                    targets,
                    parts,
                    request,
                    bytes: &bytes,
                };
                // Boxed, as the hyper path in `send`: the race holds two attempts, and
                // inline it would double the size of every request's future.
                Box::pin(race.run(target, delay, &mut tried, &mut tries.attempts)).await
            }
            None => {
                let state = &app_rt.targets[target];
                state.in_flight.fetch_add(1, Ordering::Relaxed);
                let _in_flight = InFlight(&state.in_flight);
                let sent = Instant::now();
                let timeout = attempt_timeout(shared, may_retry && request.replayable);
                let result = send(
                    shared,
                    app_rt.endpoint(target),
                    parts,
                    request,
                    body,
                    may_retry,
                    timeout,
                )
                .await;
                let took = sent.elapsed();
                let verdict = classify(result, &shared.retry_statuses, body.upload.as_deref());
                (target, verdict, took)
            }
        };
        if !may_retry {
            body.replay = None;
        }
        tries.upstream_time += took;
        let state = &app_rt.targets[target];
        let (failure, ejected) = match settle(shared, app_rt, target, verdict, took) {
            Settled::Answered(response) => {
                tries.outcome = Ok(Some((Attempt::Response(response), target)));
                return tries;
            }
            Settled::ClientFault(fault) => {
                // The client broke its own request: answer it, and neither blame the
                // target nor retry.
                tries.outcome = Err(client_fault_response(shared, fault));
                return tries;
            }
            Settled::Failed(failure, ejected) => (failure, ejected),
        };
        // A request may go again after a failure when nothing of it was sent, or when it
        // is idempotent or marked, while it has attempts left. A retry that adds load to a
        // struggling upstream spends a token of the retry budget; one after an attempt that
        // sent nothing, or away from a target now ejected, is free (see `retry`).
        let sent_nothing = matches!(failure, Attempt::Connect);
        let may_go_again = tries.attempts < max_attempts
            && body.replay.is_some()
            && (sent_nothing || request.replayable);
        tries.outcome = Ok(Some((failure, target)));
        if !may_go_again {
            return tries;
        }
        if retry::is_budgeted(sent_nothing, ejected) && !shared.budget.withdraw(shared.now_ms()) {
            shared.metrics.budget_exhausted.inc();
            return tries;
        }
        state.retries.inc();
    }
}

/// The time an attempt has for its response head: the per-try timeout when the request
/// may go to another target after it, else the upstream timeout.
fn attempt_timeout(shared: &Shared, may_go_again: bool) -> Duration {
    let upstream = shared.config.upstream_timeout;
    match shared.config.retry.per_try_timeout {
        Some(per_try) if may_go_again => per_try.min(upstream),
        _ => upstream,
    }
}

/// What an attempt's verdict came to, once counted against its target.
enum Settled {
    Answered(Response<Pooled>),
    ClientFault(ClientFault),
    /// The failure, and whether its target is ejected now.
    Failed(Attempt, bool),
}

/// Counts an attempt's verdict against its target: latency, success or failure (which may
/// eject it).
fn settle(
    shared: &Shared,
    app_rt: &AppRuntime,
    target: usize,
    verdict: Verdict,
    took: Duration,
) -> Settled {
    let state = &app_rt.targets[target];
    match verdict {
        Verdict::Answered(response) => {
            state.latency.observe(took.as_secs_f64());
            state.record_success(shared.now_ms(), &shared.config.outlier);
            Settled::Answered(response)
        }
        Verdict::ClientFault(fault) => Settled::ClientFault(fault),
        Verdict::Failed(failure, err) => {
            if let Some(err) = err {
                tracing::debug!(app = %state.app, target = %state.cluster, %err, "upstream attempt failed");
            }
            state.latency.observe(took.as_secs_f64());
            let now = shared.now_ms();
            let ejected =
                app_rt.record_failure(target, now, &shared.config.outlier) || state.is_ejected(now);
            Settled::Failed(failure, ejected)
        }
    }
}

/// A hedged request: a buffered, replayable one whose attempts may run side by side.
struct Race<'a> {
    shared: &'a Shared,
    targets: &'a Targets<'a>,
    parts: &'a http::request::Parts,
    request: &'a Prepared,
    bytes: &'a Bytes,
}

impl Race<'_> {
    /// Sends to `first`; when no answer has come after `delay`, and an attempt, a budget
    /// token and another target are left, sends to that target too. The first answer wins
    /// and the other attempt is dropped (its connection closed); a failure waits for the
    /// other attempt. Returns the attempt that decided, its verdict and its time.
    async fn run(
        &self,
        first: usize,
        delay: Duration,
        tried: &mut TargetSet,
        attempts: &mut u32,
    ) -> (usize, Verdict, Duration) {
        let shared = self.shared;
        let max_attempts = shared.config.retry.max_attempts;
        let one = self.attempt(first, *attempts < max_attempts);
        tokio::pin!(one);
        tokio::select! {
            done = &mut one => return (first, done.0, done.1),
            () = tokio::time::sleep(delay) => {}
        }
        if *attempts >= max_attempts {
            let done = one.await;
            return (first, done.0, done.1);
        }
        let second = match choose(shared, self.targets, *tried, shared.now_ms()) {
            Ok(second) if shared.budget.withdraw(shared.now_ms()) => second,
            Ok(_) => {
                shared.metrics.budget_exhausted.inc();
                let done = one.await;
                return (first, done.0, done.1);
            }
            Err(_) => {
                let done = one.await;
                return (first, done.0, done.1);
            }
        };
        *attempts += 1;
        tried.insert(second);
        self.targets.app_rt.targets[second].hedges.inc();
        let two = self.attempt(second, *attempts < max_attempts);
        tokio::pin!(two);
        let (first_won, (verdict, took)) = tokio::select! {
            done = &mut one => (true, done),
            done = &mut two => (false, done),
        };
        let target = if first_won { first } else { second };
        let Verdict::Failed(..) = verdict else {
            // An answer (or the client's fault): the other attempt is cancelled. A first
            // attempt that lost to the hedge counts toward its target's failure streak
            // (see `record_lost_race`): a silent target is then ejected after a few
            // races, instead of costing every request sent to it a hedge.
            if !first_won && matches!(verdict, Verdict::Answered(_)) {
                self.targets.app_rt.record_lost_race(
                    first,
                    shared.now_ms(),
                    &shared.config.outlier,
                );
            }
            return (target, verdict, took);
        };
        // The first to finish failed: count it, and take what the other one brings.
        let _ = settle(shared, self.targets.app_rt, target, verdict, took);
        if first_won {
            let (verdict, took) = two.await;
            (second, verdict, took)
        } else {
            let (verdict, took) = one.await;
            (first, verdict, took)
        }
    }

    /// One attempt of the race on `target`, counted in its in-flight requests while it runs.
    async fn attempt(&self, target: usize, may_go_again: bool) -> (Verdict, Duration) {
        let shared = self.shared;
        let state = &self.targets.app_rt.targets[target];
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&state.in_flight);
        let sent = Instant::now();
        let endpoint = self.targets.app_rt.endpoint(target);
        let result = tokio::time::timeout(
            attempt_timeout(shared, may_go_again),
            endpoint.send_buffered(
                &self.parts.method,
                &self.request.path,
                &self.parts.headers,
                self.bytes,
                shared.config.connect_timeout,
                self.request.replayable,
            ),
        )
        .await;
        (
            classify(result, &shared.retry_statuses, None),
            sent.elapsed(),
        )
    }
}

/// One attempt on `endpoint`, bounded by `timeout`. A buffered body without an upgrade
/// takes the hot path (a direct connection, the head borrowed, no copy even when a retry
/// may follow); a streamed body or an upgrade goes through hyper.
async fn send(
    shared: &Shared,
    endpoint: &Arc<Endpoint>,
    parts: &mut http::request::Parts,
    request: &Prepared,
    body: &mut RequestBody,
    may_retry: bool,
    timeout: Duration,
) -> Result<Result<Response<Pooled>, SendError>, Elapsed> {
    let connect_timeout = shared.config.connect_timeout;
    if let Some(bytes) = &body.replay
        && !request.upgrading
    {
        let sent = endpoint.send_buffered(
            &parts.method,
            &request.path,
            &parts.headers,
            bytes,
            connect_timeout,
            request.replayable,
        );
        return tokio::time::timeout(timeout, sent).await;
    }
    let mut upstream = Request::new(match (&body.replay, body.stream.take()) {
        (Some(bytes), _) => Either::Left(Full::new(bytes.clone())),
        (None, Some(stream)) => Either::Right(stream),
        (None, None) => Either::Left(Full::new(Bytes::new())),
    });
    *upstream.method_mut() = parts.method.clone();
    // Origin form: the request line carries only the path; Host says the rest.
    *upstream.uri_mut() = Uri::from(request.path.clone());
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = if may_retry {
        parts.headers.clone()
    } else {
        std::mem::take(&mut parts.headers)
    };
    // Boxed: hyper's handshake and send are large futures, and this path is the rare one
    // (streamed bodies, upgrades); inline, every request's future would carry their size
    // and be copied with it.
    let sent = Box::pin(endpoint.send(upstream, connect_timeout, request.replayable));
    tokio::time::timeout(timeout, sent).await
}

/// What an attempt's result means for the request.
enum Verdict {
    /// A response to pass on (its status is not in the retry set).
    Answered(Response<Pooled>),
    /// The client broke its own request (its streamed body).
    ClientFault(ClientFault),
    /// The attempt failed, the target's fault; the error, when there is one, for the log.
    Failed(Attempt, Option<SendError>),
}

fn classify(
    result: Result<Result<Response<Pooled>, SendError>, Elapsed>,
    retry_statuses: &[u16],
    upload: Option<&UploadState>,
) -> Verdict {
    if let Some(fault) = client_fault(upload, &result) {
        return Verdict::ClientFault(fault);
    }
    match result {
        Ok(Ok(response)) if !retry_statuses.contains(&response.status().as_u16()) => {
            Verdict::Answered(response)
        }
        Ok(Ok(response)) => Verdict::Failed(Attempt::Response(response), None),
        Ok(Err(err @ SendError::Connect(_))) => Verdict::Failed(Attempt::Connect, Some(err)),
        Ok(Err(err @ SendError::Broken(_))) => Verdict::Failed(Attempt::Broken, Some(err)),
        Err(_) => Verdict::Failed(Attempt::Timeout, None),
    }
}

/// The client's response: the last attempt's (passed on, or joined to the client on 101),
/// or the proxy's own.
fn answer(
    shared: &Shared,
    outcome: Result<Option<(Attempt, usize)>, Response<ProxyBody>>,
    client_upgrade: &mut Option<hyper::upgrade::OnUpgrade>,
) -> (Response<ProxyBody>, Option<usize>) {
    let (attempt, target) = match outcome {
        Err(response) => return (response, None),
        Ok(None) => return (unavailable("no target is available\n"), None),
        Ok(Some(last)) => last,
    };
    let response = match attempt {
        Attempt::Response(response)
            if response.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some() =>
        {
            let (mut head, _) = response.into_parts();
            match (
                client_upgrade.take(),
                head.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            ) {
                (Some(client), Some(upstream)) => {
                    tokio::spawn(tunnel(client, upstream, shared.config.tunnel_idle_timeout));
                    head.headers.remove(header::TRANSFER_ENCODING);
                    Response::from_parts(head, Either::Right(Full::new(Bytes::new())))
                }
                _ => plain(StatusCode::BAD_GATEWAY, "upstream upgrade failed\n"),
            }
        }
        Attempt::Response(response) => {
            let (mut head, body) = response.into_parts();
            headers::strip_hop_by_hop(&mut head.headers);
            let body = body.with_idle_timeout(shared.config.upstream_body_timeout);
            Response::from_parts(head, Either::Left(body))
        }
        Attempt::Timeout => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream did not answer in time\n",
        ),
        Attempt::Connect | Attempt::Broken => plain(StatusCode::BAD_GATEWAY, "upstream failed\n"),
    };
    (response, Some(target))
}

/// Counts the request by the target that answered (none: the proxy did) and status class,
/// and writes its access log line.
fn record(shared: &Shared, targets: &Targets<'_>, line: &Line<'_>, answered_by: Option<usize>) {
    let class = class_index(line.status);
    match answered_by {
        Some(t) => targets.app_rt.targets[t].requests[class].inc(),
        None => shared
            .metrics
            .requests
            .with_label_values(&[line.app, "", crate::metrics::CLASSES[class]])
            .inc(),
    }
    if let Some(log) = &shared.access_log {
        log.log(line);
    }
}

/// The client's fault when an attempt with a streamed body failed because of the client:
/// its body broke, or the upstream gave no answer before the client finished sending it.
fn client_fault<T, E>(
    upload: Option<&UploadState>,
    result: &Result<Result<T, E>, Elapsed>,
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
fn choose(
    shared: &Shared,
    targets: &Targets<'_>,
    tried: TargetSet,
    now_ms: u64,
) -> Result<usize, Unavailable> {
    let Targets {
        table,
        app,
        app_rt,
        client,
        pick,
    } = *targets;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(
            ProxyConfig::default(),
            Arc::new(TableCell::new()),
            Metrics::new().unwrap(),
            None,
        )
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn admit_refuses_what_needs_no_table() {
        let shared = shared();
        assert_eq!(admit(&shared, &request("GET", "/", &[])), Ok(()));
        assert_eq!(
            admit(&shared, &request("CONNECT", "shop.test:443", &[])),
            Err(Early::Refused(Refusal::Connect))
        );
        let long = format!("/{}", "a".repeat(9000));
        assert_eq!(
            admit(&shared, &request("GET", &long, &[])),
            Err(Early::Refused(Refusal::UriTooLong))
        );
        let both = [("content-length", "3"), ("transfer-encoding", "chunked")];
        assert_eq!(
            admit(&shared, &request("POST", "/", &both)),
            Err(Early::Refused(Refusal::LengthAndChunked))
        );
    }

    #[test]
    fn route_without_a_table_is_503_with_retry_after() {
        let shared = shared();
        let early = route(&shared, &request("GET", "/", &[("host", "shop.test")]))
            .err()
            .unwrap();
        assert_eq!(early, Early::NoTable);
        let response = early.response(&shared);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(
            Early::Refused(Refusal::Connect).response(&shared).status(),
            501
        );
        assert_eq!(
            Early::ClientFault(ClientFault::TooLarge)
                .response(&shared)
                .status(),
            413
        );
    }

    #[test]
    fn the_per_try_timeout_cuts_only_attempts_that_may_be_followed() {
        let mut config = ProxyConfig {
            upstream_timeout: Duration::from_secs(30),
            ..ProxyConfig::default()
        };
        let without = Shared::new(
            config.clone(),
            Arc::new(TableCell::new()),
            Metrics::new().unwrap(),
            None,
        );
        assert_eq!(attempt_timeout(&without, true), Duration::from_secs(30));
        config.retry.per_try_timeout = Some(Duration::from_secs(2));
        let with = Shared::new(
            config.clone(),
            Arc::new(TableCell::new()),
            Metrics::new().unwrap(),
            None,
        );
        assert_eq!(attempt_timeout(&with, true), Duration::from_secs(2));
        // The last attempt, or one of a request that cannot go again, waits the full time.
        assert_eq!(attempt_timeout(&with, false), Duration::from_secs(30));
        config.retry.per_try_timeout = Some(Duration::from_secs(60));
        let longer = Shared::new(
            config,
            Arc::new(TableCell::new()),
            Metrics::new().unwrap(),
            None,
        );
        assert_eq!(attempt_timeout(&longer, true), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn classify_tells_answers_target_failures_and_client_faults_apart() {
        let statuses = [502, 503, 504];
        let response = |code: u16| {
            let mut r = Response::new(Pooled::ready(b"x"));
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            Ok(Ok(r))
        };
        let elapsed = || async {
            Err(
                tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
                    .await
                    .unwrap_err(),
            )
        };
        assert!(matches!(
            classify(response(200), &statuses, None),
            Verdict::Answered(_)
        ));
        assert!(matches!(
            classify(response(500), &statuses, None),
            Verdict::Answered(_)
        ));
        assert!(matches!(
            classify(response(503), &statuses, None),
            Verdict::Failed(Attempt::Response(_), None)
        ));
        let connect = Ok(Err(SendError::Connect(
            std::io::ErrorKind::ConnectionRefused.into(),
        )));
        assert!(matches!(
            classify(connect, &statuses, None),
            Verdict::Failed(Attempt::Connect, Some(_))
        ));
        let broken = Ok(Err(SendError::Broken("reset".into())));
        assert!(matches!(
            classify(broken, &statuses, None),
            Verdict::Failed(Attempt::Broken, Some(_))
        ));
        assert!(matches!(
            classify(elapsed().await, &statuses, None),
            Verdict::Failed(Attempt::Timeout, None)
        ));
        // No answer while the client was still sending its body: the client's fault.
        let streaming = UploadState::default();
        assert!(matches!(
            classify(elapsed().await, &statuses, Some(&streaming)),
            Verdict::ClientFault(ClientFault::Slow)
        ));
        // A streamed body's upstream failing on its own is still the target's.
        let broken = Ok(Err(SendError::Broken("reset".into())));
        assert!(matches!(
            classify(broken, &statuses, Some(&streaming)),
            Verdict::Failed(Attempt::Broken, _)
        ));
    }
}
