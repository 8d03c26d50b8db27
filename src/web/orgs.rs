//! Organisations: the list with a form to add one, and one organisation's page: name,
//! first-response time, domains (a domain added brings its customers without an
//! organisation, as the CLI's does), members, tickets, merging.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{context, Value};
use serde::Deserialize;

use super::auth::{Action, SignedIn};
use super::customers::customer;
use super::render::{page, value, WebError};
use super::tickets::{given, rows};
use crate::desk::orgs::PortalVisibility;
use crate::desk::orgs::{self, Add, Edit, Merge};

/// Organisations on one page.
const PAGE: u32 = 100;

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<String>,
}

pub async fn list(
    State(console): State<super::State>,
    by: SignedIn,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let bad = || WebError::BadRequest("no such page".into());
    let number: u32 = given(&q.page).map_or(Ok(1), |p| p.parse().map_err(|_| bad()))?.max(1);
    let (found, total) = console.store.read(move |tx| orgs::page(tx, PAGE, (number - 1) * PAGE)).await?;
    let pages = (total as u32).div_ceil(PAGE).max(1);
    let rows: Vec<Value> = found.iter().map(|o| context! { id => o.id, ..value(o) }).collect();
    let link = |n: u32| format!("/orgs?page={n}");
    let context = context! {
        orgs => rows, page => number, pages,
        previous => (number > 1).then(|| link(number - 1)),
        next => (number < pages).then(|| link(number + 1)),
        ..by.frame(&console, "orgs")
    };
    Ok(page("orgs.html", context))
}

#[derive(Deserialize)]
pub struct AddForm {
    name: String,
    /// Separated by commas or spaces.
    domains: Option<String>,
}

pub async fn add(State(console): State<super::State>, action: Action<AddForm>) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let domains = given(&action.form.domains).unwrap_or_default();
    let cmd = Add {
        name: action.form.name,
        domains: domains.split([',', ' ']).filter(|d| !d.is_empty()).map(str::to_owned).collect(),
        force: false,
    };
    let (config, now) = (std::sync::Arc::clone(&console.config), Utc::now());
    let changed =
        console.store.write(move |tx| orgs::add(tx, &cmd, &config.policy.resolve.extra_free_mail, now)).await?;
    Ok(to_org(changed.organisation.id))
}

pub async fn show(
    State(console): State<super::State>,
    by: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let detail = console.store.read(move |tx| orgs::show_id(tx, id)).await?;
    let now = Utc::now();
    let context = context! {
        org => context! { id => detail.organisation.id, ..value(&detail.organisation) },
        customers => detail.customer_list.iter().map(customer).collect::<Vec<_>>(),
        tickets => rows(&detail.ticket_list, now),
        ..by.frame(&console, "orgs")
    };
    Ok(page("org.html", context))
}

#[derive(Deserialize)]
pub struct EditForm {
    rename: Option<String>,
    first_response: Option<String>,
    portal_visibility: Option<String>,
}

pub async fn edit(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<EditForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let hours = given(&action.form.first_response)
        .map(|h| h.parse::<u32>().map_err(|_| WebError::BadRequest("hours are a whole number".into())))
        .transpose()?;
    let rename = given(&action.form.rename);
    let visibility = given(&action.form.portal_visibility)
        .map(|v| PortalVisibility::parse(&v).ok_or_else(|| WebError::BadRequest("own or organisation".into())))
        .transpose()?;
    change(&console, id, move |name, current| Edit {
        rename: rename.filter(|r| *r != name),
        first_response: hours.filter(|h| i64::from(*h) != current.unwrap_or(0)),
        portal_visibility: visibility,
        name,
        ..Default::default()
    })
    .await
}

#[derive(Deserialize)]
pub struct DomainForm {
    domain: String,
    /// `add` or `remove`.
    action: String,
}

pub async fn domains(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    action: Action<DomainForm>,
) -> Result<Response, WebError> {
    action.by.may_edit()?;
    let domain = action.form.domain.trim().to_lowercase();
    let add = match action.form.action.as_str() {
        "add" => true,
        "remove" => false,
        _ => return Err(WebError::BadRequest("add or remove".into())),
    };
    change(&console, id, move |name, _| Edit {
        name,
        add_domain: if add { vec![domain.clone()] } else { Vec::new() },
        remove_domain: if add { Vec::new() } else { vec![domain] },
        ..Default::default()
    })
    .await
}

/// Edits organisation `id` (the edit made from its name and first-response hours); an
/// edit that changes nothing is no error.
async fn change(
    console: &super::State,
    id: i64,
    edit: impl FnOnce(String, Option<i64>) -> Edit + Send + 'static,
) -> Result<Response, WebError> {
    let config = std::sync::Arc::clone(&console.config);
    console
        .store
        .write(move |tx| {
            let now = orgs::show_id(tx, id)?.organisation;
            let edit = edit(now.name, now.first_response_hours);
            super::unchanged_is_fine(orgs::edit(tx, &edit, &config.policy.resolve.extra_free_mail))
        })
        .await?;
    Ok(to_org(id))
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
    let into = action.form.into;
    let merged = console
        .store
        .write(move |tx| orgs::merge(tx, &Merge { from: orgs::show_id(tx, id)?.organisation.name, into }))
        .await?;
    Ok(to_org(merged.id))
}

fn to_org(id: i64) -> Response {
    Redirect::to(&format!("/orgs/{id}")).into_response()
}
