//! Raw reads and writes of the tables, for tests: what the product's store deliberately does not
//! offer — a segment's storage layout, a segment as it was stored before buckets, an inbox row
//! put back to an earlier status, and every stored item as text (to prove nothing of a person is
//! left anywhere, under any attribute). Never on a product path.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use shared::domain::region::Region;
use shared::store::keys;
use shared::store::tables::{Table, TableNames};

use crate::scan_all;

fn text(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)
        .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
        .cloned()
}

/// The partition keys the membership rows of one audience are on (any project of the table).
pub async fn row_partition_keys(
    client: &Client,
    memberships: &str,
    audience_id: i64,
) -> BTreeSet<String> {
    let aud = audience_id.to_string();
    scan_all(client, memberships)
        .await
        .expect("scan")
        .iter()
        .filter(|i| text(i, "audience_id").as_deref() == Some(aud.as_str()))
        .filter_map(|i| text(i, keys::PK))
        .collect()
}

/// Makes a segment look as it was stored before buckets existed: no bucket count recorded.
pub async fn forget_segment_buckets(
    client: &Client,
    segments: &str,
    project_id: &str,
    audience_id: i64,
) {
    client
        .update_item()
        .table_name(segments)
        .key(keys::PK, AttributeValue::S(keys::segments::pk(project_id)))
        .key(
            keys::SK,
            AttributeValue::S(keys::segments::segment_sk(audience_id)),
        )
        .update_expression("REMOVE buckets")
        .send()
        .await
        .expect("update the segment");
}

/// Puts every row of an inbox table back to `received` (as if the resolve that moved it on had
/// failed before it could).
pub async fn mark_inbox_received(client: &Client, inbox: &str) {
    for row in scan_all(client, inbox).await.expect("scan") {
        client
            .update_item()
            .table_name(inbox)
            .key(keys::PK, row[keys::PK].clone())
            .key(keys::SK, row[keys::SK].clone())
            .update_expression("SET #s = :r")
            .expression_attribute_names("#s", keys::inbox::STATUS)
            .expression_attribute_values(":r", AttributeValue::S("received".into()))
            .send()
            .await
            .expect("update the row");
    }
}

/// Damages a project item so it no longer reads back (its passcodes become a plain string), as
/// a bad manual edit would.
pub async fn damage_project(client: &Client, projects: &str, project_id: &str) {
    client
        .update_item()
        .table_name(projects)
        .key(
            keys::projects::PROJECT_ID,
            AttributeValue::S(project_id.to_owned()),
        )
        .update_expression("SET passcodes = :bad")
        .expression_attribute_values(":bad", AttributeValue::S("not a list".into()))
        .send()
        .await
        .expect("update the project");
}

/// Every item of every table of a region, as text (`table: item`), in a stable order: equal
/// dumps mean nothing was written; a value absent from every line is stored nowhere.
pub async fn dump(client: &Client, names: &TableNames, region: Region) -> Vec<String> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let mut items: Vec<String> = scan_all(client, &names.name(region, table))
            .await
            .expect("scan")
            .into_iter()
            .map(|item| format!("{}: {}", table.as_str(), render(&AttributeValue::M(item))))
            .collect();
        items.sort();
        out.extend(items);
    }
    out
}

/// An attribute value as text, maps and sets in a stable order.
fn render(value: &AttributeValue) -> String {
    let sorted = |mut parts: Vec<String>| {
        parts.sort();
        parts.join(", ")
    };
    match value {
        AttributeValue::M(m) => format!(
            "{{{}}}",
            sorted(
                m.iter()
                    .map(|(k, v)| format!("{k:?}: {}", render(v)))
                    .collect()
            )
        ),
        AttributeValue::L(l) => {
            format!("[{}]", l.iter().map(render).collect::<Vec<_>>().join(", "))
        }
        AttributeValue::Ss(s) => format!("SS({})", sorted(s.clone())),
        AttributeValue::Ns(s) => format!("NS({})", sorted(s.clone())),
        other => format!("{other:?}"),
    }
}
