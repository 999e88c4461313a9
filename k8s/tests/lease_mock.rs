//! Leader election against kube's mock API server pattern: each test plays the API server's
//! side of a scenario (expected calls and replies) on a paused tokio clock, so every timing
//! assertion is exact and deterministic.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meridian_k8s::lease::{LeaderElector, Leadership, LeaseOptions};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tower_test::mock::{Handle, SendResponse};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/meridian/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/meridian/leases/meridian-controller";

type MockHandle = Handle<Request<Body>, Response<Body>>;

/// One request as the API server sees it.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    send: SendResponse<Response<Body>>,
}

fn elector(identity: &str) -> (LeaderElector, MockHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "meridian");
    let elector = LeaderElector::start(client, LeaseOptions::new("meridian", identity)).unwrap();
    (elector, handle)
}

async fn next(handle: &mut MockHandle) -> Call {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
    Call {
        method,
        path,
        body,
        send,
    }
}

fn lease(holder: &str, resource_version: &str, transitions: i32, renew: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "meridian-controller",
            "namespace": "meridian",
            "resourceVersion": resource_version,
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2001-01-01T00:00:00.000000Z",
            "renewTime": renew,
            "leaseTransitions": transitions,
        }
    })
}

fn reply(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn failure(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("mock says {reason}"),
        "reason": reason,
        "code": code,
    })
}

/// What the API server stores for a write: the written object with a new resourceVersion.
fn stored(mut written: Value, resource_version: &str) -> Value {
    written["metadata"]["resourceVersion"] = json!(resource_version);
    written
}

