//! The key meter: charges every DynamoDB data call the bench makes to the partition keys it
//! lands on (base tables and every GSI), priced by `heat`. It sits in the metered HTTP client
//! (`meter`), so product code is measured as it runs.
//!
//! Writes need the item before and after to be priced as AWS prices them (the larger of the two,
//! index entries that appear, change or leave), so the meter reads the items a write touches
//! just before and just after it (strongly consistent BatchGetItem, not charged). Under
//! concurrency another writer may slip in between: the price is then that of a neighbouring
//! state, which is fine for finding hot keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{HttpConnector, SharedHttpConnector};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::{Value, json};
use shared::domain::region::Region;
use shared::store::tables::{TableNames, table_defs};

use crate::heat::{
    Charge, HeatMap, HeatReport, IndexSchema, KeyId, Projection, TableSchema, WireItem, item_size,
    price_failed_write, price_point_read, price_query, price_write, query_partition_value,
    read_units, write_units,
};

/// Changes per window for the worst-window figure.
pub const WINDOW_CHANGES: u64 = 10_000;

/// The schemas of one set of tables (by their AWS names) and the heat charged to their keys.
#[derive(Debug)]
pub struct KeyMeter {
    schemas: HashMap<String, TableSchema>,
    /// The events table's name: a new item there is one membership change (a Partner Sync event).
    events_table: String,
    heat: HeatMap,
}

impl KeyMeter {
    /// A meter for the tables `names` names in `region`.
    pub fn new(names: &TableNames, region: Region) -> Self {
        let schemas = table_defs()
            .iter()
            .map(|def| {
                let schema = TableSchema {
                    name: def.table.as_str().to_owned(),
                    partition_key: def.partition_key.to_owned(),
                    sort_key: def.sort_key.map(str::to_owned),
                    indexes: def
                        .indexes
                        .iter()
                        .map(|i| IndexSchema {
                            name: i.name.to_owned(),
                            partition_key: i.partition_key.to_owned(),
                            sort_key: i.sort_key.map(str::to_owned),
                            projection: match i.include {
                                None => Projection::KeysOnly,
                                Some(list) => Projection::Include(
                                    list.iter().map(|a| (*a).to_owned()).collect(),
                                ),
                            },
                        })
                        .collect(),
                };
                (names.name(region, def.table), schema)
            })
            .collect();
        Self {
            schemas,
            events_table: names.name(region, shared::store::tables::Table::Events),
            heat: HeatMap::new(WINDOW_CHANGES),
        }
    }

    pub fn report(&self) -> HeatReport {
        self.heat.report()
    }

    fn schema(&self, table: &str) -> Option<&TableSchema> {
        self.schemas.get(table)
    }

    fn charge(&mut self, charges: impl IntoIterator<Item = Charge>) {
        for c in charges {
            self.heat.charge(&c);
        }
    }
}

/// A shared, switchable key meter: `None` until the bench turns it on for a phase.
pub type SharedKeyMeter = Arc<Mutex<Option<KeyMeter>>>;

/// One item a write touches: its table and key, and what the write puts there (a Put's item).
#[derive(Debug, Clone)]
struct Touched {
    table: String,
    key: WireItem,
    put: Option<WireItem>,
    kind: WriteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Put,
    Update,
    Delete,
    ConditionCheck,
}

/// The key attributes of `item` by the table's schema.
fn key_of(schema: &TableSchema, item: &WireItem) -> WireItem {
    let mut key = WireItem::new();
    for attr in std::iter::once(&schema.partition_key).chain(schema.sort_key.as_ref()) {
        if let Some(v) = item.get(attr) {
            key.insert(attr.clone(), v.clone());
        }
    }
    key
}

fn object(v: &Value) -> Option<&WireItem> {
    v.as_object()
}

