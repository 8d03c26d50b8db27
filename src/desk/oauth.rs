//! OAuth2 tokens as the service layer sees them: which token a login uses now, whether
//! it must be renewed first, what a renewal's result means for the provider's state,
//! and each provider's status for `oauth status`, `check-config` and the daemon.

use chrono::{DateTime, Utc};

use crate::config::{Config, OAuthProvider};
use crate::core::oauth::{renew_at, Failure, Grant, Issued, Refusal};
use crate::secret::Secret;
use crate::store::oauth::{self as store, TokenState};
use crate::store::{StoreError, Tx};

/// What a login needs to do about its token.
#[derive(Debug)]
pub enum Next {
    /// This access token is good for a while yet.
    Use(Secret),
    /// Renew first, with this refresh token (none: client credentials).
    Renew { tried: Option<Secret> },
    /// Only a new `postdesk oauth login` helps; why.
    NeedsSignIn(String),
    /// Another process claimed the renewal (`begin_renewal` only).
    RenewingElsewhere,
}

pub fn next(tx: &Tx, provider: &OAuthProvider, now: DateTime<Utc>) -> Result<Next, StoreError> {
    let row = store::get(tx, &provider.name)?;
    if let Some(row) = &row {
        if row.state == TokenState::NeedsSignIn {
            let why = row.last_result.clone().unwrap_or_else(|| "the sign-in was refused".to_owned());
            return Ok(Next::NeedsSignIn(why));
        }
        if let Some(access) = row.access.as_ref().filter(|a| now < renew_at(a.issued_at, a.expires_at)) {
            return Ok(Next::Use(access.secret.clone()));
        }
    }
    Ok(match (provider.grant, row.and_then(|r| r.refresh_token)) {
        (Grant::ClientCredentials, _) => Next::Renew { tried: None },
        (Grant::RefreshToken, Some(token)) => Next::Renew { tried: Some(token) },
        (Grant::RefreshToken, None) => Next::NeedsSignIn("never signed in".to_owned()),
    })
}

/// When the access token of `name` is due for renewal, if there is one.
pub fn renewal_due(tx: &Tx, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(store::get(tx, name)?.and_then(|row| row.access).map(|a| renew_at(a.issued_at, a.expires_at)))
}

/// The access token while it has not expired, even when it is due for renewal: what a
/// login uses when a renewal failed in a way that may pass.
pub fn unexpired(tx: &Tx, name: &str, now: DateTime<Utc>) -> Result<Option<Secret>, StoreError> {
    let row = store::get(tx, name)?;
    Ok(row.and_then(|r| r.access).filter(|a| now < a.expires_at).map(|a| a.secret))
}

/// How long a renewal may take before another process may try it.
const RENEWAL_CLAIM: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// `next`, claiming the renewal when one is due (in a write transaction): one process
/// at a time renews, with the refresh token stored now.
pub fn begin_renewal(tx: &Tx, provider: &OAuthProvider, now: DateTime<Utc>) -> Result<Next, StoreError> {
    match next(tx, provider, now)? {
        Next::Renew { tried } if store::claim_renewal(tx, &provider.name, now, now + RENEWAL_CLAIM)? => {
            Ok(Next::Renew { tried })
        }
        Next::Renew { .. } => Ok(Next::RenewingElsewhere),
        other => Ok(other),
    }
}

/// Records a renewal's result (ending its claim); the provider's state after it. A
/// sign-in made meanwhile (another refresh token stored) is kept, whatever the result.
pub fn renewed(
    tx: &Tx,
    name: &str,
    tried: Option<&Secret>,
    result: &Result<Issued, Failure>,
    now: DateTime<Utc>,
) -> Result<TokenState, StoreError> {
    match result {
        Ok(issued) => store::renewed(tx, name, tried, &issued.access, issued.refresh_token.as_ref(), now)?,
        Err(failure) => {
            let state = match (failure.refusal, tried) {
                // A refused refresh token: the person must sign in again.
                (Refusal::NeedsSignIn, Some(_)) => TokenState::NeedsSignIn,
                _ => TokenState::Failing,
            };
            store::failed(tx, name, tried, state, &failure.why, now)?;
        }
    }
    Ok(store::get(tx, name)?.map_or(TokenState::Failing, |row| row.state))
}

