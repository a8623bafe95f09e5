//! The query function's Lambda edge: an API Gateway event to the read API ([`QueryApi`]) or,
//! under `/console`, to the console (`stages::query::console`), and the answer back, with its metrics.

use std::collections::HashMap;

use crate::stages::http::into_response;
use crate::stages::query::console;
use crate::stages::query::{QueryApi, ReadRequest};

pub async fn handle_http(
    api: &QueryApi,
    req: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, std::convert::Infallible> {
    use lambda_http::RequestExt;
    let query: HashMap<String, String> = req
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    let path = req.raw_http_path().to_owned();
    let started = std::time::Instant::now();
    let read = ReadRequest {
        method: req.method().as_str(),
        path: &path,
        query: &query,
        headers: &headers,
        body: req.body().as_ref(),
    };
    let reply = if console::is_console_path(&path) {
        console::handle(api, &read).await
    } else {
        api.handle(&read).await
    };
    let metrics = api.metrics();
    metrics.emit(&metrics.request(&reply, started.elapsed()));
    Ok(into_response(reply))
}
