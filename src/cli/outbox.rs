//! `postdesk outbox …`: the acknowledgements and agents' replies waiting, sent or failed,
//! and re-queueing.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::output::{clip, json, or_dash, table};
use super::words::said;
use crate::config::Config;
use crate::desk::outbox;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Every acknowledgement and agent's reply with its state, attempts and last error
    #[command(after_help = "Example:\n  postdesk outbox list --json")]
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Queue failed or waiting acknowledgements for delivery again, now
    #[command(after_help = "Examples:\n  postdesk outbox retry 17\n  postdesk outbox retry --all")]
    Retry {
        /// The outbox row to retry
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every row not sent yet
        #[arg(long)]
        all: bool,
    },
}

pub fn run(config: &Config, cmd: OutboxCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    match cmd {
        OutboxCommand::List { json: true } => json(&store.read(|tx| outbox::list(tx, None)).map_err(said)?)?,
        OutboxCommand::List { json: false } => {
            let rows: Vec<Vec<String>> = store
                .read(|tx| outbox::list(tx, None))
                .map_err(said)?
                .into_iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.kind.as_str().to_owned(),
                        or_dash(r.ticket.as_deref()),
                        r.state,
                        r.attempts.to_string(),
                        r.recipient,
                        r.sent_at.unwrap_or(r.next_attempt_at),
                        clip(&or_dash(r.last_error.as_deref()), 60),
                    ]
                })
                .collect();
            table(&["ID", "KIND", "TICKET", "STATE", "ATTEMPTS", "RECIPIENT", "SENT / NEXT TRY", "LAST ERROR"], &rows);
        }
        OutboxCommand::Retry { id, .. } => {
            let n = store.write(|tx| outbox::retry(tx, id, Utc::now())).map_err(said)?;
            if config.smtp.is_none() {
                println!(
                    "{n} acknowledgement(s) queued again; no [smtp] is configured, so they wait in the outbox \
                     until one is and `postdesk run` is started"
                );
            } else {
                println!(
                    "{n} acknowledgement(s) queued for delivery; a running `postdesk run` sends them within 5 s \
                     (`postdesk run --once` sends them now)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
