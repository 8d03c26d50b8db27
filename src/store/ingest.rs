//! The store's half of ingesting one message: reading the facts a decision needs and
//! writing a decision. Called inside the caller's transaction (a savepoint per message).

use chrono::{DateTime, Duration, Utc};

use super::sql::{params, Dialect, Row};
use super::{timestamp, StoreError, Tx};
use crate::core::ack::{self, AckDecision, Acknowledgement};
use crate::core::address;
use crate::core::decide::{Decision, Facts, Judgement, OurAck, Seen};
use crate::core::identity;
use crate::core::parse::{self, Inbound, Mailbox};
use crate::core::resolve::{Customer, CustomerFact, OrgFact, Organisation, Sender, SenderFacts};
use crate::core::route::{Candidate, KnownTicket, RouteFacts, State};
use crate::core::ticket_number;
use crate::core::trust::TicketTrust;

/// A source identity that already reached an outcome: the ticket it went to, if any.
pub fn ledger_entry(tx: &Tx<'_>, source: &str) -> Result<Option<Option<String>>, StoreError> {
    let sql = "SELECT t.number FROM processed p LEFT JOIN tickets t ON t.id = p.ticket_id WHERE p.source = ?1";
    tx.query_opt(sql, &[source], |r| r.get::<Option<String>>(0))
}

/// Whether the same message (same Message-ID and content digest, or the same content
/// when there is no Message-ID) was stored before. Articles stored before content
/// digests existed are digested from their raw bytes.
pub fn find_duplicate(tx: &Tx<'_>, message_id: Option<&str>, digest: &str, raw: &[u8]) -> Result<Seen, StoreError> {
    let Some(id) = message_id else {
        // Before digests, a message without a Message-ID was keyed by the hash of its bytes.
        let legacy = format!("sha256:{}", parse::content_hash(raw));
        let sql = "SELECT t.id, t.number FROM articles a JOIN tickets t ON t.id = a.ticket_id
                   WHERE a.message_key IN (?1, ?2) LIMIT 1";
        let found =
            tx.query_opt(sql, &[identity::message_key(None, digest), legacy], |r| Ok((r.get(0)?, r.get(1)?)))?;
        return Ok(found.map_or(Seen::New, |(id, number)| Seen::Duplicate(id, number)));
    };
    // Bounded: a flood of messages reusing one Message-ID costs each at most this many.
    let sql = "SELECT t.id, t.number, a.content_digest, r.raw FROM articles a JOIN tickets t ON t.id = a.ticket_id
               LEFT JOIN raw_messages r ON r.article_id = a.id AND a.content_digest IS NULL
               WHERE a.message_id = ?1 AND a.direction = 'in' ORDER BY a.id LIMIT 20";
    let rows = tx.query_all(sql, &[id], |r| {
        let stored = match r.get::<Option<String>>(2)? {
            Some(d) => d,
            None => identity::content_digest(&r.get::<Option<Vec<u8>>>(3)?.unwrap_or_default()),
        };
        Ok((r.get::<i64>(0)?, r.get::<String>(1)?, stored))
    })?;
    let mut reused = None;
    for (ticket_id, number, stored) in rows {
        if stored == digest {
            return Ok(Seen::Duplicate(ticket_id, number));
        }
        reused.get_or_insert(number);
    }
    Ok(reused.map_or(Seen::New, Seen::ReusedMessageId))
}

pub fn record_processed(
    tx: &Tx<'_>,
    source: &str,
    message_key: &str,
    ticket_id: Option<i64>,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql =
        "INSERT INTO processed (source, message_key, ticket_id, outcome, processed_at) VALUES (?1, ?2, ?3, ?4, ?5)";
    tx.execute(sql, params![source, message_key, ticket_id, outcome, timestamp(now)])?;
    tx.execute("DELETE FROM failed_messages WHERE source = ?1", &[source])?;
    Ok(())
}

