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
    /// Only the ticket of this number (whether a query selects one ticket).
    pub number: Option<String>,
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
        number: query.number.clone(),
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
    outbox::queue(tx, Some(ticket.id), &mail, now)?;
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
    fn a_reply_is_queued_threaded_stops_the_clock_and_a_note_is_not_mailed() {
        let mut store = store();
        let config = crate::desk::testing::config();
        store
            .write(|tx| {
                let acme = orgs::Add { name: "Acme".into(), domains: vec!["acme.example".into()], force: false };
                orgs::add(tx, &acme, &[], now())?;
                let hours = orgs::Edit { name: "Acme".into(), first_response: Some(4), ..Default::default() };
                orgs::edit(tx, &hours, &[])
            })
            .unwrap();
        let number = ticket(&mut store, "ann@acme.example", "printer");
        let add = crate::desk::agents::Add {
            email: "bo@helpdesk.example".into(),
            name: "Bo".into(),
            role: crate::desk::agents::Role::Agent,
            password: "long enough password".into(),
        };
        let agent = store.write(|tx| crate::desk::agents::add(tx, &add, now())).unwrap();
        let author = Author { agent_id: agent.id, name: agent.name.clone() };
        let write = |internal: bool, body: &str| Write {
            number: number.clone(),
            author: author.clone(),
            body: body.into(),
            internal,
        };
        let later = now() + chrono::Duration::days(3);
        let note = store.write(|tx| super::write(tx, &write(true, "angry"), &config.policy, [1; 16], later)).unwrap();
        assert_eq!(note, None, "a note has no Message-ID");
        let overdue = Query { overdue: true, ..Default::default() };
        assert_eq!(
            store.read(|tx| list(tx, &overdue, later)).unwrap().len(),
            1,
            "four hours passed, a note is no answer"
        );
        let id = store.write(|tx| super::write(tx, &write(false, "Fixed."), &config.policy, [2; 16], later)).unwrap();
        let id = id.expect("a reply has our Message-ID");
        let rows = store.read(|tx| crate::desk::outbox::list(tx, None)).unwrap();
        let reply = rows.iter().find(|r| r.message_id == id).expect("the reply is in the outbox");
        assert_eq!((reply.kind, reply.recipient.as_str()), (crate::core::ack::MailKind::Reply, "ann@acme.example"));
        assert_eq!(reply.in_reply_to.as_deref(), Some("printer.ann.acme.example@test.example"));
        assert_eq!(rows.len(), 2, "the acknowledgement and the reply, not the note");
        let shown = store.read(|tx| show(tx, &number)).unwrap();
        assert_eq!(shown.summary.state, State::Open, "answered: no longer new");
        assert!(shown.summary.first_response_at.is_some());
        let labels: Vec<(&str, bool)> = shown.article_list.iter().map(|a| (a.direction.as_str(), a.internal)).collect();
        assert_eq!(labels, [("in", false), ("out", true), ("out", false)]);
        assert!(store.read(|tx| list(tx, &overdue, later)).unwrap().is_empty(), "answered is not overdue");
        let empty = store.write(|tx| super::write(tx, &write(false, " \n"), &config.policy, [3; 16], later));
        assert_eq!(empty.unwrap_err().to_string(), "the reply is empty");
        let nobody = store.write(|tx| set_owner(tx, &number, Some(agent.id + 1), later)).unwrap_err();
        assert_eq!(nobody.to_string(), format!("no agent #{}", agent.id + 1));
    }

    /// The counts per state the triggers keep are the counts a query finds.
    #[test]
    fn kept_counts_are_counted_counts() {
        let mut store = store();
        let numbers: Vec<String> = (0..6).map(|i| ticket(&mut store, "ann@acme.example", &format!("s{i}"))).collect();
        for (number, state) in numbers.iter().zip([State::Open, State::Open, State::Closed, State::Pending]) {
            store.write(|tx| set_state(tx, &SetState { number: number.clone(), state }, now())).unwrap();
        }
        let kept = Query::default();
        let counted = Query { since: Some(now() - chrono::Duration::days(1)), ..Default::default() };
        let mut a = store.read(|tx| count_by_state(tx, &kept, now())).unwrap();
        let mut b = store.read(|tx| count_by_state(tx, &counted, now())).unwrap();
        a.retain(|(_, n)| *n > 0);
        a.sort_by_key(|(s, _)| s.as_str());
        b.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|(_, n)| n).sum::<i64>(), 6);
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
