//! What every AWS SDK client of the crate shares, below the adapters that build them (the store,
//! the bus) and the configuration that chooses them: nothing here imports the rest of the crate.

/// The SDK configuration of a local stand-in at `endpoint` (DynamoDB Local, the EventBridge and
/// SQS stand-in): one region, fixed dummy credentials, which neither checks. Every local client
/// of every AWS SDK crate is built from it.
pub fn local_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local", "local", None, None, "static",
        )))
        .endpoint_url(endpoint)
        .build()
}
