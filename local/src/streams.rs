//! DynamoDB streams as Lambda's event source mappings read them: a poller per table from its
//! start, Lambda's record shape, its filters, lanes per partition key, and redelivery of failed
//! records.

use std::collections::{HashMap, VecDeque};

use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use serde_json::{Map, Value, json};

pub fn streams_client(endpoint: &str) -> StreamsClient {
    StreamsClient::new(&shared::sdk::local_sdk_config(endpoint))
}

/// DynamoDB JSON, as Lambda puts it into stream events (`{"S": …}`, `{"B": base64}`, …).
pub fn attribute_json(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() })
        }
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": item_json(m) }),
        _ => Value::Null,
    }
}

pub fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// One stream record in the JSON shape of a Lambda DynamoDB event record.
pub fn record_json(r: &Record, arn: &str) -> Value {
    let d = r.dynamodb();
    let mut ddb = Map::new();
    if let Some(d) = d {
        if let Some(t) = d.approximate_creation_date_time() {
            ddb.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
        }
        if let Some(k) = d.keys() {
            ddb.insert("Keys".into(), item_json(k));
        }
        if let Some(i) = d.new_image() {
            ddb.insert("NewImage".into(), item_json(i));
        }
        if let Some(i) = d.old_image() {
            ddb.insert("OldImage".into(), item_json(i));
        }
        ddb.insert("SequenceNumber".into(), json!(d.sequence_number()));
        ddb.insert("SizeBytes".into(), json!(d.size_bytes()));
        if let Some(v) = d.stream_view_type() {
            ddb.insert("StreamViewType".into(), json!(v.as_str()));
        }
    }
    json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|e| e.as_str()),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region(),
        "dynamodb": Value::Object(ddb),
        "eventSourceARN": arn,
    })
}

/// Lambda event filtering, for the subset our patterns use: every key of the pattern must be
/// present, objects nest, and an array lists the accepted values; `{"exists": false}` at a leaf
/// accepts a value that is absent (and nothing else), `{"exists": true}` any present one.
pub fn matches_filter(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Object(p), Value::Object(v)) => p.iter().all(|(k, pv)| match v.get(k) {
            Some(vv) => matches_filter(pv, vv),
            None => accepts_absent(pv),
        }),
        (Value::Array(options), v) => options
            .iter()
            .any(|o| o == v || *o == json!({"exists": true})),
        _ => false,
    }
}

/// Whether a pattern accepts a value that is not there: `{"exists": false}` at its leaf.
fn accepts_absent(pattern: &Value) -> bool {
    match pattern {
        Value::Object(p) => p.values().all(accepts_absent),
        Value::Array(options) => options.contains(&json!({"exists": false})),
        _ => false,
    }
}

/// Wraps records into the Lambda DynamoDB event type the handlers take.
pub fn to_event(records: Vec<Value>) -> aws_lambda_events::event::dynamodb::Event {
    serde_json::from_value(json!({ "Records": records })).expect("records have the Lambda shape")
}

/// Follows one table's stream from its start, like an event source mapping with TRIM_HORIZON.
pub struct StreamPoller {
    client: StreamsClient,
    arn: String,
    iterators: HashMap<String, Option<String>>,
    last_sequence: HashMap<String, String>,
    /// Records per GetRecords call.
    page_limit: i32,
    /// The stream's shards as last described, and when: DescribeStream is described again at
    /// most every [`DESCRIBE_EVERY`] (on DynamoDB Local it reads the whole stream, serialized
    /// with every other request: polled every few milliseconds, it starves the writers).
    shards: Vec<String>,
    described_at: Option<std::time::Instant>,
}

