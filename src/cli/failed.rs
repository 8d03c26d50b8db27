//! `postdesk failed …`: messages the pipeline could not turn into tickets, kept with
//! their bytes: list them, look at one, get its bytes out, and run them through again.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Subcommand;

use super::output::{clip_start, fields, json, table};
use crate::config::Config;
use crate::desk::ingest::{self, Message, Source};
use crate::store::tickets::{self, FailedMessage};

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
        FailedCommand::List { json: true } => json(&store.read(tickets::failed)?)?,
        FailedCommand::List { json: false } => {
            let rows: Vec<Vec<String>> = store
                .read(tickets::failed)?
                .into_iter()
                .map(|f| {
                    let tried = format!("{} ({}×)", f.updated_at, f.attempts);
                    vec![f.id.to_string(), tried, f.size.to_string(), clip_start(&f.origin, 48), f.reason]
                })
                .collect();
            table(&["ID", "LAST TRIED", "BYTES", "FROM", "REASON"], &rows);
        }
        FailedCommand::Show { id, json: as_json } => {
            let (failed, raw) = one(&mut store, id)?;
            if as_json {
                json(&failed)?;
            } else {
                print_failed(&failed, &raw);
            }
        }
        FailedCommand::Export { id } => {
            let (_, raw) = one(&mut store, id)?;
            std::io::stdout().write_all(&raw).context("cannot write to standard output")?;
        }
        FailedCommand::Retry { id, .. } => {
            let ids = match id {
                Some(id) => vec![id],
                None => store.read(tickets::failed_ids)?,
            };
            retry(&mut store, config, &ids)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one(store: &mut crate::store::Store, id: i64) -> anyhow::Result<(FailedMessage, Vec<u8>)> {
    match store.read(|tx| tickets::failed_one(tx, id))? {
        Some(found) => Ok(found),
        None => bail!("no failed message {id}"),
    }
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

/// All in one transaction: each message's line is printed once it is committed.
fn retry(store: &mut crate::store::Store, config: &Config, ids: &[i64]) -> anyhow::Result<()> {
    if ids.is_empty() {
        println!("no failed messages");
        return Ok(());
    }
    let mut found = Vec::new();
    for &id in ids {
        found.push((id, one(store, id)?));
    }
    let (skipped, retried): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|(_, (failed, _))| ingest::was_oversized(&failed.reason));
    let mut lines: Vec<String> = skipped
        .iter()
        .map(|(id, (failed, _))| {
            format!(
                "failed message #{id} ({}): not retried: it is over ingest.max_message_bytes (`postdesk failed \
                 export {id}` gets what is kept)",
                failed.origin
            )
        })
        .collect();
    let messages: Vec<Message> = retried
        .iter()
        .map(|(_, (failed, raw))| Message {
            prepared: ingest::prepare(raw, &config.policy),
            raw: raw.clone(),
            source: Source {
                identity: failed.source.clone(),
                label: failed.origin.clone(),
                mailbox_address: None,
                authserv_id: None,
            },
        })
        .collect();
    let reports = ingest::ingest_batch(store, config, &messages, Utc::now())?;
    for ((id, (failed, _)), report) in retried.iter().zip(reports) {
        lines.push(format!("failed message #{id} ({}): {}", failed.origin, report.outcome));
    }
    println!("{}", lines.join("\n"));
    Ok(())
}
