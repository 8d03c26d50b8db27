//! `postdesk check-config [--connect]`: the configuration is valid (loading it already
//! proved its types, values and template) and its passwords can be read; what is allowed
//! but probably not meant (a database directory that does not exist yet, acknowledgements
//! with nowhere to go) is warned of; with `--connect`, every mailbox and the SMTP server
//! answer.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, Database, MailboxConfig};
use crate::desk::oauth::fix;
use crate::imap::{self, ImapError};
use crate::oauth::{CredentialError, Keeper};
use crate::smtp::Smtp;
use crate::store::shared::SharedStore;
use crate::store::{Store, StoreError};

pub fn run(config: &Config, connect: bool) -> anyhow::Result<ExitCode> {
    config.check_passwords()?;
    for warning in warnings(config) {
        eprintln!("postdesk: warning: {warning}");
    }
    let file = config.file.as_ref().map_or("built-in defaults".to_owned(), |f| f.display().to_string());
    println!(
        "configuration OK ({file}); database {}; {} mailbox(es); SMTP {}",
        config.database.shown(),
        config.mailboxes.len(),
        config.smtp.as_ref().map_or("not configured".to_owned(), |s| format!("{}:{}", s.host, s.port))
    );
    if !connect {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let all_ok = runtime.block_on(async {
        let mut all_ok = true;
        if let Database::Postgres(_) = &config.database {
            all_ok &= report(&format!("database {}", config.database.shown()), try_database(config).await);
        }
        // The tokens are the database's: a check opens one that exists, never a new one.
        let store = match config.oauth2.is_empty() || !config.database.may_exist() {
            true => None,
            false => Some(SharedStore::open(&config.database).await?),
        };
        let keeper = Keeper::new(config, store);
        for name in config.oauth2.keys() {
            all_ok &= report(&format!("OAuth2 {name}"), try_provider(&keeper, name).await);
        }
        for m in &config.mailboxes {
            let result = try_mailbox(m, &keeper).await;
            all_ok &= report(&format!("mailbox {} (IMAP {}:{})", m.name, m.host, m.port), result);
        }
        if let Some(s) = &config.smtp {
            let result = match Smtp::new(s, &config.policy.loop_header, 1, Arc::clone(&keeper)) {
                Ok(smtp) => smtp.check().await.map_err(|e| format!("SMTP: {e}")),
                Err(e) => Err(format!("setup: {e}")),
            };
            all_ok &= report(&format!("SMTP {}:{}", s.host, s.port), result);
        }
        Ok::<_, anyhow::Error>(all_ok)
    })?;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether the server takes our sign-in and has postdesk's tables (never creating them).
async fn try_database(config: &Config) -> Result<(), String> {
    let database = config.database.clone();
    let opened = tokio::task::spawn_blocking(move || Store::existing(&database).map(drop)).await;
    match opened.map_err(|e| e.to_string())? {
        Ok(()) => Ok(()),
        Err(StoreError::Missing(_)) => Err("connected, but it has no postdesk tables yet: `postdesk run` or \
             `postdesk ingest` creates them"
            .to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// What is allowed but probably not meant; said on standard error, the check still passes.
fn warnings(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    if let Database::Sqlite(db) = &config.database {
        if !db.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).is_dir() {
            found.push(format!(
                "database.path: the directory of {} does not exist (yet): systemd creates /var/lib/postdesk when \
                 the service first starts; elsewhere, create it",
                db.display()
            ));
        }
    }
    match (&config.smtp, config.policy.ack.enabled) {
        (Some(_), false) => {
            found.push("[smtp] is configured but acknowledgement.enabled = false: nothing is sent".to_owned())
        }
        (None, true) => found.push(
            "acknowledgements are enabled but no [smtp] is configured: they wait in the outbox, unsent".to_owned(),
        ),
        _ => {}
    }
    if config.web.is_some() && config.smtp.is_none() {
        found.push(
            "[web] serves the portal but no [smtp] is configured: its sign-in links wait in the outbox".to_owned(),
        );
    }
    if config.portal.public_form && config.web.is_none() {
        found.push("portal.public_form = true, but without [web] listen nothing serves the form".to_owned());
    }
    found
}

fn report(endpoint: &str, result: Result<(), String>) -> bool {
    match &result {
        Ok(()) => println!("{endpoint}: OK"),
        Err(e) => println!("{endpoint}: FAILED: {e}"),
    }
    result.is_ok()
}

/// A good access token now (renewed if due): "token request refused: invalid_grant —
/// run `postdesk oauth login m365`" when the sign-in is gone.
async fn try_provider(keeper: &Keeper, name: &str) -> Result<(), String> {
    match keeper.token(name).await {
        Ok(_) => Ok(()),
        Err(CredentialError::NeedsSignIn { why, .. }) => Err(format!("{why} — {}", fix(name))),
        Err(e) => Err(e.to_string()),
    }
}

/// Logs in and opens the watched folder; what failed is named by its step.
async fn try_mailbox(m: &MailboxConfig, keeper: &Keeper) -> Result<(), String> {
    let connected = match keeper.credential(&m.login).await {
        Ok(credential) => imap::connect(m, &credential).await,
        Err(e) => Err(ImapError::from(e)),
    };
    let mut session = connected.map_err(|e| {
        let step = match &e {
            ImapError::Connect(..) => "connection (DNS or TCP)",
            ImapError::Tls(..) => "TLS certificate or handshake",
            ImapError::NoStarttls(..) => "STARTTLS",
            ImapError::Auth(..) => "authentication",
            ImapError::Password(..) => "password",
            ImapError::NeedsSignIn { .. } => "OAuth2 sign-in",
            ImapError::Token { .. } => "OAuth2 token",
            ImapError::Timeout(..) | ImapError::Protocol(..) => "IMAP",
        };
        format!("{step}: {e}")
    })?;
    let selected = imap::select(&mut session, &m.folder).await;
    imap::logout(session).await;
    selected.map(|_| ()).map_err(|e| format!("folder {:?}: {e}", m.folder))
}
