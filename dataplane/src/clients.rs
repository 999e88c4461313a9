//! Limits per client address: connections open and a request rate, each optional (see
//! `PerClientConfig` for the knobs and what they cost).
//!
//! One table maps a client key (an IPv4 address, or an IPv6 address's /64 prefix) to its
//! entry. A connection looks its entry up once, at accept, and keeps it; the requests it
//! carries then charge the entry's token bucket without touching the table. The table
//! holds at most `max_clients` entries: when it is full, entries no connection holds and
//! whose bucket has refilled are dropped (forgetting them changes nothing), and when none
//! can be, the new client goes untracked (served without a per-address limit) rather than
//! refused, so that nobody can lock newcomers out by filling the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_config::proxy::PerClientConfig;
use prometheus::IntCounter;

/// How often, at most, a full table is swept for entries to drop: a table full of busy
/// clients would otherwise be walked on every accept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The limits of one proxy and the table of clients they are kept for.
pub(crate) struct ClientLimits {
    max_connections: Option<u32>,
    /// Tokens a second, and the bucket's size; none: no rate limit.
    rate: Option<(f64, f64)>,
    max_clients: usize,
    table: Mutex<Table>,
    untracked: IntCounter,
}

struct Table {
    entries: HashMap<IpAddr, Arc<Client>>,
    last_sweep: Option<Instant>,
}

