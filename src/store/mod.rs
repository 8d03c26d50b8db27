//! The SQLite adapter: opening (WAL, foreign keys, busy timeout, embedded migrations),
//! the facts a decision needs, writing a decision, and the read queries of the CLI.
//! It decides nothing: every choice is made in `core`.

pub mod agents;
pub mod copy;
pub mod customers;
mod ingest;
mod mailbox;
pub mod oauth;
pub mod orgs;
pub mod outbox;
mod pg;
pub mod portal;
pub mod shared;
pub(crate) mod sql;
pub mod tickets;

pub use ingest::{
    apply, find_duplicate, gather, ledger_entry, record_failure, record_processed, Applied, Arrived, Lookups,
};
pub use mailbox::{is_processed, record_poll, record_uidvalidity, release_lease, take_lease};

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use crate::config::{Database, PostgresConfig};
use pg::PgConn;
use rusqlite_migration::{Migrations, M};
pub use sql::Tx;
use sql::{Row, ToValue};

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/0001_initial.sql")),
    M::up(include_str!("migrations/0002_mailbox_state.sql")),
    M::up(include_str!("migrations/0003_trust.sql")),
    M::up(include_str!("migrations/0004_failed_origin.sql")),
    M::up(include_str!("migrations/0005_mailbox_lease.sql")),
    M::up(include_str!("migrations/0006_ticket_counters.sql")),
    M::up(include_str!("migrations/0007_outbox_claims.sql")),
    M::up(include_str!("migrations/0008_console.sql")),
    M::up(include_str!("migrations/0009_portal.sql")),
    M::up(include_str!("migrations/0010_oauth.sql")),
    M::up(include_str!("migrations/0011_outbox_counts.sql")),
];

/// The default log filter of the store's libraries: the migration library reports every
/// check at info level.
pub const QUIET_LOGS: &str = "rusqlite_migration=warn";

/// A storage failure, in the classes a caller handles differently: `Unavailable` may go
/// away by itself (disk full, locked, I/O) and the work is kept for later; `Conflict`
/// means another writer got there first (a unique key taken meanwhile) and the work is
/// decided again; `Sql` is a bug or a corrupt database. `Missing` is the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database cannot be written now: {0}")]
    Unavailable(String),
    #[error("another writer changed the same data: {0}")]
    Conflict(String),
    #[error(
        "no database at {0}: only `postdesk ingest` and `postdesk run` create one; point --config or \
         POSTDESK_DATABASE__PATH (or POSTDESK_DATABASE__URL) at the service's database (e.g. \
         /var/lib/postdesk/postdesk.db)"
    )]
    Missing(String),
    #[error("database error: {0}")]
    Sql(String),
}

impl StoreError {
    /// Whether the same work may succeed later: nothing of it is kept as failed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let transient = matches!(
            e.sqlite_error_code(),
            Some(
                ErrorCode::DiskFull
                    | ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
                    | ErrorCode::PermissionDenied
                    | ErrorCode::OutOfMemory
            )
        );
        let unique_taken = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        );
        if transient {
            StoreError::Unavailable(e.to_string())
        } else if unique_taken {
            StoreError::Conflict(e.to_string())
        } else {
            StoreError::Sql(e.to_string())
        }
    }
}

pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(Connection),
    Postgres(Box<RefCell<PgConn>>),
}

