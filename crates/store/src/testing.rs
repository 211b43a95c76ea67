//! Fresh, isolated stores for tests: a SQLite file in a temporary directory, or
//! a new PostgreSQL database (dropped again when the handle is dropped), so tests
//! run in parallel without seeing each other's data.

use std::path::Path;

use crate::{Store, StoreOptions};

/// The server that PostgreSQL tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("HAWKER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub struct TestDatabase {
    pub store: Store,
    /// `--database-url` for a server process sharing this database, or `None` for SQLite.
    pub url: Option<String>,
    dir: tempfile::TempDir,
    postgres_name: Option<String>,
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(None, dir.path(), &StoreOptions::default())
            .await
            .expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        Self {
            store,
            url: None,
            dir,
            postgres_name: None,
        }
    }

    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let name = format!("hawker_test_{}", uuid::Uuid::now_v7().simple());
        let admin = Store::open_postgres(&admin_url, &StoreOptions::default())
            .await
            .expect("PostgreSQL reachable at HAWKER_TEST_POSTGRES_URL");
        admin
            .execute_admin(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("HAWKER_TEST_POSTGRES_URL has no database part"),
        };
        let store = Store::open_postgres(&url, &StoreOptions::default())
            .await
            .expect("open test database");
        store.migrate().await.expect("migrate PostgreSQL");
        Self {
            store,
            url: Some(url),
            dir: tempfile::tempdir().expect("temporary directory"),
            postgres_name: Some(name),
        }
    }

    /// A directory for files that belong to this test (images, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop runs outside async code: use a runtime of our own on another thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(admin) =
                    Store::open_postgres(&postgres_admin_url(), &StoreOptions::default()).await
                {
                    let _ = admin
                        .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}
