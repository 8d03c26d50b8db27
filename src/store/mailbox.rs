//! What the daemon remembers about each watched mailbox, and the ledger as it sees it.

use chrono::{DateTime, Utc};

use super::sql::params;
use super::{timestamp, StoreError, Tx};

/// Whether a source identity already reached an outcome (so only its post-action is due).
pub fn is_processed(tx: &Tx<'_>, source: &str) -> Result<bool, StoreError> {
    let found = tx.query_opt("SELECT 1 FROM processed WHERE source = ?1", &[source], |_| Ok(()))?;
    Ok(found.is_some())
}

/// Stores a mailbox's UIDVALIDITY; the previous value when it changed.
pub fn record_uidvalidity(tx: &Tx<'_>, mailbox: &str, uidvalidity: u32) -> Result<Option<u32>, StoreError> {
    let previous: Option<u32> =
        tx.query_opt("SELECT uidvalidity FROM mailbox_state WHERE name = ?1", &[mailbox], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO mailbox_state (name, uidvalidity) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET uidvalidity = excluded.uidvalidity",
        params![mailbox, uidvalidity],
    )?;
    Ok(previous.filter(|p| *p != uidvalidity))
}

pub fn record_poll(tx: &Tx<'_>, mailbox: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute("UPDATE mailbox_state SET last_poll_at = ?1 WHERE name = ?2", params![timestamp(now), mailbox])?;
    Ok(())
}

/// Takes the lease on watching `mailbox` for `holder` until `until`, or renews it: it is
/// taken when free, already the holder's, or expired. Returns who holds it now. Run it
/// in a write transaction.
pub fn take_lease(
    tx: &Tx<'_>,
    mailbox: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<String, StoreError> {
    tx.execute(
        "INSERT INTO mailbox_leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE mailbox_leases.holder = excluded.holder OR mailbox_leases.expires_at < ?4",
        params![mailbox, holder, timestamp(until), timestamp(now)],
    )?;
    let sql = "SELECT holder FROM mailbox_leases WHERE name = ?1";
    tx.query_row(sql, &[mailbox], |r| r.get(0))
}

/// Gives the lease up at shutdown, so that another daemon need not wait for it to expire.
pub fn release_lease(tx: &Tx<'_>, mailbox: &str, holder: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM mailbox_leases WHERE name = ?1 AND holder = ?2", &[mailbox, holder])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn uidvalidity_changes_are_reported() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(record_uidvalidity(&store.test_tx(), "support", 7).unwrap(), None);
        assert_eq!(record_uidvalidity(&store.test_tx(), "support", 7).unwrap(), None);
        assert_eq!(record_uidvalidity(&store.test_tx(), "support", 9).unwrap(), Some(7));
    }

    #[test]
    fn a_lease_is_held_renewed_and_taken_over_when_it_expires() {
        let store = Store::open_in_memory().unwrap();
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let take = |who: &str, now: i64| take_lease(&store.test_tx(), "support", who, t(now), t(now + 30)).unwrap();
        assert_eq!(take("a", 0), "a");
        assert_eq!(take("b", 10), "a", "held");
        assert_eq!(take("a", 20), "a", "renewed until 50");
        assert_eq!(take("b", 45), "a");
        assert_eq!(take("b", 51), "b", "expired: taken over");
        release_lease(&store.test_tx(), "support", "a").unwrap();
        assert_eq!(take("a", 52), "b", "only the holder releases");
        release_lease(&store.test_tx(), "support", "b").unwrap();
        assert_eq!(take("a", 53), "a");
    }
}
