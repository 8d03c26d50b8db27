//! Queries for tickets (and setting their state) and failed messages, shaped for the
//! CLI's text and JSON. A state read back is parsed: an unknown one is an error.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{params, Row};
use super::{timestamp, StoreError, Tx, Where};
use crate::core::route::State;

#[derive(Debug, Serialize)]
pub struct TicketSummary {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub customer_id: Option<i64>,
    #[serde(skip)]
    pub organisation_id: Option<i64>,
    #[serde(skip)]
    pub owner_id: Option<i64>,
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
    /// The agent working the ticket.
    pub owner: Option<String>,
    /// When an agent first answered the customer.
    pub first_response_at: Option<String>,
    /// The customer wrote since an agent last opened the ticket.
    pub unread: bool,
}

#[derive(Debug, Serialize)]
pub struct AttachmentInfo {
    pub id: i64,
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
    /// For agents only (e.g. a bounce of our acknowledgement, an internal note).
    pub internal: bool,
    pub body: String,
    /// The HTML part as it arrived: shown only through a sanitiser.
    #[serde(skip)]
    pub html: Option<String>,
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
           t.id, t.referred_ticket, t.unauthenticated, g.name, t.first_response_at,
           t.customer_replied_at > COALESCE(t.agent_seen_at, ''), t.customer_id, t.organisation_id, t.owner_id
    FROM tickets t LEFT JOIN organisations o ON o.id = t.organisation_id
    LEFT JOIN agents g ON g.id = t.owner_id";

fn summary_row(r: &Row) -> Result<TicketSummary, StoreError> {
    Ok(TicketSummary {
        id: r.get(10)?,
        customer_id: r.get(16)?,
        organisation_id: r.get(17)?,
        owner_id: r.get(18)?,
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
        owner: r.get(13)?,
        first_response_at: r.get(14)?,
        unread: r.get::<Option<bool>>(15)?.unwrap_or(false),
    })
}

/// A ticket state column: an unknown value is an error, never silently some other state.
/// (`ingest::known_ticket` reads the same column the same way.)
pub(super) fn state(r: &Row, idx: usize) -> Result<State, StoreError> {
    let text: String = r.get(idx)?;
    State::parse(&text).ok_or_else(|| {
        let unknown = format!("unknown ticket state {text:?}");
        super::sql::invalid(idx, unknown)
    })
}

/// Which tickets `list` returns; every field narrows the list.
#[derive(Debug, Default)]
pub struct Filter {
    pub state: Option<State>,
    pub organisation_id: Option<i64>,
    pub customer_id: Option<i64>,
    /// What this customer user may see: their own tickets and those of their primary
    /// and linked organisations that show their tickets to their customer users
    /// (`portal_visibility`).
    pub visible_to: Option<i64>,
    /// Only the ticket of this number.
    pub number: Option<String>,
    /// Tickets not closed whose `respond_by` is before this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// Tickets created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Text in the subject or a body of the ticket, case-insensitive (all of Unicode).
    pub search: Option<String>,
    pub owner_id: Option<i64>,
    /// Only tickets after this one in the list's order: the next page.
    pub after: Option<Cursor>,
    /// At most this many, newest activity first.
    pub limit: Option<u32>,
}

/// A place in the list of tickets (newest activity first): the last ticket of a page.
/// Paging by it costs the same on page 500 as on page 1, unlike an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub updated_at: String,
    pub id: i64,
}

impl Cursor {
    pub fn of(ticket: &TicketSummary) -> Cursor {
        Cursor { updated_at: ticket.updated_at.clone(), id: ticket.id }
    }

    /// As `to_string` writes it: `<updated_at>_<id>`.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (updated_at, id) = text.rsplit_once('_')?;
        Some(Cursor { updated_at: updated_at.to_owned(), id: id.parse().ok()? })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.updated_at, self.id)
    }
}

