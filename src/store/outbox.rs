//! The acknowledgement outbox: rows written in the ticket's transaction, read and
//! updated by the sender, listed and re-queued by the CLI.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{params, Row};
use super::{timestamp, StoreError, Tx};
use crate::core::ack::{Acknowledgement, MailKind};

#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: MailKind,
    /// None for mail of no ticket (a portal sign-in link, a request's confirmation).
    pub ticket: Option<String>,
    pub recipient: String,
    pub recipient_name: Option<String>,
    pub sender: String,
    pub sender_name: Option<String>,
    pub subject: String,
    #[serde(skip)]
    pub body_text: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: String,
    pub sent_at: Option<String>,
    pub created_at: String,
}

impl OutboxRow {
    /// The mail this row stands for, as the SMTP adapter sends it.
    pub fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement {
            kind: self.kind,
            to: self.recipient.clone(),
            to_name: self.recipient_name.clone(),
            from: self.sender.clone(),
            from_name: self.sender_name.clone().unwrap_or_default(),
            subject: self.subject.clone(),
            body: self.body_text.clone(),
            message_id: self.message_id.clone(),
            in_reply_to: self.in_reply_to.clone(),
            references: self.references.clone(),
        }
    }
}

const SELECT: &str = "
    SELECT o.id, t.number, o.recipient, o.recipient_name, o.sender, o.sender_name, o.subject, o.body_text,
           o.message_id, o.in_reply_to, o.refs, o.state, o.attempts, o.last_error, o.next_attempt_at, o.sent_at,
           o.created_at, o.kind
    FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id";

fn row(r: &Row) -> Result<OutboxRow, StoreError> {
    let refs: String = r.get(10)?;
    let kind: String = r.get(17)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        kind: MailKind::parse(&kind).ok_or_else(|| {
            let unknown = format!("unknown outbox kind {kind:?}");
            super::sql::invalid(17, unknown)
        })?,
        ticket: r.get(1)?,
        recipient: r.get(2)?,
        recipient_name: r.get(3)?,
        sender: r.get(4)?,
        sender_name: r.get(5)?,
        subject: r.get(6)?,
        body_text: r.get(7)?,
        message_id: r.get(8)?,
        in_reply_to: r.get(9)?,
        references: refs.split_whitespace().map(str::to_owned).collect(),
        state: r.get(11)?,
        attempts: r.get(12)?,
        last_error: r.get(13)?,
        next_attempt_at: r.get(14)?,
        sent_at: r.get(15)?,
        created_at: r.get(16)?,
    })
}

/// An agent's reply, or (without a ticket) a portal mail, into the outbox
/// (acknowledgements are queued by ingest's `apply`).
pub fn queue(
    tx: &Tx<'_>,
    ticket_id: Option<i64>,
    mail: &Acknowledgement,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    super::ingest::queue_ack(tx, ticket_id, mail, &timestamp(now))
}

/// Claims up to `limit` queued rows whose next attempt is due, oldest first, for one
/// sender: their next attempt moves to `until`, so that no other sender (another daemon
/// on the same database) sees them as due while this one tries them. The attempt's record
/// replaces the claim; a row whose sender died before recording comes back at `until`.
/// Run it in a write transaction.
pub fn claim_due(
    tx: &Tx<'_>,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let claim = "UPDATE outbox SET next_attempt_at = ?1, claimed_by = ?4
                 WHERE id IN (SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= ?2
                              ORDER BY id LIMIT ?3)
                 RETURNING id";
    let ids: Vec<i64> =
        tx.query_all(claim, params![timestamp(until), timestamp(now), limit as i64, holder], |r| r.get(0))?;
    let sql = &format!("{SELECT} WHERE o.id = ?1");
    let mut rows: Vec<OutboxRow> = ids.iter().map(|id| tx.query_row(sql, &[id], row)).collect::<Result<_, _>>()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// The senders that hold claims on queued rows now.
pub fn claim_holders(tx: &Tx<'_>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
    let sql = "SELECT DISTINCT claimed_by FROM outbox
               WHERE state = 'queued' AND claimed_by IS NOT NULL AND next_attempt_at > ?1";
    let holders = tx.query_all(sql, &[timestamp(now)], |r| r.get(0))?;
    Ok(holders)
}

/// Makes the rows `holder` claimed due now (it ended without recording them); how many.
pub fn release_claims(tx: &Tx<'_>, holder: &str, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let sql = "UPDATE outbox SET next_attempt_at = ?1, claimed_by = NULL WHERE state = 'queued' AND claimed_by = ?2";
    tx.execute(sql, params![timestamp(now), holder])
}

/// When the earliest queued row is due, if any.
pub fn next_due(tx: &Tx<'_>) -> Result<Option<String>, StoreError> {
    let sql = "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued'";
    tx.query_row(sql, &(), |r| r.get(0))
}

/// Every row, oldest first; or only the newest `limit`, newest first.
pub fn list(tx: &Tx<'_>, limit: Option<u32>) -> Result<Vec<OutboxRow>, StoreError> {
    let sql = match limit {
        None => format!("{SELECT} ORDER BY o.id"),
        Some(n) => format!("{SELECT} ORDER BY o.id DESC LIMIT {n}"),
    };
    let rows = tx.query_all(&sql, &(), row)?;
    Ok(rows)
}

/// A ticket's rows, oldest first.
pub fn of_ticket(tx: &Tx<'_>, number: &str) -> Result<Vec<OutboxRow>, StoreError> {
    let sql = format!("{SELECT} WHERE t.number = ?1 ORDER BY o.id");
    let rows = tx.query_all(&sql, &[number], row)?;
    Ok(rows)
}

/// What a portal mail's body becomes once it is sent or given up: the link in it signs
/// in, and a copy of the database must not (the tables keep only the tokens' hashes).
const SPENT_BODY: &str = "CASE WHEN ticket_id IS NULL THEN '(removed: it held a link)' ELSE body_text END";

pub fn mark_sent(tx: &Tx<'_>, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        &format!(
        "UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = ?1, last_error = NULL, claimed_by = NULL,
                body_text = {SPENT_BODY}
         WHERE id = ?2"
    ),
        params![timestamp(now), id],
    )?;
    Ok(())
}

pub fn mark_retry(tx: &Tx<'_>, id: i64, error: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2, claimed_by = NULL
         WHERE id = ?3",
        params![error, timestamp(at), id],
    )?;
    Ok(())
}

pub fn mark_failed(tx: &Tx<'_>, id: i64, error: &str) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?1, claimed_by = NULL,
                body_text = {SPENT_BODY}
         WHERE id = ?2"
    );
    tx.execute(&sql, params![error, id])?;
    Ok(())
}

/// Queues failed (or waiting) rows for an attempt now: one row, or every unsent one
/// that did not bounce (a bounced one is retried only by its id, after the address was
/// checked). Portal links are not: a given-up one has lost its link, and a customer asks
/// for a new one. How many rows were re-queued.
pub fn retry(tx: &Tx<'_>, id: Option<i64>, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let n = tx.execute(
        "UPDATE outbox SET state = 'queued', next_attempt_at = ?1
             WHERE state != 'sent' AND (CAST(?2 AS BIGINT) IS NULL OR id = ?2) AND (?2 IS NOT NULL OR state != 'bounced')
               AND ticket_id IS NOT NULL",
        params![timestamp(now), id],
    )?;
    Ok(n)
}
