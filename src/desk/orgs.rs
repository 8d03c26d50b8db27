//! Organisations, the level above customer users: listing, showing one with its members
//! and tickets, adding, editing (name, domains, first-response time) and merging. The
//! rules — a name is one organisation's, a free-mail domain only by force, a domain one
//! organisation's — are checked here (with `core::admin`), never in an adapter.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::{DeskError, Missing, Same};
pub use super::Merge;
pub use crate::core::admin::PortalVisibility;
use crate::core::admin::{self, Claim};
use crate::store::customers::{self, Customer};
use crate::store::orgs::{self as store, Organisation};
use crate::store::tickets::{self, TicketSummary};
use crate::store::Tx;

/// An organisation with its customer users (primary and linked) and tickets.
#[derive(Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub organisation: Organisation,
    pub customer_list: Vec<Customer>,
    pub ticket_list: Vec<TicketSummary>,
}

/// "New organisation": its name (trimmed, not empty) and the domains it owns.
#[derive(Debug)]
pub struct Add {
    pub name: String,
    pub domains: Vec<String>,
    /// Accept free-mail domains.
    pub force: bool,
}

/// Changes to the organisation named `name` (any case).
#[derive(Debug, Default)]
pub struct Edit {
    pub name: String,
    pub rename: Option<String>,
    pub add_domain: Vec<String>,
    /// Domains it no longer owns; their customers keep the organisation.
    pub remove_domain: Vec<String>,
    /// Hours to the first response; 0 removes the time.
    pub first_response: Option<u32>,
    /// What its customer users see in the portal.
    pub portal_visibility: Option<PortalVisibility>,
    /// Accept free-mail domains.
    pub force: bool,
}

impl Edit {
    fn changes_nothing(&self) -> bool {
        self.rename.is_none()
            && self.add_domain.is_empty()
            && self.remove_domain.is_empty()
            && self.first_response.is_none()
            && self.portal_visibility.is_none()
    }
}

/// An organisation after adding or editing it, and what each domain it took brought.
#[derive(Debug)]
pub struct Changed {
    pub organisation: Organisation,
    pub claimed: Vec<Claimed>,
}

/// A domain claimed, and how many customers without an organisation it brought.
#[derive(Debug, PartialEq, Eq)]
pub struct Claimed {
    pub domain: String,
    pub assigned: usize,
}

/// Every organisation, by name.
pub fn list(tx: &Tx) -> Result<Vec<Organisation>, DeskError> {
    Ok(store::list(tx, None)?)
}

/// A page of the organisations by name (at most `limit`, after `offset`), and how many
/// there are.
pub fn page(tx: &Tx, limit: u32, offset: u32) -> Result<(Vec<Organisation>, i64), DeskError> {
    Ok((store::list(tx, Some((limit, offset)))?, store::count(tx)?))
}

pub fn show(tx: &Tx, name: &str) -> Result<Detail, DeskError> {
    let id = find(tx, name)?;
    let members = customers::Filter { organisation_id: Some(id), ..Default::default() };
    let filed = tickets::Filter { organisation_id: Some(id), ..Default::default() };
    Ok(Detail {
        organisation: store::get(tx, id)?,
        customer_list: customers::list(tx, &members)?,
        ticket_list: tickets::list(tx, &filed)?,
    })
}

/// The organisation of this name, compared without case and surrounding blanks.
/// `show` for the organisation with this id (the console's links).
pub fn show_id(tx: &Tx, id: i64) -> Result<Detail, DeskError> {
    let name = store::name_of(tx, id)?.ok_or_else(|| Missing::Organisation(format!("#{id}")))?;
    show(tx, &name)
}

pub fn find(tx: &Tx, name: &str) -> Result<i64, DeskError> {
    let name = name.trim();
    store::id_by_name(tx, name)?.ok_or_else(|| Missing::Organisation(name.to_owned()).into())
}

/// `find` for a name that may not be given.
pub fn find_opt(tx: &Tx, name: Option<&str>) -> Result<Option<i64>, DeskError> {
    name.map(|n| find(tx, n)).transpose()
}

/// `extra_free_mail`: the domains the configuration counts as free mail beside the
/// built-in list.
pub fn add(tx: &Tx, cmd: &Add, extra_free_mail: &[String], now: DateTime<Utc>) -> Result<Changed, DeskError> {
    refuse_taken_name(tx, &cmd.name, None)?;
    let id = store::create(tx, &cmd.name, now)?;
    claim_all(tx, id, &cmd.domains, cmd.force, extra_free_mail)
}

