//! The PostgreSQL connection of a `Store`: statements written for SQLite run here with
//! their placeholders renumbered and prepared once per connection; errors fall into the
//! same classes as SQLite's.

use std::cell::RefCell;
use std::collections::HashMap;

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Statement};

use super::sql::{placeholder_numbers, postgres_placeholders, Conn, Tx, Value};
use super::StoreError;
use crate::config::{DatabaseTls, PostgresConfig};

/// The schema, in order: migration N brings a database from version N-1 to N.
const MIGRATIONS: &[&str] = &[include_str!("migrations/postgres/0001_initial.sql")];

/// The advisory lock every postdesk process takes to migrate: two daemons starting at
/// once apply each migration once.
const MIGRATION_LOCK: i64 = 0x706f_7374_6465_736b; // "postdesk"

/// Connects as `config` says: TLS verified with the same roots as IMAP (or `ca_file`),
/// the password read from its file or credential now, never from the URL.
pub(super) fn connect(config: &PostgresConfig) -> Result<PgConn, StoreError> {
    let unavailable = |e: String| StoreError::Unavailable(format!("PostgreSQL at {}: {e}", config.url));
    let mut pg: postgres::Config = config.url.parse().map_err(|e: postgres::Error| unavailable(e.to_string()))?;
    if let Some(source) = &config.password {
        pg.password(source.read().map_err(unavailable)?.expose());
    }
    pg.application_name("postdesk").connect_timeout(Duration::from_secs(10));
    let client = match config.tls {
        DatabaseTls::None => pg.ssl_mode(postgres::config::SslMode::Disable).connect(postgres::NoTls),
        DatabaseTls::Verify => {
            let roots = crate::tls::client_config(config.ca_file.as_deref()).map_err(unavailable)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*roots).clone());
            pg.ssl_mode(postgres::config::SslMode::Require).connect(tls)
        }
    };
    let client = client.map_err(|e| match StoreError::from(e) {
        StoreError::Unavailable(m) | StoreError::Sql(m) | StoreError::Conflict(m) => unavailable(m),
        other => other,
    })?;
    Ok(PgConn { client: Some(client), config: config.clone(), statements: HashMap::new() })
}

/// Brings the schema up to date, each migration in a transaction of its own, under the
/// advisory lock. With `create` false a database without postdesk's tables is an error.
pub(super) fn migrate(pg: &mut PgConn, create: bool, shown: &str) -> Result<(), StoreError> {
    let client = pg.client();
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate_locked(client, create, shown);
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    result
}

fn migrate_locked(client: &mut Client, create: bool, shown: &str) -> Result<(), StoreError> {
    let exists: bool = client.query_one("SELECT to_regclass('postdesk_schema') IS NOT NULL", &[])?.get(0);
    if !exists && !create {
        return Err(StoreError::Missing(format!("{shown} (no postdesk tables)")));
    }
    if !exists {
        client.batch_execute(
            "CREATE TABLE postdesk_schema (version BIGINT NOT NULL); INSERT INTO postdesk_schema VALUES (0)",
        )?;
    }
    let version: i64 = client.query_one("SELECT version FROM postdesk_schema", &[])?.get(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Unavailable(format!(
            "the database at {shown} has schema version {version}, newer than this postdesk knows ({known}): \
             upgrade postdesk"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = client.transaction()?;
        tx.batch_execute(migration)?;
        tx.execute("UPDATE postdesk_schema SET version = $1", &[&(index as i64 + 1)])?;
        tx.commit()?;
    }
    Ok(())
}

pub struct PgConn {
    /// Always there until dropped (see `Drop`).
    client: Option<Client>,
    /// To connect again when the server closed the connection (a restart, a fail-over).
    config: PostgresConfig,
    /// Prepared statements by their SQLite text: each is parsed and planned once.
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// Connects again if the connection was lost: a transaction then starts on the
    /// server as it is now, and one that was open when it went was rolled back by it.
    fn reopen_if_lost(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        let fresh = connect(&self.config)?;
        *self = fresh;
        Ok(())
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a connection is open until dropped")
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let types = unused_as_text(sql);
        let stmt =
            self.client().prepare_typed(&postgres_placeholders(sql), &types).map_err(|e| in_statement(e, sql))?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub(super) fn execute(&mut self, sql: &str, values: &[Value]) -> Result<usize, StoreError> {
        let stmt = self.prepared(sql)?;
        let changed = self.client().execute(&stmt, &refs(values))?;
        Ok(changed as usize)
    }

    pub(super) fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<postgres::Row>, StoreError> {
        let stmt = self.prepared(sql)?;
        Ok(self.client().query(&stmt, &refs(values))?)
    }

    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client().batch_execute(sql)?)
    }
}

/// The blocking client runs a runtime of its own, which must not be shut down on a
/// thread of an async runtime (a store dropped by the daemon's last task): it is closed
/// on a thread of its own there.
impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(_) => drop(std::thread::spawn(move || drop(client))),
                Err(_) => drop(client),
            }
        }
    }
}

