//! The one definition of every table: keys, indexes, streams and TTL, named per region.
//!
//! `template.yaml` must declare exactly these (a test parses the template and compares), and
//! [`create_tables`] creates them against any endpoint (DynamoDB Local in tests and run-local).

use std::fmt;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

use crate::domain::region::Region;
use crate::store::keys;

/// The logical tables every region has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Projects,
    Inbox,
    Profiles,
    Segments,
    Memberships,
    Events,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Projects,
        Table::Inbox,
        Table::Profiles,
        Table::Segments,
        Table::Memberships,
        Table::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Projects => "projects",
            Table::Inbox => "inbox",
            Table::Profiles => "profiles",
            Table::Segments => "segments",
            Table::Memberships => "memberships",
            Table::Events => "events",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds `<prefix>-<region>-<table>` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    prefix: String,
}

impl TableNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn name(&self, region: Region, table: Table) -> String {
        format!("{}-{}-{}", self.prefix, region.as_str(), table.as_str())
    }

    /// The region and table a name of ours stands for.
    pub fn parse(&self, table_name: &str) -> Option<(Region, Table)> {
        let rest = table_name.strip_prefix(&self.prefix)?.strip_prefix('-')?;
        let (region, table) = rest.split_once('-')?;
        let region = Region::parse(region)?;
        let table = Table::ALL.into_iter().find(|t| t.as_str() == table)?;
        Some((region, table))
    }

    /// The region and table of a stream record's source ARN
    /// (`arn:aws:dynamodb:<aws region>:<account>:table/<name>/stream/<label>`).
    pub fn parse_arn(&self, arn: &str) -> Option<(Region, Table)> {
        let name = arn.split_once(":table/")?.1.split('/').next()?;
        self.parse(name)
    }
}

/// A secondary index: partition key, optional sort key, projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub name: &'static str,
    pub partition_key: &'static str,
    pub sort_key: Option<&'static str>,
    /// `None` projects keys only; `Some(list)` includes these attributes too.
    pub include: Option<&'static [&'static str]>,
}

/// Everything about one table except its region-specific name. All key attributes are strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub table: Table,
    pub partition_key: &'static str,
    pub sort_key: Option<&'static str>,
    pub indexes: &'static [IndexDef],
    /// Streams carry new images: the pipeline reads the item from the record itself.
    pub stream: bool,
    pub ttl_attribute: Option<&'static str>,
}

impl TableDef {
    /// Every attribute used as a key by the table or one of its indexes, deduplicated, in order.
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut out = vec![self.partition_key];
        out.extend(self.sort_key);
        for i in self.indexes {
            out.push(i.partition_key);
            out.extend(i.sort_key);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(*a));
        out
    }
}

/// Attributes the sync log reads from the inbox's time index.
pub const SYNC_LOG_ATTRIBUTES: &[&str] = &[
    "message_id",
    "chunk",
    "chunk_count",
    "received_ms",
    "status",
    "profile_count",
    "outcomes",
    "change_counts",
    "applied",
    "failure",
];

static DEFS: [TableDef; 6] = [
    TableDef {
        table: Table::Projects,
        partition_key: keys::projects::PROJECT_ID,
        sort_key: None,
        indexes: &[],
        stream: false,
        ttl_attribute: None,
    },
    TableDef {
        table: Table::Inbox,
        partition_key: keys::PK,
        sort_key: Some(keys::SK),
        indexes: &[IndexDef {
            name: keys::inbox::BY_RECEIVED,
            partition_key: keys::inbox::RECEIVED_SHARD,
            sort_key: Some(keys::inbox::RECEIVED_KEY),
            include: Some(SYNC_LOG_ATTRIBUTES),
        }],
        stream: true,
        ttl_attribute: Some(keys::inbox::EXPIRES_AT),
    },
    TableDef {
        table: Table::Profiles,
        partition_key: keys::PK,
        sort_key: None,
        // No index: an email or phone leads to its profiles through its holders item
        // (`H#<project>#email|phone#<value>`), written with the profile and read strongly
        // consistent, so every new profile with an email and a phone costs no index writes.
        indexes: &[],
        stream: false,
        ttl_attribute: None,
    },
    TableDef {
        table: Table::Segments,
        partition_key: keys::PK,
        sort_key: Some(keys::SK),
        indexes: &[],
        // Drives the background clearing of a removed segment.
        stream: true,
        // Import progress's rate buckets expire an hour on (`domain::progress`).
        ttl_attribute: Some(keys::segments::EXPIRES_AT),
    },
    TableDef {
        table: Table::Memberships,
        partition_key: keys::PK,
        sort_key: Some(keys::SK),
        indexes: &[],
        stream: false,
        ttl_attribute: None,
    },
    TableDef {
        table: Table::Events,
        partition_key: keys::PK,
        sort_key: Some(keys::SK),
        indexes: &[IndexDef {
            name: keys::events::BY_SEGMENT,
            partition_key: keys::events::SEGMENT_KEY,
            sort_key: Some(keys::events::PROFILE_KEY),
            // Find People reads the CleverTap ID from its own attribute, never from a key.
            include: Some(&[keys::events::ACTION, keys::events::CLEVERTAP_ID]),
        }],
        // The publisher puts Partner Sync events and feed notices on the bus from here.
        stream: true,
        // Feed notices (erasures, cleared segments) expire once the stream has carried them.
        ttl_attribute: Some(keys::events::EXPIRES_AT),
    },
];