impl Filter {
    /// The conditions of the filter but its page; its state unless `with_state` is false.
    fn conditions(&self, with_state: bool) -> Where {
        let mut w = Where::default();
        if with_state {
            w.and_if("t.state = ?", self.state.map(State::as_str));
        }
        w.and_if("t.organisation_id = ?", self.organisation_id)
            .and_if("t.customer_id = ?", self.customer_id)
            .and_if(
                "(t.customer_id = ? OR t.organisation_id IN (SELECT o.id FROM organisations o
                  WHERE o.portal_visibility = 'organisation'
                  AND o.id IN (SELECT organisation_id FROM customer_users WHERE id = ?
                               UNION SELECT organisation_id FROM customer_links WHERE customer_id = ?)))",
                self.visible_to,
            )
            .and_if("t.number = ?", self.number.clone())
            .and_if(
                "(t.state <> 'closed' AND t.first_response_at IS NULL AND t.respond_by < ?)",
                self.overdue_at.map(timestamp),
            )
            .and_if("t.created_at >= ?", self.since.map(timestamp))
            .and_if(
                "(instr(fold(t.subject), fold(?)) > 0 OR EXISTS (SELECT 1 FROM articles a WHERE a.ticket_id = t.id
                  AND (instr(fold(a.subject), fold(?)) > 0 OR instr(fold(a.body_text), fold(?)) > 0)))",
                self.search.clone(),
            )
            .and_if("t.owner_id = ?", self.owner_id);
        w
    }
}

/// The tickets a filter selects, newest activity first.
pub fn list(tx: &Tx<'_>, filter: &Filter) -> Result<Vec<TicketSummary>, StoreError> {
    let mut w = filter.conditions(true);
    if let Some(after) = &filter.after {
        let (at, id) = (after.updated_at.clone(), after.id);
        w.and("(t.updated_at, t.id) < (?, ?)", vec![Box::new(at), Box::new(id)]);
    }
    let sql = format!("{SUMMARY_SELECT}{} ORDER BY t.updated_at DESC, t.id DESC LIMIT ?", w.sql());
    let mut values = w.values;
    values.push(Box::new(filter.limit.map_or(i64::MAX, i64::from)));
    let sql = &sql;
    let rows = tx.query_all(sql, &values, summary_row)?;
    Ok(rows)
}

/// How many tickets a filter selects in each state (its own state and page aside). With
/// no filter, from the counts the triggers keep.
pub fn count_by_state(tx: &Tx<'_>, filter: &Filter) -> Result<Vec<(State, i64)>, StoreError> {
    let w = filter.conditions(false);
    let sql = match w.is_empty() {
        true => "SELECT state, tickets FROM ticket_state_counts".to_owned(),
        false => format!("SELECT t.state, COUNT(*) FROM tickets t{} GROUP BY t.state", w.sql()),
    };
    let sql = &sql;
    let rows = tx.query_all(sql, &w.values, |r| Ok((state(r, 0)?, r.get(1)?)))?;
    Ok(rows)
}

pub fn set_state(tx: &Tx<'_>, number: &str, state: State, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tickets SET state = ?1, updated_at = ?2 WHERE number = ?3",
        params![state.as_str(), timestamp(now), number],
    )?;
    Ok(())
}

/// One ticket as `list` shows it.
pub fn summary(tx: &Tx<'_>, number: &str) -> Result<Option<TicketSummary>, StoreError> {
    let sql = format!("{SUMMARY_SELECT} WHERE t.number = ?1");
    tx.query_opt(&sql, &[number], summary_row)
}

pub fn show(tx: &Tx<'_>, number: &str) -> Result<Option<TicketDetail>, StoreError> {
    let sql = format!("{SUMMARY_SELECT} WHERE t.number = ?1");
    let Some((summary, id)) = tx.query_opt(&sql, &[number], |r| Ok((summary_row(r)?, r.get::<i64>(10)?)))? else {
        return Ok(None);
    };
    Ok(Some(TicketDetail { summary, article_list: articles(tx, id)? }))
}

