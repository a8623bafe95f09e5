//! Proves the test harness: a real DynamoDB engine with every table, conditions and streams.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType};
use integration_tests::{client, endpoint, unique_prefix};
use shared::domain::region::Region;
use shared::store::tables::{Table, TableNames, create_all_tables, table_defs};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

#[tokio::test]
async fn creates_every_table_of_every_region() {
    let client = client();
    let names = TableNames::new(unique_prefix("harness-all"));
    create_all_tables(&client, &names).await.unwrap();
    // Running it again is harmless.
    create_all_tables(&client, &names).await.unwrap();

    for region in Region::ALL {
        for def in table_defs() {
            let d = client
                .describe_table()
                .table_name(names.name(region, def.table))
                .send()
                .await
                .unwrap();
            let t = d.table().unwrap();
            assert_eq!(t.key_schema().len(), 1 + def.sort_key.is_some() as usize);
            assert_eq!(t.global_secondary_indexes().len(), def.indexes.len());
            let stream_on = t
                .stream_specification()
                .map(|s| s.stream_enabled())
                .unwrap_or(false);
            assert_eq!(stream_on, def.stream, "{:?} stream", def.table);
        }
    }
    let ttl = client
        .describe_time_to_live()
        .table_name(names.name(Region::Sk1, Table::Inbox))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
}

#[tokio::test]
async fn writes_reads_conditions_and_streams() {
    let client = client();
    let names = TableNames::new(unique_prefix("harness-io"));
    shared::store::tables::create_tables(&client, &names, Region::Eu1)
        .await
        .unwrap();
    let profiles = names.name(Region::Eu1, Table::Profiles);

    // A profile item round-trips.
    client
        .put_item()
        .table_name(&profiles)
        .item("pk", s("P#proj#__abc"))
        .item("email", s("a@example.com"))
        .send()
        .await
        .unwrap();
    let got = client
        .get_item()
        .table_name(&profiles)
        .key("pk", s("P#proj#__abc"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(got.item().unwrap()["email"], s("a@example.com"));

    // A conditional create of an existing key fails with ConditionalCheckFailed.
    let err = client
        .put_item()
        .table_name(&profiles)
        .item("pk", s("P#proj#__abc"))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .expect_err("the item exists");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{err:?}"
    );

    // The inbox stream yields the INSERT with its new image.
    let inbox = names.name(Region::Eu1, Table::Inbox);
    client
        .put_item()
        .table_name(&inbox)
        .item("pk", s("proj"))
        .item("sk", s("m1#0000"))
        .item("status", s("received"))
        .send()
        .await
        .unwrap();
    let arn = client
        .describe_table()
        .table_name(&inbox)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.latest_stream_arn())
        .unwrap()
        .to_owned();
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::config::Builder::new()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                "local", "local", None, None, "static",
            ))
            .endpoint_url(endpoint())
            .build(),
    );
    let desc = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let shard = desc.stream_description().unwrap().shards()[0]
        .shard_id()
        .unwrap()
        .to_owned();
    let it = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let records = streams
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    let r = &records.records()[0];
    assert_eq!(r.event_name(), Some(&OperationType::Insert));
    let image = r.dynamodb().unwrap().new_image().unwrap();
    assert_eq!(
        image["sk"],
        aws_sdk_dynamodbstreams::types::AttributeValue::S("m1#0000".into())
    );
}
