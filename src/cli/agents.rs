//! `postdesk agents …`: the accounts agents sign in to the web console with. Passwords
//! are read from a prompt (or one line of standard input), never from the command line,
//! where other users of the machine could see them.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::input;
use super::output::{json, table};
use super::words::said;
use crate::config::Config;
use crate::desk::agents::{self, Add, Agent, Role};

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Adds an agent; the password is asked for (or read from standard input)
    #[command(
        after_help = "Examples:\n  postdesk agents add ada@helpdesk.example --name 'Ada Lovelace' --role admin\n  \
                            pwgen -s 20 1 | tee /dev/stderr | postdesk agents add bob@helpdesk.example --name Bob --role agent\n\n\
                            Roles: admin (everything, and managing agents), editor (also creates and edits customers \
                            and organisations), agent (reads and answers tickets). A password has at least 10 \
                            characters; it is stored as an Argon2id hash."
    )]
    Add {
        /// The address the agent signs in with
        email: String,
        /// The name customers see on replies and agents see on tickets
        #[arg(long)]
        name: String,
        /// admin, editor or agent
        #[arg(long, value_parser = ["admin", "editor", "agent"])]
        role: String,
    },
    /// Every agent with role and state
    #[command(after_help = "Example:\n  postdesk agents list --json")]
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Sets a new password (asked for, or read from standard input); the agent's sessions end
    #[command(after_help = "Example:\n  postdesk agents passwd ada@helpdesk.example")]
    Passwd {
        /// The agent's address
        email: String,
    },
    /// The agent can no longer sign in; their sessions end at once
    #[command(after_help = "Example:\n  postdesk agents disable bob@helpdesk.example\n\n\
                            The agent's replies and notes stay on their tickets.")]
    Disable {
        /// The agent's address
        email: String,
    },
}

pub fn run(config: &Config, cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentsCommand::Add { email, name, role } => {
            let email = input::address(&email)?;
            let password = password(&format!("Password for {email}: "))?;
            let mut store = super::create_store(config)?;
            let role = Role::parse(&role).expect("clap allows only the three roles");
            let cmd = Add { email, name, role, password };
            let agent = store.write(|tx| agents::add(tx, &cmd, Utc::now())).map_err(said)?;
            println!("added agent {} ({}, {})", agent.email, agent.name, agent.role.as_str());
        }
        AgentsCommand::List { json: as_json } => {
            let list = super::open_store(config)?.read(agents::list).map_err(said)?;
            if as_json {
                json(&list)?;
            } else {
                print_agents(&list);
            }
        }
        AgentsCommand::Passwd { email } => {
            let email = input::address(&email)?;
            let password = password(&format!("New password for {email}: "))?;
            let mut store = super::open_store(config)?;
            store.write(|tx| agents::passwd(tx, &email, &password)).map_err(said)?;
            println!("password of {email} changed; their sessions ended");
        }
        AgentsCommand::Disable { email } => {
            let email = input::address(&email)?;
            let mut store = super::open_store(config)?;
            store.write(|tx| agents::disable(tx, &email)).map_err(said)?;
            println!("disabled {email}; their sessions ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_agents(list: &[Agent]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let state = if a.disabled { "disabled" } else { "active" };
            vec![a.email.clone(), a.name.clone(), a.role.as_str().to_owned(), state.to_owned(), a.created_at.clone()]
        })
        .collect();
    table(&["EMAIL", "NAME", "ROLE", "STATE", "ADDED"], &rows);
}

/// A password from a prompt without echo on a terminal, else the first line of
/// standard input (its line end removed, nothing else).
fn password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password(prompt)?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_owned();
    if line.is_empty() {
        super::usage!("no password on standard input: give it as one line, or run this on a terminal");
    }
    Ok(line)
}
