//! Test support: every backend test runs once per backend.
//!
//! [`backend_tests!`] turns each test into a module with a `sqlite` and a
//! `postgres` test, so one set of test functions holds both backends to
//! the same promises. The PostgreSQL tests use the server named by
//! `SWITCHYARD_TEST_POSTGRES` (default: the local server's `test`
//! database, as on the CI machine), each in a schema of its own that is
//! dropped afterwards, so they run in parallel.

use crate::{PgSettings, PgStore};

/// Leases and completes every ready job, as a worker would.
pub(crate) async fn finish_all(db: &impl crate::StateBackend, now: i64) {
    let per = crate::TenantConcurrency::uniform(100);
    let skip = Default::default();
    let req = crate::LeaseRequest {
        owner: "w",
        lease_ms: 1000,
        limit: 100,
        per_tenant: &per,
        skip: &skip,
    };
    for job in db.lease(now, req).await.unwrap() {
        assert!(db.complete_job(job.attempt("w"), now).await.unwrap());
    }
}

/// The PostgreSQL server the tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A PostgreSQL store in a fresh schema. [`TestPg::close`] drops the
/// schema; a test that panics before leaves it to a best-effort drop.
pub(crate) struct TestPg {
    pub(crate) store: PgStore,
    pub(crate) schema: String,
    closed: bool,
}

impl TestPg {
    pub(crate) async fn new() -> Self {
        use aes_gcm::aead::OsRng;
        use aes_gcm::aead::rand_core::RngCore;
        let schema = format!("t_{:016x}", OsRng.next_u64());
        let store = PgStore::connect(&Self::settings(&schema))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the PostgreSQL backend tests need a server ({}; set SWITCHYARD_TEST_POSTGRES \
                     to use another): {e}",
                    crate::describe_url(&postgres_url())
                )
            });
        Self {
            store,
            schema,
            closed: false,
        }
    }

    /// Settings for another store on `schema` (a second daemon).
    pub(crate) fn settings(schema: &str) -> PgSettings {
        let mut s = PgSettings::new(postgres_url());
        s.schema = Some(schema.to_owned());
        s.pool_size = 4;
        s
    }

    /// Closes the store and drops its schema (and `also`).
    pub(crate) async fn close(mut self, also: &[&str]) {
        self.closed = true;
        self.store.close();
        for schema in std::iter::once(self.schema.as_str()).chain(also.iter().copied()) {
            drop_schema(schema).await;
        }
    }
}

/// Drops `schema` and what is in it.
pub(crate) async fn drop_schema(schema: &str) {
    let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connecting to drop a test schema");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("dropping a test schema");
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // A test that panicked: its runtime cannot be blocked on (its
        // connections need it to roll back), so a thread of its own tries,
        // without waiting long for locks, and nobody waits for it.
        let schema = self.schema.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                        ))
                        .await;
                }
            });
        });
    }
}

/// Each `async fn name(db) { … }` becomes `mod name` with a `sqlite` and
/// a `postgres` test, `db` being the store of that backend.
macro_rules! backend_tests {
    ($( $(#[$m:meta])* async fn $name:ident($db:ident) $body:block )*) => {
        $(
            $(#[$m])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    let $db = crate::SqliteStore::open_in_memory().unwrap();
                    $body
                }

                #[tokio::test]
                async fn postgres() {
                    let guard = crate::testing::TestPg::new().await;
                    {
                        let $db = guard.store.clone();
                        $body
                    }
                    guard.close(&[]).await;
                }
            }
        )*
    };
}
pub(crate) use backend_tests;
