//! Seamless restarts: a new proxy process takes the listening sockets of the running one
//! over a Unix socket (`handover_socket`), as HAProxy's seamless reload and pingora's
//! graceful upgrade do.
//!
//! Why pass the sockets rather than bind the same port again with `SO_REUSEPORT`: with
//! `SO_REUSEPORT` each process has a listening socket of its own, with an accept queue of
//! its own, and the kernel hashes every new connection to one of them. When the old process
//! closes its socket, the connections waiting in its queue (handshake done, not accepted
//! yet) are reset, and there is always a moment between its last `accept` and the close
//! (Linux can move them to another socket of the group only with `net.ipv4.tcp_migrate_req`
//! or an eBPF program). A passed socket is the *same* socket: the new process accepts from
//! the very queue the old one stops reading, so nothing waiting in it is lost, and no
//! other process can ever share the port by accident.
//!
//! The exchange, on a connection to the running proxy's handover socket:
//!
//! 1. The running (old) proxy sends one message: the text `meridian-handover 1`, then one
//!    line `ROLE ADDRESS` per listener (`proxy`, `admin`, `tls`), then an empty line; the
//!    listeners' file descriptors ride along as `SCM_RIGHTS` in the same order.
//! 2. The new proxy serves on those sockets (those whose role and address its own config
//!    names; it binds the others itself), then writes `ready\n`.
//! 3. The old proxy stops accepting and drains; the new one offers its sockets at the same
//!    path (bound beside it and renamed over it, so the path always answers).
//!
//! If the new process goes away before `ready` (a bad config, a crash), the old one never
//! stopped accepting and keeps serving.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAGIC: &str = "meridian-handover 1";
const READY: &[u8] = b"ready\n";
/// The listeners one proxy has at most (client, admin, TLS), with room to spare.
const MAX_FDS: usize = 8;
/// Time the new process has to read the sockets and start serving on them.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Time to answer a connection on the handover socket.
const EXCHANGE_WITHIN: Duration = Duration::from_secs(5);

/// Listening sockets received from the previous proxy, by role.
#[derive(Default)]
pub(crate) struct Inherited {
    listeners: HashMap<String, std::net::TcpListener>,
    /// The connection to the previous proxy, told `ready` once these sockets are served.
    previous: Option<UnixStream>,
}

impl Inherited {
    /// Asks the proxy at `path` for its listening sockets. None when nobody answers there
    /// (no proxy running, or a stale socket file); an error when one answers wrongly.
    pub(crate) async fn ask(path: &Path) -> io::Result<Inherited> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || ask_blocking(&path))
            .await
            .map_err(io::Error::other)?
    }

    /// The inherited listener for `role`, if its address is `want` (port 0: any port).
    /// A listener the new config moved elsewhere is closed here; the caller binds anew.
    pub(crate) fn take(&mut self, role: &str, want: SocketAddr) -> Option<tokio::net::TcpListener> {
        let listener = self.listeners.remove(role)?;
        let have = listener.local_addr().ok()?;
        let matches = have == want || (want.port() == 0 && have.ip() == want.ip());
        if !matches {
            tracing::info!(role, %have, %want, "inherited listener not in the new config; closing it");
            return None;
        }
        listener.set_nonblocking(true).ok()?;
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::warn!(role, %err, "cannot serve on the inherited listener");
                None
            }
        }
    }

    /// Tells the previous proxy that its sockets are served here: it stops accepting.
    pub(crate) fn ready(mut self) {
        if let Some(mut previous) = self.previous.take()
            && let Err(err) = previous.write_all(READY)
        {
            tracing::warn!(%err, "could not tell the previous proxy to stop accepting");
        }
    }
}

fn ask_blocking(path: &Path) -> io::Result<Inherited> {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Inherited::default());
        }
        Err(err) => return Err(err),
    };
    stream.set_read_timeout(Some(EXCHANGE_WITHIN))?;
    let mut buf = vec![0u8; 4096];
    let (mut len, fds) = sys::recv_with_fds(&stream, &mut buf, MAX_FDS)?;
    // The text may arrive in more than one read; the descriptors came with its first byte.
    while !buf[..len].ends_with(b"\n\n") {
        if len == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handover message too long",
            ));
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
    }
    let mut lines = buf[..len].lines();
    if lines.next().transpose()?.as_deref() != Some(MAGIC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a meridian proxy's handover socket",
        ));
    }
    let roles: Vec<String> = lines
        .map_while(|line| line.ok().filter(|l| !l.is_empty()))
        .filter_map(|line| line.split_once(' ').map(|(role, _)| role.to_string()))
        .collect();
    if roles.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} listeners named, {} received", roles.len(), fds.len()),
        ));
    }
    stream.set_read_timeout(None)?;
    Ok(Inherited {
        listeners: roles
            .into_iter()
            .zip(fds)
            .map(|(role, fd)| (role, std::net::TcpListener::from(fd)))
            .collect(),
        previous: Some(stream),
    })
}

