//! The customer portal: signing customer users in by a single-use link sent by mail,
//! their sessions, what they see (exactly the tickets `tickets list --visible-to` lists
//! for their address, without internal articles), closing their own tickets, and the
//! messages they write, which the web adapter ingests through the mail pipeline
//! (`desk::ingest`) as if they had been mailed. A support request of the public form
//! waits here until its sender confirms the address by a link.
//!
//! A ticket a customer user may not see is "not found", never "forbidden": its number
//! tells them nothing.

use chrono::{DateTime, Duration, Utc};

use super::agents::NewSession;
use super::error::{DeskError, Missing};
use super::ingest::{random_bytes, Source};
use super::token::{random_hex, token_hash};
use super::{customers, tickets};
use crate::core::decide::Policy;
use crate::core::parse;
use crate::core::portal::{self as mail, Sender};
use crate::core::route::State;
use crate::core::{reply, ticket_number};
use crate::store::portal as store;
pub use crate::store::portal::Holder;
use crate::store::tickets::{TicketDetail, TicketSummary};
use crate::store::{outbox, Tx};

/// How long a sign-in link works.
pub const LINK_MINUTES: i64 = 15;
/// How long a support request waits for its sender to confirm the address.
pub const REQUEST_MINUTES: i64 = 60;
/// How long a portal session lasts, as an agent's.
pub const SESSION_HOURS: i64 = super::agents::SESSION_HOURS;

/// Where the portal's links lead and who its automatic mail comes from.
pub struct Links<'a> {
    /// `[web] base_url`, without a trailing slash.
    pub base_url: &'a str,
    pub sender: Sender<'a>,
}

/// The customer user a portal session belongs to.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub holder: Holder,
    pub name: Option<String>,
    pub csrf: String,
}