/// The types to declare for a statement's placeholders: PostgreSQL infers each from where
/// it is used and cannot for one that is not (a merge statement that takes only `?2`):
/// that one is declared text, the others left to inference (type 0).
fn unused_as_text(sql: &str) -> Vec<postgres::types::Type> {
    use postgres::types::{Kind, Type};
    let used = placeholder_numbers(sql);
    let highest = used.iter().copied().max().unwrap_or(0);
    if (1..=highest).all(|n| used.contains(&n)) {
        return Vec::new();
    }
    let inferred = Type::new("unspecified".to_owned(), 0, Kind::Simple, "pg_catalog".to_owned());
    (1..=highest).map(|n| if used.contains(&n) { inferred.clone() } else { Type::TEXT }).collect()
}

/// A statement PostgreSQL refused: which one, by its first line (no values are in it).
fn in_statement(e: postgres::Error, sql: &str) -> StoreError {
    match StoreError::from(e) {
        StoreError::Sql(m) => StoreError::Sql(format!("{m} (in: {})", sql.trim().lines().next().unwrap_or_default())),
        other => other,
    }
}

fn refs<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect()
}

/// The classes of `StoreError`: a lost connection, a server shutting down, a full disk
/// or a serialization failure may go away by itself; a unique key taken meanwhile is a
/// conflict, decided again.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection itself failed (closed, I/O, TLS).
            return StoreError::Unavailable(e.to_string());
        };
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        let class = &code.code()[..2];
        if *code == SqlState::UNIQUE_VIOLATION {
            StoreError::Conflict(text)
        } else if matches!(class, "08" | "40" | "53" | "57" | "58") || *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            StoreError::Unavailable(text)
        } else {
            StoreError::Sql(text)
        }
    }
}

/// One writer at a time (see `Store::write`): an advisory lock ("postdesw" in its bytes),
/// held until the commit.
pub(super) const BEGIN_WRITE: &str = "BEGIN; SELECT pg_advisory_xact_lock(8101821198400582519)";
/// `BEGIN_WRITE`, committed without waiting for the disk (`Store::write_unsynced`).
pub(super) const BEGIN_WRITE_UNSYNCED: &str =
    "BEGIN; SELECT pg_advisory_xact_lock(8101821198400582519); SET LOCAL synchronous_commit = off";

/// Rewrites the schema version with its own value: a write that commits a real change.
pub(super) const TOUCH_SCHEMA_VERSION: &str = "UPDATE postdesk_schema SET version = version";

/// An open transaction on a PostgreSQL connection, rolled back when dropped without a
/// commit (a failed closure, a panic), so the connection is never left inside it.
pub struct Open<'a> {
    pg: &'a RefCell<PgConn>,
    savepoints: usize,
    done: bool,
}

impl<'a> Open<'a> {
    pub(super) fn begin(pg: &'a RefCell<PgConn>, begin: &str) -> Result<Open<'a>, StoreError> {
        let mut conn = pg.borrow_mut();
        conn.reopen_if_lost()?;
        conn.batch_execute(begin)?;
        drop(conn);
        Ok(Open { pg, savepoints: 0, done: false })
    }

    pub(super) fn tx(&self) -> Tx<'a> {
        Tx { conn: Conn::Postgres(self.pg) }
    }

    /// Runs `f` in a savepoint: kept when it returns `Ok`, rolled back otherwise.
    pub(super) fn savepoint<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.savepoints += 1;
        let name = format!("message_{}", self.savepoints);
        self.pg.borrow_mut().batch_execute(&format!("SAVEPOINT {name}"))?;
        match f(&self.tx()) {
            Ok(value) => {
                self.pg.borrow_mut().batch_execute(&format!("RELEASE SAVEPOINT {name}"))?;
                Ok(value)
            }
            Err(e) => {
                self.pg.borrow_mut().batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))?;
                Err(e)
            }
        }
    }

    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.pg.borrow_mut().batch_execute("COMMIT")
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut pg) = self.pg.try_borrow_mut() {
                // A broken connection is noticed by the next statement.
                let _ = pg.batch_execute("ROLLBACK");
            }
        }
    }
}
