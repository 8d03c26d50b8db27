//! Customer users: listing with filters, showing one with their tickets, adding one by
//! hand, editing addresses and organisations, merging two into one. The rules — an
//! address is one customer's, the last address stays, the primary organisation is never
//! also a linked one, no merge into oneself — are checked here (with `core::admin`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::{DeskError, Missing, Same};
use super::orgs;
pub use super::Merge;
use crate::core::admin::{self, Claim, KeepAddress};
use crate::store::customers::{self as store, Customer, Filter, Month};
use crate::store::tickets::{self, TicketSummary};
use crate::store::Tx;

/// Which customers `list` returns; every field narrows the list.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// `Some(true)`: with at least one ticket; `Some(false)`: without any.
    pub has_tickets: Option<bool>,
    pub added: Option<Month>,
    /// Members of the organisation of this name, primary or linked.
    pub org: Option<String>,
    /// A case-insensitive part of the name or of an address.
    pub search: Option<String>,
    /// A page: at most `limit`, after skipping `offset`.
    pub limit: Option<u32>,
    pub offset: u32,
}

/// A customer and their tickets, newest first.
#[derive(Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub customer: Customer,
    pub ticket_list: Vec<TicketSummary>,
}

/// "New customer": without `org`, the customer joins the organisation owning the
/// address's domain, as ingest would file them.
#[derive(Debug)]
pub struct Add {
    /// Normalised.
    pub email: String,
    pub name: Option<String>,
    pub org: Option<String>,
}

/// Changes to the customer owning `email` (any of their addresses, normalised).
#[derive(Debug)]
pub struct Edit {
    pub email: String,
    pub changes: Changes,
}

/// Applied in this order: name, added addresses, removed ones (so one edit can replace
/// an address), primary organisation, links, unlinks.
#[derive(Debug, Default)]
pub struct Changes {
    /// An empty name clears it.
    pub name: Option<String>,
    /// Normalised addresses.
    pub add_email: Vec<String>,
    pub remove_email: Vec<String>,
    /// One of their addresses (after the additions) to make the primary one.
    pub primary_email: Option<String>,
    pub org: Option<Primary>,
    pub link_org: Vec<String>,
    pub unlink_org: Vec<String>,
}

/// The primary organisation to set.
#[derive(Debug)]
pub enum Primary {
    Set(String),
    Clear,
}

impl Changes {
    fn are_none(&self) -> bool {
        self.name.is_none()
            && self.add_email.is_empty()
            && self.remove_email.is_empty()
            && self.primary_email.is_none()
            && self.org.is_none()
            && self.link_org.is_empty()
            && self.unlink_org.is_empty()
    }
}

/// The customers a query selects, by name.
pub fn list(tx: &Tx, query: &Query) -> Result<Vec<Customer>, DeskError> {
    Ok(store::list(tx, &filter(tx, query)?)?)
}

/// How many customers the query selects in each view of the Customers page (its page
/// and its own view aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewCounts {
    pub all: i64,
    pub with_tickets: i64,
    pub without_tickets: i64,
}

/// A page of the Customers page: the customers the query selects, and the counts of its
/// views, from one look-up of the query's names and search.
pub fn page(tx: &Tx, query: &Query) -> Result<(Vec<Customer>, ViewCounts), DeskError> {
    let filter = filter(tx, query)?;
    let (all, with_tickets) = store::count_with_tickets(tx, &filter)?;
    let counts = ViewCounts { all, with_tickets, without_tickets: all - with_tickets };
    Ok((store::list(tx, &filter)?, counts))
}

/// The months (`YYYY-MM`) in which customers were added, newest first.
pub fn months(tx: &Tx) -> Result<Vec<String>, DeskError> {
    Ok(store::months(tx)?)
}

fn filter(tx: &Tx, query: &Query) -> Result<Filter, DeskError> {
    Ok(Filter {
        has_tickets: query.has_tickets,
        added: query.added,
        organisation_id: orgs::find_opt(tx, query.org.as_deref())?,
        search: query.search.as_deref().map(|text| store::search(tx, text)).transpose()?,
        limit: query.limit,
        offset: query.offset,
    })
}

pub fn show(tx: &Tx, email: &str) -> Result<Detail, DeskError> {
    detail(tx, find(tx, email)?)
}

/// `show` for the customer with this id (the console's links).
pub fn show_id(tx: &Tx, id: i64) -> Result<Detail, DeskError> {
    if !store::exists(tx, id)? {
        return Err(Missing::Customer(format!("#{id}")).into());
    }
    detail(tx, id)
}

