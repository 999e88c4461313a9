//! The UDP fast path: one thread per core, each with its own SO_REUSEPORT socket (the
//! kernel spreads clients over them), receiving and sending in batches with
//! recvmmsg/sendmmsg. Per packet there is no allocation, no lock and no task: buffers,
//! message headers and the parsed query are reused, and the answer data is the
//! pre-rendered snapshot of the current table.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::answer::{Action, Handler, MAX_QUERY, Transport, Worker};
use crate::wire::{flag, get_u16, truncate_response};

/// Packets per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// Receive buffer per packet: larger than any query we accept, so oversize is detectable.
const RX_LEN: usize = MAX_QUERY + 1;
/// How often a blocked worker wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(100);

/// A UDP socket bound with SO_REUSEPORT, so several workers can share the address.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    mmsg::dont_fragment(&socket, addr.is_ipv6())?;
    // Bursts from many resolvers: a larger receive buffer absorbs them (best effort).
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    // Read without blocking until the queue is empty, then wait in poll(2) (as Knot does):
    // a blocking recvmmsg with a receive timeout arms and cancels a timer on every call.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves `socket` until `stop` is set.
pub(crate) fn serve(socket: UdpSocket, handler: Arc<Handler>, stop: Arc<AtomicBool>, seed: u64) {
    let mut worker = Worker::new(&handler, seed);
    let mut batch = mmsg::Batch::new();
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(4096)).collect();
    let mut send = [false; BATCH];
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                mmsg::wait_readable(fd, POLL);
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(error = %err, "dns: udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        handler.refresh(&mut worker);
        for i in 0..n {
            send[i] = false;
            let (packet, src, truncated) = batch.packet(i);
            let Some(src) = src else { continue };
            if truncated {
                handler.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            send[i] = handler.handle(&mut worker, packet, src, Transport::Udp, &mut outs[i])
                == Action::Send;
        }
        worker.flush_counts();
        let cut = batch.send(fd, &mut outs[..n], &send[..n]);
        if cut > 0 {
            handler.metrics.truncated.fetch_add(cut, Ordering::Relaxed);
        }
    }
}

/// The batch system calls; the only unsafe code of the crate.
#[expect(
    unsafe_code,
    reason = "recvmmsg/sendmmsg have no safe wrapper in std or socket2"
)]
mod mmsg {
    use super::*;
    use std::mem::{size_of, zeroed};
    use std::os::fd::RawFd;
    use std::ptr;

    pub(crate) struct Batch {
        rx: Vec<[u8; RX_LEN]>,
        names: Vec<libc::sockaddr_storage>,
        iov: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        tx_iov: Vec<libc::iovec>,
        tx_hdrs: Vec<libc::mmsghdr>,
        /// The response each outgoing header carries (index into `outs`).
        tx_out: [usize; BATCH],
    }

    impl Batch {
        pub(crate) fn new() -> Self {
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
            // zero bytes is a valid value (null pointers, zero lengths).
            let (names, iov, hdrs) = unsafe {
                (
                    (0..BATCH).map(|_| zeroed()).collect(),
                    (0..BATCH).map(|_| zeroed()).collect(),
                    (0..BATCH).map(|_| zeroed()).collect(),
                )
            };
            // SAFETY: as above.
            let (tx_iov, tx_hdrs) = unsafe {
                (
                    (0..BATCH).map(|_| zeroed()).collect(),
                    (0..BATCH).map(|_| zeroed()).collect(),
                )
            };
            Batch {
                rx: vec![[0u8; RX_LEN]; BATCH],
                names,
                iov,
                hdrs,
                tx_iov,
                tx_hdrs,
                tx_out: [0; BATCH],
            }
        }

        /// Takes up to [`BATCH`] datagrams that are already queued (`WouldBlock`: none).
        pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
            for i in 0..BATCH {
                self.iov[i] = libc::iovec {
                    iov_base: self.rx[i].as_mut_ptr().cast(),
                    iov_len: RX_LEN,
                };
                let hdr = &mut self.hdrs[i];
                hdr.msg_len = 0;
                hdr.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
                hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                hdr.msg_hdr.msg_iov = ptr::from_mut(&mut self.iov[i]);
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
            }
            // SAFETY: every header points at a live buffer, iovec and address owned by
            // `self`, with lengths matching their allocations; `self` is borrowed mutably
            // for the whole call, so nothing else touches them while the kernel writes.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        /// Datagram `i` of the last receive: its bytes, its source, and whether the kernel
        /// cut it (longer than any query we accept).
        pub(crate) fn packet(&self, i: usize) -> (&[u8], Option<IpAddr>, bool) {
            let hdr = &self.hdrs[i];
            let len = (hdr.msg_len as usize).min(RX_LEN);
            let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > MAX_QUERY;
            (&self.rx[i][..len], source(&self.names[i]), truncated)
        }