/// Renames first, then removes domains, sets the time and claims the new domains.
pub fn edit(tx: &Tx, cmd: &Edit, extra_free_mail: &[String]) -> Result<Changed, DeskError> {
    if cmd.changes_nothing() {
        return Err(DeskError::NothingToChange);
    }
    let id = find(tx, &cmd.name)?;
    if let Some(new) = &cmd.rename {
        refuse_taken_name(tx, new, Some(id))?;
        store::rename(tx, id, new)?;
    }
    for domain in &cmd.remove_domain {
        if !store::remove_domain(tx, id, domain)? {
            let organisation = cmd.name.trim().to_owned();
            return Err(Missing::DomainOf { domain: domain.clone(), organisation }.into());
        }
    }
    if let Some(hours) = cmd.first_response {
        store::set_first_response(tx, id, (hours > 0).then_some(hours))?;
    }
    if let Some(visibility) = cmd.portal_visibility {
        store::set_portal_visibility(tx, id, visibility)?;
    }
    claim_all(tx, id, &cmd.add_domain, cmd.force, extra_free_mail)
}

/// FROM's domains, customers and tickets move to INTO, and FROM is deleted.
pub fn merge(tx: &Tx, cmd: &Merge) -> Result<Organisation, DeskError> {
    let from = find(tx, &cmd.from)?;
    let into = find(tx, &cmd.into)?;
    if !admin::may_merge(from, into) {
        return Err(DeskError::SameEntity(Same::Organisation(cmd.from.trim().to_owned())));
    }
    store::merge(tx, from, into)?;
    Ok(store::get(tx, into)?)
}

/// Refuses a name another organisation has (any case); `this` is the one being renamed.
fn refuse_taken_name(tx: &Tx, name: &str, this: Option<i64>) -> Result<(), DeskError> {
    match Claim::of(store::id_by_name(tx, name)?, |holder| Some(*holder) == this) {
        Claim::HeldBy(_) => Err(DeskError::NameTaken { name: name.to_owned() }),
        Claim::Free | Claim::Held => Ok(()),
    }
}

fn claim_all(
    tx: &Tx,
    id: i64,
    domains: &[String],
    force: bool,
    extra_free_mail: &[String],
) -> Result<Changed, DeskError> {
    let claimed = domains
        .iter()
        .map(|domain| {
            let assigned = claim_domain(tx, id, domain, force, extra_free_mail)?;
            Ok(Claimed { domain: domain.clone(), assigned })
        })
        .collect::<Result<_, DeskError>>()?;
    Ok(Changed { organisation: store::get(tx, id)?, claimed })
}

