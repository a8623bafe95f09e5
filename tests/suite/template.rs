//! The deployment artifacts against the Rust definitions they deploy, without any database:
//! `template.yaml` (tables as `shared::store::tables`, stream filters as `shared::stages::pipeline`, regions,
//! functions, least-privilege cross-region access), `samconfig.toml` and the scripts' region lists,
//! and the sample events in `events/` that `sam local invoke` takes.
//!
//! When a stream event's binary attribute is out of date (say the stored chunk format changed),
//! the failure prints the value to paste into the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use serde_json::{Value, json};
use shared::domain::batch::{StoredProfile, build_chunks, decode_chunk};
use shared::domain::changes::{ChangeAction, MembershipChange, decode_changes, encode_changes};
use shared::domain::protocol::{MembershipRequest, ParsedRequest, Request, SubscriptionAction};
use shared::domain::region::Region;
use shared::stages::pipeline::{
    MATERIALIZE_INBOX_FILTER, MATERIALIZE_SEGMENTS_FILTER, PUBLISH_BATCH_SIZE,
    PUBLISH_BULK_EVENTS_FILTER, PUBLISH_EVENTS_FILTER, RESOLVE_INBOX_FILTER, STREAM_BATCH_SIZE,
    STREAM_PARALLELIZATION_FACTOR,
};
use shared::store::tables::{Table, TableDef, TableNames, table_def, table_defs};

const BINARIES: [&str; 7] = [
    "authorize",
    "erase",
    "resolve",
    "materialize",
    "bulk",
    "query",
    "publish",
];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

// -------------------------------------------------------------------------------------------------
// template.yaml as JSON, short-form tags expanded to their long form
// -------------------------------------------------------------------------------------------------

/// `!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`, `!Sub …` →
/// `{"Fn::Sub": …}` and so on, so the template compares like the JSON CloudFormation reads.
fn to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => json!(i),
            (None, Some(f)) => json!(f),
            (None, None) => panic!("unrepresentable number {n}"),
        },
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Y::String(s) => s,
                        other => panic!("non-string mapping key {other:?}"),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!').to_owned();
            let inner = to_json(t.value);
            match name.as_str() {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => {
                    let parts = match inner {
                        Value::String(s) => {
                            let (res, attr) = s
                                .split_once('.')
                                .unwrap_or_else(|| panic!("!GetAtt {s} has no attribute"));
                            json!([res, attr])
                        }
                        other => other,
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                _ => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

fn template() -> Value {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&read("template.yaml")).expect("template.yaml is YAML");
    to_json(yaml)
}

fn resources<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    t["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

fn the_one<'a>(found: Vec<(&'a str, &'a Value)>, what: &str) -> (&'a str, &'a Value) {
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {what}, found {:?}",
        found.iter().map(|(id, _)| id).collect::<Vec<_>>()
    );
    found[0]
}

fn table_name_sub(table: Table) -> Value {
    json!({ "Fn::Sub": format!("${{TablePrefix}}-${{CtRegion}}-{table}") })
}

/// The logical id of the table resource standing for `table`.
fn table_id(t: &Value, table: Table) -> &str {
    let found = resources(t, "AWS::DynamoDB::Table")
        .into_iter()
        .filter(|(_, r)| r["Properties"]["TableName"] == table_name_sub(table))
        .collect();
    the_one(
        found,
        &format!("table resource named ${{TablePrefix}}-${{CtRegion}}-{table}"),
    )
    .0
}

/// The logical id of the function built from `binary`.
fn function_id<'a>(t: &'a Value, binary: &str) -> &'a str {
    let found = resources(t, "AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"] == binary)
        .collect();
    the_one(found, &format!("function with binary {binary}")).0
}

/// The stream mappings' dead-letter queue.
fn the_queue(t: &Value) -> &str {
    let found = resources(t, "AWS::SQS::Queue")
        .into_iter()
        .filter(|(_, q)| {
            q["Properties"]["QueueName"] == json!({"Fn::Sub": "${AWS::StackName}-pipeline-dlq"})
        })
        .collect();
    the_one(found, "SQS queue named <stack>-pipeline-dlq").0
}

fn key_schema(pk: &str, sk: Option<&str>) -> Value {
    let mut keys = vec![json!({"AttributeName": pk, "KeyType": "HASH"})];
    keys.extend(sk.map(|s| json!({"AttributeName": s, "KeyType": "RANGE"})));
    Value::Array(keys)
}

fn string_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, found {v}"))
        .iter()
        .map(|s| s.as_str().expect("strings").to_owned())
        .collect()
}

fn one_or_many(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

// -------------------------------------------------------------------------------------------------
// Tables
// -------------------------------------------------------------------------------------------------

fn check_table(t: &Value, def: &TableDef) {
    let id = table_id(t, def.table);
    let r = &t["Resources"][id];
    let p = &r["Properties"];
    let ctx = format!("table {} ({id})", def.table);

    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST", "{ctx}: on-demand");
    // Every table written during a first sync can be pre-warmed (off by default).
    if def.table != shared::store::tables::Table::Projects {
        assert_eq!(
            p["WarmThroughput"],
            warm_throughput(),
            "{ctx}: warm throughput"
        );
    }
    assert_eq!(
        p["KeySchema"],
        key_schema(def.partition_key, def.sort_key),
        "{ctx}: key schema"
    );

    let attrs = p["AttributeDefinitions"].as_array().expect("attributes");
    let mut defined = BTreeMap::new();
    for a in attrs {
        let name = a["AttributeName"].as_str().expect("name").to_owned();
        assert_eq!(a["AttributeType"], "S", "{ctx}: {name} is a string key");
        assert!(
            defined.insert(name.clone(), ()).is_none(),
            "{ctx}: {name} defined twice"
        );
    }
    let wanted: BTreeSet<String> = def
        .key_attributes()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        defined.into_keys().collect::<BTreeSet<_>>(),
        wanted,
        "{ctx}: attribute definitions are exactly the key attributes"
    );

    if def.indexes.is_empty() {
        assert!(p.get("GlobalSecondaryIndexes").is_none(), "{ctx}: no GSIs");
    } else {
        let gsis = p["GlobalSecondaryIndexes"].as_array().expect("GSIs");
        assert_eq!(gsis.len(), def.indexes.len(), "{ctx}: number of GSIs");
        for index in def.indexes {
            let found: Vec<&Value> = gsis
                .iter()
                .filter(|g| g["IndexName"] == index.name)
                .collect();
            assert_eq!(found.len(), 1, "{ctx}: one GSI named {}", index.name);
            let g = found[0];
            let ictx = format!("{ctx}, index {}", index.name);
            assert_eq!(
                g["KeySchema"],
                key_schema(index.partition_key, index.sort_key),
                "{ictx}: key schema"
            );
            let projection = &g["Projection"];
            match index.include {
                None => assert_eq!(
                    projection,
                    &json!({"ProjectionType": "KEYS_ONLY"}),
                    "{ictx}: keys only"
                ),
                Some(attrs) => {
                    assert_eq!(projection["ProjectionType"], "INCLUDE", "{ictx}");
                    let included = projection["NonKeyAttributes"].as_array().expect("list");
                    assert_eq!(
                        included.len(),
                        attrs.len(),
                        "{ictx}: no duplicate attributes"
                    );
                    assert_eq!(
                        string_set(&projection["NonKeyAttributes"]),
                        attrs.iter().map(|a| a.to_string()).collect(),
                        "{ictx}: projected attributes"
                    );
                    assert_eq!(projection.as_object().unwrap().len(), 2, "{ictx}");
                }
            }
            let keys: BTreeSet<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["IndexName", "KeySchema", "Projection", "WarmThroughput"]),
                "{ictx}: on-demand indexes have nothing else but their warm throughput"
            );
            assert_eq!(
                g["WarmThroughput"],
                warm_throughput(),
                "{ictx}: pre-warmed like its table"
            );
        }
    }
    assert!(p.get("LocalSecondaryIndexes").is_none(), "{ctx}: no LSIs");

    if def.stream {
        assert_eq!(
            p["StreamSpecification"],
            json!({"StreamViewType": "NEW_IMAGE"}),
            "{ctx}: stream of new images"
        );
    } else {
        assert!(p.get("StreamSpecification").is_none(), "{ctx}: no stream");
    }
    match def.ttl_attribute {
        Some(attr) => assert_eq!(
            p["TimeToLiveSpecification"],
            json!({"AttributeName": attr, "Enabled": true}),
            "{ctx}: TTL"
        ),
        None => assert!(p.get("TimeToLiveSpecification").is_none(), "{ctx}: no TTL"),
    }
    assert_eq!(
        r["DeletionPolicy"], "Retain",
        "{ctx}: data outlives the stack"
    );
    assert_eq!(r["UpdateReplacePolicy"], "Retain", "{ctx}");
}