/// A mail server refused access token `token` (revoked early, scopes changed): the next
/// login renews it rather than sending it again until it is due.
pub fn token_refused(tx: &Tx, name: &str, token: &Secret) -> Result<(), StoreError> {
    store::forget_access(tx, name, token)
}

/// A completed `postdesk oauth login`: its tokens replace the old ones.
pub fn signed_in(tx: &Tx, name: &str, issued: &Issued, now: DateTime<Utc>) -> Result<(), StoreError> {
    store::signed_in(tx, name, issued.refresh_token.as_ref(), &issued.access, now)
}

/// A provider as `oauth status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub grant: &'static str,
    /// "mailbox support (support@contoso.example)", "smtp (…)": who signs in with it.
    pub used_by: Vec<String>,
    pub state: ProviderState,
    /// Seconds until the access token expires (negative: expired).
    pub expires_in: Option<i64>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
}

impl Status {
    pub fn needs_sign_in(&self) -> bool {
        self.state == ProviderState::NeedsSignIn
    }
}

/// A provider's state as `oauth status` shows it (`--json`: snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    Ok,
    /// The last renewal failed in a way that may pass; the daemon tries again.
    Failing,
    NeedsSignIn,
    /// Client credentials not asked for yet.
    NotUsedYet,
}

impl ProviderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Ok => "ok",
            ProviderState::Failing => "failing",
            ProviderState::NeedsSignIn => "needs sign-in",
            ProviderState::NotUsedYet => "not used yet",
        }
    }
}

/// Every configured provider, in name order.
pub fn status(tx: &Tx, config: &Config, now: DateTime<Utc>) -> Result<Vec<Status>, StoreError> {
    let rows = store::list(tx)?;
    let statuses = config.oauth2.values().map(|provider| {
        let row = rows.iter().find(|r| r.provider == provider.name);
        let state = match (row.map(|r| (r.state, r.access.is_some())), provider.grant) {
            (Some((TokenState::NeedsSignIn, _)), _) | (None, Grant::RefreshToken) => ProviderState::NeedsSignIn,
            (Some((TokenState::Failing, _)), _) => ProviderState::Failing,
            (Some((TokenState::Ok, true)), _) => ProviderState::Ok,
            (Some((TokenState::Ok, false)) | None, _) => ProviderState::NotUsedYet,
        };
        let last_result = match (row, provider.grant) {
            (None, Grant::RefreshToken) => Some("never signed in".to_owned()),
            (row, _) => row.and_then(|r| r.last_result.clone()),
        };
        Status {
            name: provider.name.clone(),
            grant: match provider.grant {
                Grant::RefreshToken => "refresh_token",
                Grant::ClientCredentials => "client_credentials",
            },
            used_by: used_by(config, &provider.name),
            state,
            expires_in: row.and_then(|r| r.expires_at).map(|at| (at - now).num_seconds()),
            last_refresh_at: row.and_then(|r| r.last_refresh_at),
            last_result,
        }
    });
    Ok(statuses.collect())
}

/// Who signs in with provider `name`.
fn used_by(config: &Config, name: &str) -> Vec<String> {
    let mailboxes =
        config.mailboxes.iter().filter(|m| m.login.uses(name)).map(|m| format!("mailbox {} ({})", m.name, m.username));
    let smtp = config
        .smtp
        .iter()
        .filter_map(|s| s.credentials.as_ref())
        .filter(|(_, login)| login.uses(name))
        .map(|(user, _)| format!("smtp ({user})"));
    mailboxes.chain(smtp).collect()
}

