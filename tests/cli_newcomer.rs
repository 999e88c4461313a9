//! What a newcomer meets first, run as they would run it: `meridian up` with and without the
//! demo and with tokens configured, the banner's hints, and printing commands whose reader
//! goes away (`meridian status | head -1`).

mod process_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{Kill, TempDir, free_port, http};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// What `meridian up` printed up to the end of its banner, and its addresses.
struct Up {
    process: Kill,
    banner: String,
    controller: SocketAddr,
    proxy: SocketAddr,
}

fn start_up(extra: &[&str], config: Option<&Path>, dir: &Path) -> Up {
    let mut command = Command::new(BIN);
    command.arg("up").args(extra);
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let mut process = Kill(
        command
            .args(["--controller-listen", "127.0.0.1:0"])
            .args(["--proxy-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--proxy-admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("MERIDIAN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meridian up"),
    );
    let stderr = process.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut lines = BufReader::new(process.0.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no banner: {banner}");
        let Some(Ok(line)) = lines.next() else {
            let _ = process.0.wait();
            panic!("meridian up exited: {banner}\n{}", log.join().unwrap());
        };
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C stops everything") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let addr_after = |label: &str| -> SocketAddr {
        let line = banner
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line: {banner}"));
        let rest = line.trim().strip_prefix(label).unwrap().trim();
        let rest = rest.strip_prefix("http://").unwrap_or(rest);
        rest.split(['/', ' ']).next().unwrap().parse().unwrap()
    };
    let (controller, proxy) = (addr_after("dashboard"), addr_after("proxy"));
    Up {
        process,
        banner,
        controller,
        proxy,
    }
}

/// The demo config with its stand-ins on a port of their own (tests run side by side),
/// edited by `edit`, written into `dir`.
fn demo_config(dir: &Path, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/demo.yaml"),
    )
    .unwrap()
    .replace(":18080", &format!(":{}", free_port("127.0.1.1")));
    let file = dir.join("demo.yaml");
    std::fs::write(&file, edit(&demo)).unwrap();
    file
}

#[test]
fn the_demo_banner_names_the_binary_as_it_was_called() {
    let dir = TempDir::new("newcomer-demo");
    let config = demo_config(&dir.0, str::to_string);
    let up = start_up(&["--demo"], Some(&config), &dir.0);
    assert!(up.banner.contains("Try:"), "{}", up.banner);
    assert!(
        up.banner.contains(&format!("{BIN} demo fail")),
        "hints call the binary by the path it was run as: {}",
        up.banner
    );
    assert!(!up.banner.contains("\n  meridian "), "{}", up.banner);
}

#[test]
fn up_without_the_demo_prints_no_demo_hints() {
    let dir = TempDir::new("newcomer-nodemo");
    let up = start_up(&[], None, &dir.0);
    assert!(!up.banner.contains("Try:"), "{}", up.banner);
    assert!(!up.banner.contains("curl -s -H"), "{}", up.banner);
    assert!(!up.banner.contains("demo fail"), "{}", up.banner);
    assert!(
        up.banner.contains("only `") && up.banner.contains("up --demo` starts"),
        "says why the embedded config's clusters do not answer: {}",
        up.banner
    );
}

#[test]
fn up_with_tokens_and_no_token_still_serves() {
    let dir = TempDir::new("newcomer-tokens");
    // An operator token only: nothing for the in-process proxy and DNS server.
    let file = demo_config(&dir.0, |demo| {
        let config = demo.replace(
            "controller:\n  listen: 127.0.0.1:8090\n",
            "controller:\n  listen: 127.0.0.1:8090\n  tokens:\n    - { name: ops, role: operator, sha256: \"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\" }\n",
        );
        assert_ne!(config, demo, "the demo config's controller section moved");
        config
    });
    let up = start_up(&["--demo"], Some(&file), &dir.0);
    // The proxy serves from a table, not 503 "no routing table yet".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = http(up.proxy, "GET", "shop.demo.test", "/");
        if matches!(answer, Ok((200, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "{answer:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The API still wants the operator's token.
    let (status, _) = http(up.controller, "GET", "x", "/api/v1/status").unwrap();
    assert_eq!(status, 401);
    drop(up.process);
}

#[test]
fn printing_commands_end_quietly_when_their_reader_goes_away() {
    let dir = TempDir::new("newcomer-pipe");
    let config = demo_config(&dir.0, str::to_string);
    let up = start_up(&["--demo"], Some(&config), &dir.0);
    let url = format!("http://{}", up.controller);
    // Something in the audit log, so `audit` prints more than a header.
    let drain = Command::new(BIN)
        .args(["drain", "aws-eu-west-1", "--controller", &url])
        .output()
        .unwrap();
    assert!(drain.status.success(), "{drain:?}");
    for command in ["status", "audit", "history"] {
        for _ in 0..20 {
            // bash reports the exit status of meridian itself (PIPESTATUS).
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "'{BIN}' {command} --controller {url} 2>'{err}' | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                    err = dir.0.join("stderr").display()
                ))
                .output()
                .unwrap();
            let status: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let stderr = std::fs::read_to_string(dir.0.join("stderr")).unwrap();
            assert!(
                stderr.is_empty(),
                "`{command} | head -1` wrote to stderr: {stderr}"
            );
            // 0 when everything fit in the pipe, 141 (SIGPIPE) when head left first.
            assert!(
                status == 0 || status == 141,
                "`{command} | head -1` exited {status}"
            );
        }
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = TempDir::new("newcomer-colour");
    let mut dns = Command::new(BIN)
        .args(["dns", "-c"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/demo.yaml"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(dns.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("dns: serving") {
            break;
        }
    }
    let _ = dns.kill();
    let _ = dns.wait();
    assert!(log.contains("dns: serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
    drop(dir);
}

/// `meridian ARGS --controller URL`: (exit success, stdout).
fn meridian(args: &[&str], controller: SocketAddr) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--controller", &format!("http://{controller}")])
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn operator_output_speaks_in_the_configs_units_and_says_when_it_is_empty() {
    let dir = TempDir::new("newcomer-units");
    let config = demo_config(&dir.0, str::to_string);
    let up = start_up(&["--demo"], Some(&config), &dir.0);
    // Healthy and settled: the effective weight is the configured one, not thousandths.
    let row = |text: &str, cluster: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("APP shop"))
            .find(|l| l.trim_start().starts_with(cluster))
            .unwrap_or_else(|| panic!("no {cluster} row: {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, text) = meridian(&["status"], up.controller);
        assert!(ok, "{text}");
        let us = row(&text, "aws-us-east-1");
        if us[2] == "50" {
            assert_eq!(us[1], "50");
            assert!(!text.contains("weight set by an operator"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "effective weight never 50: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The legend appears with the first operator weight.
    let (ok, _) = meridian(&["weight", "shop", "aws-us-east-1", "200"], up.controller);
    assert!(ok);
    let (_, text) = meridian(&["status"], up.controller);
    assert_eq!(row(&text, "aws-us-east-1")[1], "200*");
    assert!(text.contains("(* weight set by an operator)"), "{text}");
    // History says something even when nothing has failed over yet.
    let (ok, text) = meridian(&["history"], up.controller);
    assert!(ok && !text.trim().is_empty(), "history printed nothing");
    // Times read as the reader's clock and an age, never as epoch milliseconds: a failover
    // (history), a drain (status) and the operator changes (audit).
    let out = Command::new(BIN)
        .args(["demo", "--controller", &format!("http://{}", up.controller)])
        .args(["fail", "gcp-europe-west3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (ok, _) = meridian(&["drain", "aws-us-east-1"], up.controller);
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let (_, text) = meridian(&["history"], up.controller);
        // The failure judged, not only the first verdict: the recovery below must follow it.
        if text.contains("shop/gcp-europe-west3 → unhealthy") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no failover in the history: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let epoch_ms = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|n| n.len() >= 12 && n.starts_with('1'))
    };
    for (command, text) in [
        ("history", history),
        ("status", meridian(&["status"], up.controller).1),
        ("audit", meridian(&["audit"], up.controller).1),
    ] {
        assert!(!epoch_ms(&text), "{command} shows an epoch number: {text}");
        assert!(text.contains(" s ago)"), "{command} shows no age: {text}");
    }
    // A recovering target's slow-start percentage is the share of its weight it gets, the
    // same number the effective column shows (a slow start begins at a floor, not at 0).
    let out = Command::new(BIN)
        .args(["demo", "--controller", &format!("http://{}", up.controller)])
        .args(["recover", "gcp-europe-west3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = meridian(&["status"], up.controller);
        let gcp = row(&text, "gcp-europe-west3");
        if gcp[3] == "slow-start" {
            let weight: f64 = gcp[1].parse().unwrap();
            let effective: f64 = gcp[2].parse().unwrap();
            let percent: f64 = gcp[4].trim_end_matches('%').parse().unwrap();
            assert!(
                (percent - effective / weight * 100.0).abs() <= 1.0,
                "slow-start {percent}% of weight {weight} but effective {effective}: {text}"
            );
            assert!(text.contains("the percentage of its weight"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no slow start seen: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir2 = TempDir::new("newcomer-check");
    let one = dir2.0.join("one.yaml");
    std::fs::write(
        &one,
        "regions:\n  - { name: eu, location: { lat: 50.1, lon: 8.7 } }\nclusters:\n  - { name: c1, region: eu, provider: aws, endpoints: [\"127.0.0.1:9001\"] }\napps:\n  - name: web\n    hostnames: [web.example.com]\n    failure_mode: fail-open\n    targets: [{ cluster: c1 }]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&one)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok (1 region, 1 cluster, 1 app, 0 zones)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
