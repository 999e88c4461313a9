//! The TCP path: length-prefixed messages (RFC 1035 §4.2.2), pipelined (a client may send
//! many queries without waiting; each is answered in order).
//! A thread per connection, capped in number: TCP is the slow path (truncated retries,
//! large answers), so simplicity wins over throughput here.
//!
//! A client cannot hold the server's connections: each query must arrive whole within the
//! query timeout of the previous answer (bytes trickling in do not extend it), an answer
//! the client does not take within the write timeout ends the connection, one address
//! (IPv6: one /64) holds a bounded number of connections, and the last quarter of the
//! slots only goes to addresses that hold none, so one address can never take them all.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::answer::{Action, Handler, Transport, Worker};

const POLL: Duration = Duration::from_millis(100);

pub(crate) struct TcpSettings {
    /// A whole query must arrive within this long of the connection's start or the last
    /// answer.
    pub(crate) query_timeout: Duration,
    /// An answer must be taken by the client within this long.
    pub(crate) write_timeout: Duration,
    pub(crate) slots: Arc<Slots>,
}

/// The TCP connection slots of the process, shared by every listener.
pub(crate) struct Slots {
    max: usize,
    per_client: usize,
    open: Arc<AtomicUsize>,
    /// Connections per client key; an entry exists only while its count is above zero,
    /// so the map never holds more than `max` entries.
    clients: Mutex<HashMap<IpAddr, usize>>,
}

/// A taken slot, given back on drop.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    pub(crate) fn new(max: usize, per_client: usize, open: Arc<AtomicUsize>) -> Self {
        Slots {
            max: max.max(1),
            per_client: per_client.max(1),
            open,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Clients are counted per address, IPv6 ones per /64 (one host's usual share).
    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        }
    }

    /// A slot for a connection from `peer`, or why not.
    pub(crate) fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let key = Self::key(peer);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let total = self.open.load(Ordering::Acquire);
        let held = clients.get(&key).copied().unwrap_or(0);
        // A quarter of the slots (at least one) is kept for addresses that hold none.
        let reserve = (self.max / 4).max(1).min(self.max - 1);
        if total >= self.max {
            return Err("connection limit reached");
        }
        if held >= self.per_client {
            return Err("per-client connection limit reached");
        }
        if held > 0 && total >= self.max - reserve {
            return Err("remaining slots are reserved for other clients");
        }
        *clients.entry(key).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut clients = self.slots.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = clients.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&self.key);
            }
        }
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Accepts until `stop` is set (the caller then connects once to wake the accept).
pub(crate) fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
    settings: TcpSettings,
) {
    let settings = Arc::new(settings);
    let mut seed = 1u64 << 32;
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "dns: tcp accept failed");
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let slot = match settings.slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                handler.metrics.tcp_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, why, "dns: tcp connection closed on accept");
                continue;
            }
        };
        seed += 1;
        let (handler, stop, settings) = (handler.clone(), stop.clone(), settings.clone());
        // A failed spawn drops the closure, and with it the slot.
        let _ = std::thread::Builder::new()
            .name("dns-tcp-conn".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(err) = connection(stream, peer.ip(), &handler, &stop, &settings, seed) {
                    tracing::debug!(error = %err, "dns: tcp connection ended");
                }
            });
    }
}

fn connection(
    mut stream: TcpStream,
    peer: IpAddr,
    handler: &Handler,
    stop: &AtomicBool,
    settings: &TcpSettings,
    seed: u64,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut worker = Worker::new(handler, seed);
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096);
    // The next query must be complete by then; only an answer moves it.
    let mut deadline = Instant::now() + settings.query_timeout;
    loop {
        // Answer every complete message already buffered (pipelining), then read more.
        let mut at = 0;
        framed.clear();
        while have - at >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
            if have - at < 2 + len {
                break;
            }
            handler.refresh(&mut worker);
            let query = &buf[at + 2..at + 2 + len];
            if let Some(messages) = handler.transfer(&worker, query, peer) {
                for message in messages {
                    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&message);
                }
                at += 2 + len;
                continue;
            }
            let action = handler.handle(&mut worker, query, peer, Transport::Tcp, &mut out);
            if action == Action::Send {
                framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                framed.extend_from_slice(&out);
            }
            at += 2 + len;
        }
        if at > 0 {
            worker.flush_counts();
            write_all_by(
                &mut stream,
                &framed,
                Instant::now() + settings.write_timeout,
            )?;
            deadline = Instant::now() + settings.query_timeout;
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if have == buf.len() {
            // A message longer than the buffer: grow to the largest a length prefix allows.
            buf.resize((buf.len() * 2).min(65537), 0);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            handler
                .metrics
                .tcp_timed_out
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match stream.read(&mut buf[have..]) {
            Ok(0) => return Ok(()),
            Ok(n) => have += n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => return Err(err),
        }
    }
}

/// Writes `data` whole by `deadline`: a client that takes an answer a byte at a time does
/// not get a fresh timeout per byte.
fn write_all_by(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not take the answer",
            ));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_client_and_keep_a_reserve() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Slots::new(8, 16, open.clone()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // One address gets up to the reserve (8 - 2), not the last quarter.
        let held: Vec<Slot> = (0..6).map(|_| slots.take(a).unwrap()).collect();
        assert!(slots.take(a).is_err());
        // Other addresses still get the reserved slots, one each.
        let b = slots.take("192.0.2.2".parse().unwrap()).unwrap();
        let c = slots.take("192.0.2.3".parse().unwrap()).unwrap();
        assert!(slots.take("192.0.2.4".parse().unwrap()).is_err(), "full");
        assert_eq!(open.load(Ordering::Acquire), 8);
        drop((held, b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
        assert!(
            slots.clients.lock().unwrap().is_empty(),
            "bounded by open slots"
        );

        // The per-client cap, with IPv6 counted per /64.
        let slots = Arc::new(Slots::new(100, 2, Arc::new(AtomicUsize::new(0))));
        let _x = slots.take("2001:db8::1".parse().unwrap()).unwrap();
        let _y = slots.take("2001:db8::2".parse().unwrap()).unwrap();
        assert!(slots.take("2001:db8::3".parse().unwrap()).is_err());
        assert!(slots.take("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
