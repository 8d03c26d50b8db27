//! The OAuth2 tokens of each provider and how their last renewal went. SQL only: when
//! to renew, and what a refusal means, is `desk::oauth`'s.

use chrono::{DateTime, Utc};

use super::sql::{params, Row};
use super::{timestamp, StoreError, Tx};
use crate::core::oauth::AccessToken;
use crate::secret::Secret;

/// Whether a provider's tokens can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Ok,
    /// Refused by the provider: only `postdesk oauth login` helps.
    NeedsSignIn,
    /// The last renewal failed in a way that may pass.
    Failing,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Ok => "ok",
            TokenState::NeedsSignIn => "needs_sign_in",
            TokenState::Failing => "failing",
        }
    }

    fn parse(text: &str) -> Option<TokenState> {
        [TokenState::Ok, TokenState::NeedsSignIn, TokenState::Failing].into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub provider: String,
    pub refresh_token: Option<Secret>,
    pub access: Option<AccessToken>,
    /// When the last access token ends (kept after a refused sign-in forgot the token).
    pub expires_at: Option<DateTime<Utc>>,
    pub state: TokenState,
    pub last_refresh_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
}

const COLUMNS: &str =
    "provider, refresh_token, access_token, issued_at, expires_at, state, last_refresh_at, last_result";

fn time(r: &Row, idx: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = r.get(idx)?;
    text.map(|t| DateTime::parse_from_rfc3339(&t).map(|d| d.to_utc()).map_err(|e| super::sql::invalid(idx, e)))
        .transpose()
}

fn tokens(r: &Row) -> Result<Tokens, StoreError> {
    let state: String = r.get(5)?;
    let state = TokenState::parse(&state).ok_or_else(|| super::sql::invalid(5, format!("state {state:?}")))?;
    let access = match (r.get::<Option<String>>(2)?, time(r, 3)?, time(r, 4)?) {
        (Some(secret), Some(issued_at), Some(expires_at)) => {
            Some(AccessToken { secret: Secret::new(secret), issued_at, expires_at })
        }
        _ => None,
    };
    Ok(Tokens {
        provider: r.get(0)?,
        refresh_token: r.get::<Option<String>>(1)?.map(Secret::new),
        access,
        expires_at: time(r, 4)?,
        state,
        last_refresh_at: time(r, 6)?,
        last_result: r.get(7)?,
    })
}

pub fn get(tx: &Tx<'_>, provider: &str) -> Result<Option<Tokens>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM oauth_tokens WHERE provider = ?1");
    tx.query_opt(&sql, &[provider], tokens)
}

pub fn list(tx: &Tx<'_>) -> Result<Vec<Tokens>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM oauth_tokens ORDER BY provider");
    let sql = &sql;
    let rows = tx.query_all(sql, &(), tokens)?;
    Ok(rows)
}

/// A sign-in (`oauth login`): the tokens replace whatever there was, and the state is ok.
pub fn signed_in(
    tx: &Tx<'_>,
    provider: &str,
    refresh_token: Option<&Secret>,
    access: &AccessToken,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO oauth_tokens (provider, refresh_token, access_token, issued_at, expires_at, state,
             last_refresh_at, last_result)
         VALUES (?1, ?2, ?3, ?4, ?5, 'ok', ?6, 'signed in')
         ON CONFLICT (provider) DO UPDATE SET refresh_token = excluded.refresh_token,
             access_token = excluded.access_token, issued_at = excluded.issued_at, expires_at = excluded.expires_at,
             state = 'ok', last_refresh_at = excluded.last_refresh_at, last_result = excluded.last_result,
             renewing_until = NULL",
        params![
            provider,
            refresh_token.map(Secret::expose),
            access.secret.expose(),
            timestamp(access.issued_at),
            timestamp(access.expires_at),
            timestamp(now),
        ],
    )?;
    Ok(())
}

/// A renewed access token (and the new refresh token, when the provider rotates them),
/// got with `tried`; left out when another refresh token was stored meanwhile.
pub fn renewed(
    tx: &Tx<'_>,
    provider: &str,
    tried: Option<&Secret>,
    access: &AccessToken,
    refresh_token: Option<&Secret>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO oauth_tokens (provider, refresh_token, access_token, issued_at, expires_at, state,
             last_refresh_at, last_result)
         VALUES (?1, ?2, ?3, ?4, ?5, 'ok', ?6, 'renewed')
         ON CONFLICT (provider) DO UPDATE SET refresh_token = COALESCE(excluded.refresh_token, oauth_tokens.refresh_token),
             access_token = excluded.access_token, issued_at = excluded.issued_at, expires_at = excluded.expires_at,
             state = 'ok', last_refresh_at = excluded.last_refresh_at, last_result = excluded.last_result,
             renewing_until = NULL
         WHERE oauth_tokens.refresh_token IS NOT DISTINCT FROM ?7",
        params![
            provider,
            refresh_token.map(Secret::expose),
            access.secret.expose(),
            timestamp(access.issued_at),
            timestamp(access.expires_at),
            timestamp(now),
            tried.map(Secret::expose),
        ],
    )?;
    Ok(())
}

/// Claims the renewal of `provider`'s token until `until`: false while another process
/// holds an unexpired claim.
pub fn claim_renewal(
    tx: &Tx<'_>,
    provider: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = "INSERT INTO oauth_tokens (provider, state, renewing_until) VALUES (?1, 'ok', ?3)
               ON CONFLICT (provider) DO UPDATE SET renewing_until = excluded.renewing_until
                   WHERE oauth_tokens.renewing_until IS NULL OR oauth_tokens.renewing_until <= ?2
               RETURNING provider";
    let claimed = tx.query_opt(sql, params![provider, timestamp(now), timestamp(until)], |_| Ok(()));
    Ok(claimed?.is_some())
}

/// A renewal with `tried` (the refresh token sent, none for client credentials) that
/// failed: why, and whether a new sign-in is needed. A refused sign-in also forgets its
/// tokens, which no longer work. A sign-in made meanwhile (another refresh token) is
/// left as it is.
pub fn failed(
    tx: &Tx<'_>,
    provider: &str,
    tried: Option<&Secret>,
    state: TokenState,
    result: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO oauth_tokens (provider, state, last_refresh_at, last_result) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (provider) DO UPDATE SET state = excluded.state, last_refresh_at = excluded.last_refresh_at,
             last_result = excluded.last_result, renewing_until = NULL,
             refresh_token = CASE WHEN excluded.state = 'needs_sign_in' THEN NULL ELSE oauth_tokens.refresh_token END,
             access_token = CASE WHEN excluded.state = 'needs_sign_in' THEN NULL ELSE oauth_tokens.access_token END
         WHERE oauth_tokens.refresh_token IS NOT DISTINCT FROM ?5",
        params![provider, state.as_str(), timestamp(now), result, tried.map(Secret::expose)],
    )?;
    Ok(())
}

/// Forgets the access token `token` a server refused, so that the next login renews it.
pub fn forget_access(tx: &Tx<'_>, provider: &str, token: &Secret) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE oauth_tokens SET access_token = NULL WHERE provider = ?1 AND access_token = ?2",
        params![provider, token.expose()],
    )?;
    Ok(())
}