/// What a write request touches, in the order of its actions.
fn touched_by(op: &str, body: &Value, meter: &KeyMeter) -> Vec<Touched> {
    let one = |table: &str, action: &Value, kind: WriteKind| -> Option<Touched> {
        let schema = meter.schema(table)?;
        let (key, put) = match kind {
            WriteKind::Put => {
                let item = object(&action["Item"])?.clone();
                (key_of(schema, &item), Some(item))
            }
            _ => (object(&action["Key"])?.clone(), None),
        };
        Some(Touched {
            table: table.to_owned(),
            key,
            put,
            kind,
        })
    };
    let table = body["TableName"].as_str().unwrap_or_default();
    match op {
        "PutItem" => one(table, body, WriteKind::Put).into_iter().collect(),
        "UpdateItem" => one(table, body, WriteKind::Update).into_iter().collect(),
        "DeleteItem" => one(table, body, WriteKind::Delete).into_iter().collect(),
        "BatchWriteItem" => object(&body["RequestItems"])
            .into_iter()
            .flatten()
            .flat_map(|(table, requests)| {
                requests
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        if r.get("PutRequest").is_some() {
                            one(table, &r["PutRequest"], WriteKind::Put)
                        } else {
                            one(table, &r["DeleteRequest"], WriteKind::Delete)
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|action| {
                let (name, kind) = [
                    ("Put", WriteKind::Put),
                    ("Update", WriteKind::Update),
                    ("Delete", WriteKind::Delete),
                    ("ConditionCheck", WriteKind::ConditionCheck),
                ]
                .into_iter()
                .find(|(name, _)| action.get(*name).is_some())?;
                let inner = &action[name];
                one(inner["TableName"].as_str()?, inner, kind)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The HTTP side: raw DynamoDB JSON calls through the unmetered connector.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub inner: SharedHttpConnector,
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Raw {
    pub(crate) fn of(inner: &SharedHttpConnector, request: &HttpRequest) -> Self {
        Self {
            inner: inner.clone(),
            uri: request.uri().to_owned(),
            // Only what DynamoDB Local needs: the call's own signature headers would not match
            // another body (Local does not check them, but they must not describe another body).
            headers: request
                .headers()
                .iter()
                .filter(|(k, _)| {
                    k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("x-amz-date")
                })
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .chain([(
                    "content-type".to_owned(),
                    "application/x-amz-json-1.0".to_owned(),
                )])
                .collect(),
        }
    }

    async fn call(&self, op: &str, body: &Value) -> Option<Value> {
        let text = body.to_string();
        let mut request = HttpRequest::new(SdkBody::from(text.clone()));
        request.set_uri(self.uri.as_str()).ok()?;
        request.set_method("POST").ok()?;
        for (k, v) in &self.headers {
            if k.eq_ignore_ascii_case("x-amz-target") {
                continue;
            }
            request.headers_mut().insert(k.clone(), v.clone());
        }
        request
            .headers_mut()
            .insert("x-amz-target", format!("DynamoDB_20120810.{op}"));
        request
            .headers_mut()
            .insert("content-length", text.len().to_string());
        let response = self.inner.call(request).await.ok()?;
        let bytes = ByteStream::new(response.into_body())
            .collect()
            .await
            .ok()?
            .into_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    /// The items at these keys now (strongly consistent), by index in `touched`.
    async fn images(&self, touched: &[Touched], meter: &SharedKeyMeter) -> Vec<Option<WireItem>> {
        let mut by_table: HashMap<String, Vec<WireItem>> = HashMap::new();
        for t in touched {
            let keys = by_table.entry(t.table.clone()).or_default();
            if !keys.contains(&t.key) {
                keys.push(t.key.clone());
            }
        }
        let requests: Vec<(String, Vec<WireItem>)> = by_table
            .into_iter()
            .flat_map(|(table, keys)| {
                keys.chunks(100)
                    .map(|c| (table.clone(), c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut found: Vec<(String, WireItem)> = Vec::new();
        for (table, keys) in requests {
            let body = json!({"RequestItems": {&table: {"Keys": keys, "ConsistentRead": true}}});
            if let Some(answer) = self.call("BatchGetItem", &body).await {
                for item in answer["Responses"][&table].as_array().into_iter().flatten() {
                    if let Some(item) = object(item) {
                        found.push((table.clone(), item.clone()));
                    }
                }
            }
        }
        let guard = meter.lock().expect("key meter lock");
        let Some(m) = guard.as_ref() else {
            return vec![None; touched.len()];
        };
        touched
            .iter()
            .map(|t| {
                let schema = m.schema(&t.table)?;
                found
                    .iter()
                    .find(|(table, item)| *table == t.table && key_of(schema, item) == t.key)
                    .map(|(_, item)| item.clone())
            })
            .collect()
    }
}

/// What to do once the call answered: the write's touched items and their images before it.
pub(crate) struct Pending {
    op: String,
    body: Value,
    touched: Vec<Touched>,
    before: Vec<Option<WireItem>>,
}

/// Before a data call: reads what a write will touch. `None` when the meter is off or the call
/// is not one it prices.
pub(crate) async fn before_call(
    meter: &SharedKeyMeter,
    raw: &Raw,
    op: &str,
    body: &Value,
) -> Option<Pending> {
    let touched = {
        let guard = meter.lock().expect("key meter lock");
        touched_by(op, body, guard.as_ref()?)
    };
    let before = if touched.is_empty() {
        Vec::new()
    } else {
        raw.images(&touched, meter).await
    };
    Some(Pending {
        op: op.to_owned(),
        body: body.clone(),
        touched,
        before,
    })
}

/// After a data call answered `status` with `answer`: prices it.
pub(crate) async fn after_call(
    meter: &SharedKeyMeter,
    raw: &Raw,
    pending: Pending,
    status: u16,
    answer: &Value,
) {
    let Pending {
        op,
        body,
        touched,
        before,
    } = pending;
    if touched.is_empty() {
        price_read(meter, &op, &body, status, answer);
        return;
    }
    if status != 200 {
        // A single conditional write that failed still costs its item's size; a cancelled
        // transaction is not charged here.
        let failed_condition = answer["__type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ConditionalCheckFailedException"));
        if failed_condition && touched.len() == 1 {
            let mut guard = meter.lock().expect("key meter lock");
            if let Some(m) = guard.as_mut()
                && let Some(schema) = m.schema(&touched[0].table)
            {
                let c = price_failed_write(schema, before[0].as_ref(), &touched[0].key);
                m.charge([c]);
            }
        }
        return;
    }
    let transactional = op == "TransactWriteItems";
    // A Put's item after is the item it put, a Delete's nothing; an Update is read back.
    let updated: Vec<Touched> = touched
        .iter()
        .filter(|t| t.kind == WriteKind::Update)
        .cloned()
        .collect();
    let after_updates = if updated.is_empty() {
        Vec::new()
    } else {
        raw.images(&updated, meter).await
    };
    let mut after_updates = after_updates.into_iter();
    let mut guard = meter.lock().expect("key meter lock");
    let Some(m) = guard.as_mut() else { return };
    let mut changes = 0;
    for (t, old) in touched.iter().zip(before) {
        let Some(schema) = m.schema(&t.table).cloned() else {
            continue;
        };
        let charges = match t.kind {
            WriteKind::Put => {
                if t.table == m.events_table && old.is_none() {
                    changes += 1;
                }
                price_write(&schema, old.as_ref(), t.put.as_ref(), transactional)
            }
            WriteKind::Delete => price_write(&schema, old.as_ref(), None, transactional),
            WriteKind::Update => {
                let new = after_updates.next().flatten();
                price_write(&schema, old.as_ref(), new.as_ref(), transactional)
            }
            WriteKind::ConditionCheck => {
                // Read in the transaction's write path: two units per KB of the item checked.
                let key = crate::heat::partition_value(&schema, None, &t.key).unwrap_or_default();
                let units = write_units(old.as_ref().map(item_size).unwrap_or(0)) * 2.0;
                vec![Charge {
                    key: KeyId {
                        target: schema.name.clone(),
                        key,
                    },
                    wcu: units,
                    rcu: 0.0,
                }]
            }
        };
        m.charge(charges);
    }
    m.heat.add_changes(changes);
}

/// The size of the items a Query or Scan answered.
fn items_size(answer: &Value) -> usize {
    answer["Items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(object)
        .map(item_size)
        .sum()
}

/// Prices a read (GetItem, BatchGetItem, Query, Scan) from its request and answer.
fn price_read(meter: &SharedKeyMeter, op: &str, body: &Value, status: u16, answer: &Value) {
    if status != 200 {
        return;
    }
    let mut guard = meter.lock().expect("key meter lock");
    let Some(m) = guard.as_mut() else { return };
    let consistent = |v: &Value| v["ConsistentRead"].as_bool().unwrap_or(false);
    let mut charges = Vec::new();
    match op {
        "GetItem" => {
            let table = body["TableName"].as_str().unwrap_or_default();
            if let (Some(schema), Some(key)) = (m.schema(table), object(&body["Key"])) {
                charges.push(price_point_read(
                    schema,
                    key,
                    object(&answer["Item"]),
                    consistent(body),
                ));
            }
        }
        "BatchGetItem" => {
            for (table, request) in object(&body["RequestItems"]).into_iter().flatten() {
                let Some(schema) = m.schema(table) else {
                    continue;
                };
                let found: Vec<&WireItem> = answer["Responses"][table]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(object)
                    .collect();
                for key in request["Keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(object)
                {
                    let item = found.iter().find(|i| key_of(schema, i) == *key).copied();
                    charges.push(price_point_read(schema, key, item, consistent(request)));
                }
            }
        }
        "Query" => {
            let table = body["TableName"].as_str().unwrap_or_default();
            let index = body["IndexName"].as_str();
            if let Some(schema) = m.schema(table) {
                let partition = query_partition_value(
                    schema,
                    index,
                    body["KeyConditionExpression"].as_str().unwrap_or_default(),
                    object(&body["ExpressionAttributeNames"]),
                    object(&body["ExpressionAttributeValues"]),
                )
                .unwrap_or_default();
                let bytes = items_size(answer);
                let mut c = price_query(schema, index, &partition, bytes, consistent(body));
                // Items a filter dropped were read too: DynamoDB Local's own count covers them.
                let reported = answer["ConsumedCapacity"]["CapacityUnits"]
                    .as_f64()
                    .unwrap_or(0.0);
                c.rcu = c.rcu.max(reported);
                charges.push(c);
            }
        }
        "Scan" => {
            let table = body["TableName"].as_str().unwrap_or_default();
            if let Some(schema) = m.schema(table) {
                let bytes = items_size(answer);
                charges.push(Charge {
                    key: KeyId {
                        target: schema.name.clone(),
                        key: "<scan>".to_owned(),
                    },
                    wcu: 0.0,
                    rcu: read_units(bytes, consistent(body)),
                });
            }
        }
        _ => {}
    }
    m.charge(charges);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> KeyMeter {
        KeyMeter::new(&TableNames::new("t"), Region::Eu1)
    }

    #[test]
    fn a_transaction_touches_each_action_by_table_schema() {
        let m = meter();
        let body = json!({"TransactItems": [
            {"Put": {"TableName": "t-eu1-memberships", "Item": {"pk": {"S": "p#1#b3"}, "sk": {"S": "c"}, "member": {"BOOL": true}}}},
            {"Update": {"TableName": "t-eu1-segments", "Key": {"pk": {"S": "C#p#1#03"}, "sk": {"S": "shard"}}}},
            {"ConditionCheck": {"TableName": "t-eu1-segments", "Key": {"pk": {"S": "p"}, "sk": {"S": "S#1"}}}},
            {"Put": {"TableName": "elsewhere", "Item": {"pk": {"S": "x"}}}},
        ]});
        let touched = touched_by("TransactWriteItems", &body, &m);
        assert_eq!(touched.len(), 3, "a table of another prefix is not ours");
        assert_eq!(touched[0].kind, WriteKind::Put);
        assert_eq!(
            touched[0].key.len(),
            2,
            "the key is pk and sk, not the whole item"
        );
        assert_eq!(touched[1].kind, WriteKind::Update);
        assert_eq!(touched[2].kind, WriteKind::ConditionCheck);
    }

    #[test]
    fn batch_writes_touch_puts_and_deletes() {
        let m = meter();
        let body = json!({"RequestItems": {"t-eu1-events": [
            {"PutRequest": {"Item": {"pk": {"S": "a"}, "sk": {"S": "1"}}}},
            {"DeleteRequest": {"Key": {"pk": {"S": "b"}, "sk": {"S": "2"}}}},
        ]}});
        let touched = touched_by("BatchWriteItem", &body, &m);
        let kinds: Vec<WriteKind> = touched.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, [WriteKind::Put, WriteKind::Delete]);
    }

    #[test]
    fn reads_are_charged_per_key_and_absent_items_count() {
        let shared: SharedKeyMeter = Arc::new(Mutex::new(Some(meter())));
        let body = json!({"RequestItems": {"t-eu1-memberships": {"ConsistentRead": true, "Keys": [
            {"pk": {"S": "p#1#b0"}, "sk": {"S": "a"}},
            {"pk": {"S": "p#1#b1"}, "sk": {"S": "b"}},
        ]}}});
        let answer = json!({"Responses": {"t-eu1-memberships": [
            {"pk": {"S": "p#1#b0"}, "sk": {"S": "a"}, "member": {"BOOL": true}}
        ]}});
        price_read(&shared, "BatchGetItem", &body, 200, &answer);
        let guard = shared.lock().unwrap();
        let report = guard.as_ref().unwrap().report();
        assert_eq!(report.rcu, 2.0, "the absent item is charged too");
        assert_eq!(report.targets[0].keys, 2, "one key each");
    }
}
