//! A fault-injecting TCP proxy, for reliability runs between a client (the AWS SDK) and a server
//! (DynamoDB Local): connections closed at once, connections reset after the request went out but
//! before the reply came back, and delays on every chunk forwarded. Unlike [`crate::faults`],
//! which answers with well-formed DynamoDB errors, these are transport faults: the SDK sees I/O
//! errors (connection closed or reset), which it classifies as transient and retries.
//!
//! Every decision comes from a seeded [`StdRng`] per connection (derived from the proxy's seed and
//! the connection's accept order), so a run with the same seed and the same connection order
//! injects the same faults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What to inject; probabilities are per connection, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProxyConfig {
    /// Probability that a new connection is closed at once, before anything is forwarded.
    pub drop_connection: f64,
    /// Probability that the connection is reset after the client's bytes were forwarded but
    /// before the reply reaches the client: the server acted on the request, the client never
    /// learns the outcome.
    pub reset_after_request: f64,
    /// Uniform delay range in milliseconds (inclusive) added before each chunk forwarded, in either
    /// direction; `(0, 0)` forwards at once.
    pub delay_ms: (u64, u64),
}

impl ProxyConfig {
    /// Forwards everything unchanged.
    pub fn transparent() -> Self {
        Self::default()
    }
}

/// Counters shared with the caller, updated while the proxy runs.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Connections closed at once (`drop_connection`).
    pub dropped: Arc<AtomicU64>,
    /// Connections reset before the reply reached the client (`reset_after_request`).
    pub resets: Arc<AtomicU64>,
    /// Chunks forwarded after a delay (`delay_ms`).
    pub delayed: Arc<AtomicU64>,
}

impl ProxyStats {
    /// `(connections, dropped, resets, delayed)` now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        (
            get(&self.connections),
            get(&self.dropped),
            get(&self.resets),
            get(&self.delayed),
        )
    }
}

/// Listens on `127.0.0.1:0` and forwards every connection to `upstream`, injecting the faults of
/// `config`. Returns the address to connect to, the live counters and the accept loop's task
/// (abort it to stop accepting; connections in flight finish on their own).
pub async fn start_proxy(
    upstream: SocketAddr,
    config: ProxyConfig,
    seed: u64,
) -> std::io::Result<(SocketAddr, ProxyStats, JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stats = ProxyStats::default();
    let counters = stats.clone();
    let task = tokio::spawn(async move {
        let mut n: u64 = 0;
        loop {
            let client = match listener.accept().await {
                Ok((client, _peer)) => client,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            counters.connections.fetch_add(1, Ordering::SeqCst);
            let rng = connection_rng(seed, n);
            n += 1;
            tokio::spawn(proxy_connection(
                client,
                upstream,
                config,
                rng,
                counters.clone(),
            ));
        }
    });
    Ok((addr, stats, task))
}

/// The random source of the `n`th connection accepted (from 0).
fn connection_rng(seed: u64, n: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// A random delay within the configured range, if the range is not `(0, 0)`.
fn pick_delay(rng: &mut StdRng, (lo, hi): (u64, u64)) -> Option<Duration> {
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let ms = if lo == hi {
        lo
    } else {
        rng.random_range(lo..=hi)
    };
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Makes the kernel answer with RST instead of FIN when the socket is closed.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    config: ProxyConfig,
    mut rng: StdRng,
    stats: ProxyStats,
) {
    // Decide everything up front, in a fixed order, so a seed always means the same faults.
    let drop_now = chance(&mut rng, config.drop_connection);
    let reset_after_request = chance(&mut rng, config.reset_after_request);
    let up_rng = StdRng::from_rng(&mut rng);
    let down_rng = StdRng::from_rng(&mut rng);
    if drop_now {
        stats.dropped.fetch_add(1, Ordering::SeqCst);
        drop(client); // closed before anything was read or forwarded
        return;
    }
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => {
            // Upstream down: the client sees its connection closed, like a refused connection.
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut client = client;
    let outcome = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(
            &mut client_read,
            &mut server_write,
            up_rng,
            config.delay_ms,
            &stats,
            false,
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            down_rng,
            config.delay_ms,
            &stats,
            reset_after_request,
        );
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    if r.is_err() {
                        break Flow::Failed;
                    }
                }
                r = &mut down, if !down_done => {
                    down_done = true;
                    match r {
                        Ok(Flow::Reset) => break Flow::Reset,
                        Ok(_) => {}
                        Err(_) => break Flow::Failed,
                    }
                }
            }
            if up_done && down_done {
                break Flow::Eof;
            }
        }
    };
    match outcome {
        Flow::Reset => {
            stats.resets.fetch_add(1, Ordering::SeqCst);
            reset(&client);
        }
        // One side failed (usually reset by its peer): pass the reset on to the other.
        Flow::Failed => {
            reset(&client);
            reset(&server);
        }
        Flow::Eof => {}
    }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The source closed; the close was passed on.
    Eof,
    /// The first reply bytes arrived and were withheld: the connection is to be reset.
    Reset,
    /// An I/O error on either side.
    Failed,
}

