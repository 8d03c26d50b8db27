//! The agents' web console: server-rendered pages over `desk`, one HTTP stack (axum)
//! shared with the metrics endpoint. Every rule it applies comes from `desk`; this
//! adapter only signs agents in, checks what their role may do, parses forms and renders.
//! Pages work without JavaScript.

mod auth;
mod customers;
mod limit;
mod orgs;
mod portal;
mod queues;
mod render;
mod security;
mod tickets;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, WebConfig};
use crate::store::shared::SharedStore;

pub use render::sanitise_html;

/// What every request of the console shares.
pub struct Console {
    store: SharedStore,
    config: Arc<Config>,
    web: WebConfig,
    sign_in_limits: limit::SignInLimits,
    /// Portal sign-in links and public support requests asked for.
    link_limits: limit::SignInLimits,
    request_limits: limit::SignInLimits,
    /// Wakes this daemon's sender when a reply was queued (`postdesk run`); without one
    /// (`postdesk web`), the daemon's sender finds it on its next look at the outbox.
    nudge: Option<Arc<Notify>>,
}

impl Console {
    pub fn new(store: SharedStore, config: Arc<Config>, web: WebConfig, nudge: Option<Arc<Notify>>) -> Arc<Console> {
        Arc::new(Console {
            store,
            config,
            web,
            sign_in_limits: limit::SignInLimits::default(),
            link_limits: portal::link_limits(),
            request_limits: portal::request_limits(),
            nudge,
        })
    }

    /// Wakes the sender for mail just queued.
    fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            nudge.notify_one();
        }
    }
}

type State = Arc<Console>;

/// Every route of the console.
pub fn router(console: State) -> Router {
    // Multipart framing and field headers on top of the uploads themselves.
    let upload_limit = axum::extract::DefaultBodyLimit::max(console.config.portal.max_upload_bytes + 64 * 1024);
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/tickets") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/console.css", get(render::stylesheet))
        .route("/tickets", get(tickets::list))
        .route("/tickets/{number}", get(tickets::show))
        .route("/tickets/{number}/reply", post(tickets::write))
        .route("/tickets/{number}/state", post(tickets::set_state))
        .route("/tickets/{number}/owner", post(tickets::set_owner))
        .route("/tickets/{number}/articles/{article}/raw", get(tickets::raw_article))
        .route("/tickets/{number}/attachments/{id}", get(tickets::attachment))
        .route("/customers", get(customers::list).post(customers::add))
        .route("/customers/new", get(customers::new_form))
        .route("/customers/{id}", get(customers::show).post(customers::edit))
        .route("/customers/{id}/emails", post(customers::emails))
        .route("/customers/{id}/links", post(customers::links))
        .route("/customers/{id}/merge", post(customers::merge))
        .route("/orgs", get(orgs::list).post(orgs::add))
        .route("/orgs/{id}", get(orgs::show).post(orgs::edit))
        .route("/orgs/{id}/domains", post(orgs::domains))
        .route("/orgs/{id}/merge", post(orgs::merge))
        .route("/failed", get(queues::failed))
        .route("/failed/{id}/raw", get(queues::failed_raw))
        .route("/failed/{id}/retry", post(queues::retry_failed))
        .route("/outbox", get(queues::outbox))
        .route("/outbox/{id}/retry", post(queues::retry_outbox))
        .route("/portal", get(portal::home).post(portal::request_link))
        .route("/portal/sign-in", get(portal::link_page).post(portal::sign_in))
        .route("/portal/logout", post(portal::sign_out))
        .route("/portal/tickets/{number}", get(portal::show))
        .route("/portal/tickets/{number}/reply", post(portal::reply))
        .route("/portal/tickets/{number}/close", post(portal::close))
        .route("/portal/tickets/{number}/attachments/{id}", get(portal::attachment))
        .route("/portal/new", get(portal::new_form).post(portal::new_ticket).layer(upload_limit))
        .route("/support", get(portal::support_form).post(portal::support_request).layer(upload_limit))
        .route("/support/confirm", get(portal::confirm_page).post(portal::confirm))
        .fallback(render::not_found)
        .layer(axum::middleware::map_response(security::headers))
        .with_state(console)
}

/// Serves `router` on `listener` until `shutdown`; requests in flight are finished.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// How much less CPU the console's threads ask for than the intake's (a nice value).
const CONSOLE_NICE: i32 = 10;

/// Serves the console on a runtime of its own, on threads of lower CPU priority: when
/// agents keep every core busy, mail is still drained at full speed, and the console gets
/// every cycle the intake leaves. Where lowering the priority is not allowed (a system
/// call filter), the console runs at the same priority. Returns when `shutdown` is
/// cancelled and the requests in flight are answered.
pub fn serve_beside_intake(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let listener = listener.into_std();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("postdesk-console")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        runtime.block_on(async move { serve(TcpListener::from_std(listener?)?, router, shutdown).await })
    })
}

/// Lowers the calling thread's CPU priority (Linux: per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions.
    let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, CONSOLE_NICE) };
    if lowered != 0 {
        tracing::debug!("the console's threads keep their priority: {}", std::io::Error::last_os_error());
    }
}

/// A form that changes nothing (the page's values sent back as they were) is no error.
fn unchanged_is_fine<T>(result: Result<T, crate::desk::error::DeskError>) -> Result<(), crate::desk::error::DeskError> {
    match result {
        Ok(_) | Err(crate::desk::error::DeskError::NothingToChange) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Binds `[web] listen`, saying which key to fix when it cannot.
pub async fn bind(web: &WebConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(web.listen).await.map_err(|e| anyhow::anyhow!("web.listen {}: {e}", web.listen))
}
