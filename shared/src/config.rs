//! Typed configuration, read once from the environment at start-up.

use std::time::Duration;

use crate::domain::region::Region;
use crate::store::tables::TableNames;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Clone)]
pub struct Config {
    /// The shared secret mParticle sends as `Authorization: Token …`.
    pub caller_token: String,
    /// Tables are `<prefix>-<region>-<table>`.
    pub tables: TableNames,
    /// Set locally (DynamoDB Local): every region's tables live behind this endpoint.
    pub dynamodb_endpoint: Option<String>,
    /// How long a project's credentials are cached; a revoked passcode works at most this long.
    pub project_cache_ttl: Duration,
    /// Bodies above this size are refused with 413.
    pub max_body_bytes: usize,
    /// The region whose stack this process belongs to (stream consumers and the read API).
    pub home_region: Region,
    /// CloudWatch namespace of the invocation metrics (EMF lines on stdout); none: not emitted.
    pub metrics_namespace: Option<String>,
    /// Buckets a segment created from now on gets (`SEGMENT_BUCKETS`, 1–256, default 64;
    /// `keys::memberships`). A segment keeps the count it was created with.
    pub segment_buckets: u32,
    /// The function that carries out erasures, by region (`ERASE_FUNCTION`, a name or ARN with
    /// `{region}` for the CleverTap region, e.g. `ctmp-{region}-erase`): authorize invokes the
    /// project's home region's. None (locally): authorize erases in process.
    pub erase_function: Option<String>,
    /// Where the tombstone keys are (`store::keyring`): the stack's secret
    /// (`TOMBSTONE_KEYS_SECRET`, a name or ARN, read on first need), or given whole
    /// (`TOMBSTONE_KEYS`, JSON; local runs). Neither: the local, public keys when
    /// `DYNAMODB_ENDPOINT` is set, else none (a function that needs them fails its request).
    pub tombstone_keys: TombstoneKeySource,
    /// The stack's EventBridge bus the publisher puts the engage feed on (`EVENT_BUS_NAME`).
    pub event_bus_name: Option<String>,
    /// Set locally: the EventBridge stand-in (`EVENTBRIDGE_ENDPOINT`, moto).
    pub eventbridge_endpoint: Option<String>,
    /// The bulk way's queue, by region (`BULK_QUEUE`, a queue name with `{region}`, e.g.
    /// `ctmp-{region}-bulk`; `domain::ways`). None: every chunk goes the live way.
    pub bulk_queue: Option<String>,
    /// Requests with more profiles than this go the bulk way (`LIVE_MAX_PROFILES`, default
    /// `domain::ways::LIVE_MAX_PROFILES`).
    pub live_max_profiles: usize,
}

/// Where a process gets its tombstone keys.
#[derive(Clone, PartialEq, Eq)]
pub enum TombstoneKeySource {
    Secret(String),
    Fixed(crate::domain::erasure::TombstoneKeys),
    LocalDefault,
    None,
}

impl std::fmt::Debug for TombstoneKeySource {
    // Never print a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TombstoneKeySource::Secret(id) => write!(f, "Secret({id:?})"),
            TombstoneKeySource::Fixed(keys) => write!(f, "Fixed({keys:?})"),
            TombstoneKeySource::LocalDefault => f.write_str("LocalDefault"),
            TombstoneKeySource::None => f.write_str("None"),
        }
    }
}

