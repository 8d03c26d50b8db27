//! The headers every response of the console carries: no script but our own (and we
//! have none), no framing by other sites, no content sniffing, no caching of private
//! pages. Mail HTML is shown in a sandboxed `srcdoc` frame, which inherits this policy,
//! so remote images and styles in a message are not fetched either.

use axum::http::header::{self, HeaderValue};
use axum::response::Response;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; frame-src 'self'";

pub async fn headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
