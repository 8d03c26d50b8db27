//! The customer portal: sign-in by a link sent by mail, the tickets a customer user may
//! see, replying and closing, and the support forms. What a customer user may see and
//! do is `desk::portal`'s; what they write is ingested through the mail pipeline as if
//! mailed. Pages answer the same whether or not an address is a customer's.
//!
//! Links in mail lead to a page with a button, not straight to the action: mail
//! scanners open links in mail, and a single-use link they open would be spent.

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::header::HeaderMap;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::auth::{self, Action, Client, Session, VisitorForm};
use super::limit::SignInLimits;
use super::render::{page, value, WebError};
use super::tickets::{download, given, Item};
use crate::core::address;
use crate::core::portal::{Sender, Upload};
use crate::core::route::State as TicketState;
use crate::desk::error::DeskError;
use crate::desk::ingest::{self, Outcome, Source};
use crate::desk::portal::{self, Helpdesk, Links, Message};
use crate::desk::tickets::Cursor;

const SESSION_COOKIE: &str = "postdesk_portal";
const SIGN_IN_FORM: &str = "postdesk_portal_form";
const LINK_FORM: &str = "postdesk_portal_link";
const SUPPORT_FORM: &str = "postdesk_support_form";
const CONFIRM_FORM: &str = "postdesk_support_confirm";

/// Sign-in links asked for: per address, and per client (an office shares one).
pub fn link_limits() -> SignInLimits {
    SignInLimits::new(3, 20, Duration::from_secs(15 * 60))
}

/// Requests of the public form: per address, and per client.
pub fn request_limits() -> SignInLimits {
    SignInLimits::new(3, 10, Duration::from_secs(60 * 60))
}

/// What the portal answers for a sign-in request, whoever the address belongs to.
const LINK_SENT: &str = "If this address belongs to a customer account, a sign-in link is on its way to it. \
                         The link works once, for 15 minutes.";

/// What went wrong, as a page of the portal.
pub struct PortalError(WebError);

impl<E: Into<WebError>> From<E> for PortalError {
    fn from(e: E) -> Self {
        PortalError(e.into())
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        self.0.page("/portal")
    }
}

type Result<T> = std::result::Result<T, PortalError>;

/// The customer user a request comes from.
pub struct Customer {
    pub who: portal::SignedIn,
    token: String,
}

impl Customer {
    fn frame(&self, console: &super::Console, section: &str) -> Value {
        let who = &self.who;
        context! {
            customer => context! { name => who.name.clone(), email => who.holder.email.clone() },
            csrf => who.csrf.clone(),
            helpdesk_name => console.config.policy.ack.helpdesk_name.clone(),
            section,
        }
    }
}

impl FromRequestParts<super::State> for Customer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &super::State) -> std::result::Result<Self, Response> {
        let found = match auth::cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => {
                let (lookup, now) = (token.clone(), Utc::now());
                let session = console.store.read(move |tx| portal::session(tx, &lookup, now)).await;
                session.map_err(|e| PortalError::from(e).into_response())?.map(|who| Customer { who, token })
            }
            None => None,
        };
        found.ok_or_else(|| Redirect::to("/portal").into_response())
    }
}

impl Session for Customer {
    fn csrf(&self) -> &str {
        &self.who.csrf
    }
}

fn sender(console: &super::Console) -> Sender<'_> {
    let ack = &console.config.policy.ack;
    Sender { helpdesk_name: &ack.helpdesk_name, from: &console.config.helpdesk_address, from_name: &ack.from_name }
}

fn helpdesk(console: &super::Console) -> Helpdesk<'_> {
    Helpdesk { address: &console.config.helpdesk_address, tag_prefix: &console.config.policy.tag_prefix }
}

fn links(console: &super::Console) -> Links<'_> {
    Links { base_url: &console.web.base_url, sender: sender(console) }
}

fn frame(console: &super::Console) -> Value {
    context! { helpdesk_name => console.config.policy.ack.helpdesk_name.clone() }
}

#[derive(Deserialize, Serialize)]
pub struct ListQuery {
    state: Option<String>,
    after: Option<String>,
}

/// Tickets on one page of the list.
const PAGE: u32 = 50;

