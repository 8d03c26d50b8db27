//! The store's half of ingesting one message: reading the facts a decision needs and
//! writing a decision. Called inside the caller's transaction (a savepoint per message).

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{timestamp, StoreError};
use crate::core::ack::AckDecision;
use crate::core::address;
use crate::core::decide::{Decision, Facts};
use crate::core::parse::{Inbound, Mailbox};
use crate::core::resolve::{Customer, CustomerFact, OrgFact, Organisation, Sender, SenderFacts};
use crate::core::route::{KnownTicket, Route, RouteFacts, State};
use crate::core::ticket_number;

/// A source identity that already reached an outcome: the ticket it went to, if any.
pub fn ledger_entry(conn: &Connection, source: &str) -> Result<Option<Option<String>>, StoreError> {
    let sql = "SELECT t.number FROM processed p LEFT JOIN tickets t ON t.id = p.ticket_id WHERE p.source = ?1";
    Ok(conn.prepare_cached(sql)?.query_row([source], |r| r.get::<_, Option<String>>(0)).optional()?)
}

/// The ticket (id, number) of an earlier message with the same duplicate key.
pub fn find_duplicate(conn: &Connection, message_key: &str) -> Result<Option<(i64, String)>, StoreError> {
    let sql = "SELECT t.id, t.number FROM articles a JOIN tickets t ON t.id = a.ticket_id WHERE a.message_key = ?1";
    Ok(conn.prepare_cached(sql)?.query_row([message_key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

pub fn record_processed(
    conn: &Connection,
    source: &str,
    message_key: &str,
    ticket_id: Option<i64>,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql =
        "INSERT INTO processed (source, message_key, ticket_id, outcome, processed_at) VALUES (?1, ?2, ?3, ?4, ?5)
               ON CONFLICT (source) DO NOTHING";
    conn.prepare_cached(sql)?.execute(params![source, message_key, ticket_id, outcome, timestamp(now)])?;
    conn.prepare_cached("DELETE FROM failed_messages WHERE source = ?1")?.execute([source])?;
    Ok(())
}

/// Keeps a message that could not be processed, with its bytes and the reason; the id
/// of its failure record. A second failure of the same source updates the record.
pub fn record_failure(
    conn: &Connection,
    source: &str,
    origin: &str,
    raw: &[u8],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let sql = "INSERT INTO failed_messages (source, origin, reason, size, raw, created_at, updated_at)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
               ON CONFLICT (source) DO UPDATE SET reason = excluded.reason, attempts = attempts + 1,
                   updated_at = excluded.updated_at
               RETURNING id";
    let id = conn
        .prepare_cached(sql)?
        .query_row(params![source, origin, reason, raw.len() as i64, raw, timestamp(now)], |r| r.get(0))?;
    Ok(id)
}

fn known_ticket(r: &Row) -> rusqlite::Result<KnownTicket> {
    let state: String = r.get(2)?;
    Ok(KnownTicket { id: r.get(0)?, number: r.get(1)?, state: State::parse(&state).unwrap_or(State::Open) })
}

fn org_fact(r: &Row, first: usize) -> rusqlite::Result<Option<OrgFact>> {
    let Some(id) = r.get::<_, Option<i64>>(first)? else {
        return Ok(None);
    };
    Ok(Some(OrgFact { id, name: r.get(first + 1)?, first_response_hours: r.get(first + 2)? }))
}

/// Reads everything `core::decide` needs to know about this message.
pub fn gather(
    conn: &Connection,
    inbound: &Inbound,
    sender: Option<&Sender>,
    recipient: Option<&str>,
    tag_prefix: &str,
    now: DateTime<Utc>,
) -> Result<Facts, StoreError> {
    Ok(Facts {
        route: RouteFacts {
            tagged: tagged_ticket(conn, &inbound.subject, tag_prefix)?,
            referenced: referenced_ticket(conn, inbound)?,
        },
        sender: match sender {
            Some(s) => sender_facts(conn, &s.email)?,
            None => SenderFacts::default(),
        },
        recent_acks_to_recipient: match recipient {
            Some(r) => recent_acks(conn, r, now)?,
            None => 0,
        },
        next_seq_today: next_seq(conn, now)?,
    })
}

fn tagged_ticket(conn: &Connection, subject: &str, prefix: &str) -> Result<Option<KnownTicket>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, number, state FROM tickets WHERE number = ?1")?;
    for number in ticket_number::find_tags(subject, prefix) {
        if let Some(t) = stmt.query_row([&number], known_ticket).optional()? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// The newest reference first: `In-Reply-To`, then `References` from the end.
fn referenced_ticket(conn: &Connection, inbound: &Inbound) -> Result<Option<KnownTicket>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.number, t.state FROM message_ids m JOIN tickets t ON t.id = m.ticket_id
         WHERE m.message_id = ?1",
    )?;
    for id in inbound.in_reply_to.iter().chain(inbound.references.iter().rev()) {
        if let Some(t) = stmt.query_row([id], known_ticket).optional()? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

fn sender_facts(conn: &Connection, email: &str) -> Result<SenderFacts, StoreError> {
    let customer = conn
        .prepare_cached(
            "SELECT c.id, c.name, o.id, o.name, o.first_response_hours
             FROM customer_emails e JOIN customer_users c ON c.id = e.customer_id
             LEFT JOIN organisations o ON o.id = c.organisation_id WHERE e.email = ?1",
        )?
        .query_row([email], |r| Ok(CustomerFact { id: r.get(0)?, name: r.get(1)?, organisation: org_fact(r, 2)? }))
        .optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.name, o.first_response_hours FROM organisation_domains d
         JOIN organisations o ON o.id = d.organisation_id WHERE d.domain = ?1",
    )?;
    let mut domain_owner = None;
    for d in &address::owner_domains(address::domain_of(email)) {
        domain_owner = stmt.query_row([d], |r| org_fact(r, 0)).optional()?.flatten();
        if domain_owner.is_some() {
            break;
        }
    }
    Ok(SenderFacts { customer, domain_owner })
}

fn recent_acks(conn: &Connection, recipient: &str, now: DateTime<Utc>) -> Result<u32, StoreError> {
    let since = timestamp(now - Duration::hours(24));
    let sql = "SELECT COUNT(*) FROM outbox WHERE recipient = ?1 AND created_at > ?2";
    Ok(conn.prepare_cached(sql)?.query_row(params![recipient, since], |r| r.get(0))?)
}

fn next_seq(conn: &Connection, now: DateTime<Utc>) -> Result<u32, StoreError> {
    let day = now.format("%Y-%m-%d").to_string();
    let sql = "SELECT COALESCE(MAX(seq), 0) + 1 FROM tickets WHERE day = ?1";
    Ok(conn.prepare_cached(sql)?.query_row([day], |r| r.get(0))?)
}

/// What `apply` wrote.
#[derive(Debug, Clone)]
pub struct Applied {
    pub ticket_id: i64,
    pub ticket_number: String,
}

/// Writes a decision: customer and organisation, ticket or follow-up, article,
/// attachments, raw bytes, known message-ids and the acknowledgement.
pub fn apply(
    conn: &Connection,
    inbound: &Inbound,
    raw: &[u8],
    decision: &Decision,
    mailbox: &str,
    now: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let now_text = timestamp(now);
    let (customer_id, organisation_id) = upsert_customer(conn, &decision.customer, now)?;
    let (ticket_id, ticket_number) = match (&decision.route, &decision.new_ticket) {
        (Route::FollowUp { ticket, .. }, _) => {
            let state = decision.follow_up_state.map(State::as_str);
            conn.prepare_cached("UPDATE tickets SET updated_at = ?1, state = COALESCE(?2, state) WHERE id = ?3")?
                .execute(params![now_text, state, ticket.id])?;
            (ticket.id, ticket.number.clone())
        }
        (Route::New, Some(new)) => {
            let subject = if inbound.subject.is_empty() { "(no subject)" } else { &inbound.subject };
            let id = conn
                .prepare_cached(
                    "INSERT INTO tickets (number, day, seq, subject, state, customer_id, customer_email,
                         organisation_id, mailbox, ack, respond_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'new', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING id",
                )?
                .query_row(
                    params![
                        new.number,
                        now.format("%Y-%m-%d").to_string(),
                        new.seq,
                        subject,
                        customer_id,
                        decision.sender.as_ref().map(|s| s.email.as_str()),
                        organisation_id,
                        mailbox,
                        decision.ack.summary(),
                        new.respond_by.map(timestamp),
                        now_text
                    ],
                    |r| r.get(0),
                )?;
            (id, new.number.clone())
        }
        (Route::New, None) => unreachable!("core::decide numbers every new ticket"),
    };
    let article_id = insert_article(conn, ticket_id, inbound, decision, &now_text)?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO attachments (article_id, filename, content_type, size, content) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for a in &inbound.attachments {
        stmt.execute(params![article_id, a.filename, a.content_type, a.size as i64, a.content])?;
    }
    conn.prepare_cached("INSERT INTO raw_messages (article_id, raw) VALUES (?1, ?2)")?
        .execute(params![article_id, raw])?;
    let mut known = conn.prepare_cached("INSERT OR IGNORE INTO message_ids (message_id, ticket_id) VALUES (?1, ?2)")?;
    if let Some(id) = &inbound.message_id {
        known.execute(params![id, ticket_id])?;
    }
    if let AckDecision::Queue(ack) = &decision.ack {
        conn.prepare_cached(
            "INSERT INTO outbox (ticket_id, recipient, recipient_name, sender, sender_name, subject, body_text,
                 message_id, in_reply_to, refs, state, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?11)",
        )?
        .execute(params![
            ticket_id,
            ack.to,
            ack.to_name,
            ack.from,
            ack.from_name,
            ack.subject,
            ack.body,
            ack.message_id,
            ack.in_reply_to,
            ack.references.join(" "),
            now_text
        ])?;
        known.execute(params![ack.message_id, ticket_id])?;
    }
    Ok(Applied { ticket_id, ticket_number })
}

fn insert_article(
    conn: &Connection,
    ticket_id: i64,
    inbound: &Inbound,
    decision: &Decision,
    now_text: &str,
) -> Result<i64, StoreError> {
    let join = |list: &[Mailbox]| list.iter().map(|m| m.address.as_str()).collect::<Vec<_>>().join(", ");
    let kinds: Vec<&str> = decision.classification.iter().map(|k| k.as_str()).collect();
    let from = inbound.from.as_ref();
    let id = conn
        .prepare_cached(
            "INSERT INTO articles (ticket_id, direction, message_key, message_id, from_addr, from_name, to_addrs,
                 cc_addrs, subject, sent_at, body_text, body_html, classification, created_at)
             VALUES (?1, 'in', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        )?
        .query_row(
            params![
                ticket_id,
                inbound.message_key(),
                inbound.message_id,
                from.map(|m| m.address.as_str()),
                from.and_then(|m| m.name.as_deref()),
                join(&inbound.to),
                join(&inbound.cc),
                inbound.subject,
                inbound.date,
                inbound.text_body,
                inbound.html_body,
                kinds.join(","),
                now_text
            ],
            |r| r.get(0),
        )?;
    Ok(id)
}

/// The customer user id and primary organisation id a ticket is filed under.
fn upsert_customer(
    conn: &Connection,
    customer: &Customer,
    now: DateTime<Utc>,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    match customer {
        Customer::None { .. } => Ok((None, None)),
        Customer::Existing(c) => Ok((Some(c.id), c.organisation.as_ref().map(|o| o.id))),
        Customer::Create { email, name, organisation } => {
            let org_id = match organisation {
                Organisation::None { .. } => None,
                Organisation::Existing(o) => Some(o.id),
                Organisation::Create { name, domain } => {
                    Some(create_organisation(conn, name, domain, &timestamp(now))?)
                }
            };
            let id = super::customers::create(conn, email, name.as_deref(), org_id, now)?;
            Ok((Some(id), org_id))
        }
    }
}

/// An organisation named after a domain, owning it; an existing one of that name is reused.
fn create_organisation(conn: &Connection, name: &str, domain: &str, now_text: &str) -> Result<i64, StoreError> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO organisations (name, created_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET name = name RETURNING id",
        )?
        .query_row(params![name, now_text], |r| r.get(0))?;
    conn.prepare_cached("INSERT OR IGNORE INTO organisation_domains (domain, organisation_id) VALUES (?1, ?2)")?
        .execute(params![domain, id])?;
    Ok(id)
}
