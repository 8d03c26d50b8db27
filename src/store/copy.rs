//! Copying a SQLite database into an empty PostgreSQL one (`postdesk migrate-db`): every
//! table, row by row, in one transaction; then the counts of both compared.

use super::sql::{Conn, Value};
use super::{Backend, Store, StoreError, Tx};

/// Every table that holds data, parents before children. The counts per state and of
/// customers are not copied: the target's triggers make them as the rows arrive.
const TABLES: &[&str] = &[
    "organisations",
    "organisation_domains",
    "customer_users",
    "customer_emails",
    "customer_links",
    "agents",
    "sessions",
    "tickets",
    "articles",
    "attachments",
    "raw_messages",
    "message_ids",
    "processed",
    "failed_messages",
    "mailbox_state",
    "ticket_addresses",
    "mailbox_leases",
    "ticket_counters",
    "outbox",
    "portal_links",
    "portal_sessions",
    "portal_requests",
    "oauth_tokens",
];

/// Columns the target computes itself: a customer's ticket count is counted by its
/// triggers as the tickets are copied, its sort and search keys made from its name.
const COMPUTED: &[(&str, &str)] =
    &[("customer_users", "ticket_count"), ("customer_users", "sort_name"), ("customer_users", "search_text")];

/// Tables whose ids come from an identity column, set past the copied ids.
const IDENTITIES: &[&str] =
    &["organisations", "customer_users", "agents", "tickets", "articles", "attachments", "failed_messages", "outbox"];

/// What was copied of one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Copied {
    pub table: &'static str,
    pub rows: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{table}, row {row} of the source: {error}: nothing was kept")]
    Row { table: &'static str, row: i64, error: StoreError },
    #[error("the source must be a SQLite database and the target a PostgreSQL one")]
    Backends,
    #[error("the target database is not empty (rows: {0}): migrate-db copies only into an empty database")]
    NotEmpty(String),
    #[error("after the copy, {table} has {copied} rows in the target but {expected} in the source: nothing was kept")]
    Mismatch { table: &'static str, expected: i64, copied: i64 },
    #[error("after the copy, the tickets per state differ ({expected} in the source, {copied} in the target): nothing was kept")]
    StatesDiffer { expected: String, copied: String },
}

/// Copies every row of `source` (SQLite) into `target` (PostgreSQL, migrated and empty)
/// in one transaction, committed only when every table has as many rows as in the source
/// and the tickets per state agree.
pub fn sqlite_to_postgres(source: &mut Store, target: &mut Store) -> Result<Vec<Copied>, CopyError> {
    let (Backend::Sqlite(_), Backend::Postgres(_)) = (&source.backend, &target.backend) else {
        return Err(CopyError::Backends);
    };
    source.read(|from| {
        target.write(|to| {
            refuse_non_empty(to)?;
            let copied = TABLES.iter().map(|table| copy_table(from, to, table)).collect::<Result<Vec<_>, _>>()?;
            for table in IDENTITIES {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) \
                     FROM {table}"
                );
                to.query_row(&sql, &(), |_| Ok(()))?;
            }
            for Copied { table, rows } in &copied {
                let target_rows = count(to, table)?;
                if target_rows != *rows {
                    return Err(CopyError::Mismatch { table, expected: *rows, copied: target_rows });
                }
            }
            let states = "SELECT state || ':' || tickets FROM ticket_state_counts ORDER BY state";
            let (a, b): (Vec<String>, Vec<String>) =
                (from.query_all(states, &(), |r| r.get(0))?, to.query_all(states, &(), |r| r.get(0))?);
            if a != b {
                return Err(CopyError::StatesDiffer { expected: a.join(" "), copied: b.join(" ") });
            }
            Ok(copied)
        })
    })
}

fn refuse_non_empty(to: &Tx) -> Result<(), CopyError> {
    let mut found = Vec::new();
    for table in TABLES {
        let rows = count(to, table)?;
        if rows > 0 {
            found.push(format!("{table}: {rows}"));
        }
    }
    match found.is_empty() {
        true => Ok(()),
        false => Err(CopyError::NotEmpty(found.join(", "))),
    }
}

fn count(tx: &Tx, table: &str) -> Result<i64, StoreError> {
    tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), &(), |r| r.get(0))
}

/// One table, row by row, in the source's row order.
fn copy_table(from: &Tx, to: &Tx, table: &'static str) -> Result<Copied, CopyError> {
    let Conn::Sqlite(conn) = from.conn else { unreachable!("the source is SQLite (checked by sqlite_to_postgres)") };
    let mut select = conn.prepare(&format!("SELECT * FROM {table}")).map_err(StoreError::from)?;
    let columns: Vec<(usize, String)> = select
        .column_names()
        .into_iter()
        .enumerate()
        .filter(|(_, name)| !COMPUTED.contains(&(table, name)))
        .map(|(i, name)| (i, name.to_owned()))
        .collect();
    let names: Vec<&str> = columns.iter().map(|(_, n)| n.as_str()).collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let insert = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), placeholders.join(", "));
    let mut rows = select.query([]).map_err(StoreError::from)?;
    let mut copied = 0;
    while let Some(row) = rows.next().map_err(StoreError::from)? {
        let cells = columns.iter().map(|(i, _)| row.get_ref(*i)).collect::<Result<Vec<_>, _>>();
        let cells = cells.map_err(StoreError::from)?;
        let repaired: Vec<Option<String>> = cells.iter().map(repaired_text).collect();
        let values: Vec<Value> = cells.iter().zip(&repaired).map(|(cell, text)| value(*cell, text)).collect();
        to.execute(&insert, &values).map_err(|error| CopyError::Row { table, row: copied + 1, error })?;
        copied += 1;
    }
    Ok(Copied { table, rows: copied })
}

/// Text that is not UTF-8 (written by hand or by another program: postdesk writes only
/// UTF-8), with each bad sequence as U+FFFD, for a text column that takes only UTF-8.
fn repaired_text(cell: &rusqlite::types::ValueRef<'_>) -> Option<String> {
    match cell {
        rusqlite::types::ValueRef::Text(t) if std::str::from_utf8(t).is_err() => {
            Some(String::from_utf8_lossy(t).into_owned())
        }
        _ => None,
    }
}

fn value<'a>(cell: rusqlite::types::ValueRef<'a>, repaired: &'a Option<String>) -> Value<'a> {
    use rusqlite::types::ValueRef;
    match (cell, repaired) {
        (_, Some(text)) => Value::Text(text),
        (ValueRef::Null, None) => Value::Null,
        (ValueRef::Integer(i), None) => Value::Int(i),
        (ValueRef::Real(f), None) => Value::Real(f),
        (ValueRef::Text(t), None) => Value::Text(std::str::from_utf8(t).unwrap_or_default()),
        (ValueRef::Blob(b), None) => Value::Blob(b),
    }
}
