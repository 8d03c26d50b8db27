//! Queries for tickets (and setting their state) and failed messages, shaped for the
//! CLI's text and JSON. A state read back is parsed: an unknown one is an error.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::{timestamp, StoreError, Tx};
use crate::core::route::State;

#[derive(Debug, Serialize)]
pub struct TicketSummary {
    pub number: String,
    pub subject: String,
    pub state: State,
    pub customer_email: Option<String>,
    pub organisation: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub respond_by: Option<String>,
    pub articles: i64,
    /// `queued`, `sent`, `failed`, `bounced`, or why no acknowledgement was queued.
    pub ack: String,
    /// The ticket this one's first message pointed at (by tag or reference) but whose
    /// sender may not write into it: for an agent to merge by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referred_ticket: Option<String>,
    /// The receiving server we trust recorded dmarc=fail for its first message.
    pub unauthenticated: bool,
}

#[derive(Debug, Serialize)]
pub struct AttachmentInfo {
    pub filename: String,
    pub content_type: String,
    pub size: i64,
}

#[derive(Debug, Serialize)]
pub struct Article {
    pub direction: String,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub to: String,
    pub subject: String,
    pub message_id: Option<String>,
    pub classification: Vec<String>,
    pub created_at: String,
    /// For agents only (e.g. a bounce of our acknowledgement).
    pub internal: bool,
    pub body: String,
    pub attachments: Vec<AttachmentInfo>,
}

#[derive(Debug, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub summary: TicketSummary,
    pub article_list: Vec<Article>,
}

const SUMMARY_SELECT: &str = "
    SELECT t.number, t.subject, t.state, t.customer_email, o.name, t.created_at, t.updated_at, t.respond_by,
           (SELECT COUNT(*) FROM articles a WHERE a.ticket_id = t.id),
           CASE WHEN t.ack = 'queued'
                THEN COALESCE((SELECT x.state FROM outbox x WHERE x.ticket_id = t.id ORDER BY x.id LIMIT 1), 'queued')
                ELSE t.ack END,
           t.id, t.referred_ticket, t.unauthenticated
    FROM tickets t LEFT JOIN organisations o ON o.id = t.organisation_id";

fn summary_row(r: &Row) -> rusqlite::Result<TicketSummary> {
    Ok(TicketSummary {
        number: r.get(0)?,
        subject: r.get(1)?,
        state: state(r, 2)?,
        customer_email: r.get(3)?,
        organisation: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        respond_by: r.get(7)?,
        articles: r.get(8)?,
        ack: r.get(9)?,
        referred_ticket: r.get(11)?,
        unauthenticated: r.get(12)?,
    })
}

/// A ticket state column: an unknown value is an error, never silently some other state.
/// (`ingest::known_ticket` reads the same column the same way.)
pub(super) fn state(r: &Row, idx: usize) -> rusqlite::Result<State> {
    let text: String = r.get(idx)?;
    State::parse(&text).ok_or_else(|| {
        let unknown = format!("unknown ticket state {text:?}");
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, unknown.into())
    })
}

