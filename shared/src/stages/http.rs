//! What the HTTP functions answer: status, body and its kind, and the outcome the request came
//! to (a metrics dimension); and the answer as a Lambda HTTP response.

use serde::Serialize;

use crate::store::StoreError;

/// An HTTP answer: status and body (JSON unless said otherwise), and what it means (for the
/// request metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
    pub outcome: Outcome,
    pub kind: BodyKind,
}

/// What a reply's body is: its `content-type`, and for the console's pages their security headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// A console page: nothing but our own script and stylesheet may run or load.
    Html,
    Script,
    Stylesheet,
}

impl BodyKind {
    pub fn content_type(self) -> &'static str {
        match self {
            BodyKind::Json => "application/json; charset=utf-8",
            BodyKind::Html => "text/html; charset=utf-8",
            BodyKind::Script => "text/javascript; charset=utf-8",
            BodyKind::Stylesheet => "text/css; charset=utf-8",
        }
    }

    /// Headers besides `content-type`.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // Answers name people (emails, phones): no cache keeps them.
            BodyKind::Json => &[("cache-control", "no-store")],
            BodyKind::Html => &[
                (
                    "content-security-policy",
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
                ),
                ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer"),
                ("cache-control", "no-store"),
            ],
            BodyKind::Script | BodyKind::Stylesheet => &[
                ("x-content-type-options", "nosniff"),
                ("cache-control", "public, max-age=300"),
            ],
        }
    }
}

/// What a request came to; a metrics dimension, so a short fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A membership batch stored.
    Stored {
        profiles: u32,
        chunks: u32,
    },
    /// A membership batch stored before (a redelivery): answered, nothing written.
    Duplicate {
        profiles: u32,
        chunks: u32,
    },
    /// A heartbeat, or a batch without profiles: answered, nothing stored.
    Heartbeat,
    Registration,
    Subscription,
    /// A data subject's erasure carried out (or found done before).
    Erasure,
    /// An erasure carried out although the output's passcode is wrong, expired or revoked, or
    /// the project disabled (alarmed: the customer's credentials need fixing).
    ErasureWithoutPasscode,
    /// The output's credentials were refused: a membership answered with suspend, a subscription 403.
    CredentialsRejected,
    Unauthorized,
    BadRequest,
    TooLarge,
    MethodNotAllowed,
    NotFound,
    /// Storage unavailable: 503, mParticle retries.
    Unavailable,
    /// Storage refused the request (a value beyond a DynamoDB limit): 400, not retried.
    Refused,
    /// A read answered.
    Served,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored { .. } => "stored",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Heartbeat => "heartbeat",
            Outcome::Registration => "registration",
            Outcome::Erasure => "erasure",
            Outcome::ErasureWithoutPasscode => "erasure_without_passcode",
            Outcome::Subscription => "subscription",
            Outcome::CredentialsRejected => "credentials_rejected",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
            Outcome::Refused => "refused",
            Outcome::Served => "served",
        }
    }

    /// The outcome a status means when nothing more specific is known.
    pub(crate) fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Outcome::Served,
            401 => Outcome::Unauthorized,
            403 => Outcome::CredentialsRejected,
            404 => Outcome::NotFound,
            405 => Outcome::MethodNotAllowed,
            413 => Outcome::TooLarge,
            500..=599 => Outcome::Unavailable,
            _ => Outcome::BadRequest,
        }
    }
}

impl HttpReply {
    /// A reply whose outcome follows from its status.
    pub fn new(status: u16, body: String) -> Self {
        Self {
            status,
            body,
            outcome: Outcome::of_status(status),
            kind: BodyKind::Json,
        }
    }

    /// A reply of another kind than JSON.
    pub fn of_kind(status: u16, kind: BodyKind, body: String) -> Self {
        Self {
            kind,
            ..Self::new(status, body)
        }
    }

    pub(crate) fn json(status: u16, body: &impl Serialize) -> Self {
        Self::new(
            status,
            serde_json::to_string(body).expect("response types always serialize"),
        )
    }

    pub(crate) fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }

    pub(crate) fn with(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// The answer as API Gateway expects it.
pub fn into_response(reply: HttpReply) -> lambda_http::Response<lambda_http::Body> {
    let mut response = lambda_http::Response::builder()
        .status(reply.status)
        .header("content-type", reply.kind.content_type());
    for (name, value) in reply.kind.headers() {
        response = response.header(*name, *value);
    }
    response
        .body(lambda_http::Body::Text(reply.body))
        .expect("status and headers are valid")
}

/// A storage error as a caller must see it, the same at every edge (mParticle's endpoint, the
/// read API, the console): its status and words. 503 when it is transient (retry later); 500 when
/// a stored item cannot be read back (ours to repair: a retry succeeds once it is); 400 only
/// when DynamoDB refused the request itself, which no retry can change. `what` is what could not
/// be done ("stored", "answered").
pub(crate) fn storage_failure(e: &StoreError, what: &str) -> (u16, String) {
    match e {
        StoreError::Unavailable(_) => (503, "storage temporarily unavailable, retry later".into()),
        StoreError::Corrupt(_) => (
            500,
            "stored data could not be read back; retry later (an operator has been alerted by the logs)"
                .into(),
        ),
        StoreError::Rejected(_) => (
            400,
            format!("the request cannot be {what} (a value exceeds a storage limit)"),
        ),
    }
}
