//! Session affinity by header or cookie, and load shedding at the per-target limit.

mod proxy_support;

use std::collections::HashMap;
use std::time::Duration;

use meridian_config::proxy::AffinityConfig;
use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_target() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.affinity = Some(AffinityConfig::Header("x-session".into()));
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
    let mut placed: HashMap<String, String> = HashMap::new();
    for round in 0..4 {
        for s in 0..30 {
            let key = format!("session-{s}");
            let answer = send(
                &client,
                proxy.local_addr(),
                "GET",
                "shop.test",
                "/",
                &[("x-session", &key)],
                "",
            )
            .await
            .unwrap();
            let cluster = answer.cluster.unwrap();
            if round == 0 {
                placed.insert(key, cluster);
            } else {
                assert_eq!(placed[&key], cluster, "{key} moved");
            }
        }
    }
    let on_alpha = placed.values().filter(|c| *c == "alpha").count();
    assert!(
        (5..=25).contains(&on_alpha),
        "sessions spread: {on_alpha} of 30 on alpha"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_survives_a_weight_change_of_another_target() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let c = Upstream::start("gamma").await;
    let v1 = table(
        1,
        &[
            (&a, 1, Health::Healthy),
            (&b, 1, Health::Healthy),
            (&c, 1, Health::Healthy),
        ],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.affinity = Some(AffinityConfig::Cookie("sid".into()));
    let (proxy, cell) = start_proxy(config, v1).await;
    let client = client();
    let cookie = |s: usize| format!("theme=dark; sid=user{s}");
    let mut before = Vec::new();
    for s in 0..40 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "GET",
            "shop.test",
            "/",
            &[("cookie", &cookie(s))],
            "",
        )
        .await
        .unwrap();
        before.push(answer.cluster.unwrap());
    }
    // Gamma's weight doubles: only sessions moving to gamma may move (rendezvous hashing).
    cell.store(table(
        2,
        &[
            (&a, 1, Health::Healthy),
            (&b, 1, Health::Healthy),
            (&c, 2, Health::Healthy),
        ],
        FailureMode::FailOpen,
    ));
    for (s, was) in before.iter().enumerate() {
        let answer = send(
            &client,
            proxy.local_addr(),
            "GET",
            "shop.test",
            "/",
            &[("cookie", &cookie(s))],
            "",
        )
        .await
        .unwrap();
        let now = answer.cluster.unwrap();
        assert!(
            now == *was || now == "gamma",
            "user{s} moved from {was} to {now}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_shed_when_every_target_is_at_its_limit() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let mut config = test_config();
    config.max_requests_per_target = Some(1);
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();
    let slow = tokio::spawn(async move { get(&client(), addr, "shop.test", "/slow/600").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shed = get(&client(), addr, "shop.test", "/").await.unwrap();
    assert_eq!(shed.status, 503);
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    let after = get(&client(), addr, "shop.test", "/").await.unwrap();
    assert_eq!(after.status, 200);
    assert_eq!(
        metric(
            &proxy.metrics_text(),
            "meridian_proxy_shed_total",
            "app=\"shop\""
        ),
        1.0
    );
    assert_eq!(a.hits("GET /"), 1);
}
