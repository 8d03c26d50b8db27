//! Signing in and out, the session every page requires, and the CSRF token every form
//! carries. The session cookie holds a random token (the database keeps only its hash),
//! is HttpOnly and SameSite=Strict, and Secure with `[web] secure_cookies`. The sign-in
//! form, which has no session yet, is protected by a token in a cookie of its own that the
//! form must repeat.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use cookie::{Cookie, SameSite};
use minijinja::context;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::render::{page, WebError};
use crate::desk::agents::{self, Agent};
use crate::desk::error::DeskError;

const SESSION_COOKIE: &str = "postdesk_session";
const SIGN_IN_COOKIE: &str = "postdesk_sign_in";

/// The agent a request comes from, with the CSRF token of their session.
pub struct SignedIn {
    pub agent: Agent,
    pub csrf: String,
    token: String,
}

impl SignedIn {
    /// What every page's frame needs: the agent, the token for its forms.
    pub fn frame(&self, console: &super::Console, section: &str) -> minijinja::Value {
        context! {
            agent => context! { name => self.agent.name.clone(), role => self.agent.role.as_str(), id => self.agent.id },
            csrf => self.csrf.clone(),
            helpdesk_name => console.config.policy.ack.helpdesk_name.clone(),
            section,
            may_edit => self.agent.role.may_edit_customers(),
        }
    }

    /// Refuses what the agent's role may not do.
    pub fn may_edit(&self) -> Result<(), WebError> {
        match self.agent.role.may_edit_customers() {
            true => Ok(()),
            false => Err(WebError::Forbidden("change customers or organisations")),
        }
    }
}

impl FromRequestParts<super::State> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &super::State) -> Result<Self, Response> {
        let token = cookie(&parts.headers, SESSION_COOKIE);
        let found = match token {
            Some(token) => {
                let now = Utc::now();
                let lookup = token.clone();
                let session = console.store.read(move |tx| agents::session(tx, &lookup, now)).await;
                session.map_err(|e: DeskError| WebError::from(e).into_response())?.map(|s| (s, token))
            }
            None => None,
        };
        match found {
            Some((session, token)) => Ok(SignedIn { agent: session.agent, csrf: session.csrf, token }),
            None => {
                // Back to the page after signing in; a form posted meanwhile is not
                // replayed (its address only answers a POST): back to the tickets then.
                let here = match parts.method {
                    axum::http::Method::GET => parts.uri.path_and_query().map_or("/tickets", |p| p.as_str()),
                    _ => "/tickets",
                };
                let next: String = url_encode(here);
                Err(Redirect::to(&format!("/login?next={next}")).into_response())
            }
        }
    }
}

/// Whoever a session belongs to (an agent, a customer user), with its forms' CSRF token.
pub trait Session: FromRequestParts<super::State, Rejection = Response> + Send {
    fn csrf(&self) -> &str;
}

