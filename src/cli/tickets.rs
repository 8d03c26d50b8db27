//! `postdesk tickets …` and `postdesk failed …`: reading and filtering what the pipeline
//! stored, and setting a ticket's state.

use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use clap::{Args, Subcommand};
use rusqlite::Connection;

use super::input;
use super::output::{clip, json, or_dash, table};
use crate::config::Config;
use crate::core::route::State;
use crate::store::tickets::{self, TicketSummary};

#[derive(Subcommand)]
pub enum TicketsCommand {
    /// Tickets, oldest first; the options narrow the list and combine
    #[command(after_help = "Examples:\n  postdesk tickets list --state open --org ACME\n  \
                            postdesk tickets list --visible-to alice@acme.example --json\n  \
                            postdesk tickets list --overdue")]
    List {
        #[command(flatten)]
        filter: ListFilter,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One ticket with its articles, oldest first
    #[command(after_help = "Example:\n  postdesk tickets show 2026112310000017")]
    Show {
        number: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Sets a ticket's state: new, open, pending or closed
    #[command(after_help = "Example:\n  postdesk tickets set-state 2026112310000017 closed")]
    SetState {
        number: String,
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
}

#[derive(Subcommand)]
pub enum FailedCommand {
    /// Every failed message with its reason
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
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
        TicketsCommand::Show { number, json: as_json } => {
            let Some(ticket) = store.read(|tx| tickets::show(tx, number.trim()))? else {
                bail!("no ticket {number}");
            };
            if as_json {
                json(&ticket)?;
            } else {
                print_ticket(&ticket);
            }
        }
        TicketsCommand::SetState { number, state, json: as_json } => {
            let state = input::state(&state)?;
            let number = number.trim();
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

fn set_state(conn: &Connection, number: &str, state: State) -> anyhow::Result<(String, TicketSummary)> {
    match tickets::set_state(conn, number, state, Utc::now())? {
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
}

impl ListArgs {
    fn check(f: ListFilter) -> anyhow::Result<ListArgs> {
        Ok(ListArgs {
            state: f.state.as_deref().map(input::state).transpose()?,
            org: f.org,
            customer: f.customer.as_deref().map(input::address).transpose()?,
            visible_to: f.visible_to.as_deref().map(input::address).transpose()?,
            overdue: f.overdue,
        })
    }

    /// The tickets selected, names resolved in the same transaction.
    fn list(&self, conn: &Connection) -> anyhow::Result<Vec<TicketSummary>> {
        let filter = tickets::Filter {
            state: self.state,
            organisation_id: input::organisation_opt(conn, self.org.as_deref())?,
            customer_id: input::customer_opt(conn, self.customer.as_deref())?,
            visible_to: input::customer_opt(conn, self.visible_to.as_deref())?,
            overdue_at: self.overdue.then(Utc::now),
        };
        Ok(tickets::list(conn, &filter)?)
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

pub fn run_failed(config: &Config, cmd: FailedCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_store(config)?;
    let FailedCommand::List { json: as_json } = cmd;
    let failed = tickets::failed(store.conn())?;
    if as_json {
        json(&failed)?;
    } else {
        let rows: Vec<Vec<String>> = failed
            .into_iter()
            .map(|f| vec![f.id.to_string(), f.updated_at, f.size.to_string(), clip(&f.source, 40), f.reason])
            .collect();
        table(&["ID", "LAST TRIED", "BYTES", "SOURCE", "REASON"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