/// Copies `from` to `to` chunk by chunk, delaying each chunk by the configured range. With
/// `reset_on_first_chunk`, the first chunk read is discarded and the copy ends with
/// [`Flow::Reset`] instead.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut rng: StdRng,
    delay_ms: (u64, u64),
    stats: &ProxyStats,
    reset_on_first_chunk: bool,
) -> std::io::Result<Flow>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(Flow::Eof);
        }
        if reset_on_first_chunk {
            return Ok(Flow::Reset);
        }
        if let Some(d) = pick_delay(&mut rng, delay_ms) {
            stats.delayed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(d).await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes every connection's bytes back until the peer closes; counts the bytes it saw.
    async fn echo_server() -> (SocketAddr, Arc<AtomicU64>, JoinHandle<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, seen, task)
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Sends `data`, half-closes, and reads until EOF: everything must come back unchanged.
    async fn round_trip(proxy: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(proxy).await?;
        let (mut r, mut w) = s.split();
        let write = async {
            w.write_all(data).await?;
            w.shutdown().await
        };
        let mut got = Vec::new();
        let read = r.read_to_end(&mut got);
        let (wr, rr) = tokio::join!(write, read);
        wr?;
        rr?;
        Ok(got)
    }

    /// What a client sees on a faulted connection: EOF before any reply, or an I/O error.
    async fn reply_or_error(proxy: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
        // The write may succeed (buffered) or fail (already reset): both are faults seen.
        s.write_all(request).await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await {
            Ok(Ok(_)) => Ok(got),
            Ok(Err(e)) => Err(e.kind().to_string()),
            Err(_) => panic!("the faulted connection was left hanging"),
        }
    }

    #[tokio::test]
    async fn transparent_proxy_passes_bytes_unchanged() {
        let (echo, seen, _echo_task) = echo_server().await;
        let (proxy, stats, task) = start_proxy(echo, ProxyConfig::transparent(), 1)
            .await
            .unwrap();
        assert!(proxy.ip().is_loopback());
        for len in [0, 1, 100, 16 * 1024, 1_000_003] {
            let data = payload(len);
            let got = round_trip(proxy, &data).await.unwrap();
            assert!(got == data, "{len} bytes: got {} bytes back", got.len());
        }
        // Several at once.
        let data = payload(200_000);
        let all = futures_join(proxy, &data, 8).await;
        assert!(all.iter().all(|g| g == &data));
        assert_eq!(stats.snapshot(), (13, 0, 0, 0));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            (1 + 100 + 16 * 1024 + 1_000_003 + 8 * 200_000) as u64
        );
        task.abort();
    }

    async fn futures_join(proxy: SocketAddr, data: &[u8], n: usize) -> Vec<Vec<u8>> {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let data = data.to_vec();
            tasks.push(tokio::spawn(async move {
                round_trip(proxy, &data).await.unwrap()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn dropped_connections_see_eof_or_reset_and_reach_nobody() {
        let (echo, seen, _echo_task) = echo_server().await;
        let config = ProxyConfig {
            drop_connection: 1.0,
            ..ProxyConfig::default()
        };
        let (proxy, stats, task) = start_proxy(echo, config, 2).await.unwrap();
        for _ in 0..5 {
            match reply_or_error(proxy, b"GET / HTTP/1.1\r\n\r\n").await {
                Ok(reply) => assert!(reply.is_empty(), "no byte may come back"),
                Err(_reset) => {}
            }
        }
        assert_eq!(stats.snapshot(), (5, 5, 0, 0));
        assert_eq!(seen.load(Ordering::SeqCst), 0, "upstream saw nothing");
        task.abort();
    }

    #[tokio::test]
    async fn reset_after_request_forwards_the_request_but_not_the_reply() {
        let (echo, seen, _echo_task) = echo_server().await;
        let config = ProxyConfig {
            reset_after_request: 1.0,
            ..ProxyConfig::default()
        };
        let (proxy, stats, task) = start_proxy(echo, config, 3).await.unwrap();
        let request = b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        for _ in 0..3 {
            let seen_before = seen.load(Ordering::SeqCst);
            let outcome = reply_or_error(proxy, request).await;
            assert!(
                matches!(&outcome, Err(e) if e.contains("reset")),
                "the client must see a reset, got {outcome:?}"
            );
            assert_eq!(
                seen.load(Ordering::SeqCst) - seen_before,
                request.len() as u64,
                "the request reached upstream"
            );
        }
        assert_eq!(stats.snapshot(), (3, 0, 3, 0));
        task.abort();
    }

    #[tokio::test]
    async fn delays_apply_per_chunk_and_keep_the_bytes() {
        let (echo, _seen, _echo_task) = echo_server().await;
        let config = ProxyConfig {
            delay_ms: (20, 40),
            ..ProxyConfig::default()
        };
        let (proxy, stats, task) = start_proxy(echo, config, 4).await.unwrap();
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "one delay each way"
        );
        drop(s);
        let data = payload(100_000);
        assert_eq!(round_trip(proxy, &data).await.unwrap(), data);
        let (connections, dropped, resets, delayed) = stats.snapshot();
        assert_eq!((connections, dropped, resets), (2, 0, 0));
        // At least one chunk each way per connection; every forwarded chunk was delayed.
        assert!(delayed >= 4, "{delayed}");
        task.abort();
    }

    #[tokio::test]
    async fn the_same_seed_injects_the_same_faults() {
        let (echo, _seen, _echo_task) = echo_server().await;
        let config = ProxyConfig {
            drop_connection: 0.3,
            reset_after_request: 0.3,
            delay_ms: (0, 0),
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (proxy, stats, task) = start_proxy(echo, config, 42).await.unwrap();
            let mut outcomes = Vec::new();
            // One connection at a time, so the accept order is fixed.
            for _ in 0..40 {
                let ok = round_trip(proxy, b"hello")
                    .await
                    .is_ok_and(|g| g == b"hello");
                outcomes.push(ok);
            }
            let (connections, dropped, resets, _) = stats.snapshot();
            assert_eq!(connections, 40);
            assert!(dropped > 0 && resets > 0, "{dropped} {resets}");
            assert_eq!(
                outcomes.iter().filter(|ok| !**ok).count() as u64,
                dropped + resets
            );
            runs.push((outcomes, dropped, resets));
            task.abort();
        }
        assert_eq!(runs[0], runs[1]);
    }

    /// A stand-in for DynamoDB: answers every request on a connection with an empty ListTables.
    async fn fake_dynamodb() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: the head, then Content-Length bytes of body.
                        let (head_end, length) = loop {
                            let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let length = text[..end]
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                break (end + 4, length);
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        while buf.len() < head_end + length {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let body = r#"{"TableNames":[]}"#;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                             content-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn sdk_client(proxy: SocketAddr) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        use aws_sdk_dynamodb::config::{BehaviorVersion, Builder, Credentials, Region};
        aws_sdk_dynamodb::Client::from_conf(
            Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("local", "local", None, None, "static"))
                .endpoint_url(format!("http://{proxy}"))
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(3)
                        .with_initial_backoff(Duration::from_millis(5)),
                )
                .build(),
        )
    }

    /// Every attempt faulted: the SDK classifies the failure as transient and retries it (three
    /// attempts, three connections), then reports a dispatch (I/O) failure.
    #[tokio::test]
    async fn the_sdk_retries_injected_faults_as_transient_io_errors() {
        use aws_sdk_dynamodb::error::SdkError;
        use aws_smithy_runtime_api::client::retries::ErrorKind;
        let upstream = fake_dynamodb().await;
        let (proxy, _, task) = start_proxy(upstream, ProxyConfig::transparent(), 0)
            .await
            .unwrap();
        sdk_client(proxy)
            .list_tables()
            .send()
            .await
            .expect("through a transparent proxy");
        task.abort();
        for config in [
            ProxyConfig {
                drop_connection: 1.0,
                ..ProxyConfig::default()
            },
            ProxyConfig {
                reset_after_request: 1.0,
                ..ProxyConfig::default()
            },
        ] {
            let (proxy, stats, task) = start_proxy(upstream, config, 5).await.unwrap();
            let err = sdk_client(proxy).list_tables().send().await.unwrap_err();
            let SdkError::DispatchFailure(failure) = &err else {
                panic!("{config:?}: expected a dispatch failure, got {err:?}");
            };
            eprintln!("{config:?}: {failure:?}");
            assert!(
                failure.is_io() || failure.as_other() == Some(ErrorKind::TransientError),
                "{config:?}: {failure:?}"
            );
            let (connections, dropped, resets, _) = stats.snapshot();
            assert_eq!(connections, 3, "{config:?}: one connection per attempt");
            assert_eq!(dropped + resets, 3, "{config:?}");
            task.abort();
        }
    }

    /// A fault on the first attempt only: the retry goes through and the call succeeds.
    #[tokio::test]
    async fn the_sdk_recovers_when_only_the_first_attempt_is_faulted() {
        let upstream = fake_dynamodb().await;
        for (config, first_faulted) in [
            (
                ProxyConfig {
                    drop_connection: 0.5,
                    ..ProxyConfig::default()
                },
                (|rng: &mut StdRng| chance(rng, 0.5)) as fn(&mut StdRng) -> bool,
            ),
            (
                ProxyConfig {
                    reset_after_request: 0.5,
                    ..ProxyConfig::default()
                },
                |rng: &mut StdRng| {
                    let _drop = chance(rng, 0.0);
                    chance(rng, 0.5)
                },
            ),
        ] {
            // A seed whose first connection is faulted and second is not.
            let seed = (0..1000u64)
                .find(|&s| {
                    first_faulted(&mut connection_rng(s, 0))
                        && !first_faulted(&mut connection_rng(s, 1))
                })
                .unwrap();
            let (proxy, stats, task) = start_proxy(upstream, config, seed).await.unwrap();
            let tables = sdk_client(proxy).list_tables().send().await;
            assert!(tables.is_ok(), "{config:?}: {tables:?}");
            let (connections, dropped, resets, _) = stats.snapshot();
            assert_eq!((connections, dropped + resets), (2, 1), "{config:?}");
            task.abort();
        }
    }
}
