//! Bad input over raw HTTP (issue #8): truncated and mistyped JSON, huge arrays, deep nesting,
//! oversize bodies, invalid UTF-8 and broken HTTP framing, sent through the local API Gateway
//! stand-in to the real endpoint over DynamoDB Local.
//!
//! Every JSON case must get a 4xx with a JSON `error`; every framing case a 4xx or a closed
//! connection, never a 5xx. After each group the server still answers `/healthz` and nothing at all
//! was written to the project region's tables.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use integration_tests::*;
use serde_json::{Value, json};
use shared::domain::region::Region;
use shared::store::tables::Table;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests in flight at once against the local server.
const PARALLEL: usize = 8;

struct Running {
    port: u16,
    stack: Stack,
}

/// The local server over fresh tables, as tests/suite/e2e.rs starts it (no stream pipeline: nothing
/// here may reach the inbox in the first place).
async fn start(test: &str) -> Running {
    let stack = Stack::new(test, Region::Eu1).await;
    let port = stack.serve_http().await;
    Running { port, stack }
}

/// What the client saw: a status and body, or a connection closed without a (whole) reply.
#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    body: Value,
    /// The reply as text (head and body), for failure messages.
    raw: String,
    /// The read error, if the connection was reset.
    error: Option<String>,
}

/// How the client ends its side after writing the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Half-close (FIN) and read the reply until the server closes. hyper does not support
    /// half-closed requests (`http1::Builder::half_close` is off): an EOF seen while the request
    /// is in progress closes the connection without a reply, so this is for framing faults only.
    HalfClose,
    /// Keep the write side open and read the reply until the server closes (`Connection: close`).
    KeepOpen,
    /// Close the whole connection at once; read nothing.
    Abort,
}

/// Sends raw bytes and reads whatever comes back. Reads while writing, so a reply sent before the
/// body was read whole (413) is not lost to the reset that closing an unread socket causes.
async fn exchange(port: u16, request: Vec<u8>, end: End) -> Reply {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may answer and close before everything is written: not an error here.
        let _ = write.write_all(&request).await;
        match end {
            End::HalfClose => {
                let _ = write.shutdown().await;
            }
            End::KeepOpen => {
                // Hold the write side open until the reader is done.
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            End::Abort => {}
        }
        write
    });
    if end == End::Abort {
        let write = writer.await.unwrap();
        drop((read, write));
        return Reply {
            status: None,
            body: Value::Null,
            raw: String::new(),
            error: None,
        };
    }
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Err(_) => panic!(
                "no reply and no close within 60 s; got so far: {}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    writer.abort();
    parse_reply(raw, error)
}

fn parse_reply(raw: Vec<u8>, error: Option<String>) -> Reply {
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Reply {
            status: None,
            body: Value::Null,
            raw: text,
            error,
        };
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        raw: text,
        error,
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail.get(n + 2..).unwrap_or_default();
    }
    out
}

fn auth() -> String {
    format!("Token {CALLER_TOKEN}")
}

/// A POST /mparticle with the caller token and a Content-Length matching `body`.
fn post(body: &[u8]) -> Vec<u8> {
    post_declaring(body, body.len())
}

