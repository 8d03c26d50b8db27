//! The tickets list and one ticket: reading, answering, noting, setting state and owner,
//! downloading the raw message and attachments.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::auth::{url_encode, Action, SignedIn};
use super::render::{page, sanitise_html, value, WebError};
use crate::core::address;
use crate::core::route::State as TicketState;
use crate::desk::tickets::{self, Author, Cursor, Query as TicketQuery, SetState, Write};
use crate::desk::{agents, outbox};
use crate::store::tickets::{Article, TicketSummary};

/// Tickets on one page of the list.
const PAGE: u32 = 50;

/// The list's filters as the page's form sends them (empty fields are no filter).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ListQuery {
    state: Option<String>,
    org: Option<String>,
    customer: Option<String>,
    owner: Option<String>,
    overdue: Option<String>,
    q: Option<String>,
    after: Option<String>,
}

impl ListQuery {
    fn desk_query(&self) -> Result<TicketQuery, WebError> {
        let bad = |what: &str| WebError::BadRequest(what.to_owned());
        Ok(TicketQuery {
            state: given(&self.state)
                .map(|s| TicketState::parse(&s).ok_or_else(|| bad("no such state")))
                .transpose()?,
            org: given(&self.org),
            customer: given(&self.customer)
                .map(|c| address::normalise(&c).ok_or_else(|| bad("the customer filter is not an e-mail address")))
                .transpose()?,
            owner_id: given(&self.owner).map(|o| o.parse().map_err(|_| bad("no such owner"))).transpose()?,
            overdue: given(&self.overdue).is_some(),
            search: given(&self.q),
            after: given(&self.after)
                .map(|a| Cursor::parse(&a).ok_or_else(|| bad("not a page of this list")))
                .transpose()?,
            limit: Some(PAGE + 1),
            ..Default::default()
        })
    }

    /// The list's address with these filters, another state and the first page.
    fn link(&self, state: Option<&str>, after: Option<String>) -> String {
        let with = ListQuery {
            state: state.map(str::to_owned),
            org: given(&self.org),
            customer: given(&self.customer),
            owner: given(&self.owner),
            overdue: given(&self.overdue),
            q: given(&self.q),
            after,
        };
        let query = serde_urlencoded::to_string(&with).unwrap_or_default();
        if query.is_empty() {
            "/tickets".to_owned()
        } else {
            format!("/tickets?{query}")
        }
    }
}

/// A form or query field with something in it.
pub fn given(field: &Option<String>) -> Option<String> {
    field.as_deref().map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned)
}

pub async fn list(
    State(console): State<super::State>,
    by: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let query = q.desk_query()?;
    let now = Utc::now();
    let config = Arc::clone(&console.config);
    let (mut found, counts, agent_list, signed_out) = console
        .store
        .read(move |tx| {
            let found = tickets::list(tx, &query, now)?;
            // Mail that cannot be read because a sign-in was refused: said where agents look first.
            let signed_out: Vec<String> = crate::desk::oauth::status(tx, &config, now)?
                .into_iter()
                .filter(|s| s.needs_sign_in())
                .map(|s| s.name)
                .collect();
            Ok::<_, WebError>((found, tickets::count_by_state(tx, &query, now)?, agents::list(tx)?, signed_out))
        })
        .await?;
    let next = (found.len() > PAGE as usize).then(|| {
        found.truncate(PAGE as usize);
        q.link(given(&q.state).as_deref(), found.last().map(|t| Cursor::of(t).to_string()))
    });
    let states: Vec<Value> = [TicketState::New, TicketState::Open, TicketState::Pending, TicketState::Closed]
        .into_iter()
        .map(|s| {
            let count = counts.iter().find(|(state, _)| *state == s).map_or(0, |(_, n)| *n);
            context! { name => s.as_str(), count, link => q.link(Some(s.as_str()), None) }
        })
        .collect();
    let filter = context! {
        state => given(&q.state), org => given(&q.org), customer => given(&q.customer),
        owner => given(&q.owner).and_then(|o| o.parse::<i64>().ok()), overdue => given(&q.overdue).is_some(),
        q => given(&q.q),
    };
    let context = context! {
        tickets => rows(&found, now),
        total => counts.iter().map(|(_, n)| n).sum::<i64>(),
        states, filter, next,
        state_links => context! { all => q.link(None, None) },
        agents => agent_list.iter().filter(|a| !a.disabled).map(agent_option).collect::<Vec<_>>(),
        signed_out,
        ..by.frame(&console, "tickets")
    };
    Ok(page("tickets.html", context))
}

