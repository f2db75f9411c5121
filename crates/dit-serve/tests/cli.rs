//! The `dit-serve` binary refuses bad start-up options with a one-line error.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dit-serve"))
        .args(args)
        .output()
        .expect("dit-serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_start_up_options_are_one_line_errors() {
    let missing = tempfile::tempdir().unwrap();
    let missing = missing.path().join("no-such-run");
    let (code, stderr) = run(&["--port", "0", "--checkpoint", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot load"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let (code, stderr) = run(&["--port", "0", "--queue", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--queue must be at least 1"), "{stderr}");

    let (code, stderr) = run(&["--port", "0", "--workers", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--workers must be at least 1"), "{stderr}");

    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run(&["--port", &port]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );

    let (code, stderr) = run(&["--host", "localhost-ish"]);
    assert_eq!(code, 2, "clap's usage error: {stderr}");
    assert!(stderr.contains("--host"), "{stderr}");
}