/// Offers `listeners` (role and socket) at `path` until one new proxy has taken them
/// and said it is ready; then calls `handed_over` and ends. Runs until aborted otherwise
/// (the caller aborts it once it stops accepting: after that its sockets must close).
pub(crate) async fn offer(
    path: PathBuf,
    listeners: Vec<(&'static str, SocketAddr, OwnedFd)>,
    handed_over: impl FnOnce(),
) {
    let listener = match bind_in_place(&path) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(path = %path.display(), %err, "cannot offer the listeners for a handover");
            return;
        }
    };
    let listeners = std::sync::Arc::new(listeners);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "handover accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let listeners = listeners.clone();
        let exchange = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            let mut stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            stream.set_write_timeout(Some(EXCHANGE_WITHIN))?;
            let mut text = format!("{MAGIC}\n");
            for (role, addr, _) in listeners.iter() {
                text.push_str(&format!("{role} {addr}\n"));
            }
            text.push('\n');
            let fds: Vec<_> = listeners.iter().map(|(_, _, fd)| fd.as_fd()).collect();
            sys::send_with_fds(&stream, text.as_bytes(), &fds)?;
            // Not held while waiting: once this proxy stops accepting, its sockets must
            // close (a socket nobody accepts from would leave clients hanging).
            drop(fds);
            drop(listeners);
            stream.set_read_timeout(Some(READY_WITHIN))?;
            let mut answer = [0u8; READY.len()];
            match stream.read_exact(&mut answer) {
                Ok(()) => Ok(answer == READY),
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
                Err(err) => Err(err),
            }
        })
        .await;
        match exchange {
            Ok(Ok(true)) => {
                tracing::info!("a new proxy serves the listening sockets now; draining");
                handed_over();
                return;
            }
            Ok(Ok(false)) => {
                tracing::warn!(
                    "a new proxy took the listening sockets but did not start; still serving"
                );
            }
            Ok(Err(err)) => tracing::warn!(%err, "handover failed; still serving"),
            Err(err) => tracing::warn!(%err, "handover failed; still serving"),
        }
    }
}

/// Binds a Unix socket at `path`, replacing whatever is there without a moment where the
/// path is missing: bound beside it, then renamed over it.
fn bind_in_place(path: &Path) -> io::Result<tokio::net::UnixListener> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}", std::process::id()));
    let staged = PathBuf::from(staged);
    let _ = std::fs::remove_file(&staged);
    let listener = tokio::net::UnixListener::bind(&staged)?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

/// `sendmsg`/`recvmsg` with `SCM_RIGHTS`: std's ancillary-data API is not stable yet.
#[expect(
    unsafe_code,
    reason = "passing file descriptors needs sendmsg/recvmsg with SCM_RIGHTS, which std does not offer on stable"
)]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream;

    /// Room for the control message carrying `n` descriptors, in u64s so it is aligned
    /// for `cmsghdr`.
    fn control_buffer(n: usize) -> Vec<u64> {
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) } as usize;
        vec![0u64; space.div_ceil(size_of::<u64>())]
    }

    /// Sends `data` with `fds` attached, in one `sendmsg`.
    pub(super) fn send_with_fds(
        stream: &UnixStream,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<()> {
        let mut control = control_buffer(fds.len());
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call,
        // and the control buffer has CMSG_SPACE room for the one header written into it.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = (control.len() * size_of::<u64>()) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as _;
            let data_ptr = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data_ptr.add(i).write_unaligned(fd.as_raw_fd());
            }
            let sent = libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            if sent as usize != data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "handover message sent in part",
                ));
            }
        }
        Ok(())
    }

    /// Receives into `buf` and up to `max_fds` descriptors (close-on-exec).
    pub(super) fn recv_with_fds(
        stream: &UnixStream,
        buf: &mut [u8],
        max_fds: usize,
    ) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut control = control_buffer(max_fds);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut fds = Vec::new();
        // SAFETY: as in send_with_fds; the kernel writes at most msg_controllen bytes of
        // control data, and each SCM_RIGHTS descriptor it delivers is new and ours to own.
        let (received, truncated) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = (control.len() * size_of::<u64>()) as _;
            let received = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if received < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data_ptr = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..bytes / size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data_ptr.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            (received as usize, msg.msg_flags & libc::MSG_CTRUNC != 0)
        };
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more listening sockets offered than expected",
            ));
        }
        Ok((received, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_pass_to_a_new_owner_who_accepts_from_the_same_queue() {
        let dir = std::env::temp_dir().join(format!("meridian-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.sock");
        let old = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = old.local_addr().unwrap();
        let (handed_over, done) = tokio::sync::oneshot::channel();
        let offer = tokio::spawn(offer(
            path.clone(),
            vec![("proxy", addr, OwnedFd::from(old.try_clone().unwrap()))],
            move || {
                let _ = handed_over.send(());
            },
        ));
        // A client waiting in the accept queue before the handover...
        let waiting = std::net::TcpStream::connect(addr).unwrap();
        let mut inherited = loop {
            let inherited = Inherited::ask(&path).await.unwrap();
            if !inherited.listeners.is_empty() {
                break inherited;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(inherited.take("admin", addr).is_none());
        let new = inherited.take("proxy", addr).unwrap();
        drop(old);
        inherited.ready();
        done.await.unwrap();
        offer.await.unwrap();
        // ...is accepted by the new owner, after the old one closed its descriptor.
        let (accepted, _) = new.accept().await.unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), waiting.local_addr().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn nobody_at_the_path_means_nothing_inherited() {
        let path =
            std::env::temp_dir().join(format!("meridian-handover-none-{}", std::process::id()));
        let inherited = Inherited::ask(&path).await.unwrap();
        assert!(inherited.listeners.is_empty());
    }
}