/// The signed-in customer user's tickets, or the sign-in form.
pub async fn home(
    State(console): State<super::State>,
    customer: std::result::Result<Customer, Response>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let Ok(customer) = customer else {
        return Ok(sign_in_form(&console, "", None, None, StatusCode::OK));
    };
    let bad = |what: &str| WebError::BadRequest(what.to_owned());
    let state = given(&q.state).map(|s| TicketState::parse(&s).ok_or_else(|| bad("no such state"))).transpose()?;
    let after = given(&q.after).map(|a| Cursor::parse(&a).ok_or_else(|| bad("not a page of this list"))).transpose()?;
    let wanted = portal::Page { state, after, limit: PAGE + 1 };
    let (holder, now) = (customer.who.holder.clone(), Utc::now());
    let mut found = console.store.read(move |tx| portal::tickets(tx, &holder, &wanted, now)).await?;
    let next = (found.len() > PAGE as usize).then(|| {
        found.truncate(PAGE as usize);
        let after = found.last().map(|t| Cursor::of(t).to_string());
        let query = serde_urlencoded::to_string(ListQuery { state: given(&q.state), after }).unwrap_or_default();
        format!("/portal?{query}")
    });
    let context = context! {
        tickets => value(&found), state => state.map(TicketState::as_str), next, ..customer.frame(&console, "tickets")
    };
    Ok(page("portal_tickets.html", context))
}

fn sign_in_form(
    console: &super::Console,
    email: &str,
    error: Option<&str>,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let form = VisitorForm::new(SIGN_IN_FORM, "/portal");
    let mut response = match notice {
        Some(message) => page("portal_notice.html", context! { title => "Check your mail", message, ..frame(console) }),
        None => page(
            "portal_sign_in.html",
            context! {
                csrf => form.token.clone(), email, error, public_form => console.config.portal.public_form,
                ..frame(console)
            },
        ),
    };
    *response.status_mut() = status;
    form.attach(&mut response, console.web.secure_cookies);
    response
}

#[derive(Deserialize)]
pub struct LinkRequest {
    #[serde(default)]
    csrf: String,
    email: String,
}

/// Sends a sign-in link to a customer user's address; the answer is the same for any
/// address, and so is the limit.
pub async fn request_link(
    State(console): State<super::State>,
    Client(client): Client,
    headers: HeaderMap,
    Form(form): Form<LinkRequest>,
) -> Result<Response> {
    if !VisitorForm::came_back(SIGN_IN_FORM, &headers, &form.csrf) {
        let error = "The form expired: please try again.";
        return Ok(sign_in_form(&console, &form.email, Some(error), None, StatusCode::FORBIDDEN));
    }
    let Some(email) = address::normalise(&form.email) else {
        let error = "That is not an e-mail address.";
        return Ok(sign_in_form(&console, &form.email, Some(error), None, StatusCode::UNPROCESSABLE_ENTITY));
    };
    if let Some(wait) = limited(&console.link_limits, &email, &client) {
        return Ok(sign_in_form(&console, &form.email, Some(&wait), None, StatusCode::TOO_MANY_REQUESTS));
    }
    let now = Utc::now();
    let console2 = std::sync::Arc::clone(&console);
    let sent = console.store.write(move |tx| portal::request_link(tx, &email, &links(&console2), now)).await?;
    if sent {
        console.nudge();
    }
    Ok(sign_in_form(&console, "", None, Some(LINK_SENT), StatusCode::OK))
}

