//! The tombstone keys, from outside DynamoDB (I/O): the stack's Secrets Manager secret, read on
//! first need (never at init, and only by a process that meets a project with erasures),
//! cached, and read again after [`KEY_REFRESH`] so a version added to the secret reaches every
//! process before it is made current (docs/architecture.md, Erasure: rotating the keys).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::domain::erasure::TombstoneKeys;
use crate::ports::StoreError;

/// How long a process keeps the keys it read before reading the secret again. Rotation waits
/// at least this long between adding a version and making it current.
pub const KEY_REFRESH: Duration = Duration::from_secs(300);

/// The key used locally and in tests when none is configured (never in a deployed stack: its
/// functions name their secret). Public, so it protects nothing.
pub const LOCAL_KEYS: &str =
    r#"{"current":1,"k1":"local-tombstone-key-for-run-local-and-tests-only"}"#;

/// Where the keys come from.
enum Source {
    /// Given whole (`TOMBSTONE_KEYS`, local runs and tests).
    Fixed(Arc<TombstoneKeys>),
    /// The stack's secret (`TOMBSTONE_KEYS_SECRET`).
    Secret {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
    /// This function was given none (it is not meant to hash tombstones).
    Unconfigured,
}

/// The tombstone keys of one process.
pub struct Keyring {
    source: Source,
    cached: Mutex<Option<(Arc<TombstoneKeys>, Instant)>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Fixed(_) => "fixed",
            Source::Secret { .. } => "secret",
            Source::Unconfigured => "unconfigured",
        };
        f.debug_struct("Keyring")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    fn with(source: Source) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    pub fn fixed(keys: TombstoneKeys) -> Self {
        Self::with(Source::Fixed(Arc::new(keys)))
    }

    /// The public key of local runs and tests.
    pub fn for_local_use() -> Self {
        Self::fixed(TombstoneKeys::parse(LOCAL_KEYS).expect("the local keys parse"))
    }

    /// The keys of the secret `secret_id` (a name or ARN), read through `client` when needed.
    pub fn secret(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self::with(Source::Secret {
            client,
            secret_id: secret_id.into(),
        })
    }

    pub fn unconfigured() -> Self {
        Self::with(Source::Unconfigured)
    }

    /// Whether this process may hash tombstones at all (the internet-facing read API may not).
    pub fn is_configured(&self) -> bool {
        !matches!(self.source, Source::Unconfigured)
    }

    /// The keys: cached, or read from the secret (one read at a time per process). When a
    /// refresh fails the keys read before are kept (a version is only made current after every
    /// process could read it); when the first read fails, the caller retries later.
    pub async fn keys(&self) -> Result<Arc<TombstoneKeys>, StoreError> {
        let (client, secret_id) = match &self.source {
            Source::Fixed(keys) => return Ok(keys.clone()),
            Source::Unconfigured => {
                return Err(StoreError::Rejected(
                    "no tombstone keys are configured for this function (TOMBSTONE_KEYS_SECRET)"
                        .into(),
                ));
            }
            Source::Secret { client, secret_id } => (client, secret_id),
        };
        let mut cached = self.cached.lock().await;
        if let Some((keys, read_at)) = cached.as_ref()
            && read_at.elapsed() < KEY_REFRESH
        {
            return Ok(keys.clone());
        }
        match read_secret(client, secret_id).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *cached = Some((keys.clone(), Instant::now()));
                Ok(keys)
            }
            Err(e) => match cached.as_mut() {
                Some((keys, read_at)) => {
                    tracing::warn!(error = %e, "tombstone keys not refreshed; keeping those read before");
                    // Try again after another interval, not on every call.
                    *read_at = Instant::now();
                    Ok(keys.clone())
                }
                None => Err(e),
            },
        }
    }
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<TombstoneKeys, StoreError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            // Never the secret: the error's code and message name the request only.
            StoreError::Unavailable(format!(
                "tombstone keys unreadable: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            ))
        })?;
    let text = out
        .secret_string()
        .ok_or_else(|| StoreError::Corrupt("the tombstone key secret holds no string".into()))?;
    TombstoneKeys::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}