fn detail(tx: &Tx, id: i64) -> Result<Detail, DeskError> {
    let theirs = tickets::Filter { customer_id: Some(id), ..Default::default() };
    Ok(Detail { customer: store::get(tx, id)?, ticket_list: tickets::list(tx, &theirs)? })
}

/// The customer user owning a normalised address.
pub fn find(tx: &Tx, email: &str) -> Result<i64, DeskError> {
    store::owner_of(tx, email)?.ok_or_else(|| Missing::Customer(email.to_owned()).into())
}

/// `find` for an address that may not be given.
pub fn find_opt(tx: &Tx, email: Option<&str>) -> Result<Option<i64>, DeskError> {
    email.map(|e| find(tx, e)).transpose()
}

pub fn add(tx: &Tx, cmd: &Add, now: DateTime<Utc>) -> Result<Customer, DeskError> {
    claim_address(tx, &cmd.email, None)?;
    let organisation_id = match &cmd.org {
        Some(org) => Some(orgs::find(tx, org)?),
        None => crate::store::orgs::owner_of_address(tx, &cmd.email)?,
    };
    let name = cmd.name.as_deref().and_then(admin::clean_name);
    let id = store::create(tx, &cmd.email, name, organisation_id, now)?;
    Ok(store::get(tx, id)?)
}

/// All of the changes or, when one is refused, none (the caller's transaction).
pub fn edit(tx: &Tx, cmd: &Edit) -> Result<Customer, DeskError> {
    let changes = &cmd.changes;
    if changes.are_none() {
        return Err(DeskError::NothingToChange);
    }
    let id = find(tx, &cmd.email)?;
    if let Some(name) = &changes.name {
        store::set_name(tx, id, admin::clean_name(name))?;
    }
    for address in &changes.add_email {
        if claim_address(tx, address, Some(id))? {
            store::add_email(tx, id, address)?;
        }
    }
    for address in &changes.remove_email {
        remove_email(tx, id, &cmd.email, address)?;
    }
    if let Some(address) = &changes.primary_email {
        if store::owner_of(tx, address)? != Some(id) {
            return Err(Missing::AddressOf { address: address.clone(), customer: cmd.email.clone() }.into());
        }
        store::set_primary(tx, id, address)?;
    }
    if let Some(primary) = &changes.org {
        let organisation_id = match primary {
            Primary::Set(name) => Some(orgs::find(tx, name)?),
            Primary::Clear => None,
        };
        store::set_organisation(tx, id, organisation_id)?;
    }
    for org in &changes.link_org {
        link(tx, id, &cmd.email, org)?;
    }
    for org in &changes.unlink_org {
        if !store::unlink(tx, id, orgs::find(tx, org)?)? {
            let (customer, organisation) = (cmd.email.clone(), org.trim().to_owned());
            return Err(Missing::Link { customer, organisation }.into());
        }
    }
    Ok(store::get(tx, id)?)
}

/// FROM's addresses, tickets and organisations move to INTO, and FROM is deleted; both
/// named by any of their addresses (normalised).
pub fn merge(tx: &Tx, cmd: &Merge) -> Result<Customer, DeskError> {
    let from = find(tx, &cmd.from)?;
    let into = find(tx, &cmd.into)?;
    if !admin::may_merge(from, into) {
        let (from, into) = (cmd.from.clone(), cmd.into.clone());
        return Err(DeskError::SameEntity(Same::Customer { from, into }));
    }
    store::merge(tx, from, into)?;
    Ok(store::get(tx, into)?)
}

/// Whether `customer` (`None`: one about to be created) gets the address: `true` when it
/// is free, `false` when it is theirs already; refused when it is another's.
fn claim_address(tx: &Tx, address: &str, customer: Option<i64>) -> Result<bool, DeskError> {
    match Claim::of(store::owner_of(tx, address)?, |owner| Some(*owner) == customer) {
        Claim::Free => Ok(true),
        Claim::Held => Ok(false),
        Claim::HeldBy(owner) => {
            let owner = store::get(tx, owner)?.email;
            Err(DeskError::AddressTaken { address: address.to_owned(), owner })
        }
    }
}