/// Counts an attempt; the sentence to show when there were too many.
fn limited(limits: &SignInLimits, email: &str, client: &str) -> Option<String> {
    let now = Instant::now();
    if let Some(wait) = limits.wait(email, client, now) {
        let minutes = wait.as_secs().div_ceil(60);
        return Some(format!("Too many requests: try again in {minutes} minute(s)."));
    }
    limits.count(email, client, now);
    None
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The page a sign-in link opens: a button that signs in.
pub async fn link_page(State(console): State<super::State>, Query(q): Query<TokenQuery>) -> Response {
    let message = "Sign in to see your tickets.";
    button_page(&console, LINK_FORM, "/portal/sign-in", "Sign in", message, &q.token, context! {})
}

fn button_page(
    console: &super::Console,
    cookie: &'static str,
    action: &'static str,
    button: &str,
    message: &str,
    token: &str,
    extra: Value,
) -> Response {
    let form = VisitorForm::new(cookie, action);
    let around = minijinja::value::merge_maps([extra, frame(console)]);
    let context = context! { title => button, message, action, button, token, csrf => form.token.clone(), ..around };
    let mut response = page("portal_notice.html", context);
    form.attach(&mut response, console.web.secure_cookies);
    response
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

/// Uses a sign-in link: the session cookie, and on to the tickets.
pub async fn sign_in(
    State(console): State<super::State>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response> {
    if !VisitorForm::came_back(LINK_FORM, &headers, &form.csrf) {
        return Err(WebError::FormExpired.into());
    }
    let now = Utc::now();
    let session = console.store.write(move |tx| portal::sign_in(tx, &form.token, now)).await?;
    let mut response = Redirect::to("/portal").into_response();
    let secure = console.web.secure_cookies;
    auth::append_cookie(&mut response, &auth::session_cookie(SESSION_COOKIE, &session.token, secure, "/portal"));
    auth::append_cookie(&mut response, &auth::expired(LINK_FORM, "/portal/sign-in"));
    Ok(response)
}

pub async fn sign_out(
    State(console): State<super::State>,
    action: Action<auth::Nothing, Customer>,
) -> Result<Response> {
    let token = action.by.token;
    console.store.write(move |tx| portal::sign_out(tx, &token)).await?;
    let mut response = Redirect::to("/portal").into_response();
    auth::append_cookie(&mut response, &auth::expired(SESSION_COOKIE, "/portal"));
    Ok(response)
}

pub async fn show(
    State(console): State<super::State>,
    customer: Customer,
    Path(number): Path<String>,
) -> Result<Response> {
    let (holder, now) = (customer.who.holder.clone(), Utc::now());
    let ticket = console.store.read(move |tx| portal::ticket(tx, &holder, &number, now)).await?;
    let timeline: Vec<Item> = ticket.article_list.iter().enumerate().map(|(i, a)| Item::article(i, a)).collect();
    let context = context! {
        ticket => value(&ticket.summary),
        own => ticket.summary.customer_id == Some(customer.who.holder.customer_id),
        timeline => value(&timeline),
        ..customer.frame(&console, "tickets")
    };
    Ok(page("portal_ticket.html", context))
}

pub async fn attachment(
    State(console): State<super::State>,
    customer: Customer,
    Path((number, id)): Path<(String, i64)>,
) -> Result<Response> {
    let (holder, now) = (customer.who.holder, Utc::now());
    let (name, bytes) = console.store.read(move |tx| portal::attachment(tx, &holder, &number, id, now)).await?;
    Ok(download(&name, "application/octet-stream", bytes))
}

pub async fn close(
    State(console): State<super::State>,
    Path(number): Path<String>,
    action: Action<auth::Nothing, Customer>,
) -> Result<Response> {
    let (holder, wanted, now) = (action.by.who.holder, number.clone(), Utc::now());
    console.store.write(move |tx| portal::close(tx, &holder, &wanted, now)).await?;
    Ok(Redirect::to(&format!("/portal/tickets/{number}")).into_response())
}

#[derive(Deserialize)]
pub struct ReplyForm {
    body: String,
}

/// A reply, ingested as the customer user's mail to the ticket.
pub async fn reply(
    State(console): State<super::State>,
    Path(number): Path<String>,
    action: Action<ReplyForm, Customer>,
) -> Result<Response> {
    let who = action.by.who;
    let source = portal::written_source(&who)?;
    let (console2, wanted, now) = (std::sync::Arc::clone(&console), number.clone(), Utc::now());
    let raw = console
        .store
        .read(move |tx| {
            let text = Message { subject: "", body: &action.form.body, uploads: &[] };
            portal::reply(tx, &who, &wanted, &text, &helpdesk(&console2), now)
        })
        .await?;
    let ticket = ingest_written(&console, raw, source).await?;
    Ok(Redirect::to(&format!("/portal/tickets/{ticket}")).into_response())
}

/// Runs a message written in the portal through the pipeline; the ticket it landed on.
async fn ingest_written(console: &super::State, raw: Vec<u8>, source: Source) -> Result<String> {
    let (config, now) = (std::sync::Arc::clone(&console.config), Utc::now());
    let report = console.store.with_writer(move |store| ingest::ingest_one(store, &config, &raw, &source, now)).await?;
    console.nudge();
    match report.outcome {
        Outcome::Created { ticket, .. } | Outcome::FollowUp { ticket, .. } => Ok(ticket),
        Outcome::Duplicate { ticket: Some(ticket), .. } => Ok(ticket),
        other => {
            tracing::warn!("a message written in the portal was not filed: {other}");
            let why = "Your message could not be filed; it is kept for the helpdesk, who will look at it.";
            Err(WebError::BadRequest(why.to_owned()).into())
        }
    }
}

/// What the ticket forms send.
#[derive(Default, Clone, Serialize)]
struct TicketForm {
    csrf: String,
    name: String,
    email: String,
    subject: String,
    text: String,
    #[serde(skip)]
    uploads: Vec<Upload>,
}

impl TicketForm {
    /// Reads a multipart form, its uploads at most `max_bytes` with the text.
    async fn read(mut multipart: Multipart, max_bytes: usize) -> Result<TicketForm> {
        let mut form = TicketForm::default();
        let mut total = 0usize;
        let bad = |e: axum::extract::multipart::MultipartError| WebError::BadRequest(format!("The form: {e}"));
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(bad)?;
            total += bytes.len();
            if total > max_bytes {
                return Err(WebError::TooLarge(max_bytes).into());
            }
            let text = || String::from_utf8_lossy(&bytes).into_owned();
            match (name.as_str(), file_name) {
                ("attachment", Some(file)) if !file.is_empty() => {
                    form.uploads.push(Upload { name: file, content_type, bytes: bytes.to_vec() })
                }
                ("csrf", _) => form.csrf = text(),
                ("name", _) => form.name = text(),
                ("email", _) => form.email = text(),
                ("subject", _) => form.subject = text(),
                ("text", _) => form.text = text(),
                _ => {}
            }
        }
        Ok(form)
    }

    fn message(&self) -> Message<'_> {
        Message { subject: &self.subject, body: &self.text, uploads: &self.uploads }
    }
}

fn ticket_form(
    console: &super::Console,
    frame: Value,
    public: bool,
    form: &TicketForm,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let action = if public { "/support" } else { "/portal/new" };
    let context = context! {
        public, action, error, form => value(form), max_upload => size(console.config.portal.max_upload_bytes), ..frame
    };
    let mut response = page("portal_new.html", context);
    *response.status_mut() = status;
    response
}

/// A size as people read it: "10 MB", "500 KB".
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MB", b.div_ceil(1 << 20)),
        b if b >= 1 << 10 => format!("{} KB", b.div_ceil(1 << 10)),
        b => format!("{b} bytes"),
    }
}

