//! The callback-polling (JSONP) transport: long-polling over `GET` requests, for browsers
//! that can use neither CORS nor WebSocket. The messages come in the `message` query
//! parameter (URL-encoded JSON; several are joined in order), the answer is a script
//! that calls the function named by the `jsonp` parameter (`jsonpcallback` when absent)
//! with the usual JSON array: `callback([...])`, as `text/javascript`.
//!
//! Off unless `ServerConfig::callback_polling` is set: a page on any site can make such
//! requests with the user's cookies and read the answer.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use super::long_polling;
use crate::protocol::Batch;
use crate::server::Server;
use crate::server::handler::{RequestContext, process};
use crate::server::http::{ResponseBody, browser_cookie, browser_cookie_header, text};

/// The callback name when the request names none (the Bayeux spec's default).
const DEFAULT_CALLBACK: &str = "jsonpcallback";
/// The longest callback name accepted (CometD's `callbackParameterMaxLength`).
const MAX_CALLBACK_LENGTH: usize = 64;

/// Whether `name` is a safe callback name: letters, digits, `.`, `_` and `-`, as CometD
/// accepts (so the script cannot be made to run anything else).
fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CALLBACK_LENGTH
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A JSONP request's messages and callback name.
pub(crate) struct JsonpRequest {
    pub batch: Batch,
    pub callback: String,
}

/// Why a JSONP request is refused: its HTTP status and a one-line reason.
#[derive(Debug)]
pub(crate) struct Rejection(pub StatusCode, pub String);

/// Reads the messages and the callback name of a JSONP request's query string.
pub(crate) fn parse_query(
    query: &str,
    max_size: usize,
    max_batch: usize,
) -> Result<JsonpRequest, Rejection> {
    let mut callback = None;
    let mut messages = Vec::new();
    let mut size = 0;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "jsonp" => callback = Some(value.into_owned()),
            "message" => {
                size += value.len();
                if size > max_size {
                    return Err(Rejection(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("messages larger than maxMessageSize ({max_size} bytes)"),
                    ));
                }
                let batch = Batch::parse(value.as_bytes())
                    .map_err(|e| Rejection(StatusCode::BAD_REQUEST, e.to_string()))?;
                messages.extend(batch.messages);
            }
            _ => {}
        }
    }
    let callback = callback.unwrap_or_else(|| DEFAULT_CALLBACK.to_string());
    if !valid_callback(&callback) {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            "the jsonp callback name must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    if messages.is_empty() {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            "no message parameter".into(),
        ));
    }
    if messages.len() > max_batch {
        return Err(Rejection(
            StatusCode::BAD_REQUEST,
            format!(
                "a batch of {} messages is over maxBatch ({max_batch})",
                messages.len()
            ),
        ));
    }
    Ok(JsonpRequest {
        batch: Batch { messages },
        callback,
    })
}

/// Answers one JSONP request.
pub(crate) async fn respond<B>(server: &Server, request: Request<B>) -> Response<ResponseBody> {
    let config = server.config();
    let query = request.uri().query().unwrap_or("");
    let JsonpRequest { batch, callback } =
        match parse_query(query, config.max_message_size, config.max_batch) {
            Ok(parsed) => parsed,
            Err(Rejection(status, reason)) => return text(status, reason),
        };
    let headers = request.headers();
    let ctx = RequestContext {
        headers,
        browser: browser_cookie(headers),
        transport: crate::server::ConnectionType::CallbackPolling,
        client: server.client_of(&request),
    };
    let mut processed = process(server.inner(), &ctx, batch).await;
    let set_browser = processed
        .set_browser
        .take()
        .and_then(|b| browser_cookie_header(config, headers, &b));
    let http2 = request.version() == http::Version::HTTP_2;
    let json = long_polling::respond(server.inner(), processed, http2).await;
    let mut body = BytesMut::with_capacity(callback.len() + json.len() + 3);
    body.put_slice(callback.as_bytes());
    body.put_u8(b'(');
    body.put_slice(&json);
    body.put_slice(b");");
    let mut res = Response::new(Full::new(Bytes::from(body)));
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript;charset=UTF-8"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = set_browser {
        h.insert(SET_COOKIE, cookie);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_names_are_checked() {
        assert!(valid_callback("cometd._jsonp-1"));
        assert!(!valid_callback(""));
        assert!(!valid_callback("alert(1)//"));
        assert!(!valid_callback(&"a".repeat(65)));
    }

    #[test]
    fn the_query_gives_messages_in_order_and_the_callback() {
        let q = "jsonp=cb&message=%5B%7B%22channel%22%3A%22%2Fa%22%7D%5D&message=%7B%22channel%22%3A%22%2Fb%22%7D";
        let JsonpRequest { batch, callback } = parse_query(q, 1024, 10).unwrap();
        assert_eq!(callback, "cb");
        let channels: Vec<String> = batch
            .messages
            .into_iter()
            .map(|m| m.unwrap().channel.unwrap())
            .collect();
        assert_eq!(channels, vec!["/a", "/b"]);
        let parsed = parse_query("message=%7B%7D", 1024, 10).unwrap();
        assert_eq!(parsed.callback, DEFAULT_CALLBACK);
    }

    #[test]
    fn bad_queries_get_http_errors() {
        let status = |q: &str| parse_query(q, 64, 2).err().unwrap().0;
        assert_eq!(status("jsonp=x"), StatusCode::BAD_REQUEST);
        assert_eq!(status("message=not-json"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status("jsonp=a%28%29&message=%7B%7D"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(&format!("message={}", "%20".repeat(100))),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status("message=%5B%7B%7D%2C%7B%7D%2C%7B%7D%5D"),
            StatusCode::BAD_REQUEST
        );
    }
}
