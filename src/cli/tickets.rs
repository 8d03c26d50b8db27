//! `postdesk tickets …` and `postdesk failed …`: reading what the pipeline stored.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::output::{clip, json, or_dash, table};
use crate::config::Config;
use crate::store::tickets;

#[derive(Subcommand)]
pub enum TicketsCommand {
    /// Every ticket, oldest first
    #[command(after_help = "Example:\n  postdesk tickets list --json")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// One ticket with its articles, oldest first
    #[command(after_help = "Example:\n  postdesk tickets show 2026112310000017")]
    Show {
        number: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FailedCommand {
    /// Every failed message with its reason
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run_tickets(config: &Config, cmd: TicketsCommand) -> anyhow::Result<ExitCode> {
    let store = super::open_store(config)?;
    match cmd {
        TicketsCommand::List { json: true } => json(&tickets::list(store.conn())?)?,
        TicketsCommand::List { json: false } => {
            let rows: Vec<Vec<String>> = tickets::list(store.conn())?
                .into_iter()
                .map(|t| {
                    vec![
                        t.number,
                        t.state,
                        t.created_at,
                        or_dash(t.customer_email.as_deref()),
                        or_dash(t.organisation.as_deref()),
                        t.articles.to_string(),
                        clip(&t.ack, 24),
                        clip(&t.subject, 50),
                    ]
                })
                .collect();
            table(
                &[
                    "NUMBER",
                    "STATE",
                    "CREATED",
                    "CUSTOMER",
                    "ORGANISATION",
                    "ARTICLES",
                    "ACK",
                    "SUBJECT",
                ],
                &rows,
            );
        }
        TicketsCommand::Show {
            number,
            json: as_json,
        } => {
            let Some(ticket) = tickets::show(store.conn(), number.trim())? else {
                bail!("no ticket {number}");
            };
            if as_json {
                json(&ticket)?;
            } else {
                print_ticket(&ticket);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
    for (i, a) in ticket.article_list.iter().enumerate() {
        let from = match (&a.from_name, &a.from) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (_, addr) => or_dash(addr.as_deref()),
        };
        println!(
            "\n--- article {} ({}) {} from {from}",
            i + 1,
            a.direction,
            a.created_at
        );
        if !a.classification.is_empty() {
            println!("classified: {}", a.classification.join(", "));
        }
        println!("Subject: {}\n\n{}", a.subject, a.body.trim_end());
        for f in &a.attachments {
            println!(
                "[attachment] {} ({}, {} bytes)",
                f.filename, f.content_type, f.size
            );
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
            .map(|f| {
                vec![
                    f.id.to_string(),
                    f.updated_at,
                    f.size.to_string(),
                    clip(&f.source, 40),
                    f.reason,
                ]
            })
            .collect();
        table(&["ID", "LAST TRIED", "BYTES", "SOURCE", "REASON"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