/// A POST /mparticle declaring `content_length` whatever the body really is.
fn post_declaring(body: &[u8], content_length: usize) -> Vec<u8> {
    let mut req = format!(
        "POST /mparticle HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: {}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n",
        auth()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A POST /mparticle with `Transfer-Encoding: chunked` and the raw chunked body as given.
fn post_chunked(raw_chunked_body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /mparticle HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        auth()
    )
    .into_bytes();
    req.extend_from_slice(raw_chunked_body);
    req
}

/// A well-formed chunked encoding of `body` in chunks of `size` bytes.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// One bad body: a name for the failure message and its bytes.
type Case = (String, Vec<u8>);

/// Posts every case (a few at a time) and returns the ones not answered 4xx with a JSON `error`.
async fn post_json_cases(run: &Running, cases: Vec<Case>) -> Vec<String> {
    let port = run.port;
    let n = cases.len();
    let failures: Vec<String> = stream::iter(cases)
        .map(|(name, body)| async move {
            let reply = exchange(port, post(&body), End::KeepOpen).await;
            let ok = reply.status.is_some_and(|s| (400..500).contains(&s))
                && reply.body["error"].as_str().is_some_and(|e| !e.is_empty());
            (!ok).then(|| {
                format!(
                    "{name}: status {:?}, body {}, reset {:?}, raw {:.300}",
                    reply.status, reply.body, reply.error, reply.raw
                )
            })
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    eprintln!("{n} cases posted, {} not answered 4xx", failures.len());
    failures
}

/// The server still answers, and not one item was written to the project region's tables.
async fn assert_healthy_and_nothing_written(run: &Running) {
    let (status, body) = http(run.port, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200, "healthz after bad input: {body}");
    for table in [
        Table::Inbox,
        Table::Segments,
        Table::Profiles,
        Table::Memberships,
        Table::Events,
    ] {
        let region = run.stack.project.region;
        let count = run.stack.store.count_items(region, table).await.unwrap();
        assert_eq!(count, 0, "{table:?}: {count} items written by bad input");
    }
}

fn assert_no_failures(group: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{group}: {} cases not answered 4xx with a JSON error:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A real membership batch with every field the parser reads, for `project`.
fn rich_batch(run: &Running, message_id: &str) -> Value {
    let profiles = json!([
        {
            "user_identities": [raw("customer", "cust-1"), raw("email", "one@example.com")],
            "device_identities": [raw("android_id", "dev-1")],
            "partner_identities": [raw("CleverTap_User_ID", "-hPartner1")],
            "mpid": "-6964353745838423734",
            "audiences": [{
                "audience_id": 4242,
                "audience_name": "Cart Abandoners",
                "audience_subscription_settings": {"userIdType": "customer"},
                "action": "add",
                "user_attributes": [
                    {"key": "tier", "value": "gold", "action": "upsert"},
                    {"key": "tags", "list_value": ["a", "b"], "action": "upsert"}
                ]
            }]
        },
        {
            "user_identities": [raw("mobile_number", "+14155550102")],
            "mpid": "2",
            "audiences": [entry(4242, "delete")]
        }
    ]);
    serde_json::from_str(&run.stack.batch(message_id, 1_000, profiles)).unwrap()
}

/// Every node of a JSON document with its JSON pointer, parents before children.
fn nodes(v: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
        out.push((path.clone(), v.clone()));
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    walk(c, format!("{path}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

fn replaced(doc: &Value, pointer: &str, with: Value) -> Vec<u8> {
    let mut d = doc.clone();
    *d.pointer_mut(pointer).expect("pointer from nodes()") = with;
    d.to_string().into_bytes()
}

#[tokio::test]
async fn truncated_bodies_are_400() {
    let run = start("bad-trunc").await;
    let full = membership_body(&run.stack.project, "trunc", 1_000, 3, 4242, "add").into_bytes();
    assert!(full.len() > 500);
    // Every proper prefix, from the empty body to one byte short of the closing brace.
    let mut cases: Vec<Case> = (0..full.len())
        .map(|cut| (format!("cut at {cut}/{}", full.len()), full[..cut].to_vec()))
        .collect();
    // And a larger batch cut at a stride, through the middle of many profiles.
    let big =
        membership_body(&run.stack.project, "trunc-big", 1_000, 600, 4242, "add").into_bytes();
    cases.extend((0..big.len()).step_by(997).map(|cut| {
        (
            format!("big cut at {cut}/{}", big.len()),
            big[..cut].to_vec(),
        )
    }));
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("truncated JSON", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn wrong_json_types_are_400() {
    let run = start("bad-types").await;
    let doc = rich_batch(&run, "types");
    let mut cases: Vec<Case> = Vec::new();
    for (pointer, node) in nodes(&doc) {
        if pointer.is_empty() {
            continue; // the root: see arrays_and_scalars_as_the_message_are_400
        }
        // Numbers for strings and numeric strings for ids are accepted by design (protocol §11);
        // null means "absent" everywhere. Everything else of the wrong type must be refused.
        let wrong: Vec<Value> = match &node {
            Value::Object(_) => vec![json!(7), json!("x"), json!(true)],
            Value::Array(_) => vec![json!(7), json!("x"), json!(true), json!({})],
            Value::String(_) => vec![json!([1]), json!({}), json!(["x"])],
            Value::Number(_) => vec![
                json!("not-a-number"),
                json!("12abc"),
                json!(1.5),
                json!(true),
                json!([1]),
                json!({"n": 1}),
            ],
            Value::Bool(_) | Value::Null => vec![json!([1]), json!({})],
        };
        for w in wrong {
            cases.push((
                format!("{pointer} = {w}"),
                replaced(&doc, &pointer, w.clone()),
            ));
        }
    }
    // Strings for ids, spelled out.
    for (pointer, w) in [
        ("/timestamp_ms", json!("yesterday")),
        ("/account/account_id", json!("acme")),
        ("/user_profiles/0/audiences/0/audience_id", json!("4242x")),
        ("/user_profiles/0/audiences/0/audience_id", json!("")),
        (
            "/user_profiles/0/audiences/0/audience_id",
            json!("9223372036854775808"),
        ),
        (
            "/user_profiles/0/audiences/0/audience_id",
            json!(9223372036854775808u64),
        ),
    ] {
        cases.push((
            format!("{pointer} = {w}"),
            replaced(&doc, pointer, w.clone()),
        ));
    }
    assert!(cases.len() > 150, "{}", cases.len());
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("wrong JSON types", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn arrays_in_place_of_objects_are_400() {
    let run = start("bad-arrays").await;
    let doc = rich_batch(&run, "arrays");
    let mut cases: Vec<Case> = Vec::new();
    for (pointer, node) in nodes(&doc) {
        if pointer.is_empty() || !node.is_object() {
            continue;
        }
        // An empty array, and the object's values in order (what serde reads "by position").
        let values: Vec<Value> = node.as_object().unwrap().values().cloned().collect();
        for w in [json!([]), Value::Array(values)] {
            cases.push((
                format!("{pointer} = {w}"),
                replaced(&doc, &pointer, w.clone()),
            ));
        }
    }
    let failures = post_json_cases(&run, cases).await;
    // Regression (found here, fixed in 4ceb476): serde's derived Deserialize reads a struct from
    // a JSON array by position, and only the root used to be checked, so 15 of these cases were
    // answered 200 — `"account": []`, `"user_profiles": [[]]` (stored as an empty profile),
    // `"audiences": [[]]`, `"user_attributes": [[]]`, identities as `["customer", "raw", "c"]`.
    assert_no_failures("arrays in place of objects", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn arrays_and_scalars_as_the_message_are_400() {
    let run = start("bad-root").await;
    let doc = rich_batch(&run, "root");
    let values: Vec<Value> = doc.as_object().unwrap().values().cloned().collect();
    let cases: Vec<Case> = [
        json!([]),
        Value::Array(values),
        json!("audience_membership_change_request"),
        json!(42),
        json!(null),
        json!(true),
        json!({}),
        json!({"type": null}),
        json!({"type": "audience_membership_change_request"}),
    ]
    .into_iter()
    .map(|v| (format!("body {v:.80}"), v.to_string().into_bytes()))
    .chain([
        ("empty body".to_owned(), Vec::new()),
        ("whitespace".to_owned(), b" \r\n\t ".to_vec()),
        ("two objects".to_owned(), format!("{doc}{doc}").into_bytes()),
        ("trailing comma".to_owned(), {
            let mut b = doc.to_string().into_bytes();
            b.pop();
            b.extend_from_slice(b",}");
            b
        }),
        ("duplicate key with a wrong type".to_owned(), {
            let mut b = doc.to_string().into_bytes();
            b.pop();
            b.extend_from_slice(br#","user_profiles":7}"#);
            b
        }),
    ])
    .collect();
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("non-object messages", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn huge_arrays_are_4xx() {
    let run = start("bad-huge").await;
    let doc = rich_batch(&run, "huge");
    let n = 200_000;
    let repeat = |item: &str| format!("[{}]", vec![item; n].join(","));
    let with = |pointer: &str, array: &str| -> Vec<u8> {
        // Splice the raw array text in place of a marker: building 200,000 Values is slow.
        let marker = "\"@@HUGE@@\"";
        let text = String::from_utf8(replaced(&doc, pointer, json!("@@HUGE@@"))).unwrap();
        text.replacen(marker, array, 1).into_bytes()
    };
    let cases: Vec<Case> = vec![
        // Regression (found here, fixed in 4ceb476): more than 50,000 profiles make more chunks
        // than TransactWriteItems' 100 items; the endpoint answered 503 (retried forever) for a
        // batch it could never store. Now 413.
        (
            "200,000 {} in user_profiles".into(),
            with("/user_profiles", &repeat("{}")),
        ),
        (
            "200,000 null in user_profiles".into(),
            with("/user_profiles", &repeat("null")),
        ),
        (
            "200,000 {} in one profile's audiences".into(),
            with("/user_profiles/0/audiences", &repeat("{}")),
        ),
        (
            "200,000 {} in one profile's user_identities".into(),
            with("/user_profiles/0/user_identities", &repeat("{}")),
        ),
        (
            "200,000 numbers in account_settings' place".into(),
            with("/account/account_settings", &repeat("1")),
        ),
    ];
    for (name, body) in &cases {
        assert!(
            body.len() < 5 * 1024 * 1024,
            "{name}: {} bytes is over the body limit",
            body.len()
        );
    }
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("huge arrays", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn deep_nesting_is_400_not_a_stack_overflow() {
    let run = start("bad-deep").await;
    let doc = rich_batch(&run, "deep");
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let open_only = "[".repeat(depth);
    let inside = |pointer: &str, nested: &str| -> Vec<u8> {
        let text = String::from_utf8(replaced(&doc, pointer, json!("@@DEEP@@"))).unwrap();
        text.replacen("\"@@DEEP@@\"", nested, 1).into_bytes()
    };
    let mut cases: Vec<Case> = vec![
        ("root arrays".into(), arrays.clone().into_bytes()),
        ("root objects".into(), objects.clone().into_bytes()),
        ("root, unclosed".into(), open_only.clone().into_bytes()),
    ];
    for pointer in [
        "/user_profiles",
        "/user_profiles/0",
        "/user_profiles/0/audiences/0/audience_subscription_settings",
        "/user_profiles/0/audiences/0/user_attributes/1/list_value",
        "/account/account_settings",
        "/firehose_version",
    ] {
        cases.push((format!("{pointer}: arrays"), inside(pointer, &arrays)));
        cases.push((format!("{pointer}: unclosed"), inside(pointer, &open_only)));
        // `{"a":{"a":…}}` as a profile is a profile with an unknown field: skipped, see below.
        if pointer != "/user_profiles/0" {
            cases.push((format!("{pointer}: objects"), inside(pointer, &objects)));
        }
    }
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("deep nesting", &failures);
    // In a field nobody reads, serde_json skips the value without recursion (no depth limit is
    // needed there): the message is valid, so a registration carrying it is answered 200.
    for nested in [&arrays, &objects] {
        let body = format!(r#"{{"type":"module_registration_request","id":"deep","x":{nested}}}"#);
        let reply = exchange(run.port, post(body.as_bytes()), End::KeepOpen).await;
        assert_eq!(reply.status, Some(200), "{:.300}", reply.raw);
        assert_eq!(reply.body["type"], "module_registration_response");
    }
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn bodies_over_5_mib_are_413() {
    let run = start("bad-big").await;
    let mut doc = rich_batch(&run, "big");
    doc["pad"] = json!("x".repeat(5 * 1024 * 1024));
    let body = doc.to_string().into_bytes();
    assert!(body.len() > 5 * 1024 * 1024);
    // Refused on the declared length, before the body is read.
    let reply = exchange(run.port, post(&body), End::KeepOpen).await;
    assert_eq!(reply.status, Some(413), "{reply:?}");
    assert!(reply.body["error"].is_string(), "{}", reply.body);
    // Chunked, without a declared length: refused once read.
    let reply = exchange(
        run.port,
        post_chunked(&chunked(&body, 256 * 1024)),
        End::KeepOpen,
    )
    .await;
    assert_eq!(reply.status, Some(413), "chunked: {:?}", reply.raw);
    assert!(reply.body["error"].is_string(), "{}", reply.body);
    // A declared length over the limit with a small body.
    let reply = exchange(
        run.port,
        post_declaring(b"{}", 5 * 1024 * 1024 + 1),
        End::KeepOpen,
    )
    .await;
    assert_eq!(reply.status, Some(413), "{reply:?}");
    assert_healthy_and_nothing_written(&run).await;
}

/// Like Python's http.client or Java's HttpClient: write the whole request, then read.
async fn write_all_then_read(port: u16, request: Vec<u8>) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let written = stream.write_all(&request).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("a reply within 60 s");
    let error = written
        .err()
        .map(|e| format!("write: {e}"))
        .or(read.err().map(|e| format!("read: {e}")));
    parse_reply(raw, error)
}

#[tokio::test]
async fn a_client_that_writes_a_6_mib_body_before_reading_gets_413() {
    let run = start("bad-6mib").await;
    let mut doc = rich_batch(&run, "six");
    doc["pad"] = json!("x".repeat(6 * 1024 * 1024));
    let body = doc.to_string().into_bytes();
    let reply = write_all_then_read(run.port, post(&body)).await;
    assert_eq!(reply.error, None, "the whole body was read, nothing reset");
    assert_eq!(reply.status, Some(413), "{:?}", reply.raw.get(..200));
    assert_eq!(reply.body["error"], "body exceeds the size limit");
    assert_healthy_and_nothing_written(&run).await;
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let run = start("bad-utf8").await;
    let doc = rich_batch(&run, "utf8");
    let text = doc.to_string();
    let bad_sequences: [(&str, &[u8]); 6] = [
        ("0xff", b"\xff"),
        ("0xfe 0xff", b"\xfe\xff"),
        ("overlong /", b"\xc0\xaf"),
        ("UTF-16 surrogate", b"\xed\xa0\x80"),
        ("truncated 3-byte", b"\xe2\x82"),
        ("lone continuation", b"\x80"),
    ];
    let mut cases: Vec<Case> = vec![
        ("only 0xff".into(), b"\xff\xff\xff".to_vec()),
        ("UTF-16 BOM and text".into(), {
            let mut b = b"\xff\xfe".to_vec();
            for u in text.encode_utf16() {
                b.extend_from_slice(&u.to_le_bytes());
            }
            b
        }),
        (
            "escaped lone surrogate in audience_name".into(),
            text.replacen("Cart Abandoners", "\\ud800", 1).into_bytes(),
        ),
        (
            "escaped lone surrogate in a key".into(),
            text.replacen("\"userIdType\"", "\"\\udfff\"", 1)
                .into_bytes(),
        ),
    ];
    // Raw invalid bytes inside values and keys the parser reads.
    for (what, target) in [
        ("id", "\"utf8\""),
        ("audience_name", "Cart Abandoners"),
        ("identity value", "cust-1"),
        ("mpid", "-6964353745838423734"),
        ("settings key", "userIdType"),
        ("object key", "\"user_identities\""),
        ("type", "audience_membership_change_request"),
    ] {
        for (seq_name, seq) in bad_sequences {
            let at = text.find(target).expect("target in the batch") + 1;
            let mut b = text.as_bytes()[..at].to_vec();
            b.extend_from_slice(seq);
            b.extend_from_slice(&text.as_bytes()[at..]);
            cases.push((format!("{seq_name} in {what}"), b));
        }
    }
    // And outside any string, between tokens.
    let mut b = text.clone().into_bytes();
    b.insert(1, 0xff);
    cases.push(("0xff between tokens".into(), b));
    let failures = post_json_cases(&run, cases).await;
    assert_no_failures("invalid UTF-8", &failures);
    assert_healthy_and_nothing_written(&run).await;
}

/// Framing faults: only "no 5xx and no panic" can be asked of the reply (4xx or a closed
/// connection; 200 where the framing may legitimately be read), and above all that nothing is
/// stored.
#[tokio::test]
async fn broken_http_framing_stores_nothing_and_never_5xx() {
    let run = start("bad-http").await;
    let doc = rich_batch(&run, "framing");
    let body = doc.to_string().into_bytes();
    let len = body.len();
    let head = |extra: &str| {
        format!(
            "POST /mparticle HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Authorization: {}\r\n{extra}\r\n",
            auth()
        )
        .into_bytes()
    };
    // For framings a server may read either way (RFC 9112 lets Transfer-Encoding win over
    // Content-Length; chunk extensions and trailers may be skipped): a batch whose credentials
    // are refused, so that even a successful read stores nothing (200, suspend_subscription).
    let mut refused = doc.clone();
    refused["account"]["account_settings"]["passcode"] = json!("not-the-passcode");
    let unstorable = refused.to_string().into_bytes();
    let cat = |a: Vec<u8>, b: &[u8]| {
        let mut a = a;
        a.extend_from_slice(b);
        a
    };
    let te = "Transfer-Encoding: chunked\r\n";
    let cases: Vec<(String, Vec<u8>, End, bool)> = vec![
        // Content-Length larger than what is sent, then the connection closed.
        (
            "whole valid body, Content-Length + 10, half-close".into(),
            post_declaring(&body, len + 10),
            End::HalfClose,
            false,
        ),
        (
            "whole valid body, Content-Length + 10, abort".into(),
            post_declaring(&body, len + 10),
            End::Abort,
            false,
        ),
        (
            "half the body, Content-Length of all, half-close".into(),
            post_declaring(&body[..len / 2], len),
            End::HalfClose,
            false,
        ),
        (
            "half the body, Content-Length of all, abort".into(),
            post_declaring(&body[..len / 2], len),
            End::Abort,
            false,
        ),
        (
            "headers only, Content-Length 4 MiB, half-close".into(),
            post_declaring(b"", 4 * 1024 * 1024),
            End::HalfClose,
            false,
        ),
        (
            "Content-Length shorter than the body".into(),
            post_declaring(&body, len - 1),
            End::KeepOpen,
            false,
        ),
        (
            "Content-Length not a number".into(),
            cat(head("Content-Length: lots\r\n"), &body),
            End::HalfClose,
            false,
        ),
        (
            "Content-Length negative".into(),
            cat(head("Content-Length: -1\r\n"), &body),
            End::HalfClose,
            false,
        ),
        (
            "two different Content-Lengths".into(),
            cat(
                head(&format!("Content-Length: {len}\r\nContent-Length: 3\r\n")),
                &body,
            ),
            End::HalfClose,
            false,
        ),
        // Malformed chunked bodies.
        (
            "chunk size not hex".into(),
            post_chunked(&cat(
                b"zz\r\n".to_vec(),
                &cat(body.clone(), b"\r\n0\r\n\r\n"),
            )),
            End::HalfClose,
            false,
        ),
        (
            "chunk size overflowing u64".into(),
            post_chunked(&cat(
                b"fffffffffffffffffffff\r\n".to_vec(),
                &cat(body.clone(), b"\r\n0\r\n\r\n"),
            )),
            End::HalfClose,
            false,
        ),
        (
            "chunk shorter than its size, then closed".into(),
            post_chunked(&cat(format!("{:x}\r\n", len + 100).into_bytes(), &body)),
            End::HalfClose,
            false,
        ),
        (
            "whole valid body in chunks, no last chunk, half-close".into(),
            post_chunked(&{
                let mut c = chunked(&body, 100);
                c.truncate(c.len() - 5); // drop "0\r\n\r\n"
                c
            }),
            End::HalfClose,
            false,
        ),
        (
            "whole valid body in chunks, no last chunk, abort".into(),
            post_chunked(&{
                let mut c = chunked(&body, 100);
                c.truncate(c.len() - 5);
                c
            }),
            End::Abort,
            false,
        ),
        (
            "chunk data without its CRLF".into(),
            post_chunked(&cat(
                format!("{len:x}\r\n").into_bytes(),
                &cat(body.clone(), b"XX0\r\n\r\n"),
            )),
            End::HalfClose,
            false,
        ),
        (
            "chunk size line without CRLF".into(),
            post_chunked(&cat(format!("{len:x}").into_bytes(), &body)),
            End::HalfClose,
            false,
        ),
        (
            "chunk extension garbage".into(),
            post_chunked(&cat(
                format!("{len:x};\x01\x02=\"\r\n").into_bytes(),
                &cat(unstorable.clone(), b"\r\n0\r\n\r\n"),
            )),
            End::HalfClose,
            true,
        ),
        (
            "negative chunk size".into(),
            post_chunked(&cat(
                b"-5\r\n".to_vec(),
                &cat(body.clone(), b"\r\n0\r\n\r\n"),
            )),
            End::HalfClose,
            false,
        ),
        (
            "chunked and Content-Length both".into(),
            cat(
                head(&format!("Content-Length: 5\r\n{te}")),
                &chunked(&unstorable, 64),
            ),
            End::HalfClose,
            true,
        ),
        (
            "chunked twice".into(),
            cat(head(&format!("{te}{te}")), &chunked(&unstorable, 64)),
            End::HalfClose,
            true,
        ),
        (
            "gzip, chunked with a plain body".into(),
            cat(
                head("Transfer-Encoding: gzip, chunked\r\n"),
                &chunked(&unstorable, 64),
            ),
            End::HalfClose,
            true,
        ),
        (
            "chunked, then garbage trailers".into(),
            post_chunked(&{
                let mut c = chunked(&unstorable, 64);
                c.truncate(c.len() - 2);
                c.extend_from_slice(b"\x00\x01 not a header\r\n\r\n");
                c
            }),
            End::HalfClose,
            true,
        ),
        // Broken request heads.
        (
            "header line without a colon".into(),
            cat(
                head(&format!("Content-Length: {len}\r\nno colon here\r\n")),
                &body,
            ),
            End::HalfClose,
            false,
        ),
        (
            "invalid UTF-8 in the Authorization header".into(),
            cat(
                cat(
                    format!(
                        "POST /mparticle HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                         Content-Length: {len}\r\nAuthorization: Token "
                    )
                    .into_bytes(),
                    b"\xff\xfe\r\n\r\n",
                ),
                &body,
            ),
            End::HalfClose,
            false,
        ),
        (
            "garbage request line".into(),
            cat(
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
                &body,
            ),
            End::HalfClose,
            false,
        ),
        (
            "HTTP/0.9-style request".into(),
            b"POST /mparticle\r\n\r\n".to_vec(),
            End::HalfClose,
            false,
        ),
        (
            "1 MiB header".into(),
            cat(
                head(&format!(
                    "Content-Length: {len}\r\nX-Pad: {}\r\n",
                    "a".repeat(1024 * 1024)
                )),
                &body,
            ),
            End::HalfClose,
            false,
        ),
    ];
    let port = run.port;
    let failures: Vec<String> = stream::iter(cases)
        .map(|(name, request, end, may_succeed)| async move {
            let reply = exchange(port, request, end).await;
            let fine = match reply.status {
                None => true, // closed (or reset) without a reply
                Some(s) => (400..500).contains(&s) || (may_succeed && s == 200),
            };
            (!fine).then(|| format!("{name}: {reply:?}"))
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "framing faults answered other than 4xx or a close:\n{}",
        failures.join("\n")
    );
    // Give aborted requests' server tasks time to finish whatever they would do.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_healthy_and_nothing_written(&run).await;
    // The same body, framed correctly, is stored: the checks above were not vacuous.
    let reply = exchange(run.port, post(&body), End::KeepOpen).await;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    assert_eq!(run.stack.chunks().await.len(), 1);
}

#[tokio::test]
async fn invalid_utf8_in_an_ignored_field_is_400() {
    let run = start("bad-utf8-ignored").await;
    let mut body = rich_batch(&run, "utf8-ignored").to_string().into_bytes();
    body.pop();
    body.extend_from_slice(b",\"note\":\"\xff\xfe\"}");
    let failures =
        post_json_cases(&run, vec![("0xff 0xfe in an unknown field".into(), body)]).await;
    // Regression (found here, fixed in 4ceb476): serde_json checks UTF-8 only in the strings it
    // reads, not in values it skips, so this body (not JSON: RFC 8259 §8.1) was answered 200 and
    // stored.
    assert_no_failures("invalid UTF-8 in an ignored field", &failures);
    assert_healthy_and_nothing_written(&run).await;
}
