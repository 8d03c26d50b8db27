//! The PostgreSQL connection of a `Store`: statements written for SQLite run here with
//! their placeholders renumbered and prepared once per connection; errors fall into the
//! same classes as SQLite's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Statement};

use super::sql::{first_line, placeholder_numbers, postgres_placeholders, Conn, Tx, Value};
use super::StoreError;
use crate::config::{DatabaseTls, PostgresConfig};

/// The schema, in order: migration N brings a database from version N-1 to N.
const MIGRATIONS: &[&str] =
    &[include_str!("migrations/postgres/0001_initial.sql"), include_str!("migrations/postgres/0002_outbox_counts.sql")];

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
    // A connection whose peer vanished (a host lost, a network cut) is noticed within
    // about a minute, not after TCP's hours; a session that holds the write lock without
    // working, or a write that waits for it too long, is ended by the server: one stuck
    // daemon must not hold up the others.
    pg.application_name("postdesk")
        .connect_timeout(Duration::from_secs(10))
        .keepalives_idle(Duration::from_secs(20))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(4)
        .tcp_user_timeout(Duration::from_secs(60))
        .options("-c idle_in_transaction_session_timeout=60000 -c lock_timeout=60000");
    let client = match config.tls {
        DatabaseTls::None => pg.ssl_mode(postgres::config::SslMode::Disable).connect(postgres::NoTls),
        DatabaseTls::Verify => {
            let roots = crate::tls::client_config(config.ca_file.as_deref()).map_err(unavailable)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*roots).clone());
            pg.ssl_mode(postgres::config::SslMode::Require).connect(tls)
        }
    };
    // A refused connection says why in its sources: the TLS certificate, the sign-in.
    let client = client.map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            if !why.contains(&cause.to_string()) {
                why = format!("{why}: {cause}");
            }
            source = cause.source();
        }
        unavailable(why)
    })?;
    Ok(PgConn { client: Some(client), config: config.clone(), statements: HashMap::new(), failed: false })
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
        return create_schema(client, shown);
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

/// A new database's tables, with the schema's version, in one transaction: a first start
/// that fails (no right to create the extension) leaves nothing half made. Matching names
/// in any case needs a UTF-8 database whose character type is not the ASCII-only `C`.
fn create_schema(client: &mut Client, shown: &str) -> Result<(), StoreError> {
    let row = client.query_one("SELECT current_setting('server_encoding'), current_setting('lc_ctype')", &[])?;
    let (encoding, ctype): (String, String) = (row.get(0), row.get(1));
    if encoding != "UTF8" || ctype == "C" || ctype == "POSIX" {
        return Err(StoreError::Sql(format!(
            "the database at {shown} has encoding {encoding} and character type {ctype}: postdesk needs UTF8 and a \
             UTF-8 locale to match names in any case; create it with `createdb --encoding UTF8 --locale C.UTF-8 \
             --template template0 --owner postdesk postdesk`"
        )));
    }
    let mut tx = client.transaction()?;
    tx.batch_execute("CREATE TABLE postdesk_schema (version BIGINT NOT NULL)")?;
    for migration in MIGRATIONS {
        tx.batch_execute(migration)?;
    }
    tx.execute("INSERT INTO postdesk_schema (version) VALUES ($1)", &[&(MIGRATIONS.len() as i64)])?;
    tx.commit()?;
    Ok(())
}

pub struct PgConn {
    /// Always there until dropped (see `Drop`).
    client: Option<Client>,
    /// To connect again when the server closed the connection (a restart, a fail-over).
    config: PostgresConfig,
    /// Prepared statements by their SQLite text: each is parsed and planned once.
    statements: HashMap<String, Statement>,
    /// A statement failed since the transaction (or its last savepoint) began: the
    /// server has aborted it, and a COMMIT would only roll it back.
    failed: bool,
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
        let changed = self.prepared(sql).and_then(|stmt| Ok(self.client().execute(&stmt, &refs(values))?));
        self.noted(changed).map(|n| n as usize)
    }

    pub(super) fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<postgres::Row>, StoreError> {
        let rows = self.prepared(sql).and_then(|stmt| Ok(self.client().query(&stmt, &refs(values))?));
        self.noted(rows)
    }

    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        let done = self.client().batch_execute(sql).map_err(StoreError::from);
        self.noted(done)
    }

    fn noted<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.failed |= result.is_err();
        result
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

/// A statement PostgreSQL refused, and which one.
fn in_statement(e: postgres::Error, sql: &str) -> StoreError {
    match StoreError::from(e) {
        StoreError::Sql(m) => StoreError::Sql(format!("{m} (in: {})", first_line(sql))),
        other => other,
    }
}

