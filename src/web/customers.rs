//! The Customers page (All / With tickets / Without tickets, the month filter, search,
//! pages), adding a customer, and one customer's page: name, organisation, addresses,
//! linked organisations, tickets, merging. Admins and Editors change; Agents read.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::auth::{Action, SignedIn};
use super::render::{page, value, WebError};
use super::tickets::{given, rows};
use crate::core::address;
use crate::desk::customers::{self, Add, Changes, Edit, Merge, Primary, Query as CustomerQuery};
use crate::desk::error::DeskError;
use crate::store::customers::Month;
use crate::store::Tx;

/// Customers on one page.
const PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ListQuery {
    view: Option<String>,
    month: Option<String>,
    q: Option<String>,
    page: Option<String>,
}

/// The three views of the page, as `?view=` names them.
const VIEWS: [(&str, &str, Option<bool>); 3] =
    [("all", "All", None), ("with", "With tickets", Some(true)), ("without", "Without tickets", Some(false))];

impl ListQuery {
    fn link(&self, view: &str, page: u32) -> String {
        let with = ListQuery {
            view: Some(view.to_owned()),
            month: given(&self.month),
            q: given(&self.q),
            page: (page > 1).then(|| page.to_string()),
        };
        format!("/customers?{}", serde_urlencoded::to_string(&with).unwrap_or_default())
    }
}

pub async fn list(
    State(console): State<super::State>,
    by: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let bad = |what: &str| WebError::BadRequest(what.to_owned());
    let view = given(&q.view).unwrap_or_else(|| "all".to_owned());
    let has_tickets = VIEWS.iter().find(|(name, ..)| *name == view).ok_or_else(|| bad("no such view"))?.2;
    let added = given(&q.month).map(|m| Month::parse(&m).ok_or_else(|| bad("a month is YYYY-MM"))).transpose()?;
    let page_number: u32 = given(&q.page).map_or(Ok(1), |p| p.parse().map_err(|_| bad("no such page")))?.max(1);
    let base = CustomerQuery { added, search: given(&q.q), ..Default::default() };
    let this_page = CustomerQuery { has_tickets, limit: Some(PAGE), offset: (page_number - 1) * PAGE, ..base };
    let (found, counts, months) = console
        .store
        .read(move |tx| {
            let (found, n) = customers::page(tx, &this_page)?;
            Ok::<_, DeskError>((found, vec![n.all, n.with_tickets, n.without_tickets], customers::months(tx)?))
        })
        .await?;
    let current = VIEWS.iter().position(|(name, ..)| *name == view).unwrap_or(0);
    let pages = (counts[current] as u32).div_ceil(PAGE).max(1);
    let views: Vec<Value> = VIEWS
        .iter()
        .zip(&counts)
        .map(|((name, label, _), count)| context! { label => *label, count, link => q.link(name, 1), current => *name == view })
        .collect();
    let context = context! {
        customers => found.iter().map(customer).collect::<Vec<_>>(),
        views, view => view.clone(), months,
        month => given(&q.month).unwrap_or_default(),
        q => given(&q.q).unwrap_or_default(),
        page => page_number, pages,
        previous => (page_number > 1).then(|| q.link(&view, page_number - 1)),
        next => (page_number < pages).then(|| q.link(&view, page_number + 1)),
        ..by.frame(&console, "customers")
    };
    Ok(page("customers.html", context))
}

/// A customer as the lists show them, with the id their links need.
pub fn customer(c: &crate::store::customers::Customer) -> Value {
    context! { id => c.id, ..value(c) }
}

pub async fn new_form(State(console): State<super::State>, by: SignedIn) -> Result<Response, WebError> {
    by.may_edit()?;
    Ok(page("customer_new.html", by.frame(&console, "customers")))
}

#[derive(Deserialize)]
pub struct AddForm {
    name: Option<String>,
    email: String,
    org: Option<String>,
}

pub async fn add(State(console): State<super::State>, action: Action<AddForm>) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let form = action.form;
    let cmd = Add { email: normalised(&form.email)?, name: given(&form.name), org: given(&form.org) };
    let now = Utc::now();
    let added = console.store.write(move |tx| customers::add(tx, &cmd, now)).await?;
    Ok(to_customer(added.id))
}

pub async fn show(
    State(console): State<super::State>,
    by: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let detail = console.store.read(move |tx| customers::show_id(tx, id)).await?;
    let now = Utc::now();
    let context = context! {
        customer => customer(&detail.customer),
        tickets => rows(&detail.ticket_list, now),
        ..by.frame(&console, "customers")
    };
    Ok(page("customer.html", context))
}

#[derive(Deserialize)]
pub struct EditForm {
    name: Option<String>,
    org: Option<String>,
}

/// Name and primary organisation, as far as they differ from what is stored.
pub async fn edit(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<EditForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let form = action.form;
    console
        .store
        .write(move |tx| {
            let now = customers::show_id(tx, id)?.customer;
            let name = given(&form.name);
            let org = given(&form.org);
            let changes = Changes {
                name: (name != now.name).then(|| name.unwrap_or_default()),
                org: (org != now.organisation).then(|| org.map_or(Primary::Clear, Primary::Set)),
                ..Default::default()
            };
            change(tx, now.email, changes)
        })
        .await?;
    Ok(to_customer(id))
}

#[derive(Deserialize)]
pub struct EmailForm {
    email: String,
    /// `add`, `remove` or `primary`.
    action: String,
}

pub async fn emails(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<EmailForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let address = normalised(&action.form.email)?;
    let changes = match action.form.action.as_str() {
        "add" => Changes { add_email: vec![address], ..Default::default() },
        "remove" => Changes { remove_email: vec![address], ..Default::default() },
        "primary" => Changes { primary_email: Some(address), ..Default::default() },
        _ => return Err(WebError::BadRequest("add, remove or primary".into())),
    };
    console.store.write(move |tx| change(tx, customers::show_id(tx, id)?.customer.email, changes)).await?;
    Ok(to_customer(id))
}

#[derive(Deserialize)]
pub struct LinkForm {
    org: String,
    /// `link` or `unlink`.
    action: String,
}

pub async fn links(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<LinkForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let org = action.form.org;
    let changes = match action.form.action.as_str() {
        "link" => Changes { link_org: vec![org], ..Default::default() },
        "unlink" => Changes { unlink_org: vec![org], ..Default::default() },
        _ => return Err(WebError::BadRequest("link or unlink".into())),
    };
    console.store.write(move |tx| change(tx, customers::show_id(tx, id)?.customer.email, changes)).await?;
    Ok(to_customer(id))
}

#[derive(Deserialize)]
pub struct MergeForm {
    into: String,
}

pub async fn merge(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<MergeForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let into = normalised(&action.form.into)?;
    let merged = console
        .store
        .write(move |tx| customers::merge(tx, &Merge { from: customers::show_id(tx, id)?.customer.email, into }))
        .await?;
    Ok(to_customer(merged.id))
}

/// Applies `changes` to the customer with this primary address; none is no change.
fn change(tx: &Tx, email: String, changes: Changes) -> Result<(), DeskError> {
    super::unchanged_is_fine(customers::edit(tx, &Edit { email, changes }))
}

fn normalised(email: &str) -> Result<String, WebError> {
    address::normalise(email)
        .ok_or_else(|| WebError::BadRequest(format!("{:?} is not an e-mail address", email.trim())))
}

fn to_customer(id: i64) -> Response {
    Redirect::to(&format!("/customers/{id}")).into_response()
}