/// Gives the organisation a domain unless it is free mail (without force) or another
/// organisation's; how many customers it brought.
fn claim_domain(tx: &Tx, id: i64, domain: &str, force: bool, extra_free_mail: &[String]) -> Result<usize, DeskError> {
    if !admin::may_own_domain(domain, force, extra_free_mail) {
        return Err(DeskError::FreeMailDomain { domain: domain.to_owned() });
    }
    match Claim::of(store::domain_owner(tx, domain)?, |(owner, _)| *owner == id) {
        Claim::Free => Ok(store::add_domain(tx, id, domain)?),
        Claim::Held => Ok(0),
        Claim::HeldBy((_, owner)) => Err(DeskError::DomainOwned { domain: domain.to_owned(), owner }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::customers;
    use crate::desk::testing::{now, store};
    use crate::store::Store;

    /// Acme owns acme.example; Cy and Di (initech.example, a subdomain) and Pat (free
    /// mail) have no organisation.
    fn helpdesk() -> Store {
        let mut store = store();
        store
            .write(|tx| {
                add(tx, &new("Acme", &["acme.example"]), &[], now())?;
                for email in ["cy@initech.example", "di@mail.initech.example", "pat@gmail.com"] {
                    let add = customers::Add { email: email.to_owned(), name: None, org: None };
                    customers::add(tx, &add, now())?;
                }
                Ok::<_, DeskError>(())
            })
            .unwrap();
        store
    }

    fn new(name: &str, domains: &[&str]) -> Add {
        Add { name: name.to_owned(), domains: domains.iter().map(|d| d.to_string()).collect(), force: false }
    }

    fn names(store: &mut Store) -> Vec<String> {
        store.read(list).unwrap().into_iter().map(|o| o.name).collect()
    }

    #[test]
    fn adding_refuses_taken_names_free_mail_and_owned_domains() {
        let mut store = helpdesk();
        let extra = ["corp-mail.example".to_owned()];
        let cases = [
            (new("ACME", &[]), r#"NameTaken { name: "ACME" }"#),
            (new("Fans", &["yahoo.co.uk"]), r#"FreeMailDomain { domain: "yahoo.co.uk" }"#),
            (new("Fans", &["corp-mail.example"]), r#"FreeMailDomain { domain: "corp-mail.example" }"#),
            (
                new("Rival", &["rival.example", "acme.example"]),
                r#"DomainOwned { domain: "acme.example", owner: "Acme" }"#,
            ),
        ];
        for (cmd, want) in cases {
            let err = store.write(|tx| add(tx, &cmd, &extra, now())).unwrap_err();
            assert_eq!(format!("{err:?}"), want, "{cmd:?}");
        }
        assert_eq!(names(&mut store), ["Acme"], "nothing half-written");
        let forced = Add { force: true, ..new("Fans", &["gmail.com"]) };
        let changed = store.write(|tx| add(tx, &forced, &extra, now())).unwrap();
        assert_eq!(changed.claimed, [Claimed { domain: "gmail.com".into(), assigned: 1 }]);
    }

    #[test]
    fn a_claimed_domain_brings_its_customers_without_an_organisation() {
        let mut store = helpdesk();
        let cmd = Edit {
            name: " acme ".into(),
            add_domain: vec!["initech.example".into(), "acme.example".into()],
            ..Default::default()
        };
        let changed = store.write(|tx| edit(tx, &cmd, &[])).unwrap();
        let claimed: Vec<(&str, usize)> = changed.claimed.iter().map(|c| (c.domain.as_str(), c.assigned)).collect();
        assert_eq!(claimed, [("initech.example", 2), ("acme.example", 0)]);
        assert_eq!(changed.organisation.domains, ["acme.example", "initech.example"]);
        assert_eq!(changed.organisation.customers, 2);
    }

    #[test]
    fn edits_and_merges_name_what_they_refuse() {
        let mut store = helpdesk();
        store.write(|tx| add(tx, &new("Globex", &[]), &[], now())).unwrap();
        let edit_of = |name: &str, e: Edit| Edit { name: name.to_owned(), ..e };
        let cases = [
            (edit_of("Acme", Edit::default()), "NothingToChange".to_owned()),
            (
                edit_of("Nope", Edit { first_response: Some(4), ..Default::default() }),
                r#"NotFound(Organisation("Nope"))"#.into(),
            ),
            (
                edit_of("Globex", Edit { rename: Some("acme".into()), ..Default::default() }),
                r#"NameTaken { name: "acme" }"#.into(),
            ),
            (
                edit_of(
                    "Globex ",
                    Edit { first_response: Some(4), remove_domain: vec!["acme.example".into()], ..Default::default() },
                ),
                r#"NotFound(DomainOf { domain: "acme.example", organisation: "Globex" })"#.into(),
            ),
        ];
        for (cmd, want) in cases {
            let err = store.write(|tx| edit(tx, &cmd, &[])).unwrap_err();
            assert_eq!(format!("{err:?}"), want, "{cmd:?}");
        }
        let renamed =
            Edit { name: "acme".into(), rename: Some("ACME".into()), first_response: Some(0), ..Default::default() };
        assert_eq!(
            store.write(|tx| edit(tx, &renamed, &[])).unwrap().organisation.name,
            "ACME",
            "its own name in another case"
        );

        let itself = Merge { from: "Globex".into(), into: "globex".into() };
        let err = store.write(|tx| merge(tx, &itself)).unwrap_err();
        assert_eq!(format!("{err}"), r#"cannot merge organisation "Globex" into itself"#);
        let cmd = Merge { from: "ACME".into(), into: "Globex".into() };
        let merged = store.write(|tx| merge(tx, &cmd)).unwrap();
        assert_eq!(merged.domains, ["acme.example"]);
        assert_eq!(names(&mut store), ["Globex"]);
    }
}
