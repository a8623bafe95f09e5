//! A local stand-in for API Gateway (HTTP API, payload v2): each HTTP request becomes the same
//! event API Gateway would send, handed to the same handlers the Lambda functions run.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use shared::stages::endpoint::Endpoint;
use shared::stages::query::QueryApi;
use tokio::net::TcpListener;

pub struct Handlers {
    pub endpoint: Endpoint,
    pub query: QueryApi,
    pub ready: AtomicBool,
    /// Bodies above this are refused before they are read whole (API Gateway's own limit is 10 MB).
    pub max_body_bytes: usize,
}

/// The API Gateway v2 event for one HTTP request.
pub fn api_gateway_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> String {
    let params: HashMap<String, String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "queryStringParameters": params,
        "requestContext": {
            "accountId": "local", "apiId": "local", "domainName": "127.0.0.1", "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "local"},
            "requestId": uuid_like(), "routeKey": "$default", "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": shared::domain::protocol::now_ms()
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    })
    .to_string()
}

fn uuid_like() -> String {
    format!("{:x}", shared::domain::protocol::now_ms())
}

/// Query-string decoding: `+` is a space, then `%XX` escapes.
fn url_decode(s: &str) -> String {
    shared::stages::query::percent_decode(&s.replace('+', " "))
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// The most API Gateway (HTTP API) reads of a request body.
pub const API_GATEWAY_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How long a body being discarded may stall before the 413 is sent anyway (a client that
/// declared more than it sends).
const DISCARD_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a body up to `limit` bytes and drops it; stops early when it stalls.
async fn discard_body(mut body: Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    while read < limit {
        match tokio::time::timeout(DISCARD_IDLE, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

async fn route(
    handlers: Arc<Handlers>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    if path == "/healthz" {
        let ready = handlers.ready.load(Ordering::SeqCst);
        return Ok(reply(
            if ready { 200 } else { 503 },
            json!({"ready": ready}).to_string(),
        ));
    }
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > handlers.max_body_bytes) {
        // As API Gateway does: read (and drop) the body, then answer. A client that writes its
        // whole body before reading (Python's http.client, Java's HttpClient) would otherwise
        // see the connection reset instead of the 413.
        discard_body(req.into_body(), API_GATEWAY_MAX_BODY_BYTES).await;
        return Ok(reply(
            413,
            json!({"error": "body exceeds the size limit"}).to_string(),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, json!({"error": "unreadable body"}).to_string())),
    };
    let event = api_gateway_event(&method, &path, &query, &headers, &body);
    let request = match lambda_http::request::from_str(&event) {
        Ok(r) => r,
        Err(e) => return Ok(reply(400, json!({"error": e.to_string()}).to_string())),
    };
    let response = match (method.as_str(), path.as_str()) {
        (_, "/mparticle") => {
            shared::stages::endpoint::handle_http(&handlers.endpoint, request).await
        }
        // As the template routes them: GET /v1/{proxy+}, POST /v1/preview, GET /console and
        // GET /console/{proxy+}.
        ("GET", p)
            if p.starts_with("/v1/") || shared::stages::query::console::is_console_path(p) =>
        {
            shared::stages::query::edge::handle_http(&handlers.query, request).await
        }
        ("POST", "/v1/preview") => {
            shared::stages::query::edge::handle_http(&handlers.query, request).await
        }
        _ => return Ok(reply(404, json!({"error": "no such route"}).to_string())),
    };
    let response = response.unwrap_or_else(|never| match never {});
    let mut out = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    Ok(out
        .body(Full::new(Bytes::copy_from_slice(response.body().as_ref())))
        .expect("valid response"))
}

/// Serves until the listener fails; each connection on its own task.
pub async fn serve(listener: TcpListener, handlers: Arc<Handlers>) -> std::io::Result<()> {
    loop {
        let (stream, _peer): (_, SocketAddr) = listener.accept().await?;
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(handlers.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
