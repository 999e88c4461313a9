//! UDP answers leave with Don't Fragment (RFC 9715): on a link too small for an answer, the
//! real `meridian dns` sends it truncated (TC, question and OPT kept) instead of letting the
//! kernel fragment it or dropping it, and `kdig` gets the whole answer over TCP.
//!
//! The link is the loopback of a network namespace of our own with its MTU lowered to 576:
//! the 6-TXT answer of the test zone (about 800 bytes) does not fit in one packet. It needs
//! root and iproute2, as CI has them, and kdig (installed by scripts/test-all).

mod dns_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns_support::{CONFIG, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");
const PREFIX: &str = "mdnslink";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?} ({e}); the test needs root and iproute2"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace whose loopback has a small MTU; deleted on drop.
struct SmallLink(String);

impl SmallLink {
    fn new() -> SmallLink {
        sweep();
        let name = format!("{PREFIX}{}", std::process::id());
        // A namespace of this name is left only by a killed run of this process's id.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let link = SmallLink(name);
        run(&["ip", "-n", &link.0, "link", "set", "lo", "mtu", "576", "up"]);
        link
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }

    fn kdig(&self, args: &[&str]) -> String {
        let out = self
            .command("kdig")
            .args([
                "@127.0.0.1",
                "-p",
                "5353",
                "+time=2",
                "+retry=0",
                "+bufsize=1232",
            ])
            .args(args)
            .output()
            .expect("kdig (apt-get install knot-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for SmallLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Deletes the namespaces of runs whose process is gone (a run that was killed).
fn sweep() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_answer_too_big_for_the_link_is_sent_truncated_and_tcp_gets_it_whole() {
    let link = SmallLink::new();
    let dir = Scratch::new("dns-small-link");
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        CONFIG
            .replace("admin_listen: 127.0.0.1:0", "admin_listen: 127.0.0.1:5380")
            .replace("  listen: 127.0.0.1:0", "  listen: 127.0.0.1:5353"),
    )
    .unwrap();
    let _server = Killed(
        link.command(BIN)
            .args(["dns", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("meridian dns"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !link.kdig(&["www.example.test", "A"]).contains("NOERROR") {
        assert!(Instant::now() < deadline, "meridian dns did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Over UDP only (+ignore: no retry over TCP): the answer does not fit the link, so it
    // comes back with TC, no records, and the OPT record with DO echoed. Fragmented, it
    // would have arrived whole; dropped, kdig would time out.
    let udp = link.kdig(&["+ignore", "+dnssec", "big.example.test", "TXT"]);
    assert!(udp.contains(" tc"), "TC set: {udp}");
    assert!(udp.contains("ANSWER: 0"), "no records: {udp}");
    assert!(
        udp.contains("Version: 0; flags: do;"),
        "OPT kept, DO echoed: {udp}"
    );

    // kdig as a resolver would: TC, so again over TCP, and every record arrives.
    let whole = link.kdig(&["big.example.test", "TXT"]);
    assert!(
        whole.contains("ANSWER: 6"),
        "all six TXT records over TCP: {whole}"
    );
    assert!(whole.contains("(TCP)"), "{whole}");
}
