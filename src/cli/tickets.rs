//! `postdesk tickets …`: reading and filtering what the pipeline stored, getting an
//! article's or attachment's bytes out, and setting a ticket's state.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::store::Tx;
use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Subcommand};

use super::input;
use super::output::{clip, json, or_dash, table};
use crate::config::Config;
use crate::core::route::State;
use crate::store::tickets::{self, TicketSummary};

#[derive(Subcommand)]
pub enum TicketsCommand {
    /// Tickets, newest first; the options narrow the list and combine
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
            let filter = ListArgs::check(filter)?;
            let list = store.read(|tx| filter.list(tx))?;
            if as_json {
                json(&list)?;
            } else {
                print_tickets(&list);
            }
        }
        TicketsCommand::Show { number, raw: Some(article), .. } => {
            let number = input::ticket_number(&number)?;
            let Some(raw) = store.read(|tx| tickets::raw_article(tx, &number, article))? else {
                bail!("ticket {number} has no article {article} with the bytes it arrived with");
            };
            std::io::stdout().write_all(&raw).context("cannot write to standard output")?;
        }
        TicketsCommand::Show { number, json: as_json, raw: None } => {
            let number = input::ticket_number(&number)?;
            let Some(ticket) = store.read(|tx| tickets::show(tx, &number))? else {
                bail!("no ticket {number}");
            };
            if as_json {
                json(&ticket)?;
            } else {
                print_ticket(&ticket);
            }
        }
        TicketsCommand::Attachment { number, name, output } => {
            let number = input::ticket_number(&number)?;
            let all = store.read(|tx| tickets::attachments(tx, &number))?;
            save_attachments(&number, all, name.as_deref(), output.as_deref())?;
        }
        TicketsCommand::SetState { number, state, json: as_json } => {
            let state = input::state(&state)?;
            let number = &input::ticket_number(&number)?;
            let (previous, ticket) = store.write(|tx| set_state(tx, number, state))?;
            if as_json {
                json(&ticket)?;
            } else {
                println!("ticket {number}: {previous} -> {}", ticket.state);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One attachment to standard output, or the chosen ones into a directory.
fn save_attachments(
    number: &str,
    all: Vec<(String, Vec<u8>)>,
    name: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    if all.is_empty() {
        bail!("ticket {number} has no attachments (or does not exist)");
    }
    let chosen: Vec<(String, Vec<u8>)> = match name {
        Some(name) => all.into_iter().filter(|(n, _)| n == name).take(1).collect(),
        None => all,
    };
    if chosen.is_empty() {
        bail!("ticket {number} has no attachment {:?}", name.unwrap_or_default());
    }
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

fn set_state(tx: &Tx, number: &str, state: State) -> anyhow::Result<(String, TicketSummary)> {
    match tickets::set_state(tx, number, state, Utc::now())? {
        Some(changed) => Ok(changed),
        None => bail!("no ticket {number}"),
    }
}

/// The list options with addresses and the state checked, before the store is opened.
struct ListArgs {
    state: Option<State>,
    org: Option<String>,
    customer: Option<String>,
    visible_to: Option<String>,
    overdue: bool,
    since: Option<chrono::DateTime<Utc>>,
    search: Option<String>,
    limit: Option<u32>,
}

impl ListArgs {
    fn check(f: ListFilter) -> anyhow::Result<ListArgs> {
        Ok(ListArgs {
            state: f.state.as_deref().map(input::state).transpose()?,
            org: f.org,
            customer: f.customer.as_deref().map(input::address).transpose()?,
            visible_to: f.visible_to.as_deref().map(input::address).transpose()?,
            overdue: f.overdue,
            since: f.since.as_deref().map(input::since).transpose()?,
            search: f.search,
            limit: f.limit,
        })
    }

    /// The tickets selected, names resolved in the same transaction.
    fn list(&self, tx: &Tx) -> anyhow::Result<Vec<TicketSummary>> {
        let filter = tickets::Filter {
            state: self.state,
            organisation_id: input::organisation_opt(tx, self.org.as_deref())?,
            customer_id: input::customer_opt(tx, self.customer.as_deref())?,
            visible_to: input::customer_opt(tx, self.visible_to.as_deref())?,
            overdue_at: self.overdue.then(Utc::now),
            since: self.since,
            search: self.search.clone(),
            limit: self.limit,
        };
        Ok(tickets::list(tx, &filter)?)
    }
}

/// Tickets as an aligned table, one line each.
pub fn print_tickets(list: &[TicketSummary]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.number.clone(),
                t.state.clone(),
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

fn print_ticket(ticket: &tickets::TicketDetail) {
    let t = &ticket.summary;
    println!("Ticket {}  [{}]  {}", t.number, t.state, t.subject);
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
