//! `postdesk tickets …`: reading and filtering what the pipeline stored, getting an
//! article's or attachment's bytes out, and setting a ticket's state. Parses and
//! prints; the work is `desk::tickets`'.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};

use super::input;
use super::output::{clip, json, or_dash, table};
use super::words::said;
use crate::config::Config;
use crate::desk::tickets;
use crate::store::tickets::{TicketDetail, TicketSummary};

#[derive(Subcommand)]
pub enum TicketsCommand {
    /// Tickets, newest activity first; the options narrow the list and combine
    #[command(after_help = "Examples:\n  postdesk tickets list --state open --org ACME\n  \
                            postdesk tickets list --visible-to alice@acme.example --json\n  \
                            postdesk tickets list --search printer --since 2026-11-01 --limit 20\n  \
                            postdesk tickets list --overdue")]
    List {
        #[command(flatten)]
        filter: ListFilter,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One ticket with its articles, oldest first
    #[command(after_help = "Examples:\n  postdesk tickets show 2026112310000017\n  \
                            postdesk tickets show 2026112310000017 --raw 2 > reply.eml")]
    Show {
        /// The ticket number (16 digits; the last is a check digit)
        number: String,
        /// Print JSON instead of text
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Write the bytes of this article (1 = the first) as they arrived, instead
        #[arg(long, value_name = "ARTICLE")]
        raw: Option<u32>,
    },
    /// Write an attachment's bytes to standard output, or every attachment into a directory
    #[command(after_help = "Examples:\n  postdesk tickets attachment 2026112310000017 invoice.pdf > invoice.pdf\n  \
                            postdesk tickets attachment 2026112310000017 --output ./files")]
    Attachment {
        /// The ticket number
        number: String,
        /// The attachment's name, as `tickets show` lists it
        #[arg(required_unless_present = "output")]
        name: Option<String>,
        /// Write the attachment (or, without NAME, every attachment) into this directory
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Sets a ticket's state: new, open, pending or closed
    #[command(after_help = "Example:\n  postdesk tickets set-state 2026112310000017 closed")]
    SetState {
        /// The ticket number
        number: String,
        /// new, open, pending or closed
        state: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ListFilter {
    /// Only tickets in this state: new, open, pending or closed
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only tickets filed under this organisation
    #[arg(long, value_name = "NAME")]
    org: Option<String>,
    /// Only tickets of the customer user with this address (from any of their addresses)
    #[arg(long, value_name = "EMAIL")]
    customer: Option<String>,
    /// Only what this customer user may see: their own tickets and those of their
    /// primary and linked organisations
    #[arg(long, value_name = "EMAIL")]
    visible_to: Option<String>,
    /// Only tickets not closed whose first response is due (respond-by time is past)
    #[arg(long)]
    overdue: bool,
    /// Only tickets created on or after this day (YYYY-MM-DD) or time (RFC 3339)
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Only tickets with this text in the subject or an article's body (any case)
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// At most this many tickets (the newest)
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

pub fn run_tickets(config: &Config, cmd: TicketsCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    match cmd {
        TicketsCommand::List { filter, json: as_json } => {
            let query = filter.check()?;
            let list = store.read(|tx| tickets::list(tx, &query, Utc::now())).map_err(said)?;
            if as_json {
                json(&list)?;
            } else {
                print_tickets(&list);
            }
        }
        TicketsCommand::Show { number, raw: Some(article), .. } => {
            let number = input::ticket_number(&number)?;
            let raw = store.read(|tx| tickets::raw_article(tx, &number, article)).map_err(said)?;
            std::io::stdout().write_all(&raw).context("cannot write to standard output")?;
        }
        TicketsCommand::Show { number, json: as_json, raw: None } => {
            let number = input::ticket_number(&number)?;
            let ticket = store.read(|tx| tickets::show(tx, &number)).map_err(said)?;
            if as_json {
                json(&ticket)?;
            } else {
                print_ticket(&ticket);
            }
        }
        TicketsCommand::Attachment { number, name, output } => {
            let number = input::ticket_number(&number)?;
            let chosen = store.read(|tx| tickets::attachments(tx, &number, name.as_deref())).map_err(said)?;
            save_attachments(chosen, output.as_deref())?;
        }
        TicketsCommand::SetState { number, state, json: as_json } => {
            let state = input::state(&state)?;
            let cmd = tickets::SetState { number: input::ticket_number(&number)?, state };
            let changed = store.write(|tx| tickets::set_state(tx, &cmd, Utc::now())).map_err(said)?;
            if as_json {
                json(&changed.ticket)?;
            } else {
                println!("ticket {}: {} -> {}", cmd.number, changed.previous.as_str(), changed.ticket.state.as_str());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one attachment chosen to standard output, or the chosen ones into a directory.
fn save_attachments(chosen: Vec<tickets::File>, output: Option<&Path>) -> anyhow::Result<()> {
    let Some(output) = output else {
        // clap requires NAME without --output, so this is the one named.
        return std::io::stdout().write_all(&chosen[0].1).context("cannot write to standard output");
    };
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    for (filename, bytes) in chosen {
        // Names were made safe when the message was stored; a second attachment of the
        // same name does not overwrite the first.
        let path = free_path(output, &filename);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `dir/name`, or `dir/name (2)` … when that exists.
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let base = Path::new(name).file_name().map_or_else(|| "attachment".into(), |n| n.to_owned());
    let mut path = dir.join(&base);
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{} ({n})", base.to_string_lossy()));
        n += 1;
    }
    path
}

impl ListFilter {
    /// The query with addresses, the state and the date checked, before the store is
    /// opened.
    fn check(self) -> anyhow::Result<tickets::Query> {
        Ok(tickets::Query {
            state: self.state.as_deref().map(input::state).transpose()?,
            org: self.org,
            customer: self.customer.as_deref().map(input::address).transpose()?,
            visible_to: self.visible_to.as_deref().map(input::address).transpose()?,
            overdue: self.overdue,
            since: self.since.as_deref().map(input::since).transpose()?,
            search: self.search,
            limit: self.limit,
            ..Default::default()
        })
    }
}

/// Tickets as an aligned table, one line each.
pub fn print_tickets(list: &[TicketSummary]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.number.clone(),
                t.state.as_str().to_owned(),
                t.created_at.clone(),
                or_dash(t.respond_by.as_deref()),
                or_dash(t.customer_email.as_deref()),
                or_dash(t.organisation.as_deref()),
                t.articles.to_string(),
                clip(&t.ack, 24),
                clip(&t.subject, 50),
            ]
        })
        .collect();
    table(
        &["NUMBER", "STATE", "CREATED", "RESPOND BY", "CUSTOMER", "ORGANISATION", "ARTICLES", "ACK", "SUBJECT"],
        &rows,
    );
}

fn print_ticket(ticket: &TicketDetail) {
    let t = &ticket.summary;
    println!("Ticket {}  [{}]  {}", t.number, t.state.as_str(), t.subject);
    println!("Customer:     {}", or_dash(t.customer_email.as_deref()));
    println!("Organisation: {}", or_dash(t.organisation.as_deref()));
    println!("Created:      {}   Updated: {}", t.created_at, t.updated_at);
    if let Some(due) = &t.respond_by {
        println!("Respond by:   {due}");
    }
    println!("Acknowledgement: {}", t.ack);
    if let Some(referred) = &t.referred_ticket {
        println!(
            "Refers to:    {referred} (its sender may not write into that ticket; merge by hand if it belongs there)"
        );
    }
    if t.unauthenticated {
        println!("Unauthenticated: the receiving server recorded dmarc=fail (the sender's address may be forged)");
    }
    for (i, a) in ticket.article_list.iter().enumerate() {
        let from = match (&a.from_name, &a.from) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (_, addr) => or_dash(addr.as_deref()),
        };
        let internal = if a.internal { ", internal" } else { "" };
        println!("\n--- article {} ({}{internal}) {} from {from}", i + 1, a.direction, a.created_at);
        if !a.classification.is_empty() {
            println!("classified: {}", a.classification.join(", "));
        }
        println!("Subject: {}\n\n{}", a.subject, a.body.trim_end());
        for f in &a.attachments {
            println!("[attachment] {} ({}, {} bytes)", f.filename, f.content_type, f.size);
        }
    }
}
