//! Request and response header rules: ambiguous framing, hop-by-hop headers, the
//! forwarding headers the proxy adds, and the host a request is for.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

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
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<&str, Refusal> {
    if let Some(host) = req.uri().host() {
        return Ok(host);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().ok_or(Refusal::NoHost)?;
    if hosts.next().is_some() {
        return Err(Refusal::NoHost);
    }
    let host = host.to_str().map_err(|_| Refusal::BadHost)?;
    let authority: http::uri::Authority = host.parse().map_err(|_| Refusal::BadHost)?;
    if authority.as_str().contains('@') {
        return Err(Refusal::BadHost);
    }
    // `Authority::host` borrows from the parsed value; take the same span of `host`.
    let name_len = authority.host().len();
    Ok(&host[..name_len])
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones named in Connection: they describe
/// one connection and must not be forwarded.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names costs less than nine removals
    // (each one hashes), which showed in profiles.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection are removed too; collected first because removing while
    // reading the Connection values would borrow the map twice. Rare, so the Vec is fine.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Adds X-Forwarded-For (appended to what a previous proxy sent), X-Forwarded-Proto and
/// Forwarded (RFC 7239) for the downstream hop.
pub(crate) fn add_forwarding(headers: &mut HeaderMap, client: &ForwardedFor) {
    let appended = headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|previous| {
            let ours = client.xff.to_str().ok()?;
            HeaderValue::from_str(&format!("{previous}, {ours}")).ok()
        });
    // Cloning a cached value shares its bytes: no allocation on the common path.
    headers.insert(
        X_FORWARDED_FOR,
        appended.unwrap_or_else(|| client.xff.clone()),
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
        let mut h6 = HeaderMap::new();
        add_forwarding(&mut h6, &ForwardedFor::new("::1".parse().unwrap(), "http"));
        assert_eq!(h6["forwarded"], "for=\"[::1]\";proto=http");
    }
}