fn articles(tx: &Tx, ticket_id: i64) -> Result<Vec<Article>, StoreError> {
    let sql = "SELECT id, direction, from_addr, from_name, to_addrs, subject, message_id, classification, created_at,
                body_text, internal, body_html
         FROM articles WHERE ticket_id = ?1 ORDER BY id";
    let files_sql = "SELECT id, filename, content_type, size FROM attachments WHERE article_id = ?1 ORDER BY id";
    let rows: Vec<(i64, Article)> = tx.query_all(sql, &[ticket_id], |r| {
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
                html: r.get(11)?,
                attachments: Vec::new(),
            },
        ))
    })?;
    rows.into_iter()
        .map(|(id, mut article)| {
            article.attachments = tx.query_all(files_sql, params![id], |r| {
                Ok(AttachmentInfo { id: r.get(0)?, filename: r.get(1)?, content_type: r.get(2)?, size: r.get(3)? })
            })?;
            Ok(article)
        })
        .collect()
}

/// The bytes of one article as they arrived: `None` when the ticket or article does not
/// exist (articles count from 1, oldest first) or the article was written by us.
pub fn raw_article(tx: &Tx<'_>, number: &str, article: u32) -> Result<Option<Vec<u8>>, StoreError> {
    let sql = "SELECT r.raw FROM raw_messages r
               WHERE r.article_id = (SELECT a.id FROM articles a JOIN tickets t ON t.id = a.ticket_id
                                     WHERE t.number = ?1 ORDER BY a.id LIMIT 1 OFFSET ?2)";
    let offset = i64::from(article.saturating_sub(1));
    tx.query_opt(sql, params![number, offset], |r| r.get(0))
}

/// One attachment of a ticket: its name, content type and bytes.
pub fn attachment(tx: &Tx<'_>, number: &str, id: i64) -> Result<Option<(String, String, Vec<u8>)>, StoreError> {
    let sql = "SELECT f.filename, f.content_type, f.content FROM attachments f JOIN articles a ON a.id = f.article_id
               JOIN tickets t ON t.id = a.ticket_id WHERE t.number = ?1 AND f.id = ?2";
    tx.query_opt(sql, params![number, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// What an agent's reply is built from: the ticket, its customer, and the Message-IDs of
/// its mail (customer mail and ours) in order.
#[derive(Debug)]
pub struct ReplyContext {
    pub id: i64,
    pub subject: String,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub thread: Vec<String>,
    /// The customer's latest message.
    pub answering: Option<String>,
    /// The helpdesk address the acknowledgement was sent from.
    pub ack_sender: Option<String>,
}

pub fn reply_context(tx: &Tx<'_>, number: &str) -> Result<Option<ReplyContext>, StoreError> {
    let ticket = tx.query_opt(
        "SELECT t.id, t.subject, t.customer_email, c.name,
                    (SELECT o.sender FROM outbox o WHERE o.ticket_id = t.id AND o.kind = 'ack' ORDER BY o.id LIMIT 1)
             FROM tickets t LEFT JOIN customer_users c ON c.id = t.customer_id WHERE t.number = ?1",
        &[number],
        |r| {
            Ok(ReplyContext {
                id: r.get(0)?,
                subject: r.get(1)?,
                customer_email: r.get(2)?,
                customer_name: r.get(3)?,
                thread: Vec::new(),
                answering: None,
                ack_sender: r.get(4)?,
            })
        },
    )?;
    let Some(mut ticket) = ticket else {
        return Ok(None);
    };
    let sql = "SELECT message_id, ours FROM (
             SELECT message_id, created_at, 0 AS ours, id FROM articles
              WHERE ticket_id = ?1 AND message_id IS NOT NULL AND internal = 0 AND direction = 'in'
             UNION ALL
             SELECT message_id, created_at, 1, id FROM outbox WHERE ticket_id = ?1) thread
         ORDER BY created_at, ours, id";
    let thread: Vec<(String, bool)> = tx.query_all(sql, &[ticket.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    ticket.answering = thread.iter().rev().find(|(_, ours)| !ours).map(|(id, _)| id.clone());
    ticket.thread = thread.into_iter().map(|(id, _)| id).collect();
    Ok(Some(ticket))
}

/// An article an agent wrote: a reply (with our Message-ID, to the customer) or an
/// internal note (`internal`, mailed to nobody).
pub struct Outbound<'a> {
    pub ticket_id: i64,
    pub agent_id: i64,
    pub agent_name: &'a str,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub subject: &'a str,
    pub message_id: Option<&'a str>,
    pub body: &'a str,
    pub internal: bool,
}

/// Writes an agent's article; a reply also stops the first-response clock.
pub fn add_outbound(tx: &Tx<'_>, article: &Outbound, now: DateTime<Utc>) -> Result<(), StoreError> {
    let now = timestamp(now);
    tx.execute(
        "INSERT INTO articles (ticket_id, direction, message_id, from_addr, from_name, to_addrs, cc_addrs, subject,
             body_text, classification, created_at, internal, agent_id)
         VALUES (?1, 'out', ?2, ?3, ?4, ?5, '', ?6, ?7, '', ?8, ?9, ?10)",
        params![
            article.ticket_id,
            article.message_id,
            article.from,
            article.agent_name,
            article.to,
            article.subject,
            article.body,
            now,
            article.internal,
            article.agent_id
        ],
    )?;
    let first_response = if article.internal { None } else { Some(&now) };
    tx.execute(
        "UPDATE tickets SET updated_at = ?1, first_response_at = COALESCE(first_response_at, ?2) WHERE id = ?3",
        params![now, first_response, article.ticket_id],
    )?;
    Ok(())
}

/// `None` gives the ticket back to nobody.
pub fn set_owner(tx: &Tx<'_>, number: &str, owner_id: Option<i64>, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tickets SET owner_id = ?1, updated_at = ?2 WHERE number = ?3",
        params![owner_id, timestamp(now), number],
    )?;
    Ok(())
}

/// An agent opened the ticket: it is no longer marked as having news from the customer.
pub fn mark_seen(tx: &Tx<'_>, number: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tickets SET agent_seen_at = ?1 WHERE number = ?2 AND customer_replied_at > COALESCE(agent_seen_at, '')",
        params![timestamp(now), number],
    )?;
    Ok(())
}