pub async fn new_form(State(console): State<super::State>, customer: Customer) -> Response {
    ticket_form(&console, customer.frame(&console, "new"), false, &TicketForm::default(), None, StatusCode::OK)
}

/// A signed-in customer user's new ticket, ingested as their mail.
pub async fn new_ticket(
    State(console): State<super::State>,
    customer: Customer,
    multipart: Multipart,
) -> Result<Response> {
    let form = TicketForm::read(multipart, console.config.portal.max_upload_bytes).await?;
    if !auth::same(&form.csrf, &customer.who.csrf) {
        return Err(WebError::FormExpired.into());
    }
    let who = &customer.who;
    let written =
        portal::new_ticket(&who.holder.email, who.name.as_deref(), &form.message(), &helpdesk(&console), Utc::now());
    let raw = match written {
        Ok(raw) => raw,
        Err(DeskError::Written(why)) => {
            let frame = customer.frame(&console, "new");
            let error = capitalised(&why.to_string());
            return Ok(ticket_form(&console, frame, false, &form, Some(&error), StatusCode::UNPROCESSABLE_ENTITY));
        }
        Err(e) => return Err(e.into()),
    };
    let source = portal::written_source(who)?;
    let ticket = ingest_written(&console, raw, source).await?;
    Ok(Redirect::to(&format!("/portal/tickets/{ticket}")).into_response())
}

fn capitalised(sentence: &str) -> String {
    let mut chars = sentence.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect::<String>() + ".")
}

