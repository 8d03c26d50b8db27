//! `postdesk failed …`: messages the pipeline could not turn into tickets, kept with
//! their bytes: list them, look at one, get its bytes out, and run them through again.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;

use super::output::{clip_start, fields, json, table};
use super::words::said;
use crate::config::Config;
use crate::desk::failed::{self, Retried, Retry};
use crate::store::tickets::FailedMessage;

#[derive(Subcommand)]
pub enum FailedCommand {
    /// Every failed message: where it came from, its size and why it failed
    #[command(after_help = "Example:\n  postdesk failed list --json")]
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One failed message: origin, reason, attempts and its header
    #[command(after_help = "Example:\n  postdesk failed show 3")]
    Show {
        /// The failed message's number, as `failed list` shows it
        id: i64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Write a failed message's raw bytes to standard output
    #[command(after_help = "Example:\n  postdesk failed export 3 > failed-3.eml")]
    Export {
        /// The failed message's number
        id: i64,
    },
    /// Run failed messages through the pipeline again (say, after an upgrade that fixed
    /// the parser): each becomes a ticket, follow-up or duplicate, or stays failed
    #[command(after_help = "Examples:\n  postdesk failed retry 3\n  postdesk failed retry --all")]
    Retry {
        /// The failed message to retry
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every failed message
        #[arg(long)]
        all: bool,
    },
}

pub fn run(config: &Config, cmd: FailedCommand) -> anyhow::Result<ExitCode> {
    let mut store = super::open_store(config)?;
    match cmd {
        FailedCommand::List { json: true } => json(&store.read(failed::list).map_err(said)?)?,
        FailedCommand::List { json: false } => {
            let rows: Vec<Vec<String>> = store
                .read(failed::list)
                .map_err(said)?
                .into_iter()
                .map(|f| {
                    let tried = format!("{} ({}×)", f.updated_at, f.attempts);
                    vec![f.id.to_string(), tried, f.size.to_string(), clip_start(&f.origin, 48), f.reason]
                })
                .collect();
            table(&["ID", "LAST TRIED", "BYTES", "FROM", "REASON"], &rows);
        }
        FailedCommand::Show { id, json: as_json } => {
            let kept = store.read(|tx| failed::show(tx, id)).map_err(said)?;
            if as_json {
                json(&kept.failed)?;
            } else {
                print_failed(&kept.failed, &kept.raw);
            }
        }
        FailedCommand::Export { id } => {
            let kept = store.read(|tx| failed::show(tx, id)).map_err(said)?;
            std::io::stdout().write_all(&kept.raw).context("cannot write to standard output")?;
        }
        FailedCommand::Retry { id, .. } => {
            let retried = failed::retry(&mut store, config, id, Utc::now()).map_err(said)?;
            print_retried(&retried);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_failed(f: &FailedMessage, raw: &[u8]) {
    fields(&[
        ("Failed message", f.id.to_string()),
        ("From", f.origin.clone()),
        ("Reason", f.reason.clone()),
        ("Bytes", f.size.to_string()),
        ("Attempts", f.attempts.to_string()),
        ("First failed", f.created_at.clone()),
        ("Last tried", f.updated_at.clone()),
    ]);
    let text = String::from_utf8_lossy(&raw[..raw.len().min(64 * 1024)]);
    let header: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).take(40).collect();
    if !header.is_empty() {
        println!("\n{}", header.join("\n"));
    }
    println!("\n(`postdesk failed export {}` writes the whole message)", f.id);
}

/// One line per failed message, once the retry is committed.
fn print_retried(retried: &[Retried]) {
    if retried.is_empty() {
        println!("no failed messages");
    }
    for Retried { failed: f, result } in retried {
        match result {
            Retry::Oversized => println!(
                "failed message #{} ({}): not retried: it is over ingest.max_message_bytes (`postdesk failed \
                 export {}` gets what is kept)",
                f.id, f.origin, f.id
            ),
            Retry::Ingested(outcome) => println!("failed message #{} ({}): {outcome}", f.id, f.origin),
        }
    }
}