/// `email` is how the command named the customer.
fn remove_email(tx: &Tx, id: i64, email: &str, address: &str) -> Result<(), DeskError> {
    let holder = store::owner_of(tx, address)?;
    match admin::may_remove_address(holder, id, store::email_count(tx, id)?) {
        Ok(()) => Ok(store::remove_email(tx, id, address)?),
        Err(KeepAddress::LastAddress) => Err(DeskError::LastAddress { address: address.to_owned() }),
        Err(KeepAddress::NotTheirs) => {
            Err(Missing::AddressOf { address: address.to_owned(), customer: email.to_owned() }.into())
        }
    }
}

fn link(tx: &Tx, id: i64, email: &str, org: &str) -> Result<(), DeskError> {
    let organisation_id = orgs::find(tx, org)?;
    if !admin::may_link(store::organisation_id(tx, id)?, organisation_id) {
        let (customer, organisation) = (email.to_owned(), org.trim().to_owned());
        return Err(DeskError::AlreadyPrimary { customer, organisation });
    }
    Ok(store::link(tx, id, organisation_id)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::orgs as org_desk;
    use crate::desk::testing::{now, store, ticket};
    use crate::store::Store;

    /// Acme owns acme.example; Ann (acme.example, two addresses) and Bob (one address,
    /// linked to Globex) are customers.
    fn helpdesk() -> Store {
        let mut store = store();
        store
            .write(|tx| {
                for (name, domains) in [("Acme", vec!["acme.example".to_owned()]), ("Globex", vec![])] {
                    let add = org_desk::Add { name: name.to_owned(), domains, force: false };
                    org_desk::add(tx, &add, &[], now())?;
                }
                add(tx, &new("ann@acme.example", None), now())?;
                add(tx, &new("bob@home.example", None), now())?;
                edit(
                    tx,
                    &changes(
                        "ann@acme.example",
                        Changes { add_email: vec!["ann@home.example".into()], ..Default::default() },
                    ),
                )?;
                edit(
                    tx,
                    &changes("bob@home.example", Changes { link_org: vec!["Globex".into()], ..Default::default() }),
                )
            })
            .unwrap();
        store
    }

    fn new(email: &str, org: Option<&str>) -> Add {
        Add { email: email.to_owned(), name: None, org: org.map(str::to_owned) }
    }

    fn changes(email: &str, changes: Changes) -> Edit {
        Edit { email: email.to_owned(), changes }
    }

    fn shown(store: &mut Store, email: &str) -> Customer {
        store.read(|tx| show(tx, email)).unwrap().customer
    }

    #[test]
    fn adding_files_under_the_domain_owner_or_the_named_organisation() {
        let mut store = helpdesk();
        let cases = [
            (new("cy@acme.example", None), Some("Acme")),
            (new("di@sub.acme.example", None), Some("Acme")),
            (new("ed@acme.example", Some("globex")), Some("Globex")),
            (new("fay@gmail.com", None), None),
        ];
        for (cmd, org) in cases {
            let added = store.write(|tx| add(tx, &cmd, now())).unwrap();
            assert_eq!(added.organisation.as_deref(), org, "{cmd:?}");
        }
        let named = Add { name: Some("  Gil  ".into()), ..new("gil@x.example", None) };
        assert_eq!(store.write(|tx| add(tx, &named, now())).unwrap().name.as_deref(), Some("Gil"));
    }

    /// Every refusal names what it refused, and nothing of the command is kept.
    #[test]
    fn refusals_write_nothing() {
        let mut store = helpdesk();
        let name = |name: &str| Some(name.to_owned());
        let cases: Vec<(Edit, &str)> = vec![
            (changes("ann@acme.example", Changes::default()), "NothingToChange"),
            (
                changes("nobody@acme.example", Changes { name: name("X"), ..Default::default() }),
                r#"NotFound(Customer("nobody@acme.example"))"#,
            ),
            (
                changes(
                    "bob@home.example",
                    Changes { name: name("X"), add_email: vec!["ann@home.example".into()], ..Default::default() },
                ),
                r#"AddressTaken { address: "ann@home.example", owner: "ann@acme.example" }"#,
            ),
            (
                changes(
                    "bob@home.example",
                    Changes { name: name("X"), remove_email: vec!["bob@home.example".into()], ..Default::default() },
                ),
                r#"LastAddress { address: "bob@home.example" }"#,
            ),
            (
                changes(
                    "bob@home.example",
                    Changes { remove_email: vec!["ann@home.example".into()], ..Default::default() },
                ),
                r#"NotFound(AddressOf { address: "ann@home.example", customer: "bob@home.example" })"#,
            ),
            (
                changes(
                    "ann@home.example",
                    Changes { name: name("X"), link_org: vec![" ACME ".into()], ..Default::default() },
                ),
                r#"AlreadyPrimary { customer: "ann@home.example", organisation: "ACME" }"#,
            ),
            (
                changes("ann@acme.example", Changes { unlink_org: vec!["Globex".into()], ..Default::default() }),
                r#"NotFound(Link { customer: "ann@acme.example", organisation: "Globex" })"#,
            ),
            (
                changes("ann@acme.example", Changes { org: Some(Primary::Set("Nope".into())), ..Default::default() }),
                r#"NotFound(Organisation("Nope"))"#,
            ),
        ];
        for (cmd, want) in cases {
            let err = store.write(|tx| edit(tx, &cmd)).unwrap_err();
            assert_eq!(format!("{err:?}"), want, "{cmd:?}");
        }
        let taken = store.write(|tx| add(tx, &new("ann@home.example", None), now())).unwrap_err();
        assert!(matches!(taken, DeskError::AddressTaken { ref owner, .. } if owner == "ann@acme.example"), "{taken:?}");
        for email in ["ann@acme.example", "bob@home.example"] {
            assert_eq!(shown(&mut store, email).name, None, "{email} unchanged");
        }
        assert_eq!(shown(&mut store, "bob@home.example").emails, ["bob@home.example"]);
    }

    #[test]
    fn an_edit_can_replace_the_primary_address_and_organisation() {
        let mut store = helpdesk();
        let cmd = changes(
            "ann@acme.example",
            Changes {
                name: Some("Ann".into()),
                add_email: vec!["ann@new.example".into(), "ann@home.example".into()],
                remove_email: vec!["ann@acme.example".into()],
                org: Some(Primary::Set("Globex".into())),
                link_org: vec!["Acme".into()],
                ..Default::default()
            },
        );
        let ann = store.write(|tx| edit(tx, &cmd)).unwrap();
        assert_eq!(ann.email, "ann@home.example", "the first remaining address becomes primary");
        assert_eq!(ann.emails, ["ann@home.example", "ann@new.example"]);
        assert_eq!((ann.name.as_deref(), ann.organisation.as_deref()), (Some("Ann"), Some("Globex")));
        assert_eq!(ann.linked_organisations, ["Acme"]);
        let cleared = changes(
            "ann@new.example",
            Changes { name: Some(" ".into()), org: Some(Primary::Clear), ..Default::default() },
        );
        let ann = store.write(|tx| edit(tx, &cleared)).unwrap();
        assert_eq!((ann.name, ann.organisation), (None, None));
    }

    #[test]
    fn merging_moves_tickets_and_refuses_one_customer() {
        let mut store = helpdesk();
        ticket(&mut store, "bob@home.example", "printer");
        let same = Merge { from: "ann@home.example".into(), into: "ann@acme.example".into() };
        let err = store.write(|tx| merge(tx, &same)).unwrap_err();
        assert!(matches!(err, DeskError::SameEntity(Same::Customer { .. })), "{err:?}");
        let cmd = Merge { from: "bob@home.example".into(), into: "ann@home.example".into() };
        let ann = store.write(|tx| merge(tx, &cmd)).unwrap();
        assert_eq!((ann.email.as_str(), ann.tickets), ("ann@acme.example", 1));
        assert_eq!(ann.linked_organisations, ["Globex"]);
        assert_eq!(ann.emails, ["ann@acme.example", "ann@home.example", "bob@home.example"], "addresses move");
    }

    #[test]
    fn lists_by_organisation_and_tickets() {
        let mut store = helpdesk();
        ticket(&mut store, "bob@home.example", "printer");
        let emails = |store: &mut Store, query: Query| -> Vec<String> {
            store.read(|tx| list(tx, &query)).unwrap().into_iter().map(|c| c.email).collect()
        };
        assert_eq!(
            emails(&mut store, Query { org: Some("globex".into()), ..Default::default() }),
            ["bob@home.example"]
        );
        assert_eq!(emails(&mut store, Query { has_tickets: Some(false), ..Default::default() }), ["ann@acme.example"]);
        let unknown = store.read(|tx| list(tx, &Query { org: Some("Nope".into()), ..Default::default() }));
        assert!(matches!(unknown, Err(DeskError::NotFound(Missing::Organisation(_)))), "{unknown:?}");
    }
}
