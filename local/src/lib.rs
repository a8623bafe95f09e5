//! Local emulation of what AWS does around the functions, so one code path runs locally and
//! deployed: API Gateway (`server`), the stream event source mappings (`streams`, `pipeline`, and the feed's `publisher`), the
//! bulk way's fair queue and its workers (`bulk`), the engage feed's bus and rules on the EventBridge stand-in (`feed`), and fault injection
//! (`faults`, `proxy`).

/// The DynamoDB client the local tools and the tests hand around (the SDK stays behind `local`).
pub use aws_sdk_dynamodb::Client as DynamoDbClient;

pub mod bulk;
pub mod engine_share;
pub mod faults;
pub mod feed;
pub mod pipeline;
pub mod proxy;
pub mod publisher;
pub mod raw;
pub mod server;
pub mod streams;

use std::collections::HashMap;

/// A DynamoDB client for a local endpoint whose HTTP goes through `http` (fault injection, metering).
pub fn client_with_http(
    endpoint: &str,
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&shared::sdk::local_sdk_config(endpoint))
            .http_client(http)
            // DynamoDB Local serves one partition's transactions one at a time: under the key
            // meter's extra reads an answer can stall past the SDK's grace period, which would
            // fail the call and retry it forever; a metered or faulty client waits instead.
            .stalled_stream_protection(
                aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled(),
            )
            .build(),
    )
}

/// Every item of a table (a consistent scan): for checks in tests, benchmarks and the reliability
/// suite, never for the product's own reads.
pub async fn scan_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        out.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// Creates an active project with one passcode that never expires; returns (passcode, token).
pub async fn provision_project(
    store: &shared::store::Store,
    region: shared::domain::region::Region,
    project_id: &str,
) -> Result<(String, String), shared::ports::projects::ProjectWriteError> {
    use shared::domain::auth::{Project, ProjectStatus, StoredPasscode, generate_secret};
    use shared::ports::projects::Projects;
    let (passcode, token) = (generate_secret(), generate_secret());
    store
        .create_project(&Project {
            project_id: project_id.to_owned(),
            region,
            account_token: token.clone(),
            passcodes: vec![StoredPasscode::new(&passcode, None)],
            status: ProjectStatus::Active,
            created_ms: 0,
        })
        .await?;
    Ok((passcode, token))
}

/// The configuration of a stack over the tables `names` on DynamoDB Local at `endpoint`, answering
/// mParticle's `caller` token, with `extra` settings (name, value) on top.
pub fn local_config(
    names: &shared::store::tables::TableNames,
    endpoint: &str,
    caller: &str,
    extra: &[(&str, String)],
) -> shared::config::Config {
    let settings: HashMap<String, String> = [
        ("MPARTICLE_CALLER_TOKEN", caller.to_owned()),
        ("TABLE_PREFIX", names.prefix().to_owned()),
        ("DYNAMODB_ENDPOINT", endpoint.to_owned()),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    shared::config::Config::from_lookup(|k| settings.get(k).cloned())
        .expect("a local stack's settings are valid")
}