#[test]
fn every_table_matches_its_rust_definition() {
    let t = template();
    assert_eq!(
        resources(&t, "AWS::DynamoDB::Table").len(),
        table_defs().len(),
        "one table resource per definition, no others"
    );
    for def in table_defs() {
        check_table(&t, def);
    }
}

// -------------------------------------------------------------------------------------------------
// Stream pipeline
// -------------------------------------------------------------------------------------------------

#[test]
fn stream_mappings_filter_like_the_pipeline_and_never_drop_records_silently() {
    let t = template();
    let dlq = the_queue(&t);
    let expected = [
        (
            "resolve",
            Table::Inbox,
            RESOLVE_INBOX_FILTER,
            STREAM_BATCH_SIZE,
            Some(STREAM_PARALLELIZATION_FACTOR),
        ),
        (
            "materialize",
            Table::Inbox,
            MATERIALIZE_INBOX_FILTER,
            STREAM_BATCH_SIZE,
            Some(STREAM_PARALLELIZATION_FACTOR),
        ),
        (
            "materialize",
            Table::Segments,
            MATERIALIZE_SEGMENTS_FILTER,
            1,
            None,
        ),
        (
            "publish",
            Table::Events,
            PUBLISH_EVENTS_FILTER,
            PUBLISH_BATCH_SIZE,
            Some(STREAM_PARALLELIZATION_FACTOR),
        ),
        (
            "publish",
            Table::Events,
            PUBLISH_BULK_EVENTS_FILTER,
            PUBLISH_BATCH_SIZE,
            Some(STREAM_PARALLELIZATION_FACTOR),
        ),
    ];
    let mappings = resources(&t, "AWS::Lambda::EventSourceMapping");
    assert_eq!(
        mappings.len(),
        expected.len(),
        "exactly the pipeline's mappings"
    );
    // DynamoDB Streams serves at most two readers a shard at once: no stream gets a third.
    let mut readers: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, m) in &mappings {
        *readers
            .entry(m["Properties"]["EventSourceArn"].to_string())
            .or_default() += 1;
    }
    assert!(readers.values().all(|n| *n <= 2), "{readers:?}");
    for (binary, table, filter, batch, parallel) in expected {
        let f = function_id(&t, binary);
        let tid = table_id(&t, table);
        let stream = json!({"Fn::GetAtt": [tid, "StreamArn"]});
        let found = mappings
            .iter()
            .copied()
            .filter(|(_, m)| {
                let patterns = m["Properties"]["FilterCriteria"]["Filters"].as_array();
                let filters_so = patterns.is_some_and(|p| {
                    p.iter().any(|f| {
                        f["Pattern"]
                            .as_str()
                            .and_then(|s| serde_json::from_str::<Value>(s).ok())
                            == serde_json::from_str::<Value>(filter).ok()
                    })
                });
                m["Properties"]["FunctionName"] == json!({"Ref": f})
                    && m["Properties"]["EventSourceArn"] == stream
                    && filters_so
            })
            .collect();
        let (id, m) = the_one(
            found,
            &format!("mapping {table} stream → {binary}, {filter}"),
        );
        let p = &m["Properties"];
        let ctx = format!("{id} ({table} → {binary})");

        let filters = p["FilterCriteria"]["Filters"].as_array().expect("filters");
        assert_eq!(filters.len(), 1, "{ctx}: one filter");
        let pattern: Value = serde_json::from_str(filters[0]["Pattern"].as_str().expect("string"))
            .expect("the pattern is JSON");
        assert_eq!(
            pattern,
            serde_json::from_str::<Value>(filter).unwrap(),
            "{ctx}: filter equals shared::stages::pipeline"
        );
        assert_eq!(p["BatchSize"], batch, "{ctx}: batch size");
        // Inbox chunks are independent lanes (keyed apart): Lambda may run several batches of
        // one shard at once. Clearing keeps one batch at a time.
        assert_eq!(
            p["ParallelizationFactor"].as_u64(),
            parallel.map(u64::from),
            "{ctx}: parallelization factor"
        );
        assert_eq!(p["StartingPosition"], "TRIM_HORIZON", "{ctx}");
        assert_eq!(
            p["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"]),
            "{ctx}"
        );
        assert_eq!(p["BisectBatchOnFunctionError"], true, "{ctx}");
        let retries = p["MaximumRetryAttempts"]
            .as_i64()
            .expect("MaximumRetryAttempts is set");
        assert!(
            (1..=20).contains(&retries),
            "{ctx}: retries are bounded, got {retries}"
        );
        assert_eq!(
            p["DestinationConfig"],
            json!({"OnFailure": {"Destination": {"Fn::GetAtt": [dlq, "Arn"]}}}),
            "{ctx}: what still fails goes to the dead-letter queue"
        );

        // The function may read that stream and dead-letter into the queue.
        let statements = policy_statements(&t, f);
        assert!(
            allows(
                &statements,
                &[
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator"
                ],
                &stream
            ),
            "{ctx}: stream read permission"
        );
        assert!(
            allows(
                &statements,
                &["dynamodb:ListStreams"],
                &json!({"Fn::Sub": format!("${{{tid}.Arn}}/stream/*")})
            ),
            "{ctx}: ListStreams on the table's streams"
        );
        assert!(
            allows(
                &statements,
                &["sqs:SendMessage"],
                &json!({"Fn::GetAtt": [dlq, "Arn"]})
            ),
            "{ctx}: may send to the dead-letter queue"
        );
    }
}

