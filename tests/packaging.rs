//! The deploy/ artifacts against the real binary: the Grafana dashboard queries only metrics
//! the three processes export, the chart's CRDs are `meridian crds`, the chart renders (with
//! scripts/helm's stand-in for `helm template`), rejects bad values with a clear message and
//! ships a config `meridian check` accepts, and the systemd units pass `systemd-analyze verify`
//! and use only flags the binary has.

mod dns_support;
mod process_support;
#[path = "../k8s/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use process_support::{Kill, TempDir, free_port, http};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_meridian");

fn root(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

/// Sample names of a Prometheus text exposition (`_bucket`, `_sum`, `_count` included as
/// they appear), with the label names seen on each.
fn sample_names(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if let Some(rest) = line[end..].strip_prefix('{') {
            for pair in rest.split("\",") {
                if let Some((name, _)) = pair.split_once('=') {
                    labels.insert(name.trim_start_matches(',').to_string());
                }
            }
        }
    }
    out
}

/// Every `meridian_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("meridian_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Label names an expression filters on right after a metric (`metric{a="x", b=~"y"}`).
fn selector_labels(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in metric_names(expr) {
        let needle = format!("{name}{{");
        let mut rest = expr;
        while let Some(at) = rest.find(&needle) {
            let inside = &rest[at + needle.len()..];
            let close = inside.find('}').unwrap();
            for matcher in inside[..close].split(',') {
                let label = matcher.trim().split(['=', '!']).next().unwrap().trim();
                if !label.is_empty() {
                    out.push((name.clone(), label.to_string()));
                }
            }
            rest = &inside[close..];
        }
    }
    out
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_processes_export() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root("deploy/grafana/meridian.json")).unwrap(),
    )
    .expect("deploy/grafana/meridian.json is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr").to_string();
            assert!(
                !metric_names(&expr).is_empty(),
                "panel {}: {expr} uses no Meridian metric",
                panel["title"]
            );
            exprs.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());

    // The demo config, on ports of our own: the stand-in clusters' shared port and the two
    // admin listeners, which the process does not print.
    let dir = TempDir::new("packaging-demo");
    let cluster_port = free_port("127.0.1.1");
    let (proxy_admin, dns_admin) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let config = std::fs::read_to_string(root("deploy/examples/demo.yaml"))
        .unwrap()
        .replace(":18080", &format!(":{cluster_port}"))
        .replace(
            "  max_answers: 2",
            &format!("  max_answers: 2\n  admin_listen: 127.0.0.1:{dns_admin}"),
        );
    assert!(config.contains(&format!("127.0.0.1:{dns_admin}")));
    let config_file = dir.0.join("demo.yaml");
    std::fs::write(&config_file, config).unwrap();
    let mut up = Kill(
        Command::new(BIN)
            .args(["up", "--demo", "-c"])
            .arg(&config_file)
            .args(["--controller-listen", "127.0.0.1:0"])
            .args(["--proxy-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--proxy-admin-listen", &format!("127.0.0.1:{proxy_admin}")])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian up --demo"),
    );
    // The welcome text names the listeners.
    let (mut controller, mut proxy, mut dns) = (None, None, None);
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller.is_none() || proxy.is_none() || dns.is_none() {
        assert!(
            Instant::now() < deadline,
            "meridian up printed no listeners"
        );
        let line = lines.next().expect("meridian up exited").unwrap();
        let addr_in = |line: &str, prefix: &str| -> Option<SocketAddr> {
            let rest = line.trim().strip_prefix(prefix)?.trim();
            let rest = rest.strip_prefix("http://").unwrap_or(rest);
            rest.split(['/', ' ']).next()?.parse().ok()
        };
        controller = controller.or_else(|| addr_in(&line, "dashboard"));
        proxy = proxy.or_else(|| addr_in(&line, "proxy"));
        dns = dns.or_else(|| addr_in(&line, "DNS"));
    }
    let (controller, proxy, dns) = (controller.unwrap(), proxy.unwrap(), dns.unwrap());
    let proxy_admin: SocketAddr = ([127, 0, 0, 1], proxy_admin).into();
    let dns_admin: SocketAddr = ([127, 0, 0, 1], dns_admin).into();
    // Keep reading stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    for _ in 0..10 {
        let (status, body) = http(proxy, "GET", "shop.demo.test", "/").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("cluster="), "{body}");
    }
    let reply = dns_support::udp(
        dns,
        "shop.demo.test",
        RecordType::A,
        dns_support::Opts::default(),
    );
    assert!(!dns_support::addrs(&reply).is_empty(), "{reply:?}");
    dns_support::udp(
        dns,
        "nowhere.demo.test",
        RecordType::A,
        dns_support::Opts::default(),
    );
    // A cluster that stops answering makes upstream failures and retries in the proxy and,
    // once its probes fail, a verdict change in the controller: metrics only events create.
    let out = Command::new(BIN)
        .args(["demo", "--controller", &format!("http://{controller}")])
        .args(["fail", "aws-us-east-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let wanted: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        for _ in 0..10 {
            let _ = http(proxy, "GET", "shop.demo.test", "/");
        }
        let mut exported = BTreeMap::new();
        for addr in [controller, proxy_admin, dns_admin] {
            let (status, text) = http(addr, "GET", "localhost", "/metrics").unwrap();
            assert_eq!(status, 200, "/metrics on {addr}");
            exported.extend(sample_names(&text));
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|name| !exported.contains_key(*name))
            .cloned()
            .collect();
        let bad_labels: Vec<String> = exprs
            .iter()
            .flat_map(|(title, e)| {
                selector_labels(e)
                    .into_iter()
                    .map(move |(m, l)| (title.clone(), m, l))
            })
            .filter(|(_, m, l)| {
                l != "job" && exported.get(m).is_some_and(|labels| !labels.contains(l))
            })
            .map(|(title, m, l)| format!("{title}: {m} has no label {l}"))
            .collect();
        assert!(bad_labels.is_empty(), "{bad_labels:#?}");
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no process exports: {missing:#?}"
    );
}

