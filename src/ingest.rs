//! The pipeline for one message — ledger check → parse → gather facts → decide → write —
//! and the batch that commits many messages with one fsync (group commit). Every source
//! (`postdesk ingest`, the IMAP daemon) goes through `Batch::ingest_one`.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::config::Config;
use crate::core::decide::{self, Decision};
use crate::core::parse::{self, Inbound};
use crate::core::{ack, address, resolve};
use crate::store::{self, Store, StoreError};

/// Where a raw message came from; its identity is the first duplicate key.
#[derive(Debug, Clone)]
pub struct Source {
    pub identity: String,
    /// For humans: a path, `stdin`, or `mailbox/UID`.
    pub label: String,
    /// The helpdesk address the message arrived at, when the source knows it.
    pub mailbox_address: Option<String>,
}

impl Source {
    /// A message in an IMAP folder: (account, folder, UIDVALIDITY, UID).
    pub fn imap(mailbox: &crate::config::MailboxConfig, uidvalidity: u32, uid: u32) -> Source {
        Source {
            identity: format!("imap:{}@{}/{};{uidvalidity};{uid}", mailbox.username, mailbox.host, mailbox.folder),
            label: format!("{} UID {uid}", mailbox.name),
            mailbox_address: Some(mailbox.address.clone()),
        }
    }

    /// A file or standard input: identified by its content.
    pub fn file(label: impl Into<String>, raw: &[u8]) -> Source {
        Source { identity: format!("file:{}", parse::content_hash(raw)), label: label.into(), mailbox_address: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Created { ticket: String, ack: String },
    FollowUp { ticket: String, reopened: bool },
    Duplicate { ticket: Option<String>, reason: &'static str },
    Failed { failure: i64, reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created { ticket, ack } if ack == "queued" => {
                write!(f, "new ticket {ticket}, acknowledgement queued")
            }
            Outcome::Created { ticket, ack } => {
                write!(f, "new ticket {ticket}, no acknowledgement ({ack})")
            }
            Outcome::FollowUp { ticket, reopened: true } => write!(f, "follow-up to ticket {ticket}, reopened it"),
            Outcome::FollowUp { ticket, reopened: false } => write!(f, "follow-up to ticket {ticket}"),
            Outcome::Duplicate { ticket: Some(t), reason } => write!(f, "duplicate of ticket {t} ({reason})"),
            Outcome::Duplicate { ticket: None, reason } => write!(f, "duplicate ({reason})"),
            Outcome::Failed { failure, reason } => {
                write!(f, "failed, kept as failed message #{failure}: {reason}")
            }
        }
    }
}

/// What happened to one message, and the decision behind it when one was taken.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

impl Report {
    fn outcome(outcome: Outcome) -> Report {
        Report { outcome, decision: None }
    }
}

/// Messages ingested together and made durable by one commit. Nothing a batch did may
/// be reported as done before `commit` returns.
pub struct Batch<'a> {
    tx: Transaction<'a>,
    config: &'a Config,
}

impl<'a> Batch<'a> {
    pub fn begin(store: &'a mut Store, config: &'a Config) -> Result<Batch<'a>, StoreError> {
        let tx = store.conn_mut().transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(Batch { tx, config })
    }

    /// Runs one message through the pipeline inside its own savepoint: a message that
    /// hits a bug is rolled back alone and kept as a failed message. Only a storage
    /// failure that may pass (disk full, locked) is returned, and it spoils the batch.
    pub fn ingest_one(&mut self, raw: &[u8], source: &Source, now: DateTime<Utc>) -> Result<Report, StoreError> {
        let prepared = prepare(raw, &self.config.policy);
        self.ingest_prepared(raw, &prepared, source, now)
    }