/// The public support form, when `[portal] public_form` is on.
pub async fn support_form(State(console): State<super::State>) -> Result<Response> {
    public_form_on(&console)?;
    let form = VisitorForm::new(SUPPORT_FORM, "/support");
    let fields = TicketForm { csrf: form.token.clone(), ..TicketForm::default() };
    let mut response = ticket_form(&console, frame(&console), true, &fields, None, StatusCode::OK);
    form.attach(&mut response, console.web.secure_cookies);
    Ok(response)
}

fn public_form_on(console: &super::Console) -> Result<()> {
    match console.config.portal.public_form {
        true => Ok(()),
        false => Err(WebError::NoPage.into()),
    }
}

/// A request of the public form: kept until its sender confirms the address.
pub async fn support_request(
    State(console): State<super::State>,
    Client(client): Client,
    headers: HeaderMap,
    multipart: Multipart,
) -> Result<Response> {
    public_form_on(&console)?;
    let form = TicketForm::read(multipart, console.config.portal.max_upload_bytes).await?;
    if !VisitorForm::came_back(SUPPORT_FORM, &headers, &form.csrf) {
        return Err(WebError::FormExpired.into());
    }
    let refused = |form: &TicketForm, error: &str, status| {
        let again = VisitorForm::new(SUPPORT_FORM, "/support");
        let fields = TicketForm { csrf: again.token.clone(), uploads: Vec::new(), ..form.clone() };
        let mut response = ticket_form(&console, frame(&console), true, &fields, Some(error), status);
        again.attach(&mut response, console.web.secure_cookies);
        response
    };
    let Some(email) = address::normalise(&form.email) else {
        return Ok(refused(&form, "That is not an e-mail address.", StatusCode::UNPROCESSABLE_ENTITY));
    };
    if let Some(wait) = limited(&console.request_limits, &email, &client) {
        return Ok(refused(&form, &wait, StatusCode::TOO_MANY_REQUESTS));
    }
    let name = given(&Some(form.name.clone()));
    let now = Utc::now();
    let raw = match portal::new_ticket(&email, name.as_deref(), &form.message(), &helpdesk(&console), now) {
        Ok(raw) => raw,
        Err(DeskError::Written(why)) => {
            return Ok(refused(&form, &capitalised(&why.to_string()), StatusCode::UNPROCESSABLE_ENTITY));
        }
        Err(e) => return Err(e.into()),
    };
    let console2 = std::sync::Arc::clone(&console);
    console.store.write(move |tx| portal::request_ticket(tx, &email, &raw, &links(&console2), now)).await?;
    console.nudge();
    let message = "We sent a link to your address: follow it within an hour to open the ticket.";
    Ok(page("portal_notice.html", context! { title => "Check your mail", message, ..frame(&console) }))
}

/// The page a confirmation link opens: the request as it was written, and a button that
/// opens the ticket (someone else may have written it in the sender's name).
pub async fn confirm_page(State(console): State<super::State>, Query(q): Query<TokenQuery>) -> Result<Response> {
    public_form_on(&console)?;
    let (token, config, now) = (q.token.clone(), std::sync::Arc::clone(&console.config), Utc::now());
    let preview = console.store.read(move |tx| portal::pending_request(tx, &token, &config.policy, now)).await?;
    let message = "This request was sent with your address. If you wrote it, confirm, and it becomes a ticket; \
                   if not, ignore it.";
    let request = context! { subject => preview.subject, text => preview.text, attachments => preview.attachments };
    let extra = context! { request };
    Ok(button_page(&console, CONFIRM_FORM, "/support/confirm", "Open the ticket", message, &q.token, extra))
}

/// Opens the ticket of a confirmed request, through the mail pipeline.
pub async fn confirm(
    State(console): State<super::State>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response> {
    public_form_on(&console)?;
    if !VisitorForm::came_back(CONFIRM_FORM, &headers, &form.csrf) {
        return Err(WebError::FormExpired.into());
    }
    let (token, now) = (form.token.clone(), Utc::now());
    let (raw, source) = console.store.read(move |tx| portal::confirmed_request(tx, &token, now)).await?;
    let ticket = ingest_written(&console, raw, source).await?;
    console.store.write(move |tx| portal::forget_request(tx, &form.token)).await?;
    let message = "Thank you: your request is a ticket now. We sent you an acknowledgement by mail.";
    Ok(page("portal_notice.html", context! { title => "Ticket opened", message, ticket, ..frame(&console) }))
}
