//! Agents of the web console and their sessions. SQL only: who may sign in, and what a
//! role may do, is decided by `desk::agents`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{params, Row};
use super::{timestamp, StoreError, Tx};

#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
    #[serde(skip)]
    pub password_hash: String,
}

const SELECT: &str = "SELECT id, email, name, role, disabled, created_at, password_hash FROM agents";

fn agent(r: &Row) -> Result<AgentRow, StoreError> {
    Ok(AgentRow {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
        disabled: r.get(4)?,
        created_at: r.get(5)?,
        password_hash: r.get(6)?,
    })
}

pub fn create(
    tx: &Tx<'_>,
    email: &str,
    name: &str,
    role: &str,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let sql = "INSERT INTO agents (email, name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
               RETURNING id";
    tx.query_row(sql, params![email, name, role, password_hash, timestamp(now)], |r| r.get(0))
}

/// Every agent, by name.
pub fn list(tx: &Tx<'_>) -> Result<Vec<AgentRow>, StoreError> {
    let sql = format!("{SELECT} ORDER BY sort_key(name), email");
    let rows = tx.query_all(&sql, &(), agent)?;
    Ok(rows)
}

pub fn by_email(tx: &Tx<'_>, email: &str) -> Result<Option<AgentRow>, StoreError> {
    let sql = format!("{SELECT} WHERE email = ?1");
    tx.query_opt(&sql, &[email], agent)
}

pub fn by_id(tx: &Tx<'_>, id: i64) -> Result<Option<AgentRow>, StoreError> {
    let sql = format!("{SELECT} WHERE id = ?1");
    tx.query_opt(&sql, &[id], agent)
}

pub fn set_password(tx: &Tx<'_>, id: i64, password_hash: &str) -> Result<(), StoreError> {
    tx.execute("UPDATE agents SET password_hash = ?1 WHERE id = ?2", params![password_hash, id])?;
    Ok(())
}

pub fn set_disabled(tx: &Tx<'_>, id: i64, disabled: bool) -> Result<(), StoreError> {
    tx.execute("UPDATE agents SET disabled = ?1 WHERE id = ?2", params![disabled, id])?;
    Ok(())
}

pub fn create_session(
    tx: &Tx<'_>,
    token_hash: &str,
    agent_id: i64,
    csrf: &str,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sessions (token_hash, agent_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, agent_id, csrf, timestamp(now), timestamp(expires)],
    )?;
    Ok(())
}

/// The agent and CSRF token of a session that has not expired, of an agent not disabled.
pub fn session(tx: &Tx<'_>, token_hash: &str, now: DateTime<Utc>) -> Result<Option<(AgentRow, String)>, StoreError> {
    let sql = "SELECT a.id, a.email, a.name, a.role, a.disabled, a.created_at, a.password_hash, s.csrf
               FROM sessions s JOIN agents a ON a.id = s.agent_id
               WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND a.disabled = 0";

    tx.query_opt(sql, params![token_hash, timestamp(now)], |r| Ok((agent(r)?, r.get(7)?)))
}

pub fn delete_session(tx: &Tx<'_>, token_hash: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM sessions WHERE token_hash = ?1", &[token_hash])?;
    Ok(())
}

/// Ends every session of an agent (a new password, disabling).
pub fn delete_sessions(tx: &Tx<'_>, agent_id: i64) -> Result<usize, StoreError> {
    tx.execute("DELETE FROM sessions WHERE agent_id = ?1", &[agent_id])
}

pub fn delete_expired_sessions(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<usize, StoreError> {
    tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", &[timestamp(now)])
}
