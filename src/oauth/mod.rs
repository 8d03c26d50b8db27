//! The OAuth2 adapter: the token endpoint's grants (refresh token, client credentials,
//! device authorization, authorization code with PKCE and a loopback redirect) over
//! HTTPS with the same certificate checks as IMAP. Speaks HTTP, keeps nothing: what is
//! stored, and when a token is renewed, is `desk::oauth`'s and the daemon's.

mod keeper;

pub use keeper::{CredentialError, Keeper};

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl, ErrorResponse,
    PkceCodeChallenge, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    TokenResponse, TokenUrl,
};

use crate::config::OAuthProvider;
use crate::core::oauth::{refusal, AccessToken, Failure, Issued, Refusal};
use crate::secret::Secret;

/// One HTTP request to the provider, from connecting to its last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A token without `expires_in` is taken to last this long (RFC 6749 recommends the field).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);
/// A token said to last less is renewed as if it lasted this long, not in a busy loop.
const SHORTEST_LIFETIME: Duration = Duration::from_secs(2);
/// How long `oauth login --browser` waits for the browser to come back.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The provider answered with an RFC 6749 error.
    #[error("token request refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { code: String, description: Option<String> },
    #[error("the token endpoint cannot be reached: {0}")]
    Unreachable(String),
    #[error("the token endpoint's answer is not understood: {0}")]
    Protocol(String),
    #[error("{0}")]
    Setup(String),
}

impl OAuthError {
    /// What the refusal means; everything that is not a refusal may pass.
    pub fn refusal(&self) -> Refusal {
        match self {
            OAuthError::Refused { code, .. } => refusal(code),
            OAuthError::Setup(_) => Refusal::Client,
            OAuthError::Unreachable(_) | OAuthError::Protocol(_) => Refusal::Other,
        }
    }

    /// The error as the service layer records it.
    pub fn failure(&self) -> Failure {
        Failure { refusal: self.refusal(), why: self.to_string() }
    }
}

/// What a person must do to sign in with the device flow.
#[derive(Debug)]
pub struct DevicePrompt {
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    pub expires_in: Duration,
}

fn http_client(provider: &OAuthProvider) -> Result<reqwest::Client, OAuthError> {
    let tls = crate::tls::client_config(provider.ca_file.as_deref()).map_err(OAuthError::Setup)?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        // Following redirects would let an endpoint send our secrets elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| OAuthError::Setup(format!("cannot set up the HTTP client: {e}")))
}

fn url<T>(
    what: &str,
    text: &str,
    make: impl FnOnce(String) -> Result<T, oauth2::url::ParseError>,
) -> Result<T, OAuthError> {
    make(text.to_owned()).map_err(|e| OAuthError::Setup(format!("{what} {text:?}: {e}")))
}

fn client_secret(provider: &OAuthProvider) -> Result<Option<ClientSecret>, OAuthError> {
    let Some(source) = &provider.client_secret else { return Ok(None) };
    let secret = source.read().map_err(|e| OAuthError::Setup(format!("the client secret cannot be read: {e}")))?;
    Ok(Some(ClientSecret::new(secret.expose().to_owned())))
}

fn scopes(provider: &OAuthProvider) -> impl Iterator<Item = Scope> + '_ {
    provider.endpoints.scopes.iter().map(|s| Scope::new(s.clone()))
}

/// The error of a failed request, in our terms.
fn request_error<RE: std::error::Error + 'static, T: ErrorResponse>(e: RequestTokenError<RE, T>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(response) => {
            let value = serde_json::to_value(&response).unwrap_or_default();
            let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            OAuthError::Refused { code: field("error").unwrap_or_default(), description: field("error_description") }
        }
        RequestTokenError::Request(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            OAuthError::Unreachable(text)
        }
        RequestTokenError::Parse(e, _) => OAuthError::Protocol(e.to_string()),
        RequestTokenError::Other(text) => OAuthError::Protocol(text),
    }
}

fn issued(response: &impl TokenResponse, now: DateTime<Utc>) -> Issued {
    let lifetime = response.expires_in().unwrap_or(ASSUMED_LIFETIME).max(SHORTEST_LIFETIME);
    let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1));
    Issued {
        access: AccessToken {
            secret: Secret::new(response.access_token().secret().clone()),
            issued_at: now,
            expires_at,
        },
        refresh_token: response.refresh_token().map(|t| Secret::new(t.secret().clone())),
    }
}

/// The client with its id, secret and token endpoint: what every grant needs.
macro_rules! client {
    ($provider:expr) => {{
        let p: &OAuthProvider = $provider;
        let token_url = url("token_url", &p.endpoints.token_url, TokenUrl::new)?;
        let client = BasicClient::new(ClientId::new(p.client_id.clone())).set_token_uri(token_url);
        match client_secret(p)? {
            Some(secret) => client.set_client_secret(secret),
            None => client,
        }
    }};
}

/// A new access token for a refresh token (which the provider may rotate).
pub async fn refresh(provider: &OAuthProvider, token: &Secret, now: DateTime<Utc>) -> Result<Issued, OAuthError> {
    let http = http_client(provider)?;
    let refresh = RefreshToken::new(token.expose().to_owned());
    let client = client!(provider);
    let response = client
        .exchange_refresh_token(&refresh)
        .add_scopes(scopes(provider))
        .request_async(&http)
        .await
        .map_err(request_error)?;
    Ok(issued(&response, now))
}