impl std::fmt::Debug for Config {
    // Never print the caller token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tables", &self.tables)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field("project_cache_ttl", &self.project_cache_ttl)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("home_region", &self.home_region)
            .field("metrics_namespace", &self.metrics_namespace)
            .field("segment_buckets", &self.segment_buckets)
            .field("erase_function", &self.erase_function)
            .field("tombstone_keys", &self.tombstone_keys)
            .field("event_bus_name", &self.event_bus_name)
            .field("eventbridge_endpoint", &self.eventbridge_endpoint)
            .field("bulk_queue", &self.bulk_queue)
            .field("live_max_profiles", &self.live_max_profiles)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
pub const DEFAULT_TABLE_PREFIX: &str = "ctmp";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Same as [`Config::from_env`] over any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let caller_token = non_empty("MPARTICLE_CALLER_TOKEN").unwrap_or_default();
        let ttl_secs = match non_empty("PROJECT_CACHE_TTL_SECS") {
            None => 60,
            Some(v) => v.trim().parse::<u64>().map_err(|e| ConfigError::Invalid {
                name: "PROJECT_CACHE_TTL_SECS",
                reason: e.to_string(),
            })?,
        };
        let max_body_bytes = match non_empty("MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|e| ConfigError::Invalid {
                    name: "MAX_BODY_BYTES",
                    reason: e.to_string(),
                })?,
        };
        let home_region = match non_empty("CT_REGION") {
            None => Region::Eu1,
            Some(v) => Region::parse(&v).ok_or_else(|| ConfigError::Invalid {
                name: "CT_REGION",
                reason: format!("{v:?} is not a CleverTap region"),
            })?,
        };
        let max_buckets = crate::store::keys::memberships::MAX_BUCKETS;
        let segment_buckets = match non_empty("SEGMENT_BUCKETS") {
            None => crate::store::keys::memberships::DEFAULT_BUCKETS,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|b| (1..=max_buckets).contains(b))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "SEGMENT_BUCKETS",
                    reason: format!("{v:?} is not a whole number from 1 to {max_buckets}"),
                })?,
        };
        let erase_function = match non_empty("ERASE_FUNCTION") {
            Some(v) if !v.contains("{region}") => {
                return Err(ConfigError::Invalid {
                    name: "ERASE_FUNCTION",
                    reason: format!("{v:?} does not name the region as {{region}}"),
                });
            }
            other => other,
        };
        let bulk_queue = match non_empty("BULK_QUEUE") {
            Some(v) if !v.contains("{region}") => {
                return Err(ConfigError::Invalid {
                    name: "BULK_QUEUE",
                    reason: format!("{v:?} does not name the region as {{region}}"),
                });
            }
            other => other,
        };
        let live_max_profiles = match non_empty("LIVE_MAX_PROFILES") {
            None => crate::domain::ways::LIVE_MAX_PROFILES,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|e| ConfigError::Invalid {
                    name: "LIVE_MAX_PROFILES",
                    reason: e.to_string(),
                })?,
        };
        let dynamodb_endpoint = non_empty("DYNAMODB_ENDPOINT");
        let tombstone_keys = match (
            non_empty("TOMBSTONE_KEYS_SECRET"),
            non_empty("TOMBSTONE_KEYS"),
        ) {
            (Some(id), _) => TombstoneKeySource::Secret(id.trim().to_owned()),
            (None, Some(json)) => TombstoneKeySource::Fixed(
                crate::domain::erasure::TombstoneKeys::parse(&json).map_err(|e| {
                    ConfigError::Invalid {
                        name: "TOMBSTONE_KEYS",
                        reason: e.to_string(),
                    }
                })?,
            ),
            (None, None) if dynamodb_endpoint.is_some() => TombstoneKeySource::LocalDefault,
            (None, None) => TombstoneKeySource::None,
        };
        Ok(Self {
            bulk_queue,
            live_max_profiles,
            event_bus_name: non_empty("EVENT_BUS_NAME"),
            eventbridge_endpoint: non_empty("EVENTBRIDGE_ENDPOINT"),
            tombstone_keys,
            erase_function,
            segment_buckets,
            caller_token,
            tables: TableNames::new(
                non_empty("TABLE_PREFIX").unwrap_or_else(|| DEFAULT_TABLE_PREFIX.to_owned()),
            ),
            dynamodb_endpoint,
            project_cache_ttl: Duration::from_secs(ttl_secs),
            max_body_bytes,
            home_region,
            metrics_namespace: non_empty("METRICS_NAMESPACE"),
        })
    }

    /// The caller token is required by the mParticle endpoint only.
    pub fn require_caller_token(&self) -> Result<(), ConfigError> {
        if self.caller_token.is_empty() {
            Err(ConfigError::Missing("MPARTICLE_CALLER_TOKEN"))
        } else {
            Ok(())
        }
    }

    /// The store every function builds once at init: the regional clients, the tables and the
    /// bucket count of new segments (no network call happens here).
    pub async fn store(&self) -> crate::store::Store {
        crate::store::Store::new(self.clients().await, self.tables.clone())
            .with_new_segment_buckets(self.segment_buckets)
            .with_keyring(self.keyring().await)
    }

    /// The tombstone keys of this process: no network call happens here (the secret is read
    /// when a project with erasures is first met).
    pub async fn keyring(&self) -> crate::store::keyring::Keyring {
        use crate::store::keyring::Keyring;
        match &self.tombstone_keys {
            TombstoneKeySource::Secret(id) => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.home_region.aws_region()))
                    .load()
                    .await;
                Keyring::secret(aws_sdk_secretsmanager::Client::new(&sdk), id.clone())
            }
            TombstoneKeySource::Fixed(keys) => Keyring::fixed(keys.clone()),
            TombstoneKeySource::LocalDefault => Keyring::for_local_use(),
            TombstoneKeySource::None => Keyring::unconfigured(),
        }
    }

    /// The publisher's bus, in the home region (or the local stand-in): no network call happens
    /// here.
    pub async fn bus(&self) -> Result<crate::bus::Bus, ConfigError> {
        let name = self
            .event_bus_name
            .clone()
            .ok_or(ConfigError::Missing("EVENT_BUS_NAME"))?;
        let client = match &self.eventbridge_endpoint {
            Some(endpoint) => crate::bus::Bus::local_client(endpoint),
            None => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.home_region.aws_region()))
                    .load()
                    .await;
                aws_sdk_eventbridge::Client::new(&sdk)
            }
        };
        Ok(crate::bus::Bus::new(client, name))
    }

    /// Builds the per-region DynamoDB clients: no network call happens here.
    pub async fn clients(&self) -> crate::store::clients::RegionalClients {
        match &self.dynamodb_endpoint {
            Some(endpoint) => crate::store::clients::RegionalClients::single(
                crate::store::clients::local_client(endpoint),
            ),
            None => {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                crate::store::clients::RegionalClients::from_sdk_config(&sdk, None)
            }
        }
    }
}