/// Tickets as the lists show them.
pub fn rows(list: &[TicketSummary], now: chrono::DateTime<Utc>) -> Vec<Value> {
    list.iter().map(|t| row(t, now)).collect()
}

/// A ticket as the lists show it, with whether its first response is overdue.
pub fn row(ticket: &TicketSummary, now: chrono::DateTime<Utc>) -> Value {
    let overdue = ticket.state != TicketState::Closed
        && ticket.first_response_at.is_none()
        && ticket.respond_by.as_deref().is_some_and(|due| due < crate::store::timestamp(now).as_str());
    context! {
        overdue,
        customer_id => ticket.customer_id,
        organisation_id => ticket.organisation_id,
        owner_id => ticket.owner_id,
        ..value(ticket)
    }
}

fn agent_option(agent: &agents::Agent) -> Value {
    context! { id => agent.id, name => agent.name.clone() }
}

pub async fn show(
    State(console): State<super::State>,
    by: SignedIn,
    Path(number): Path<String>,
) -> Result<Response, WebError> {
    let now = Utc::now();
    let wanted = number.clone();
    let (ticket, sent, agent_list) = console
        .store
        .write(move |tx| {
            let ticket = tickets::open(tx, &wanted, now)?;
            Ok::<_, WebError>((ticket, outbox::of_ticket(tx, &wanted)?, agents::list(tx)?))
        })
        .await?;
    let mut timeline: Vec<Item> = ticket.article_list.iter().enumerate().map(|(i, a)| Item::article(i, a)).collect();
    timeline.extend(sent.iter().filter(|row| row.kind == crate::core::ack::MailKind::Ack).map(|row| Item {
        kind: "ack",
        label: format!("Acknowledgement ({})", row.state),
        from: Some(row.sender.clone()),
        from_name: row.sender_name.clone(),
        to: Some(row.recipient.clone()),
        subject: Some(row.subject.clone()),
        created_at: row.created_at.clone(),
        body: row.body_text.clone(),
        html: None,
        attachments: Vec::new(),
        raw: None,
        internal: false,
    }));
    timeline.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    let context = context! {
        ticket => row(&ticket.summary, now),
        overdue => row(&ticket.summary, now).get_attr("overdue").unwrap_or_default(),
        timeline => value(&timeline),
        agents => agent_list.iter().filter(|a| !a.disabled).map(agent_option).collect::<Vec<_>>(),
        ..by.frame(&console, "tickets")
    };
    Ok(page("ticket.html", context))
}

/// One entry of a ticket's history: an article, or an acknowledgement we sent.
#[derive(Serialize)]
pub struct Item {
    kind: &'static str,
    label: String,
    from: Option<String>,
    from_name: Option<String>,
    to: Option<String>,
    subject: Option<String>,
    created_at: String,
    body: String,
    /// Sanitised.
    html: Option<String>,
    attachments: Vec<Value>,
    /// The article's number for its raw download (mail that arrived).
    raw: Option<usize>,
    internal: bool,
}

impl Item {
    pub fn article(index: usize, a: &Article) -> Item {
        let inbound = a.direction == "in";
        let by = a.from_name.clone().unwrap_or_default();
        let label = match (inbound, a.internal) {
            (true, false) => "Customer mail".to_owned(),
            (true, true) => "Delivery report (agents only)".to_owned(),
            (false, false) => format!("Reply by {by}"),
            (false, true) => format!("Internal note by {by}"),
        };
        Item {
            kind: if inbound { "in" } else { "out" },
            label,
            from: a.from.clone(),
            from_name: a.from_name.clone(),
            to: Some(a.to.clone()).filter(|t| !t.is_empty()),
            subject: Some(a.subject.clone()).filter(|s| inbound && !s.is_empty()),
            created_at: a.created_at.clone(),
            body: a.body.clone(),
            html: a.html.as_deref().map(sanitise_html),
            attachments: a.attachments.iter().map(value).collect(),
            raw: inbound.then_some(index + 1),
            internal: a.internal,
        }
    }
}

#[derive(Deserialize)]
pub struct WriteForm {
    body: String,
    /// `reply` (to the customer) or `note` (agents only).
    kind: String,
}