impl Store {
    /// The configured database, created and migrated if needed.
    pub fn create(database: &Database) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(path) => Store::open(path),
            Database::Postgres(config) => Store::postgres(config, true),
        }
    }

    /// The configured database as it is (migrated): only `ingest` and `run` create one.
    pub fn existing(database: &Database) -> Result<Store, StoreError> {
        match database {
            Database::Sqlite(path) => Store::open_existing(path),
            Database::Postgres(config) => Store::postgres(config, false),
        }
    }

    fn postgres(config: &PostgresConfig, create: bool) -> Result<Store, StoreError> {
        let mut conn = pg::connect(config)?;
        pg::migrate(&mut conn, create, &config.url)?;
        Ok(Store { backend: Backend::Postgres(Box::new(RefCell::new(conn))) })
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Store::setup(conn, Some(directory_of(path)))
    }

    /// Opens and migrates an existing database; a missing file is an error, not a new
    /// empty helpdesk.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
                return Err(StoreError::Missing(shown.display().to_string()));
            }
            Err(e) => return Err(StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))),
            Ok(_) => {}
        }
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Store::setup(conn, Some(directory_of(path)))
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::setup(Connection::open_in_memory()?, None)
    }

    /// Frees the memory of this connection's page cache; it fills again as it is used.
    pub fn shrink_memory(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(conn) => Ok(conn.execute_batch("PRAGMA shrink_memory")?),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// `dir` is the database's directory (none in memory). Setting the journal mode and
    /// migrating are done under an advisory lock (flock) on it — not on the file, whose
    /// POSIX locks are SQLite's: rusqlite_migration reads the schema version before its
    /// transaction, and switching a new file to WAL is refused at once (no busy wait)
    /// while another connection holds it, so two processes opening a new database at the
    /// same moment would otherwise fail ("table … already exists", "database is locked").
    fn setup(mut conn: Connection, dir: Option<&Path>) -> Result<Store, StoreError> {
        let _setting_up = dir.map(lock_directory).transpose()?;
        conn.busy_timeout(Duration::from_secs(10))?;
        register_functions(&conn)?;
        // Ingesting one message runs some thirty distinct statements; with rusqlite's
        // default of 16 cached ones, each message would parse most of them again.
        conn.set_prepared_statement_cache_capacity(64);
        // A new database gets 16 KiB pages: a message (its text, its raw bytes) fills a
        // few pages instead of a chain of overflow pages, and a batch's commit writes a
        // quarter of the frames. Measured: 6 % less CPU a message (benches/ingest.rs).
        // An existing database keeps the page size it has.
        conn.pragma_update(None, "page_size", 16384)?;
        // WAL lets the CLI read while the daemon writes; FULL makes every commit
        // durable (fsync'd) before anyone is told a message is done.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // temp_store stays at its default (files): in memory (`MEMORY`), SQLite would keep
        // statement journals in 1 KiB pieces whatever SQLITE_STMTJRNL_SPILL says
        // (.cargo/config.toml); a journal goes to a file only past that 1 MiB.
        // A group-committed batch (400 messages of ~8 KB: some 10 MB of pages written,
        // indexes included) fits the page cache, so it is not spilled to the WAL before
        // its commit. In KiB.
        conn.pragma_update(None, "cache_size", -16384)?;
        migrate(&mut conn)?;
        Ok(Store { backend: Backend::Sqlite(conn) })
    }

    /// Reads pages straight from the operating system's cache (memory-mapped) instead of
    /// copying them into this connection's own cache: for read connections that share one
    /// database, so a page read by one is not slow to read for the next.
    pub fn map_reads(&self) -> Result<(), StoreError> {
        const MAPPED_BYTES: i64 = 1 << 30;
        match &self.backend {
            Backend::Sqlite(conn) => Ok(conn.pragma_update(None, "mmap_size", MAPPED_BYTES)?),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Whether a write can be committed now: a full disk, a lock held too long or a
    /// read-only file fails here, before anything is fetched for nothing. Rewrites the
    /// schema version with its own value, so the commit writes a real page.
    pub fn check_writable(&mut self) -> Result<(), StoreError> {
        self.write(|tx| match tx.conn {
            sql::Conn::Sqlite(conn) => {
                let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok(conn.pragma_update(None, "user_version", version)?)
            }
            sql::Conn::Postgres(_) => tx.execute_batch(pg::TOUCH_SCHEMA_VERSION),
        })
    }

    /// Runs `f` in one transaction: a consistent snapshot while the daemon writes.
    pub fn read<T, E: From<StoreError>>(&mut self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        self.transaction(Mode::Read, f)
    }

    /// Runs `f` in one transaction that holds the write lock from the start, so checks
    /// and writes see the same data, and a command that reads before it writes never
    /// fails to upgrade a snapshot the daemon has moved past (`SQLITE_BUSY_SNAPSHOT`).
    /// On PostgreSQL every write transaction takes the same advisory lock first: one
    /// writer at a time across all daemons and consoles, as with SQLite, so the outcomes
    /// are the same and no transaction fails for a conflict it could not see. Nothing is
    /// written when `f` fails.
    pub fn write<T, E: From<StoreError>>(&mut self, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        self.transaction(Mode::Write, f)
    }

    /// `write`, committed without waiting for the disk (`synchronous=NORMAL` for this one
    /// transaction): it survives a crash of the process at once, and a crash of the machine
    /// only once a later `write` or batch commits. For records whose loss costs a repeated
    /// attempt, never a message: that an acknowledgement was sent.
    pub fn write_unsynced<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                let result = self.write(f);
                if let Backend::Sqlite(conn) = &self.backend {
                    conn.pragma_update(None, "synchronous", "FULL")?;
                }
                result
            }
            Backend::Postgres(_) => self.transaction(Mode::WriteUnsynced, f),
        }
    }

    fn transaction<T, E: From<StoreError>>(&mut self, mode: Mode, f: impl FnOnce(&Tx) -> Result<T, E>) -> Result<T, E> {
        match &mut self.backend {
            Backend::Sqlite(conn) => {
                let behavior = match mode {
                    Mode::Read => TransactionBehavior::Deferred,
                    Mode::Write | Mode::WriteUnsynced => TransactionBehavior::Immediate,
                };
                let tx = conn.transaction_with_behavior(behavior).map_err(StoreError::from)?;
                let value = f(&Tx { conn: sql::Conn::Sqlite(&tx) })?;
                tx.commit().map_err(StoreError::from)?;
                Ok(value)
            }
            Backend::Postgres(pg) => {
                let open = pg::Open::begin(pg, mode.postgres_begin())?;
                let value = f(&Tx { conn: sql::Conn::Postgres(pg) })?;
                open.commit()?;
                Ok(value)
            }
        }
    }

    /// Begins a group-committed batch (see `Batch`).
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        match &mut self.backend {
            Backend::Sqlite(conn) => Ok(Batch::Sqlite(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)),
            Backend::Postgres(pg) => Ok(Batch::Postgres(pg::Open::begin(pg, Mode::Write.postgres_begin())?)),
        }
    }
}

