//! The customer portal's sign-in links, sessions and support requests waiting for their
//! address to be confirmed. SQL only: who may sign in, and what a customer user sees, is
//! decided by `desk::portal`. Tokens are stored only as their hashes.

use chrono::{DateTime, Utc};

use super::sql::params;
use super::{timestamp, StoreError, Tx};

/// Who a link or session signs in: the customer user, and the address it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub customer_id: i64,
    pub email: String,
}

pub fn create_link(
    tx: &Tx<'_>,
    token_hash: &str,
    holder: &Holder,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO portal_links (token_hash, customer_id, email, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, holder.customer_id, holder.email, timestamp(now), timestamp(expires)],
    )?;
    Ok(())
}

/// Uses a link: its holder if it is unused and unexpired, and it is used from now on.
pub fn use_link(tx: &Tx<'_>, token_hash: &str, now: DateTime<Utc>) -> Result<Option<Holder>, StoreError> {
    let sql = "UPDATE portal_links SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
               RETURNING customer_id, email";

    tx.query_opt(sql, params![token_hash, timestamp(now)], |r| Ok(Holder { customer_id: r.get(0)?, email: r.get(1)? }))
}

pub fn create_session(
    tx: &Tx<'_>,
    token_hash: &str,
    holder: &Holder,
    csrf: &str,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO portal_sessions (token_hash, customer_id, email, csrf, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![token_hash, holder.customer_id, holder.email, csrf, timestamp(now), timestamp(expires)],
    )?;
    Ok(())
}

/// The holder and CSRF token of a session that has not expired, whose address is still
/// the customer user's (an address removed or moved to another customer ends it).
pub fn session(tx: &Tx<'_>, token_hash: &str, now: DateTime<Utc>) -> Result<Option<(Holder, String)>, StoreError> {
    let sql = "SELECT s.customer_id, s.email, s.csrf FROM portal_sessions s
               JOIN customer_emails e ON e.email = s.email AND e.customer_id = s.customer_id
               WHERE s.token_hash = ?1 AND s.expires_at > ?2";

    tx.query_opt(sql, params![token_hash, timestamp(now)], |r| {
        Ok((Holder { customer_id: r.get(0)?, email: r.get(1)? }, r.get(2)?))
    })
}

pub fn delete_session(tx: &Tx<'_>, token_hash: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM portal_sessions WHERE token_hash = ?1", &[token_hash])?;
    Ok(())
}

pub fn create_request(
    tx: &Tx<'_>,
    token_hash: &str,
    email: &str,
    raw: &[u8],
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO portal_requests (token_hash, email, raw, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, email, raw, timestamp(now), timestamp(expires)],
    )?;
    Ok(())
}

/// The message of a request that has not expired.
pub fn request(tx: &Tx<'_>, token_hash: &str, now: DateTime<Utc>) -> Result<Option<Vec<u8>>, StoreError> {
    let sql = "SELECT raw FROM portal_requests WHERE token_hash = ?1 AND expires_at > ?2";
    tx.query_opt(sql, params![token_hash, timestamp(now)], |r| r.get(0))
}

pub fn delete_request(tx: &Tx<'_>, token_hash: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM portal_requests WHERE token_hash = ?1", &[token_hash])?;
    Ok(())
}

/// Forgets expired links, sessions and requests.
pub fn delete_expired(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<(), StoreError> {
    let now = timestamp(now);
    for table in ["portal_links", "portal_sessions", "portal_requests"] {
        tx.execute(&format!("DELETE FROM {table} WHERE expires_at <= ?1"), &[&now])?;
    }
    Ok(())
}
