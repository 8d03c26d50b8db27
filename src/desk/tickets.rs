//! Tickets: listing with filters, reading one, getting an article's or attachments'
//! bytes out, and setting the state. Names in a query (organisation, customer) are
//! resolved in the same transaction, and one that names nothing is refused, not an
//! empty list.

use chrono::{DateTime, Utc};

use super::error::{DeskError, Missing};
use super::{customers, orgs};
use crate::core::route::State;
use crate::store::tickets::{self as store, TicketDetail, TicketSummary};
use crate::store::Tx;

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
    /// At most this many, the newest.
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

/// The tickets a query selects, newest first; `now` decides what is overdue.
pub fn list(tx: &Tx, query: &Query, now: DateTime<Utc>) -> Result<Vec<TicketSummary>, DeskError> {
    let filter = store::Filter {
        state: query.state,
        organisation_id: orgs::find_opt(tx, query.org.as_deref())?,
        customer_id: customers::find_opt(tx, query.customer.as_deref())?,
        visible_to: customers::find_opt(tx, query.visible_to.as_deref())?,
        overdue_at: query.overdue.then_some(now),
        since: query.since,
        search: query.search.clone(),
        limit: query.limit,
    };
    Ok(store::list(tx, &filter)?)
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
