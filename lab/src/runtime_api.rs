//! A minimal Lambda Runtime API (2018-06-01) for measuring function binaries outside AWS: hands
//! out one event, records the answer, and notes when the process first asked for work (ready).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Invocation {
    pub event: Option<String>,
    /// When the function first asked for an event: it is initialised and ready.
    pub ready_at: Option<Instant>,
    pub answered_at: Option<Instant>,
    pub response: Option<String>,
    pub error: Option<String>,
}

async fn handle(
    state: Arc<Mutex<Invocation>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path.ends_with("/invocation/next") {
        let event = {
            let mut s = state.lock().unwrap();
            s.ready_at.get_or_insert_with(Instant::now);
            s.event.take()
        };
        let Some(event) = event else {
            // No more work: hold the request, as Lambda does between invocations.
            std::future::pending::<()>().await;
            unreachable!()
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 900_000;
        return Ok(Response::builder()
            .status(200)
            .header("lambda-runtime-aws-request-id", "bench-request-1")
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bench",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .body(Full::new(Bytes::from(event)))
            .unwrap());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut s = state.lock().unwrap();
    s.answered_at = Some(Instant::now());
    if path.ends_with("/response") {
        s.response = Some(text);
    } else {
        s.error = Some(text);
    }
    Ok(Response::builder()
        .status(202)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap())
}

/// Serves the Runtime API on 127.0.0.1 with one event queued; returns its address and state.
pub async fn start(
    event: Option<String>,
) -> std::io::Result<(std::net::SocketAddr, Arc<Mutex<Invocation>>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(Invocation {
        event,
        ..Default::default()
    }));
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(s.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, state))
}
