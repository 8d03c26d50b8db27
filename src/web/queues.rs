//! What waits or went wrong: failed messages (download, retry through the pipeline) and
//! the outbox (acknowledgements and replies, retry).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{context, Value};

use super::auth::{Action, Nothing, SignedIn};
use super::render::{page, value, WebError};
use super::tickets::download;
use crate::desk::{failed, outbox};

/// Outbox rows shown: the newest.
const OUTBOX_ROWS: u32 = 500;

pub async fn failed(State(console): State<super::State>, by: SignedIn) -> Result<Response, WebError> {
    let list = console.store.read(failed::list).await?;
    Ok(page("failed.html", context! { failed => value(&list), ..by.frame(&console, "failed") }))
}

pub async fn failed_raw(
    State(console): State<super::State>,
    _: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, WebError> {
    let kept = console.store.read(move |tx| failed::show(tx, id)).await?;
    Ok(download(&format!("failed-{id}.eml"), "message/rfc822", kept.raw))
}

pub async fn retry_failed(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    _: Action<Nothing>,
) -> Result<Response, WebError> {
    let (config, now) = (std::sync::Arc::clone(&console.config), Utc::now());
    console.store.with_writer(move |store| failed::retry(store, &config, Some(id), now)).await?;
    console.nudge();
    Ok(Redirect::to("/failed").into_response())
}

pub async fn outbox(State(console): State<super::State>, by: SignedIn) -> Result<Response, WebError> {
    let rows = console.store.read(|tx| outbox::list(tx, Some(OUTBOX_ROWS))).await?;
    let rows: Vec<Value> = rows.iter().map(|r| context! { id => r.id, kind => r.kind.as_str(), ..value(r) }).collect();
    Ok(page("outbox.html", context! { rows, ..by.frame(&console, "outbox") }))
}

pub async fn retry_outbox(
    State(console): State<super::State>,
    Path(id): Path<i64>,
    _: Action<Nothing>,
) -> Result<Response, WebError> {
    let now = Utc::now();
    console.store.write(move |tx| outbox::retry(tx, Some(id), now)).await?;
    console.nudge();
    Ok(Redirect::to("/outbox").into_response())
}
