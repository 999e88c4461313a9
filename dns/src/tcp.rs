//! The TCP path: length-prefixed messages (RFC 1035 §4.2.2), pipelined (a client may send
//! many queries without waiting; each is answered in order), closed after an idle timeout.
//! A thread per connection, capped in number: TCP is the slow path (truncated retries,
//! large answers), so simplicity wins over throughput here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::answer::{Action, Handler, Transport, Worker};

const POLL: Duration = Duration::from_millis(100);

pub(crate) struct TcpSettings {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
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
    open: Arc<AtomicUsize>,
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
        if open.fetch_add(1, Ordering::AcqRel) >= settings.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("dns: tcp connection limit reached, closing a new connection");
            continue;
        }
        seed += 1;
        let (handler, stop, settings, open_c) = (
            handler.clone(),
            stop.clone(),
            settings.clone(),
            open.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("dns-tcp-conn".into())
            .spawn(move || {
                if let Err(err) = connection(stream, &handler, &stop, &settings, seed) {
                    tracing::debug!(error = %err, "dns: tcp connection ended");
                }
                open_c.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn connection(
    mut stream: TcpStream,
    handler: &Handler,
    stop: &AtomicBool,
    settings: &TcpSettings,
    seed: u64,
) -> io::Result<()> {
    let peer = stream.peer_addr()?.ip();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut worker = Worker::new(handler, seed);
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096);
    let mut last = Instant::now();
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
            let action = handler.handle(
                &mut worker,
                &buf[at + 2..at + 2 + len],
                peer,
                Transport::Tcp,
                &mut out,
            );
            if action == Action::Send {
                framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
                framed.extend_from_slice(&out);
            }
            at += 2 + len;
        }
        if !framed.is_empty() {
            stream.write_all(&framed)?;
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
        match stream.read(&mut buf[have..]) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                have += n;
                last = Instant::now();
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if last.elapsed() >= settings.idle_timeout {
                    return Ok(());
                }
            }
            Err(err) => return Err(err),
        }
    }
}