pub async fn write(
    State(console): State<super::State>,
    Path(number): Path<String>,
    action: Action<WriteForm>,
) -> Result<Response, WebError> {
    let internal = match action.form.kind.as_str() {
        "reply" => false,
        "note" => true,
        _ => return Err(WebError::BadRequest("a reply or a note".to_owned())),
    };
    let cmd = Write {
        number: number.clone(),
        author: Author { agent_id: action.by.agent.id, name: action.by.agent.name.clone() },
        body: action.form.body,
        internal,
    };
    let random = crate::desk::ingest::random_bytes()?;
    let config = std::sync::Arc::clone(&console.config);
    let now = Utc::now();
    console.store.write(move |tx| tickets::write(tx, &cmd, &config.policy, random, now)).await?;
    if !internal {
        console.nudge();
    }
    Ok(back_to(&number))
}

#[derive(Deserialize)]
pub struct StateForm {
    state: String,
}

pub async fn set_state(
    State(console): State<super::State>,
    Path(number): Path<String>,
    action: Action<StateForm>,
) -> Result<Response, WebError> {
    let state = TicketState::parse(&action.form.state).ok_or_else(|| WebError::BadRequest("no such state".into()))?;
    let cmd = SetState { number: number.clone(), state };
    let now = Utc::now();
    console.store.write(move |tx| tickets::set_state(tx, &cmd, now)).await?;
    Ok(back_to(&number))
}

#[derive(Deserialize)]
pub struct OwnerForm {
    owner: Option<String>,
}

pub async fn set_owner(
    State(console): State<super::State>,
    Path(number): Path<String>,
    action: Action<OwnerForm>,
) -> Result<Response, WebError> {
    let owner = given(&action.form.owner)
        .map(|o| o.parse::<i64>().map_err(|_| WebError::BadRequest("no such agent".into())))
        .transpose()?;
    let (wanted, now) = (number.clone(), Utc::now());
    console.store.write(move |tx| tickets::set_owner(tx, &wanted, owner, now)).await?;
    Ok(back_to(&number))
}

pub async fn raw_article(
    State(console): State<super::State>,
    _: SignedIn,
    Path((number, article)): Path<(String, u32)>,
) -> Result<Response, WebError> {
    let wanted = number.clone();
    let raw = console.store.read(move |tx| tickets::raw_article(tx, &wanted, article)).await?;
    Ok(download(&format!("{number}-{article}.eml"), "message/rfc822", raw))
}

pub async fn attachment(
    State(console): State<super::State>,
    _: SignedIn,
    Path((number, id)): Path<(String, i64)>,
) -> Result<Response, WebError> {
    let (name, _, bytes) = console.store.read(move |tx| tickets::attachment(tx, &number, id)).await?;
    // Never the type the mail claims: an attachment is saved, not shown in the console.
    Ok(download(&name, "application/octet-stream", bytes))
}

/// Bytes the browser saves under a name that cannot escape its folder or the header.
pub fn download(name: &str, content_type: &'static str, bytes: Vec<u8>) -> Response {
    let safe = safe_filename(name);
    let disposition =
        format!("attachment; filename=\"{}\"; filename*=UTF-8''{}", ascii_fallback(&safe), url_encode(&safe));
    ([(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes)
        .into_response()
}

/// A file name without folders, control characters or quotes, at most 120 characters.
fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ';' | ':' | '*' | '?' | '<' | '>' | '|'))
        .take(120)
        .collect();
    let clean = clean.trim().trim_start_matches('.').to_owned();
    if clean.is_empty() {
        "attachment".to_owned()
    } else {
        clean
    }
}

fn ascii_fallback(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii() && c != '%' { c } else { '_' }).collect()
}

fn back_to(number: &str) -> Response {
    Redirect::to(&format!("/tickets/{number}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_made_safe() {
        for (name, want) in [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\ann\\a.txt", "a.txt"),
            ("a\"; filename=evil.html", "a filename=evil.html"),
            ("line\r\nSet-Cookie: x", "lineSet-Cookie x"),
            ("..", "attachment"),
            ("", "attachment"),
        ] {
            assert_eq!(safe_filename(name), want, "{name:?}");
        }
        assert_eq!(ascii_fallback("Grüße 100%.txt"), "Gr__e 100_.txt");
    }
}