/// Every attachment of a ticket with its bytes, oldest article first.
pub fn attachments(tx: &Tx<'_>, number: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let sql = "SELECT f.filename, f.content FROM attachments f JOIN articles a ON a.id = f.article_id
               JOIN tickets t ON t.id = a.ticket_id WHERE t.number = ?1 ORDER BY a.id, f.id";
    let rows = tx.query_all(sql, &[number], |r| Ok((r.get(0)?, r.get(1)?)))?;
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

fn failed_message(r: &Row) -> Result<FailedMessage, StoreError> {
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
    let sql = &format!("SELECT {FAILED_COLUMNS} FROM failed_messages ORDER BY id");
    let rows = tx.query_all(sql, &(), failed_message)?;
    Ok(rows)
}

/// One failed message with its raw bytes.
pub fn failed_one(tx: &Tx<'_>, id: i64) -> Result<Option<(FailedMessage, Vec<u8>)>, StoreError> {
    let sql = format!("SELECT {FAILED_COLUMNS}, raw FROM failed_messages WHERE id = ?1");
    tx.query_opt(&sql, &[id], |r| Ok((failed_message(r)?, r.get(8)?)))
}

/// The ids of every failed message, oldest first.
pub fn failed_ids(tx: &Tx<'_>) -> Result<Vec<i64>, StoreError> {
    let sql = "SELECT id FROM failed_messages ORDER BY id";
    let rows = tx.query_all(sql, &(), |r| r.get(0))?;
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
        store.test_tx().execute_batch("PRAGMA ignore_check_constraints = ON").unwrap();
        let mut read = |state: &str| {
            store.write(|tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO tickets (id, number, day, seq, subject, state, mailbox, ack, created_at,
                         updated_at)
                     VALUES (1, 'n1', '2026-11-23', 1, 's', ?1, 'x', 'queued', 't', 't')",
                    &[state],
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