/// How often a poller looks for new shards (Lambda discovers them on its own cadence too).
const DESCRIBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl StreamPoller {
    pub fn new(client: StreamsClient, stream_arn: String) -> Self {
        Self {
            client,
            arn: stream_arn,
            iterators: HashMap::new(),
            last_sequence: HashMap::new(),
            // Inbox records carry payloads of up to ~200 KB: keep pages well below what
            // DynamoDB Local answers in one response.
            page_limit: 100,
            shards: Vec::new(),
            described_at: None,
        }
    }

    /// Reads pages of up to `limit` records (at most 1,000): for streams of small items.
    pub fn with_page_limit(mut self, limit: i32) -> Self {
        self.page_limit = limit.clamp(1, 1_000);
        self
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// An iterator just after the last record seen on a shard, or at its start.
    async fn iterator(&self, shard: &str) -> Result<Option<String>, String> {
        let mut req = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        req = match self.last_sequence.get(shard) {
            Some(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let it = req
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string())?;
        Ok(it.shard_iterator().map(str::to_owned))
    }

    /// Everything new on the stream since the last poll, in order per shard.
    pub async fn poll(&mut self) -> Result<Vec<Value>, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let stale = (self.described_at).is_none_or(|t| t.elapsed() >= DESCRIBE_EVERY);
        if stale || self.shards.is_empty() {
            let desc = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .send()
                .await
                .map_err(|e| err(&aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?;
            let mut shards: Vec<String> = desc
                .stream_description()
                .map(|d| {
                    d.shards()
                        .iter()
                        .filter_map(|s| s.shard_id().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            self.shards = shards;
            self.described_at = Some(std::time::Instant::now());
        }
        let mut out = Vec::new();
        for shard in self.shards.clone() {
            if !self.iterators.contains_key(&shard) {
                let it = self.iterator(&shard).await?;
                self.iterators.insert(shard.clone(), it);
            }
            let mut renewed = 0;
            while let Some(Some(iterator)) = self.iterators.get(&shard).cloned() {
                let page = match self
                    .client
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(self.page_limit)
                    .send()
                    .await
                {
                    Ok(p) => p,
                    // DynamoDB Local invalidates iterators taken on an empty shard once records
                    // arrive, and iterators expire: take a new one after the last record seen.
                    Err(e)
                        if e.as_service_error().is_some_and(|se| {
                            se.is_trimmed_data_access_exception()
                                || se.is_expired_iterator_exception()
                        }) =>
                    {
                        renewed += 1;
                        let it = self.iterator(&shard).await?;
                        self.iterators.insert(shard.clone(), it);
                        if renewed > 2 {
                            break; // try again on the next poll
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(err(&aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)));
                    }
                };
                let n = page.records().len();
                if let Some(last) = page
                    .records()
                    .last()
                    .and_then(|r| r.dynamodb())
                    .and_then(|d| d.sequence_number())
                {
                    self.last_sequence.insert(shard.clone(), last.to_owned());
                }
                out.extend(page.records().iter().map(|r| record_json(r, &self.arn)));
                self.iterators
                    .insert(shard.clone(), page.next_shard_iterator().map(str::to_owned));
                if n == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Concurrent batches per stream mapping when `LANES` is not set: Lambda's
/// `ParallelizationFactor` in miniature (the deployed inbox mappings use 10).
pub const DEFAULT_LANES: usize = 4;

/// `LANES` from the environment (at least 1), or [`DEFAULT_LANES`].
pub fn lanes_from_env() -> usize {
    std::env::var("LANES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(DEFAULT_LANES)
}

/// The partition key of a stream record, as Lambda sees it: records with the same key stay in
/// order on one lane; records with different keys may run in parallel.
pub fn record_partition_key(record: &Value) -> String {
    let keys = &record["dynamodb"]["Keys"];
    match keys.get("pk") {
        Some(pk) => pk.to_string(),
        None => keys.to_string(),
    }
}

/// The lane of a partition key among `lanes` (a stable hash, as Lambda's per-key assignment).
pub fn lane_of(partition_key: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    partition_key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// An event source mapping: a filter, a batch size, lanes (batches that may run at once, records
/// of one partition key always on the same lane, in order), and redelivery of failed records.
pub struct Mapping {
    pub poller: StreamPoller,
    filter: Value,
    batch_size: usize,
    lanes: Vec<VecDeque<Value>>,
}

impl Mapping {
    pub fn new(poller: StreamPoller, filter: &str, batch_size: usize, lanes: usize) -> Self {
        Self {
            poller,
            filter: serde_json::from_str(filter).expect("filters are valid JSON"),
            batch_size,
            lanes: (0..lanes.max(1)).map(|_| VecDeque::new()).collect(),
        }
    }

    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// Changes the number of lanes, keeping the stream position and every queued record (each
    /// moves to its key's new lane, in order).
    pub fn set_lanes(&mut self, lanes: usize) {
        let queued: Vec<Value> = self.lanes.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.lanes = (0..lanes.max(1)).map(|_| VecDeque::new()).collect();
        for r in queued {
            let lane = lane_of(&record_partition_key(&r), self.lanes.len());
            self.lanes[lane].push_back(r);
        }
    }

    /// Polls the stream and queues the records that pass the filter, each on its key's lane.
    pub async fn fetch(&mut self) -> Result<usize, String> {
        let routed = self.poll_routed(|_| {}).await?;
        let queued = routed.len();
        for (lane, r) in routed {
            self.lanes[lane].push_back(r);
        }
        Ok(queued)
    }

    /// Polls the stream and answers the records that pass the filter, each with its key's lane,
    /// without queueing them (for a runner that holds the lanes elsewhere meanwhile).
    pub async fn poll_routed(
        &mut self,
        mut inspect: impl FnMut(&Value),
    ) -> Result<Vec<(usize, Value)>, String> {
        let records = self.poller.poll().await?;
        let lanes = self.lanes.len();
        Ok(records
            .into_iter()
            .filter(|r| matches_filter(&self.filter, r))
            .map(|r| {
                inspect(&r);
                (lane_of(&record_partition_key(&r), lanes), r)
            })
            .collect())
    }

    pub fn pending(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    /// The next batch of one lane, as Lambda would invoke with it.
    pub fn next_batch_of(&mut self, lane: usize) -> Option<Vec<Value>> {
        let queue = &mut self.lanes[lane];
        if queue.is_empty() {
            return None;
        }
        let n = self.batch_size.min(queue.len());
        Some(queue.drain(..n).collect())
    }

    /// The next batch of the first lane that has one.
    pub fn next_batch(&mut self) -> Option<Vec<Value>> {
        (0..self.lanes.len()).find_map(|lane| self.next_batch_of(lane))
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Takes every lane's queue out, to run them at once; give them back with [`Self::restore_lanes`].
    pub fn take_lanes(&mut self) -> Vec<VecDeque<Value>> {
        let n = self.lanes.len();
        std::mem::replace(&mut self.lanes, (0..n).map(|_| VecDeque::new()).collect())
    }

    /// Puts lanes taken with [`Self::take_lanes`] back in front of anything queued meanwhile.
    pub fn restore_lanes(&mut self, lanes: Vec<VecDeque<Value>>) {
        for (lane, mut queue) in lanes.into_iter().enumerate() {
            queue.extend(self.lanes[lane].drain(..));
            self.lanes[lane] = queue;
        }
    }

    /// Puts the failed records of a batch back at the front of their lane, as
    /// `ReportBatchItemFailures` does.
    pub fn redeliver(&mut self, batch: Vec<Value>, failed_sequence_numbers: &[String]) {
        let lanes = self.lanes.len();
        for r in requeue_failed(batch, failed_sequence_numbers)
            .into_iter()
            .rev()
        {
            self.lanes[lane_of(&record_partition_key(&r), lanes)].push_front(r);
        }
    }
}

/// The records of `batch` a handler's response reports failed (`batchItemFailures`), in batch
/// order; none if it reports none.
pub fn failed_records(
    batch: Vec<Value>,
    response: &aws_lambda_events::event::streams::DynamoDbEventResponse,
) -> Vec<Value> {
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect();
    if failed.is_empty() {
        Vec::new()
    } else {
        requeue_failed(batch, &failed)
    }
}

/// The records of a batch that failed, in batch order.
pub fn requeue_failed(batch: Vec<Value>, failed_sequence_numbers: &[String]) -> Vec<Value> {
    batch
        .into_iter()
        .filter(|r| {
            let seq = r["dynamodb"]["SequenceNumber"].as_str().unwrap_or_default();
            failed_sequence_numbers.iter().any(|f| f == seq)
        })
        .collect()
}

/// The stream ARN of one of our tables.
pub async fn stream_arn(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<String, String> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| format!("table {table} has no stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_lambda() {
        let f: Value =
            serde_json::from_str(shared::stages::pipeline::RESOLVE_INBOX_FILTER).unwrap();
        let insert = json!({"eventName":"INSERT","dynamodb":{"NewImage":{"status":{"S":"received"},"x":{"N":"1"}}}});
        let modify =
            json!({"eventName":"MODIFY","dynamodb":{"NewImage":{"status":{"S":"received"}}}});
        let other =
            json!({"eventName":"INSERT","dynamodb":{"NewImage":{"status":{"S":"resolved"}}}});
        assert!(matches_filter(&f, &insert));
        assert!(!matches_filter(&f, &modify));
        assert!(!matches_filter(&f, &other));
        assert!(!matches_filter(&f, &json!({"eventName":"INSERT"})));
        // A bulk row is the bulk worker's: neither inbox mapping takes it.
        let bulk = json!({"eventName":"INSERT","dynamodb":{"NewImage":{"status":{"S":"received"},"way":{"S":"bulk"}}}});
        assert!(!matches_filter(&f, &bulk));
        let m: Value =
            serde_json::from_str(shared::stages::pipeline::MATERIALIZE_INBOX_FILTER).unwrap();
        let resolved =
            json!({"eventName":"MODIFY","dynamodb":{"NewImage":{"status":{"S":"resolved"}}}});
        let bulk_resolved = json!({"eventName":"MODIFY","dynamodb":{"NewImage":{"status":{"S":"resolved"},"way":{"S":"bulk"}}}});
        assert!(matches_filter(&m, &resolved));
        assert!(!matches_filter(&m, &bulk_resolved));
    }

    fn record(pk: &str, seq: u32) -> Value {
        json!({"eventName":"INSERT","dynamodb":{"Keys":{"pk":{"S":pk},"sk":{"S":"x"}},
               "SequenceNumber":seq.to_string(),"NewImage":{"status":{"S":"received"}}}})
    }

    #[test]
    fn one_partition_key_keeps_one_lane_and_its_order() {
        let keys: Vec<String> = (0..64).map(|i| format!("p#{i:02x}")).collect();
        let lanes: std::collections::HashSet<usize> = keys
            .iter()
            .map(|k| lane_of(&record_partition_key(&record(k, 0)), 8))
            .collect();
        assert!(lanes.len() > 4, "64 keys spread over most of 8 lanes");
        for k in &keys {
            let r = record(k, 0);
            assert_eq!(
                lane_of(&record_partition_key(&r), 8),
                lane_of(&record_partition_key(&r), 8)
            );
        }
    }

    #[test]
    fn redelivered_records_go_back_to_the_front_of_their_lane() {
        let streams = streams_client("http://127.0.0.1:9");
        let mut m = Mapping::new(
            StreamPoller::new(streams, "arn".into()),
            shared::stages::pipeline::RESOLVE_INBOX_FILTER,
            2,
            4,
        );
        let lane = lane_of(&record_partition_key(&record("a", 0)), 4);
        for seq in 0..3 {
            m.lanes[lane].push_back(record("a", seq));
        }
        let batch = m.next_batch_of(lane).unwrap();
        assert_eq!(batch.len(), 2);
        m.redeliver(batch, &["1".to_owned()]);
        let seqs: Vec<&str> = m.lanes[lane]
            .iter()
            .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap())
            .collect();
        assert_eq!(
            seqs,
            ["1", "2"],
            "the failed record first, then the rest in order"
        );
        assert_eq!(m.pending(), 2);
    }
}
