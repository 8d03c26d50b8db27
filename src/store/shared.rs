//! The one store handle a running daemon shares between its tasks (mailbox loops, the
//! acknowledgement sender, the status line, the metrics endpoint, later web handlers).
//! SQLite has one writer at a time, so every write goes through one connection; reads
//! use a few connections of their own (the console's pages run side by side on every
//! core) and, in WAL mode, never wait behind a write. Each call runs on
//! a blocking thread, so a commit's fsync never holds up the async tasks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{Store, StoreError, Tx};
use crate::config::Database;

/// Read connections: more than the cores of a small server, so that a slow page does not
/// hold up the others.
const READERS: usize = 4;

/// Cheap to clone: every clone uses the same connections.
#[derive(Clone)]
pub struct SharedStore {
    writer: Arc<Mutex<Store>>,
    readers: Arc<Readers>,
}

struct Readers {
    connections: Vec<Mutex<Store>>,
    /// Where the next read starts looking for a free connection.
    next: AtomicUsize,
}

impl SharedStore {
    /// Opens (creating and migrating if needed) the configured database, on a blocking
    /// thread: connecting to PostgreSQL blocks.
    pub async fn open(database: &Database) -> Result<SharedStore, StoreError> {
        let database = database.clone();
        tokio::task::spawn_blocking(move || SharedStore::open_blocking(&database))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    /// `open`, from a thread that may block (not a task of an async runtime with PostgreSQL).
    pub fn open_blocking(database: &Database) -> Result<SharedStore, StoreError> {
        let writer = Store::create(database)?;
        let connections = (0..READERS)
            .map(|_| {
                let reader = Store::existing(database)?;
                reader.map_reads()?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, StoreError>>()?;
        let readers = Readers { connections, next: AtomicUsize::new(0) };
        Ok(SharedStore { writer: Arc::new(Mutex::new(writer)), readers: Arc::new(readers) })
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on the read connection.
    pub async fn read<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let readers = Arc::clone(&self.readers);
        let start = readers.next.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let all = &readers.connections;
            // A free connection if there is one, else wait for the one in turn.
            let free = (0..all.len()).find_map(|i| all[(start + i) % all.len()].try_lock().ok());
            let mut store = free.unwrap_or_else(|| all[start % all.len()].lock().unwrap_or_else(|p| p.into_inner()));
            store.read(f)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    /// Runs `f` in one write transaction on the writer connection (see `Store::write`).
    pub async fn write<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        blocking(&self.writer, move |store| store.write(f)).await
    }

    /// `write` without waiting for the disk (see `Store::write_unsynced`).
    pub async fn write_unsynced<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(&self.writer, move |store| store.write_unsynced(f)).await
    }

    /// Frees what the connections' caches hold (`PRAGMA shrink_memory`); a connection
    /// in use is left alone.
    pub async fn shrink_memory(&self) -> Result<(), StoreError> {
        let (writer, readers) = (Arc::clone(&self.writer), Arc::clone(&self.readers));
        tokio::task::spawn_blocking(move || {
            let all = std::iter::once(&*writer).chain(readers.connections.iter());
            all.filter_map(|c| c.try_lock().ok()).try_for_each(|store| store.shrink_memory())
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
    }

    /// Lends the writer connection itself to `f`, for what runs its own transactions: a
    /// group-committed batch (`desk::ingest::ingest_batch`), a check that a write commits.
    pub async fn with_writer<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        blocking(&self.writer, f).await
    }
}

/// Runs `f` on `store` in a blocking thread. A panic in an earlier call leaves the
/// connection usable (its transaction was rolled back when it unwound), so a poisoned
/// lock is taken anyway.
async fn blocking<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&mut store.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{release_lease, take_lease};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_behind_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedStore::open(&Database::Sqlite(dir.path().join("t.db"))).await.unwrap();
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        store.write(move |tx| take_lease(tx, "support", "a", t(0), t(30))).await.unwrap();
        let (entered, leave) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let (entered_tx, leave_rx) = (entered.0, leave.1);
        let writer = store.clone();
        let writing = tokio::spawn(async move {
            writer
                .write(move |tx| {
                    release_lease(tx, "support", "a")?;
                    entered_tx.send(()).unwrap();
                    leave_rx.recv().unwrap();
                    Ok::<_, StoreError>(())
                })
                .await
        });
        entered.1.recv().unwrap();
        // The write transaction is open and uncommitted: a read sees the last commit.
        let holder = store.read(lease_holder).await.unwrap();
        assert_eq!(holder, Some("a".to_owned()));
        leave.0.send(()).unwrap();
        writing.await.unwrap().unwrap();
        assert_eq!(store.read(lease_holder).await.unwrap(), None);
    }

    /// Who holds the lease, read without writing.
    fn lease_holder(tx: &Tx) -> Result<Option<String>, StoreError> {
        let sql = "SELECT holder FROM mailbox_leases WHERE name = 'support'";
        tx.query_opt(sql, &(), |r| r.get(0))
    }
}