#[test]
fn chart_crds_are_meridian_crds_output() {
    let out = Command::new(BIN).arg("crds").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let chart =
        std::fs::read_to_string(root("deploy/helm/meridian/crds/meridian.dev.yaml")).unwrap();
    assert!(
        chart == generated,
        "deploy/helm/meridian/crds/meridian.dev.yaml differs from `meridian crds`: refresh it with\n  \
         target/debug/meridian crds > deploy/helm/meridian/crds/meridian.dev.yaml"
    );
}

/// `helm template` of the chart with these arguments: Ok(stdout) or Err(stderr).
fn render(args: &[&str]) -> Result<String, String> {
    let out = Command::new(support::helm_renderer())
        .args(["template", "rel"])
        .arg(root("deploy/helm/meridian"))
        .args(["--namespace", "meridian"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

#[test]
fn chart_rejects_unknown_and_mistyped_values_with_a_clear_message() {
    let dir = TempDir::new("packaging-values");
    let cases = [
        (
            "controller:\n  replica: 2\n",
            "- controller: Additional property replica is not allowed",
        ),
        (
            "controller:\n  replicas: \"two\"\n",
            "- controller.replicas: Invalid type. Expected: integer, given: string",
        ),
        (
            "proxy:\n  kind: StatefulSet\n",
            "- proxy.kind: proxy.kind must be one of the following: \"Deployment\", \"DaemonSet\"",
        ),
        (
            "serviceMonitor:\n  interval: soon\n",
            "- serviceMonitor.interval: Does not match pattern",
        ),
        (
            "serviceAccount:\n  create: false\n",
            "serviceAccount.name must name an existing ServiceAccount",
        ),
    ];
    for (i, (values, message)) in cases.iter().enumerate() {
        let file = dir.0.join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        let err = render(&["-f", file.to_str().unwrap()])
            .expect_err(&format!("rendering with {values:?} should fail"));
        assert!(err.contains(message), "values {values:?}: {err}");
        if !message.starts_with("serviceAccount") {
            assert!(
                err.contains("values don't meet the specifications of the schema(s)"),
                "{err}"
            );
        }
    }
    // The same keys with good values render.
    let good = dir.0.join("good.yaml");
    std::fs::write(
        &good,
        "controller:\n  replicas: 3\nproxy:\n  kind: DaemonSet\nserviceAccount:\n  create: false\n  name: existing\n",
    )
    .unwrap();
    let out = render(&["-f", good.to_str().unwrap()]).unwrap();
    assert!(out.contains("kind: DaemonSet"), "{out}");
    assert!(out.contains("serviceAccountName: existing"), "{out}");
    assert!(!out.contains("\nkind: ServiceAccount\n"), "{out}");
}

/// The text of `data.config.yaml` in the rendered ConfigMap (a `|` block indented 4).
fn configmap_config(rendered: &str) -> String {
    let doc = rendered
        .split("\n---\n")
        .find(|d| d.contains("\nkind: ConfigMap\n"))
        .expect("a ConfigMap");
    let block = doc.split_once("  config.yaml: |\n").expect("config.yaml").1;
    block
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect()
}

#[test]
fn chart_config_passes_meridian_check_and_matches_the_ports() {
    let dir = TempDir::new("packaging-config");
    let rendered = render(&["--set", "proxy.port=8081", "--set", "dns.adminPort=9054"]).unwrap();
    let config = configmap_config(&rendered);
    for listen in [
        "listen: 0.0.0.0:8090",
        "listen: 0.0.0.0:8081",
        "admin_listen: 0.0.0.0:9080",
        "admin_listen: 0.0.0.0:9054",
        "listen: 0.0.0.0:8053",
    ] {
        assert!(config.contains(listen), "{listen} in\n{config}");
    }
    assert!(rendered.contains("containerPort: 8081"), "{rendered}");
    let file = dir.0.join("config.yaml");
    std::fs::write(&file, &config).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{config}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chart_speaks_mutual_tls_with_given_or_generated_secrets() {
    let generated = render(&[]).unwrap();
    for secret in [
        "rel-meridian-ca",
        "rel-meridian-controller-tls",
        "rel-meridian-proxy-tls",
        "rel-meridian-dns-tls",
    ] {
        assert!(
            generated.contains(&format!("  name: {secret}\n")),
            "{secret}"
        );
    }
    let config = configmap_config(&generated);
    assert!(
        config.contains("client_ca: /etc/meridian-tls/ca.crt"),
        "{config}"
    );
    assert!(config.contains("admin_listen: 0.0.0.0:9090"), "{config}");
    assert!(generated.contains("- https://rel-meridian-controller.meridian.svc:8090"));
    assert!(generated.contains("- --tls-dir\n"), "{generated}");
    // Secrets named in the values are mounted, and none is generated.
    let given = render(&[
        "--set",
        "tls.controllerSecret=ctl-cert",
        "--set",
        "tls.proxySecret=proxy-cert",
        "--set",
        "tls.dnsSecret=dns-cert",
    ])
    .unwrap();
    for secret in ["ctl-cert", "proxy-cert", "dns-cert"] {
        assert!(
            given.contains(&format!("secretName: {secret}\n")),
            "{secret}"
        );
    }
    assert!(!given.contains("\nkind: Secret\n"), "{given}");
}

/// `--flags` of a command line, each checked against `meridian SUBCOMMAND --help`.
fn assert_flags_exist(subcommand: &str, args: &[&str], origin: &str) {
    let help = Command::new(BIN)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{origin}: `meridian {subcommand}` has no flag {flag}"
        );
    }
}

#[test]
fn chart_command_lines_use_flags_the_binary_has() {
    let rendered = render(&[
        "--set",
        "auth.subscriberTokenSecret=tok",
        "--set",
        "proxy.region=eu-west",
        "--set",
        "controller.replicas=2",
    ])
    .unwrap();
    for (component, subcommand, must_have) in [
        ("controller", "controller", "--leader-elect"),
        ("proxy", "proxy", "--token-file"),
        ("dns", "dns", "--token-file"),
    ] {
        let doc = rendered
            .split("\n---\n")
            .find(|d| {
                d.contains("\nkind: Deployment\n")
                    && d.contains(&format!("  name: rel-meridian-{component}\n"))
            })
            .unwrap_or_else(|| panic!("the {component} Deployment"));
        // The `args:` list, comments inside it skipped.
        let args: Vec<&str> = doc
            .split_once("          args:\n")
            .unwrap()
            .1
            .lines()
            .take_while(|l| l.starts_with("            - ") || l.starts_with("            #"))
            .filter_map(|l| l.strip_prefix("            - "))
            .collect();
        assert_eq!(args[0], subcommand, "{doc}");
        assert!(args.contains(&must_have), "{component}: {args:?}");
        assert_flags_exist(subcommand, &args, &format!("the chart's {component}"));
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_and_use_real_flags() {
    let dir = TempDir::new("packaging-systemd");
    let units = ["meridian-controller", "meridian-proxy", "meridian-dns"];
    for unit in units {
        let text =
            std::fs::read_to_string(root(&format!("deploy/systemd/{unit}.service"))).unwrap();
        // Hardening and restart policy every unit must keep.
        for key in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "DynamicUser=yes",
            "Restart=on-failure",
            "StateDirectory=meridian/",
        ] {
            assert!(text.contains(key), "{unit}: missing {key}");
        }
        // Meridian has no reload signal: a unit must not pretend it has.
        assert!(
            !text.lines().any(|l| l.starts_with("ExecReload=")),
            "{unit}: ExecReload"
        );
        let ambient = text
            .lines()
            .find_map(|l| l.strip_prefix("AmbientCapabilities="))
            .unwrap_or("");
        let expected = if unit == "meridian-controller" {
            ""
        } else {
            "CAP_NET_BIND_SERVICE"
        };
        assert_eq!(ambient, expected, "{unit}: AmbientCapabilities");
        // The command line's flags exist on the binary.
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let words: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(words[0], "/usr/local/bin/meridian", "{unit}");
        assert_flags_exist(words[1], &words[2..], unit);
        // systemd itself, with the binary path pointed at the one just built so the check
        // of ExecStart's executable passes.
        std::fs::write(
            dir.0.join(format!("{unit}.service")),
            text.replace("/usr/local/bin/meridian", BIN),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units.map(|u| format!("./{u}.service")))
        .current_dir(&dir.0)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and bad values too, and only warns: any output fails.
    assert!(
        out.status.success() && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );
}
