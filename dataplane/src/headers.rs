//! Request and response header rules: ambiguous framing, hop-by-hop headers, the
//! forwarding headers the proxy adds, and the host a request is for.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, StatusCode, Version};

/// Why a request is refused before it reaches any upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Both Content-Length and Transfer-Encoding: the request smuggling shape (RFC 9112 §6.1).
    LengthAndChunked,
    /// More than one Content-Length, even with equal values.
    DuplicateLength,
    /// Seen on the wire: both framings, or repeated Content-Length (hyper folds either
    /// into one framing before the request path sees it).
    AmbiguousOnWire,
    /// No host in the request target nor a Host header, or more than one Host header.
    NoHost,
    /// A Host header that is not a valid authority.
    BadHost,
    /// The request target's authority (absolute form, or HTTP/2 `:authority`) and the Host
    /// header name different hosts: which one the upstream would serve is unclear.
    HostMismatch,
    /// CONNECT: the proxy opens no tunnels to arbitrary hosts.
    Connect,
    /// A request target longer than `max_uri_bytes`.
    UriTooLong,
}

impl Refusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::LengthAndChunked => {
                "request has both Content-Length and Transfer-Encoding; refused as ambiguous framing\n"
            }
            Refusal::DuplicateLength => "request has more than one Content-Length header\n",
            Refusal::AmbiguousOnWire => {
                "request has more than one Content-Length, or Content-Length with Transfer-Encoding; refused as ambiguous framing\n"
            }
            Refusal::NoHost => "request has no host or more than one Host header\n",
            Refusal::BadHost => "request has an invalid Host header\n",
            Refusal::HostMismatch => {
                "request target authority and Host header name different hosts\n"
            }
            Refusal::Connect => "CONNECT is not supported by this proxy\n",
            Refusal::UriTooLong => "request target is too long\n",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::NOT_IMPLEMENTED,
            Refusal::UriTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of `meridian_proxy_refused_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::LengthAndChunked => "length-and-chunked",
            Refusal::DuplicateLength => "duplicate-length",
            Refusal::AmbiguousOnWire => "ambiguous-framing",
            Refusal::NoHost => "no-host",
            Refusal::BadHost => "bad-host",
            Refusal::HostMismatch => "host-mismatch",
            Refusal::Connect => "connect",
            Refusal::UriTooLong => "uri-too-long",
        }
    }
}

/// Refuses framing a downstream parser and an upstream one could read differently. hyper
/// already rejects conflicting lengths and malformed chunking with a 400; what it tolerates
/// (a Transfer-Encoding beside a Content-Length, repeated equal lengths) is refused here.
pub(crate) fn check_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
    let headers = req.headers();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let has_length = lengths.next().is_some();
    if lengths.next().is_some() {
        return Err(Refusal::DuplicateLength);
    }
    if has_length && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Refusal::LengthAndChunked);
    }
    Ok(())
}

/// The host the request is for, lower-case is left to the routing table (which ignores
/// case), without a port. HTTP/2 and absolute-form requests carry it in the target; an
/// HTTP/1.1 origin-form request in its one Host header.
///
/// One host per request: when the target carries an authority and a Host header is sent
/// too, both must name the same host and port, or the request is refused. RFC 9113 §8.3.1
/// calls such an HTTP/2 request malformed; for HTTP/1.1 (RFC 9112 §3.2.2 lets the target
/// win) refusing does the same, so the host routed on is always the host forwarded.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<&str, Refusal> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::NoHost);
    }
    if let Some(target) = req.uri().authority() {
        if let Some(host) = host {
            let host: Authority = host
                .to_str()
                .ok()
                .and_then(|h| h.parse().ok())
                .ok_or(Refusal::BadHost)?;
            let default_port = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            };
            if !target.host().eq_ignore_ascii_case(host.host())
                || target.port_u16().unwrap_or(default_port)
                    != host.port_u16().unwrap_or(default_port)
            {
                return Err(Refusal::HostMismatch);
            }
        }
        return Ok(target.host());
    }
    let host = host.ok_or(Refusal::NoHost)?;
    let host = host.to_str().map_err(|_| Refusal::BadHost)?;
    let authority: Authority = host.parse().map_err(|_| Refusal::BadHost)?;
    if authority.as_str().contains('@') {
        return Err(Refusal::BadHost);
    }
    // `Authority::host` borrows from the parsed value; take the same span of `host`.
    let name_len = authority.host().len();
    Ok(&host[..name_len])
}

/// End-to-end headers the proxy relies on, which a Connection header may not nominate
/// for removal: the host routed on, the body's length, and the forwarding chain the
/// proxy appends to.
const PROTECTED: [HeaderName; 4] = [
    header::HOST,
    header::CONTENT_LENGTH,
    X_FORWARDED_FOR,
    header::FORWARDED,
];

/// The hop-by-hop headers (RFC 9110 §7.6.1, and Keep-Alive and Proxy-Connection from
/// before it).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Where a lower-case name stands in [`HOP_BY_HOP`]. A match on the bytes: comparing
/// against each `HeaderName` in turn cost more than the rest of the stripping.
fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"connection" => 0,
        b"te" => 1,
        b"trailer" => 2,
        b"transfer-encoding" => 3,
        b"upgrade" => 4,
        b"proxy-authorization" => 5,
        b"proxy-authenticate" => 6,
        b"keep-alive" => 7,
        b"proxy-connection" => 8,
        _ => return None,
    })
}

/// A Connection token the stripping removes anyway, or that names no header: "close" and
/// the hop-by-hop names, in any case.
fn is_hop_by_hop_token(token: &str) -> bool {
    let mut lower = [0u8; 19];
    let Some(lower) = lower.get_mut(..token.len()) else {
        return false;
    };
    for (l, b) in lower.iter_mut().zip(token.bytes()) {
        *l = b.to_ascii_lowercase();
    }
    lower == b"close" || hop_by_hop_index(lower).is_some()
}

/// Hop-by-hop headers and the ones named in Connection (except the [`PROTECTED`] ones):
/// they describe one connection and must not be forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds the few present (most messages carry none, a
    // response from a keep-alive upstream one): removing only those costs less than
    // removing all nine, each removal a hash, which showed in profiles.
    let mut present = [false; 9];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str().as_bytes()) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Names listed in Connection are removed too; collected first because removing while
    // reading the Connection values would borrow the map twice. The usual tokens ("close",
    // "keep-alive") are skipped, so the Vec stays empty and allocates nothing.
    let mut named: Vec<HeaderName> = Vec::new();
    if present[0] {
        let tokens = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !is_hop_by_hop_token(token));
        for token in tokens {
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                && !PROTECTED.contains(&name)
            {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for (hop, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(hop);
        }
    }
}

/// The forwarding header values for one client address and protocol. Built once per client
/// connection: formatting the address for every request showed in profiles.
pub(crate) struct ForwardedFor {
    xff: HeaderValue,
    proto: HeaderValue,
    forwarded: HeaderValue,
}

impl ForwardedFor {
    pub(crate) fn new(client: IpAddr, proto: &str) -> Self {
        let mut buf = String::with_capacity(64);
        let _ = write!(buf, "{client}");
        let xff = HeaderValue::from_str(&buf).unwrap_or(HeaderValue::from_static("unknown"));
        buf.clear();
        match client {
            IpAddr::V4(v4) => {
                let _ = write!(buf, "for={v4}");
            }
            // IPv6 addresses are quoted and bracketed in Forwarded (RFC 7239 §6).
            IpAddr::V6(v6) => {
                let _ = write!(buf, "for=\"[{v6}]\"");
            }
        }
        let proto = if proto == "https" { "https" } else { "http" };
        // No `host=`: the Host header is forwarded unchanged and says the same.
        let _ = write!(buf, ";proto={proto}");
        let forwarded =
            HeaderValue::from_str(&buf).unwrap_or(HeaderValue::from_static("for=unknown"));
        ForwardedFor {
            xff,
            proto: HeaderValue::from_static(proto),
            forwarded,
        }
    }
}

impl ForwardedFor {
    /// The client's address as text.
    pub(crate) fn client(&self) -> &str {
        self.xff.to_str().unwrap_or_default()
    }
}

/// Adds X-Forwarded-For (appended to what previous proxies sent, every line of it in
/// order), X-Forwarded-Proto and Forwarded (RFC 7239) for the downstream hop.
pub(crate) fn add_forwarding(headers: &mut HeaderMap, client: &ForwardedFor) {
    let mut previous = headers.get_all(X_FORWARDED_FOR).iter().peekable();
    let appended = previous.peek().is_some().then(|| {
        let mut chain = Vec::with_capacity(64);
        for value in previous {
            chain.extend_from_slice(value.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(client.xff.as_bytes());
        HeaderValue::from_bytes(&chain).ok()
    });
    // Cloning a cached value shares its bytes: no allocation on the common path.
    headers.insert(
        X_FORWARDED_FOR,
        appended.flatten().unwrap_or_else(|| client.xff.clone()),
    );
    headers.insert(X_FORWARDED_PROTO, client.proto.clone());
    headers.append(header::FORWARDED, client.forwarded.clone());
}

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The protocol an HTTP/1.1 request asks to upgrade to (RFC 9110 §7.8): an Upgrade header
/// named in Connection.
pub(crate) fn upgrade_request(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?;
    let named = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    named.then(|| protocol.clone())
}

/// True for methods RFC 9110 §9.2.2 calls idempotent: safe to send twice.
pub(crate) fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// True when the request is HTTP/1.x (framing checks apply to it; HTTP/2 frames itself).
pub(crate) fn is_http1(version: Version) -> bool {
    matches!(version, Version::HTTP_10 | Version::HTTP_11)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn framing() {
        assert_eq!(check_framing(&req(&[("content-length", "3")])), Ok(()));
        assert_eq!(
            check_framing(&req(&[
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ])),
            Err(Refusal::LengthAndChunked)
        );
        assert_eq!(
            check_framing(&req(&[("content-length", "3"), ("content-length", "3")])),
            Err(Refusal::DuplicateLength)
        );
    }

    #[test]
    fn host() {
        assert_eq!(
            request_host(&req(&[("host", "Shop.Example.com:8080")])),
            Ok("Shop.Example.com")
        );
        assert_eq!(request_host(&req(&[])), Err(Refusal::NoHost));
        assert_eq!(
            request_host(&req(&[("host", "a.test"), ("host", "b.test")])),
            Err(Refusal::NoHost)
        );
        assert_eq!(
            request_host(&req(&[("host", "a b")])),
            Err(Refusal::BadHost)
        );
        let absolute = Request::builder()
            .uri("http://api.test/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&absolute), Ok("api.test"));
        let with = |uri: &str, host: &str| {
            request_host(
                &Request::builder()
                    .uri(uri)
                    .header("host", host)
                    .body(())
                    .unwrap(),
            )
            .map(str::to_string)
        };
        assert_eq!(with("http://api.test/x", "API.test"), Ok("api.test".into()));
        assert_eq!(
            with("http://api.test/x", "api.test:80"),
            Ok("api.test".into())
        );
        assert_eq!(
            with("https://api.test/x", "api.test:443"),
            Ok("api.test".into())
        );
        assert_eq!(
            with("http://api.test/x", "other.test"),
            Err(Refusal::HostMismatch)
        );
        assert_eq!(
            with("http://api.test/x", "api.test:8080"),
            Err(Refusal::HostMismatch)
        );
        assert_eq!(with("http://api.test/x", "a b"), Err(Refusal::BadHost));
    }

    #[test]
    fn hop_by_hop_names_and_connection_tokens_in_any_case() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("Close, KEEP-ALIVE, X-Other"),
        );
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            "date",
            HeaderValue::from_static("Thu, 03 Dec 2026 18:00:00 GMT"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["date"]);
    }

    #[test]
    fn hop_by_hop_and_forwarding() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("x-private"));
        assert!(!h.contains_key("keep-alive"));
        assert!(h.contains_key("traceparent"));
        add_forwarding(
            &mut h,
            &ForwardedFor::new("127.0.0.1".parse().unwrap(), "http"),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
        // Connection cannot remove what the proxy relies on.
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("host, content-length, x-a"),
        );
        h.insert("host", HeaderValue::from_static("shop.test"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["host"], "shop.test");
        assert_eq!(h["content-length"], "3");
        assert!(!h.contains_key("x-a"));
        // Every X-Forwarded-For line is kept, in order.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.2, 10.0.0.3"),
        );
        add_forwarding(
            &mut h,
            &ForwardedFor::new("127.0.0.1".parse().unwrap(), "http"),
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["192.0.2.1, 198.51.100.2, 10.0.0.3, 127.0.0.1"]
        );
        let mut h6 = HeaderMap::new();
        add_forwarding(&mut h6, &ForwardedFor::new("::1".parse().unwrap(), "http"));
        assert_eq!(h6["forwarded"], "for=\"[::1]\";proto=http");
    }
}
