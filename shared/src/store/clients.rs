//! DynamoDB clients, one per CleverTap region, built once at start-up without any network call.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region as AwsRegion;

use crate::domain::region::Region;

/// A client per CleverTap region: each talks to the AWS region that hosts that region's tables,
/// or, locally, every region talks to the one DynamoDB Local endpoint.
#[derive(Debug, Clone)]
pub struct RegionalClients {
    clients: HashMap<Region, Client>,
}

impl RegionalClients {
    /// Clients from a loaded SDK configuration; `endpoint` overrides every region's endpoint.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let clients = Region::ALL
            .into_iter()
            .map(|region| {
                let mut b = aws_sdk_dynamodb::config::Builder::from(sdk)
                    .region(AwsRegion::new(region.aws_region()));
                if let Some(url) = endpoint {
                    b = b.endpoint_url(url);
                }
                (region, Client::from_conf(b.build()))
            })
            .collect();
        Self { clients }
    }

    /// Every region served by one client (DynamoDB Local, or tests with injected faults).
    pub fn single(client: Client) -> Self {
        Self {
            clients: Region::ALL
                .into_iter()
                .map(|r| (r, client.clone()))
                .collect(),
        }
    }

    /// The same regions, each reached through the client `f` makes of its own (the local
    /// stack wraps a client's HTTP: fault injection, metering, the bulk way's share of the engine).
    pub fn map(&self, f: impl Fn(&Client) -> Client) -> Self {
        Self {
            clients: self.clients.iter().map(|(r, c)| (*r, f(c))).collect(),
        }
    }

    pub fn get(&self, region: Region) -> &Client {
        &self.clients[&region]
    }
}

/// A client for a local DynamoDB endpoint with fixed dummy credentials (DynamoDB Local ignores them).
pub fn local_client(endpoint: &str) -> Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&crate::sdk::local_sdk_config(endpoint))
        // DynamoDB Local serves a partition's transactions under one lock and answers
        // InternalServerError ("will succeed in actual DynamoDB API") when a caller waited too
        // long for it: locally a call gets more attempts than the SDK's default three.
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(8))
        .build();
    Client::from_conf(conf)
}