/// Sends a sign-in link to `email` when it is an address of a customer user; says
/// whether it did (for tests and logs: the page answers the same either way).
pub fn request_link(tx: &Tx, email: &str, links: &Links, now: DateTime<Utc>) -> Result<bool, DeskError> {
    store::delete_expired(tx, now)?;
    let customer_id = match customers::find(tx, email) {
        Ok(id) => id,
        Err(DeskError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let token = random_hex()?;
    let holder = Holder { customer_id, email: email.to_owned() };
    store::create_link(tx, &token_hash(&token), &holder, now, now + Duration::minutes(LINK_MINUTES))?;
    let link = format!("{}/portal/sign-in?token={token}", links.base_url);
    let mail = mail::sign_in_mail(&links.sender, email, &link, LINK_MINUTES, random_bytes()?);
    outbox::queue(tx, None, &mail, now)?;
    Ok(true)
}

/// Uses a sign-in link: a session of its customer user, writing as the address the link
/// was sent to.
pub fn sign_in(tx: &Tx, token: &str, now: DateTime<Utc>) -> Result<NewSession, DeskError> {
    let holder = store::use_link(tx, &token_hash(token), now)?.ok_or(DeskError::LinkInvalid)?;
    let session = NewSession { token: random_hex()?, csrf: random_hex()? };
    let expires = now + Duration::hours(SESSION_HOURS);
    store::create_session(tx, &token_hash(&session.token), &holder, &session.csrf, now, expires)?;
    Ok(session)
}

/// The session of a token, if it is one, unexpired, and its address still the customer
/// user's.
pub fn session(tx: &Tx, token: &str, now: DateTime<Utc>) -> Result<Option<SignedIn>, DeskError> {
    let Some((holder, csrf)) = store::session(tx, &token_hash(token), now)? else {
        return Ok(None);
    };
    let name = crate::store::customers::get(tx, holder.customer_id)?.name;
    Ok(Some(SignedIn { holder, name, csrf }))
}

pub fn sign_out(tx: &Tx, token: &str) -> Result<(), DeskError> {
    Ok(store::delete_session(tx, &token_hash(token))?)
}

/// A page of the tickets `who` may see, newest activity first: the very query of
/// `tickets list --visible-to`.
pub fn tickets(tx: &Tx, who: &Holder, page: &Page, now: DateTime<Utc>) -> Result<Vec<TicketSummary>, DeskError> {
    let query = tickets::Query { after: page.after.clone(), limit: Some(page.limit), ..visible(who, None, page.state) };
    tickets::list(tx, &query, now)
}

/// Which tickets of the visible ones a list shows.
#[derive(Debug, Clone)]
pub struct Page {
    pub state: Option<State>,
    /// The page after this ticket.
    pub after: Option<tickets::Cursor>,
    pub limit: u32,
}

fn visible(who: &Holder, number: Option<&str>, state: Option<State>) -> tickets::Query {
    tickets::Query {
        visible_to: Some(who.email.clone()),
        number: number.map(str::to_owned),
        state,
        ..Default::default()
    }
}

/// One ticket `who` may see, as `tickets list --visible-to` would list it; any other
/// number is not found.
fn visible_ticket(tx: &Tx, who: &Holder, number: &str, now: DateTime<Utc>) -> Result<TicketSummary, DeskError> {
    let found = tickets::list(tx, &visible(who, Some(number), None), now)?;
    found.into_iter().next().ok_or_else(|| Missing::Ticket(number.to_owned()).into())
}

/// A ticket `who` may see, with its public articles only (no internal notes, no
/// delivery reports).
pub fn ticket(tx: &Tx, who: &Holder, number: &str, now: DateTime<Utc>) -> Result<TicketDetail, DeskError> {
    visible_ticket(tx, who, number, now)?;
    let mut detail = tickets::show(tx, number)?;
    detail.article_list.retain(|a| !a.internal);
    Ok(detail)
}

/// An attachment of a public article of a ticket `who` may see: name and bytes.
pub fn attachment(
    tx: &Tx,
    who: &Holder,
    number: &str,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(String, Vec<u8>), DeskError> {
    let detail = ticket(tx, who, number, now)?;
    if !detail.article_list.iter().any(|a| a.attachments.iter().any(|f| f.id == id)) {
        return Err(Missing::Attachment { number: number.to_owned(), name: format!("#{id}") }.into());
    }
    let (name, _, bytes) = tickets::attachment(tx, number, id)?;
    Ok((name, bytes))
}

/// Closes a ticket of `who`'s own; a colleague's ticket they may see but not close.
pub fn close(tx: &Tx, who: &Holder, number: &str, now: DateTime<Utc>) -> Result<(), DeskError> {
    let ticket = visible_ticket(tx, who, number, now)?;
    if ticket.customer_id != Some(who.customer_id) {
        return Err(DeskError::NotYourTicket(number.to_owned()));
    }
    let cmd = tickets::SetState { number: number.to_owned(), state: State::Closed };
    tickets::set_state(tx, &cmd, now).map(drop)
}

/// What a customer user's message in the portal is made of.
pub struct Message<'a> {
    pub subject: &'a str,
    pub body: &'a str,
    pub uploads: &'a [mail::Upload],
}

/// `who`'s reply to a ticket they may see, as the raw mail the pipeline ingests: to the
/// helpdesk address the ticket came in on, its tag in the subject, threaded by
/// In-Reply-To/References, so that it lands on the ticket as their mail would.
pub fn reply(
    tx: &Tx,
    who: &SignedIn,
    number: &str,
    text: &Message,
    helpdesk: &Helpdesk,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, DeskError> {
    visible_ticket(tx, &who.holder, number, now)?;
    let ticket = crate::store::tickets::reply_context(tx, number)?.ok_or_else(|| Missing::Ticket(number.into()))?;
    let subject = reply::tagged_subject(helpdesk.tag_prefix, number, &ticket.subject);
    let references = reply::references(&ticket.thread);
    let to = ticket.ack_sender.as_deref().unwrap_or(helpdesk.address);
    let text = Message { subject: &subject, ..*text };
    compose(&who.holder.email, who.name.as_deref(), to, &text, references.last().map(String::as_str), &references, now)
}

/// A new ticket's message from `name <email>` (a signed-in customer user, or the sender
/// of the public form), as the raw mail the pipeline ingests. Ticket tags typed into the
/// subject are dropped: a form opens a ticket, it is no way into another one.
pub fn new_ticket(
    email: &str,
    name: Option<&str>,
    text: &Message,
    helpdesk: &Helpdesk,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, DeskError> {
    let subject = ticket_number::strip_tags(text.subject, helpdesk.tag_prefix);
    compose(email, name, helpdesk.address, &Message { subject: &subject, ..*text }, None, &[], now)
}

fn compose(
    from: &str,
    from_name: Option<&str>,
    to: &str,
    text: &Message,
    in_reply_to: Option<&str>,
    references: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, DeskError> {
    Ok(mail::compose(&mail::Written {
        from,
        from_name,
        to,
        subject: text.subject,
        body: text.body,
        in_reply_to,
        references,
        uploads: text.uploads,
        date: now,
        random: random_bytes()?,
    })?)
}

/// The helpdesk as the portal's messages need it.
pub struct Helpdesk<'a> {
    pub address: &'a str,
    pub tag_prefix: &'a str,
}

/// A support request of the public form (`raw`, made by `new_ticket`) from `email`:
/// kept until its sender confirms the address by the link mailed to it; nothing is
/// opened before.
pub fn request_ticket(tx: &Tx, email: &str, raw: &[u8], links: &Links, now: DateTime<Utc>) -> Result<(), DeskError> {
    store::delete_expired(tx, now)?;
    let token = random_hex()?;
    store::create_request(tx, &token_hash(&token), email, raw, now, now + Duration::minutes(REQUEST_MINUTES))?;
    let link = format!("{}/support/confirm?token={token}", links.base_url);
    outbox::queue(tx, None, &mail::confirm_mail(&links.sender, email, &link, REQUEST_MINUTES, random_bytes()?), now)?;
    Ok(())
}

/// What a waiting request says, shown to its sender before they confirm it: subject,
/// text and the names of its attachments.
pub struct Preview {
    pub subject: String,
    pub text: String,
    pub attachments: Vec<String>,
}

/// The request a confirmation link stands for, unexpired.
pub fn pending_request(tx: &Tx, token: &str, policy: &Policy, now: DateTime<Utc>) -> Result<Preview, DeskError> {
    let raw = store::request(tx, &token_hash(token), now)?.ok_or(DeskError::LinkInvalid)?;
    let inbound = parse::parse(&raw, &policy.loop_header)
        .map_err(|e| mail::WrittenError::Build(format!("the request does not parse: {e}")))?;
    let attachments = inbound.attachments.iter().map(|a| a.filename.clone()).collect();
    Ok(Preview { subject: inbound.subject, text: inbound.text_body, attachments })
}

/// The message of a confirmed request and its source: confirmed twice, the same source,
/// which the pipeline recognises as already processed.
pub fn confirmed_request(tx: &Tx, token: &str, now: DateTime<Utc>) -> Result<(Vec<u8>, Source), DeskError> {
    let hash = token_hash(token);
    let raw = store::request(tx, &hash, now)?.ok_or(DeskError::LinkInvalid)?;
    Ok((raw, Source::web(format!("request:{hash}"), "support form")))
}

/// Forgets a request once its ticket is committed.
pub fn forget_request(tx: &Tx, token: &str) -> Result<(), DeskError> {
    Ok(store::delete_request(tx, &token_hash(token))?)
}

/// The source of a message written by a signed-in customer user.
pub fn written_source(who: &SignedIn) -> Result<Source, DeskError> {
    Ok(Source::web(format!("portal:{}", random_hex()?), &format!("portal ({})", who.holder.email)))
}
