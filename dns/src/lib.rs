//! Meridian's authoritative GeoDNS server.
//!
//! It owns the DNS side of Meridian: the zones of the config file (SOA, NS, static records,
//! delegations) and the answers for app hostnames, chosen per query from the routing table
//! (policy, health, weight, the client's location from EDNS Client Subnet or its address).
//! It runs in-process ([`DnsServer::start`], as `meridian up` does) or as `meridian dns`.
//!
//! What it must not do: compute or change routing tables, talk to Kubernetes or cloud APIs,
//! or recurse. It reads the table from a [`TableCell`] that something else fills (the
//! subscriber's watch stream, or the config's base table), and answers only for its zones.
//!
//! # Layout
//!
//! - `wire`: query parsing in place and the wire-format helpers.
//! - `snapshot`: per table version, every name's records pre-rendered in wire form.
//! - `answer`: the packet handler shared by UDP and TCP (lookup, CNAME chains, referrals,
//!   negative answers, GSLB picks, ECS, EDNS, truncation).
//! - `geo`: mmdb country lookups and which ECS addresses count as a location.
//! - `udp`: the fast path (SO_REUSEPORT socket per thread, recvmmsg/sendmmsg).
//! - `tcp`: the slow path (pipelined, idle timeout).
//! - `rrl`: response rate limiting with slip.
//! - `axfr`: zone transfer (AXFR, IXFR from a journal) and NOTIFY to the secondaries.
//! - `tsig`: TSIG (HMAC-SHA256) on transfers and NOTIFYs.
//! - `dnssec`: keys, RRSIGs of the pre-rendered RRsets, compact denial, the signature cache.
//! - `metrics`, `admin`: counters and the `/livez`, `/readyz`, `/metrics` listener.

mod admin;
pub mod answer;
pub mod axfr;
pub mod dnssec;
mod error;
pub mod geo;
pub mod metrics;
pub mod rrl;
pub mod snapshot;
mod tcp;
pub mod tsig;
mod udp;
pub mod wire;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meridian_config::LoadedConfig;
use meridian_subscriber::TableCell;

pub use answer::{Action, Handler, Transport, Worker};
pub use error::DnsError;
pub use metrics::Metrics;

/// The DNS server, started in-process.
pub struct DnsServer;