impl Session for SignedIn {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A form posted in a session (an agent's, unless `S` says otherwise), its CSRF token
/// checked before anything else.
pub struct Action<T, S = SignedIn> {
    pub by: S,
    pub form: T,
}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned, S: Session> FromRequest<super::State> for Action<T, S> {
    type Rejection = Response;

    async fn from_request(request: Request, console: &super::State) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let by = S::from_request_parts(&mut parts, console).await?;
        let bytes =
            Bytes::from_request(Request::from_parts(parts, body), console).await.map_err(|e| e.into_response())?;
        let Csrf { csrf } = serde_urlencoded::from_bytes(&bytes).unwrap_or(Csrf { csrf: String::new() });
        if !same(&csrf, by.csrf()) {
            return Err(WebError::FormExpired.into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| WebError::BadRequest(format!("The form is not what this page sends: {e}")).into_response())?;
        Ok(Action { by, form })
    }
}

/// The CSRF token of a form shown to a visitor who has no session yet (the sign-in
/// forms, the public support form): repeated in a cookie of the form's own, which only
/// this site can set (double submit).
pub struct VisitorForm {
    pub token: String,
    cookie: &'static str,
    path: &'static str,
}

impl VisitorForm {
    pub fn new(cookie: &'static str, path: &'static str) -> VisitorForm {
        VisitorForm { token: random_token(), cookie, path }
    }

    /// Sets the form's cookie on the page that shows it.
    pub fn attach(&self, response: &mut Response, secure: bool) {
        append_cookie(response, &session_cookie(self.cookie, &self.token, secure, self.path));
    }

    /// Whether a posted form repeats its cookie's token.
    pub fn came_back(cookie_name: &str, headers: &HeaderMap, submitted: &str) -> bool {
        let expected = cookie(headers, cookie_name).unwrap_or_default();
        !expected.is_empty() && same(submitted, &expected)
    }
}

/// The client's address, for the sign-in limits (the peer: behind a proxy, the proxy).
pub struct Client(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(Client(peer.unwrap_or_else(|| "unknown".to_owned())))
    }
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

pub async fn login_page(State(console): State<super::State>, Query(q): Query<Next>) -> Response {
    sign_in_form(&console, &safe_next(q.next.as_deref()), "", None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(console): State<super::State>,
    Client(client): Client,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if !VisitorForm::came_back(SIGN_IN_COOKIE, &headers, &form.csrf) {
        let error = "The sign-in form expired: please sign in again.";
        return sign_in_form(&console, &next, &form.email, Some(error), StatusCode::FORBIDDEN);
    }
    let limits = &console.sign_in_limits;
    if let Some(wait) = limits.wait(&form.email, &client, Instant::now()) {
        let minutes = wait.as_secs().div_ceil(60);
        let error = format!("Too many failed sign-ins: try again in {minutes} minute(s).");
        return sign_in_form(&console, &next, &form.email, Some(&error), StatusCode::TOO_MANY_REQUESTS);
    }
    let (email, password) = (form.email.clone(), form.password);
    let now = Utc::now();
    let signed_in = console
        .store
        .write(move |tx| {
            let agent = agents::authenticate(tx, &email, &password)?;
            agents::open_session(tx, agent.id, now)
        })
        .await;
    match signed_in {
        Ok(session) => {
            limits.succeeded(&form.email);
            let mut response = Redirect::to(&next).into_response();
            let cookie = session_cookie(SESSION_COOKIE, &session.token, console.web.secure_cookies, "/");
            append_cookie(&mut response, &cookie);
            append_cookie(&mut response, &expired(SIGN_IN_COOKIE, "/login"));
            response
        }
        Err(DeskError::BadCredentials) => {
            limits.count(&form.email, &client, Instant::now());
            let error = "Wrong e-mail or password.";
            sign_in_form(&console, &next, &form.email, Some(error), StatusCode::UNAUTHORIZED)
        }
        Err(e) => WebError::from(e).into_response(),
    }
}

/// A form with nothing in it but its CSRF token.
#[derive(Deserialize)]
pub struct Nothing {}

pub async fn logout(State(console): State<super::State>, action: Action<Nothing>) -> Result<Response, WebError> {
    let token = action.by.token;
    console.store.write(move |tx| agents::close_session(tx, &token)).await?;
    let mut response = Redirect::to("/login").into_response();
    append_cookie(&mut response, &expired(SESSION_COOKIE, "/"));
    Ok(response)
}

fn sign_in_form(
    console: &super::Console,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let form = VisitorForm::new(SIGN_IN_COOKIE, "/login");
    let context = context! {
        helpdesk_name => console.config.policy.ack.helpdesk_name.clone(), csrf => form.token.clone(), next, email, error,
    };
    let mut response = page("login.html", context);
    *response.status_mut() = status;
    form.attach(&mut response, console.web.secure_cookies);
    response
}

/// Where to go after signing in: a path of this site, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/tickets".to_owned(),
    }
}

pub fn session_cookie(name: &str, value: &str, secure: bool, path: &str) -> String {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path(path)
        .build()
        .to_string()
}

pub fn expired(name: &str, path: &str) -> String {
    format!("{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict")
}

pub fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the system's random number generator");
    hex::encode(bytes)
}

pub fn url_encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).map(|s| s[1..].to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_sign_in() {
        for (next, want) in [
            (Some("/tickets/2026112310000017"), "/tickets/2026112310000017"),
            (Some("//evil.example/"), "/tickets"),
            (Some("https://evil.example/"), "/tickets"),
            (Some("/\\evil.example"), "/tickets"),
            (None, "/tickets"),
        ] {
            assert_eq!(safe_next(next), want);
        }
    }
}
