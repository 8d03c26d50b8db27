//! The Prometheus endpoint: a minimal, hand-written HTTP responder; every request gets the
//! metrics (GET /metrics is the norm). The outbox depth is read on the shared store's
//! read connection, so a scrape never waits behind a batch being committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::Metrics;
use super::service::counts;
use crate::store::shared::SharedStore;

/// Answers scrapes until shutdown.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, store: SharedStore, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("metrics endpoint: {e}");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        tokio::spawn(answer(stream, Arc::clone(&metrics), store.clone()));
    }
}

async fn answer(mut stream: TcpStream, metrics: Arc<Metrics>, store: SharedStore) {
    let mut request = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request)).await;
    let depth = counts(&store).await.map_or(0, |(_, waiting)| waiting);
    let body = metrics.render(depth);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
