//! The Prometheus endpoint, on the console's HTTP stack: GET /metrics. The outbox depth is
//! read on the shared store's read connection, so a scrape never waits behind a batch
//! being committed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;
use super::service::counts;
use crate::store::shared::SharedStore;

pub fn router(metrics: Arc<Metrics>, store: SharedStore) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state((metrics, store))
}

async fn scrape(State((metrics, store)): State<(Arc<Metrics>, SharedStore)>) -> impl IntoResponse {
    let depth = counts(&store).await.map_or(0, |(_, waiting)| waiting);
    let tokens = store.read(crate::store::oauth::list).await.unwrap_or_default();
    let now = chrono::Utc::now();
    let expiry: Vec<(String, i64)> =
        tokens.into_iter().filter_map(|t| Some((t.provider, (t.expires_at? - now).num_seconds()))).collect();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render(depth, &expiry))
}