/// Plays "no Lease yet, the create succeeds" and returns when the elector leads.
async fn become_leader(handle: &mut MockHandle, rx: &mut watch::Receiver<Leadership>) {
    let get = next(handle).await;
    assert_eq!((get.method, get.path.as_str()), (Method::GET, LEASE));
    reply(get.send, StatusCode::NOT_FOUND, &failure(404, "NotFound"));
    let create = next(handle).await;
    assert_eq!(
        (create.method, create.path.as_str()),
        (Method::POST, LEASES)
    );
    let body = create.body.unwrap();
    reply(create.send, StatusCode::CREATED, &stored(body, "1"));
    rx.wait_for(|l| l.is_leader).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_absent_lease_is_created_and_then_renewed_over_the_written_version() {
    let (elector, mut handle) = elector("https://a.example:8443");
    let mut rx = elector.subscribe();
    assert_eq!(*rx.borrow(), Leadership::default());

    let get = next(&mut handle).await;
    assert_eq!((get.method, get.path.as_str()), (Method::GET, LEASE));
    reply(get.send, StatusCode::NOT_FOUND, &failure(404, "NotFound"));
    let create = next(&mut handle).await;
    assert_eq!(
        (create.method, create.path.as_str()),
        (Method::POST, LEASES)
    );
    let body = create.body.unwrap();
    let spec = &body["spec"];
    assert_eq!(spec["holderIdentity"], "https://a.example:8443");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert!(
        spec["renewTime"].as_str().unwrap().contains('.'),
        "renewTime is a MicroTime: {}",
        spec["renewTime"]
    );
    let acquired = spec["acquireTime"].clone();
    let created_at = Instant::now();
    reply(create.send, StatusCode::CREATED, &stored(body, "1"));
    let seen = rx.wait_for(|l| l.is_leader).await.unwrap().clone();
    assert_eq!(
        seen,
        Leadership {
            is_leader: true,
            holder: Some("https://a.example:8443".into())
        }
    );

    // The leader renews every retry period by replacing the version it wrote: no read first.
    for version in 2..4 {
        let renew = next(&mut handle).await;
        assert_eq!(created_at.elapsed(), Duration::from_secs(2 * (version - 1)));
        assert_eq!((renew.method, renew.path.as_str()), (Method::PUT, LEASE));
        let body = renew.body.unwrap();
        assert_eq!(
            body["metadata"]["resourceVersion"],
            (version - 1).to_string()
        );
        assert_eq!(body["spec"]["holderIdentity"], "https://a.example:8443");
        assert_eq!(body["spec"]["acquireTime"], acquired);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        reply(
            renew.send,
            StatusCode::OK,
            &stored(body, &version.to_string()),
        );
    }
    assert!(rx.borrow().is_leader);
}

#[tokio::test(start_paused = true)]
async fn a_fresh_lease_held_by_another_keeps_us_following_and_names_the_holder() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    let start = Instant::now();
    // The holder's renewTime is decades old by our wall clock: expiry is judged by our own
    // clock since we saw the record change, so skew cannot make us take over.
    let old = lease("b", "7", 4, "2001-01-01T00:00:00.000000Z");
    let renewed = lease("b", "8", 4, "2001-01-01T00:00:10.000000Z");
    let mut gets = 0;
    while start.elapsed() < Duration::from_secs(24) {
        let call = next(&mut handle).await;
        assert_eq!(
            (call.method, call.path.as_str()),
            (Method::GET, LEASE),
            "a follower only reads, at {:?}",
            start.elapsed()
        );
        gets += 1;
        // b renews at 10 s; that change restarts our 15 s expiry clock, so nothing before 25 s.
        let current = if start.elapsed() < Duration::from_secs(10) {
            &old
        } else {
            &renewed
        };
        reply(call.send, StatusCode::OK, current);
        let seen = rx.wait_for(|l| l.holder.is_some()).await.unwrap().clone();
        assert_eq!(
            seen,
            Leadership {
                is_leader: false,
                holder: Some("b".into())
            }
        );
    }
    // One read per retry period (2 s) from 0 s to 24 s, all of them reads.
    assert_eq!(gets, 13);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_with_one_more_transition() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    let first_seen = Instant::now();
    let held = lease("b", "7", 4, "2001-01-01T00:00:00.000000Z");
    let put = loop {
        let call = next(&mut handle).await;
        if call.method == Method::PUT {
            break call;
        }
        assert_eq!((call.method, call.path.as_str()), (Method::GET, LEASE));
        reply(call.send, StatusCode::OK, &held);
    };
    // Reads at 0, 2, …, 16 s; at 16 s the unchanged record is 15 s old by our clock.
    assert_eq!(first_seen.elapsed(), Duration::from_secs(16));
    assert_eq!(put.path, LEASE);
    let body = put.body.unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "7");
    assert_eq!(body["spec"]["holderIdentity"], "a");
    assert_eq!(body["spec"]["leaseTransitions"], 5);
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(body["spec"]["acquireTime"], body["spec"]["renewTime"]);
    assert_ne!(body["spec"]["acquireTime"], "2001-01-01T00:00:00.000000Z");
    reply(put.send, StatusCode::OK, &stored(body, "8"));
    let seen = rx.wait_for(|l| l.is_leader).await.unwrap().clone();
    assert_eq!(seen.holder.as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_at_once() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    let start = Instant::now();
    let get = next(&mut handle).await;
    let mut released = lease("", "9", 4, "2026-11-28T10:00:00.000000Z");
    released["spec"]["leaseDurationSeconds"] = json!(1);
    reply(get.send, StatusCode::OK, &released);
    let put = next(&mut handle).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(put.method, Method::PUT);
    let body = put.body.unwrap();
    assert_eq!(body["spec"]["holderIdentity"], "a");
    assert_eq!(body["spec"]["leaseTransitions"], 5);
    reply(put.send, StatusCode::OK, &stored(body, "10"));
    rx.wait_for(|l| l.is_leader).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_keeps_failing_gives_up_leadership_at_the_deadline() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    become_leader(&mut handle, &mut rx).await;
    let led_at = Instant::now();
    let server_rx = elector.subscribe();
    // The API server now fails every call; it checks that after the deadline the elector has
    // published not-leader before it tries again.
    let server = tokio::spawn(async move {
        let mut calls = Vec::new();
        loop {
            let call = next(&mut handle).await;
            let at = led_at.elapsed();
            calls.push((at, call.method.clone()));
            if at >= Duration::from_secs(10) {
                assert!(!server_rx.borrow().is_leader, "still leading at {at:?}");
                // As a candidate again, it reads before it writes.
                assert_eq!(call.method, Method::GET);
                return calls;
            }
            assert!(server_rx.borrow().is_leader, "gave up early, at {at:?}");
            reply(
                call.send,
                StatusCode::INTERNAL_SERVER_ERROR,
                &failure(500, "InternalError"),
            );
        }
    });
    rx.wait_for(|l| !l.is_leader).await.unwrap();
    assert_eq!(led_at.elapsed(), Duration::from_secs(10));
    let calls = server.await.unwrap();
    let secs: Vec<u64> = calls.iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(secs, [2, 4, 6, 8, 10]);
    assert!(calls[..4].iter().all(|(_, m)| *m == Method::PUT));
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_gives_up_leadership_at_the_deadline() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    become_leader(&mut handle, &mut rx).await;
    let led_at = Instant::now();
    let renew = next(&mut handle).await;
    assert_eq!(led_at.elapsed(), Duration::from_secs(2));
    assert_eq!(renew.method, Method::PUT);
    // No reply: the API server hangs. The call is cut at the deadline, not left waiting.
    rx.wait_for(|l| !l.is_leader).await.unwrap();
    assert_eq!(led_at.elapsed(), Duration::from_secs(10));
    drop(renew.send);
}

