//! The `openrun` binary as an operator runs it.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_openrun");
const SECRET: &str = "Sup3rSecretPw";

fn run_with(vars: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let dir = tempdir();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("openrun_cli_{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_malformed_database_url_is_named_and_fails_the_start() {
    for url in [
        format!("mysql://shop:{SECRET}@:99999/openrun"),
        "postgresql://x/y".into(),
        "nonsense".into(),
    ] {
        let (ok, stderr) = run_with(&[("DATABASE_URL", &url)], &["serve"]);
        assert!(!ok, "must exit non-zero for {url}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(!stderr.contains(SECRET), "{stderr}");
    }
}

#[test]
fn an_unreachable_database_gives_one_line_with_the_url_and_the_password_hidden() {
    // Port 1 on loopback: nothing listens there.
    let url = format!("mysql://shop:{SECRET}@127.0.0.1:1/openrun");
    let (ok, stderr) = run_with(
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_CONNECT_TIMEOUT_SECS", "2"),
        ],
        &["migrate"],
    );
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("mysql://shop:***@127.0.0.1:1/openrun"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn a_bad_numeric_setting_names_its_variable() {
    let (ok, stderr) = run_with(&[("DATABASE_MAX_CONNECTIONS", "many")], &["serve"]);
    assert!(!ok);
    assert!(stderr.contains("DATABASE_MAX_CONNECTIONS"), "{stderr}");
}

#[test]
fn with_no_settings_it_serves_sqlite_under_data_and_stops_on_sigterm() {
    let dir = tempdir();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Only the listen address differs from a bare `openrun` (8080 may be taken here).
    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .env_clear()
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let body = loop {
        match reqwest::blocking_get(port) {
            Some(body) => break body,
            None if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            None => {
                let _ = child.kill();
                panic!("/healthz never answered");
            }
        }
    };
    assert!(body.contains("\"ok\""), "{body}");
    assert!(
        dir.join("data/openrun.db").is_file(),
        "the SQLite file is created under ./data"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny blocking GET of /healthz without a second HTTP client.
mod reqwest {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn blocking_get(port: u16) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.starts_with("HTTP/1.1 200").then_some(response)
    }
}
