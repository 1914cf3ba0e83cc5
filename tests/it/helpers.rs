//! Fresh databases and running applications for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openrun::config::Config;
use openrun::db::Database;
use openrun::eventstore::group_commit::GroupCommitConfig;
use openrun::eventstore::mysql::MysqlEventStore;
use openrun::eventstore::sqlite::SqliteEventStore;
use openrun::eventstore::{
    Appended, CounterMove, EventData, EventStore, EventStoreError, ExpectedVersion, Metadata,
    OpenAppend, StreamRef,
};
use openrun::http::AppState;
use openrun::startup::Application;
use rand::Rng;
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;

/// The MariaDB server the tests create their databases on (no database in the URL).
pub const MYSQL_URL_VAR: &str = "OPENRUN_TEST_MYSQL_URL";
const MYSQL_URL_DEFAULT: &str = "mysql://root@127.0.0.1:3306";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MySql,
    Sqlite,
}

pub fn mysql_server_url() -> String {
    std::env::var(MYSQL_URL_VAR).unwrap_or_else(|_| MYSQL_URL_DEFAULT.into())
}

pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// A database that exists for one test and is dropped with it.
pub struct TestDb {
    pub url: String,
    backend: Backend,
    name: String,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let name = random_name("openrun_test_");
        match backend {
            Backend::MySql => {
                let server = mysql_server_url();
                let mut admin = sqlx::MySqlConnection::connect(&server)
                    .await
                    .expect("MariaDB must run on 127.0.0.1:3306 (see .ci/run)");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                Self {
                    url: format!("{server}/{name}"),
                    backend,
                    name,
                    dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                Self {
                    url: format!("sqlite://{}", dir.join("openrun.db").display()),
                    backend,
                    name,
                    dir: Some(dir),
                }
            }
        }
    }

    pub async fn connect(&self) -> Database {
        let config = Config::local(&self.url).unwrap();
        let db = openrun::startup::connect(&config).await.unwrap();
        openrun::db::migrate(&db).await.unwrap();
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.backend {
            Backend::MySql => {
                let server = mysql_server_url();
                let name = self.name.clone();
                // Drop runs inside the test's runtime; a thread of its own may block.
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut admin = sqlx::MySqlConnection::connect(&server).await?;
                        admin
                            .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                            .await?;
                        admin.close().await
                    })
                })
                .join();
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("could not drop test database {}", self.name);
                }
            }
            Backend::Sqlite => {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

/// An event store of either backend, keeping the concrete type for `begin_append`.
pub enum Store {
    MySql(Arc<MysqlEventStore>),
    Sqlite(Arc<SqliteEventStore>),
}

pub enum Held {
    MySql(OpenAppend<sqlx::MySql>),
    Sqlite(OpenAppend<sqlx::Sqlite>),
}

impl Held {
    pub fn outcome(&self) -> &Appended {
        match self {
            Self::MySql(h) => h.outcome(),
            Self::Sqlite(h) => h.outcome(),
        }
    }

    pub async fn commit(self) -> Result<Appended, EventStoreError> {
        match self {
            Self::MySql(h) => h.commit().await,
            Self::Sqlite(h) => h.commit().await,
        }
    }
}

impl Store {
    pub fn open(db: &Database, config: &GroupCommitConfig) -> Self {
        match db {
            Database::MySql(pool) => {
                Self::MySql(Arc::new(MysqlEventStore::new(pool.clone(), config)))
            }
            Database::Sqlite(pool) => {
                Self::Sqlite(Arc::new(SqliteEventStore::new(pool.clone(), config)))
            }
        }
    }

    pub fn accepted_appends(&self) -> u64 {
        match self {
            Self::MySql(s) => s.accepted_appends(),
            Self::Sqlite(s) => s.accepted_appends(),
        }
    }

    pub fn batches_begun(&self) -> u64 {
        match self {
            Self::MySql(s) => s.batches_begun(),
            Self::Sqlite(s) => s.batches_begun(),
        }
    }

    pub fn shutdown_begun(&self) -> bool {
        match self {
            Self::MySql(s) => s.shutdown_begun(),
            Self::Sqlite(s) => s.shutdown_begun(),
        }
    }

    /// Waits (30 s at most) until `done` holds of this store.
    pub async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let started = std::time::Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            tokio::task::yield_now().await;
        }
    }

    pub fn dyn_store(&self) -> Arc<dyn EventStore> {
        match self {
            Self::MySql(s) => s.clone(),
            Self::Sqlite(s) => s.clone(),
        }
    }

    pub async fn begin_append(&self, stream: StreamRef, events: Vec<EventData>) -> Held {
        self.begin_moving(stream, events, Vec::new()).await.unwrap()
    }

    /// An open append that moves `counters` (refused when a move would cross its floor).
    pub async fn begin_moving(
        &self,
        stream: StreamRef,
        events: Vec<EventData>,
        counters: Vec<CounterMove>,
    ) -> Result<Held, EventStoreError> {
        let expected = ExpectedVersion::NO_STREAM;
        let metadata = Metadata::default();
        Ok(match self {
            Self::MySql(s) => Held::MySql(
                s.begin_append(stream, expected, events, &metadata, counters)
                    .await?,
            ),
            Self::Sqlite(s) => Held::Sqlite(
                s.begin_append(stream, expected, events, &metadata, counters)
                    .await?,
            ),
        })
    }
}