/// One client address's state.
pub(crate) struct Client {
    connections: AtomicU32,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A client connection's hold on its entry: counts it as open until dropped.
pub(crate) struct Admitted {
    client: Option<Arc<Client>>,
}

/// A request over the rate: when to come back, in whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) u64);

impl ClientLimits {
    /// None when neither limit is set: then the request path pays nothing.
    pub(crate) fn new(config: &PerClientConfig, untracked: IntCounter) -> Option<Self> {
        if config.max_connections.is_none() && config.requests_per_second.is_none() {
            return None;
        }
        let rate = config.requests_per_second.map(|rps| {
            let burst = config.burst.unwrap_or(rps);
            (f64::from(rps), f64::from(burst))
        });
        Some(ClientLimits {
            max_connections: config.max_connections,
            rate,
            max_clients: config.max_clients,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                last_sweep: None,
            }),
            untracked,
        })
    }

    /// Admits a new connection from `addr`, or None when the address already holds
    /// `max_connections` (the caller closes it).
    pub(crate) fn connect(&self, addr: IpAddr, now: Instant) -> Option<Admitted> {
        let key = key(addr);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let client = match table.entries.get(&key) {
            Some(client) => client.clone(),
            None => {
                if table.entries.len() >= self.max_clients && !self.make_room(&mut table, now) {
                    self.untracked.inc();
                    return Some(Admitted { client: None });
                }
                let client = Arc::new(Client {
                    connections: AtomicU32::new(0),
                    bucket: Mutex::new(Bucket {
                        tokens: self.rate.map_or(0.0, |(_, burst)| burst),
                        at: now,
                    }),
                });
                table.entries.insert(key, client.clone());
                client
            }
        };
        // Counted under the table's lock, so a sweep never drops an entry being admitted.
        let open = client.connections.load(Ordering::Relaxed);
        if self.max_connections.is_some_and(|max| open >= max) {
            return None;
        }
        client.connections.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            client: Some(client),
        })
    }

    /// Charges one request to the connection's client; Err when it is over the rate.
    pub(crate) fn request(&self, admitted: &Admitted, now: Instant) -> Result<(), RetryAfter> {
        let (Some((rate, burst)), Some(client)) = (self.rate, &admitted.client) else {
            return Ok(());
        };
        let mut bucket = client.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(RetryAfter((wait.ceil() as u64).max(1)))
        }
    }

    /// Drops the entries that hold nothing (no connection open, bucket full by now); true
    /// when that freed room. Runs at most once per [`SWEEP_INTERVAL`].
    fn make_room(&self, table: &mut Table, now: Instant) -> bool {
        if table
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return false;
        }
        table.last_sweep = Some(now);
        let rate = self.rate;
        table.entries.retain(|_, client| {
            client.connections.load(Ordering::Relaxed) > 0
                || rate.is_some_and(|(rate, burst)| {
                    let bucket = client.bucket.lock().unwrap_or_else(|e| e.into_inner());
                    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                    bucket.tokens + elapsed * rate < burst
                })
        });
        table.entries.len() < self.max_clients
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(client) = &self.client {
            client.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The table key: an IPv4 address as it is (an IPv4-mapped IPv6 address as IPv4), an
/// IPv6 address by its /64 prefix.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: PerClientConfig) -> ClientLimits {
        ClientLimits::new(&config, IntCounter::new("u", "u").unwrap()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_limit_configured_is_no_table() {
        let counter = IntCounter::new("u", "u").unwrap();
        assert!(ClientLimits::new(&PerClientConfig::default(), counter).is_none());
    }

    #[test]
    fn connections_per_address_are_capped_and_freed_on_close() {
        let limits = limits(PerClientConfig {
            max_connections: Some(2),
            ..PerClientConfig::default()
        });
        let now = Instant::now();
        let a = limits.connect(ip("192.0.2.1"), now).unwrap();
        let b = limits.connect(ip("192.0.2.1"), now).unwrap();
        assert!(limits.connect(ip("192.0.2.1"), now).is_none());
        // Another address is not affected.
        let _other = limits.connect(ip("192.0.2.2"), now).unwrap();
        drop(a);
        let _c = limits.connect(ip("192.0.2.1"), now).unwrap();
        drop(b);
    }

    #[test]
    fn the_rate_is_a_bucket_with_a_burst_and_says_when_to_come_back() {
        let limits = limits(PerClientConfig {
            requests_per_second: Some(2),
            burst: Some(3),
            ..PerClientConfig::default()
        });
        let t0 = Instant::now();
        let conn = limits.connect(ip("192.0.2.1"), t0).unwrap();
        for _ in 0..3 {
            assert_eq!(limits.request(&conn, t0), Ok(()));
        }
        assert_eq!(limits.request(&conn, t0), Err(RetryAfter(1)));
        // Half a second at 2/s is one token.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limits.request(&conn, later), Ok(()));
        assert!(limits.request(&conn, later).is_err());
        // Two connections of one address share its bucket.
        let second = limits.connect(ip("192.0.2.1"), later).unwrap();
        assert!(limits.request(&second, later).is_err());
        let other = limits.connect(ip("192.0.2.9"), later).unwrap();
        assert_eq!(limits.request(&other, later), Ok(()));
        // A slow rate asks for a longer wait.
        let slow = self::limits(PerClientConfig {
            requests_per_second: Some(1),
            burst: Some(1),
            ..PerClientConfig::default()
        });
        let conn = slow.connect(ip("192.0.2.1"), t0).unwrap();
        assert_eq!(slow.request(&conn, t0), Ok(()));
        assert_eq!(slow.request(&conn, t0), Err(RetryAfter(1)));
    }

    #[test]
    fn a_full_table_drops_idle_entries_and_else_leaves_newcomers_untracked() {
        let limits = limits(PerClientConfig {
            max_connections: Some(1),
            requests_per_second: Some(1),
            burst: Some(10),
            max_clients: 2,
        });
        let t0 = Instant::now();
        let a = limits.connect(ip("192.0.2.1"), t0).unwrap();
        let b = limits.connect(ip("192.0.2.2"), t0).unwrap();
        // Full of clients with a connection open: the third goes untracked, unlimited.
        let c1 = limits.connect(ip("192.0.2.3"), t0).unwrap();
        let c2 = limits.connect(ip("192.0.2.3"), t0).unwrap();
        assert!(c1.client.is_none() && c2.client.is_none());
        assert_eq!(limits.untracked.get(), 2);
        assert_eq!(limits.tracked(), 2);
        // One client closes and its bucket is full: after the sweep interval its entry
        // makes room for the newcomer, which is limited from then on.
        drop(a);
        let t1 = t0 + SWEEP_INTERVAL;
        let _c = limits.connect(ip("192.0.2.3"), t1).unwrap();
        assert!(limits.connect(ip("192.0.2.3"), t1).is_none());
        assert_eq!(limits.tracked(), 2);
        // A closed client whose bucket is still refilling is kept (forgetting it would
        // hand it a fresh burst); once refilled it goes.
        for _ in 0..3 {
            let _ = limits.request(&b, t1);
        }
        drop(b);
        let t2 = t1 + SWEEP_INTERVAL;
        let d = limits.connect(ip("192.0.2.4"), t2).unwrap();
        assert!(d.client.is_none(), "a refilling entry was dropped");
        let t3 = t1 + Duration::from_secs(4);
        let d = limits.connect(ip("192.0.2.4"), t3).unwrap();
        assert!(d.client.is_some(), "a refilled entry was kept");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("2001:db8:1:2:bbbb::7")), ip("2001:db8:1:2::"));
        assert_ne!(key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
