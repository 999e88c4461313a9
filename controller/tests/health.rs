//! Probes, quorum and ramps end to end: real HTTP backends on loopback, a real controller,
//! a real subscriber following its watch stream.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use meridian_routing::{Client, Health, Pick, TargetSet};
use meridian_subscriber::TableCell;
use meridian_subscriber::watch::{WatchConfig, follow};

fn follow_cell(url: String, token: Option<&str>) -> (Arc<TableCell>, tokio::task::JoinHandle<()>) {
    let cell = Arc::new(TableCell::new());
    let config = WatchConfig {
        controller: url,
        token: token.map(str::to_string),
        state_dir: None,
        subscriber: "test@loopback".into(),
    };
    let task_cell = cell.clone();
    let task = tokio::spawn(async move {
        let _ = follow(config, task_cell).await;
    });
    (cell, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_answering_leaves_the_table_within_fall_times_interval() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("stop");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    let (cell, follower) = follow_cell(ctl.url(), None);
    wait_for(Duration::from_secs(5), || cell.load())
        .await
        .expect("the subscriber gets a table");
    // Let a few probe rounds pass so both targets are known healthy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        health_of(&cell.load().unwrap(), "shop", "c1"),
        Health::Healthy
    );

    b1.stop();
    let stopped = Instant::now();
    let table = wait_for(Duration::from_secs(3), || {
        cell.load()
            .filter(|t| health_of(t, "shop", "c1") == Health::Unhealthy)
    })
    .await
    .expect("c1 becomes unhealthy at the subscriber");
    let took = stopped.elapsed();
    // fall (2) × interval (100 ms), plus up to 10 % jitter, one timeout and compute/publish.
    assert!(
        took <= Duration::from_millis(2 * 110 + 80 + 200),
        "took {took:?}"
    );
    // It left the table: no pick chooses it.
    let app = table.app_by_name("shop").unwrap();
    let client = Client {
        addr: "192.0.2.1".parse().unwrap(),
        region: None,
    };
    for n in 0..200 {
        let choice = table
            .select(app, &client, Pick::Spread(n), TargetSet::EMPTY)
            .unwrap();
        assert_eq!(table.app(app).targets[choice.target].cluster, "c2");
    }
    // The history says why, with the controller's vote.
    let http = client_for(&ctl);
    let (status, history) = call(&http, Method::GET, "/api/v1/history", None).await;
    assert_eq!(status, 200);
    let entry = &history[0];
    assert_eq!(entry["cluster"], "c1");
    assert_eq!(entry["healthy"], false);
    assert_eq!(entry["votes"][0]["vantage"], "controller");
    assert!(entry["cause"].as_str().unwrap().contains("1 of 1"));

    follower.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn client_for(
    ctl: &meridian_controller::RunningController,
) -> meridian_subscriber::http::ControllerClient {
    client(ctl, None)
}

fn report(vantage: &str, healthy: bool) -> String {
    serde_json::json!({
        "vantage": vantage,
        "observations": [{
            "app": "shop", "cluster": "c1", "healthy": healthy, "last_ok": healthy,
            "latency_seconds": 0.001, "detail": "test vantage",
            "at_ms": meridian_subscriber::probe::now_ms(),
        }]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_vantage_seeing_failures_does_not_change_the_verdict() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("quorum");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    wait_all_healthy(&ctl).await;
    let http = client_for(&ctl);
    // The controller's own probes see c1 healthy; a second vantage reports it failing for
    // a whole second (ten of its report rounds).
    for _ in 0..10 {
        let (status, _) = call(
            &http,
            Method::POST,
            "/api/v1/reports",
            Some(&report("edge-a", false)),
        )
        .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            health_of(&ctl.table().unwrap(), "shop", "c1"),
            Health::Healthy
        );
    }
    let (_, status) = call(&http, Method::GET, "/api/v1/apps/shop", None).await;
    let votes = &status["targets"][0]["verdict"]["votes"];
    assert_eq!(votes.as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["targets"][0]["verdict"]["healthy"], true);

    // A second vantage agreeing makes a quorum (2 of 3) even while the controller disagrees.
    call(
        &http,
        Method::POST,
        "/api/v1/reports",
        Some(&report("edge-a", false)),
    )
    .await;
    call(
        &http,
        Method::POST,
        "/api/v1/reports",
        Some(&report("edge-b", false)),
    )
    .await;
    wait_for(Duration::from_secs(2), || {
        ctl.table()
            .filter(|t| health_of(t, "shop", "c1") == Health::Unhealthy)
    })
    .await
    .expect("two of three vantages move the verdict");
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_slow_start_ramp_over_the_configured_periods() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("drain");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    let (cell, follower) = follow_cell(ctl.url(), None);
    wait_for(Duration::from_secs(5), || cell.load())
        .await
        .unwrap();
    let http = client_for(&ctl);

    let (status, body) = call(&http, Method::POST, "/api/v1/clusters/c1/drain", None).await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    wait_for(Duration::from_millis(200), || {
        cell.load()
            .filter(|t| matches!(health_of(t, "shop", "c1"), Health::Draining { .. }))
    })
    .await
    .expect("the drain reaches the subscriber at once");
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_millis(1300) {
        let h = health_of(&cell.load().unwrap(), "shop", "c1");
        seen.push((started.elapsed(), h));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress: Vec<f64> = seen
        .iter()
        .map(|(_, h)| match h {
            Health::Draining { progress } => *progress,
            other => panic!("expected draining, saw {other:?}"),
        })
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {progress:?}"
    );
    assert!(progress[0] <= 0.1, "starts near full weight: {progress:?}");
    assert_eq!(*progress.last().unwrap(), 1.0, "drained after the period");
    // Half way through the period, about half drained.
    let mid = seen
        .iter()
        .find(|(t, _)| *t >= Duration::from_millis(500))
        .map(|(_, h)| h.weight_factor())
        .unwrap();
    assert!((0.3..=0.65).contains(&mid), "factor at 500 ms: {mid}");

    let (status, _) = call(&http, Method::POST, "/api/v1/clusters/c1/undrain", None).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    wait_for(Duration::from_millis(200), || {
        cell.load()
            .filter(|t| matches!(health_of(t, "shop", "c1"), Health::SlowStart { .. }))
    })
    .await
    .expect("the undrain reaches the subscriber at once");
    let mut ramp = Vec::new();
    while started.elapsed() < Duration::from_millis(1300) {
        ramp.push(health_of(&cell.load().unwrap(), "shop", "c1"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        matches!(ramp[0], Health::SlowStart { progress } if progress <= 0.1),
        "{:?}",
        ramp[0]
    );
    let factors: Vec<f64> = ramp.iter().map(Health::weight_factor).collect();
    assert!(factors.windows(2).all(|w| w[0] <= w[1]), "{factors:?}");
    assert!(ramp.iter().any(
        |h| matches!(h, Health::SlowStart { progress } if *progress >= 0.4 && *progress <= 0.6)
    ));
    assert_eq!(*ramp.last().unwrap(), Health::Healthy);

    follower.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_vantage_probes_what_it_is_assigned_and_reports() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("vantage");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    let url = ctl.url();
    let vantage = tokio::spawn(async move {
        meridian_subscriber::report::probe_and_report(
            &url,
            None,
            "edge@test".into(),
            Some("eu".into()),
        )
        .await
    });
    let http = client_for(&ctl);
    let mut saw_both = false;
    for _ in 0..300 {
        let (_, app) = call(&http, Method::GET, "/api/v1/apps/shop", None).await;
        let votes = app["targets"][0]["verdict"]["votes"]
            .as_array()
            .unwrap()
            .clone();
        let names: Vec<&str> = votes
            .iter()
            .map(|v| v["vantage"].as_str().unwrap())
            .collect();
        if names == ["controller", "edge@test"] {
            saw_both = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_both, "both vantages vote");
    // The subscriber's region makes its latencies the table's round-trip times.
    wait_for(Duration::from_secs(2), || {
        ctl.table().filter(|t| {
            t.data()
                .rtt
                .iter()
                .any(|s| s.region == "eu" && s.cluster == "c1")
        })
    })
    .await
    .expect("rtt samples from the vantage's region");

    // Both vantages see c1 answer 503: a quorum of two moves it.
    b1.set_healthy(false);
    wait_for(Duration::from_secs(3), || {
        ctl.table()
            .filter(|t| health_of(t, "shop", "c1") == Health::Unhealthy)
    })
    .await
    .expect("c1 fails by a quorum of both vantages");
    let (_, history) = call(&http, Method::GET, "/api/v1/history", None).await;
    assert_eq!(
        history[0]["votes"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    assert!(history[0]["cause"].as_str().unwrap().contains("2 of 2"));
    // And recovers when it answers again (rise 2), into slow start.
    b1.set_healthy(true);
    wait_for(Duration::from_secs(3), || {
        ctl.table()
            .filter(|t| matches!(health_of(t, "shop", "c1"), Health::SlowStart { .. }))
    })
    .await
    .expect("c1 recovers into slow start");
    vantage.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_and_the_next_failure_still_fails_over() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("bad-reports");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    let http = client_for(&ctl);
    let now = meridian_subscriber::probe::now_ms();
    let observation = |latency: &str, at_ms: u64| {
        format!(
            r#"{{"vantage":"edge-a","region":"eu","observations":[{{"app":"shop","cluster":"c1",
            "healthy":false,"last_ok":true,"latency_seconds":{latency},"detail":"","at_ms":{at_ms}}}]}}"#
        )
    };
    let cases = [
        ("-5", now, "observations[0].latency_seconds"),
        ("1e9", now, "observations[0].latency_seconds"),
        // JSON has no NaN or infinity; a number beyond f64 is the nearest a sender gets.
        ("1e400", now, "observations[0].latency_seconds"),
        ("0.001", now + 3_600_000, "observations[0].at_ms"),
    ];
    for (latency, at_ms, field) in cases {
        let (status, body) = call(
            &http,
            Method::POST,
            "/api/v1/reports",
            Some(&observation(latency, at_ms)),
        )
        .await;
        assert_eq!(status, 422, "{latency} at {at_ms}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let (_, app) = call(&http, Method::GET, "/api/v1/apps/shop", None).await;
    let votes = app["targets"][0]["verdict"]["votes"].as_array().unwrap();
    assert!(
        votes.iter().all(|v| v["vantage"] != "edge-a"),
        "nothing of a refused report is recorded: {app}"
    );
    assert!(ctl.table().unwrap().data().rtt.is_empty());
    // Operator writes still work, and so does the next real failure.
    let (status, body) = call(&http, Method::POST, "/api/v1/clusters/c2/drain", None).await;
    assert_eq!(status, 200, "{body}");
    b1.stop();
    let stopped = Instant::now();
    wait_for(Duration::from_secs(3), || {
        ctl.table()
            .filter(|t| health_of(t, "shop", "c1") == Health::Unhealthy)
    })
    .await
    .expect("c1 fails over");
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_millis(2 * 110 + 80 + 200),
        "took {took:?}"
    );
    let (_, metrics) = call(&http, Method::GET, "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"meridian_reports_refused_total{reason="invalid"} 4"#),
        "{metrics}"
    );
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_extra_vantages_do_not_change_a_verdict() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("forged");
    let tokens = format!(
        "  tokens:\n    - {{ name: edge-a, role: subscriber, sha256: \"{}\" }}\n    - {{ name: ops, role: operator, sha256: \"{}\" }}\n",
        sha256_hex("edge-a-token"),
        sha256_hex("ops-token")
    );
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, &tokens), &dir, true).await;
    wait_all_healthy(&ctl).await;
    let edge = client(&ctl, Some("edge-a-token"));
    // One subscriber's credential claims c1 fails, as itself and as three more vantages,
    // for a second (ten report rounds). Only its own vote lands: 1 of 2 moves nothing.
    for _ in 0..10 {
        let (status, body) = call(
            &edge,
            Method::POST,
            "/api/v1/reports",
            Some(&report("edge-a", false)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for forged in ["edge-b", "edge-c", "edge-d"] {
            let (status, body) = call(
                &edge,
                Method::POST,
                "/api/v1/reports",
                Some(&report(forged, false)),
            )
            .await;
            assert_eq!(status, 403, "{forged}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            health_of(&ctl.table().unwrap(), "shop", "c1"),
            Health::Healthy
        );
    }
    let ops = client(&ctl, Some("ops-token"));
    let (_, app) = call(&ops, Method::GET, "/api/v1/apps/shop", None).await;
    let voters: Vec<&str> = app["targets"][0]["verdict"]["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vantage"].as_str().unwrap())
        .collect();
    assert_eq!(voters, ["controller", "edge-a"], "{app}");
    assert_eq!(app["targets"][0]["verdict"]["healthy"], true);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The published version and the count of versions by cause, from `/metrics`.
async fn versions(
    ctl: &meridian_controller::RunningController,
) -> (u64, std::collections::BTreeMap<String, u64>) {
    let (_, metrics) = call(&client_for(ctl), Method::GET, "/metrics", None).await;
    let causes = metrics
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_table_versions_total{cause=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(cause, n)| (cause.to_string(), n.parse().unwrap()))
        .collect();
    (ctl.table().unwrap().version(), causes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_probes_publish_no_version_and_a_failure_only_its_own() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("churn");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    // A vantage with a region: its latencies become the table's RTTs (every 100 ms).
    let url = ctl.url();
    let vantage = tokio::spawn(async move {
        meridian_subscriber::report::probe_and_report(
            &url,
            None,
            "edge@test".into(),
            Some("eu".into()),
        )
        .await
    });
    wait_for(Duration::from_secs(5), || {
        ctl.table().filter(|t| {
            t.data().rtt.len() == 2
                && t.apps()[0]
                    .targets
                    .iter()
                    .all(|t| t.health == Health::Healthy)
        })
    })
    .await
    .expect("both targets healthy, with RTTs from the vantage's region");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Steady probes for 3 s (about 30 reports and 60 probe rounds): no new version.
    let (steady, before) = versions(&ctl).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, causes) = versions(&ctl).await;
    assert_eq!(
        after, steady,
        "steady probes published versions: {causes:?}"
    );

    // One cluster fails: one version; while it stays failed, none.
    b1.set_healthy(false);
    let failed = wait_for(Duration::from_secs(3), || {
        ctl.table()
            .filter(|t| health_of(t, "shop", "c1") == Health::Unhealthy)
    })
    .await
    .expect("c1 fails")
    .version();
    assert_eq!(failed, steady + 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        versions(&ctl).await.0,
        failed,
        "nothing while it stays failed"
    );

    // It recovers: the verdict, then the slow start's steps (1 s), then nothing.
    b1.set_healthy(true);
    wait_for(Duration::from_secs(5), || {
        ctl.table()
            .filter(|t| health_of(t, "shop", "c1") == Health::Healthy)
    })
    .await
    .expect("c1 recovers through slow start");
    let (recovered, _) = versions(&ctl).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (end, causes) = versions(&ctl).await;
    assert_eq!(end, recovered, "nothing after the recovery: {causes:?}");
    let delta = |cause: &str| causes.get(cause).unwrap_or(&0) - before.get(cause).unwrap_or(&0);
    assert_eq!(
        delta("verdict"),
        2,
        "the failure and the recovery: {causes:?}"
    );
    assert!(delta("ramp") <= 20, "slow start in 5 % steps: {causes:?}");
    assert_eq!(delta("operator") + delta("config"), 0, "{causes:?}");
    vantage.abort();
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
