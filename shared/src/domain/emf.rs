//! CloudWatch Embedded Metric Format (EMF): a JSON log line that CloudWatch Logs turns into
//! metrics. Pure: builds the line; the stage's edge prints it.
//!
//! The format (AWS, "Specification: Embedded metric format"): a root object whose `_aws` member
//! holds `Timestamp` (ms since the epoch) and `CloudWatchMetrics`, a list of directives, each with a
//! `Namespace`, `Dimensions` (a list of dimension sets, each a list of ≤ 30 dimension names) and
//! `Metrics` (≤ 100 definitions of `Name` and `Unit`); every dimension and metric named there is a
//! member of the root object: a dimension's value a string (≤ 1,024 characters), a metric's a
//! number or a list of ≤ 100 numbers.
//!
//! Hand-written over serde_json rather than taken from a crate: the crates for it are either a
//! global `metrics` recorder (`metrics_cloudwatch_embedded`) or a wide-event framework
//! (`metrique`), where one line of a fixed shape per invocation is all we need.

use serde_json::{Map, Value, json};

/// Dimension names per dimension set, at most.
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
/// Metric definitions per directive, at most.
pub const MAX_METRICS: usize = 100;
/// Values of one metric, at most.
pub const MAX_VALUES: usize = 100;
/// A dimension value's length in characters, at most.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 1024;

/// The CloudWatch units this project emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One metric of a record: a name, a unit and one or more values.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub values: Vec<f64>,
}

/// One EMF record: dimensions with their values, the dimension sets to aggregate by, metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    namespace: String,
    timestamp_ms: i64,
    dimensions: Vec<(&'static str, String)>,
    dimension_sets: Vec<Vec<&'static str>>,
    metrics: Vec<Metric>,
}

impl Record {
    /// A record whose every metric is aggregated by all of `dimensions` (the first dimension set).
    pub fn new(
        namespace: impl Into<String>,
        timestamp_ms: i64,
        dimensions: &[(&'static str, &str)],
    ) -> Self {
        let dimensions: Vec<_> = dimensions
            .iter()
            .take(MAX_DIMENSIONS_PER_SET)
            .map(|(k, v)| (*k, v.chars().take(MAX_DIMENSION_VALUE_CHARS).collect()))
            .collect();
        Self {
            namespace: namespace.into(),
            timestamp_ms,
            dimension_sets: vec![dimensions.iter().map(|(k, _)| *k).collect()],
            dimensions,
            metrics: Vec::new(),
        }
    }

    /// Also aggregates every metric by the last dimension set plus `name` = `value`: after
    /// `with_dimension("status", …)` and `with_dimension("outcome", …)` the sets are
    /// (function, region), (…, status) and (…, status, outcome).
    pub fn with_dimension(mut self, name: &'static str, value: &str) -> Self {
        let mut set = self.dimension_sets.last().cloned().unwrap_or_default();
        if set.len() < MAX_DIMENSIONS_PER_SET {
            set.push(name);
            self.dimensions.push((
                name,
                value.chars().take(MAX_DIMENSION_VALUE_CHARS).collect(),
            ));
            self.dimension_sets.push(set);
        }
        self
    }

    /// Adds a count.
    pub fn count(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.values(name, Unit::Count, [value as f64])
    }

    /// Adds a metric with one or more values (the newest [`MAX_VALUES`] are kept); a metric
    /// without values is left out.
    pub fn values(
        &mut self,
        name: &'static str,
        unit: Unit,
        values: impl IntoIterator<Item = f64>,
    ) -> &mut Self {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.len() > MAX_VALUES {
            values.drain(..values.len() - MAX_VALUES);
        }
        if !values.is_empty() && self.metrics.len() < MAX_METRICS {
            self.metrics.push(Metric { name, unit, values });
        }
        self
    }

    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The record as one line of JSON (no newline).
    pub fn to_line(&self) -> String {
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": self.dimension_sets,
                    "Metrics": self.metrics.iter()
                        .map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        for (k, v) in &self.dimensions {
            root.insert((*k).into(), Value::String(v.clone()));
        }
        for m in &self.metrics {
            let value = match m.values.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            root.insert(m.name.into(), value);
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_every_dimension_and_metric_at_the_root() {
        let mut r = Record::new(
            "ns",
            1_700_000_000_000,
            &[("function", "resolve"), ("region", "eu1")],
        )
        .with_dimension("status", "200");
        r.count("Requests", 1)
            .values("Latency", Unit::Milliseconds, [1.5, 2.0])
            .values("Nothing", Unit::Count, []);
        let v: Value = serde_json::from_str(&r.to_line()).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(d["Namespace"], "ns");
        assert_eq!(
            d["Dimensions"],
            json!([["function", "region"], ["function", "region", "status"]])
        );
        assert_eq!(
            d["Metrics"],
            json!([{"Name": "Requests", "Unit": "Count"}, {"Name": "Latency", "Unit": "Milliseconds"}])
        );
        assert_eq!(
            (v["function"].as_str(), v["status"].as_str()),
            (Some("resolve"), Some("200"))
        );
        assert_eq!(v["Requests"], 1.0);
        assert_eq!(v["Latency"], json!([1.5, 2.0]));
        assert!(
            v.get("Nothing").is_none(),
            "a metric without values is left out"
        );
    }

    #[test]
    fn limits_of_the_format_hold() {
        let long = "x".repeat(5_000);
        let mut r = Record::new("ns", 0, &[("function", long.as_str())]);
        r.values("Many", Unit::Count, (0..250).map(f64::from));
        r.values("NotFinite", Unit::Count, [f64::NAN]);
        let v: Value = serde_json::from_str(&r.to_line()).unwrap();
        assert_eq!(
            v["function"].as_str().unwrap().chars().count(),
            MAX_DIMENSION_VALUE_CHARS
        );
        let many = v["Many"].as_array().unwrap();
        assert_eq!(many.len(), MAX_VALUES);
        assert_eq!(many[0], 150.0, "the newest values are kept");
        assert!(v.get("NotFinite").is_none());
    }
}
