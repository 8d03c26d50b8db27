//! What the daemon remembers about each watched mailbox, and the ledger as it sees it.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{timestamp, StoreError};

/// Whether a source identity already reached an outcome (so only its post-action is due).
pub fn is_processed(conn: &Connection, source: &str) -> Result<bool, StoreError> {
    let found =
        conn.prepare_cached("SELECT 1 FROM processed WHERE source = ?1")?.query_row([source], |_| Ok(())).optional()?;
    Ok(found.is_some())
}

/// Stores a mailbox's UIDVALIDITY; the previous value when it changed.
pub fn record_uidvalidity(conn: &Connection, mailbox: &str, uidvalidity: u32) -> Result<Option<u32>, StoreError> {
    let previous: Option<u32> = conn
        .prepare_cached("SELECT uidvalidity FROM mailbox_state WHERE name = ?1")?
        .query_row([mailbox], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO mailbox_state (name, uidvalidity) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity",
    )?
    .execute(params![mailbox, uidvalidity])?;
    Ok(previous.filter(|p| *p != uidvalidity))
}

pub fn record_poll(conn: &Connection, mailbox: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE mailbox_state SET last_poll_at = ?1 WHERE name = ?2")?
        .execute(params![timestamp(now), mailbox])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn uidvalidity_changes_are_reported() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(record_uidvalidity(store.conn(), "support", 7).unwrap(), None);
        assert_eq!(record_uidvalidity(store.conn(), "support", 7).unwrap(), None);
        assert_eq!(record_uidvalidity(store.conn(), "support", 9).unwrap(), Some(7));
    }
}
