//! Tickets: listing with filters (a page at a time, with counts per state), reading one,
//! getting an article's or attachments' bytes out, and working it: the state, the owner,
//! an agent's reply to the customer (through the outbox) and internal notes. Names in a query (organisation, customer) are
//! resolved in the same transaction, and one that names nothing is refused, not an
//! empty list.

use chrono::{DateTime, Utc};

use super::error::{DeskError, Missing};
use super::{customers, orgs};
use crate::core::decide::Policy;
use crate::core::reply::{self, ReplyInput};
use crate::core::route::State;
pub use crate::store::tickets::Cursor;
use crate::store::tickets::{self as store, Outbound, TicketDetail, TicketSummary};
use crate::store::{outbox, Tx};

/// Which tickets `list` returns; every field narrows the list.
#[derive(Debug, Default)]
pub struct Query {
    pub state: Option<State>,
    /// Filed under the organisation of this name.
    pub org: Option<String>,
    /// Of the customer user with this (normalised) address, from any of their addresses.
    pub customer: Option<String>,
    /// What the customer user with this address may see: their own tickets and those of
    /// their primary and linked organisations.
    pub visible_to: Option<String>,
    /// Not closed, and the first response is due by now.
    pub overdue: bool,
    /// Created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Text in the subject or a body, any case.
    pub search: Option<String>,
    /// Owned by the agent with this id.
    pub owner_id: Option<i64>,
    /// The page after this ticket.
    pub after: Option<Cursor>,
    /// At most this many, newest activity first.
    pub limit: Option<u32>,
}

/// An attachment's file name and bytes.
pub type File = (String, Vec<u8>);

/// "Set the state of ticket `number`".
#[derive(Debug)]
pub struct SetState {
    pub number: String,
    pub state: State,
}

/// A state set, and the one it replaced.
#[derive(Debug)]
pub struct StateChanged {
    pub previous: State,
    pub ticket: TicketSummary,
}

/// Who writes an article: the signed-in agent.
#[derive(Debug, Clone)]
pub struct Author {
    pub agent_id: i64,
    pub name: String,
}

/// "Answer the customer of ticket `number`" or, `internal`, "note this on it".
#[derive(Debug)]
pub struct Write {
    pub number: String,
    pub author: Author,
    pub body: String,
    pub internal: bool,
}

/// The tickets a query selects, newest activity first; `now` decides what is overdue.
pub fn list(tx: &Tx, query: &Query, now: DateTime<Utc>) -> Result<Vec<TicketSummary>, DeskError> {
    Ok(store::list(tx, &filter(tx, query, now)?)?)
}

/// How many tickets the query selects in each state, its own state aside.
pub fn count_by_state(tx: &Tx, query: &Query, now: DateTime<Utc>) -> Result<Vec<(State, i64)>, DeskError> {
    Ok(store::count_by_state(tx, &filter(tx, query, now)?)?)
}

fn filter(tx: &Tx, query: &Query, now: DateTime<Utc>) -> Result<store::Filter, DeskError> {
    Ok(store::Filter {
        state: query.state,
        organisation_id: orgs::find_opt(tx, query.org.as_deref())?,
        customer_id: customers::find_opt(tx, query.customer.as_deref())?,
        visible_to: customers::find_opt(tx, query.visible_to.as_deref())?,
        overdue_at: query.overdue.then_some(now),
        since: query.since,
        search: query.search.clone(),
        owner_id: query.owner_id,
        after: query.after.clone(),
        limit: query.limit,
    })
}

/// One ticket with its articles, oldest first.
pub fn show(tx: &Tx, number: &str) -> Result<TicketDetail, DeskError> {
    store::show(tx, number)?.ok_or_else(|| no_ticket(number))
}

/// The bytes article `article` (1 = the first) arrived with; one we wrote has none.
pub fn raw_article(tx: &Tx, number: &str, article: u32) -> Result<Vec<u8>, DeskError> {
    let missing = || Missing::RawArticle { number: number.to_owned(), article }.into();
    store::raw_article(tx, number, article)?.ok_or_else(missing)
}

/// The first attachment called `name` or, without a name, every attachment, oldest
/// article first.
pub fn attachments(tx: &Tx, number: &str, name: Option<&str>) -> Result<Vec<File>, DeskError> {
    let all = store::attachments(tx, number)?;
    if all.is_empty() {
        return Err(Missing::Attachments(number.to_owned()).into());
    }
    let Some(name) = name else {
        return Ok(all);
    };
    match all.into_iter().find(|(n, _)| n == name) {
        Some(file) => Ok(vec![file]),
        None => Err(Missing::Attachment { number: number.to_owned(), name: name.to_owned() }.into()),
    }
}

pub fn set_state(tx: &Tx, cmd: &SetState, now: DateTime<Utc>) -> Result<StateChanged, DeskError> {
    let number = &cmd.number;
    let before = store::summary(tx, number)?.ok_or_else(|| no_ticket(number))?;
    store::set_state(tx, number, cmd.state, now)?;
    let ticket = store::summary(tx, number)?.ok_or_else(|| no_ticket(number))?;
    Ok(StateChanged { previous: before.state, ticket })
}

/// The ticket as an agent opens it: no longer marked as having news from the customer.
pub fn open(tx: &Tx, number: &str, now: DateTime<Utc>) -> Result<TicketDetail, DeskError> {
    store::mark_seen(tx, number, now)?;
    show(tx, number)
}

