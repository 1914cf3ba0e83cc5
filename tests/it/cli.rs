//! The `openrun` binary as an operator runs it.

use crate::helpers::spawn_serving;
use std::process::{Command, Stdio};

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
    // Only the listen address differs from a bare `openrun` (8080 may be taken here): port 0,
    // and the address it reports.
    let mut command = Command::new(BIN);
    command.current_dir(&dir).env_clear();
    let (mut child, addr) = spawn_serving(command, &dir.join("serve.log"));
    let Some(body) = reqwest::blocking_get(addr.port()) else {
        let _ = child.kill();
        panic!("/healthz did not answer once it served");
    };
    assert!(body.contains("\"ok\""), "{body}");
    assert!(
        dir.join("data/openrun.db").is_file(),
        "the SQLite file is created under ./data"
    );
    assert!(
        dir.join("data/keys.toml").is_file(),
        "the secrets are generated under ./data"
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

/// Runs the binary in `dir` with only `vars` set (stdin closed: no terminal).
fn run_in(dir: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn stored_email(dir: &std::path::Path) -> String {
    let url = format!("sqlite://{}", dir.join("data/openrun.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let email: String = sqlx::query_scalar("SELECT email_enc FROM members")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    email
}

const ADMIN_PASSWORD: (&str, &str) = ("OPENRUN_ADMIN_PASSWORD", "a long admin password");

#[tokio::test]
async fn admin_create_then_keys_rotate_with_the_generated_key_file() {
    let dir = tempdir();
    let create = [
        "admin",
        "create",
        "--login-id",
        "root1",
        "--email",
        "root@example.com",
    ];
    let (ok, stderr) = run_in(&dir, &[], &create);
    assert!(!ok && stderr.contains("OPENRUN_ADMIN_PASSWORD"), "{stderr}");
    let (ok, stderr) = run_in(&dir, &[("OPENRUN_ADMIN_PASSWORD", "short")], &create);
    assert!(
        !ok && stderr.contains("password must be at least 10"),
        "{stderr}"
    );
    let (ok, stderr) = run_in(&dir, &[ADMIN_PASSWORD], &create);
    assert!(ok, "{stderr}");
    let (ok, stderr) = run_in(&dir, &[ADMIN_PASSWORD], &create);
    assert!(!ok && stderr.contains("login_id is taken"), "{stderr}");

    let keys = dir.join("data/keys.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = stored_email(&dir).await;
    assert!(
        before.starts_with("k1:") && !before.contains("example"),
        "{before}"
    );

    let (ok, stderr) = run_in(&dir, &[], &["keys", "rotate"]);
    assert!(ok, "{stderr}");
    let file = std::fs::read_to_string(&keys).unwrap();
    let data_keys = file.lines().find(|l| l.starts_with("data_keys")).unwrap();
    assert_eq!(
        data_keys.matches(':').count(),
        2,
        "a new key, and the old one kept"
    );
    let new_id = data_keys
        .split('"')
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert_ne!(new_id, "k1");
    let after = stored_email(&dir).await;
    assert!(after.starts_with(&format!("{new_id}:")), "{after}");

    // The service still reads it: the admin logs in and sees the decrypted address.
    let log_path = dir.join("serve.log");
    let mut command = Command::new(BIN);
    command
        .current_dir(&dir)
        .env_clear()
        .env("RUST_LOG", "debug");
    let (mut child, addr) = spawn_serving(command, &log_path);
    let client = ::reqwest::Client::new();
    let base = format!("http://{addr}");
    let pair: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"login_id": "root1", "password": ADMIN_PASSWORD.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: serde_json::Value = client
        .get(format!("{base}/v1/members/me"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "root@example.com");
    assert_eq!(me["role"], "admin");

    // A member's whole journey, with debug logging on: no personal data in the log.
    let personal = [
        "홍길동",
        "010-9876-5432",
        "01098765432",
        "secret.person@example.org",
        "서울시 비밀구 숨은로 7",
        "101동 1203호",
        "a long member password",
    ];
    let signed_up = client
        .post(format!("{base}/v1/members"))
        .json(
            &serde_json::json!({"login_id": "person1", "password": personal[6],
            "name": personal[0], "phone": personal[1], "email": personal[3],
            "address": {"line1": personal[4], "line2": personal[5]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 201);
    let duplicate = client
        .post(format!("{base}/v1/members"))
        .json(
            &serde_json::json!({"login_id": "person2", "password": personal[6],
            "name": personal[0], "phone": personal[1], "email": personal[3],
            "address": {"line1": personal[4]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let outbox = std::fs::read_dir(dir.join("data/outbox")).unwrap();
    let mail = std::fs::read_to_string(outbox.map(|e| e.unwrap().path()).next().unwrap()).unwrap();
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = mail.find("token=").unwrap() + "token=".len();
    let token: String = mail[at..].chars().take(43).collect();
    let verified = client
        .get(format!("{base}/v1/members/verify?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let pair: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"login_id": "person1", "password": personal[6]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: serde_json::Value = client
        .get(format!("{base}/v1/members/me"))
        .bearer_auth(pair["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], personal[3]);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("serving") && log.contains("/v1/members"),
        "{log}"
    );
    for secret in personal
        .iter()
        .chain(&[ADMIN_PASSWORD.1, "root@example.com", token.as_str()])
    {
        assert!(!log.contains(secret), "{secret:?} is in the log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn keys_rotate_with_keys_from_the_environment() {
    use base64::Engine;
    let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let dir = tempdir();
    let k1 = format!("k1:{}", b64(1));
    let common = [("JWT_SECRET", b64(9)), ("OPENRUN_BLIND_INDEX_KEY", b64(8))];
    let vars = |keys: &str| -> Vec<(&str, String)> {
        let mut v = common.to_vec();
        v.push(("OPENRUN_DATA_KEYS", keys.to_owned()));
        v.push((ADMIN_PASSWORD.0, ADMIN_PASSWORD.1.to_owned()));
        v
    };
    let run = |v: Vec<(&str, String)>, args: &[&str]| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_in(&dir, &refs, args)
    };
    let create = [
        "admin",
        "create",
        "--login-id",
        "root2",
        "--email",
        "root2@example.com",
    ];
    let (ok, stderr) = run(vars(&k1), &create);
    assert!(ok, "{stderr}");
    assert!(
        !dir.join("data/keys.toml").exists(),
        "no key file when all three are set"
    );
    assert!(stored_email(&dir).await.starts_with("k1:"));
    let rotated = format!("k2:{},{k1}", b64(2));
    let (ok, stderr) = run(vars(&rotated), &["keys", "rotate"]);
    assert!(ok, "{stderr}");
    assert!(stored_email(&dir).await.starts_with("k2:"));
    let (ok, stderr) = run(vars("k1:short"), &["keys", "rotate"]);
    assert!(!ok && stderr.contains("OPENRUN_DATA_KEYS"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every secret and every piece of personal data a member's requests carry, none of which may
/// reach the process's output, even with debug logging on.
#[tokio::test]
async fn a_serving_process_logs_no_personal_data_or_secrets() {
    let dir = tempdir();
    let mut command = Command::new(BIN);
    command
        .current_dir(&dir)
        .env_clear()
        .env("RUST_LOG", "debug,openrun=trace")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap());
    let (mut child, addr) = spawn_serving(command, &dir.join("stderr.log"));
    let base = format!("http://{addr}");
    let client = ::reqwest::Client::new();
    let password = "Quiet Harbour Lantern 88";
    let wrong = "Loud Harbour Lantern 99";
    let sign_up = serde_json::json!({
        "login_id": "logwatch7",
        "password": password,
        "name": "Seo Haneul-Logcheck",
        "phone": "010-7345-9182",
        "email": "haneul.logcheck@example.co.kr",
        "address": {"line1": "Banpo-daero 58 Logcheck-gil", "line2": "Suite 4417",
                    "postal_code": "06591"}
    });
    let post = |path: &str, body: &serde_json::Value, token: Option<&str>| {
        let mut request = client.post(format!("{base}{path}")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        post("/v1/members", &sign_up, None).await.unwrap().status(),
        201
    );
    assert_eq!(
        post("/v1/members", &sign_up, None).await.unwrap().status(),
        409
    );
    let mut broken = sign_up.clone();
    broken["email"] = "haneul.logcheck@@broken".into();
    broken["phone"] = "020-7345-9182".into();
    assert_eq!(
        post("/v1/members", &broken, None).await.unwrap().status(),
        422
    );
    let outbox = dir.join("data/outbox");
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .expect("a verification e-mail")
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = mail.find("verify?token=").unwrap() + "verify?token=".len();
    let link_token: String = mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let verified = client
        .get(format!("{base}/v1/members/verify?token={link_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);
    let login = |password: &str| serde_json::json!({"login_id": "logwatch7", "password": password, "device_name": "phone"});
    assert_eq!(
        post("/v1/auth/login", &login(wrong), None)
            .await
            .unwrap()
            .status(),
        401
    );
    let pair: serde_json::Value = post("/v1/auth/login", &login(password), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let me = client
        .get(format!("{base}/v1/members/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let address =
        serde_json::json!({"line1": "Gangnam-daero 9 Logcheck-ro", "postal_code": "06236"});
    let added = post("/v1/members/me/addresses", &address, Some(&access))
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let bad_change = serde_json::json!({"current_password": wrong, "new_password": password});
    let changed = client
        .put(format!("{base}/v1/members/me/password"))
        .bearer_auth(&access)
        .json(&bad_change)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 422);
    let refreshed = post(
        "/v1/auth/refresh",
        &serde_json::json!({"refresh_token": refresh}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(refreshed.status(), 200);
    // Presenting the rotated token again is logged as reuse: with ids only.
    let reused = post(
        "/v1/auth/refresh",
        &serde_json::json!({"refresh_token": refresh}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(reused.status(), 401);
    // A path with quotes and braces, sent raw: logged escaped, so it cannot forge fields.
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.write_all(b"GET /x\"}:{FAKE=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = raw.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let output = std::fs::read_to_string(dir.join("stdout.log")).unwrap()
        + &std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(
        output.contains("/v1/auth/refresh"),
        "the requests were logged"
    );
    assert!(
        output.contains(r#"\"}:{FAKE=1"#),
        "the forged path was logged, escaped"
    );
    assert!(
        !output.contains(r#"/x"}:{FAKE=1"#),
        "the path was logged raw"
    );
    let secret_part = refresh.split_once('.').unwrap().1;
    for needle in [
        password,
        wrong,
        "Seo Haneul",
        "Logcheck",
        "logcheck",
        "010-7345-9182",
        "7345-9182",
        "01073459182",
        "haneul",
        "Banpo",
        "Suite 4417",
        "06591",
        "Gangnam",
        &link_token,
        &access,
        &access[access.len() - 20..],
        secret_part,
    ] {
        assert!(!holds(&output, needle), "the log holds {needle:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `log` holds `needle` as a token of its own: a short number inside a longer run of
/// letters and digits (a UUID, a duration) is not the member's data.
fn holds(log: &str, needle: &str) -> bool {
    let numeric = needle.bytes().all(|b| b.is_ascii_digit());
    log.match_indices(needle).any(|(at, _)| {
        let before = log[..at].bytes().next_back();
        let after = log[at + needle.len()..].bytes().next();
        !numeric
            || ![before, after]
                .into_iter()
                .flatten()
                .any(|b| b.is_ascii_alphanumeric())
    })
}
