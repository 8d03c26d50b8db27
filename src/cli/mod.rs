//! The command line: argument parsing and dispatch. Each command is a thin adapter that
//! loads the config, opens the store and prints; the work happens in the library.

mod agents;
mod check;
mod customers;
mod failed;
mod ingest;
mod input;
mod migrate_db;
mod oauth;
mod orgs;
mod outbox;
mod output;
mod tickets;
mod words;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::store::{Store, StoreError};

/// EX_USAGE: the command line was wrong.
pub const EXIT_USAGE: u8 = 64;
/// EX_TEMPFAIL: not the message's fault and may pass (database unavailable, broken
/// configuration while ingesting); an MTA keeps the mail and retries.
pub const EXIT_TEMPFAIL: u8 = 75;

/// A mistake in what the user typed (a malformed value), as opposed to a failure while
/// doing what they asked: exits 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Fails with a `UsageError`.
macro_rules! usage {
    ($($arg:tt)*) => { return Err($crate::cli::UsageError(format!($($arg)*)).into()) };
}
pub(crate) use usage;

const GLOBAL: &str = "Global options";

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
                  (e.g. POSTDESK_DATABASE__PATH=/var/lib/postdesk/postdesk.db).",
    after_help = "Exit status: 0 success, 1 error, 64 usage error, 75 temporary failure (the database \
                  cannot be written now; `ingest -` also for any failure that is not the message's fault, \
                  so that an MTA retries).\n\n\
                  Examples:\n  postdesk --config /etc/postdesk/postdesk.toml tickets list --state open\n  \
                  postdesk ingest fixtures/mail\n  postdesk help customers"
)]
struct Cli {
    /// The TOML configuration file [default: ./postdesk.toml if present]
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    config: Option<PathBuf>,
    /// Where systemd credentials (password_credential) are read from when not run by
    /// systemd [default: $CREDENTIALS_DIRECTORY]
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    credentials_dir: Option<PathBuf>,
    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, help_heading = GLOBAL)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable; without timestamps under journald; colour only on a terminal
    Auto,
    /// Human-readable with timestamps
    Human,
    /// One JSON object per line
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest messages from files, mbox files, directories (Maildirs included) or standard input
    #[command(after_help = "Examples:\n  postdesk ingest fixtures/mail\n  postdesk ingest ~/Maildir     \
                            # with its .Folder subfolders\n  postdesk ingest archive.mbox\n  \
                            postdesk ingest - < message.eml     # as an MTA pipe\n\n\
                            Prints one line per message once it is committed. Files are only read, never \
                            moved or deleted; ingesting one again is recognised as a duplicate.\n\n\
                            Exit status: 0 when every message was stored (as a ticket, follow-up, duplicate \
                            or failed message; also when there was nothing to ingest), 64 for a usage error, \
                            75 when the database cannot be written now — and, with -, for any failure that \
                            is not the message's fault (the MTA keeps the mail and retries) — 1 otherwise.")]
    Ingest {
        /// Files (a message or an mbox), directories (read recursively) or - for standard input
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Watch the configured IMAP mailboxes, turn new mail into tickets and send the
    /// acknowledgements through [smtp]
    #[command(after_help = "Examples:\n  postdesk --config /etc/postdesk/postdesk.toml run\n  \
                            postdesk run --once     # drain every mailbox's backlog and the outbox, then exit\n\n\
                            With [smtp] but no [[mailbox]] (mail arrives by `ingest -` from an MTA), it only \
                            sends acknowledgements. Stops cleanly on SIGTERM or SIGINT: the message batch in \
                            hand is finished first.")]
    Run {
        /// Drain each mailbox once and exit instead of waiting for new mail
        #[arg(long)]
        once: bool,
    },
    /// Serve the agents' web console on [web] listen, without watching mailboxes
    #[command(after_help = "Examples:\n  postdesk --config /etc/postdesk/postdesk.toml web\n  \
                            POSTDESK_WEB__LISTEN=127.0.0.1:8080 postdesk web\n\n\
                            `postdesk run` serves the same console when [web] listen is set; run this one \
                            to serve it from another process (replies wait in the outbox for the daemon's \
                            sender). Agents sign in with the accounts of `postdesk agents`. Put a TLS proxy \
                            in front and set [web] secure_cookies = true when agents reach it over a network. \
                            Stops on SIGTERM or SIGINT after the requests in flight.")]
    Web,
    /// List, read and change the state of tickets; get articles and attachments out
    #[command(
        subcommand,
        after_help = "Examples:\n  postdesk tickets list --state open\n  \
                                        postdesk tickets show 2026112310000017"
    )]
    Tickets(tickets::TicketsCommand),
    /// Customer users: list, show, add, edit and merge
    #[command(
        subcommand,
        after_help = "Examples:\n  postdesk customers list --search acme\n  \
                                        postdesk customers show alice@acme.example"
    )]
    Customers(customers::CustomersCommand),
    /// Organisations, the level above customer users: list, show, add, edit and merge
    #[command(
        subcommand,
        after_help = "Examples:\n  postdesk orgs list\n  \
                                        postdesk orgs add 'ACME Widgets' --domain acme-widgets.com"
    )]
    Orgs(orgs::OrgsCommand),
    /// Messages that could not be processed, kept with their raw bytes: list, show, export, retry
    #[command(subcommand, after_help = "Examples:\n  postdesk failed list\n  postdesk failed retry --all")]
    Failed(failed::FailedCommand),
    /// The web console's agents: add, list, set a password, disable
    #[command(
        subcommand,
        after_help = "Examples:\n  postdesk agents add ada@helpdesk.example --name 'Ada Lovelace' --role admin\n  \
                                        postdesk agents list"
    )]
    Agents(agents::AgentsCommand),
    /// Acknowledgements and agents' replies: list them, queue failed ones again
    #[command(subcommand, after_help = "Examples:\n  postdesk outbox list\n  postdesk outbox retry --all")]
    Outbox(outbox::OutboxCommand),
    /// OAuth2 sign-in for mailboxes and SMTP (Microsoft 365, Google, others): sign in, see
    /// each provider's token status
    #[command(
        name = "oauth",
        subcommand,
        after_help = "Examples:\n  postdesk oauth login m365\n  postdesk oauth status"
    )]
    OAuth(oauth::OAuthCommand),
    /// Validate the configuration and report every problem with its key
    #[command(after_help = "Examples:\n  postdesk --config /etc/postdesk/postdesk.toml check-config\n  \
                            postdesk --config /etc/postdesk/postdesk.toml --credentials-dir /etc/postdesk/credentials \\\n    \
                            check-config --connect    # also log in to every mailbox and the SMTP server\n\n\
                            Checks types and values, reads every password (with --connect, also gets an \
                            OAuth2 access token from each [oauth2.NAME] provider), renders the acknowledgement \
                            template with sample values, and checks that the database's directory exists. \
                            Exit status 0 when all is well, 1 otherwise.")]
    CheckConfig {
        /// Also connect and log in to each IMAP mailbox and the SMTP server
        #[arg(long)]
        connect: bool,
    },
    /// Copy a SQLite database into an empty PostgreSQL database, with all its history
    #[command(after_help = "Example:\n  \
                            postdesk --config /etc/postdesk/postdesk.toml migrate-db \\\n    \
                            --from sqlite:/var/lib/postdesk/postdesk.db --to postgres://postdesk@db.example/postdesk\n\n\
                            Stop postdesk first. The target is signed in to with the password and TLS settings of \
                            [database] in the configuration (password_file, password_credential, tls, ca_file). \
                            Every table is copied in one transaction (tickets, articles, raw messages, \
                            attachments, customers, organisations, the ledger, the outbox, agents, sessions, \
                            tokens) and kept only when each has as many rows as in the source; a target that \
                            already holds data is refused. The SQLite file stays as it is (migrated first if older).")]
    MigrateDb {
        /// The database to copy: sqlite:PATH
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The empty PostgreSQL database to copy into: postgres://USER@HOST[:PORT]/DATABASE
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(cli.log_format);
    // Commands that only print may simply end, quietly, when their reader goes away, like
    // any Unix tool. Not ingest (it goes on, see ingest.rs), nor the commands that talk
    // to servers: a peer that resets a TLS connection mid-write must be an error, not a
    // signal that kills the daemon.
    let only_prints = matches!(
        cli.command,
        Command::Tickets(_)
            | Command::Customers(_)
            | Command::Orgs(_)
            | Command::Failed(_)
            | Command::Outbox(_)
            | Command::Agents(_)
    );
    if only_prints {
        default_sigpipe();
    }
    // Anything but a usage error while an MTA pipes a message in may pass — a bug too —:
    // the MTA must keep the mail and retry, not bounce it.
    let from_mta = matches!(&cli.command, Command::Ingest { paths } if paths.iter().any(|p| p.as_os_str() == "-"));
    if from_mta {
        tempfail_on_panic();
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postdesk: {e:#}");
            exit_code_for(&e, from_mta)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config::load(cli.config.as_deref(), cli.credentials_dir.as_deref())?;
    match cli.command {
        Command::Ingest { paths } => ingest::run(&config, &paths),
        Command::Run { once } => run_daemon(config, once),
        Command::Web => run_web(config),
        Command::Tickets(cmd) => tickets::run_tickets(&config, cmd),
        Command::Customers(cmd) => customers::run(&config, cmd),
        Command::Orgs(cmd) => orgs::run(&config, cmd),
        Command::Failed(cmd) => failed::run(&config, cmd),
        Command::Outbox(cmd) => outbox::run(&config, cmd),
        Command::Agents(cmd) => agents::run(&config, cmd),
        Command::OAuth(cmd) => oauth::run(&config, cmd),
        Command::CheckConfig { connect } => check::run(&config, connect),
        Command::MigrateDb { from, to } => migrate_db::run(&config, &from, &to),
    }
}

/// The async runtime of the daemon and the console, with the allocator's arenas limited
/// first. Its blocking threads (store calls, parsing) end after a second without work
/// instead of tokio's ten, and give back their stacks and caches sooner after a backlog.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    crate::daemon::memory::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()
}

fn run_daemon(config: Config, once: bool) -> anyhow::Result<ExitCode> {
    config.check_passwords()?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        crate::daemon::run(std::sync::Arc::new(config), shutdown, once).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn run_web(config: Config) -> anyhow::Result<ExitCode> {
    let Some(web) = config.web.clone() else {
        usage!("[web] listen is not set: add it to the configuration (e.g. listen = \"127.0.0.1:8080\") or set POSTDESK_WEB__LISTEN");
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let store = crate::store::shared::SharedStore::open(&config.database).await?;
        let listener = crate::web::bind(&web).await?;
        tracing::info!("serving the console on {} (http://{})", web.base_url, web.listen);
        let console = crate::web::Console::new(store, std::sync::Arc::new(config), web, None);
        let serving = crate::web::serve_beside_intake(listener, crate::web::router(console), shutdown);
        let served = tokio::task::spawn_blocking(move || serving.join()).await?;
        served.map_err(|_| anyhow::anyhow!("the web console panicked"))??;
        Ok::<_, anyhow::Error>(())
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

/// 64 for a usage error; 75 when the failure may pass (or, for an MTA's pipe, is not the
/// message's fault); 1 for everything else.
fn exit_code_for(e: &anyhow::Error, from_mta: bool) -> ExitCode {
    if e.chain().any(|c| c.is::<UsageError>()) {
        return ExitCode::from(EXIT_USAGE);
    }
    let transient = e.chain().any(|c| c.downcast_ref::<StoreError>().is_some_and(StoreError::is_transient));
    ExitCode::from(if transient || from_mta { EXIT_TEMPFAIL } else { 1 })
}

/// The database as it is: only `ingest` and `run` create one, so that a command run in
/// the wrong directory says so instead of showing an empty helpdesk.
fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::existing(&config.database)?)
}

/// The database, created on first use.
fn create_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::create(&config.database)?)
}

