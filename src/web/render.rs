//! Rendering: the templates (compiled into the binary, HTML-escaped by default), the
//! stylesheet, error pages, and the sanitiser that is the only way mail HTML reaches a
//! page.

use std::sync::LazyLock;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};
use tracing::error;

use crate::desk::error::DeskError;
use crate::store::StoreError;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("macros.html", include_str!("templates/macros.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("tickets.html", include_str!("templates/tickets.html")),
        ("ticket.html", include_str!("templates/ticket.html")),
        ("customers.html", include_str!("templates/customers.html")),
        ("customer.html", include_str!("templates/customer.html")),
        ("customer_new.html", include_str!("templates/customer_new.html")),
        ("orgs.html", include_str!("templates/orgs.html")),
        ("org.html", include_str!("templates/org.html")),
        ("failed.html", include_str!("templates/failed.html")),
        ("outbox.html", include_str!("templates/outbox.html")),
        ("portal_base.html", include_str!("templates/portal_base.html")),
        ("portal_sign_in.html", include_str!("templates/portal_sign_in.html")),
        ("portal_notice.html", include_str!("templates/portal_notice.html")),
        ("portal_tickets.html", include_str!("templates/portal_tickets.html")),
        ("portal_ticket.html", include_str!("templates/portal_ticket.html")),
        ("portal_new.html", include_str!("templates/portal_new.html")),
    ] {
        env.add_template(name, source).expect("the console's templates compile");
    }
    env
});

/// Anything serialisable, for a template.
pub fn value<T: serde::Serialize>(data: &T) -> Value {
    Value::from(minijinja::value::Serde(data))
}

/// A page: `template` rendered with `context`. A template error is a bug: logged, and a
/// plain 500 for the user.
pub fn page(template: &str, context: Value) -> Response {
    let rendered = TEMPLATES.get_template(template).and_then(|t| t.render(context));
    match rendered {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            error!("rendering {template}: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// What a request could not do, as the page that says so.
#[derive(Debug)]
pub enum WebError {
    /// Refused by a rule, missing, or the store failed.
    Desk(DeskError),
    /// The agent's role may not do this.
    Forbidden(&'static str),
    /// A form or query that is not what the page sends.
    BadRequest(String),
    /// A form without the CSRF token of the agent's session: from an old page, or from
    /// another site.
    FormExpired,
    /// A form over `[portal] max_upload_bytes`.
    TooLarge(usize),
    /// A page that is not there (or switched off).
    NoPage,
}

impl From<DeskError> for WebError {
    fn from(e: DeskError) -> Self {
        WebError::Desk(e)
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError::Desk(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        self.page("/tickets")
    }
}

impl WebError {
    /// The page that says what went wrong, with a way back to `home`.
    pub fn page(self, home: &str) -> Response {
        let (status, title) = match &self {
            WebError::Desk(DeskError::NotFound(_)) => (StatusCode::NOT_FOUND, "Not found"),
            WebError::Desk(DeskError::LinkInvalid) => (StatusCode::GONE, "Link expired"),
            WebError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
            WebError::NoPage => (StatusCode::NOT_FOUND, "Not found"),
            WebError::Desk(DeskError::Store(StoreError::Unavailable(_))) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Try again shortly")
            }
            WebError::Desk(DeskError::Store(StoreError::Conflict(_))) => (StatusCode::CONFLICT, "Changed meanwhile"),
            WebError::Desk(DeskError::Store(e)) => {
                error!("console: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
            WebError::Desk(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Not done"),
            WebError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            WebError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            WebError::FormExpired => (StatusCode::FORBIDDEN, "Form expired"),
        };
        let message = match self {
            WebError::Desk(e) => e.to_string(),
            WebError::Forbidden(what) => format!("Your role may not {what}."),
            WebError::BadRequest(what) => what,
            WebError::FormExpired => {
                "The form has expired or did not come from this site: reload the page and try again.".to_owned()
            }
            WebError::TooLarge(most) => format!("The form may send at most {most} bytes of text and attachments."),
            WebError::NoPage => "There is no such page.".to_owned(),
        };
        let mut response = page("error.html", context! { title, message, home });
        *response.status_mut() = status;
        response
    }
}

pub async fn not_found() -> Response {
    WebError::NoPage.into_response()
}

pub async fn stylesheet() -> Response {
    let css = include_str!("static/console.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], css)
        .into_response()
}

/// Mail HTML made safe to show: no script, no event handlers, no forms or frames, no
/// styles that reach outside, and no remote content (images only when embedded as
/// `data:`), so that opening a message tells its sender nothing. Shown only inside a
/// sandboxed frame on top of this.
pub fn sanitise_html(html: &str) -> String {
    ammonia::Builder::default()
        .url_relative(ammonia::UrlRelative::Deny)
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            ("img", "src") if !value.trim_start().to_ascii_lowercase().starts_with("data:image/") => None,
            (_, "srcset" | "background" | "style") => None,
            _ => Some(value.into()),
        })
        .add_url_schemes(["data"])
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_html_loses_script_handlers_and_remote_content() {
        let html = r#"<p onclick="steal()">Hi <b>Ann</b></p><script>alert(1)</script>
            <img src="https://tracker.example/pixel.gif"><img src="data:image/png;base64,AAAA">
            <a href="javascript:alert(1)">x</a><a href="https://acme.example/">acme</a>
            <iframe src="https://evil.example/"></iframe><form action="https://evil.example/"><input></form>
            <div style="background:url(https://tracker.example/bg)">styled</div>"#;
        let clean = sanitise_html(html);
        for gone in ["onclick", "<script", "alert(1)</script", "tracker.example", "javascript:", "<iframe", "<form"] {
            assert!(!clean.contains(gone), "{gone:?} left in {clean}");
        }
        for kept in ["<b>Ann</b>", "data:image/png;base64,AAAA", "https://acme.example/", "styled"] {
            assert!(clean.contains(kept), "{kept:?} missing from {clean}");
        }
    }

    #[test]
    fn every_template_renders_escaped() {
        let evil = "<script>alert(1)</script>";
        let html = TEMPLATES
            .get_template("error.html")
            .unwrap()
            .render(context! { title => evil, message => evil, helpdesk_name => evil })
            .unwrap();
        assert!(!html.contains(evil) && html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{html}");
    }
}
