//! Which web origins may call the relay: the WebSocket `Origin` check and CORS.
//!
//! Tokens are the real gate; the origin check keeps a page on another site from using a token it
//! got hold of (and from probing the admin API from a victim's browser). Requests without an
//! `Origin` header (non-browser clients, same-origin navigations) are not affected.

use crate::metrics::SignalingMetrics;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Origins allowed besides the relay's own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Exact origins (`https://app.example.com`), compared case-insensitively.
    pub allowed: Vec<String>,
    /// Any origin at all (`"*"` in the config).
    pub any: bool,
    /// Also any origin on a loopback host (dev mode, where the app runs on another local port).
    pub loopback: bool,
}

impl OriginPolicy {
    pub fn from_list(list: &[String], loopback: bool) -> Self {
        OriginPolicy {
            any: list.iter().any(|o| o == "*"),
            allowed: list
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback,
        }
    }

    /// Whether a request from `origin` to a relay reached as `host` (the Host header) is allowed.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let Some(authority) = authority else {
            return false; // "null", file:, extensions: never
        };
        if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
            return true; // same origin
        }
        if self.loopback && is_loopback_authority(authority) {
            return true;
        }
        self.allowed.contains(&origin)
    }
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Clone)]
pub struct OriginCheck {
    pub policy: Arc<OriginPolicy>,
    pub metrics: Arc<SignalingMetrics>,
}

/// Middleware: refuses requests from origins that are not allowed (403 `origin_not_allowed`),
/// answers CORS preflights for those that are, and marks their responses for the browser.
pub async fn check(State(check): State<OriginCheck>, request: Request, next: Next) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !check.policy.allows(&origin, host) {
        check.metrics.origin_refused();
        return crate::http::error_response(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("requests from {origin:.100} are not allowed; add it to http.allowed_origins"),
        );
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PATCH, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, if-match"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    allow_origin(response.headers_mut(), &origin);
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        // WHIP and WHEP clients in a browser read these from a session's answer.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("location, etag, link, accept-patch, accept-post"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_always_allowed() {
        let policy = OriginPolicy::default();
        assert!(policy.allows("http://relay.example:8080", Some("relay.example:8080")));
        assert!(policy.allows("https://Relay.Example", Some("relay.example")));
        assert!(!policy.allows("https://evil.example", Some("relay.example")));
        assert!(!policy.allows("null", Some("relay.example")));
    }

    #[test]
    fn listed_origins_and_wildcard() {
        let policy = OriginPolicy::from_list(&["https://App.example/".into()], false);
        assert!(policy.allows("https://app.example", Some("relay.example")));
        assert!(!policy.allows("http://app.example", Some("relay.example")));
        assert!(!policy.allows("http://localhost:3000", Some("relay.example")));
        let any = OriginPolicy::from_list(&["*".into()], false);
        assert!(any.allows("https://whatever.example", None));
    }

    #[test]
    fn loopback_origins_only_when_asked() {
        let dev = OriginPolicy::from_list(&[], true);
        assert!(dev.allows("http://localhost:3000", Some("127.0.0.1:8080")));
        assert!(dev.allows("http://127.0.0.1:5173", None));
        assert!(dev.allows("http://[::1]:5173", None));
        assert!(!dev.allows("http://localhost.evil.example", None));
        let prod = OriginPolicy::from_list(&[], false);
        assert!(!prod.allows("http://localhost:3000", Some("relay.example")));
    }
}