/// A panic exits 75 instead of Rust's 101, which an MTA would take for a permanent
/// failure and bounce the customer's message.
fn tempfail_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(i32::from(EXIT_TEMPFAIL));
    }));
}

fn default_sigpipe() {
    // SAFETY: called before any other thread starts; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    // async-imap traces every command it sends, LOGIN with its password included: its
    // log records are never bridged, whatever RUST_LOG asks for.
    let _ = tracing_log::LogTracer::builder().ignore_crate("async_imap").init();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{}", crate::store::QUIET_LOGS)));
    // journald stamps every line itself; a second timestamp is noise.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Auto if under_journald => {
            fmt::layer().without_time().with_ansi(false).with_writer(std::io::stderr).boxed()
        }
        LogFormat::Auto | LogFormat::Human => fmt::layer().with_ansi(colour).with_writer(std::io::stderr).boxed(),
    };
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter).with(layer));
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command a user can run explains each of its arguments and shows an example.
    #[test]
    fn every_command_documents_its_arguments_and_has_an_example() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name()).trim().to_owned();
            for arg in cmd.get_arguments() {
                let builtin = ["help", "version"].contains(&arg.get_id().as_str());
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path}: argument {} has no description", arg.get_id()));
                }
            }
            let subcommands: Vec<_> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
            let after = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            let shows_itself =
                after.lines().any(|l| l.trim_start().starts_with("postdesk") && l.contains(cmd.get_name()));
            if !after.contains("Example") || !shows_itself {
                missing.push(format!("{path}: no example of itself"));
            }
            for sub in subcommands {
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn global_options_are_listed_apart() {
        let help = Cli::command().render_long_help().to_string();
        let global = help.find("Global options:").expect("a global options heading");
        assert!(help[global..].contains("--config") && help[global..].contains("--credentials-dir"), "{help}");
    }
}