#[cfg(test)]
impl Store {
    /// The connection outside any transaction, for tests of single statements.
    pub(crate) fn test_tx(&self) -> Tx<'_> {
        match &self.backend {
            Backend::Sqlite(conn) => Tx::sqlite(conn),
            Backend::Postgres(pg) => Tx { conn: sql::Conn::Postgres(pg) },
        }
    }

    /// The SQL of each statement of the SQLite connection (those rusqlite caches among
    /// them) that SQLite had to prepare again since it was first prepared.
    pub(crate) fn prepared_again(&self) -> Vec<String> {
        use rusqlite::ffi;
        let Backend::Sqlite(conn) = &self.backend else { return Vec::new() };
        let mut again = Vec::new();
        // SAFETY: the connection outlives this loop, nothing else uses it meanwhile, and
        // each statement pointer comes from sqlite3_next_stmt on it.
        unsafe {
            let db = conn.handle();
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                if ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0) > 0 {
                    again.push(std::ffi::CStr::from_ptr(ffi::sqlite3_sql(stmt)).to_string_lossy().into_owned());
                }
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        again
    }
}

/// What a transaction is for.
#[derive(Clone, Copy)]
enum Mode {
    Read,
    Write,
    WriteUnsynced,
}

impl Mode {
    fn postgres_begin(self) -> &'static str {
        match self {
            Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Mode::Write => pg::BEGIN_WRITE,
            Mode::WriteUnsynced => pg::BEGIN_WRITE_UNSYNCED,
        }
    }
}