fn refs<'a>(values: &'a [Value<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect()
}

/// The classes of `StoreError`: a lost connection, a server shutting down or out of
/// resources, a full disk, a lock not had in time or a serialization failure may go away
/// by itself; a unique key taken meanwhile is a conflict, decided again; everything else
/// (a statement cancelled for its time, a value the server refuses) is the message's.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection failed (closed, I/O, TLS), or a value could not
            // be written for its parameter, which no retry changes.
            let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
            return match e.is_closed() || io {
                true => StoreError::Unavailable(e.to_string()),
                false => StoreError::Sql(e.to_string()),
            };
        };
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        let code = code.code();
        let transient = matches!(&code[..2], "08" | "40" | "53" | "58")
            || code.starts_with("57P")
            || code == SqlState::LOCK_NOT_AVAILABLE.code()
            || code == SqlState::READ_ONLY_SQL_TRANSACTION.code();
        if code == SqlState::UNIQUE_VIOLATION.code() {
            StoreError::Conflict(text)
        } else if transient {
            StoreError::Unavailable(text)
        } else {
            StoreError::Sql(text)
        }
    }
}

/// A write transaction's BEGIN, then `$more`: one writer at a time (see `Store::write`),
/// by an advisory lock ("postdesw" in its bytes) held until the commit.
macro_rules! begin_write {
    ($($more:literal)?) => {
        concat!("BEGIN; SELECT pg_advisory_xact_lock(8101821198400582519)" $(, $more)?)
    };
}
pub(super) const BEGIN_WRITE: &str = begin_write!();
/// `BEGIN_WRITE`, committed without waiting for the disk (`Store::write_unsynced`).
pub(super) const BEGIN_WRITE_UNSYNCED: &str = begin_write!("; SET LOCAL synchronous_commit = off");

/// Rewrites the schema version with its own value: a write that commits a real change.
pub(super) const TOUCH_SCHEMA_VERSION: &str = "UPDATE postdesk_schema SET version = version";

/// An open transaction on a PostgreSQL connection, rolled back when dropped without a
/// commit (a failed closure, a panic, a BEGIN that failed half way), so the connection is
/// never left inside it.
pub struct Open<'a> {
    pg: &'a RefCell<PgConn>,
    /// How it began: a batch that outgrows `SUBTRANSACTIONS` begins again the same way.
    begin: &'static str,
    savepoints: usize,
    done: bool,
}

/// Savepoints in one transaction at most: the server keeps 64 subtransactions of each
/// transaction in a cache, and beyond that every snapshot on the server gets slower. A
/// batch commits what it holds and goes on in a new transaction; what is committed is
/// done (a crash then leaves those messages for their post-action only, as after any
/// commit).
const SUBTRANSACTIONS: usize = 60;

impl<'a> Open<'a> {
    pub(super) fn begin(pg: &'a RefCell<PgConn>, begin: &'static str) -> Result<Open<'a>, StoreError> {
        let begun = {
            let mut conn = pg.borrow_mut();
            conn.reopen_if_lost()?;
            conn.failed = false;
            conn.batch_execute(begin)
        };
        let open = Open { pg, begin, savepoints: 0, done: false };
        begun?;
        Ok(open)
    }

    pub(super) fn tx(&self) -> Tx<'a> {
        Tx { conn: Conn::Postgres(self.pg) }
    }

    /// Runs `f` in a savepoint: kept when it returns `Ok`, rolled back otherwise.
    pub(super) fn savepoint<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.savepoints == SUBTRANSACTIONS {
            self.end()?;
            self.pg.borrow_mut().batch_execute(self.begin)?;
            self.savepoints = 0;
        }
        self.savepoints += 1;
        let name = format!("message_{}", self.savepoints);
        self.pg.borrow_mut().batch_execute(&format!("SAVEPOINT {name}"))?;
        let result = f(&self.tx());
        let mut conn = self.pg.borrow_mut();
        if result.is_err() {
            conn.batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))?;
            conn.failed = false;
        }
        conn.batch_execute(&format!("RELEASE SAVEPOINT {name}"))?;
        result
    }

    pub(super) fn commit(mut self) -> Result<(), StoreError> {
        self.done = true;
        self.end()
    }

    /// COMMIT, unless a statement failed (the server would roll back and say nothing).
    fn end(&mut self) -> Result<(), StoreError> {
        let mut conn = self.pg.borrow_mut();
        if conn.failed {
            conn.batch_execute("ROLLBACK")?;
            return Err(StoreError::Sql("a statement of the transaction failed: it was rolled back".to_owned()));
        }
        conn.batch_execute("COMMIT")
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