/// A fresh database with a migrated event store on it.
pub struct StoreFixture {
    pub store: Store,
    pub events: Arc<dyn EventStore>,
    pub db: Database,
    _test_db: TestDb,
}

impl StoreFixture {
    pub async fn new(backend: Backend) -> Self {
        Self::with_config(backend, &GroupCommitConfig::default()).await
    }

    pub async fn with_config(backend: Backend, config: &GroupCommitConfig) -> Self {
        let test_db = TestDb::new(backend).await;
        let db = test_db.connect().await;
        let store = Store::open(&db, config);
        Self {
            events: store.dyn_store(),
            store,
            db,
            _test_db: test_db,
        }
    }
}

/// A JSON event with one field.
pub fn event(event_type: &str, n: u64) -> EventData {
    EventData::json(event_type, "1.0", &serde_json::json!({ "n": n })).unwrap()
}

/// Redis for the MySQL-side tests; every test uses a key prefix of its own.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A real SMTP server (python3 aiosmtpd, see scripts/install-test-deps.sh) on a free loopback
/// port, delivering into a Maildir; killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    child: std::process::Child,
}

/// Installs the Python test tools (aiosmtpd, schemathesis) once, when one is missing or at
/// another version (a fresh machine): the pinned versions, from PyPI, by the project's own
/// script, which is a no-op when everything is in place.
pub fn ensure_test_tools() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-test-deps.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("bash");
        assert!(status.success(), "{script} failed");
    });
}

impl SmtpServer {
    /// Starts the sink (tests/smtp_sink.py), which binds a free port itself and reports it
    /// once it listens.
    pub async fn start() -> Self {
        use std::io::BufRead;
        ensure_test_tools();
        let maildir = std::env::temp_dir().join(random_name("openrun_maildir_"));
        let mut child = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py"))
            .arg(&maildir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/install-test-deps.sh)");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        let Ok(port) = line.trim().parse() else {
            let status = child.wait().unwrap();
            panic!(
                "the SMTP sink exited with {status} before listening; run scripts/install-test-deps.sh"
            );
        };
        Self {
            port,
            maildir,
            child,
        }
    }

    /// The raw messages delivered so far.
    pub fn messages(&self) -> Vec<String> {
        read_dir_texts(&self.maildir.join("new"), "")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

fn read_dir_texts(dir: &std::path::Path, extension: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<(std::time::SystemTime, String)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().to_string_lossy().ends_with(extension))
        .map(|e| {
            (
                e.metadata().unwrap().modified().unwrap(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, text)| text).collect()
}

/// Where the app's mail goes: a real SMTP server (MySQL side) or the outbox directory (SQLite).
pub enum MailSink {
    Smtp(SmtpServer),
    Outbox(PathBuf),
}

/// The application serving on an ephemeral port: on MySQL with Redis and SMTP (production's
/// shape), on SQLite with the in-process token store and the `.eml` outbox (the embedded one).
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    /// The database and the log the server runs on, for checks beside it.
    pub db: Database,
    pub events: Arc<dyn EventStore>,
    pub config: Config,
    pub backend: Backend,
    pub mail: MailSink,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// With the configuration changed by `adjust` first.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with_clock(backend, adjust, openrun::clock::system()).await
    }

    /// With the configuration changed by `adjust`, reading the time from `clock`.
    pub async fn spawn_with_clock(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
        clock: openrun::clock::SharedClock,
    ) -> Self {
        let db = TestDb::new(backend).await;
        let mut config = Config::local(&db.url).unwrap();
        let mail = match backend {
            Backend::MySql => {
                let smtp = SmtpServer::start().await;
                config.mail.smtp_url = Some(format!("smtp://127.0.0.1:{}", smtp.port).into());
                config.redis.url = Some(REDIS_URL.to_string().into());
                config.redis.key_prefix = format!("{}:", random_name("openrun_test_"));
                MailSink::Smtp(smtp)
            }
            Backend::Sqlite => {
                let outbox = std::env::temp_dir().join(random_name("openrun_outbox_"));
                config.mail.outbox_dir = outbox.clone();
                MailSink::Outbox(outbox)
            }
        };
        adjust(&mut config);
        let app = Application::build_with_clock(&config, clock).await.unwrap();
        let addr = app.local_addr().unwrap();
        let state = app.state().clone();
        let (app_db, events) = (app.database().clone(), Arc::clone(app.event_store()));
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        // Ready once its live catalog has caught up with the log.
        assert!(
            state
                .catalog
                .wait_ready(std::time::Duration::from_secs(30))
                .await,
            "the live catalog never caught up"
        );
        // And once the counter projector has built the stock counters: a test that fails at
        // once must not leave a first rebuild writing after its clean-up.
        eventually("the stock counters built", || async {
            matches!(
                state.stock.state().await,
                Ok(openrun::stock::StoreState::Ready { .. })
            )
            .then_some(())
        })
        .await;
        Self {
            addr,
            client: reqwest::Client::new(),
            state,
            db: app_db,
            events,
            config,
            backend,
            mail,
            shutdown: Some(tx),
            server: Some(server),
            _db: db,
        }
    }

    /// The test database's URL.
    pub fn database_url(&self) -> String {
        self._db.url.clone()
    }

    /// The SQLite file (SQLite backend only).
    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(self._db.url.trim_start_matches("sqlite://"))
    }

    /// Every message sent so far, raw (headers and body), oldest first.
    pub fn mails(&self) -> Vec<String> {
        match &self.mail {
            MailSink::Smtp(server) => server.messages(),
            MailSink::Outbox(dir) => read_dir_texts(dir, ".eml"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        // Dropping `self` removes the Redis keys and the outbox.
    }
}

/// Removes what the test made outside its database, even when the test panicked.
impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that panicked never stopped its server: stop it now, so that its workers
        // (the counter projector would build the stock counters again) stop writing. It
        // stops gracefully if the runtime has another thread to run it on (5 s at most),
        // else it is aborted.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take();
        let prefix = (self.backend == Backend::MySql).then(|| self.config.redis.key_prefix.clone());
        // Drop may run inside the test's runtime; a thread of its own may block.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Some(mut server) = server {
                    // The server's end, awaited with a deadline: gracefully, else aborted
                    // (its workers stop with the application it drops).
                    let within = std::time::Duration::from_secs(5);
                    if tokio::time::timeout(within, &mut server).await.is_err() {
                        server.abort();
                        let _ = tokio::time::timeout(within, &mut server).await;
                    }
                }
                if let Some(prefix) = prefix {
                    delete_redis_keys(&prefix).await;
                }
            });
        });
        // On a multi-threaded runtime this worker's tasks (the server among them) move to
        // another thread while it waits, so that the server can stop.
        let wait = move || {
            let _ = cleanup.join();
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
        if let MailSink::Outbox(dir) = &self.mail {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// [`delete_redis_keys`] from a thread of its own, for a `Drop` that may run inside a
/// test's runtime.
pub fn delete_redis_keys_blocking(prefix: &str) {
    let prefix = prefix.to_owned();
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(delete_redis_keys(&prefix)))
    })
    .join();
}

