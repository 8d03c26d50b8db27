//! The daemon's (and `check-config --connect`'s) access tokens: the store's while they
//! are good, renewed a quarter of their life before they end (`keep_fresh`), one renewal
//! at a time per provider, with backoff after a failure. A refused sign-in stops every
//! request to the provider until `postdesk oauth login` stores a new one, which is
//! noticed by itself: nothing then hammers the provider or the mail server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Login, OAuthProvider};
use crate::core::oauth::Refusal;
use crate::core::retry;
use crate::desk::oauth::{self as desk, Next};
use crate::secret::{Credential, Secret};
use crate::store::oauth::TokenState;
use crate::store::shared::SharedStore;
use crate::store::StoreError;

/// How often a provider that needs sign-in is looked up in the store (no request leaves
/// the machine for it).
const SIGN_IN_POLL: Duration = Duration::from_secs(2);
/// How long a login waits for another process's renewal.
const RENEWED_ELSEWHERE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the password cannot be read: {0}")]
    Password(String),
    #[error("OAuth2 {provider} needs sign-in ({why}): {}", desk::fix(provider))]
    NeedsSignIn { provider: String, why: String },
    #[error("OAuth2 {provider}: {why}")]
    Unavailable { provider: String, why: String, refusal: Refusal },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// After a failed renewal: how many in a row, and when the next may be tried.
#[derive(Default)]
struct Pause {
    failures: u32,
    until: Option<Instant>,
    last: Option<String>,
}

impl Pause {
    /// Counts a failure `why` and sets the wait before the next renewal (from a minute
    /// when only a configuration change helps), saying so once.
    fn failed(&mut self, name: &str, why: &str, slowly: bool) {
        let delay = retry::backoff(self.failures, slowly, fastrand::f64());
        let secs = delay.as_secs();
        match self.failures {
            0 => warn!("OAuth2 {name}: token renewal failed: {why}; trying again with backoff (next in {secs}s)"),
            _ => debug!("OAuth2 {name}: token renewal still failing: {why}; next in {secs}s"),
        }
        self.failures = self.failures.saturating_add(1);
        self.until = Some(Instant::now() + delay);
        self.last = Some(why.to_owned());
    }
}

pub struct Keeper {
    /// None where there is no database (yet): then no provider is signed in.
    store: Option<SharedStore>,
    /// Each provider, and its pause: one renewal at a time per provider.
    providers: BTreeMap<String, (OAuthProvider, Mutex<Pause>)>,
}

impl Keeper {
    /// The tokens of `config`'s providers, kept in `store`.
    pub fn new(config: &Config, store: Option<SharedStore>) -> Arc<Keeper> {
        let providers = config.oauth2.iter().map(|(name, p)| (name.clone(), (p.clone(), Mutex::default()))).collect();
        Arc::new(Keeper { store, providers })
    }

    /// For logins with passwords only.
    pub fn passwords_only() -> Arc<Keeper> {
        Arc::new(Keeper { store: None, providers: BTreeMap::new() })
    }

    fn provider(&self, name: &str) -> &OAuthProvider {
        &self.providers.get(name).expect("validation checked every oauth2 reference").0
    }

    /// What a login with `login` sends now: the password read, or a good token.
    pub async fn credential(&self, login: &Login) -> Result<Credential, CredentialError> {
        match login {
            Login::Password(source) => source.read().map(Credential::Password).map_err(CredentialError::Password),
            Login::OAuth { mechanism, provider } => Ok(Credential::Token(*mechanism, self.token(provider).await?)),
        }
    }

    /// After a server refused a login with `credential`: a token is not sent again.
    pub async fn refused(&self, login: &Login, credential: &Credential) {
        let (Login::OAuth { provider, .. }, Credential::Token(_, token), Some(store)) =
            (login, credential, &self.store)
        else {
            return;
        };
        let (name, token) = (provider.clone(), token.clone());
        if let Err(e) = store.write(move |tx| desk::token_refused(tx, &name, &token)).await {
            debug!("OAuth2 {provider}: cannot forget the refused token: {e}");
        }
    }

    /// A good access token of provider `name`, renewed first when it is due.
    pub async fn token(&self, name: &str) -> Result<Secret, CredentialError> {
        let Some(store) = &self.store else {
            let why = "never signed in: there is no database yet".to_owned();
            return Err(CredentialError::NeedsSignIn { provider: name.to_owned(), why });
        };
        let mut pause = self.providers[name].1.lock().await;
        let provider = self.provider(name).clone();
        match store.read(move |tx| desk::next(tx, &provider, Utc::now())).await? {
            Next::Use(token) => return Ok(token),
            Next::NeedsSignIn(why) => return Err(CredentialError::NeedsSignIn { provider: name.to_owned(), why }),
            Next::Renew { .. } | Next::RenewingElsewhere => {}
        }
        if let (Some(until), Some(last)) = (pause.until, &pause.last) {
            if Instant::now() < until {
                let why = format!("{last}; next renewal in {}s", (until - Instant::now()).as_secs());
                return unexpired(store, name, why, Refusal::Other).await;
            }
        }
        // What is stored now, and the claim, in one transaction: a renewal another process
        // finished meanwhile is used, not repeated with the refresh token it replaced.
        let (provider, now) = (self.provider(name).clone(), Utc::now());
        match store.write(move |tx| desk::begin_renewal(tx, &provider, now)).await? {
            Next::Use(token) => Ok(token),
            Next::NeedsSignIn(why) => Err(CredentialError::NeedsSignIn { provider: name.to_owned(), why }),
            Next::RenewingElsewhere => self.renewed_elsewhere(store, name).await,
            Next::Renew { tried } => self.renew(store, name, tried, &mut pause).await,
        }
    }