/// Which tickets `list` returns; every field narrows the list.
#[derive(Debug, Default)]
pub struct Filter {
    pub state: Option<State>,
    pub organisation_id: Option<i64>,
    pub customer_id: Option<i64>,
    /// What this customer user may see: their own tickets and those of their primary
    /// and linked organisations.
    pub visible_to: Option<i64>,
    /// Tickets not closed whose `respond_by` is before this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// Tickets created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Text in the subject or a body of the ticket, case-insensitive (all of Unicode).
    pub search: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

/// The tickets a filter selects, newest first.
pub fn list(tx: &Tx<'_>, filter: &Filter) -> Result<Vec<TicketSummary>, StoreError> {
    let conn = tx.conn();
    let sql = format!(
        "{SUMMARY_SELECT}
         WHERE (?1 IS NULL OR t.state = ?1)
           AND (?2 IS NULL OR t.organisation_id = ?2)
           AND (?3 IS NULL OR t.customer_id = ?3)
           AND (?4 IS NULL OR t.customer_id = ?4
                OR t.organisation_id IN (SELECT organisation_id FROM customer_users WHERE id = ?4
                                         UNION SELECT organisation_id FROM customer_links WHERE customer_id = ?4))
           AND (?5 IS NULL OR (t.state <> 'closed' AND t.respond_by < ?5))
           AND (?6 IS NULL OR t.created_at >= ?6)
           AND (?7 IS NULL OR instr(fold(t.subject), ?7) > 0
                OR EXISTS (SELECT 1 FROM articles a WHERE a.ticket_id = t.id
                           AND (instr(fold(a.subject), ?7) > 0 OR instr(fold(a.body_text), ?7) > 0)))
         ORDER BY t.id DESC
         LIMIT ?8"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(
            params![
                filter.state.map(State::as_str),
                filter.organisation_id,
                filter.customer_id,
                filter.visible_to,
                filter.overdue_at.map(timestamp),
                filter.since.map(timestamp),
                filter.search.as_deref().map(super::fold),
                filter.limit.map_or(-1, i64::from)
            ],
            summary_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn set_state(tx: &Tx<'_>, number: &str, state: State, now: DateTime<Utc>) -> Result<(), StoreError> {
    let conn = tx.conn();
    conn.execute(
        "UPDATE tickets SET state = ?1, updated_at = ?2 WHERE number = ?3",
        params![state.as_str(), timestamp(now), number],
    )?;
    Ok(())
}

/// One ticket as `list` shows it.
pub fn summary(tx: &Tx<'_>, number: &str) -> Result<Option<TicketSummary>, StoreError> {
    let conn = tx.conn();
    let sql = format!("{SUMMARY_SELECT} WHERE t.number = ?1");
    Ok(conn.query_row(&sql, [number], summary_row).optional()?)
}

pub fn show(tx: &Tx<'_>, number: &str) -> Result<Option<TicketDetail>, StoreError> {
    let conn = tx.conn();
    let sql = format!("{SUMMARY_SELECT} WHERE t.number = ?1");
    let Some((summary, id)) =
        conn.query_row(&sql, [number], |r| Ok((summary_row(r)?, r.get::<_, i64>(10)?))).optional()?
    else {
        return Ok(None);
    };
    Ok(Some(TicketDetail { summary, article_list: articles(conn, id)? }))
}

fn articles(conn: &Connection, ticket_id: i64) -> Result<Vec<Article>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, direction, from_addr, from_name, to_addrs, subject, message_id, classification, created_at,
                body_text, internal
         FROM articles WHERE ticket_id = ?1 ORDER BY id",
    )?;
    let mut files = conn.prepare("SELECT filename, content_type, size FROM attachments WHERE article_id = ?1")?;
    let rows: Vec<(i64, Article)> = stmt
        .query_map([ticket_id], |r| {
            let classification: String = r.get(7)?;
            Ok((
                r.get(0)?,
                Article {
                    direction: r.get(1)?,
                    from: r.get(2)?,
                    from_name: r.get(3)?,
                    to: r.get(4)?,
                    subject: r.get(5)?,
                    message_id: r.get(6)?,
                    classification: classification.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect(),
                    created_at: r.get(8)?,
                    internal: r.get(10)?,
                    body: r.get(9)?,
                    attachments: Vec::new(),
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, mut article)| {
            article.attachments = files
                .query_map(params![id], |r| {
                    Ok(AttachmentInfo { filename: r.get(0)?, content_type: r.get(1)?, size: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?;
            Ok(article)
        })
        .collect()
}

/// The bytes of one article as they arrived: `None` when the ticket or article does not
/// exist (articles count from 1, oldest first) or the article was written by us.
pub fn raw_article(tx: &Tx<'_>, number: &str, article: u32) -> Result<Option<Vec<u8>>, StoreError> {
    let conn = tx.conn();
    let sql = "SELECT r.raw FROM articles a JOIN tickets t ON t.id = a.ticket_id
               JOIN raw_messages r ON r.article_id = a.id
               WHERE t.number = ?1 ORDER BY a.id LIMIT 1 OFFSET ?2";
    let offset = i64::from(article.saturating_sub(1));
    Ok(conn.query_row(sql, params![number, offset], |r| r.get(0)).optional()?)
}

/// Every attachment of a ticket with its bytes, oldest article first.
pub fn attachments(tx: &Tx<'_>, number: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let conn = tx.conn();
    let sql = "SELECT f.filename, f.content FROM attachments f JOIN articles a ON a.id = f.article_id
               JOIN tickets t ON t.id = a.ticket_id WHERE t.number = ?1 ORDER BY a.id, f.id";
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([number], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    Ok(rows)
}

#[derive(Debug, Serialize)]
pub struct FailedMessage {
    pub id: i64,
    /// Where it came from: a file path, `stdin`, or `mailbox UID n`.
    pub origin: String,
    /// Its identity in the ledger.
    pub source: String,
    pub reason: String,
    pub size: i64,
    pub attempts: i64,
    pub created_at: String,
    pub updated_at: String,
}

const FAILED_COLUMNS: &str = "id, origin, source, reason, size, attempts, created_at, updated_at";

fn failed_message(r: &Row) -> rusqlite::Result<FailedMessage> {
    Ok(FailedMessage {
        id: r.get(0)?,
        origin: r.get(1)?,
        source: r.get(2)?,
        reason: r.get(3)?,
        size: r.get(4)?,
        attempts: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

pub fn failed(tx: &Tx<'_>) -> Result<Vec<FailedMessage>, StoreError> {
    let conn = tx.conn();
    let mut stmt = conn.prepare(&format!("SELECT {FAILED_COLUMNS} FROM failed_messages ORDER BY id"))?;
    let rows = stmt.query_map([], failed_message)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// One failed message with its raw bytes.
pub fn failed_one(tx: &Tx<'_>, id: i64) -> Result<Option<(FailedMessage, Vec<u8>)>, StoreError> {
    let conn = tx.conn();
    let sql = format!("SELECT {FAILED_COLUMNS}, raw FROM failed_messages WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], |r| Ok((failed_message(r)?, r.get(8)?))).optional()?)
}

/// The ids of every failed message, oldest first.
pub fn failed_ids(tx: &Tx<'_>) -> Result<Vec<i64>, StoreError> {
    let conn = tx.conn();
    let mut stmt = conn.prepare("SELECT id FROM failed_messages ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A state this build does not know (written by a newer one, or by hand past the
    /// CHECK constraint) is an error, never shown as some other state.
    #[test]
    fn an_unknown_state_is_an_error() {
        let mut store = Store::open_in_memory().unwrap();
        store.conn.pragma_update(None, "ignore_check_constraints", true).unwrap();
        let mut read = |state: &str| {
            store.write(|tx| {
                tx.conn().execute(
                    "INSERT OR REPLACE INTO tickets (id, number, day, seq, subject, state, mailbox, ack, created_at,
                         updated_at)
                     VALUES (1, 'n1', '2026-11-23', 1, 's', ?1, 'x', 'queued', 't', 't')",
                    [state],
                )?;
                Ok::<_, StoreError>((
                    summary(tx, "n1").map(|t| t.map(|t| t.state)),
                    list(tx, &Filter::default()).map(drop),
                ))
            })
        };
        let (one, all) = read("pending").unwrap();
        assert_eq!((one.unwrap(), all.is_ok()), (Some(State::Pending), true));
        let (one, all) = read("escalated").unwrap();
        for err in [one.unwrap_err(), all.unwrap_err()] {
            assert!(err.to_string().contains("unknown ticket state \"escalated\""), "{err}");
        }
    }
}