/// Many messages in one write transaction, committed (and fsync'd) once; a message may run
/// in a savepoint of its own (`message`), so that one that fails is rolled back alone.
pub enum Batch<'a> {
    Sqlite(Transaction<'a>),
    Postgres(pg::Open<'a>),
}

impl Batch<'_> {
    /// Runs `f` in a savepoint: kept when it returns `Ok`, rolled back otherwise.
    pub fn message<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Batch::Sqlite(tx) => {
                let sp = tx.savepoint()?;
                let value = f(&Tx { conn: sql::Conn::Sqlite(&sp) })?;
                sp.commit()?;
                Ok(value)
            }
            Batch::Postgres(open) => open.savepoint(f),
        }
    }

    /// Runs `f` in the batch's transaction itself (after a message's savepoint was rolled
    /// back: recording why it failed).
    pub fn outside_message<T>(&self, f: impl FnOnce(&Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Batch::Sqlite(tx) => f(&Tx { conn: sql::Conn::Sqlite(tx) }),
            Batch::Postgres(open) => f(&open.tx()),
        }
    }

    pub fn commit(self) -> Result<(), StoreError> {
        match self {
            Batch::Sqlite(tx) => Ok(tx.commit()?),
            Batch::Postgres(open) => open.commit(),
        }
    }
}

/// The time by which claims and leases are given and compared when several machines
/// share the database: PostgreSQL's clock (when the transaction began), so that a
/// machine whose clock is ahead does not take a lease still held; on SQLite, one
/// machine's, this machine's.
pub fn clock(tx: &Tx) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    if tx.dialect() == sql::Dialect::Sqlite {
        return Ok(chrono::Utc::now());
    }
    let micros: i64 = tx.query_row("SELECT CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)", &(), |r| r.get(0))?;
    chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Sql(format!("the server's clock: {micros}")))
}

/// Tickets opened today (UTC) and acknowledgements waiting, for the daemon's status line
/// and metrics.
pub fn counts(tx: &Tx, today: chrono::NaiveDate) -> Result<(i64, i64), StoreError> {
    let today = today.format("%Y-%m-%d").to_string();
    let tickets = tx.query_row("SELECT COUNT(*) FROM tickets WHERE day = ?1", &[today], |r| r.get(0))?;
    let waiting = tx.query_row("SELECT COUNT(*) FROM outbox WHERE state = 'queued'", &(), |r| r.get(0))?;
    Ok((tickets, waiting))
}

/// A column built with `json_group_array`, as a list.
fn string_list(r: &Row, idx: usize) -> Result<Vec<String>, StoreError> {
    let text: String = r.get(idx)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Sql(format!("column {idx} is not a JSON list: {e}")))
}

fn directory_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Brings the schema up to date (under `setup`'s lock).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    Migrations::from_slice(MIGRATIONS).to_latest(conn).map_err(|e| match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => StoreError::from(err),
        other => StoreError::Unavailable(format!("cannot migrate the database: {other}")),
    })
}

/// An exclusive advisory lock on a directory, released when the handle is dropped.
fn lock_directory(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    let unavailable = |e: std::io::Error| StoreError::Unavailable(format!("cannot lock {}: {e}", dir.display()));
    let handle = std::fs::File::open(dir).map_err(unavailable)?;
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    if unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(unavailable(std::io::Error::last_os_error()));
    }
    Ok(handle)
}

/// Runs the statements of a merge in order, each with `?1` = from and `?2` = into
/// (a statement may use only `?1`).
fn run_merge(tx: &Tx, statements: &[&str], from: i64, into: i64) -> Result<(), StoreError> {
    let ids = [from, into];
    for statement in statements {
        tx.execute(statement, &ids[..sql::placeholder_count(statement)])?;
    }
    Ok(())
}