/// One attachment by its id: name, content type and bytes.
pub fn attachment(tx: &Tx, number: &str, id: i64) -> Result<(String, String, Vec<u8>), DeskError> {
    let missing = || Missing::Attachment { number: number.to_owned(), name: format!("#{id}") }.into();
    store::attachment(tx, number, id)?.ok_or_else(missing)
}

/// An agent's reply or internal note. A reply is queued in the outbox as a mail that
/// threads into the ticket (`core::reply`), and stops the first-response clock; `random`
/// makes its Message-ID. Returns the reply's Message-ID (none for a note).
pub fn write(
    tx: &Tx,
    cmd: &Write,
    policy: &Policy,
    random: [u8; 16],
    now: DateTime<Utc>,
) -> Result<Option<String>, DeskError> {
    let ticket = store::reply_context(tx, &cmd.number)?.ok_or_else(|| no_ticket(&cmd.number))?;
    let mut article = Outbound {
        ticket_id: ticket.id,
        agent_id: cmd.author.agent_id,
        agent_name: &cmd.author.name,
        from: None,
        to: "",
        subject: &ticket.subject,
        message_id: None,
        body: &cmd.body,
        internal: true,
    };
    if cmd.internal {
        if cmd.body.trim().is_empty() {
            return Err(reply::ReplyError::Empty.into());
        }
        store::add_outbound(tx, &article, now)?;
        return Ok(None);
    }
    let main = policy.own_addresses.first().map_or("", String::as_str);
    let from_name = format!("{} ({})", cmd.author.name, policy.ack.from_name);
    let mail = reply::build(&ReplyInput {
        ticket_number: &cmd.number,
        ticket_subject: &ticket.subject,
        to: ticket.customer_email.as_deref(),
        to_name: ticket.customer_name.as_deref(),
        from: ticket.ack_sender.as_deref().unwrap_or(main),
        from_name: &from_name,
        thread: &ticket.thread,
        answering: ticket.answering.as_deref(),
        tag_prefix: &policy.tag_prefix,
        body: &cmd.body,
        random,
    })?;
    article = Outbound {
        from: Some(&mail.from),
        to: &mail.to,
        subject: &mail.subject,
        message_id: Some(&mail.message_id),
        body: &mail.body,
        internal: false,
        ..article
    };
    store::add_outbound(tx, &article, now)?;
    outbox::queue(tx, ticket.id, &mail, now)?;
    // An answered ticket is being worked on: no longer new.
    if store::summary(tx, &cmd.number)?.is_some_and(|t| t.state == State::New) {
        store::set_state(tx, &cmd.number, State::Open, now)?;
    }
    Ok(Some(mail.message_id))
}

/// Gives the ticket to an agent (by id), or to nobody.
pub fn set_owner(tx: &Tx, number: &str, owner_id: Option<i64>, now: DateTime<Utc>) -> Result<(), DeskError> {
    store::summary(tx, number)?.ok_or_else(|| no_ticket(number))?;
    if let Some(id) = owner_id {
        super::agents::get(tx, id)?;
    }
    Ok(store::set_owner(tx, number, owner_id, now)?)
}

fn no_ticket(number: &str) -> DeskError {
    Missing::Ticket(number.to_owned()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::testing::{now, store, ticket};

    #[test]
    fn setting_the_state_says_what_it_was() {
        let mut store = store();
        let number = ticket(&mut store, "ann@acme.example", "printer");
        let cases = [(State::Closed, State::New), (State::Pending, State::Closed), (State::Pending, State::Pending)];
        for (state, previous) in cases {
            let cmd = SetState { number: number.clone(), state };
            let changed = store.write(|tx| set_state(tx, &cmd, now())).unwrap();
            assert_eq!((changed.previous, changed.ticket.state), (previous, state));
        }
        let missing = SetState { number: "2020010110000016".into(), state: State::Open };
        let err = store.write(|tx| set_state(tx, &missing, now())).unwrap_err();
        assert_eq!(err.to_string(), "no ticket 2020010110000016");
    }

    #[test]
    fn queries_name_what_is_not_there() {
        let mut store = store();
        let number = ticket(&mut store, "ann@acme.example", "printer");
        let queries = [
            (
                Query { customer: Some("nobody@acme.example".into()), ..Default::default() },
                "no customer nobody@acme.example",
            ),
            (
                Query { visible_to: Some("nobody@acme.example".into()), ..Default::default() },
                "no customer nobody@acme.example",
            ),
            (Query { org: Some(" Nope ".into()), ..Default::default() }, r#"no organisation "Nope""#),
        ];
        for (query, want) in queries {
            assert_eq!(store.read(|tx| list(tx, &query, now())).unwrap_err().to_string(), want);
        }
        let mine = Query { visible_to: Some("ann@acme.example".into()), ..Default::default() };
        assert_eq!(store.read(|tx| list(tx, &mine, now())).unwrap().len(), 1);
        assert!(store.read(|tx| raw_article(tx, &number, 1)).unwrap().starts_with(b"From: ann@acme.example"));
        let reads: [(Result<(), DeskError>, String); 3] = [
            (
                store.read(|tx| raw_article(tx, &number, 2).map(drop)),
                format!("ticket {number} has no article 2 with the bytes it arrived with"),
            ),
            (
                store.read(|tx| attachments(tx, &number, None).map(drop)),
                format!("ticket {number} has no attachments (or does not exist)"),
            ),
            (store.read(|tx| show(tx, "2020010110000016").map(drop)), "no ticket 2020010110000016".into()),
        ];
        for (result, want) in reads {
            assert_eq!(result.unwrap_err().to_string(), want);
        }
    }
}
