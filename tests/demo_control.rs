//! The demo's fail/recover control (`PUT /api/v1/demo/clusters/{c}`) of a real
//! `meridian up --demo`: with tokens configured it needs the operator's; without tokens, a
//! browser's cross-site form post (text/plain, a foreign origin) is refused.

mod process_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{Kill, TempDir, free_port};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const CLUSTER: &str = "aws-us-east-1";

/// `meridian up --demo` with `extra_controller` appended to the controller section; returns
/// the process and the controller's address.
fn start_demo(dir: &Path, extra_controller: &str) -> (Kill, SocketAddr) {
    let config = std::fs::read_to_string(Path::new(ROOT).join("deploy/examples/demo.yaml"))
        .unwrap()
        .replace(":18080", &format!(":{}", free_port("127.0.1.1")))
        .replace(
            "controller:\n  listen: 127.0.0.1:8090\n",
            &format!("controller:\n  listen: 127.0.0.1:8090\n{extra_controller}"),
        );
    let file = dir.join("demo.yaml");
    std::fs::write(&file, config).unwrap();
    let mut up = Kill(
        Command::new(BIN)
            .args(["up", "--demo", "-c"])
            .arg(&file)
            .args(["--controller-listen", "127.0.0.1:0"])
            .args(["--proxy-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args([
                "--proxy-admin-listen",
                &format!("127.0.0.1:{}", free_port("127.0.0.1")),
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian up --demo"),
    );
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let controller = loop {
        assert!(
            Instant::now() < deadline,
            "meridian up printed no dashboard"
        );
        let line = lines.next().expect("meridian up exited").unwrap();
        let Some(rest) = line.trim().strip_prefix("dashboard") else {
            continue;
        };
        let rest = rest.trim().trim_start_matches("http://");
        break rest.split('/').next().unwrap().parse().unwrap();
    };
    std::thread::spawn(move || lines.for_each(drop));
    (up, controller)
}

fn put(addr: SocketAddr, headers: &[&str], body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!(
        "PUT /api/v1/demo/clusters/{CLUSTER} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_demo_control_needs_the_operator_and_refuses_cross_site_writes() {
    let json = "Content-Type: application/json";
    let down = r#"{"mode":"down"}"#;
    let up_again = r#"{"mode":"up"}"#;
    {
        let dir = TempDir::new("demo-control-tokens");
        let digest = |t: &str| {
            let out = Command::new("sha256sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    child.stdin.take().unwrap().write_all(t.as_bytes())?;
                    child.wait_with_output()
                })
                .unwrap();
            String::from_utf8(out.stdout).unwrap()[..64].to_string()
        };
        let tokens = format!(
            "  tokens:\n    - {{ name: ops, role: operator, sha256: \"{}\" }}\n    - {{ name: viewer, role: read-only, sha256: \"{}\" }}\n",
            digest("op-token"),
            digest("ro-token")
        );
        let (_up, controller) = start_demo(&dir.0, &tokens);
        assert_eq!(put(controller, &[json], down), 401, "no token");
        assert_eq!(
            put(controller, &[json, "Authorization: Bearer ro-token"], down),
            403,
            "read-only"
        );
        assert_eq!(
            put(controller, &[json, "Authorization: Bearer op-token"], down),
            200,
            "operator"
        );
        assert_eq!(
            put(
                controller,
                &[json, "Authorization: Bearer op-token"],
                up_again
            ),
            200
        );
    }
    {
        let dir = TempDir::new("demo-control-open");
        let (_up, controller) = start_demo(&dir.0, "");
        // What a cross-site HTML form can send: text/plain with a JSON-looking body.
        let form = [
            "Content-Type: text/plain",
            "Origin: http://evil.example",
            "Sec-Fetch-Site: cross-site",
        ];
        assert_eq!(put(controller, &form, down), 415);
        assert_eq!(
            put(
                controller,
                &[
                    json,
                    "Origin: http://evil.example",
                    "Sec-Fetch-Site: cross-site"
                ],
                down
            ),
            403
        );
        let own = format!("Origin: http://{controller}");
        assert_eq!(
            put(
                controller,
                &[json, &own, "Sec-Fetch-Site: same-origin"],
                down
            ),
            200,
            "the dashboard's own page"
        );
    }
}
