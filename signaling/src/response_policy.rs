//! What every HTTP answer gets on its way out: `Cache-Control: no-store`
//! unless the handler chose otherwise (answers carry tokens and patient
//! data; only the web client's own files may be cached), and a security
//! event for refusals worth a SIEM's attention.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::app::App;
use crate::client_addr::ClientAddr;
use crate::http_error::ErrorCodeTag;
use crate::security_log::SecurityEvent;

/// The middleware (see the module docs).
pub async fn apply(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    // Link tokens live in `/api/join/…` and `/join/…` paths: those are never logged.
    let path = request.uri().path().to_string();
    let on_link = path.starts_with("/api/join/") || path.starts_with("/join/");
    let mut response = next.run(request).await;
    if !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(ErrorCodeTag(code)) = response.extensions().get::<ErrorCodeTag>().copied() {
        let now = app.clock.now();
        if on_link {
            app.security.record(now, SecurityEvent::LinkRefused, Some(client), json!({ "code": code }));
        } else if code == "forbidden" {
            app.security.record(
                now,
                SecurityEvent::ActionForbidden,
                Some(client),
                json!({ "method": method.as_str(), "path": path }),
            );
        } else if code == "account_disabled" {
            app.security.record(now, SecurityEvent::DisabledAccountUsed, Some(client), json!({ "path": path }));
        }
    }
    response
}
