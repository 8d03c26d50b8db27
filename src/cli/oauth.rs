//! `postdesk oauth …`: signing a provider in (the device flow where the provider offers
//! it, else a browser and a loopback redirect) and every provider's token status.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use super::output::{json, or_dash, table};
use crate::config::Config;
use crate::desk::oauth;
use crate::oauth::DevicePrompt;

#[derive(Subcommand)]
pub enum OAuthCommand {
    /// Sign in to an [oauth2.NAME] provider and keep its refresh token in the database
    #[command(after_help = "Examples:\n  postdesk oauth login m365\n  postdesk oauth login google --browser\n\n\
                            Prints the address to open (and, for the device flow, the code to enter) and \
                            waits until the sign-in is done. Sign in as the mailbox's user (or an account \
                            with access to it). The refresh token is stored in the database only; a running \
                            daemon picks it up by itself within seconds. Not for grant = \
                            \"client_credentials\", which signs in with the client secret.")]
    Login {
        /// The NAME of an [oauth2.NAME] section
        name: String,
        /// Sign in in a browser on this machine (authorization code with PKCE and a redirect
        /// to 127.0.0.1) even where the provider offers the device flow
        #[arg(long)]
        browser: bool,
    },
    /// Every provider: its grant, who signs in with it, the access token's expiry and the
    /// last renewal's result
    #[command(after_help = "Example:\n  postdesk oauth status\n\n\
                            Exit status 0 when no provider needs sign-in, 1 otherwise.")]
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, cmd: OAuthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OAuthCommand::Login { name, browser } => login(config, &name, browser),
        OAuthCommand::Status { json: as_json } => {
            let statuses = match config.database.may_exist() {
                true => super::open_store(config)?.read(|tx| oauth::status(tx, config, Utc::now()))?,
                // No database yet: nothing is signed in.
                false => crate::store::Store::open_in_memory()?.read(|tx| oauth::status(tx, config, Utc::now()))?,
            };
            if as_json {
                json(&statuses)?;
            } else {
                let rows: Vec<Vec<String>> = statuses
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.grant.to_owned(),
                            s.state.as_str().to_owned(),
                            s.expires_in.map_or("-".to_owned(), expiry),
                            s.last_refresh_at.map_or("-".to_owned(), crate::store::timestamp),
                            or_dash(s.last_result.as_deref()),
                            s.used_by.join(", "),
                        ]
                    })
                    .collect();
                table(&["PROVIDER", "GRANT", "STATE", "TOKEN EXPIRES", "LAST RENEWAL", "RESULT", "USED BY"], &rows);
                for s in statuses.iter().filter(|s| s.needs_sign_in()) {
                    eprintln!("postdesk: {} needs sign-in: {}", s.name, oauth::fix(&s.name));
                }
            }
            let all_signed_in = statuses.iter().all(|s| !s.needs_sign_in());
            Ok(if all_signed_in { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// "in 59m 12s", "expired 3m ago".
fn expiry(seconds: i64) -> String {
    let text = |s: i64| match s {
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    };
    if seconds >= 0 {
        format!("in {}", text(seconds))
    } else {
        format!("expired {} ago", text(-seconds))
    }
}

fn login(config: &Config, name: &str, browser: bool) -> anyhow::Result<ExitCode> {
    let Some(provider) = config.oauth_provider(name) else {
        let known: Vec<&str> = config.oauth2.keys().map(String::as_str).collect();
        super::usage!("there is no [oauth2.{name}] section in the configuration (there are: {known:?})");
    };
    if provider.grant == crate::core::oauth::Grant::ClientCredentials {
        super::usage!(
            "[oauth2.{name}] has grant = \"client_credentials\": it signs in with its client secret, no login needed"
        );
    }
    let mut store = super::create_store(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let issued = runtime.block_on(async {
        match (browser, provider.endpoints.device_authorization_url.is_some()) {
            (false, true) => crate::oauth::device_login(provider, show_device_prompt).await,
            _ => {
                crate::oauth::browser_login(provider, |address| {
                    println!("Open this address in a browser on this machine and sign in:\n\n  {address}\n");
                    println!("Waiting for the sign-in…");
                })
                .await
            }
        }
    });
    let issued = issued.map_err(|e| anyhow::anyhow!("OAuth2 {name}: sign-in failed: {e}"))?;
    if issued.refresh_token.is_none() {
        anyhow::bail!(
            "OAuth2 {name}: the provider gave no refresh token, so the daemon could not renew the access token: \
             ask for offline access (Microsoft: the offline_access scope; generic providers: their own setting)"
        );
    }
    store.write(|tx| oauth::signed_in(tx, name, &issued, Utc::now()))?;
    println!("Signed in: the refresh token of {name} is stored in {}.", config.database.shown());
    Ok(ExitCode::SUCCESS)
}

fn show_device_prompt(prompt: &DevicePrompt) {
    match &prompt.verification_uri_complete {
        Some(complete) => {
            println!("Open {complete}\n(or {} and enter the code {})", prompt.verification_uri, prompt.user_code)
        }
        None => println!("Open {} and enter the code {}", prompt.verification_uri, prompt.user_code),
    }
    println!("The code is valid for {} minutes. Waiting for the sign-in…", prompt.expires_in.as_secs() / 60);
    // The prompt must reach a reader that waits on a pipe before the wait begins.
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
