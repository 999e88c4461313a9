//! `meridian check` as a user runs it: exit status, stdout and stderr of the real binary.

use std::process::Command;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

#[test]
fn accepts_every_example() {
    let examples: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
    assert!(!examples.is_empty());
    let out = meridian()
        .arg("check")
        .arg("-c")
        .args(&examples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": ok (")).count(),
        examples.len(),
        "{stdout}"
    );
}

#[test]
fn rejects_a_bad_file_naming_file_line_and_field() {
    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/tests/bad/unknown-cluster.yaml"
    );
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/demo.yaml");
    let out = meridian()
        .args(["check", "-c", good, bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{bad}:12:20: apps[0].targets[1].cluster: unknown cluster \"c9\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 2 config files failed the check"),
        "{stderr}"
    );
    // The good file is still reported as good.
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo.yaml: ok"));
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let out = meridian()
        .args(["check", "-c", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent.yaml: cannot read"),
        "{stderr}"
    );
}