#[test]
fn alarms_watch_the_dead_letter_queue_and_every_function() {
    let t = template();
    let dlq = the_queue(&t);
    let alarms = resources(&t, "AWS::CloudWatch::Alarm");
    let watches = |namespace: &str, metric: &str, dimension: Value| {
        alarms.iter().any(|(_, a)| {
            let p = &a["Properties"];
            p["Namespace"] == namespace
                && p["MetricName"] == metric
                && p["Dimensions"] == json!([dimension])
                && p["AlarmActions"].as_array().is_some_and(|v| !v.is_empty())
        })
    };
    assert!(
        watches(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            json!({"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}})
        ),
        "an alarm on dead-letter depth"
    );
    for binary in BINARIES {
        let f = function_id(&t, binary);
        assert!(
            watches(
                "AWS/Lambda",
                "Errors",
                json!({"Name": "FunctionName", "Value": {"Ref": f}})
            ),
            "an alarm on {binary}'s errors"
        );
    }
}

// -------------------------------------------------------------------------------------------------
// Functions, API, configuration
// -------------------------------------------------------------------------------------------------

#[test]
fn every_function_is_built_by_cargo_lambda_from_its_workspace_binary() {
    let t = template();
    assert_eq!(
        resources(&t, "AWS::Serverless::Function").len(),
        BINARIES.len()
    );
    for binary in BINARIES {
        let id = function_id(&t, binary);
        let r = &t["Resources"][id];
        assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(r["Properties"]["CodeUri"], ".", "{id}: the workspace root");
        let manifest = read(&format!("functions/{binary}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "functions/{binary} is the package {binary}"
        );
        assert!(
            read("Cargo.toml").contains(&format!("\"functions/{binary}\"")),
            "{binary} is a workspace member"
        );
    }
    let g = &t["Globals"]["Function"];
    assert_eq!(g["Runtime"], "provided.al2023");
    assert_eq!(g["Architectures"], json!([{"Ref": "Architecture"}]));
    let arch = &t["Parameters"]["Architecture"];
    assert_eq!(
        (&arch["Default"], &arch["AllowedValues"]),
        (&json!("arm64"), &json!(["arm64", "x86_64"]))
    );
    assert_eq!(
        g["Environment"]["Variables"]["METRICS_NAMESPACE"],
        json!({"Ref": "AWS::StackName"})
    );
    assert_eq!(g["Handler"], "bootstrap");
    assert_eq!(g["Tracing"], "Active");
    assert_eq!(g["LoggingConfig"]["LogFormat"], "JSON");
    assert!(g["MemorySize"].is_i64() && g["Timeout"].is_i64());
    let env = &g["Environment"]["Variables"];
    assert_eq!(env["TABLE_PREFIX"], json!({"Ref": "TablePrefix"}));
    assert_eq!(env["CT_REGION"], json!({"Ref": "CtRegion"}));
    assert!(env.get("MPARTICLE_CALLER_TOKEN").is_none());
}

#[test]
fn the_api_routes_mparticle_to_authorize_and_reads_to_query() {
    let t = template();
    let (api, _) = the_one(resources(&t, "AWS::Serverless::HttpApi"), "HTTP API");
    let routes = |binary: &str| -> Vec<(String, String)> {
        let id = function_id(&t, binary);
        t["Resources"][id]["Properties"]["Events"]
            .as_object()
            .map(|events| {
                events
                    .values()
                    .map(|e| {
                        assert_eq!(e["Type"], "HttpApi", "{id}");
                        assert_eq!(e["Properties"]["ApiId"], json!({"Ref": api}), "{id}");
                        assert_eq!(e["Properties"]["PayloadFormatVersion"], "2.0", "{id}");
                        (
                            e["Properties"]["Method"].as_str().unwrap().to_owned(),
                            e["Properties"]["Path"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        routes("authorize"),
        [("POST".to_owned(), "/mparticle".to_owned())]
    );
    let mut query = routes("query");
    query.sort();
    assert_eq!(
        query,
        [
            ("GET".to_owned(), "/console".to_owned()),
            ("GET".to_owned(), "/console/{proxy+}".to_owned()),
            ("GET".to_owned(), "/v1/{proxy+}".to_owned()),
            ("POST".to_owned(), "/v1/preview".to_owned())
        ]
    );
    // The local server routes what the template routes to query, and nothing else.
    for path in [
        "/console",
        "/console/segments/1",
        "/console/assets/console.js",
    ] {
        assert!(
            shared::stages::query::console::is_console_path(path),
            "{path}"
        );
    }
    assert!(
        routes("resolve").is_empty() && routes("materialize").is_empty(),
        "stream functions are triggered by the explicit mappings only"
    );
}

#[test]
fn the_caller_token_goes_to_authorize_only_and_is_never_echoed() {
    let t = template();
    let param = &t["Parameters"]["MParticleCallerToken"];
    assert_eq!(param["NoEcho"], true);
    assert!(param.get("Default").is_none(), "no default token");
    for binary in BINARIES {
        let id = function_id(&t, binary);
        let env = &t["Resources"][id]["Properties"]["Environment"]["Variables"];
        if binary == "authorize" {
            assert_eq!(
                env["MPARTICLE_CALLER_TOKEN"],
                json!({"Ref": "MParticleCallerToken"})
            );
        } else {
            assert!(env.get("MPARTICLE_CALLER_TOKEN").is_none(), "{binary}");
        }
    }
    let outputs = serde_json::to_string(&t["Outputs"]).unwrap();
    assert!(!outputs.contains("MParticleCallerToken"));
    assert!(
        !read("template.yaml").contains("DYNAMODB_ENDPOINT"),
        "deployed functions use the real DynamoDB endpoints"
    );
}

#[test]
fn outputs_name_the_api_the_partner_sync_stream_and_every_table() {
    let t = template();
    let o = &t["Outputs"];
    let (api, _) = the_one(resources(&t, "AWS::Serverless::HttpApi"), "HTTP API");
    assert!(
        o["ApiUrl"]["Value"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .contains(&format!("${{{api}}}"))
    );
    assert!(
        o["MParticleEndpointUrl"]["Value"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .ends_with("/mparticle")
    );
    assert_eq!(
        o["PartnerSyncEventsStreamArn"]["Value"],
        json!({"Fn::GetAtt": [table_id(&t, Table::Events), "StreamArn"]})
    );
    for table in Table::ALL {
        let name = table.as_str();
        let key = format!("{}{}TableName", name[..1].to_uppercase(), &name[1..]);
        assert_eq!(
            o[&key]["Value"],
            json!({"Ref": table_id(&t, table)}),
            "output {key}"
        );
    }
}

// -------------------------------------------------------------------------------------------------
// Regions and least privilege
// -------------------------------------------------------------------------------------------------

/// The inline policy statements of a function.
fn policy_statements(t: &Value, function: &str) -> Vec<Value> {
    one_or_many(&t["Resources"][function]["Properties"]["Policies"])
        .iter()
        .flat_map(|p| one_or_many(&p["Statement"]))
        .inspect(|s| assert_eq!(s["Effect"], "Allow", "{function}: allow statements only"))
        .collect()
}

fn allows(statements: &[Value], actions: &[&str], resource: &Value) -> bool {
    actions.iter().all(|action| {
        statements.iter().any(|s| {
            one_or_many(&s["Action"]).contains(&json!(action))
                && one_or_many(&s["Resource"]).contains(resource)
        })
    })
}

/// Evaluates the `Fn::Sub` forms the template uses for ARNs: `${Var}` of the variable map are
/// replaced (`Fn::FindInMap` resolved from Mappings); parameters and pseudo parameters stay.
fn eval_sub(t: &Value, v: &Value) -> String {
    let sub = &v["Fn::Sub"];
    let (text, vars) = match sub {
        Value::String(s) => (s.clone(), serde_json::Map::new()),
        Value::Array(a) if a.len() == 2 => (
            a[0].as_str().expect("Sub text").to_owned(),
            a[1].as_object().expect("Sub variables").clone(),
        ),
        other => panic!("not a Sub: {other}"),
    };
    vars.iter().fold(text, |acc, (name, value)| {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.contains_key("Fn::FindInMap") => {
                let path = o["Fn::FindInMap"].as_array().expect("FindInMap list");
                let key = |i: usize| path[i].as_str().expect("literal FindInMap keys");
                t["Mappings"][key(0)][key(1)][key(2)]
                    .as_str()
                    .unwrap_or_else(|| panic!("no mapping {path:?}"))
                    .to_owned()
            }
            other => panic!("unsupported Sub variable {other}"),
        };
        acc.replace(&format!("${{{name}}}"), &value)
    })
}

#[test]
fn regions_follow_the_rust_region_list() {
    let t = template();
    let names: Vec<&str> = Region::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(t["Parameters"]["CtRegion"]["AllowedValues"], json!(names));
    let map = t["Mappings"]["CtRegions"].as_object().expect("CtRegions");
    assert_eq!(map.len(), Region::ALL.len());
    for r in Region::ALL {
        assert_eq!(
            map[r.as_str()],
            json!({"AwsRegion": r.aws_region()}),
            "{r} is hosted in {}",
            r.aws_region()
        );
    }
    assert_eq!(
        t["Parameters"]["TablePrefix"]["Default"],
        shared::config::DEFAULT_TABLE_PREFIX
    );
}

#[test]
fn authorize_reaches_exactly_the_home_region_tables_it_writes_in_every_region() {
    let t = template();
    let f = function_id(&t, "authorize");
    let statements = policy_statements(&t, f);
    // Batches and subscriptions only: erasures are the erase function's (its own role).
    let needs: [(Table, &str, &[&str]); 3] = [
        (Table::Projects, "", &["dynamodb:GetItem"]),
        (
            Table::Inbox,
            "",
            &[
                "dynamodb:PutItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:GetItem",
            ],
        ),
        (
            Table::Segments,
            "",
            &["dynamodb:UpdateItem", "dynamodb:GetItem"],
        ),
    ];
    // Every (action, resource) pair the policy grants.
    let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &statements {
        for resource in one_or_many(&s["Resource"]) {
            let arn = eval_sub(&t, &resource);
            for action in one_or_many(&s["Action"]) {
                granted.insert((action.as_str().unwrap().to_owned(), arn.clone()));
            }
        }
    }
    let mut wanted = BTreeSet::new();
    for r in Region::ALL {
        for (table, suffix, actions) in &needs {
            let arn = format!(
                "arn:${{AWS::Partition}}:dynamodb:{}:${{AWS::AccountId}}:table/${{TablePrefix}}-{}-{}",
                r.aws_region(),
                r.as_str(),
                table
            );
            // The ARN names the table the way TableNames does.
            assert_eq!(
                TableNames::new("${TablePrefix}").name(r, *table),
                arn.rsplit_once("table/").unwrap().1
            );
            for a in *actions {
                wanted.insert((a.to_string(), format!("{arn}{suffix}")));
            }
        }
        // The region's bulk queue, by the name its stack gives it.
        for action in ["sqs:GetQueueUrl", "sqs:SendMessage"] {
            wanted.insert((
                action.to_owned(),
                format!(
                    "arn:${{AWS::Partition}}:sqs:{}:${{AWS::AccountId}}:${{TablePrefix}}-{}-bulk",
                    r.aws_region(),
                    r.as_str()
                ),
            ));
        }
        // The region's erase function, by the name its stack gives it.
        wanted.insert((
            "lambda:InvokeFunction".to_owned(),
            format!(
                "arn:${{AWS::Partition}}:lambda:{}:${{AWS::AccountId}}:function:${{TablePrefix}}-{}-erase",
                r.aws_region(),
                r.as_str()
            ),
        ));
    }
    let erase = function_id(&t, "erase");
    assert_eq!(
        t["Resources"][erase]["Properties"]["FunctionName"],
        json!({"Fn::Sub": "${TablePrefix}-${CtRegion}-erase"})
    );
    assert_eq!(
        t["Resources"][f]["Properties"]["Environment"]["Variables"]["ERASE_FUNCTION"],
        json!({"Fn::Sub": "${TablePrefix}-{region}-erase"})
    );
    assert_eq!(
        granted, wanted,
        "authorize may do exactly this, on every region's tables"
    );
}

#[test]
fn only_the_erase_function_may_delete_a_persons_data_and_only_in_its_region() {
    let t = template();
    let statements = policy_statements(&t, function_id(&t, "erase"));
    let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &statements {
        for resource in one_or_many(&s["Resource"]) {
            for action in one_or_many(&s["Action"]) {
                granted.insert((action.as_str().unwrap().to_owned(), resource.to_string()));
            }
        }
    }
    let arn = |table: Table| json!({"Fn::GetAtt": [table_id(&t, table), "Arn"]}).to_string();
    let secret = json!({"Ref": tombstone_keys_id(&t)}).to_string();
    let needs: [(String, &[&str]); 6] = [
        (secret, &["secretsmanager:GetSecretValue"]),
        (
            arn(Table::Projects),
            &["dynamodb:GetItem", "dynamodb:UpdateItem"],
        ),
        (
            arn(Table::Profiles),
            &[
                "dynamodb:BatchGetItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ],
        ),
        (
            arn(Table::Memberships),
            &[
                "dynamodb:BatchGetItem",
                "dynamodb:GetItem",
                "dynamodb:UpdateItem",
                "dynamodb:PutItem",
            ],
        ),
        (
            arn(Table::Events),
            &["dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:PutItem"],
        ),
        (
            arn(Table::Segments),
            &[
                "dynamodb:BatchGetItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
            ],
        ),
    ];
    let wanted: BTreeSet<(String, String)> = needs
        .iter()
        .flat_map(|(resource, actions)| {
            actions
                .iter()
                .map(move |a| (a.to_string(), resource.clone()))
        })
        .collect();
    assert_eq!(
        granted, wanted,
        "erase may do exactly this, on its own tables"
    );
    // Its only put on the events table is a feed notice, under the notice key prefix.
    let puts_events: Vec<&Value> = statements
        .iter()
        .filter(|s| {
            one_or_many(&s["Action"]).contains(&json!("dynamodb:PutItem"))
                && one_or_many(&s["Resource"])
                    .contains(&json!({"Fn::GetAtt": [table_id(&t, Table::Events), "Arn"]}))
        })
        .collect();
    assert_eq!(puts_events.len(), 1);
    assert_eq!(
        puts_events[0]["Condition"],
        json!({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [
            format!("{}*", shared::store::keys::events::NOTICE_PREFIX)
        ]}}),
        "erase puts only feed notices (~N#…), never a Partner Sync event"
    );
    // #34 defect 7: every write that could create an item is held to the key prefixes of
    // what an erasure writes (IAM cannot require a condition expression, only leading keys):
    // tombstones and holders, never a profile or a claim; counter shards, never a segment;
    // the audit row; feed notices. No BatchWriteItem anywhere (its puts are not told apart).
    let leading = |table: Table, action: &str| -> Vec<Value> {
        statements
            .iter()
            .filter(|s| {
                one_or_many(&s["Action"]).contains(&json!(action))
                    && one_or_many(&s["Resource"])
                        .contains(&json!({"Fn::GetAtt": [table_id(&t, table), "Arn"]}))
            })
            .map(|s| s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"].clone())
            .collect()
    };
    assert_eq!(
        leading(Table::Profiles, "dynamodb:UpdateItem"),
        [json!(["T#*", "H#*"])]
    );
    assert_eq!(
        leading(Table::Segments, "dynamodb:UpdateItem"),
        [json!(["C#*"]), json!(["E#*"])]
    );
    assert_eq!(
        leading(Table::Segments, "dynamodb:PutItem"),
        [json!(["E#*"])]
    );
    assert_eq!(
        leading(Table::Segments, "dynamodb:DeleteItem"),
        [json!(["E#*"])]
    );
    assert_eq!(
        leading(Table::Events, "dynamodb:PutItem"),
        [json!(["~N#*"])]
    );
    let prefix = |pk: String| pk[..2].to_owned() + "*";
    use shared::store::keys::{profiles as pk, segments as sk};
    assert_eq!(prefix(pk::tombstone_pk("p", "h")), "T#*");
    assert_eq!(prefix(pk::holders_pk("p", "email", "v")), "H#*");
    assert_eq!(prefix(sk::counter_shard_pk("p", 1, 0)), "C#*");
    assert_eq!(prefix(sk::erasure_pk("p")), "E#*");
    assert!(!granted.iter().any(|(a, _)| a == "dynamodb:BatchWriteItem"));
    // Nothing but the pipeline's own take-backs and the erase function delete.
    for binary in BINARIES {
        if ["erase", "resolve", "materialize", "bulk"].contains(&binary) {
            continue;
        }
        for s in policy_statements(&t, function_id(&t, binary)) {
            for action in one_or_many(&s["Action"]) {
                let action = action.as_str().unwrap();
                assert!(
                    !action.ends_with("DeleteItem") && action != "dynamodb:BatchWriteItem",
                    "{binary}: {action}"
                );
            }
        }
    }
}

#[test]
fn stream_and_read_functions_stay_in_their_region() {
    let t = template();
    let own_tables: BTreeSet<String> = Table::ALL
        .iter()
        .map(|tb| table_id(&t, *tb).to_owned())
        .collect();
    let dlq = the_queue(&t);
    let keys = tombstone_keys_id(&t);
    for binary in ["resolve", "materialize", "query"] {
        for s in policy_statements(&t, function_id(&t, binary)) {
            for resource in one_or_many(&s["Resource"]) {
                let refers_to = match &resource {
                    Value::Object(o) if o.contains_key("Fn::GetAtt") => {
                        o["Fn::GetAtt"][0].as_str().unwrap().to_owned()
                    }
                    Value::Object(o) if o.contains_key("Fn::Sub") => {
                        let text = o["Fn::Sub"].as_str().expect("plain Sub");
                        let inner = text
                            .strip_prefix("${")
                            .and_then(|r| r.split_once(".Arn}"))
                            .unwrap_or_else(|| panic!("{binary}: unexpected resource {text}"));
                        inner.0.to_owned()
                    }
                    Value::Object(o) if o.contains_key("Ref") => {
                        o["Ref"].as_str().unwrap().to_owned()
                    }
                    other => panic!("{binary}: resource {other} is not one of this stack's"),
                };
                assert!(
                    own_tables.contains(&refers_to) || refers_to == dlq || refers_to == keys,
                    "{binary}: {refers_to} is not a table or queue of this stack"
                );
            }
            // Resolve may delete profile items and materialize Partner Sync events (each taking
            // back what a chunk wrote for a person an erasure covers); nothing else deletes.
            let only_on = |table: Table| {
                one_or_many(&s["Resource"])
                    == vec![json!({"Fn::GetAtt": [table_id(&t, table), "Arn"]})]
            };
            let may_delete = (binary == "resolve" && only_on(Table::Profiles))
                || (binary == "materialize" && only_on(Table::Events));
            for action in one_or_many(&s["Action"]) {
                let action = action.as_str().unwrap();
                assert!(
                    !action.contains('*') && (may_delete || !action.ends_with("DeleteItem")),
                    "{binary}: {action} is more than it needs"
                );
            }
        }
    }
    // The read API reaches the inbox only through the sync-log index, never its rows.
    let inbox = table_id(&t, Table::Inbox);
    let inbox_grants: Vec<(Vec<String>, String)> = policy_statements(&t, function_id(&t, "query"))
        .iter()
        .flat_map(|s| {
            let actions: Vec<String> = one_or_many(&s["Action"])
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            one_or_many(&s["Resource"])
                .into_iter()
                .filter(|r| r.to_string().contains(inbox))
                .map(move |r| (actions.clone(), r.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        inbox_grants,
        vec![(
            vec!["dynamodb:Query".to_owned()],
            json!({"Fn::Sub": format!("${{{inbox}.Arn}}/index/{}", shared::store::keys::inbox::BY_RECEIVED)})
                .to_string()
        )],
        "query: the inbox only through its sync-log index"
    );
    // The read API only reads.
    for s in policy_statements(&t, function_id(&t, "query")) {
        for action in one_or_many(&s["Action"]) {
            assert!(
                [
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:BatchGetItem"
                ]
                .contains(&action.as_str().unwrap()),
                "query: {action}"
            );
        }
    }
}

// -------------------------------------------------------------------------------------------------
// samconfig.toml and scripts
// -------------------------------------------------------------------------------------------------

/// `[section]` → key → string value, for the flat subset of TOML samconfig.toml uses.
fn samconfig() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("samconfig.toml").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key = value");
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
    }
    out
}

#[test]
fn samconfig_has_one_environment_per_region_in_its_aws_region() {
    let cfg = samconfig();
    let deploy_envs: BTreeSet<&str> = cfg
        .keys()
        .filter_map(|s| s.strip_suffix(".deploy.parameters"))
        .collect();
    assert_eq!(
        deploy_envs,
        Region::ALL.iter().map(|r| r.as_str()).collect(),
        "one deploy environment per region, no default"
    );
    for r in Region::ALL {
        let env = &cfg[&format!("{r}.deploy.parameters")];
        assert_eq!(env["stack_name"], format!("ctmp-{r}"));
        assert_eq!(env["region"], r.aws_region(), "{r}");
        let overrides: BTreeSet<&str> = env["parameter_overrides"].split_whitespace().collect();
        assert!(overrides.contains(format!("CtRegion={r}").as_str()), "{r}");
        assert!(
            overrides
                .contains(format!("TablePrefix={}", shared::config::DEFAULT_TABLE_PREFIX).as_str()),
            "{r}: every region the same prefix"
        );
        assert!(env["capabilities"].contains("CAPABILITY_IAM"), "{r}");
    }
}

/// The words of a bash array assignment `NAME=(a b c)` in a script.
fn bash_array(script: &str, name: &str) -> Vec<String> {
    let text = read(script);
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=(")))
        .unwrap_or_else(|| panic!("{script} has no {name}=(…)"));
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_scripts_know_every_region() {
    let ct: Vec<String> = Region::ALL.iter().map(|r| r.as_str().to_owned()).collect();
    let aws: Vec<String> = Region::ALL
        .iter()
        .map(|r| r.aws_region().to_owned())
        .collect();
    assert_eq!(bash_array("scripts/deploy", "REGIONS"), ct);
    assert_eq!(bash_array("scripts/lint-template", "REGIONS"), aws);
}

// -------------------------------------------------------------------------------------------------
// events/: what `sam local invoke -e` feeds each function
// -------------------------------------------------------------------------------------------------

const EVENT_FILES: [&str; 12] = [
    "authorize-module-registration.json",
    "authorize-subscription-add.json",
    "authorize-subscription-update.json",
    "authorize-subscription-remove.json",
    "authorize-membership-batch.json",
    "authorize-heartbeat.json",
    "query-segments.json",
    "resolve-inbox-insert.json",
    "materialize-inbox-resolved.json",
    "materialize-segment-archiving.json",
    "publish-partner-sync.json",
    "bulk-queued-chunk.json",
];

/// The prefix and region the stream events' source ARNs name.
const EVENT_PREFIX: &str = "ctmp";
const EVENT_REGION: Region = Region::Eu1;

fn event_text(name: &str) -> String {
    read(&format!("events/{name}"))
}

#[test]
fn events_folder_has_exactly_the_documented_events() {
    let mut found: Vec<String> = std::fs::read_dir(repo_file("events"))
        .expect("events/")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    let mut wanted: Vec<String> = EVENT_FILES.iter().map(|s| s.to_string()).collect();
    wanted.sort();
    assert_eq!(found, wanted);
}

/// An API Gateway HTTP API (v2) event, as the Lambda runtime would hand it to the function.
fn http_event(name: &str) -> lambda_http::Request {
    let text = event_text(name);
    let raw: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(raw["version"], "2.0", "{name}: HTTP API payload v2");
    lambda_http::request::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} is not an API Gateway event: {e}"))
}

fn mparticle_request(name: &str) -> ParsedRequest<'static> {
    let req = http_event(name);
    assert_eq!(req.method().as_str(), "POST", "{name}");
    assert_eq!(req.uri().path(), "/mparticle", "{name}");
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        auth.starts_with("Token "),
        "{name}: mParticle's Authorization header"
    );
    shared::domain::protocol::parse_request(req.body().as_ref())
        .unwrap_or_else(|e| panic!("{name}: body is not a Firehose message: {e}"))
        .into_owned()
}

fn membership_batch() -> MembershipRequest<'static> {
    match mparticle_request("authorize-membership-batch.json") {
        Request::AudienceMembershipChange(m) if !m.is_heartbeat() => m,
        other => panic!("not a membership batch: {}", other.type_name()),
    }
}

#[test]
fn api_gateway_events_carry_each_mparticle_message() {
    assert!(matches!(
        mparticle_request("authorize-module-registration.json"),
        Request::ModuleRegistration(_)
    ));
    for (name, action) in [
        ("authorize-subscription-add.json", SubscriptionAction::Add),
        (
            "authorize-subscription-update.json",
            SubscriptionAction::Update,
        ),
        (
            "authorize-subscription-remove.json",
            SubscriptionAction::Remove,
        ),
    ] {
        match mparticle_request(name) {
            Request::AudienceSubscription(s) => {
                assert_eq!(s.action, action, "{name}");
                assert_eq!(s.account.account_settings["region"], "EU1", "{name}");
            }
            other => panic!("{name}: {}", other.type_name()),
        }
    }
    let batch = membership_batch();
    let profiles = batch.user_profiles.as_deref().unwrap();
    assert!(profiles.len() >= 2, "a batch of several profiles");
    let actions: BTreeSet<String> = profiles
        .iter()
        .flat_map(|p| p.audiences.iter().map(|a| a.action.to_string()))
        .collect();
    assert_eq!(actions, BTreeSet::from(["add".into(), "delete".into()]));
    match mparticle_request("authorize-heartbeat.json") {
        Request::AudienceMembershipChange(m) => assert!(m.is_heartbeat()),
        other => panic!("heartbeat: {}", other.type_name()),
    }
}

#[test]
fn the_read_api_event_is_a_get_with_project_credentials() {
    let req = http_event("query-segments.json");
    assert_eq!(req.method().as_str(), "GET");
    assert_eq!(req.uri().path(), "/v1/segments");
    let batch = membership_batch();
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("header {h}"))
            .to_owned()
    };
    assert_eq!(
        header("x-clevertap-account-id"),
        batch.account.account_settings["accountId"]
    );
    assert_eq!(
        header("x-clevertap-passcode"),
        batch.account.account_settings["passcode"]
    );
}

/// Lambda event filtering for the subset our patterns use (every pattern key present, objects
/// nest, a list names the accepted values).
/// Lambda's event filtering as the local runner applies it (`exists: false` included).
fn passes_filter(pattern: &Value, value: &Value) -> bool {
    local::streams::matches_filter(pattern, value)
}

#[test]
fn an_events_record_passes_exactly_one_publish_filter_by_its_way() {
    let record = |way: Option<&str>, event: &str| {
        let mut image = json!({"event": {"S": event}, "project_id": {"S": "p"}});
        if let Some(way) = way {
            image["way"] = json!({"S": way});
        }
        json!({"eventName": "INSERT", "dynamodb": {"NewImage": image}})
    };
    let passes = |f: &str, r: &Value| passes_filter(&serde_json::from_str(f).unwrap(), r);
    for (r, live, bulk) in [
        (record(None, "Partner Sync"), true, false),
        (record(Some("bulk"), "Partner Sync"), false, true),
        (record(None, "Profile Erased"), true, false),
        (record(None, "Segment Cleared"), true, false),
    ] {
        assert_eq!(
            (
                passes(PUBLISH_EVENTS_FILTER, &r),
                passes(PUBLISH_BULK_EVENTS_FILTER, &r)
            ),
            (live, bulk),
            "{r}"
        );
    }
    let mut removed = record(Some("bulk"), "Partner Sync");
    removed["eventName"] = json!("REMOVE");
    assert!(!passes(PUBLISH_BULK_EVENTS_FILTER, &removed));
}

/// A stream event file: one record, from `table`, passing `filter` (and only that one of ours).
fn stream_event(name: &str, table: Table, filter: &str) -> StreamEvent {
    let text = event_text(name);
    let raw: Value = serde_json::from_str(&text).expect("JSON");
    let records = raw["Records"].as_array().expect("Records");
    assert_eq!(records.len(), 1, "{name}");
    let r = &records[0];
    assert_eq!(r["dynamodb"]["StreamViewType"], "NEW_IMAGE", "{name}");
    assert!(r["dynamodb"]["SequenceNumber"].is_string(), "{name}");
    assert!(r["dynamodb"]["Keys"].is_object(), "{name}");
    for f in [
        RESOLVE_INBOX_FILTER,
        MATERIALIZE_INBOX_FILTER,
        MATERIALIZE_SEGMENTS_FILTER,
        PUBLISH_EVENTS_FILTER,
        PUBLISH_BULK_EVENTS_FILTER,
    ] {
        let pattern: Value = serde_json::from_str(f).unwrap();
        let passes = passes_filter(&pattern, r);
        if f == filter {
            assert!(passes, "{name} passes its mapping's filter {f}");
        } else if passes {
            // The two inbox filters never both match; a segments record never reaches an
            // inbox mapping (different stream), so only compare same-table filters.
            let table_of = |f: &str| {
                if f == MATERIALIZE_SEGMENTS_FILTER {
                    Table::Segments
                } else if f == PUBLISH_EVENTS_FILTER || f == PUBLISH_BULK_EVENTS_FILTER {
                    Table::Events
                } else {
                    Table::Inbox
                }
            };
            assert_ne!(
                table_of(f),
                table,
                "{name} would also pass {f} on the same stream"
            );
        }
    }
    let event: StreamEvent = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name} is not a DynamoDB stream event: {e}"));
    let arn = event.records[0].event_source_arn.as_deref().expect("ARN");
    assert_eq!(
        TableNames::new(EVENT_PREFIX).parse_arn(arn),
        Some((EVENT_REGION, table)),
        "{name}: source ARN names {EVENT_PREFIX}-{EVENT_REGION}-{table}"
    );
    event
}

/// How a binary attribute is written in the event file (base64, as Lambda delivers it).
fn as_event_b(bytes: Vec<u8>) -> String {
    serde_json::to_value(serde_dynamo::AttributeValue::B(bytes)).unwrap()["B"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The record's keys are the lane and chunk keys authorize gives the sample batch's chunk.
fn check_inbox_keys(name: &str, record: &aws_lambda_events::event::dynamodb::EventRecord) {
    let batch = membership_batch();
    let project = batch.account.account_settings["accountId"].clone();
    let wanted = [
        (
            "pk",
            shared::store::keys::inbox::pk(&project, &batch.envelope.id, 0),
        ),
        ("sk", shared::store::keys::inbox::sk(&batch.envelope.id, 0)),
    ];
    for (key, value) in wanted {
        for (what, item) in [
            ("Keys", &record.change.keys),
            ("NewImage", &record.change.new_image),
        ] {
            assert_eq!(
                item.get(key),
                Some(&serde_dynamo::AttributeValue::S(value.clone())),
                "{name}: {what}.{key}"
            );
        }
    }
}

fn check_inbox_row(name: &str, row: &shared::ports::inbox::InboxRow, status: &str) {
    let batch = membership_batch();
    assert_eq!(row.status.as_str(), status, "{name}");
    assert_eq!(
        row.project_id, batch.account.account_settings["accountId"],
        "{name}"
    );
    assert_eq!(row.message_id, batch.envelope.id, "{name}");
    assert_eq!(row.message_ts, batch.envelope.timestamp_ms, "{name}");
    assert_eq!(row.chunk, 0, "{name}");

    // A resolved row no longer carries the payload (its changes took over).
    if status != "received" {
        assert!(
            row.payload.is_empty(),
            "{name}: a {status} row drops its payload"
        );
        return;
    }
    // The payload is what authorize stores for the sample batch: its only chunk.
    let chunks = build_chunks(batch.user_profiles.as_deref().unwrap()).unwrap();
    assert_eq!(chunks.len(), 1);
    let wanted: Vec<StoredProfile> = decode_chunk(&chunks[0].payload).unwrap();
    let stored = decode_chunk(row.payload.as_ref());
    assert!(
        stored.as_ref().is_ok_and(|s| *s == wanted),
        "{name}: the payload is not the stored form of events/authorize-membership-batch.json \
         ({stored:?}); set NewImage.payload.B to\n{}\n",
        as_event_b(chunks[0].payload.clone())
    );
}

#[test]
fn resolve_event_is_the_inbox_insert_of_the_sample_batch() {
    let name = "resolve-inbox-insert.json";
    let event = stream_event(name, Table::Inbox, RESOLVE_INBOX_FILTER);
    let record = &event.records[0];
    assert_eq!(record.event_name, "INSERT");
    check_inbox_keys(name, record);
    let row = shared::stages::stream::inbox_row(record).expect("an inbox row");
    check_inbox_row(name, &row, "received");
    assert!(row.changes.is_none());
}

/// What resolve hands on for the sample batch (the CleverTap IDs of new profiles are made up).
fn sample_changes(batch: &MembershipRequest<'_>) -> Vec<MembershipChange> {
    let change = |ct: &str, identity: Option<&str>, action, profile_index| MembershipChange {
        clevertap_id: ct.to_owned(),
        identity: identity.map(str::to_owned),
        audience_id: 1001,
        audience_name: Some("High-value customers".to_owned()),
        action,
        ts_ms: batch.envelope.timestamp_ms,
        message_id: batch.envelope.id.clone(),
        profile_index,
        entry_index: 0,
        received_ms: None,
        way: Default::default(),
    };
    vec![
        change(
            "__9f8e7d6c5b4a39281706f5e4d3c2b1a0",
            Some("cust-1001"),
            ChangeAction::Add,
            0,
        ),
        change("__3f1e2d4c5b6a7980", None, ChangeAction::Add, 1),
        change(
            "__0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            Some("cust-1003"),
            ChangeAction::Delete,
            2,
        ),
    ]
}

#[test]
fn materialize_inbox_event_is_the_resolved_sample_batch() {
    let name = "materialize-inbox-resolved.json";
    let event = stream_event(name, Table::Inbox, MATERIALIZE_INBOX_FILTER);
    let record = &event.records[0];
    assert_eq!(record.event_name, "MODIFY");
    check_inbox_keys(name, record);
    let row = shared::stages::stream::inbox_row(record).expect("an inbox row");
    check_inbox_row(name, &row, "resolved");
    let wanted = sample_changes(&membership_batch());
    let changes = row.changes.as_ref().map(|c| decode_changes(c.as_ref()));
    assert!(
        matches!(&changes, Some(Ok(c)) if *c == wanted),
        "{name}: changes are not the sample changes ({changes:?}); set NewImage.changes.B to\n{}\n",
        as_event_b(encode_changes(&wanted))
    );
    let image = &record.change.new_image;
    for attr in ["outcomes", "change_counts", "resolved_ms"] {
        assert!(image.contains_key(attr), "{name}: {attr}");
    }
    // The sync-log index projects what the row carries.
    for attr in table_def(Table::Inbox).indexes[0].include.unwrap() {
        if !["applied", "failure"].contains(attr) {
            assert!(image.contains_key(*attr), "{name}: {attr}");
        }
    }
}

#[test]
fn materialize_segments_event_archives_the_removed_audience() {
    let name = "materialize-segment-archiving.json";
    let event = stream_event(name, Table::Segments, MATERIALIZE_SEGMENTS_FILTER);
    let record = &event.records[0];
    let image = &record.change.new_image;
    let text = |k: &str| match image.get(k) {
        Some(serde_dynamo::AttributeValue::S(v) | serde_dynamo::AttributeValue::N(v)) => v.clone(),
        other => panic!("{name}: {k} is {other:?}"),
    };
    assert_eq!(text("status"), "archiving");
    let Request::AudienceSubscription(remove) =
        mparticle_request("authorize-subscription-remove.json")
    else {
        panic!("remove event");
    };
    assert_eq!(
        text("project_id"),
        remove.account.account_settings["accountId"]
    );
    assert_eq!(text("partner_segment_id"), remove.audience_id.to_string());
    assert_eq!(
        text("sk"),
        shared::store::keys::segments::segment_sk(remove.audience_id)
    );
    assert_eq!(text("pk"), text("project_id"));
}

#[test]
fn publish_event_is_the_partner_sync_event_of_the_first_sample_change() {
    use shared::domain::feed::partner_sync_entry;
    use shared::domain::segment_state::SyncAction;
    use shared::store::feed::{FeedRecord, feed_record_of_image};
    use shared::store::memberships::{EventSegment, event_put};
    use shared::store::segment_item::SegmentLayout;
    let name = "publish-partner-sync.json";
    let batch = membership_batch();
    let change = &sample_changes(&batch)[0];
    let Request::AudienceSubscription(connect) =
        mparticle_request("authorize-subscription-add.json")
    else {
        panic!("add event");
    };
    // As materialize writes it, 1.5 s after the batch's time.
    let put = event_put(
        &batch.account.account_settings["accountId"],
        "ctmp-eu1-events",
        SegmentLayout::of_read(
            1001,
            None,
            shared::store::keys::memberships::DEFAULT_BUCKETS,
        ),
        change,
        SyncAction::Added,
        EventSegment {
            name: "High-value customers (EU)",
            activated_ms: Some(connect.envelope.timestamp_ms),
        },
        batch.envelope.timestamp_ms + 1_500,
    );
    let image: serde_dynamo::Item = put.item.clone().into();
    let expected = serde_json::to_value(&image).unwrap();
    let raw: Value = serde_json::from_str(&event_text(name)).expect("JSON");
    let image = &raw["Records"][0]["dynamodb"]["NewImage"];
    assert_eq!(
        image,
        &expected,
        "{name}: NewImage is the item materialize writes; paste:\n{}",
        serde_json::to_string_pretty(&expected).unwrap()
    );
    let event = stream_event(name, Table::Events, PUBLISH_EVENTS_FILTER);
    let FeedRecord::Sync(row) = feed_record_of_image(&event.records[0].change.new_image).unwrap()
    else {
        panic!("{name}: a Partner Sync record");
    };
    let entry = partner_sync_entry(&row, EVENT_REGION);
    let detail: Value = serde_json::from_str(&entry.detail).unwrap();
    assert_eq!(detail["event_id"], change.change_id());
    assert_eq!(detail["version"], change.version());
    assert_eq!(detail["action"], "Added");
    assert_eq!(detail["partner_segment_id"], 1001);
    assert_eq!(detail["initial_sync"], true, "sent right after the connect");
    assert_eq!(detail["clevertap_id"], change.clevertap_id);
}

/// Every metric name the functions emit, from the records they build (`shared::stages::metrics`).
fn emitted_metric_names() -> std::collections::BTreeSet<String> {
    use shared::domain::invocations::MaterializeBatch;
    use shared::stages::metrics::Metrics;
    use std::time::Duration;
    let m = |f| Metrics::new(Some("ns".into()), f, shared::domain::region::Region::Eu1);
    let reply = shared::stages::http::HttpReply::new(200, String::new());
    let materialize = MaterializeBatch {
        chunk_latency_ms: vec![1.0],
        ..Default::default()
    };
    [
        m("authorize").request(&reply, Duration::ZERO),
        m("resolve").resolve(&Default::default(), Duration::ZERO),
        m("materialize").materialize(&materialize, Duration::ZERO),
        m("publish").publish(
            &shared::domain::invocations::PublishBatch {
                lag_ms: vec![1.0],
                feed_latency_ms: vec![1.0],
                feed_latency_bulk_ms: vec![1.0],
                ..Default::default()
            },
            Duration::ZERO,
        ),
    ]
    .iter()
    .flat_map(|r| r.metrics().iter().map(|m| m.name.to_owned()))
    .collect()
}

#[test]
fn the_dashboard_is_json_and_graphs_only_metrics_the_functions_emit() {
    let t = template();
    let (id, dashboard) = the_one(resources(&t, "AWS::CloudWatch::Dashboard"), "dashboard");
    let sub = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: DashboardBody is !Sub [text, variables]"));
    let mut text = sub[0].as_str().expect("the body text").to_owned();
    for (var, value) in [
        ("${AWS::Region}", "eu-west-1"),
        ("${AWS::StackName}", "ctmp-eu1"),
        ("${CtRegion}", "eu1"),
        ("${ResolveFunction}", "ctmp-eu1-resolve"),
        ("${MaterializeFunction}", "ctmp-eu1-materialize"),
        ("${PublishFunction}", "ctmp-eu1-publish"),
        ("${!", "${"),
    ] {
        text = text.replace(var, value);
    }
    assert!(
        !text.contains("${A")
            && !text.contains("${C")
            && !text.contains("${R")
            && !text.contains("${M")
            && !text.contains("${Pu"),
        "every variable is known"
    );
    let body: Value = serde_json::from_str(&text).expect("the dashboard body is JSON");
    let emitted = emitted_metric_names();
    let widgets = body["widgets"].as_array().expect("widgets");
    assert!(widgets.len() >= 8);
    let mut graphed = std::collections::BTreeSet::new();
    for w in widgets {
        let p = &w["properties"];
        assert_eq!(p["region"], "eu-west-1", "{}", p["title"]);
        for line in p["metrics"].as_array().expect("metrics") {
            let line = line.as_array().unwrap();
            match line[0].as_str() {
                Some("ctmp-eu1") => {
                    let name = line[1].as_str().unwrap();
                    assert!(
                        emitted.contains(name),
                        "{name} is graphed but never emitted"
                    );
                    assert_eq!(
                        (line[2].as_str(), line[4].as_str(), line[5].as_str()),
                        (Some("function"), Some("region"), Some("eu1")),
                        "{name}: both dimensions"
                    );
                    graphed.insert(name.to_owned());
                }
                Some("AWS/Lambda") => assert_eq!(line[1], "IteratorAge"),
                None => {
                    let expr = line[0]["expression"]
                        .as_str()
                        .expect("a metric or an expression");
                    assert!(expr.starts_with("SEARCH('{ctmp-eu1,"), "{expr}");
                }
                other => panic!("unexpected namespace {other:?}"),
            }
        }
    }
    for name in [
        "ProfilesByPartnerId",
        "SkippedAnonymous",
        "PartnerSyncEvents",
        "TransactionConflicts",
        "ChunkLatency",
        "FeedLatency",
        "FeedLatencyBulk",
    ] {
        assert!(graphed.contains(name), "{name} is on the dashboard");
    }
}

#[test]
fn the_metric_alarms_watch_emitted_metrics_in_the_stacks_namespace() {
    let t = template();
    let emitted = emitted_metric_names();
    let mut watched = 0;
    for (id, alarm) in resources(&t, "AWS::CloudWatch::Alarm") {
        let Some(metrics) = alarm["Properties"]["Metrics"].as_array() else {
            continue;
        };
        let returned: Vec<_> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
        assert_eq!(returned.len(), 1, "{id}: one expression is the alarm's");
        for m in metrics.iter().filter(|m| m.get("MetricStat").is_some()) {
            let metric = &m["MetricStat"]["Metric"];
            assert_eq!(
                metric["Namespace"],
                json!({"Ref": "AWS::StackName"}),
                "{id}"
            );
            let name = metric["MetricName"].as_str().unwrap();
            assert!(
                emitted.contains(name),
                "{id} watches {name}, which is never emitted"
            );
            assert_eq!(
                metric["Dimensions"][1],
                json!({"Name": "region", "Value": {"Ref": "CtRegion"}}),
                "{id}: {name}"
            );
            watched += 1;
        }
        assert!(
            alarm["Properties"]["AlarmActions"].is_array(),
            "{id} notifies"
        );
    }
    assert!(
        watched >= 10,
        "skip rate, conflicts and failed chunks are alarmed"
    );
}

/// A table's or index's `WarmThroughput`: the template parameters while pre-warming is on, no
/// property otherwise.
fn warm_throughput() -> Value {
    json!({"Fn::If": ["HasWarmThroughput",
        {"ReadUnitsPerSecond": {"Ref": "WarmReadUnitsPerSecond"}, "WriteUnitsPerSecond": {"Ref": "WarmWriteUnitsPerSecond"}},
        {"Ref": "AWS::NoValue"}]})
}

#[test]
fn pre_warming_is_off_by_default_and_new_segments_get_64_buckets() {
    let t = template();
    assert_eq!(
        t["Parameters"]["WarmWriteUnitsPerSecond"]["Default"],
        json!(0)
    );
    assert_eq!(
        t["Conditions"]["HasWarmThroughput"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "WarmWriteUnitsPerSecond"}, 0]}]})
    );
    assert_eq!(
        t["Parameters"]["SegmentBuckets"]["Default"],
        json!(shared::store::keys::memberships::DEFAULT_BUCKETS)
    );
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["SEGMENT_BUCKETS"],
        json!({"Ref": "SegmentBuckets"})
    );
}

fn tombstone_keys_id(t: &Value) -> &str {
    the_one(
        resources(t, "AWS::SecretsManager::Secret"),
        "the tombstone keys secret",
    )
    .0
}

#[test]
fn only_the_pipeline_and_erase_read_the_tombstone_keys_which_the_stack_keeps() {
    let t = template();
    let id = tombstone_keys_id(&t);
    let secret = &t["Resources"][id];
    // Generated by CloudFormation in the shape `TombstoneKeys::parse` reads, kept with the data.
    let generate = &secret["Properties"]["GenerateSecretString"];
    let template: Value =
        serde_json::from_str(generate["SecretStringTemplate"].as_str().unwrap()).unwrap();
    assert_eq!(template["current"], 1);
    assert_eq!(generate["GenerateStringKey"], "k1");
    assert!(
        generate["PasswordLength"].as_u64().unwrap()
            >= shared::domain::erasure::MIN_TOMBSTONE_KEY_BYTES as u64
    );
    assert_eq!(secret["DeletionPolicy"], "Retain");
    assert_eq!(secret["UpdateReplacePolicy"], "Retain");
    for binary in BINARIES {
        let function = function_id(&t, binary);
        let reads: Vec<Value> = policy_statements(&t, function)
            .iter()
            .filter(|s| {
                one_or_many(&s["Action"])
                    .iter()
                    .any(|a| a.as_str().unwrap().starts_with("secretsmanager:"))
            })
            .cloned()
            .collect();
        let env = &t["Resources"][function]["Properties"]["Environment"]["Variables"];
        if ["resolve", "materialize", "bulk", "erase"].contains(&binary) {
            assert_eq!(reads.len(), 1, "{binary}");
            assert_eq!(
                one_or_many(&reads[0]["Action"]),
                vec![json!("secretsmanager:GetSecretValue")]
            );
            assert_eq!(one_or_many(&reads[0]["Resource"]), vec![json!({"Ref": id})]);
            assert_eq!(env["TOMBSTONE_KEYS_SECRET"], json!({"Ref": id}), "{binary}");
        } else {
            assert!(
                reads.is_empty(),
                "{binary} must not read the tombstone keys"
            );
            assert!(env.get("TOMBSTONE_KEYS_SECRET").is_none(), "{binary}");
        }
    }
}

#[test]
fn the_publisher_reads_only_its_stream_and_puts_only_on_its_bus() {
    let t = template();
    let f = function_id(&t, "publish");
    let (bus, _) = the_one(resources(&t, "AWS::Events::EventBus"), "the engage bus");
    let events = table_id(&t, Table::Events);
    let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
    for s in policy_statements(&t, f) {
        assert!(s.get("Condition").is_none());
        for resource in one_or_many(&s["Resource"]) {
            for action in one_or_many(&s["Action"]) {
                granted.insert((action.as_str().unwrap().to_owned(), resource.to_string()));
            }
        }
    }
    let stream = json!({"Fn::GetAtt": [events, "StreamArn"]}).to_string();
    let streams = json!({"Fn::Sub": format!("${{{events}.Arn}}/stream/*")}).to_string();
    let on_bus = json!({"Fn::GetAtt": [bus, "Arn"]}).to_string();
    let dlq = json!({"Fn::GetAtt": [the_queue(&t), "Arn"]}).to_string();
    let wanted: BTreeSet<(String, String)> = [
        ("dynamodb:DescribeStream", &stream),
        ("dynamodb:GetRecords", &stream),
        ("dynamodb:GetShardIterator", &stream),
        ("dynamodb:ListStreams", &streams),
        ("events:PutEvents", &on_bus),
        ("sqs:SendMessage", &dlq),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r.clone()))
    .collect();
    assert_eq!(
        granted, wanted,
        "publish reads its stream and puts on its bus, nothing else"
    );
    let env = &t["Resources"][f]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["EVENT_BUS_NAME"], json!({"Ref": bus}));
    let outputs = &t["Outputs"];
    assert_eq!(outputs["EngageEventBusName"]["Value"], json!({"Ref": bus}));
    assert_eq!(
        outputs["EngageEventBusArn"]["Value"],
        json!({"Fn::GetAtt": [bus, "Arn"]})
    );
}

/// #34 defect 10: an erasure carried out on a lapsed passcode is answered 200 (mParticle never
/// retries a 403) and alarmed on the metric authorize emits for it.
#[test]
fn an_erasure_on_a_lapsed_passcode_is_alarmed() {
    let t = template();
    let outcome = shared::stages::http::Outcome::ErasureWithoutPasscode.as_str();
    let alarmed = resources(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .any(|(_, a)| {
            let p = &a["Properties"];
            let dims = p["Dimensions"].as_array().cloned().unwrap_or_default();
            let dim = |name: &str| {
                dims.iter()
                    .find(|d| d["Name"] == name)
                    .map(|d| d["Value"].clone())
            };
            p["Namespace"] == json!({"Ref": "AWS::StackName"})
                && p["MetricName"] == "Requests"
                && dims.len() == 4
                && dim("function") == Some(json!("authorize"))
                && dim("region") == Some(json!({"Ref": "CtRegion"}))
                && dim("status") == Some(json!("200"))
                && dim("outcome") == Some(json!(outcome))
                && p["Threshold"] == 0
                && p["AlarmActions"].as_array().is_some_and(|v| !v.is_empty())
        });
    assert!(alarmed, "an alarm on Requests with outcome={outcome}");
}

/// The bulk way's worker: its queue (fair among projects, dead-lettered after five receives) and
/// exactly the table grants of resolve and materialize together, less their streams and their
/// dead-letter queue, plus reading a chunk's row.
#[test]
fn the_bulk_function_works_its_fair_queue_with_the_grants_of_resolve_and_materialize() {
    let t = template();
    let grants = |binary: &str| -> BTreeSet<(String, String)> {
        let mut granted = BTreeSet::new();
        for s in policy_statements(&t, function_id(&t, binary)) {
            for resource in one_or_many(&s["Resource"]) {
                for action in one_or_many(&s["Action"]) {
                    granted.insert((action.as_str().unwrap().to_owned(), resource.to_string()));
                }
            }
        }
        granted
    };
    let stream_or_dlq = |(action, _): &(String, String)| {
        action.starts_with("dynamodb:DescribeStream")
            || action.starts_with("dynamodb:GetRecords")
            || action.starts_with("dynamodb:GetShardIterator")
            || action.starts_with("dynamodb:ListStreams")
            || action == "sqs:SendMessage"
    };
    let mut wanted: BTreeSet<(String, String)> = grants("resolve")
        .into_iter()
        .chain(grants("materialize"))
        .filter(|g| !stream_or_dlq(g))
        .collect();
    let inbox = json!({"Fn::GetAtt": [table_id(&t, Table::Inbox), "Arn"]}).to_string();
    wanted.insert(("dynamodb:GetItem".to_owned(), inbox));
    assert_eq!(grants("bulk"), wanted, "bulk may do exactly this");

    let f = &t["Resources"][function_id(&t, "bulk")]["Properties"];
    let (queue_id, queue) = the_one(
        resources(&t, "AWS::SQS::Queue")
            .into_iter()
            .filter(|(_, q)| {
                q["Properties"]["QueueName"]
                    == json!({"Fn::Sub": "${TablePrefix}-${CtRegion}-bulk"})
            })
            .collect(),
        "the bulk queue",
    );
    let event = &f["Events"]["Chunks"];
    assert_eq!(event["Type"], "SQS");
    assert_eq!(
        event["Properties"]["Queue"],
        json!({"Fn::GetAtt": [queue_id, "Arn"]})
    );
    assert_eq!(event["Properties"]["BatchSize"], 1);
    assert_eq!(
        event["Properties"]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        event["Properties"]["ScalingConfig"]["MaximumConcurrency"],
        json!({"Ref": "BulkConcurrency"})
    );
    // ≈ 500 changes/s a worker, ≈ 2 write units a change on memberships: 34 workers take ≈ 85 %
    // of a table's default 40,000 units/s, so imports never throttle the live way's writes.
    assert_eq!(t["Parameters"]["BulkConcurrency"]["Default"], 34);
    let q = &queue["Properties"];
    assert_eq!(q["RedrivePolicy"]["maxReceiveCount"], 5);
    let dlq = q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap();
    assert_eq!(
        t["Resources"][dlq]["Properties"]["MessageRetentionPeriod"],
        1_209_600
    );
    // A message in flight stays hidden for six times the function's timeout.
    assert!(q["VisibilityTimeout"].as_i64().unwrap() >= 6 * f["Timeout"].as_i64().unwrap());
    // Authorize queues on it by the name the stack gives it.
    let authorize = &t["Resources"][function_id(&t, "authorize")]["Properties"];
    assert_eq!(
        authorize["Environment"]["Variables"]["BULK_QUEUE"],
        json!({"Fn::Sub": "${TablePrefix}-{region}-bulk"})
    );
    // Alarms: its dead letters, and the live way's freshness.
    let alarms = resources(&t, "AWS::CloudWatch::Alarm");
    assert!(alarms.iter().any(|(_, a)| {
        a["Properties"]["Dimensions"][0]["Value"] == json!({"Fn::GetAtt": [dlq, "QueueName"]})
    }));
    let (_, fresh) = the_one(
        alarms
            .into_iter()
            .filter(|(_, a)| a["Properties"]["MetricName"] == "ChunkLatency")
            .collect(),
        "freshness alarm",
    );
    let p = &fresh["Properties"];
    assert_eq!(
        p["Dimensions"][0],
        json!({"Name": "function", "Value": "materialize"})
    );
    assert_eq!(p["ExtendedStatistic"], "p99");
    assert_eq!(p["Threshold"], 5000);
    // And end to end to the bus, on the live way's own metric (an import never raises it).
    let (_, feed) = the_one(
        resources(&t, "AWS::CloudWatch::Alarm")
            .into_iter()
            .filter(|(_, a)| a["Properties"]["MetricName"] == "FeedLatency")
            .collect(),
        "live feed freshness alarm",
    );
    let p = &feed["Properties"];
    assert_eq!(
        p["Dimensions"][0],
        json!({"Name": "function", "Value": "publish"})
    );
    assert_eq!(p["Namespace"], json!({"Ref": "AWS::StackName"}));
    assert_eq!(
        (p["ExtendedStatistic"].as_str(), p["Threshold"].as_i64()),
        (Some("p99"), Some(6000))
    );
}

/// The bulk function's event: one queue message naming the membership batch's chunk, in the
/// project's message group, on eu1's bulk queue.
#[test]
fn bulk_event_is_the_queued_chunk_of_the_sample_batch() {
    let event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(&event_text("bulk-queued-chunk.json")).expect("an SQS event");
    assert_eq!(event.records.len(), 1);
    let record = &event.records[0];
    let queued: shared::bulk::QueuedChunk =
        serde_json::from_str(record.body.as_deref().unwrap()).expect("a queued chunk");
    assert_eq!(queued.message_id, membership_batch().envelope.id);
    assert_eq!(queued.region, EVENT_REGION);
    assert_eq!(queued.chunk, 0);
    assert_eq!(
        record.attributes.get("MessageGroupId"),
        Some(&queued.project_id),
        "the fair queue's tenant is the project"
    );
    assert_eq!(
        record.event_source_arn.as_deref(),
        Some(format!("arn:aws:sqs:eu-west-1:123456789012:{EVENT_PREFIX}-eu1-bulk").as_str())
    );
}