        /// Sends `outs[i]` to the source of datagram `i` where `send[i]`. An answer the
        /// link cannot carry (EMSGSIZE: sent with DF, see [`dont_fragment`]) goes again
        /// truncated, TC set, so the client asks over TCP; returns how many did.
        pub(crate) fn send(&mut self, fd: RawFd, outs: &mut [Vec<u8>], send: &[bool]) -> u64 {
            let mut n = 0;
            for (i, out) in outs.iter().enumerate() {
                if !send[i] {
                    continue;
                }
                self.tx_iov[n] = libc::iovec {
                    iov_base: out.as_ptr().cast_mut().cast(),
                    iov_len: out.len(),
                };
                let hdr = &mut self.tx_hdrs[n];
                hdr.msg_len = 0;
                hdr.msg_hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
                hdr.msg_hdr.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
                hdr.msg_hdr.msg_iov = ptr::from_mut(&mut self.tx_iov[n]);
                hdr.msg_hdr.msg_iovlen = 1;
                hdr.msg_hdr.msg_control = ptr::null_mut();
                hdr.msg_hdr.msg_controllen = 0;
                hdr.msg_hdr.msg_flags = 0;
                self.tx_out[n] = i;
                n += 1;
            }
            let mut cut = 0;
            let mut done = 0;
            while done < n {
                // SAFETY: headers `done..n` point at response buffers borrowed from `outs`
                // and addresses and iovecs owned by `self`, all alive for the call; the
                // kernel only reads them.
                let sent = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.tx_hdrs[done..].as_mut_ptr(),
                        (n - done) as libc::c_uint,
                        0,
                    )
                };
                if sent <= 0 {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let out = &mut outs[self.tx_out[done]];
                    if err.raw_os_error() == Some(libc::EMSGSIZE)
                        && get_u16(out, 2) & flag::TC == 0
                        && truncate_response(out).is_some()
                    {
                        tracing::debug!(
                            len = self.tx_iov[done].iov_len,
                            "dns: answer too big for the link, sent truncated"
                        );
                        self.tx_iov[done] = libc::iovec {
                            iov_base: out.as_mut_ptr().cast(),
                            iov_len: out.len(),
                        };
                        cut += 1;
                        continue;
                    }
                    // Skip the datagram that failed (an unreachable client) and go on.
                    tracing::debug!(error = %err, "dns: udp send failed");
                    done += 1;
                } else {
                    done += sent as usize;
                }
            }
            cut
        }
    }

    /// Answers leave with Don't Fragment and are never fragmented by this host (RFC 9715,
    /// R1 and R2): an answer is at most [`OUR_UDP_PAYLOAD`](crate::wire::OUR_UDP_PAYLOAD)
    /// bytes, which fits any IPv6 link and any IPv4 link of 1,260 bytes or more; on a
    /// smaller link the send fails and [`Batch::send`] sends the answer truncated instead.
    /// PMTU reports (ICMP) are ignored, so a forged one cannot make this host fragment
    /// (`IP_PMTUDISC_PROBE`). A datagram with DF also needs no IP ID, which otherwise costs
    /// every answer a shared, hashed counter in the kernel (`__ip_select_ident`, 4.6 % of
    /// the server's time).
    pub(crate) fn dont_fragment(socket: &Socket, ipv6: bool) -> io::Result<()> {
        let (level, name, value) = if ipv6 {
            (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)
        } else {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )
        };
        // SAFETY: a valid socket and a pointer to a c_int that lives for the call, with
        // its size; the kernel only reads it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                ptr::from_ref(&value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until `fd` has a datagram to read, at most `timeout`.
    pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call; the kernel writes only
        // its `revents`. An error or a timeout just returns to the caller's loop.
        unsafe {
            libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int);
        }
    }

    fn source(name: &libc::sockaddr_storage) -> Option<IpAddr> {
        match i32::from(name.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote an AF_INET address, so the storage holds a
                // sockaddr_in; sockaddr_storage is larger and suitably aligned for it.
                let sin = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in>() };
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for AF_INET6 and sockaddr_in6.
                let sin6 = unsafe { &*ptr::from_ref(name).cast::<libc::sockaddr_in6>() };
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn option(socket: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
            let mut value: libc::c_int = -1;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid socket, and a c_int with its size for the kernel to write.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    level,
                    name,
                    ptr::from_mut(&mut value).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            value
        }

        #[test]
        fn answers_leave_with_dont_fragment_and_ignore_pmtu_reports() {
            let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            assert_eq!(
                option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
                libc::IP_PMTUDISC_PROBE
            );
            let v6 = bind("[::1]:0".parse().unwrap()).unwrap();
            assert_eq!(option(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 1);
        }
    }
}