#[tokio::test(start_paused = true)]
async fn a_conflict_on_replace_means_someone_else_won() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    let held = lease("b", "3", 1, "2001-01-01T00:00:00.000000Z");
    let put = loop {
        let call = next(&mut handle).await;
        if call.method == Method::PUT {
            break call;
        }
        reply(call.send, StatusCode::OK, &held);
    };
    assert_eq!(put.body.unwrap()["metadata"]["resourceVersion"], "3");
    let lost_at = Instant::now();
    reply(put.send, StatusCode::CONFLICT, &failure(409, "Conflict"));
    // Re-read at once: c wrote the Lease in between, and is the holder now.
    let reread = next(&mut handle).await;
    assert_eq!(lost_at.elapsed(), Duration::ZERO);
    assert_eq!((reread.method, reread.path.as_str()), (Method::GET, LEASE));
    reply(
        reread.send,
        StatusCode::OK,
        &lease("c", "4", 2, "2026-11-28T10:00:00.000000Z"),
    );
    let seen = rx
        .wait_for(|l| l.holder.as_deref() == Some("c"))
        .await
        .unwrap()
        .clone();
    assert!(!seen.is_leader);
    // c's record is new to us, so we follow for a full lease duration: reads only.
    while lost_at.elapsed() < Duration::from_secs(14) {
        let call = next(&mut handle).await;
        assert_eq!(call.method, Method::GET, "at {:?}", lost_at.elapsed());
        reply(
            call.send,
            StatusCode::OK,
            &lease("c", "4", 2, "2026-11-28T10:00:00.000000Z"),
        );
    }
    assert!(!rx.borrow().is_leader);
}

#[tokio::test(start_paused = true)]
async fn losing_a_create_race_makes_us_follow_the_winner() {
    let (elector, mut handle) = elector("a");
    let rx = elector.subscribe();
    let get = next(&mut handle).await;
    reply(get.send, StatusCode::NOT_FOUND, &failure(404, "NotFound"));
    let create = next(&mut handle).await;
    assert_eq!(create.method, Method::POST);
    reply(
        create.send,
        StatusCode::CONFLICT,
        &failure(409, "AlreadyExists"),
    );
    let reread = next(&mut handle).await;
    assert_eq!(reread.method, Method::GET);
    reply(
        reread.send,
        StatusCode::OK,
        &lease("b", "1", 0, "2026-11-28T10:00:00.000000Z"),
    );
    let mut rx2 = rx.clone();
    let seen = rx2.wait_for(|l| l.holder.is_some()).await.unwrap().clone();
    assert_eq!(
        seen,
        Leadership {
            is_leader: false,
            holder: Some("b".into())
        }
    );
}

