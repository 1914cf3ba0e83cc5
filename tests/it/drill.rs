//! `openrun drill` at a small size, against a real `openrun serve` process: MariaDB + Redis
//! (every scenario) and the embedded default (a burst). The figures are never asserted; what
//! is asserted is that the command runs, answers every order, and that its correctness check
//! and report say what the shop did: with 20 units of each of 4 products and 200 buyers, 80
//! orders placed and 120 told sold out.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{Backend, REDIS_URL, Serving, TestDb, random_name, spawn_serving};

const ADMIN_PASSWORD: &str = "drill admin password";

/// The settings of the shop and of the commands run beside it (the drill's audit opens the
/// same database and Redis).
struct Shop {
    _db: TestDb,
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
    url: String,
    server: Serving,
}

impl Shop {
    async fn start(backend: Backend) -> Self {
        let db = TestDb::new(backend).await;
        let dir = std::env::temp_dir().join(random_name("openrun_drill_"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = vec![
            ("DATABASE_URL", db.url.clone()),
            (
                "OPENRUN_KEYS_FILE",
                dir.join("keys.toml").display().to_string(),
            ),
            ("MAIL_OUTBOX_DIR", dir.join("outbox").display().to_string()),
            ("SIGNUPS_PER_ADDRESS_PER_HOUR", "1000000".into()),
            ("LOGIN_PER_ADDRESS_PER_MINUTE", "1000000".into()),
            ("ORDERS_PER_ADDRESS_PER_MINUTE", "1000000".into()),
            ("ORDERS_PER_MEMBER_PER_MINUTE", "100000".into()),
            ("OPENRUN_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("RUST_LOG", "warn,openrun::startup=info".into()),
        ];
        if backend == Backend::MySql {
            env.push(("REDIS_URL", REDIS_URL.into()));
            env.push((
                "REDIS_KEY_PREFIX",
                format!("{}:", random_name("openrun_test_")),
            ));
        }
        let admin = command(&env)
            .args(["admin", "create", "--login-id", "drilladmin", "--email"])
            .arg("drilladmin@example.com")
            .output()
            .unwrap();
        assert!(
            admin.status.success(),
            "{}",
            String::from_utf8_lossy(&admin.stderr)
        );
        let mut serve = command(&env);
        serve.arg("serve").stdout(std::process::Stdio::null());
        let (child, addr) = spawn_serving(serve, &dir.join("serve.log"));
        Self {
            _db: db,
            url: format!("http://{addr}"),
            dir,
            env,
            server: Serving(child),
        }
    }

    /// `openrun drill <args>` against the shop; its report.
    fn drill(&self, name: &str, args: &[&str]) -> Value {
        let out = self.dir.join("out");
        let ran = command(&self.env)
            .args([
                "drill",
                "--url",
                &self.url,
                "--admin",
                "drilladmin",
                "--audit",
            ])
            .args(["--buyers", "200", "--out"])
            .arg(&out)
            .arg("--server-pid")
            .arg(self.server.0.id().to_string())
            .args(["--settle", "100ms"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ran.stdout);
        assert!(
            ran.status.success(),
            "drill {args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        assert!(stdout.contains("check: passed"), "{stdout}");
        let chart = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(
            chart.starts_with("<svg"),
            "{}",
            &chart[..chart.len().min(200)]
        );
        serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap()
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.server.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((_, prefix)) = self.env.iter().find(|(k, _)| *k == "REDIS_KEY_PREFIX") {
            crate::helpers::delete_redis_keys_blocking(prefix);
        }
    }
}

fn command(env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_openrun"));
    command
        .env_remove("REDIS_URL")
        .envs(env.iter().map(|(k, v)| (*k, v)));
    command
}

/// What every report holds, whatever the scenario: a passed check, every answer counted,
/// no error of the shop or the network, the server's memory read.
fn sound(report: &Value, phase: &Value) {
    assert_eq!(report["check"]["passed"], true, "{}", report["check"]);
    let outcomes = &phase["outcomes"];
    let counted: u64 = outcomes
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, phase["requests"].as_u64().unwrap(), "{outcomes}");
    for error in ["server", "transport", "other_client", "limit"] {
        assert!(outcomes.get(error).is_none(), "{error}: {outcomes}");
    }
    assert!(report["memory"]["after_sign_in_mb"].as_f64().unwrap() > 0.0);
    assert!(report["memory"]["peak_of_orders_mb"].as_f64().unwrap() > 0.0);
    assert!(report["memory"]["settled_mb"].as_f64().unwrap() > 0.0);
}

/// A burst of 200 buyers over 4 products of 20 units: 80 placed, 120 sold out, each product
/// sold out exactly, every placed order listed for its buyer and in the log.
fn burst_sells_exactly_the_supply(shop: &Shop) {
    let report = shop.drill("burst", &["--stock", "20", "burst"]);
    let phase = &report["phases"][0];
    sound(&report, phase);
    assert_eq!(phase["outcomes"]["success"], 80, "{}", phase["outcomes"]);
    assert_eq!(phase["outcomes"]["sold_out"], 120, "{}", phase["outcomes"]);
    for product in report["check"]["products"].as_array().unwrap() {
        assert_eq!(product["sold"], 20, "{product}");
        assert_eq!(product["demand"], 50, "{product}");
    }
    assert_eq!(report["check"]["listed"], 80);
    assert_eq!(report["check"]["audit"]["missing_from_log"], 0);
    assert!(
        report["check"]["audit"]["failed"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_against_mariadb_and_redis_and_checks_what_it_sold() {
    let shop = Shop::start(Backend::MySql).await;
    burst_sells_exactly_the_supply(&shop);
    // The buyers are kept: the next scenarios sign them in with a refresh.
    assert!(Path::new(&shop.dir.join("out/buyers.json")).exists());
    let rate = shop.drill("rate", &["rate", "--rps", "100", "--duration", "3s"]);
    let phase = &rate["phases"][0];
    sound(&rate, phase);
    assert_eq!(phase["requests"], 300);
    assert_eq!(phase["outcomes"]["success"], 300);
    assert_eq!(rate["check"]["acknowledged"], 300);
    let saturate = shop.drill("saturate", &["saturate", "--duration", "2s"]);
    assert_eq!(saturate["phases"][0]["name"], "healthz");
    let orders = &saturate["phases"][1];
    sound(&saturate, orders);
    assert!(orders["outcomes"]["success"].as_u64().unwrap() > 0);
    assert!(saturate["orders_per_healthz"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_runs_against_the_embedded_default() {
    let shop = Shop::start(Backend::Sqlite).await;
    burst_sells_exactly_the_supply(&shop);
}
