//! The watch stream and the subscriber client: snapshot on connect, resume by version,
//! heartbeats, token refusal, persistence of the last good table and starting from it
//! while the controller is down, reconnecting after a controller restart.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Method;
use http_body_util::BodyExt;
use meridian_subscriber::watch::{WatchConfig, follow};
use meridian_subscriber::{Error, TableCell, persist};

const SUB: &str = "sub-token";

fn tokens() -> String {
    format!(
        "  tokens:\n    - {{ name: edge, role: subscriber, sha256: \"{}\" }}\n    - {{ name: op, role: operator, sha256: \"{}\" }}\n",
        sha256_hex(SUB),
        sha256_hex("op-token")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_resume_and_heartbeats_on_the_wire() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("wire");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, &tokens()), &dir, false).await;
    let c = client(&ctl, Some(SUB));
    let current = ctl.table().unwrap().version();

    // A fresh subscriber gets the snapshot as its first line.
    let response = c
        .send(Method::GET, "/api/v1/watch?version=0", None)
        .await
        .unwrap();
    assert_eq!(response.headers()["meridian-heartbeat-ms"], "200");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(*first.last().unwrap(), b'\n');
    let table = meridian_routing::wire::decode(&first[..first.len() - 1]).unwrap();
    assert_eq!(table.version(), current);

    // A subscriber that holds the current version gets only heartbeats, then the next one.
    let response = c
        .send(
            Method::GET,
            &format!("/api/v1/watch?version={current}"),
            None,
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let beat = tokio::time::timeout(Duration::from_secs(1), body.frame())
        .await
        .expect("a heartbeat within the interval")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&beat[..], b"\n");
    let op = client(&ctl, Some("op-token"));
    // A weight change (no vantage probes here, so the targets are unknown and a drain
    // would change no routing).
    let (status, _) = call(
        &op,
        Method::PUT,
        "/api/v1/apps/shop/targets/c2/weight",
        Some(r#"{"weight": 50}"#),
    )
    .await;
    assert_eq!(status, 200);
    let next = loop {
        let data = tokio::time::timeout(Duration::from_secs(1), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        if &data[..] != b"\n" {
            break data;
        }
    };
    let table = meridian_routing::wire::decode(&next[..next.len() - 1]).unwrap();
    assert_eq!(table.version(), current + 1);

    // The metrics count the open streams.
    let (_, metrics) = call(&client(&ctl, None), Method::GET, "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("meridian_subscribers_connected 2"),
        "{metrics}"
    );
    drop(body);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_fatal() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("refused");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, &tokens()), &dir, false).await;
    let config = WatchConfig {
        controller: ctl.url(),
        token: Some("not-the-token".into()),
        state_dir: None,
        subscriber: "proxy@test".into(),
    };
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        follow(config, Arc::new(TableCell::new())),
    )
    .await
    .expect("follow returns at once on 401");
    match result {
        Err(Error::Refused { status: 401, .. }) => {}
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    let bad_url = WatchConfig {
        controller: "ftp://127.0.0.1:1".into(),
        token: None,
        state_dir: None,
        subscriber: "proxy@test".into(),
    };
    let err = follow(bad_url, Arc::new(TableCell::new()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only http://"), "{err}");
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_starts_from_disk_when_the_controller_is_down_and_reconnects() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("persist");
    let state = dir.join("subscriber-state");
    let yaml = config_yaml(b1.addr, b2.addr, &tokens());
    let ctl = start_controller(&yaml, &dir, false).await;
    let url = ctl.url();
    let config = WatchConfig {
        controller: url.clone(),
        token: Some(SUB.into()),
        state_dir: Some(state.clone()),
        subscriber: "dns@test".into(),
    };
    let cell = Arc::new(TableCell::new());
    let task = tokio::spawn(follow(config.clone(), cell.clone()));
    let op = client(&ctl, Some("op-token"));
    call(
        &op,
        Method::PUT,
        "/api/v1/apps/shop/targets/c2/weight",
        Some(r#"{"weight": 7}"#),
    )
    .await;
    let version = ctl.table().unwrap().version();
    wait_for(Duration::from_secs(3), || {
        (cell.version() == version).then_some(())
    })
    .await
    .expect("the subscriber follows the change");
    let on_disk = wait_for(Duration::from_secs(2), || {
        persist::load(&state)
            .ok()
            .flatten()
            .filter(|t| t.version() == version)
    })
    .await
    .expect("the table is persisted");
    assert_eq!(on_disk.apps()[0].targets[1].weight, 7);
    assert!(
        !state.join(".routing-table.json.tmp").exists(),
        "no temp file left behind"
    );

    // The controller goes away; a new subscriber process starts from disk at once.
    ctl.shutdown().await;
    task.abort();
    let fresh = Arc::new(TableCell::new());
    let restarted = tokio::spawn(follow(config, fresh.clone()));
    wait_for(Duration::from_secs(1), || {
        (fresh.version() == version).then_some(())
    })
    .await
    .expect("the last good table is served while the controller is down");
    assert_eq!(fresh.load().unwrap().apps()[0].targets[1].weight, 7);

    // A garbled state file is refused, not served.
    std::fs::write(persist::table_path(&state), b"{\"format\":1,\"table\":{}}").unwrap();
    assert!(matches!(persist::load(&state), Err(Error::Table { .. })));
    restarted.abort();

    // The controller comes back on a new port with the same state: a subscriber resumes.
    let ctl = start_controller(&yaml, &dir, false).await;
    assert_eq!(
        ctl.table().unwrap().version(),
        version,
        "the restarted controller serves the same table"
    );
    let back = Arc::new(TableCell::new());
    let task = tokio::spawn(follow(
        WatchConfig {
            controller: ctl.url(),
            token: Some(SUB.into()),
            state_dir: None,
            subscriber: "dns@test".into(),
        },
        back.clone(),
    ));
    wait_for(Duration::from_secs(3), || {
        (back.version() == version).then_some(())
    })
    .await
    .unwrap();
    task.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reconnects_after_the_stream_breaks() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("reconnect");
    let yaml = config_yaml(b1.addr, b2.addr, "");
    let ctl = start_controller(&yaml, &dir, false).await;
    let addr = ctl.addr();
    let cell = Arc::new(TableCell::new());
    let task = tokio::spawn(follow(
        WatchConfig {
            controller: ctl.url(),
            token: None,
            state_dir: None,
            subscriber: "proxy@test".into(),
        },
        cell.clone(),
    ));
    wait_for(Duration::from_secs(3), || cell.load())
        .await
        .unwrap();
    let v1 = cell.version();
    ctl.shutdown().await;
    // Same port, same state: the subscriber's backoff brings it back.
    let file = dir.join("meridian.yaml");
    let loaded = meridian_config::load(&file).unwrap();
    let ctl = meridian_controller::Controller::start(
        loaded,
        meridian_controller::ControllerOptions {
            listen: Some(addr),
            data_dir: Some(dir.join("data")),
            probe: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let op = client(&ctl, None);
    call(
        &op,
        Method::PUT,
        "/api/v1/apps/shop/targets/c1/weight",
        Some(r#"{"weight": 50}"#),
    )
    .await;
    wait_for(Duration::from_secs(8), || {
        (cell.version() == v1 + 1).then_some(())
    })
    .await
    .expect("the subscriber reconnects and gets the new version");
    task.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_label_lives_as_long_as_its_stream() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("labels");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, false).await;
    let c = client(&ctl, None);
    let metrics = || async {
        let (_, m) = call(&client(&ctl, None), Method::GET, "/metrics", None).await;
        m.as_str().unwrap().to_string()
    };
    let response = c
        .send(Method::GET, "/api/v1/watch?subscriber=proxy-7", None)
        .await
        .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(
        metrics().await.contains(r#"subscriber="proxy-7""#),
        "labelled while connected"
    );
    drop(body);
    let gone = wait_for_async(|| async {
        (!metrics().await.contains(r#"subscriber="proxy-7""#)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the label goes with the stream");
    let (status, body) = call(&c, Method::GET, "/api/v1/watch?subscriber=a%0Ab", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "subscriber");
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn wait_for_async<T, F: Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> Option<T> {
    for _ in 0..200 {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