/// Keeps a message that could not be processed, with its bytes and the reason; the id
/// of its failure record. A second failure of the same source updates the record.
pub fn record_failure(
    tx: &Tx<'_>,
    source: &str,
    origin: &str,
    raw: &[u8],
    reason: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let sql = "INSERT INTO failed_messages (source, origin, reason, size, raw, created_at, updated_at)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
               ON CONFLICT (source) DO UPDATE SET reason = excluded.reason, attempts = failed_messages.attempts + 1,
                   updated_at = excluded.updated_at
               RETURNING id";
    let id = tx.query_row(sql, params![source, origin, reason, raw.len() as i64, raw, timestamp(now)], |r| r.get(0))?;
    Ok(id)
}

/// An unknown state in the database is an error, never silently some other state.
fn known_ticket(r: &Row) -> Result<KnownTicket, StoreError> {
    Ok(KnownTicket { id: r.get(0)?, number: r.get(1)?, state: super::tickets::state(r, 2)? })
}

fn org_fact(r: &Row, first: usize) -> Result<Option<OrgFact>, StoreError> {
    let Some(id) = r.get::<Option<i64>>(first)? else {
        return Ok(None);
    };
    Ok(Some(OrgFact { id, name: r.get(first + 1)?, first_response_hours: r.get(first + 2)? }))
}

/// What `gather` looks up beside the parsed message.
#[derive(Debug, Clone, Copy)]
pub struct Lookups<'a> {
    /// The customer address (normalised).
    pub sender: Option<&'a Sender>,
    /// Message-IDs our loop header in the message names.
    pub loop_tokens: &'a [String],
    /// Message-IDs in the format of ours quoted anywhere in the message.
    pub quoted_ids: &'a [String],
    pub tag_prefix: &'a str,
    /// The message's `identity::content_digest` and bytes, to recognise it as stored.
    pub digest: &'a str,
    pub raw: &'a [u8],
    /// Recent acknowledgements are counted up to these, per recipient and per domain:
    /// `[acknowledgement]`'s limits, above which a higher count changes nothing (a big
    /// free-mail domain would otherwise cost a count of its thousands every message).
    pub ack_limits: (u32, u32),
}

/// At most this many references are looked up (the newest ones).
const MAX_REFERENCES: usize = 100;

/// Reads everything `core::decide` needs to know about this message.
pub fn gather(tx: &Tx<'_>, inbound: &Inbound, lookups: Lookups, now: DateTime<Utc>) -> Result<Facts, StoreError> {
    let sender = lookups.sender.map(|s| s.email.as_str());
    let candidate = |ticket: Option<KnownTicket>| -> Result<Option<Candidate>, StoreError> {
        ticket
            .map(|ticket| Ok(Candidate { trust: ticket_trust(tx, ticket.id, sender, lookups.loop_tokens)?, ticket }))
            .transpose()
    };
    let sender_facts = match sender {
        Some(s) => sender_facts(tx, s)?,
        None => SenderFacts::default(),
    };
    let sender_linked_organisations = match &sender_facts.customer {
        Some(c) => linked_organisations(tx, c.id)?,
        None => Vec::new(),
    };
    let (recent_acks_to_recipient, recent_acks_to_domain) = match sender {
        Some(s) => recent_acks(tx, s, lookups.ack_limits, now)?,
        None => (0, 0),
    };
    Ok(Facts {
        route: RouteFacts {
            tagged: candidate(tagged_ticket(tx, &inbound.subject, lookups.tag_prefix)?)?,
            referenced: candidate(referenced_ticket(tx, inbound)?)?,
            sender_linked_organisations,
        },
        sender: sender_facts,
        recent_acks_to_recipient,
        recent_acks_to_domain,
        quoted_ack: quoted_ack(tx, lookups.quoted_ids)?,
        own_message: own_message(tx, inbound, lookups.loop_tokens)?,
        next_seq_today: next_seq(tx, now)?,
        seen: find_duplicate(tx, inbound.message_id.as_deref(), lookups.digest, lookups.raw)?,
    })
}