    /// `ingest_one` for a message already `prepare`d, perhaps on another thread.
    pub fn ingest_prepared(
        &mut self,
        raw: &[u8],
        prepared: &Prepared,
        source: &Source,
        now: DateTime<Utc>,
    ) -> Result<Report, StoreError> {
        let result = {
            let sp = self.tx.savepoint()?;
            match process(&sp, raw, prepared, source, self.config, now) {
                Ok(report) => sp.commit().map(|()| report).map_err(StoreError::from),
                Err(e) => Err(e),
            }
        };
        match result {
            Err(e) if !e.is_transient() => {
                let reason = format!("internal error: {e}");
                fail(&self.tx, raw, source, reason, now)
            }
            other => other,
        }
    }

    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

/// One message in its own transaction: for a pipe from an MTA, which wants a definite
/// answer per message.
pub fn ingest_one(
    store: &mut Store,
    config: &Config,
    raw: &[u8],
    source: &Source,
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let mut batch = Batch::begin(store, config)?;
    let report = batch.ingest_one(raw, source, now)?;
    batch.commit()?;
    Ok(report)
}

/// A message checked and parsed: the pure half of the pipeline, which needs no store and
/// so can run on another thread while a batch commits.
pub struct Prepared(Result<Inbound, String>);

impl Prepared {
    /// A message to keep as failed for `reason` without parsing it (the daemon fetches
    /// only the header of a message over the size limit).
    pub fn rejected(reason: String) -> Prepared {
        Prepared(Err(reason))
    }
}

pub fn prepare(raw: &[u8], policy: &crate::core::decide::Policy) -> Prepared {
    if raw.len() > policy.max_message_bytes {
        return Prepared::rejected(format!(
            "message is {} bytes, over the limit of {}",
            raw.len(),
            policy.max_message_bytes
        ));
    }
    Prepared(parse::parse(raw, &policy.loop_header).map_err(|e| match e {
        parse::ParseError::Bound(_) => e.to_string(),
        _ => format!("unparseable: {e}"),
    }))
}

fn process(
    conn: &Connection,
    raw: &[u8],
    prepared: &Prepared,
    source: &Source,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let policy = &config.policy;
    if let Some(ticket) = store::ledger_entry(conn, &source.identity)? {
        return Ok(Report::outcome(Outcome::Duplicate { ticket, reason: "already processed" }));
    }
    let inbound = match &prepared.0 {
        Ok(inbound) => inbound,
        Err(reason) => return fail(conn, raw, source, reason.clone(), now),
    };
    let sender = resolve::sender(inbound, policy.resolve.prefer);
    let key = inbound.message_key();
    if let Some((ticket_id, number)) = store::find_duplicate(conn, &key)? {
        store::record_processed(conn, &source.identity, &key, Some(ticket_id), "duplicate", now)?;
        let reason = if inbound.message_id.is_some() { "same Message-ID" } else { "same content" };
        return Ok(Report::outcome(Outcome::Duplicate { ticket: Some(number), reason }));
    }
    let recipient = ack::recipient(inbound);
    let facts = store::gather(
        conn,
        inbound,
        sender.as_ref(),
        recipient.as_ref().map(|r| r.email.as_str()),
        &policy.tag_prefix,
        now,
    )?;
    let mailbox = helpdesk_address(inbound, source, config);
    let decision = decide::decide(inbound, sender, &facts, policy, &mailbox, now);
    let applied = store::apply(conn, inbound, raw, &decision, &mailbox, now)?;
    let outcome = match &decision.new_ticket {
        Some(_) => Outcome::Created { ticket: applied.ticket_number, ack: decision.ack.summary() },
        None => Outcome::FollowUp { ticket: applied.ticket_number, reopened: decision.follow_up_state.is_some() },
    };
    let name = if decision.new_ticket.is_some() { "new" } else { "follow-up" };
    store::record_processed(conn, &source.identity, &key, Some(applied.ticket_id), name, now)?;
    Ok(Report { outcome, decision: Some(decision) })
}

fn fail(
    conn: &Connection,
    raw: &[u8],
    source: &Source,
    reason: String,
    now: DateTime<Utc>,
) -> Result<Report, StoreError> {
    let failure = store::record_failure(conn, &source.identity, raw, &reason, now)?;
    Ok(Report::outcome(Outcome::Failed { failure, reason }))
}

/// The helpdesk address a message was sent to: the mailbox it came through, else the
/// first of our addresses among its recipients, else the configured main address.
fn helpdesk_address(inbound: &Inbound, source: &Source, config: &Config) -> String {
    if let Some(address) = &source.mailbox_address {
        return address.clone();
    }
    let own = &config.policy.own_addresses;
    inbound
        .to
        .iter()
        .chain(&inbound.cc)
        .filter_map(|m| address::normalise(&m.address))
        .find(|a| own.contains(a))
        .unwrap_or_else(|| config.helpdesk_address.clone())
}