impl Config {
    /// The bulk way's queues (one per CleverTap region, in its AWS region), if `BULK_QUEUE` is
    /// set: no network call happens here.
    pub async fn bulk_queue(&self) -> Option<crate::bulk::BulkQueue> {
        let pattern = self.bulk_queue.clone()?;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let clients = Region::ALL
            .iter()
            .map(|r| {
                let conf = aws_sdk_sqs::config::Builder::from(&sdk)
                    .region(aws_sdk_sqs::config::Region::new(r.aws_region()))
                    .build();
                (*r, aws_sdk_sqs::Client::from_conf(conf))
            })
            .collect();
        Some(crate::bulk::BulkQueue::Sqs(
            crate::bulk::SqsBulkQueues::new(clients, pattern),
        ))
    }

    /// One Lambda client per CleverTap region, in its AWS region (for the `erase` functions):
    /// no network call happens here.
    pub async fn lambda_clients(
        &self,
    ) -> std::collections::HashMap<Region, aws_sdk_lambda::Client> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Region::ALL
            .iter()
            .map(|r| {
                let conf = aws_sdk_lambda::config::Builder::from(&sdk)
                    .region(aws_sdk_lambda::config::Region::new(r.aws_region()))
                    .build();
                (*r, aws_sdk_lambda::Client::from_conf(conf))
            })
            .collect()
    }
}

