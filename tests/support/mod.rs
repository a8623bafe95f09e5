//! Shared helpers for integration tests: a DynamoDB Local client and fresh, isolated table names.

use aws_sdk_dynamodb::Client;
use shared::tables::{TableNames, create_all_tables};

/// The endpoint `scripts/test` exported; tests fail loudly without it rather than skip.
pub fn endpoint() -> String {
    std::env::var("DYNAMODB_ENDPOINT").expect(
        "DYNAMODB_ENDPOINT is not set: run the integration tests through scripts/test, \
         which starts DynamoDB Local",
    )
}

pub fn client() -> Client {
    shared::clients::local_client(&endpoint())
}

/// A table prefix no other test uses, so tests can run in parallel on one shared database.
pub fn unique_prefix(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}-{}", &id[..8], test.replace('_', "-"))
}

/// Creates every region's tables under a fresh prefix and returns their names.
pub async fn fresh_tables(test: &str) -> (Client, TableNames) {
    let client = client();
    let names = TableNames::new(unique_prefix(test));
    create_all_tables(&client, &names)
        .await
        .expect("create tables on DynamoDB Local");
    (client, names)
}