/// Deletes every key under `prefix` (a test's own); returns how many there were.
pub async fn delete_redis_keys(prefix: &str) -> usize {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    keys.len()
}

/// Runs `$body` with `$pool` bound to the test database's pool, whichever backend it is.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            openrun::db::Database::MySql($pool) => $body,
            openrun::db::Database::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Declares each listed async test once per backend: `mysql::name` and `sqlite::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::MySql).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// Asks `check` again and again (as soon as each answer is in, never after a fixed pause)
/// until it gives a value, for 30 s at most; `what` names what is awaited.
pub async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// A free port on the loopback interface, for addresses where nothing must listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `command` (an `openrun serve`) on port 0, its log going to `log`, and waits (30 s
/// at most) for the address it reports in its `serving` line: no port is picked before the
/// server binds it, so none can be taken in between.
pub fn spawn_serving(
    mut command: std::process::Command,
    log: &std::path::Path,
) -> (std::process::Child, SocketAddr) {
    let mut child = command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .filter(|line| line.contains(" serving"))
            .find_map(|line| line.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok());
        if let Some(addr) = addr {
            return (child, addr);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("openrun serve exited with {status}: {text}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "openrun serve reported no address: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn serve_command(db: &TestDb) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_openrun"));
    command
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn,openrun::startup=info");
    command
}

/// `openrun serve` on the test database, in a process of its own, on port 0 (for tests that
/// watch its projections and scheduler, not its HTTP side).
pub fn serve(db: &TestDb) -> std::process::Child {
    serve_command(db)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The same, once it serves HTTP, with the address it bound.
pub fn serve_http(db: &TestDb) -> (std::process::Child, SocketAddr) {
    let log = std::env::temp_dir().join(format!("{}.log", random_name("openrun_serve_")));
    let mut command = serve_command(db);
    command.stdout(std::process::Stdio::null());
    let served = spawn_serving(command, &log);
    // The process keeps writing to the file it opened; the name goes now.
    let _ = std::fs::remove_file(&log);
    served
}

/// A serving process, killed when dropped: a failing test must not leave it holding the
/// database it would drop.
pub struct Serving(pub std::process::Child);

impl Serving {
    pub fn kill(&mut self) {
        // Ignored errors: it exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.kill();
    }
}
