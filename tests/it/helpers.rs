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
    Appended, EventData, EventStore, EventStoreError, ExpectedVersion, Metadata, OpenAppend,
    StreamRef,
};
use openrun::startup::{AppState, Application};
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

fn random_name(prefix: &str) -> String {
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
        db.migrate().await.unwrap();
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

    pub fn dyn_store(&self) -> Arc<dyn EventStore> {
        match self {
            Self::MySql(s) => s.clone(),
            Self::Sqlite(s) => s.clone(),
        }
    }

    pub async fn begin_append(&self, stream: StreamRef, events: Vec<EventData>) -> Held {
        let expected = ExpectedVersion::NO_STREAM;
        let metadata = Metadata::default();
        match self {
            Self::MySql(s) => Held::MySql(
                s.begin_append(stream, expected, events, &metadata)
                    .await
                    .unwrap(),
            ),
            Self::Sqlite(s) => Held::Sqlite(
                s.begin_append(stream, expected, events, &metadata)
                    .await
                    .unwrap(),
            ),
        }
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

/// The application serving on an ephemeral port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// The application with some settings changed.
    pub async fn spawn_with(backend: Backend, change: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(backend).await;
        let mut config = Config::local(&db.url).unwrap();
        change(&mut config);
        let app = Application::build(&config).await.unwrap();
        let addr = app.local_addr().unwrap();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            state,
            shutdown: Some(tx),
            server: Some(server),
            _db: db,
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
    }
}

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