/// The command that fixes a provider that needs sign-in, for every message that says so.
pub fn fix(name: &str) -> String {
    format!("run `postdesk oauth login {name}`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::from_toml;
    use crate::core::oauth::AccessToken;
    use crate::store::Store;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn issued(token: &str, refresh: Option<&str>, from: i64, to: i64) -> Issued {
        Issued {
            access: AccessToken { secret: Secret::new(token), issued_at: at(from), expires_at: at(to) },
            refresh_token: refresh.map(Secret::new),
        }
    }

    /// Signed in, a token is used until a quarter of its life is left, then renewed with
    /// the refresh token; a refused refresh token needs a new sign-in (and nothing else
    /// is tried), which a new login ends.
    #[test]
    fn a_token_lives_from_sign_in_to_refusal() {
        let config =
            from_toml("[oauth2.idp]\nprovider = 'generic'\nclient_id = 'c'\ntoken_url = 'https://idp.example/token'\n")
                .unwrap();
        let idp = config.oauth_provider("idp").unwrap();
        let mut store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                assert!(matches!(next(tx, idp, at(0))?, Next::NeedsSignIn(why) if why == "never signed in"));
                signed_in(tx, "idp", &issued("a1", Some("r1"), 0, 100), at(0))?;
                assert!(matches!(next(tx, idp, at(74))?, Next::Use(t) if t.expose() == "a1"));
                let Next::Renew { tried } = next(tx, idp, at(76))? else { panic!("due for renewal") };
                assert_eq!(tried.as_ref().map(Secret::expose), Some("r1"));
                let down = Err(Failure { refusal: Refusal::Other, why: "connection refused".into() });
                assert_eq!(renewed(tx, "idp", tried.as_ref(), &down, at(76))?, TokenState::Failing);
                assert_eq!(unexpired(tx, "idp", at(99))?.map(|s| s.expose().to_owned()), Some("a1".to_owned()));
                assert_eq!(unexpired(tx, "idp", at(100))?.map(|s| s.expose().to_owned()), None);
                let refused =
                    Err(Failure { refusal: Refusal::NeedsSignIn, why: "token request refused: invalid_grant".into() });
                assert_eq!(renewed(tx, "idp", tried.as_ref(), &refused, at(80))?, TokenState::NeedsSignIn);
                assert!(matches!(next(tx, idp, at(81))?, Next::NeedsSignIn(why) if why.contains("invalid_grant")));
                let shown = &status(tx, &config, at(81))?[0];
                assert!(shown.needs_sign_in() && shown.expires_in == Some(19), "{shown:?}");
                assert!(store::list(tx)?[0].expires_at.is_some(), "kept for the metric");
                signed_in(tx, "idp", &issued("a2", Some("r2"), 90, 190), at(90))?;
                assert!(matches!(next(tx, idp, at(91))?, Next::Use(t) if t.expose() == "a2"));
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    /// One process renews at a time; the claim ends with the renewal, or runs out.
    #[test]
    fn one_renewal_at_a_time() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                let claim = |tx: &Tx, s| store::claim_renewal(tx, "idp", at(s), at(s) + RENEWAL_CLAIM);
                assert!(claim(tx, 0)?, "the first claim");
                assert!(!claim(tx, 1)?, "held");
                renewed(tx, "idp", None, &Ok(issued("a1", None, 1, 100)), at(1))?;
                assert!(claim(tx, 2)?, "free again after the renewal");
                assert!(claim(tx, 63)?, "a claim that ran out");
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    /// A refusal of an old refresh token does not undo a sign-in made meanwhile.
    #[test]
    fn a_late_refusal_leaves_a_new_sign_in_alone() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                signed_in(tx, "idp", &issued("a1", Some("r1"), 0, 100), at(0))?;
                signed_in(tx, "idp", &issued("a2", Some("r2"), 10, 110), at(10))?;
                let refused =
                    Err(Failure { refusal: Refusal::NeedsSignIn, why: "token request refused: invalid_grant".into() });
                renewed(tx, "idp", Some(&Secret::new("r1")), &refused, at(11))?;
                let row = store::get(tx, "idp")?.unwrap();
                assert_eq!(
                    (row.state, row.refresh_token.map(|s| s.expose().to_owned())),
                    (TokenState::Ok, Some("r2".into()))
                );
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }
}