/// The definitions of every table, in a stable order.
pub fn table_defs() -> &'static [TableDef] {
    &DEFS
}

pub fn table_def(table: Table) -> &'static TableDef {
    DEFS.iter()
        .find(|d| d.table == table)
        .expect("every Table has a definition")
}

#[derive(Debug, thiserror::Error)]
#[error("creating table {table}: {message}")]
pub struct CreateTablesError {
    pub table: String,
    pub message: String,
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("name and type are set")
}

fn key_schema(pk: &str, sk: Option<&str>) -> Vec<KeySchemaElement> {
    let mut out = vec![key(pk, KeyType::Hash)];
    out.extend(sk.map(|s| key(s, KeyType::Range)));
    out
}

/// Creates one region's tables (on-demand billing). Tables that already exist are left alone,
/// so this is safe to run again.
pub async fn create_tables(
    client: &Client,
    names: &TableNames,
    region: Region,
) -> Result<(), CreateTablesError> {
    for def in table_defs() {
        let name = names.name(region, def.table);
        let err = |message: String| CreateTablesError {
            table: name.clone(),
            message,
        };
        let mut req = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(def.partition_key, def.sort_key)));
        for attr in def.key_attributes() {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("name and type are set"),
            );
        }
        for index in def.indexes {
            let projection = match index.include {
                None => Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
                Some(attrs) => Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(attrs.iter().map(|a| a.to_string()).collect()))
                    .build(),
            };
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(key_schema(index.partition_key, index.sort_key)))
                    .projection(projection)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            );
        }
        if def.stream {
            req = req.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(|e| err(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => continue,
            Err(e) => {
                return Err(err(
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()
                ));
            }
        }
        if let Some(ttl) = def.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(ttl)
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| err(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()))?;
        }
    }
    Ok(())
}

/// Creates the tables of every region.
pub async fn create_all_tables(
    client: &Client,
    names: &TableNames,
) -> Result<(), CreateTablesError> {
    for region in Region::ALL {
        create_tables(client, names, region).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prefix_region_table() {
        let n = TableNames::new("ctmp");
        assert_eq!(n.name(Region::Eu1, Table::Inbox), "ctmp-eu1-inbox");
        assert_eq!(n.name(Region::Mec1, Table::Events), "ctmp-mec1-events");
    }

    #[test]
    fn names_parse_back() {
        let n = TableNames::new("my-prefix");
        let name = n.name(Region::Aps3, Table::Inbox);
        assert_eq!(n.parse(&name), Some((Region::Aps3, Table::Inbox)));
        let arn = format!(
            "arn:aws:dynamodb:ddblocal:000000000000:table/{name}/stream/2026-01-01T00:00:00.000"
        );
        assert_eq!(n.parse_arn(&arn), Some((Region::Aps3, Table::Inbox)));
        assert_eq!(n.parse("other-eu1-inbox"), None);
        assert_eq!(n.parse("my-prefix-xx1-inbox"), None);
    }

    #[test]
    fn every_table_has_one_definition_and_unique_key_attributes() {
        for t in Table::ALL {
            assert_eq!(table_defs().iter().filter(|d| d.table == t).count(), 1);
        }
        let inbox = table_def(Table::Inbox);
        assert_eq!(
            inbox.key_attributes(),
            vec!["pk", "sk", "received_shard", "received_key"]
        );
    }
}
