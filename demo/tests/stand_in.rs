//! A stand-in answers as its cluster, fails as told and recovers, over real TCP.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use meridian_demo::{Mode, StandIns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: shop.demo.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn answers_fails_and_recovers() {
    let (a, b) = (free_port(), free_port());
    let text = format!(
        "regions: [{{ name: eu, location: {{ lat: 50, lon: 8 }} }}]\n\
         clusters:\n  - {{ name: one, region: eu, provider: aws, endpoints: [\"127.0.0.1:{a}\"] }}\n  \
         - {{ name: two, region: eu, provider: gcp, endpoints: [\"127.0.0.1:{b}\"] }}\n\
         apps: [{{ name: web, hostnames: [web.test], failure_mode: fail-open, targets: [{{ cluster: one }}] }}]\n"
    );
    let config = meridian_config::parse(&text, Path::new("test.yaml"))
        .unwrap()
        .config;
    let stand_ins = StandIns::start(&config).await.unwrap();
    let one: SocketAddr = format!("127.0.0.1:{a}").parse().unwrap();
    let two: SocketAddr = format!("127.0.0.1:{b}").parse().unwrap();

    let response = get(one, "/hello").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\r\n\r\ncluster=one\nregion=eu\nprovider=aws\npath=/hello\n"),
        "{response}"
    );
    assert!(get(two, "/").await.unwrap().contains("cluster=two"));

    stand_ins.set_mode("one", Mode::Http503).await.unwrap();
    let response = get(one, "/").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");

    stand_ins.set_mode("one", Mode::Down).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        get(one, "/").await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    // The other cluster is untouched.
    assert!(get(two, "/").await.unwrap().contains("cluster=two"));

    stand_ins.set_mode("one", Mode::Up).await.unwrap();
    assert!(get(one, "/").await.unwrap().starts_with("HTTP/1.1 200"));
    let status = stand_ins.status().await;
    assert_eq!(status[0].cluster, "one");
    assert_eq!(status[0].mode, Mode::Up);
    assert_eq!(status[0].requests_served, 2);

    assert!(
        stand_ins
            .set_mode("nope", Mode::Down)
            .await
            .unwrap_err()
            .to_string()
            .contains("no stand-in cluster named \"nope\"")
    );
    stand_ins.shutdown().await;
}