/// Text folded for case-insensitive matching across all of Unicode (SQLite's own
/// `lower()` and `NOCASE` know only ASCII): canonical composition, so that a decomposed
/// "Ä" (as macOS types it) is the composed one, then full case folding ("ß" = "ss");
/// registered as the SQL function `fold`.
pub fn fold(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    caseless::default_case_fold_str(&text.nfc().collect::<String>()).nfc().collect()
}

/// The key names sort by: folded, compatibility-decomposed and without accents, so that
/// "Ångström" sorts with "Andersen" and "Zoë" with "Zoe"; registered as `sort_key`.
pub fn sort_key(text: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    fold(text).nfkd().filter(|c| !is_combining_mark(*c)).collect()
}

/// `fold` and `sort_key` for SQL: queries, migrations and the triggers that keep the
/// customers' sort and search keys call them, so every connection has them.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    for (name, f) in [("fold", fold as fn(&str) -> String), ("sort_key", sort_key)] {
        conn.create_scalar_function(
            name,
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|t| f(&t))),
        )?;
    }
    Ok(())
}

/// The conditions of a list query that its filter asks for, and their values in order:
/// only what is asked for is in the SQL, so that SQLite picks the index that serves it.
#[derive(Default)]
pub(crate) struct Where {
    conditions: Vec<&'static str>,
    values: Vec<Box<dyn ToValue>>,
}

impl Where {
    /// A condition with one `?` per value, in order.
    fn and(&mut self, condition: &'static str, values: Vec<Box<dyn ToValue>>) -> &mut Self {
        self.conditions.push(condition);
        self.values.extend(values);
        self
    }

