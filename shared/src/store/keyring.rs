//! The tombstone keys, from outside DynamoDB (I/O): the stack's Secrets Manager secret, read on
//! first need (never at init, and only by a process that meets a project with erasures),
//! cached, and read again after [`KEY_REFRESH`] so a version added to the secret reaches every
//! process before it is made current (docs/architecture.md, Erasure: rotating the keys).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::domain::erasure::TombstoneKeys;
use crate::ports::StoreError;

/// How long a process keeps the keys it read before reading the secret again.
pub const KEY_REFRESH: Duration = Duration::from_secs(300);
/// After a failed refresh, how long until the next read (not another full interval).
pub const KEY_RETRY: Duration = Duration::from_secs(10);
/// Keys read longer ago than this are never used: a process whose refreshes keep failing refuses
/// (its batch fails as transient and is retried) rather than check with keys that may lack the
/// current version. Rotation waits at least this long between adding a version and making it
/// current (#34: a failed refresh once kept stale keys for another full interval, again and
/// again).
pub const KEY_MAX_AGE: Duration = Duration::from_secs(600);

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
    cached: Mutex<Option<Cached>>,
}

/// The keys a process read, when, and when to read again.
struct Cached {
    keys: Arc<TombstoneKeys>,
    read_at: Instant,
    next_read: Instant,
}

/// What a process does with keys read `age` ago when it is time to read again: read (and on a
/// failure keep them while younger than [`KEY_MAX_AGE`]), or refuse once they are that old.
fn usable_after_failure(age: Duration) -> bool {
    age < KEY_MAX_AGE
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
    /// refresh fails the keys read before are kept and the secret is read again after
    /// [`KEY_RETRY`], but never once they are [`KEY_MAX_AGE`] old (a version is made current
    /// only after that long); when the first read fails, the caller retries later.
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
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.next_read
            && usable_after_failure(c.read_at.elapsed())
        {
            return Ok(c.keys.clone());
        }
        match read_secret(client, secret_id).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let now = Instant::now();
                *cached = Some(Cached {
                    keys: keys.clone(),
                    read_at: now,
                    next_read: now + KEY_REFRESH,
                });
                Ok(keys)
            }
            Err(e) => match cached.as_mut() {
                Some(c) if usable_after_failure(c.read_at.elapsed()) => {
                    tracing::warn!(error = %e, "tombstone keys not refreshed; keeping those read before");
                    // Soon again, not on every call and not a whole interval later.
                    c.next_read = Instant::now() + KEY_RETRY;
                    Ok(c.keys.clone())
                }
                _ => Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_through_failed_refreshes_only_until_a_rotation_could_have_made_a_new_one_current()
     {
        assert!(KEY_RETRY < KEY_REFRESH && KEY_REFRESH < KEY_MAX_AGE);
        assert!(usable_after_failure(KEY_REFRESH));
        assert!(usable_after_failure(KEY_MAX_AGE - KEY_RETRY));
        assert!(!usable_after_failure(KEY_MAX_AGE));
        assert!(!usable_after_failure(KEY_MAX_AGE * 3));
    }
}