#[tokio::test(start_paused = true)]
async fn release_publishes_not_leader_then_empties_the_holder() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    become_leader(&mut handle, &mut rx).await;
    let watcher = elector.subscribe();
    let releasing = tokio::spawn(elector.release());
    let put = next(&mut handle).await;
    assert!(
        !watcher.borrow().is_leader,
        "not-leader is published before the release is written"
    );
    assert_eq!((put.method, put.path.as_str()), (Method::PUT, LEASE));
    let body = put.body.unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["holderIdentity"], "");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    reply(put.send, StatusCode::OK, &stored(body, "2"));
    releasing.await.unwrap();
    // The loop has ended and dropped its client: no further call comes.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_elector_stops_without_writing() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    become_leader(&mut handle, &mut rx).await;
    drop(elector);
    // Not-leader is visible as soon as the handle is gone, without waiting for the loop.
    assert!(!rx.borrow().is_leader);
    // As after a crash: no release is written; the Lease expires on its own.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn unworkable_options_are_refused_naming_the_field() {
    let mut options = LeaseOptions::new("meridian", "a");
    assert_eq!(options.name, "meridian-controller");
    assert_eq!(
        (
            options.lease_duration,
            options.renew_deadline,
            options.retry_period
        ),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    options.validate().unwrap();

    options.renew_deadline = Duration::from_secs(15);
    let error = options.validate().unwrap_err().to_string();
    assert!(
        error.contains("renew_deadline 15s must be shorter than lease_duration 15s"),
        "{error}"
    );

    let mut options = LeaseOptions::new("meridian", "a");
    options.retry_period = Duration::from_secs(10);
    let error = options.validate().unwrap_err().to_string();
    assert!(error.contains("retry_period 10s"), "{error}");

    let mut options = LeaseOptions::new("meridian", "a");
    options.lease_duration = Duration::from_millis(15_500);
    let error = options.validate().unwrap_err().to_string();
    assert!(
        error.contains("lease_duration 15.5s must be a whole number of seconds"),
        "{error}"
    );

    let options = LeaseOptions::new("meridian", "");
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let error = LeaderElector::start(Client::new(service, "meridian"), options)
        .err()
        .expect("an empty identity is refused")
        .to_string();
    assert_eq!(
        error,
        "leader election options: identity is empty: every replica needs a unique one"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_was_deleted_creates_it_again() {
    let (elector, mut handle) = elector("a");
    let mut rx = elector.subscribe();
    become_leader(&mut handle, &mut rx).await;
    let led_at = Instant::now();
    let renew = next(&mut handle).await;
    assert_eq!(renew.method, Method::PUT);
    reply(renew.send, StatusCode::NOT_FOUND, &failure(404, "NotFound"));
    // Still within the renew deadline: the next attempt reads, finds nothing and creates.
    let get = next(&mut handle).await;
    assert_eq!(led_at.elapsed(), Duration::from_secs(4));
    assert_eq!(get.method, Method::GET);
    reply(get.send, StatusCode::NOT_FOUND, &failure(404, "NotFound"));
    let create = next(&mut handle).await;
    assert_eq!(
        (create.method, create.path.as_str()),
        (Method::POST, LEASES)
    );
    let body = create.body.unwrap();
    assert_eq!(body["spec"]["holderIdentity"], "a");
    reply(create.send, StatusCode::CREATED, &stored(body, "5"));
    let renew = next(&mut handle).await;
    assert_eq!(renew.method, Method::PUT);
    assert_eq!(renew.body.unwrap()["metadata"]["resourceVersion"], "5");
    // Leading throughout: not a single change was published since it became leader.
    assert!(!rx.has_changed().unwrap() && rx.borrow().is_leader);
}