/// Logs as JSON in Lambda (CloudWatch adds the time) and as compact text elsewhere.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder
            .json()
            .with_current_span(false)
            .without_time()
            .with_ansi(false)
            .try_init()
    } else {
        builder.compact().with_writer(std::io::stderr).try_init()
    };
    // A second init (tests, run-local) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// No store built outside the local stack hashes tombstones with the public local keys:
    /// tombstones written with them would never be found by the pipeline (issue 34, defect 1).
    #[tokio::test]
    async fn no_store_falls_back_to_the_public_local_keys_outside_the_local_stack() {
        let local = crate::domain::erasure::TombstoneKeys::parse(crate::store::keyring::LOCAL_KEYS)
            .unwrap();
        // Against AWS with no key configured: no keys at all, never the local ones.
        let aws = Config::from_lookup(|_| None).unwrap().store().await;
        assert!(!aws.checks_tombstones());
        assert!(matches!(
            aws.tombstone_keys().await,
            Err(crate::ports::StoreError::Rejected(_))
        ));
        let bare = crate::store::Store::new(
            crate::store::clients::RegionalClients::single(crate::store::clients::local_client(
                "http://127.0.0.1:9",
            )),
            crate::store::tables::TableNames::new("x"),
        );
        assert!(
            !bare.checks_tombstones(),
            "Store::new has no keys of its own"
        );
        // The stack's own keys when given, whether an endpoint is set or not.
        let given = r#"{"current":2,"k2":"a-key-of-at-least-thirty-two-characters-x"}"#;
        for endpoint in [None, Some("http://127.0.0.1:8000")] {
            let c = Config::from_lookup(|k| match k {
                "TOMBSTONE_KEYS" => Some(given.to_owned()),
                "DYNAMODB_ENDPOINT" => endpoint.map(str::to_owned),
                _ => None,
            })
            .unwrap();
            let keys = c.store().await.tombstone_keys().await.unwrap();
            assert!(*keys != local, "the configured keys, not the public ones");
        }
        // The public keys only against a local endpoint.
        let c = Config::from_lookup(|k| {
            (k == "DYNAMODB_ENDPOINT").then(|| "http://127.0.0.1:8000".to_owned())
        })
        .unwrap();
        assert!(*c.store().await.tombstone_keys().await.unwrap() == local);
    }

    #[test]
    fn segment_buckets_default_to_64_and_stay_in_range() {
        let with = |v: &'static str| {
            Config::from_lookup(move |k| (k == "SEGMENT_BUCKETS").then(|| v.to_owned()))
        };
        assert_eq!(Config::from_lookup(|_| None).unwrap().segment_buckets, 64);
        assert_eq!(with("1").unwrap().segment_buckets, 1);
        assert_eq!(with(" 128 ").unwrap().segment_buckets, 128);
        for bad in ["0", "257", "-1", "many"] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.tables.prefix(), "ctmp");
        assert_eq!(c.project_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.max_body_bytes, 5 * 1024 * 1024);
        assert!(c.require_caller_token().is_err());

        let env: HashMap<&str, &str> = [
            ("MPARTICLE_CALLER_TOKEN", "secret"),
            ("TABLE_PREFIX", "x"),
            ("CT_REGION", "SK1"),
            ("PROJECT_CACHE_TTL_SECS", "0"),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.home_region, Region::Sk1);
        assert!(c.require_caller_token().is_ok());
        assert!(!format!("{c:?}").contains("secret"));

        let bad: HashMap<&str, &str> = [("CT_REGION", "mars")].into();
        assert!(Config::from_lookup(|k| bad.get(k).map(|v| v.to_string())).is_err());
    }

    #[test]
    fn tombstone_keys_come_from_the_secret_or_are_given_and_are_never_printed() {
        let with = |pairs: &[(&'static str, String)]| {
            let env: HashMap<&str, String> = pairs.iter().cloned().collect();
            Config::from_lookup(move |k| env.get(k).cloned())
        };
        let key = "a-key-of-at-least-thirty-two-bytes-long!";
        let given = format!(r#"{{"current":1,"k1":"{key}"}}"#);
        let secret = with(&[
            ("TOMBSTONE_KEYS_SECRET", "arn:aws:secretsmanager:x".into()),
            ("TOMBSTONE_KEYS", given.clone()),
        ]);
        assert_eq!(
            secret.unwrap().tombstone_keys,
            TombstoneKeySource::Secret("arn:aws:secretsmanager:x".into())
        );
        let fixed = with(&[("TOMBSTONE_KEYS", given)]).unwrap();
        assert!(matches!(fixed.tombstone_keys, TombstoneKeySource::Fixed(_)));
        assert!(!format!("{fixed:?}").contains(key));
        let short = with(&[("TOMBSTONE_KEYS", r#"{"current":1,"k1":"x"}"#.into())]);
        assert!(short.is_err());
        let local = with(&[("DYNAMODB_ENDPOINT", "http://127.0.0.1:8000".into())]);
        assert_eq!(
            local.unwrap().tombstone_keys,
            TombstoneKeySource::LocalDefault
        );
        assert_eq!(with(&[]).unwrap().tombstone_keys, TombstoneKeySource::None);
    }
}