    /// `and`, when `value` is given: a condition with one `?`, or several for the same value.
    fn and_if<T: ToValue + Clone + 'static>(&mut self, condition: &'static str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            let count = condition.matches('?').count();
            self.and(condition, (0..count).map(|_| Box::new(v.clone()) as Box<dyn ToValue>).collect());
        }
        self
    }

    /// ` WHERE a AND b` (nothing without conditions).
    fn sql(&self) -> String {
        match self.conditions.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", self.conditions.join(" AND ")),
        }
    }

    fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// RFC 3339 UTC with seconds, the one timestamp format stored.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::Seen;

    /// A bare connection as `Store::open` prepares it for the migrations.
    fn bare() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        conn
    }

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).to_latest(&mut bare()).unwrap();
    }

    /// Counted for every message that arrives: the outbox rows are never read for it.
    #[test]
    fn recent_acknowledgements_are_counted_from_an_index_alone() {
        let store = Store::open_in_memory().unwrap();
        for sql in ["recipient_key", "recipient_domain"].map(|column| ingest::recent_acks_sql(column, 10)) {
            let plan = store
                .test_tx()
                .query_all(&format!("EXPLAIN QUERY PLAN {sql}"), sql::params!["a@b.example", "2026-11-23"], |r| {
                    r.get::<String>(3)
                })
                .unwrap()
                .join("; ");
            assert!(plan.contains("USING COVERING INDEX outbox_recipient_"), "{sql}: {plan}");
        }
    }

    /// The compile-time options of .cargo/config.toml reached the bundled SQLite (a
    /// build from another directory would not read that file).
    #[test]
    fn sqlite_is_built_with_our_options() {
        let store = Store::open_in_memory().unwrap();
        let options = store.test_tx().query_all("PRAGMA compile_options", &(), |r| r.get::<String>(0)).unwrap();
        for option in ["DEFAULT_MEMSTATUS=0", "STMTJRNL_SPILL=1048576"] {
            assert!(options.iter().any(|o| o == option), "{option} not in {options:?}");
        }
    }

    /// New databases get 16 KiB pages (see `Store::setup`).
    #[test]
    fn a_new_database_has_16_kib_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let size: i64 = store.test_tx().query_row("PRAGMA page_size", &(), |r| r.get(0)).unwrap();
        assert_eq!(size, 16384);
    }

    #[test]
    fn opens_in_wal_mode_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let tx = store.test_tx();
        let mode: String = tx.query_row("PRAGMA journal_mode", &(), |r| r.get(0)).unwrap();
        let fk: i64 = tx.query_row("PRAGMA foreign_keys", &(), |r| r.get(0)).unwrap();
        assert_eq!((mode.as_str(), fk), ("wal", 1));
    }

    /// A database of schema 2 keeps its data through migration 3: addresses on tickets
    /// back-filled, outbox rows copied with their cap keys, and an article stored
    /// without a content digest still recognised as a duplicate from its raw bytes.
    #[test]
    fn migration_3_keeps_and_back_fills() {
        let mut conn = bare();
        let migrations = Migrations::from_slice(MIGRATIONS);
        migrations.to_version(&mut conn, 2).unwrap();
        let raw = b"From: Alice <Alice@Acme.example>\r\nSubject: s\r\nMessage-ID: <m1@acme.example>\r\n\r\nbody\r\n";
        conn.execute_batch(
            "INSERT INTO tickets (id, number, day, seq, subject, state, customer_email, mailbox, ack, created_at,
                 updated_at)
             VALUES (1, '2026112310000012', '2026-11-23', 1, 's', 'new', 'alice@acme.example', 'x', 'queued', 't', 't');
             INSERT INTO articles (id, ticket_id, direction, message_key, message_id, from_addr, to_addrs, cc_addrs,
                 subject, body_text, classification, created_at)
             VALUES (1, 1, 'in', 'mid:m1@acme.example', 'm1@acme.example', 'Alice@Acme.example',
                 'support@helpdesk.example, Bob@acme.example', 'carol@partner.example', 's', 'body', '', 't');
             INSERT INTO outbox (ticket_id, recipient, sender, subject, body_text, message_id, refs, state,
                 next_attempt_at, created_at)
             VALUES (1, 'alice@acme.example', 'support@helpdesk.example', 's', 'b', 'ack.2026112310000012@helpdesk.example',
                 '', 'sent', 't', 't');",
        )
        .unwrap();
        conn.execute("INSERT INTO raw_messages (article_id, raw) VALUES (1, ?1)", [&raw[..]]).unwrap();
        migrations.to_latest(&mut conn).unwrap();

        let addresses: Vec<String> = conn
            .prepare("SELECT email FROM ticket_addresses WHERE ticket_id = 1 ORDER BY email")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            addresses,
            ["alice@acme.example", "bob@acme.example", "carol@partner.example", "support@helpdesk.example"]
        );
        let row: (String, String, String) = conn
            .query_row("SELECT recipient_key, recipient_domain, state FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(row, ("alice@acme.example".to_owned(), "acme.example".to_owned(), "sent".to_owned()));
        conn.execute("UPDATE outbox SET state = 'bounced'", []).unwrap();

        let digest = crate::core::identity::content_digest(raw);
        let again = [&b"Received: from mx2\r\n"[..], raw].concat();
        assert_eq!(
            find_duplicate(&Tx::sqlite(&conn), Some("m1@acme.example"), &digest, &again).unwrap(),
            Seen::Duplicate(1, "2026112310000012".to_owned())
        );
        let other = crate::core::identity::content_digest(b"From: x@y.example\r\n\r\nother\r\n");
        assert_eq!(
            find_duplicate(&Tx::sqlite(&conn), Some("m1@acme.example"), &other, b"").unwrap(),
            Seen::ReusedMessageId("2026112310000012".to_owned())
        );
        assert_eq!(find_duplicate(&Tx::sqlite(&conn), Some("m2@acme.example"), &other, b"").unwrap(), Seen::New);
    }

    /// The counter starts where the tickets of each day left off, and a number another
    /// writer took meanwhile is a conflict (decided again), not a failed message.
    #[test]
    fn ticket_numbers_come_from_the_day_counter() {
        let mut conn = bare();
        let migrations = Migrations::from_slice(MIGRATIONS);
        migrations.to_version(&mut conn, 5).unwrap();
        conn.execute_batch(
            "INSERT INTO tickets (number, day, seq, subject, state, mailbox, ack, created_at, updated_at)
             VALUES ('n1', '2026-11-23', 1, 's', 'new', 'x', 'queued', 't', 't'),
                    ('n3', '2026-11-23', 3, 's', 'new', 'x', 'queued', 't', 't');",
        )
        .unwrap();
        migrations.to_latest(&mut conn).unwrap();
        let tx = Tx::sqlite(&conn);
        assert!(ingest::take_number(&tx, "2026-11-23", 3).unwrap_err().is_transient(), "taken");
        ingest::take_number(&tx, "2026-11-23", 4).unwrap();
        let err = ingest::take_number(&tx, "2026-11-23", 4).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        ingest::take_number(&tx, "2026-11-24", 1).unwrap();
    }

    /// Migration 8 gives the customers and tickets there are their kept keys and counts.
    #[test]
    fn migration_8_keys_and_counts_what_is_there() {
        let mut conn = bare();
        let migrations = Migrations::from_slice(MIGRATIONS);
        migrations.to_version(&mut conn, 7).unwrap();
        conn.execute_batch(
            "INSERT INTO customer_users (id, name, created_at) VALUES (1, 'Zoë Ångström', 't'), (2, NULL, 't');
             INSERT INTO customer_emails (email, customer_id, is_primary)
                 VALUES ('zoe@acme.example', 1, 1), ('zoe@home.example', 1, 0), ('bob@acme.example', 2, 1);
             INSERT INTO tickets (number, day, seq, subject, state, customer_id, mailbox, ack, created_at, updated_at)
                 VALUES ('n1', '2026-11-23', 1, 's', 'new', 1, 'x', 'queued', 't', 't'),
                        ('n2', '2026-11-23', 2, 's', 'closed', 1, 'x', 'queued', 't', 't');",
        )
        .unwrap();
        migrations.to_latest(&mut conn).unwrap();
        let tx = Tx::sqlite(&conn);
        let keys: Vec<(String, i64)> = conn
            .prepare("SELECT sort_name, ticket_count FROM customer_users ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys, [(sort_key("Zoë Ångström"), 2), ("bob@acme.example".to_owned(), 0)]);
        let found = customers::list(
            &tx,
            &customers::Filter { search: Some(customers::search(&tx, "HOME.EXAMPLE").unwrap()), ..Default::default() },
        );
        assert_eq!(found.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [1]);
        assert_eq!(customers::count_with_tickets(&tx, &customers::Filter::default()).unwrap(), (2, 1));
        let mut counts = tickets::count_by_state(&tx, &tickets::Filter::default()).unwrap();
        counts.retain(|(_, n)| *n > 0);
        counts.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(counts, [(crate::core::route::State::Closed, 1), (crate::core::route::State::New, 1)]);
    }

    #[test]
    fn names_match_and_sort_across_unicode() {
        assert_eq!(fold("ÅNGSTRÖM"), fold("Ångström"));
        assert_eq!(fold("ÄRZTE Verbund"), fold("ärzte verbund"));
        assert_eq!(fold("A\u{308}rzte"), fold("ärzte"), "decomposed");
        assert_eq!(fold("STRASSE"), fold("Straße"));
        let mut names = vec!["Zoë Ångström", "Zoe Zimmer", "zoe andersen", "Émile"];
        names.sort_by_key(|n| sort_key(n));
        assert_eq!(names, ["Émile", "zoe andersen", "Zoë Ångström", "Zoe Zimmer"]);
    }

    #[test]
    fn only_open_creates_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let err = Store::open_existing(&path).err().expect("no database yet");
        assert!(!err.is_transient() && err.to_string().starts_with("no database at "), "{err}");
        assert!(!path.exists());
        drop(Store::open(&path).unwrap());
        assert!(Store::open_existing(&path).is_ok());
    }

    #[test]
    fn an_unwritable_location_is_transient() {
        let err = Store::open(Path::new("/nonexistent-dir/x/postdesk.db")).err().expect("fails");
        assert!(err.is_transient(), "{err}");
    }
}
