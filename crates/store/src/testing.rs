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

/// References on the purchase path that lead nowhere: orders, lines, history
/// entries, Idempotency-Keys and per-buyer counts whose buyer, shop, room,
/// sale or variant does not exist. PostgreSQL does not check these with
/// foreign keys (migration 0007 says why); tests that write orders check that
/// this stays 0.
pub async fn orphans(store: &Store) -> crate::error::Result<i64> {
    use crate::db::fetch_one;
    let mut c = store.read().await?;
    fetch_one!(
        &mut c,
        sqlx::query(
            "SELECT CAST(
                 (SELECT COUNT(*) FROM orders o WHERE
                     NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.buyer_id)
                     OR NOT EXISTS (SELECT 1 FROM shops s WHERE s.id = o.shop_id)
                     OR (o.room_id IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM rooms r WHERE r.id = o.room_id))
                     OR (o.sale_id IS NOT NULL
                         AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.id = o.sale_id)))
                 + (SELECT COUNT(*) FROM order_lines l
                     WHERE NOT EXISTS (SELECT 1 FROM variants v WHERE v.id = l.variant_id))
                 + (SELECT COUNT(*) FROM order_events e WHERE e.actor_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = e.actor_id))
                 + (SELECT COUNT(*) FROM idempotency_keys k
                     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = k.user_id))
                 + (SELECT COUNT(*) FROM sale_buyers b
                     WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = b.buyer_id)
                     OR NOT EXISTS (SELECT 1 FROM sales s WHERE s.id = b.sale_id))
             AS BIGINT) AS orphans"
        ),
        orphan_count
    )
}

fn orphan_count<R: crate::row::Get>(r: &R) -> crate::error::Result<i64> {
    r.int("orphans")
}

/// A room (in a shop of its own, with a seller of its own) for tests that
/// need one to exist and nothing more.
pub async fn room(store: &Store) -> domain::ids::RoomId {
    use domain::account::{DisplayName, Email, Role};
    use domain::catalog::{Description, Handle, ShopName, Title};
    use domain::money::Currency;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let parse = "a valid test value";
    let seller = store
        .create_user(crate::NewUser {
            email: Email::parse(&format!("seller-{tag}@example.com")).expect(parse),
            display_name: DisplayName::parse("Seller").expect(parse),
            password_hash: "$argon2id$stand-in".into(),
            role: Role::Seller,
        })
        .await
        .expect("a user");
    let shop = store
        .create_shop(crate::NewShop {
            owner: seller.id,
            handle: Handle::parse(&format!("s{}", &tag[tag.len() - 12..])).expect(parse),
            name: ShopName::parse("Test shop").expect(parse),
            currency: Currency::parse("EUR").expect(parse),
            description: Description::parse("").expect(parse),
        })
        .await
        .expect("a shop");
    store
        .create_room(crate::NewRoom {
            shop: shop.id,
            title: Title::parse("Live").expect(parse),
            description: Description::parse("").expect(parse),
            cover_image: None,
            scheduled_start: None,
            stream_key_hash: format!("key-{tag}"),
        })
        .await
        .expect("a room")
        .id
}
