//! Every HTTP error the relay answers has the JSON body `{"code": "...", "message": "..."}`.
//!
//! The relay's own refusals are written that way; this middleware rewrites the rest: axum's
//! rejections (a body over the limit, a wrong content type, a path or query that does not
//! parse) and its empty 404 and 405 answers. Clients can then branch on `code` for every error
//! instead of parsing prose, and no error text quotes more than a bounded part of the request.

use crate::protocol::bounded_error_text;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Error bodies longer than this are not read; the answer then says only what the status says.
const MAX_BODY_READ_BYTES: usize = 16 * 1024;

/// Middleware: turns a 4xx or 5xx answer whose body is not JSON into the JSON error shape, with
/// a code that follows from the status ([`code`]) and the former body, bounded, as the message.
/// Headers (`Allow`, `Retry-After`, CORS) stay; JSON bodies and other answers pass untouched.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_BODY_READ_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        default_message(status).to_owned()
    } else {
        bounded_error_text(text)
    };
    let (json_parts, json_body) =
        crate::http::error_response(status, code(status), message).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(content_type) = json_parts.headers.get(header::CONTENT_TYPE) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    Response::from_parts(parts, json_body)
}

/// The stable code of an error answer that has none of its own. 500 and 503 read as the relay's
/// own `internal` and `unavailable`.
pub fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_header_fields_too_large",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        StatusCode::NOT_IMPLEMENTED => "not_implemented",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "client_error",
        _ => "server_error",
    }
}

/// For answers that came without a body (axum's 404 and 405).
fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "nothing is served at this path",
        StatusCode::METHOD_NOT_ALLOWED => {
            "this path does not take this method; the Allow header lists those it takes"
        }
        s => s.canonical_reason().unwrap_or("error"),
    }
}

/// `application/json`, or a JSON-based type (`application/problem+json`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_ERROR_TEXT_BYTES;
    use axum::body::Body;
    use axum::extract::{DefaultBodyLimit, Path};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::Value;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Typed {
        #[allow(dead_code)]
        n: u32,
    }

    fn app() -> Router {
        Router::new()
            .route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
            .route("/typed", post(|Json(_): Json<Typed>| async { "ok" }))
            .route(
                "/number/{n}",
                get(|Path(n): Path<u32>| async move { n.to_string() }),
            )
            .route(
                "/long",
                get(|| async { (StatusCode::BAD_REQUEST, "é".repeat(5_000)) }),
            )
            .route(
                "/own",
                get(|| async {
                    crate::http::error_response(StatusCode::CONFLICT, "room_exists", "taken")
                }),
            )
            .route(
                "/busy",
                get(|| async {
                    let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, "5".parse().unwrap());
                    response
                }),
            )
            .route("/fine", get(|| async { "plain and fine" }))
            .layer(DefaultBodyLimit::max(64))
            .layer(axum::middleware::from_fn(json_errors))
    }

    async fn call(
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = app()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    /// The answer is the JSON error shape with `code`; returns the headers and the message.
    async fn expect_json_error(
        (method, uri, content_type, body): (&str, &str, Option<&str>, &str),
        status: u16,
        code: &str,
    ) -> (HeaderMap, String) {
        let (got, headers, text) = call(method, uri, content_type, body).await;
        assert_eq!(got.as_u16(), status, "{method} {uri}: {text}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["code"], code, "{method} {uri}: {text}");
        let message = json["message"].as_str().unwrap().to_owned();
        assert!(!message.is_empty() && message.len() <= MAX_ERROR_TEXT_BYTES);
        assert_eq!(json.as_object().unwrap().len(), 2, "{text}");
        (headers, message)
    }

    const JSON: Option<&str> = Some("application/json");

    #[tokio::test]
    async fn axum_rejections_and_empty_errors_become_json_with_a_code() {
        expect_json_error(("GET", "/nowhere", None, ""), 404, "not_found").await;
        let (headers, _) =
            expect_json_error(("DELETE", "/echo", None, ""), 405, "method_not_allowed").await;
        assert_eq!(headers[header::ALLOW], "POST");
        let (_, message) = expect_json_error(
            ("POST", "/echo", Some("text/plain"), "{}"),
            415,
            "unsupported_media_type",
        )
        .await;
        assert!(message.contains("Content-Type"), "axum's text: {message}");
        expect_json_error(("POST", "/echo", JSON, "{"), 400, "bad_request").await;
        expect_json_error(
            ("POST", "/typed", JSON, r#"{"n":"x"}"#),
            422,
            "unprocessable_entity",
        )
        .await;
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
        expect_json_error(("POST", "/echo", JSON, &big), 413, "payload_too_large").await;
        expect_json_error(("GET", "/number/abc", None, ""), 400, "bad_request").await;
        let (headers, _) = expect_json_error(("GET", "/busy", None, ""), 503, "unavailable").await;
        assert_eq!(headers[header::RETRY_AFTER], "5");
        let (_, message) = expect_json_error(("GET", "/long", None, ""), 400, "bad_request").await;
        assert!(message.starts_with("éé") && message.ends_with('…'));
    }

    #[tokio::test]
    async fn json_errors_and_successes_pass_untouched() {
        let (status, headers, body) = call("GET", "/own", None, "").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body, r#"{"code":"room_exists","message":"taken"}"#);
        let (status, _, body) = call("GET", "/fine", None, "").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "plain and fine"));
        let (status, _, body) = call("POST", "/echo", JSON, r#"{"a":1}"#).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"a":1}"#));
    }

    #[test]
    fn every_client_and_server_error_has_a_code() {
        for status in 400..600 {
            let status = StatusCode::from_u16(status).unwrap();
            let code = code(status);
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{status}: {code}"
            );
        }
        assert_eq!(code(StatusCode::IM_A_TEAPOT), "client_error");
        assert_eq!(code(StatusCode::BAD_GATEWAY), "server_error");
    }
}