/// A running server: its bound addresses and a way to stop it.
pub struct RunningDns {
    /// Per listen address, the bound UDP and TCP addresses (the first is `dns.listen`).
    bound: Vec<(SocketAddr, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tcp_open: Arc<AtomicUsize>,
    handler: Arc<Handler>,
    cell: Arc<TableCell>,
}

impl DnsServer {
    /// Starts the UDP workers, the TCP listener and (when configured) the admin listener
    /// on the config's `dns` section (`listen` and every `also_listen` address, each with
    /// its own sockets and workers); answers come from the config's zones and the table
    /// in `cell`. A listen port of 0 picks a free port, the same for UDP and TCP.
    pub fn start(config: &LoadedConfig, cell: Arc<TableCell>) -> Result<RunningDns, DnsError> {
        let c = &config.config;
        let dns = &c.dns;
        let base = config.file.parent().unwrap_or(std::path::Path::new("."));
        let zones = snapshot::Zones::from_config_in(&c.zones, base)?;
        let geo = geo::GeoDb::open(base, &c.geo.databases)?;
        let metrics = Arc::new(Metrics::default());
        let rrl = (dns.rrl.rate > 0)
            .then(|| rrl::Rrl::new(dns.rrl.rate, dns.rrl.slip, dns.rrl.exempt.clone()));
        let tsig = match &dns.tsig {
            Some(t) => Some(
                tsig::TsigKey::load(&t.name, &base.join(&t.secret_file)).map_err(|message| {
                    DnsError::Zone {
                        zone: "dns.tsig".into(),
                        message,
                    }
                })?,
            ),
            None => None,
        };
        let handler = Arc::new(
            Handler::new(zones, geo, cell.clone(), dns.max_answers, metrics, rrl).with_transfers(
                axfr::Transfers::new(
                    axfr::AxfrAcl(dns.axfr_allow.clone()),
                    tsig,
                    dns.ixfr_journal,
                ),
            ),
        );
        let workers = match dns.udp_workers {
            Some(0) => {
                return Err(DnsError::Listen {
                    addr: dns.listen,
                    what: "udp",
                    source: std::io::Error::other("dns.udp_workers must be at least 1"),
                });
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };

        let mut listeners = Vec::new();
        for addr in std::iter::once(dns.listen).chain(dns.also_listen.iter().copied()) {
            let (udp_sockets, tcp_listener) = bind_pair(addr, workers)?;
            let local = |what, r: std::io::Result<SocketAddr>| {
                r.map_err(|source| DnsError::Listen { addr, what, source })
            };
            let udp_addr = local("udp", udp_sockets[0].local_addr())?;
            let tcp_addr = local("tcp", tcp_listener.local_addr())?;
            listeners.push((udp_sockets, tcp_listener, udp_addr, tcp_addr));
        }
        let bound: Vec<(SocketAddr, SocketAddr)> = listeners.iter().map(|l| (l.2, l.3)).collect();

        let stop = Arc::new(AtomicBool::new(false));
        let tcp_open = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .map_err(|source| DnsError::Thread { name, source })
        };
        // One set of TCP slots for every listener: the limits are the process's.
        let tcp_slots = Arc::new(tcp::Slots::new(
            dns.tcp_max_connections,
            dns.tcp_max_connections_per_client,
            tcp_open.clone(),
        ));
        let started = || -> Result<Option<SocketAddr>, DnsError> {
            let mut seed = 0u64;
            for (udp_sockets, tcp_listener, _, _) in listeners {
                for socket in udp_sockets {
                    seed += 1;
                    let (h, s) = (handler.clone(), stop.clone());
                    threads.push(spawn(
                        format!("dns-udp-{}", seed - 1),
                        Box::new(move || udp::serve(socket, h, s, seed)),
                    )?);
                }
                let (h, s) = (handler.clone(), stop.clone());
                let settings = tcp::TcpSettings {
                    query_timeout: dns.tcp_idle_timeout,
                    write_timeout: dns.tcp_write_timeout,
                    slots: tcp_slots.clone(),
                };
                threads.push(spawn(
                    "dns-tcp".into(),
                    Box::new(move || tcp::serve(tcp_listener, h, s, settings)),
                )?);
            }
            if !dns.notify.is_empty() {
                let (h, s, c) = (handler.clone(), stop.clone(), cell.clone());
                let targets = dns.notify.clone();
                threads.push(spawn(
                    "dns-notify".into(),
                    Box::new(move || notifier(h, c, s, targets)),
                )?);
            }
            match dns.admin_listen {
                Some(addr) => {
                    let listener =
                        std::net::TcpListener::bind(addr).map_err(|source| DnsError::Listen {
                            addr,
                            what: "admin",
                            source,
                        })?;
                    let bound = listener.local_addr().map_err(|source| DnsError::Listen {
                        addr,
                        what: "admin",
                        source,
                    })?;
                    let (h, s, c) = (handler.clone(), stop.clone(), cell.clone());
                    threads.push(spawn(
                        "dns-admin".into(),
                        Box::new(move || admin::serve(listener, h, c, s)),
                    )?);
                    Ok(Some(bound))
                }
                None => Ok(None),
            }
        };
        let admin_addr = match started() {
            Ok(addr) => addr,
            Err(err) => {
                stop.store(true, Ordering::Relaxed);
                for (_, tcp_addr) in &bound {
                    let _ = TcpStream::connect(tcp_addr);
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(err);
            }
        };
        if let Some(admin_addr) = admin_addr {
            tracing::info!(%admin_addr, "dns: admin listener: /livez, /readyz, /metrics");
        }
        for (udp_addr, tcp_addr) in &bound {
            tracing::info!(%udp_addr, %tcp_addr, workers, "dns: serving");
        }
        Ok(RunningDns {
            bound,
            admin_addr,
            stop,
            threads,
            tcp_open,
            handler,
            cell,
        })
    }
}

/// Sends NOTIFY to the secondaries whenever the table version (the zones' serial)
/// changes, and once at start. Looks at the cell every 100 ms: a NOTIFY is a hint, and the
/// secondaries' refresh timer covers one that is late or lost.
fn notifier(
    handler: Arc<Handler>,
    cell: Arc<TableCell>,
    stop: Arc<AtomicBool>,
    targets: Vec<SocketAddr>,
) {
    let mut notified: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let version = cell.version();
        if notified != Some(version) {
            let snapshot = handler.current_snapshot();
            handler.notify(&snapshot, &targets);
            notified = Some(version);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Binds `workers` UDP sockets and one TCP listener on the same address and port. With
/// port 0 the kernel's UDP pick may be taken for TCP; then try again with a new pick.
fn bind_pair(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, std::net::TcpListener), DnsError> {
    let udp_err = |source| DnsError::Listen {
        addr,
        what: "udp",
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let first = udp::bind(addr).map_err(udp_err)?;
        let bound = first.local_addr().map_err(udp_err)?;
        let tcp = match tcp::bind(bound) {
            Ok(tcp) => tcp,
            Err(err) if addr.port() == 0 && attempts < 20 => {
                tracing::debug!(error = %err, "dns: tcp port taken, picking another");
                continue;
            }
            Err(source) => {
                return Err(DnsError::Listen {
                    addr: bound,
                    what: "tcp",
                    source,
                });
            }
        };
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(udp::bind(bound).map_err(udp_err)?);
        }
        return Ok((sockets, tcp));
    }
}

impl RunningDns {
    /// The UDP address of `dns.listen` (the same port serves TCP).
    pub fn udp_addr(&self) -> SocketAddr {
        self.bound[0].0
    }

    /// The TCP address of `dns.listen`.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.bound[0].1
    }

    /// The UDP and TCP addresses of every listen address, `dns.listen` first.
    pub fn addrs(&self) -> &[(SocketAddr, SocketAddr)] {
        &self.bound
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.handler.metrics
    }

    /// The answers given per target so far, for the vantage reports (the controller charts
    /// the rates). Reads the counters only, never blocks the query path.
    pub fn answer_source(&self) -> meridian_subscriber::report::AnswerSource {
        let metrics = self.handler.metrics.clone();
        Arc::new(move || metrics.answer_samples())
    }

    /// The Prometheus text of the server's metrics.
    pub fn render_metrics(&self) -> String {
        admin::render(&self.handler, &self.cell)
    }

    /// Stops every thread: workers finish the batch in hand, TCP connections close at
    /// their next poll. Waits at most a few seconds for connections to close.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        // Wake the blocking accepts.
        for (_, tcp_addr) in &self.bound {
            let _ = TcpStream::connect_timeout(tcp_addr, Duration::from_secs(1));
        }
        if let Some(admin) = self.admin_addr {
            let _ = TcpStream::connect_timeout(&admin, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.tcp_open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