/// An access token for the application itself.
pub async fn client_credentials(provider: &OAuthProvider, now: DateTime<Utc>) -> Result<Issued, OAuthError> {
    let http = http_client(provider)?;
    let client = client!(provider);
    let response = client
        .exchange_client_credentials()
        .add_scopes(scopes(provider))
        .request_async(&http)
        .await
        .map_err(request_error)?;
    Ok(issued(&response, now))
}

/// RFC 8628: asks for a user code, shows it with `prompt`, and waits until the person
/// signed in (or the code expired).
pub async fn device_login(provider: &OAuthProvider, prompt: impl FnOnce(&DevicePrompt)) -> Result<Issued, OAuthError> {
    let Some(device_url) = &provider.endpoints.device_authorization_url else {
        return Err(OAuthError::Setup("the provider has no device_authorization_url".to_owned()));
    };
    let http = http_client(provider)?;
    let client = client!(provider).set_device_authorization_url(url(
        "device_authorization_url",
        device_url,
        DeviceAuthorizationUrl::new,
    )?);
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes(provider))
        .request_async(&http)
        .await
        .map_err(request_error::<_, BasicErrorResponse>)?;
    prompt(&DevicePrompt {
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details.verification_uri_complete().map(|u| u.secret().clone()),
        user_code: details.user_code().secret().clone(),
        expires_in: details.expires_in(),
    });
    let response = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, None)
        .await
        .map_err(request_error)?;
    Ok(issued(&response, Utc::now()))
}

/// The authorization code grant with PKCE (RFC 7636) and a redirect to a port of this
/// machine's loopback address (RFC 8252): `prompt` shows the address to open; the
/// browser comes back to us with the code.
pub async fn browser_login(provider: &OAuthProvider, prompt: impl FnOnce(&str)) -> Result<Issued, OAuthError> {
    let Some(auth_url) = &provider.endpoints.authorization_url else {
        return Err(OAuthError::Setup("the provider has no authorization_url".to_owned()));
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| OAuthError::Setup(format!("cannot listen on a loopback port for the redirect: {e}")))?;
    let port = listener.local_addr().map_err(|e| OAuthError::Setup(e.to_string()))?.port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let http = http_client(provider)?;
    let client = client!(provider)
        .set_auth_uri(url("authorization_url", auth_url, AuthUrl::new)?)
        .set_redirect_uri(url("the redirect", &redirect, RedirectUrl::new)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (address, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes(provider))
        .add_extra_param("access_type", "offline")
        .add_extra_param("prompt", "consent")
        .set_pkce_challenge(challenge)
        .url();
    prompt(address.as_str());
    let code = redirect::wait_for_code(listener, state.secret()).await?;
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .map_err(request_error)?;
    Ok(issued(&response, Utc::now()))
}

/// The one request the browser makes back to us after the sign-in.
mod redirect {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::response::Html;
    use tokio::sync::oneshot;

    use super::OAuthError;

    /// Our `state`, and where the query that carries it goes.
    type Answer = Arc<(String, Mutex<Option<oneshot::Sender<HashMap<String, String>>>>)>;

    /// Serves the redirect until it came with our `state`: its code, or the error the
    /// provider sent instead.
    pub async fn wait_for_code(listener: tokio::net::TcpListener, state: &str) -> Result<String, OAuthError> {
        let (send, receive) = oneshot::channel();
        let answer: Answer = Arc::new((state.to_owned(), Mutex::new(Some(send))));
        let router = axum::Router::new().route("/", axum::routing::get(came_back)).with_state(answer);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn(crate::web::serve(listener, router, shutdown.clone()));
        let query = match tokio::time::timeout(super::SIGN_IN_TIMEOUT, receive).await {
            Ok(Ok(query)) => Ok(query),
            Ok(Err(_)) => Err(OAuthError::Setup("the redirect listener stopped".to_owned())),
            Err(_) => Err(OAuthError::Setup(format!(
                "no sign-in came back within {} minutes",
                super::SIGN_IN_TIMEOUT.as_secs() / 60
            ))),
        };
        shutdown.cancel();
        let _ = serving.await;
        let query = query?;
        match (query.get("code"), query.get("error")) {
            (Some(code), _) => Ok(code.clone()),
            (None, error) => Err(OAuthError::Refused {
                code: error.cloned().unwrap_or_else(|| "no code".to_owned()),
                description: query.get("error_description").cloned(),
            }),
        }
    }

    /// A request without our state (another page, a stale tab) is not the sign-in: it
    /// is told so, and the wait goes on.
    async fn came_back(
        State(answer): State<Answer>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Html<&'static str> {
        let (state, send) = &*answer;
        if query.get("state") != Some(state) {
            return Html("<!doctype html><title>postdesk</title><p>This is not the sign-in postdesk waits for.</p>");
        }
        if let Some(send) = send.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = send.send(query);
        }
        Html("<!doctype html><title>postdesk</title><p>postdesk has the sign-in; you can close this page.</p>")
    }
}