    /// Renews with `tried` (client credentials: none) and records the result, in a task
    /// of its own: a caller that gives up waiting does not lose a rotated refresh token.
    async fn renew(
        &self,
        store: &SharedStore,
        name: &str,
        tried: Option<Secret>,
        pause: &mut Pause,
    ) -> Result<Secret, CredentialError> {
        let (provider, store_handle, owned) = (self.provider(name).clone(), store.clone(), name.to_owned());
        let renewal = tokio::spawn(async move {
            let now = Utc::now();
            let result = match &tried {
                Some(refresh_token) => super::refresh(&provider, refresh_token, now).await,
                None => super::client_credentials(&provider, now).await,
            };
            let recorded = result.clone().map_err(|e| e.failure());
            let state = store_handle.write(move |tx| desk::renewed(tx, &owned, tried.as_ref(), &recorded, now)).await;
            (result, state)
        });
        let failed = |e: tokio::task::JoinError| StoreError::Unavailable(format!("the renewal task failed: {e}"));
        let (result, state) = renewal.await.map_err(failed)?;
        match (result, state) {
            (Ok(issued), Ok(_)) => {
                match pause.failures {
                    0 => debug!("OAuth2 {name}: access token renewed, valid until {}", issued.access.expires_at),
                    n => info!("OAuth2 {name}: access token renewed again after {n} failures"),
                }
                *pause = Pause::default();
                Ok(issued.access.secret)
            }
            (Err(e), Ok(TokenState::NeedsSignIn)) => {
                error!("OAuth2 {name}: token renewal refused: {e} — {}", desk::fix(name));
                *pause = Pause::default();
                Err(CredentialError::NeedsSignIn { provider: name.to_owned(), why: e.to_string() })
            }
            (Err(e), _) => {
                let refusal = e.refusal();
                pause.failed(name, &e.to_string(), refusal == Refusal::Client);
                unexpired(store, name, e.to_string(), refusal).await
            }
            // The provider answered but the answer cannot be kept: the token serves this
            // login, and the next renewal waits for the database.
            (Ok(issued), Err(e)) => {
                pause.failed(name, &format!("the renewed token cannot be stored: {e}"), false);
                Ok(issued.access.secret)
            }
        }
    }

    /// Another process is renewing the token: its result, once it is stored (bounded),
    /// else the token in hand while it lasts.
    async fn renewed_elsewhere(&self, store: &SharedStore, name: &str) -> Result<Secret, CredentialError> {
        let deadline = Instant::now() + RENEWED_ELSEWHERE_WAIT;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let provider = self.provider(name).clone();
            match store.read(move |tx| desk::next(tx, &provider, Utc::now())).await? {
                Next::Use(token) => return Ok(token),
                Next::NeedsSignIn(why) => return Err(CredentialError::NeedsSignIn { provider: name.to_owned(), why }),
                Next::Renew { .. } | Next::RenewingElsewhere => {}
            }
        }
        let why = "another postdesk process is renewing the token".to_owned();
        unexpired(store, name, why, Refusal::Other).await
    }

    /// Renews provider `name`'s token ahead of its end until `shutdown`; while it needs
    /// sign-in, only looks at the store.
    pub async fn keep_fresh(self: Arc<Self>, name: String, shutdown: CancellationToken) {
        loop {
            let wait = match self.token(&name).await {
                Ok(_) => self.until_renewal(&name).await,
                Err(CredentialError::NeedsSignIn { .. }) => SIGN_IN_POLL,
                Err(_) => self.until_retry(&name).await,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn until_renewal(&self, name: &str) -> Duration {
        let Some(store) = &self.store else { return SIGN_IN_POLL };
        let owned = name.to_owned();
        let due = store.read(move |tx| desk::renewal_due(tx, &owned)).await.ok().flatten();
        due.map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(SIGN_IN_POLL)
            .max(Duration::from_millis(200))
    }

    async fn until_retry(&self, name: &str) -> Duration {
        let pause = self.providers[name].1.lock().await;
        pause
            .until
            .map(|u| u.saturating_duration_since(Instant::now()))
            .unwrap_or(SIGN_IN_POLL)
            .max(Duration::from_millis(200))
    }

    /// Whether provider `name` waits for `postdesk oauth login` (asks the store only).
    pub async fn needs_sign_in(&self, name: &str) -> bool {
        let Some(store) = &self.store else { return true };
        let provider = self.provider(name).clone();
        matches!(store.read(move |tx| desk::next(tx, &provider, Utc::now())).await, Ok(Next::NeedsSignIn(_)))
    }

    /// Returns once provider `name` no longer needs sign-in (or at `shutdown`).
    pub async fn wait_for_sign_in(&self, name: &str, shutdown: &CancellationToken) {
        loop {
            if !self.needs_sign_in(name).await {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(SIGN_IN_POLL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The access token while it has not expired, else `why` as the error.
async fn unexpired(store: &SharedStore, name: &str, why: String, refusal: Refusal) -> Result<Secret, CredentialError> {
    let owned = name.to_owned();
    match store.read(move |tx| desk::unexpired(tx, &owned, Utc::now())).await? {
        Some(token) => Ok(token),
        None => Err(CredentialError::Unavailable { provider: name.to_owned(), why, refusal }),
    }
}