fn tagged_ticket(tx: &Tx, subject: &str, prefix: &str) -> Result<Option<KnownTicket>, StoreError> {
    let sql = "SELECT id, number, state FROM tickets WHERE number = ?1";
    for number in ticket_number::find_tags(subject, prefix).into_iter().take(MAX_REFERENCES) {
        if let Some(t) = tx.query_opt(sql, &[&number], known_ticket)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// The newest reference first: `In-Reply-To`, then `References` from the end.
fn referenced_ticket(tx: &Tx, inbound: &Inbound) -> Result<Option<KnownTicket>, StoreError> {
    let sql = "SELECT t.id, t.number, t.state FROM message_ids m JOIN tickets t ON t.id = m.ticket_id
         WHERE m.message_id = ?1";
    for id in inbound.in_reply_to.iter().chain(inbound.references.iter().rev()).take(MAX_REFERENCES) {
        if let Some(t) = tx.query_opt(sql, &[id], known_ticket)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// How the sender stands on one ticket.
fn ticket_trust(
    tx: &Tx,
    ticket_id: i64,
    sender: Option<&str>,
    loop_tokens: &[String],
) -> Result<TicketTrust, StoreError> {
    let exists = |sql: &str, a: i64, b: &str| -> Result<bool, StoreError> {
        Ok(tx.query_opt(sql, params![a, b], |_| Ok(()))?.is_some())
    };
    let (mut sender_is_customer, mut sender_on_ticket) = (false, false);
    if let Some(email) = sender {
        sender_is_customer = exists(
            "SELECT 1 FROM tickets t JOIN customer_emails e ON e.customer_id = t.customer_id
             WHERE t.id = ?1 AND e.email = ?2",
            ticket_id,
            email,
        )?;
        sender_on_ticket =
            exists("SELECT 1 FROM ticket_addresses WHERE ticket_id = ?1 AND email = ?2", ticket_id, email)?;
    }
    let mut our_loop_token = false;
    for token in loop_tokens.iter().take(10) {
        our_loop_token |= exists("SELECT 1 FROM outbox WHERE ticket_id = ?1 AND message_id = ?2", ticket_id, token)?;
    }
    let organisations = tx.query_all(
        "SELECT organisation_id FROM tickets WHERE id = ?1 AND organisation_id IS NOT NULL
             UNION SELECT c.organisation_id FROM tickets t JOIN customer_users c ON c.id = t.customer_id
                   WHERE t.id = ?1 AND c.organisation_id IS NOT NULL
             UNION SELECT l.organisation_id FROM tickets t JOIN customer_links l ON l.customer_id = t.customer_id
                   WHERE t.id = ?1",
        &[ticket_id],
        |r| r.get(0),
    )?;
    Ok(TicketTrust { sender_is_customer, sender_on_ticket, organisations, our_loop_token })
}

fn linked_organisations(tx: &Tx, customer_id: i64) -> Result<Vec<i64>, StoreError> {
    let sql = "SELECT organisation_id FROM customer_links WHERE customer_id = ?1";
    tx.query_all(sql, &[customer_id], |r| r.get(0))
}

/// Whether the message is one of our acknowledgements come back: its loop header names
/// its own Message-ID, and that is in our outbox.
fn own_message(tx: &Tx, inbound: &Inbound, loop_tokens: &[String]) -> Result<bool, StoreError> {
    let Some(id) = inbound.message_id.as_deref().map(str::to_ascii_lowercase) else {
        return Ok(false);
    };
    if !loop_tokens.contains(&id) {
        return Ok(false);
    }
    let sql = "SELECT 1 FROM outbox WHERE message_id = ?1";
    Ok(tx.query_opt(sql, &[id], |_| Ok(()))?.is_some())
}

/// The first of our acknowledgements among `ids`, with its ticket.
fn quoted_ack(tx: &Tx, ids: &[String]) -> Result<Option<OurAck>, StoreError> {
    let sql = "SELECT t.id, t.number, t.state, o.id FROM outbox o JOIN tickets t ON t.id = o.ticket_id
         WHERE o.message_id = ?1";
    for id in ids {
        let found = tx.query_opt(sql, &[id], |r| Ok(OurAck { ticket: known_ticket(r)?, outbox_id: r.get(3)? }))?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn sender_facts(tx: &Tx, email: &str) -> Result<SenderFacts, StoreError> {
    let customer = tx.query_opt(
        "SELECT c.id, c.name, o.id, o.name, o.first_response_hours
             FROM customer_emails e JOIN customer_users c ON c.id = e.customer_id
             LEFT JOIN organisations o ON o.id = c.organisation_id WHERE e.email = ?1",
        &[email],
        |r| Ok(CustomerFact { id: r.get(0)?, name: r.get(1)?, organisation: org_fact(r, 2)? }),
    )?;
    let sql = "SELECT o.id, o.name, o.first_response_hours FROM organisation_domains d
         JOIN organisations o ON o.id = d.organisation_id WHERE d.domain = ?1";
    let mut domain_owner = None;
    for d in &address::owner_domains(address::domain_of(email)) {
        domain_owner = tx.query_opt(sql, &[d], |r| org_fact(r, 0))?.flatten();
        if domain_owner.is_some() {
            break;
        }
    }
    Ok(SenderFacts { customer, domain_owner })
}

/// The count of acknowledgements (not agents' replies) since `?2` to `?1`, a mailbox
/// (`ack::mailbox_key`, column `recipient_key`) or a domain (`recipient_domain`), up to
/// `limit`: from the indexes alone (migration 0011). The limit is written into the SQL,
/// not bound: SQLite plans with the LIMIT it reads, and prepared the statement again
/// every time a LIMIT parameter was bound, a tenth of the ingest's CPU (benches/ingest.rs).
pub(super) fn recent_acks_sql(column: &str, limit: u32) -> String {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM outbox
         WHERE {column} = ?1 AND kind = 'ack' AND created_at > ?2 LIMIT {limit}) AS recent"
    )
}

/// Acknowledgements in the last 24 hours to the recipient's mailbox and to its domain,
/// each counted up to its limit.
fn recent_acks(tx: &Tx, recipient: &str, limits: (u32, u32), now: DateTime<Utc>) -> Result<(u32, u32), StoreError> {
    let since = timestamp(now - Duration::hours(24));
    let (key, domain) = (ack::mailbox_key(recipient), address::domain_of(recipient));
    Ok((
        tx.query_row(&recent_acks_sql("recipient_key", limits.0), params![key, since], |r| r.get(0))?,
        tx.query_row(&recent_acks_sql("recipient_domain", limits.1), params![domain, since], |r| r.get(0))?,
    ))
}

fn next_seq(tx: &Tx, now: DateTime<Utc>) -> Result<u32, StoreError> {
    let day = now.format("%Y-%m-%d").to_string();
    let sql = "SELECT COALESCE((SELECT last_seq FROM ticket_counters WHERE day = ?1), 0) + 1";
    tx.query_row(sql, &[day], |r| r.get(0))
}

/// What `apply` wrote.
#[derive(Debug, Clone)]
pub struct Applied {
    pub ticket_id: i64,
    pub ticket_number: String,
}

/// The message being written: its bytes, parsed and digested, and the helpdesk address
/// it counts against.
#[derive(Clone, Copy)]
pub struct Arrived<'a> {
    pub inbound: &'a Inbound,
    pub raw: &'a [u8],
    pub digest: &'a str,
    pub mailbox: &'a str,
}

/// Writes a decision: customer and organisation, ticket or follow-up, article,
/// attachments, raw bytes, known message-ids and the acknowledgement.
pub fn apply(tx: &Tx<'_>, arrived: Arrived, decision: &Decision, now: DateTime<Utc>) -> Result<Applied, StoreError> {
    let now_text = timestamp(now);
    let (ticket_id, ticket_number) = match decision {
        Decision::Duplicate { ticket_id, ticket, .. } => {
            return Ok(Applied { ticket_id: *ticket_id, ticket_number: ticket.clone() })
        }
        Decision::New { message, ticket, ack, referred } => {
            let customer = upsert_customer(tx, &message.customer, now)?;
            let day = now.format("%Y-%m-%d").to_string();
            take_number(tx, &day, ticket.seq)?;
            let inbound = arrived.inbound;
            let subject = if inbound.subject.is_empty() { "(no subject)" } else { &inbound.subject };
            let id = tx.query_row(
                "INSERT INTO tickets (number, day, seq, subject, state, customer_id, customer_email,
                         organisation_id, mailbox, ack, respond_by, created_at, updated_at, referred_ticket,
                         unauthenticated)
                     VALUES (?1, ?2, ?3, ?4, 'new', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13) RETURNING id",
                params![
                    ticket.number,
                    day,
                    ticket.seq,
                    subject,
                    customer.0,
                    message.sender.as_ref().map(|s| s.email.as_str()),
                    customer.1,
                    arrived.mailbox,
                    ack.summary(),
                    ticket.respond_by.map(timestamp),
                    now_text,
                    referred.as_ref().map(|r| r.ticket.as_str()),
                    message.authentication == crate::core::trust::Authentication::Fail
                ],
                |r| r.get(0),
            )?;
            store_article(tx, id, arrived, message, false, &now_text)?;
            if let AckDecision::Queue(ack) = ack {
                queue_ack(tx, Some(id), ack, &now_text)?;
            }
            (id, ticket.number.clone())
        }
        Decision::FollowUp { message, ticket, state, .. } => {
            upsert_customer(tx, &message.customer, now)?;
            tx.execute(
                "UPDATE tickets SET updated_at = ?1, customer_replied_at = ?1, state = COALESCE(?2, state)
                 WHERE id = ?3",
                params![now_text, state.map(State::as_str), ticket.id],
            )?;
            store_article(tx, ticket.id, arrived, message, false, &now_text)?;
            (ticket.id, ticket.number.clone())
        }
        Decision::AckBounce { message, ticket, outbox_id, diagnostic } => {
            tx.execute("UPDATE tickets SET updated_at = ?1 WHERE id = ?2", params![now_text, ticket.id])?;
            tx.execute(
                "UPDATE outbox SET state = 'bounced', last_error = ?1 WHERE id = ?2",
                params![format!("bounced: {diagnostic}"), outbox_id],
            )?;
            store_article(tx, ticket.id, arrived, message, true, &now_text)?;
            (ticket.id, ticket.number.clone())
        }
    };
    Ok(Applied { ticket_id, ticket_number })
}

/// The inbound article with its attachments and raw bytes; for a customer's message
/// (not `internal`) also its participants and its Message-ID for follow-up matching.
fn store_article(
    tx: &Tx,
    ticket_id: i64,
    arrived: Arrived,
    message: &Judgement,
    internal: bool,
    now_text: &str,
) -> Result<(), StoreError> {
    let inbound = arrived.inbound;
    let article_id = insert_article(tx, ticket_id, inbound, message, internal, arrived.digest, now_text)?;
    let sql = "INSERT INTO attachments (article_id, filename, content_type, size, content) VALUES (?1, ?2, ?3, ?4, ?5)";
    for a in &inbound.attachments {
        tx.execute(sql, params![article_id, a.filename, a.content_type, a.size as i64, a.content])?;
    }
    tx.execute("INSERT INTO raw_messages (article_id, raw) VALUES (?1, ?2)", params![article_id, arrived.raw])?;
    if internal {
        return Ok(());
    }
    record_addresses(tx, ticket_id, inbound, message.sender.as_ref())?;
    if let (Some(id), true) = (&inbound.message_id, message.records_message_id()) {
        known_message_id(tx, id, ticket_id)?;
    }
    Ok(())
}

fn known_message_id(tx: &Tx, message_id: &str, ticket_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO message_ids (message_id, ticket_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        params![message_id, ticket_id],
    )?;
    Ok(())
}

/// An acknowledgement or an agent's reply into the outbox; its Message-ID leads the
/// customer's answers to the ticket.
pub(super) fn queue_ack(
    tx: &Tx,
    ticket_id: Option<i64>,
    ack: &Acknowledgement,
    now_text: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (ticket_id, recipient, recipient_name, recipient_key, recipient_domain, sender,
             sender_name, subject, body_text, message_id, in_reply_to, refs, state, next_attempt_at, created_at,
             kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'queued', ?13, ?13, ?14)",
        params![
            ticket_id,
            ack.to,
            ack.to_name,
            ack::mailbox_key(&ack.to),
            address::domain_of(&ack.to),
            ack.from,
            ack.from_name,
            ack.subject,
            ack.body,
            ack.message_id,
            ack.in_reply_to,
            ack.references.join(" "),
            now_text,
            ack.kind.as_str()
        ],
    )?;
    match ticket_id {
        Some(ticket_id) => known_message_id(tx, &ack.message_id, ticket_id),
        None => Ok(()),
    }
}

/// Takes ticket number `seq` of `day` from the day's counter, which `gather` read: when
/// another writer took it meanwhile (possible only where writers run concurrently), the
/// message is decided again (`StoreError::Conflict`).
pub(super) fn take_number(tx: &Tx, day: &str, seq: u32) -> Result<(), StoreError> {
    let taken = tx.execute(
        "INSERT INTO ticket_counters (day, last_seq) VALUES (?1, ?2)
             ON CONFLICT (day) DO UPDATE SET last_seq = excluded.last_seq
             WHERE ticket_counters.last_seq = excluded.last_seq - 1",
        params![day, seq],
    )?;
    match taken {
        1 => Ok(()),
        _ => Err(StoreError::Conflict(format!("ticket number {seq} of {day} was taken meanwhile"))),
    }
}

/// The addresses of a message (From, To, Cc and the customer address), normalised, as
/// participants of the ticket.
fn record_addresses(tx: &Tx, ticket_id: i64, inbound: &Inbound, sender: Option<&Sender>) -> Result<(), StoreError> {
    const MAX_ADDRESSES: usize = 100;
    let sql = "INSERT INTO ticket_addresses (ticket_id, email) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING";
    let listed = inbound.from.iter().chain(&inbound.to).chain(&inbound.cc).take(MAX_ADDRESSES);
    for email in listed.filter_map(|m| address::normalise(&m.address)).chain(sender.map(|s| s.email.clone())) {
        tx.execute(sql, params![ticket_id, email])?;
    }
    Ok(())
}

fn insert_article(
    tx: &Tx,
    ticket_id: i64,
    inbound: &Inbound,
    message: &Judgement,
    internal: bool,
    digest: &str,
    now_text: &str,
) -> Result<i64, StoreError> {
    let join = |list: &[Mailbox]| list.iter().map(|m| m.address.as_str()).collect::<Vec<_>>().join(", ");
    let kinds: Vec<&str> = message.classification.iter().map(|k| k.as_str()).collect();
    let from = inbound.from.as_ref();
    let id = tx.query_row(
        "INSERT INTO articles (ticket_id, direction, message_key, message_id, from_addr, from_name, to_addrs,
                 cc_addrs, subject, sent_at, body_text, body_html, classification, created_at, content_digest,
                 internal)
             VALUES (?1, 'in', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING id",
        params![
            ticket_id,
            identity::message_key(inbound.message_id.as_deref(), digest),
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
            now_text,
            digest,
            internal
        ],
        |r| r.get(0),
    )?;
    Ok(id)
}

/// The customer user id and primary organisation id a ticket is filed under.
fn upsert_customer(tx: &Tx, customer: &Customer, now: DateTime<Utc>) -> Result<(Option<i64>, Option<i64>), StoreError> {
    match customer {
        Customer::None { .. } => Ok((None, None)),
        Customer::Existing(c) => Ok((Some(c.id), c.organisation.as_ref().map(|o| o.id))),
        Customer::Create { email, name, organisation } => {
            let org_id = match organisation {
                Organisation::None { .. } => None,
                Organisation::Existing(o) => Some(o.id),
                Organisation::Create { name, domain } => Some(create_organisation(tx, name, domain, &timestamp(now))?),
            };
            let id = super::customers::create(tx, email, name.as_deref(), org_id, now)?;
            Ok((Some(id), org_id))
        }
    }
}

/// An organisation named after a domain, owning it; an existing one of that name is reused.
fn create_organisation(tx: &Tx, name: &str, domain: &str, now_text: &str) -> Result<i64, StoreError> {
    // The names are unique folded: by SQLite's NOCASE, by the index on `fold(name)`.
    let sql = match tx.dialect() {
        Dialect::Sqlite => {
            "INSERT INTO organisations (name, created_at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET name = organisations.name RETURNING id"
        }
        Dialect::Postgres => {
            "INSERT INTO organisations (name, created_at) VALUES (?1, ?2)
             ON CONFLICT (fold(name)) DO UPDATE SET name = organisations.name RETURNING id"
        }
    };
    let id: i64 = tx.query_row(sql, params![name, now_text], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO organisation_domains (domain, organisation_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        params![domain, id],
    )?;
    Ok(id)
}
