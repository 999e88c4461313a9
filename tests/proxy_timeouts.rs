//! Timeouts wherever a peer can stall: silent client connections (plain and after a TLS
//! handshake), idle keep-alive connections (HTTP/1.1 and HTTP/2 with GOAWAY), upstream
//! response bodies that stop, and quiet upgraded tunnels.

mod proxy_support;

use std::time::{Duration, Instant};

use meridian_config::proxy::{CertificateConfig, TlsConfig};
use meridian_routing::{FailureMode, Health};
use proxy_support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long until the peer closes `stream` (EOF or an error), reading and discarding what
/// arrives; None when it stays open for `limit`.
async fn closed_after<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

async fn one_upstream(
    config: meridian_config::proxy::ProxyConfig,
) -> (Upstream, meridian_dataplane::RunningProxy) {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(config, table).await;
    (a, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_connection_is_closed_at_the_header_timeout() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(400);
    let (_a, proxy) = one_upstream(config).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let after = closed_after(&mut stream, Duration::from_secs(3))
        .await
        .expect("a connection that sent nothing was left open");
    assert!(
        after >= Duration::from_millis(300),
        "closed too early: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_connection_is_closed_at_the_header_timeout() {
    let dir = std::env::temp_dir().join(format!("meridian-proxy-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = write_cert(&dir, "shop", &["shop.test"]);
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(400);
    config.tls = Some(TlsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        certificates: vec![CertificateConfig {
            names: vec!["shop.test".into()],
            cert: dir.join("shop.crt"),
            key: dir.join("shop.key"),
        }],
        reload_interval: Duration::from_secs(10),
    });
    let (_a, proxy) = one_upstream(config).await;
    let (mut tls, _) = handshake(proxy.tls_addr().unwrap(), "shop.test", &cert)
        .await
        .unwrap();
    let after = closed_after(&mut tls, Duration::from_secs(3))
        .await
        .expect("a TLS connection that sent no request was left open");
    assert!(
        after >= Duration::from_millis(300),
        "closed too early: {after:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_keep_alive_connection_is_closed() {
    let mut config = test_config();
    // The head timer also runs between HTTP/1.1 requests: keep it out of the way.
    config.header_timeout = Duration::from_secs(10);
    config.idle_timeout = Duration::from_millis(400);
    let (_a, proxy) = one_upstream(config).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let after = closed_after(&mut stream, Duration::from_secs(3))
        .await
        .expect("an idle keep-alive connection was left open");
    assert!(
        after >= Duration::from_millis(300),
        "closed too early: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_and_closes() {
    let mut config = test_config();
    config.header_timeout = Duration::from_secs(10);
    config.idle_timeout = Duration::from_millis(400);
    let (_a, proxy) = one_upstream(config).await;
    let tcp = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://shop.test/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let idle_from = Instant::now();
    // The client's connection task ends once the server's GOAWAY closed the connection.
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("an idle HTTP/2 connection was left open")
        .unwrap()
        .unwrap();
    assert!(idle_from.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_body_is_cut_off() {
    // An upstream that sends its head and 10 of 100 promised bytes, then nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let stall = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            held.push(s);
        }
    });
    let table = table_of(
        1,
        &[("alpha", upstream, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.upstream_body_timeout = Duration::from_millis(400);
    let (proxy, _cell) = start_proxy(config, table).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let after = closed_after(&mut stream, Duration::from_secs(3))
        .await
        .expect("a response whose upstream stalled was left open");
    assert!(
        after >= Duration::from_millis(300),
        "closed too early: {after:?}"
    );
    stall.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_upgraded_tunnel_is_closed() {
    let mut config = test_config();
    config.tunnel_idle_timeout = Duration::from_millis(400);
    let (_a, proxy) = one_upstream(config).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    // Traffic keeps it open past the idle timeout…
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("echo through the tunnel")
            .unwrap();
        assert_eq!(&buf[..n], b"alpha:ping");
    }
    // …silence closes it.
    let after = closed_after(&mut stream, Duration::from_secs(3))
        .await
        .expect("a quiet tunnel was left open");
    assert!(
        after >= Duration::from_millis(300),
        "closed too early: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_two_idle_periods() {
    // An upstream with an endless body: only the client not reading stops the flow.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let endless = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                while s.write_all(&block).await.is_ok() {}
            });
        }
    });
    let table = table_of(
        1,
        &[("alpha", upstream, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(400);
    let (proxy, _cell) = start_proxy(config, table).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    // Not reading: the buffers fill and nothing moves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Had the proxy kept the connection, draining it would never end.
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "a connection whose client stopped reading was kept open"
    );
    endless.abort();
}
