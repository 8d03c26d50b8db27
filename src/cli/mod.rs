//! The command line: argument parsing and dispatch. Each command is a thin adapter that
//! loads the config, opens the store and prints; the work happens in the library.

mod check;
mod customers;
mod ingest;
mod input;
mod orgs;
mod outbox;
mod output;
mod tickets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::store::{Store, StoreError};

/// EX_TEMPFAIL: the database cannot be written now; an MTA will retry the delivery.
pub const EXIT_TEMPFAIL: u8 = 75;

#[derive(Parser)]
#[command(
    name = "postdesk",
    version,
    about = "Turns a helpdesk mailbox into tickets.",
    long_about = "postdesk turns a helpdesk mailbox into tickets: it parses each message, finds or creates \
                  the customer user and their organisation, opens a ticket or adds a follow-up in SQLite, \
                  and queues one acknowledgement per new ticket.\n\n\
                  Configuration comes from --config, else ./postdesk.toml when present, else built-in \
                  defaults; POSTDESK_SECTION__KEY environment variables override it \
                  (e.g. POSTDESK_DATABASE__PATH=/var/lib/postdesk/postdesk.db)."
)]
struct Cli {
    /// The TOML configuration file [default: ./postdesk.toml if present]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable; without timestamps under journald
    Auto,
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest messages from files, directories (Maildirs included) or standard input
    #[command(after_help = "Examples:\n  postdesk ingest fixtures/mail\n  postdesk ingest ~/Maildir\n  \
                            postdesk ingest - < message.eml     # as an MTA pipe\n\n\
                            Prints one line per message. Exit status: 0 when every message was stored \
                            (as a ticket, follow-up, duplicate or failed message), 75 when the database \
                            cannot be written (an MTA retries), 1 for a usage error.")]
    Ingest {
        /// Files, directories (read recursively) or - for standard input
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Watch the configured IMAP mailboxes and turn new mail into tickets
    #[command(after_help = "Examples:\n  postdesk --config /etc/postdesk/postdesk.toml run\n  \
                            postdesk run --once     # drain every mailbox's backlog, then exit (cron)\n\n\
                            Stops cleanly on SIGTERM or SIGINT: the message batch in hand is finished first.")]
    Run {
        /// Drain each mailbox once and exit instead of waiting for new mail
        #[arg(long)]
        once: bool,
    },
    /// List, read and change the state of tickets
    #[command(subcommand)]
    Tickets(tickets::TicketsCommand),
    /// Customer users: list, show, add, edit and merge
    #[command(subcommand)]
    Customers(customers::CustomersCommand),
    /// Organisations, the level above customer users: list, show, add, edit and merge
    #[command(subcommand)]
    Orgs(orgs::OrgsCommand),
    /// Messages that could not be processed, kept with their raw bytes
    #[command(subcommand)]
    Failed(tickets::FailedCommand),
    /// Acknowledgements: list them, retry failed ones
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// Validate the configuration and report every problem with its key
    #[command(after_help = "Examples:\n  postdesk --config /etc/postdesk/postdesk.toml check-config\n  \
                            postdesk check-config --connect    # also log in to every mailbox and the SMTP server\n\n\
                            Exit status 0 when all is well, 1 otherwise.")]
    CheckConfig {
        /// Also connect and log in to each IMAP mailbox and the SMTP server
        #[arg(long)]
        connect: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postdesk: {e:#}");
            exit_code_for(&e)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Ingest { paths } => ingest::run(&config, &paths),
        Command::Run { once } => run_daemon(config, once),
        Command::Tickets(cmd) => tickets::run_tickets(&config, cmd),
        Command::Customers(cmd) => customers::run(&config, cmd),
        Command::Orgs(cmd) => orgs::run(&config, cmd),
        Command::Failed(cmd) => tickets::run_failed(&config, cmd),
        Command::Outbox(cmd) => outbox::run(&config, cmd),
        Command::CheckConfig { connect } => check::run(&config, connect),
    }
}

fn run_daemon(config: Config, once: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        crate::daemon::run(std::sync::Arc::new(config), shutdown, once).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (systemd) or SIGINT (a terminal) asks the daemon to stop at the next safe point.
/// SIGHUP, which would otherwise kill it on the spot, only says that a restart applies
/// configuration changes (a restart is always safe; see the README).
async fn cancel_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot listen for SIGTERM/SIGINT/SIGHUP; stop postdesk with SIGKILL");
        return;
    };
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => tracing::warn!("SIGHUP received: the configuration is not reloaded; restart postdesk to apply changes"),
        }
    };
    tracing::info!("{name} received: finishing the batch in hand, then stopping");
    shutdown.cancel();
}

/// 75 when the database is unavailable (so an MTA retries), 1 for everything else.
fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    let transient = e.chain().any(|c| c.downcast_ref::<StoreError>().is_some_and(StoreError::is_transient));
    ExitCode::from(if transient { EXIT_TEMPFAIL } else { 1 })
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open(&config.database_path)?)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rusqlite_migration=warn"));
    // async-imap traces every command it sends, LOGIN with its password included: never
    // let that through, whatever RUST_LOG asks for.
    let filter = filter.add_directive("async_imap=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // journald stamps every line itself; a second timestamp is noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Auto if under_journald => builder.without_time().with_ansi(false).init(),
        LogFormat::Auto | LogFormat::Human => builder.init(),
    }
}
