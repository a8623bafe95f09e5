//! Per-partition-key pricing of DynamoDB calls, as AWS bills them (pure: no I/O).
//!
//! The benchmark meter sees every request and response in DynamoDB JSON and charges read and
//! write capacity units here to the partition key they land on — of the base table and of each
//! global secondary index — because AWS caps every partition key at 1,000 WCU/s and 3,000 RCU/s,
//! and a hot key throttles a first sync long before the table's total capacity does.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// An item in DynamoDB JSON, as on the wire: attribute name → `{"S": "..."}` and the like.
pub type WireItem = Map<String, Value>;

/// The first-sync rate the load is quoted at, in membership changes per second.
pub const CHANGES_PER_SECOND: f64 = 17_000.0;

/// AWS's throughput ceiling per partition key, which `load` is quoted against.
const MAX_WCU_PER_KEY: f64 = 1_000.0;
const MAX_RCU_PER_KEY: f64 = 3_000.0;
/// One write unit covers up to 1 KB, one strongly consistent read unit up to 4 KB.
const WRITE_UNIT_BYTES: usize = 1024;
const READ_UNIT_BYTES: usize = 4096;
/// AWS adds this to every GSI entry when sizing the index write.
const INDEX_ENTRY_OVERHEAD: usize = 100;
/// A list or map costs this much on top of its elements.
const CONTAINER_OVERHEAD: usize = 3;

/// Which attributes a GSI copies from the base item besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    KeysOnly,
    Include(Vec<String>),
    All,
}

/// A global secondary index: its own key and what it projects.
#[derive(Debug, Clone)]
pub struct IndexSchema {
    pub name: String,
    pub partition_key: String,
    pub sort_key: Option<String>,
    pub projection: Projection,
}

/// A table's key and its GSIs; `name` is a logical label (e.g. "memberships"), not the AWS name.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub name: String,
    pub partition_key: String,
    pub sort_key: Option<String>,
    pub indexes: Vec<IndexSchema>,
}

impl TableSchema {
    fn index(&self, name: &str) -> Option<&IndexSchema> {
        self.indexes.iter().find(|index| index.name == name)
    }

    /// The charge target: the table label, or "table/index".
    fn target(&self, index: Option<&str>) -> String {
        match index {
            None => self.name.clone(),
            Some(index) => format!("{}/{index}", self.name),
        }
    }

    /// The partition key attribute of the table (index None) or of the named index.
    fn partition_attribute(&self, index: Option<&str>) -> Option<&str> {
        match index {
            None => Some(&self.partition_key),
            Some(name) => self.index(name).map(|index| index.partition_key.as_str()),
        }
    }
}

/// Where a charge lands: `target` is the table label ("events") or "table/index"
/// ("events/by_segment"); `key` the partition key value as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    pub target: String,
    pub key: String,
}

/// Capacity units one call costs one partition key.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub key: KeyId,
    pub wcu: f64,
    pub rcu: f64,
}

impl Charge {
    fn write(target: String, key: String, wcu: f64) -> Self {
        Self {
            key: KeyId { target, key },
            wcu,
            rcu: 0.0,
        }
    }

    fn read(target: String, key: String, rcu: f64) -> Self {
        Self {
            key: KeyId { target, key },
            wcu: 0.0,
            rcu,
        }
    }
}

/// Size of one DynamoDB JSON value (`{"S": "abc"}` → 3), by AWS's item-size rules.
///
/// Anything that is not a typed value counts 0, so a malformed item under-prices rather than
/// stopping the meter.
pub fn attribute_value_size(v: &Value) -> usize {
    v.as_object().map_or(0, |typed| {
        typed
            .iter()
            .map(|(ty, payload)| typed_size(ty, payload))
            .sum()
    })
}

fn typed_size(ty: &str, payload: &Value) -> usize {
    let each = |size: fn(&str) -> usize| {
        payload.as_array().map_or(0, |set| {
            set.iter().filter_map(Value::as_str).map(size).sum()
        })
    };
    match ty {
        "S" => payload.as_str().map_or(0, str::len),
        "N" => payload.as_str().map_or(0, number_size),
        "B" => payload.as_str().map_or(0, binary_size),
        "BOOL" | "NULL" => 1,
        "SS" => each(str::len),
        "NS" => each(number_size),
        "BS" => each(binary_size),
        "L" => {
            CONTAINER_OVERHEAD
                + payload.as_array().map_or(0, |list| {
                    list.iter().map(|e| 1 + attribute_value_size(e)).sum()
                })
        }
        "M" => {
            CONTAINER_OVERHEAD
                + payload.as_object().map_or(0, |map| {
                    map.iter()
                        .map(|(name, e)| 1 + name.len() + attribute_value_size(e))
                        .sum()
                })
        }
        _ => 0,
    }
}

/// AWS stores numbers as base-100 digits: ceil(significant digits / 2) + 1 bytes, where sign,
/// decimal point, exponent and leading/trailing zeros don't count.
fn number_size(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

/// Decoded length of base64 text; padding and unpadded tails both come out right.
fn binary_size(text: &str) -> usize {
    text.trim_end().trim_end_matches('=').len() * 3 / 4
}

/// Sum over attributes of name bytes + value size.
pub fn item_size(item: &WireItem) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + attribute_value_size(value))
        .sum()
}

/// Write units for an item of `bytes`: ceil(bytes / 1 KB), at least 1.
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as f64
}

/// Read units for `bytes`: ceil(bytes / 4 KB), at least 1; half that if eventually consistent.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// The S, N or B payload of a key value as text (B stays base64); None for non-key types.
pub fn key_text(v: &Value) -> Option<String> {
    let typed = v.as_object()?;
    ["S", "N", "B"]
        .into_iter()
        .find_map(|ty| typed.get(ty)?.as_str().map(str::to_owned))
}

/// The item's partition key, of the table (index None) or of the named index, as text.
pub fn partition_value(
    schema: &TableSchema,
    index: Option<&str>,
    item: &WireItem,
) -> Option<String> {
    item.get(schema.partition_attribute(index)?)
        .and_then(key_text)
}

/// Units of a write given the item before (`old`) and after (`new`), base table first, then each
/// index in schema order (for a moved index entry: the leave, then the enter).
///
/// Put and update are billed on the larger of before and after; a transaction doubles the base
/// table write only, since index maintenance is not part of the transaction's two-phase protocol.
pub fn price_write(
    schema: &TableSchema,
    old: Option<&WireItem>,
    new: Option<&WireItem>,
    transactional: bool,
) -> Vec<Charge> {
    if old.is_none() && new.is_none() {
        return Vec::new();
    }
    let bytes = old.map_or(0, item_size).max(new.map_or(0, item_size));
    let factor = if transactional { 2.0 } else { 1.0 };
    let key = new
        .and_then(|item| partition_value(schema, None, item))
        .or_else(|| old.and_then(|item| partition_value(schema, None, item)))
        .unwrap_or_default();
    let mut charges = vec![Charge::write(
        schema.target(None),
        key,
        write_units(bytes) * factor,
    )];
    for index in &schema.indexes {
        charges.extend(price_index_write(schema, index, old, new));
    }
    charges
}

/// What one GSI bills for a base-table write: entering, leaving, rewriting or moving its entry.
fn price_index_write(
    schema: &TableSchema,
    index: &IndexSchema,
    old: Option<&WireItem>,
    new: Option<&WireItem>,
) -> Vec<Charge> {
    let target = schema.target(Some(&index.name));
    let before = old.and_then(|item| index_entry(schema, index, item));
    let after = new.and_then(|item| index_entry(schema, index, item));
    let charge = |entry: &WireItem| {
        let key = entry
            .get(&index.partition_key)
            .and_then(key_text)
            .unwrap_or_default();
        Charge::write(target.clone(), key, write_units(index_entry_size(entry)))
    };
    match (before, after) {
        (None, None) => Vec::new(),
        (None, Some(after)) => vec![charge(&after)],
        (Some(before), None) => vec![charge(&before)],
        (Some(before), Some(after)) if index_key(index, &before) == index_key(index, &after) => {
            if before == after {
                Vec::new()
            } else {
                vec![charge(&after)]
            }
        }
        (Some(before), Some(after)) => vec![charge(&before), charge(&after)],
    }
}

/// The item's entry in the index, or None if the item lacks the index key (sparse index).
///
/// A key attribute must be a scalar (S, N or B) to count: DynamoDB rejects anything else there.
fn index_entry(schema: &TableSchema, index: &IndexSchema, item: &WireItem) -> Option<WireItem> {
    let has_key = |attr: &str| item.get(attr).and_then(key_text).is_some();
    if !has_key(&index.partition_key) || index.sort_key.as_deref().is_some_and(|sk| !has_key(sk)) {
        return None;
    }
    let projected: &[String] = match &index.projection {
        Projection::All => return Some(item.clone()),
        Projection::KeysOnly => &[],
        Projection::Include(attributes) => attributes,
    };
    let keys = [
        Some(&index.partition_key),
        index.sort_key.as_ref(),
        Some(&schema.partition_key),
        schema.sort_key.as_ref(),
    ];
    let entry = keys
        .into_iter()
        .flatten()
        .chain(projected)
        .filter_map(|attr| Some((attr.clone(), item.get(attr)?.clone())))
        .collect();
    Some(entry)
}

fn index_entry_size(entry: &WireItem) -> usize {
    item_size(entry) + INDEX_ENTRY_OVERHEAD
}

fn index_key<'a>(
    index: &IndexSchema,
    entry: &'a WireItem,
) -> (Option<&'a Value>, Option<&'a Value>) {
    (
        entry.get(&index.partition_key),
        index.sort_key.as_deref().and_then(|sk| entry.get(sk)),
    )
}

/// A conditional write whose condition failed still costs the write of the existing item
/// (1 unit if there is none) on the base table; no index is touched.
pub fn price_failed_write(schema: &TableSchema, old: Option<&WireItem>, key: &WireItem) -> Charge {
    Charge::write(
        schema.target(None),
        partition_value(schema, None, key).unwrap_or_default(),
        write_units(old.map_or(0, item_size)),
    )
}

/// GetItem: billed on the item found, and at the minimum when nothing is found.
pub fn price_point_read(
    schema: &TableSchema,
    key: &WireItem,
    found: Option<&WireItem>,
    consistent: bool,
) -> Charge {
    Charge::read(
        schema.target(None),
        partition_value(schema, None, key).unwrap_or_default(),
        read_units(found.map_or(0, item_size), consistent),
    )
}

/// Query: one rounding over all the bytes read, not per item.
pub fn price_query(
    schema: &TableSchema,
    index: Option<&str>,
    partition_value: &str,
    bytes_read: usize,
    consistent: bool,
) -> Charge {
    Charge::read(
        schema.target(index),
        partition_value.to_owned(),
        read_units(bytes_read, consistent),
    )
}

/// The value a KeyConditionExpression compares with `=` to the partition key attribute of the
/// table (index None) or of the named index, as text; `#alias` and `:value` resolve through
/// `names` and `values`. Either operand order is accepted; None when nothing matches.
pub fn query_partition_value(
    schema: &TableSchema,
    index: Option<&str>,
    key_condition: &str,
    names: Option<&WireItem>,
    values: Option<&WireItem>,
) -> Option<String> {
    let attribute = schema.partition_attribute(index)?;
    let name_of = |token: &str| -> Option<String> {
        if token.starts_with('#') {
            names?.get(token)?.as_str().map(str::to_owned)
        } else if token.starts_with(':') || token == "," {
            None
        } else {
            Some(token.to_owned())
        }
    };
    tokenize(key_condition).windows(3).find_map(|w| {
        let [left, "=", right] = *w else { return None };
        let (name, value) = if right.starts_with(':') {
            (left, right)
        } else {
            (right, left)
        };
        if name_of(name)? != attribute {
            return None;
        }
        values?.get(value).and_then(key_text)
    })
}

/// Splits an expression into operands, comparators and commas; parentheses only separate,
/// since which side of `=` an operand sits on is all that matters here.
fn tokenize(expression: &str) -> Vec<&str> {
    const SEPARATORS: &str = "()=<>,";
    let mut tokens = Vec::new();
    let mut rest = expression;
    while let Some(c) = rest.chars().next() {
        let len = if c.is_whitespace() || c == '(' || c == ')' {
            rest = &rest[c.len_utf8()..];
            continue;
        } else if ["<=", ">=", "<>"].iter().any(|op| rest.starts_with(op)) {
            2
        } else if SEPARATORS.contains(c) {
            1
        } else {
            rest.find(|ch: char| ch.is_whitespace() || SEPARATORS.contains(ch))
                .unwrap_or(rest.len())
        };
        tokens.push(&rest[..len]);
        rest = &rest[len..];
    }
    tokens
}

/// A key's load at the quoted first-sync rate, in multiples of AWS's per-key cap (> 1 throttles).
pub fn load(wcu_per_change: f64, rcu_per_change: f64) -> f64 {
    (wcu_per_change / MAX_WCU_PER_KEY + rcu_per_change / MAX_RCU_PER_KEY) * CHANGES_PER_SECOND
}

/// The shape of a key with the project id and numbers masked, so keys group by kind.
pub fn key_pattern(key: &str, project_id: &str) -> String {
    // The project id goes first: it may contain digits of its own.
    let key = if project_id.is_empty() {
        key.to_owned()
    } else {
        key.replace(project_id, "<project>")
    };
    let mut pattern = String::with_capacity(key.len());
    let mut in_number = false;
    for c in key.chars() {
        if !c.is_ascii_digit() {
            pattern.push(c);
        } else if !in_number {
            pattern.push_str("<n>");
        }
        in_number = c.is_ascii_digit();
    }
    pattern
}

#[derive(Debug, Clone, Copy, Default)]
struct Units {
    wcu: f64,
    rcu: f64,
}

impl Units {
    fn add(&mut self, charge: &Charge) {
        self.wcu += charge.wcu;
        self.rcu += charge.rcu;
    }
}

#[derive(Debug, Clone, Default)]
struct KeyTotals {
    total: Units,
    /// Units by window index, so bursts show even when the average is tame.
    windows: BTreeMap<u64, Units>,
}

/// Accumulates charges per key, overall and per window of `window_changes` membership changes.
#[derive(Debug, Clone)]
pub struct HeatMap {
    window_changes: u64,
    changes: u64,
    keys: BTreeMap<KeyId, KeyTotals>,
}

impl HeatMap {
    /// A window of 0 changes is taken as 1, so every window index stays defined.
    pub fn new(window_changes: u64) -> Self {
        Self {
            window_changes: window_changes.max(1),
            changes: 0,
            keys: BTreeMap::new(),
        }
    }

    /// Membership changes seen so far grow by `n`.
    pub fn add_changes(&mut self, n: u64) {
        self.changes = self.changes.saturating_add(n);
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Adds to the key's totals and to the current window (changes so far / window size).
    pub fn charge(&mut self, c: &Charge) {
        let window = self.changes / self.window_changes;
        let totals = self.keys.entry(c.key.clone()).or_default();
        totals.total.add(c);
        totals.windows.entry(window).or_default().add(c);
    }

    pub fn report(&self) -> HeatReport {
        let heats: Vec<KeyHeat> = self
            .keys
            .iter()
            .map(|(key, totals)| self.key_heat(key, totals))
            .collect();
        // `heats` is sorted by KeyId, hence by target first: each target is one run.
        let targets = heats
            .chunk_by(|a, b| a.key.target == b.key.target)
            .filter_map(|run| {
                let hottest = hottest(run)?.clone();
                Some(TargetHeat {
                    target: hottest.key.target.clone(),
                    keys: run.len(),
                    wcu: run.iter().map(|h| h.wcu).sum(),
                    rcu: run.iter().map(|h| h.rcu).sum(),
                    hottest,
                })
            })
            .collect();
        HeatReport {
            changes: self.changes,
            wcu: heats.iter().map(|h| h.wcu).sum(),
            rcu: heats.iter().map(|h| h.rcu).sum(),
            targets,
            hottest: hottest(&heats).cloned(),
        }
    }

    fn key_heat(&self, key: &KeyId, totals: &KeyTotals) -> KeyHeat {
        let per_change = |units: f64| {
            if self.changes == 0 {
                0.0
            } else {
                units / self.changes as f64
            }
        };
        let wcu_per_change = per_change(totals.total.wcu);
        let rcu_per_change = per_change(totals.total.rcu);
        let worst_window_load = totals
            .windows
            .iter()
            .filter_map(|(&window, units)| {
                let changes = self.counted_changes(window)? as f64;
                Some(load(units.wcu / changes, units.rcu / changes))
            })
            .fold(0.0, f64::max);
        KeyHeat {
            key: key.clone(),
            wcu: totals.total.wcu,
            rcu: totals.total.rcu,
            wcu_per_change,
            rcu_per_change,
            load: load(wcu_per_change, rcu_per_change),
            worst_window_load,
        }
    }

    /// Changes that fell in `window`, or None if the window is too thin to rate: under half a
    /// window (a partial tail would exaggerate a burst), unless it holds every change there is.
    fn counted_changes(&self, window: u64) -> Option<u64> {
        let start = window.saturating_mul(self.window_changes);
        let changes = self.changes.saturating_sub(start).min(self.window_changes);
        let only_window = self.changes <= self.window_changes;
        let counted =
            changes > 0 && (changes.saturating_mul(2) >= self.window_changes || only_window);
        counted.then_some(changes)
    }
}

/// The hottest by load; ties (e.g. before any change is counted) go to the larger raw units
/// weighted by the caps, then to the first key in order.
fn hottest(heats: &[KeyHeat]) -> Option<&KeyHeat> {
    let weight = |h: &KeyHeat| h.wcu / MAX_WCU_PER_KEY + h.rcu / MAX_RCU_PER_KEY;
    heats.iter().reduce(|best, h| {
        let hotter = h
            .load
            .total_cmp(&best.load)
            .then(weight(h).total_cmp(&weight(best)))
            .is_gt();
        if hotter { h } else { best }
    })
}

/// One key's totals and what they mean at the quoted rate.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyHeat {
    pub key: KeyId,
    pub wcu: f64,
    pub rcu: f64,
    pub wcu_per_change: f64,
    pub rcu_per_change: f64,
    pub load: f64,
    pub worst_window_load: f64,
}

/// One table or index: how many keys it was charged on, its totals and its hottest key.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHeat {
    pub target: String,
    pub keys: usize,
    pub wcu: f64,
    pub rcu: f64,
    pub hottest: KeyHeat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeatReport {
    pub changes: u64,
    pub wcu: f64,
    pub rcu: f64,
    /// Sorted by target name.
    pub targets: Vec<TargetHeat>,
    /// The key with the highest load over all targets.
    pub hottest: Option<KeyHeat>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(value: Value) -> WireItem {
        match value {
            Value::Object(map) => map,
            other => panic!("not an item: {other}"),
        }
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    fn index(projection: Projection) -> IndexSchema {
        IndexSchema {
            name: "by_segment".into(),
            partition_key: "seg".into(),
            sort_key: Some("at".into()),
            projection,
        }
    }

    fn schema_with(projection: Projection) -> TableSchema {
        TableSchema {
            name: "events".into(),
            partition_key: "pk".into(),
            sort_key: Some("sk".into()),
            indexes: vec![index(projection)],
        }
    }

    /// Table `events` (pk, sk) with GSI `by_segment` (seg, at) projecting `name`.
    fn schema() -> TableSchema {
        schema_with(Projection::Include(vec!["name".into()]))
    }

    /// A base item of exactly `bytes`, outside the index.
    fn item_of_size(pk: &str, bytes: usize) -> WireItem {
        let fixed = item_size(&item(
            json!({"pk": {"S": pk}, "sk": {"S": "s"}, "d": {"S": ""}}),
        ));
        let it =
            item(json!({"pk": {"S": pk}, "sk": {"S": "s"}, "d": {"S": "x".repeat(bytes - fixed)}}));
        assert_eq!(item_size(&it), bytes);
        it
    }

    fn key(target: &str, key: &str) -> KeyId {
        KeyId {
            target: target.into(),
            key: key.into(),
        }
    }

    fn size(v: Value) -> usize {
        attribute_value_size(&v)
    }

    #[test]
    fn scalar_sizes() {
        assert_eq!(size(json!({"S": "abc"})), 3);
        assert_eq!(size(json!({"S": "é"})), 2, "UTF-8 bytes, not chars");
        assert_eq!(size(json!({"S": ""})), 0);
        assert_eq!(size(json!({"BOOL": true})), 1);
        assert_eq!(size(json!({"NULL": true})), 1);
        assert_eq!(size(json!({"B": "YWJj"})), 3);
        assert_eq!(size(json!({"B": "YQ=="})), 1);
        assert_eq!(size(json!({"B": "YWI="})), 2);
        assert_eq!(size(json!({"B": "YWI"})), 2, "unpadded base64");
        assert_eq!(size(json!("not typed")), 0);
    }

    #[test]
    fn number_sizes_count_significant_digits() {
        assert_eq!(size(json!({"N": "12345"})), 4);
        assert_eq!(size(json!({"N": "123456"})), 4);
        assert_eq!(size(json!({"N": "1234567"})), 5);
        assert_eq!(size(json!({"N": "-0.0100"})), 2);
        assert_eq!(
            size(json!({"N": "1000000"})),
            2,
            "trailing zeros don't count"
        );
        assert_eq!(size(json!({"N": "0"})), 2, "at least one digit");
        assert_eq!(size(json!({"N": "12.5E+3"})), 3, "exponent doesn't count");
    }

    #[test]
    fn set_list_and_map_sizes() {
        assert_eq!(size(json!({"SS": ["ab", "c"]})), 3);
        assert_eq!(size(json!({"NS": ["1", "22", "-300"]})), 6);
        assert_eq!(size(json!({"BS": ["YQ==", "YWJj"]})), 4);
        // 3 + (1 + 2) + (1 + 2)
        assert_eq!(size(json!({"L": [{"S": "ab"}, {"N": "1"}]})), 9);
        // 3 + (1 + "a" + 2) + (1 + "bb" + 1)
        assert_eq!(
            size(json!({"M": {"a": {"S": "xy"}, "bb": {"BOOL": false}}})),
            11
        );
        assert_eq!(size(json!({"M": {}})), 3);
        assert_eq!(size(json!({"L": []})), 3);
        // 3 + (1 + 3 + (3 + (1 + 1)))
        assert_eq!(size(json!({"M": {"abc": {"L": [{"NULL": true}]}}})), 12);
    }

    #[test]
    fn item_size_adds_names_and_values() {
        let it = item(json!({"pk": {"S": "a"}, "n": {"N": "12"}}));
        assert_eq!(item_size(&it), 2 + 1 + 1 + 2);
        assert_eq!(item_size(&Map::new()), 0);
    }

    #[test]
    fn write_units_round_up_per_kilobyte() {
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1), 1.0);
        assert_eq!(write_units(item_size(&item_of_size("p", 1024))), 1.0);
        assert_eq!(write_units(item_size(&item_of_size("p", 1025))), 2.0);
        assert_eq!(write_units(2048), 2.0);
        let charges = price_write(&schema(), None, Some(&item_of_size("p", 1025)), false);
        assert_eq!(
            charges,
            vec![Charge::write("events".into(), "p".into(), 2.0)]
        );
    }

    #[test]
    fn read_units_round_up_per_four_kilobytes() {
        assert_eq!(read_units(0, true), 1.0);
        assert_eq!(read_units(0, false), 0.5);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(9000, true), 3.0);
        assert_eq!(read_units(9000, false), 1.5);
    }

    #[test]
    fn key_text_and_partition_value() {
        assert_eq!(key_text(&json!({"S": "a"})), Some("a".into()));
        assert_eq!(key_text(&json!({"N": "12"})), Some("12".into()));
        assert_eq!(key_text(&json!({"B": "YQ=="})), Some("YQ==".into()));
        assert_eq!(key_text(&json!({"BOOL": true})), None);
        assert_eq!(key_text(&json!({"SS": ["a"]})), None);
        let it = item(json!({"pk": {"S": "p"}, "seg": {"N": "7"}}));
        assert_eq!(partition_value(&schema(), None, &it), Some("p".into()));
        assert_eq!(
            partition_value(&schema(), Some("by_segment"), &it),
            Some("7".into())
        );
        assert_eq!(partition_value(&schema(), Some("nope"), &it), None);
        assert_eq!(partition_value(&schema(), None, &Map::new()), None);
    }

    #[test]
    fn no_items_no_charge() {
        assert!(price_write(&schema(), None, None, true).is_empty());
    }

    #[test]
    fn transactional_put_doubles_base_only() {
        let new =
            item(json!({"pk": {"S": "p"}, "sk": {"S": "s"}, "seg": {"S": "g"}, "at": {"N": "1"}}));
        let charges = price_write(&schema(), None, Some(&new), true);
        assert_eq!(
            charges,
            vec![
                Charge::write("events".into(), "p".into(), 2.0),
                Charge::write("events/by_segment".into(), "g".into(), 1.0),
            ]
        );
    }

    #[test]
    fn update_is_billed_on_the_larger_image() {
        let small = item_of_size("p", 900);
        let large = item_of_size("p", 1100);
        let grow = price_write(&schema(), Some(&small), Some(&large), false);
        assert_eq!(grow, vec![Charge::write("events".into(), "p".into(), 2.0)]);
        let shrink = price_write(&schema(), Some(&large), Some(&small), false);
        assert_eq!(
            shrink,
            vec![Charge::write("events".into(), "p".into(), 2.0)]
        );
        let same = price_write(&schema(), Some(&small), Some(&small), false);
        assert_eq!(same, vec![Charge::write("events".into(), "p".into(), 1.0)]);
    }

    #[test]
    fn delete_is_billed_on_the_old_item_and_its_key() {
        let old = item_of_size("gone", 3000);
        let charges = price_write(&schema(), Some(&old), None, false);
        assert_eq!(
            charges,
            vec![Charge::write("events".into(), "gone".into(), 3.0)]
        );
    }

    fn member(seg: &str, at: &str, name: &str, other: &str) -> WireItem {
        item(json!({
            "pk": {"S": "p"}, "sk": {"S": "s"},
            "seg": {"S": seg}, "at": {"N": at},
            "name": {"S": name}, "other": {"S": other},
        }))
    }

    fn index_charges(old: Option<&WireItem>, new: Option<&WireItem>) -> Vec<Charge> {
        let charges = price_write(&schema(), old, new, false);
        assert_eq!(charges[0].key.target, "events", "base table first");
        charges[1..].to_vec()
    }

    #[test]
    fn gsi_insert_charges_the_new_index_key() {
        let new = member("g1", "5", "ann", "x");
        assert_eq!(
            index_charges(None, Some(&new)),
            vec![Charge::write("events/by_segment".into(), "g1".into(), 1.0)]
        );
    }

    #[test]
    fn gsi_projected_change_costs_one_write() {
        let old = member("g1", "5", "ann", "x");
        let new = member("g1", "5", "bob", "x");
        assert_eq!(
            index_charges(Some(&old), Some(&new)),
            vec![Charge::write("events/by_segment".into(), "g1".into(), 1.0)]
        );
    }

    #[test]
    fn gsi_unprojected_change_costs_nothing() {
        let old = member("g1", "5", "ann", "x");
        let new = member("g1", "5", "ann", "y");
        assert!(index_charges(Some(&old), Some(&new)).is_empty());
    }

    #[test]
    fn gsi_partition_change_leaves_then_enters() {
        let old = member("g1", "5", "ann", "x");
        let new = member("g2", "5", "ann", "x");
        assert_eq!(
            index_charges(Some(&old), Some(&new)),
            vec![
                Charge::write("events/by_segment".into(), "g1".into(), 1.0),
                Charge::write("events/by_segment".into(), "g2".into(), 1.0),
            ]
        );
    }

    #[test]
    fn gsi_sort_key_change_is_also_a_move() {
        let old = member("g1", "5", "ann", "x");
        let new = member("g1", "6", "ann", "x");
        assert_eq!(index_charges(Some(&old), Some(&new)).len(), 2);
    }

    #[test]
    fn gsi_leave_charges_the_old_entry() {
        let old = member("g1", "5", &"n".repeat(1000), "x");
        let mut new = old.clone();
        new.remove("seg");
        assert_eq!(
            index_charges(Some(&old), Some(&new)),
            vec![Charge::write("events/by_segment".into(), "g1".into(), 2.0)]
        );
        assert_eq!(
            index_charges(Some(&old), None),
            vec![Charge::write("events/by_segment".into(), "g1".into(), 2.0)]
        );
    }

    #[test]
    fn item_without_full_index_key_is_not_indexed() {
        let mut no_sort = member("g1", "5", "ann", "x");
        no_sort.remove("at");
        assert!(index_charges(None, Some(&no_sort)).is_empty());
        let mut changed = no_sort.clone();
        changed.insert("name".into(), json!({"S": "bob"}));
        assert!(index_charges(Some(&no_sort), Some(&changed)).is_empty());
        let mut not_scalar = member("g1", "5", "ann", "x");
        not_scalar.insert("seg".into(), json!({"NULL": true}));
        assert!(index_charges(None, Some(&not_scalar)).is_empty());
    }

    #[test]
    fn projection_decides_entry_size() {
        let it = item(json!({
            "pk": {"S": "p1"},          // 4
            "sk": {"S": "s"},           // 3
            "seg": {"S": "g1"},         // 5
            "at": {"N": "5"},           // 4
            "name": {"S": "ann"},       // 7
            "blob": {"S": "x".repeat(2000)}, // 2004
        }));
        let entry_size = |projection: Projection| {
            let schema = schema_with(projection);
            index_entry(&schema, &schema.indexes[0], &it).map(|entry| index_entry_size(&entry))
        };
        assert_eq!(entry_size(Projection::KeysOnly), Some(16 + 100));
        assert_eq!(
            entry_size(Projection::Include(vec!["name".into(), "missing".into()])),
            Some(16 + 7 + 100)
        );
        assert_eq!(entry_size(Projection::All), Some(16 + 7 + 2004 + 100));

        let index_wcu = |projection: Projection| {
            price_write(&schema_with(projection), None, Some(&it), false)[1].wcu
        };
        assert_eq!(index_wcu(Projection::KeysOnly), 1.0);
        assert_eq!(index_wcu(Projection::Include(vec!["blob".into()])), 3.0);
        assert_eq!(index_wcu(Projection::All), 3.0);
    }

    #[test]
    fn keys_only_index_ignores_attribute_changes() {
        let schema = schema_with(Projection::KeysOnly);
        let old = member("g1", "5", "ann", "x");
        let new = member("g1", "5", "bob", "y");
        assert_eq!(price_write(&schema, Some(&old), Some(&new), false).len(), 1);
    }

    #[test]
    fn failed_write_costs_the_existing_item() {
        let key = item(json!({"pk": {"S": "p"}, "sk": {"S": "s"}}));
        assert_eq!(
            price_failed_write(&schema(), None, &key),
            Charge::write("events".into(), "p".into(), 1.0)
        );
        let old = member("g1", "5", &"n".repeat(2000), "x");
        assert_eq!(
            price_failed_write(&schema(), Some(&old), &key),
            Charge::write("events".into(), "p".into(), 2.0)
        );
    }

    #[test]
    fn point_reads_charge_absent_items_too() {
        let key = item(json!({"pk": {"S": "p"}, "sk": {"S": "s"}}));
        let read = |found: Option<&WireItem>, consistent| {
            price_point_read(&schema(), &key, found, consistent)
        };
        assert_eq!(
            read(None, true),
            Charge::read("events".into(), "p".into(), 1.0)
        );
        assert_eq!(read(None, false).rcu, 0.5);
        let big = item_of_size("p", 9000);
        assert_eq!(read(Some(&big), true).rcu, 3.0);
        assert_eq!(read(Some(&big), false).rcu, 1.5);
    }

    #[test]
    fn query_rounds_once_over_the_total() {
        // Three 1,500-byte items: 3 units if rounded per item, 2 over the total.
        let total = 3 * item_size(&item_of_size("p", 1500));
        assert_eq!(
            price_query(&schema(), None, "p", total, true),
            Charge::read("events".into(), "p".into(), 2.0)
        );
        assert_eq!(
            price_query(&schema(), Some("by_segment"), "g1", total, false),
            Charge::read("events/by_segment".into(), "g1".into(), 1.0)
        );
        assert_eq!(price_query(&schema(), None, "p", 0, true).rcu, 1.0);
    }

    #[test]
    fn query_partition_value_finds_the_equality() {
        let schema = TableSchema {
            name: "events".into(),
            partition_key: "pk".into(),
            sort_key: Some("sk".into()),
            indexes: vec![
                IndexSchema {
                    name: "by_segment".into(),
                    partition_key: "segment".into(),
                    sort_key: Some("pk".into()),
                    projection: Projection::KeysOnly,
                },
                IndexSchema {
                    name: "by_project".into(),
                    partition_key: "project".into(),
                    sort_key: Some("rk".into()),
                    projection: Projection::All,
                },
            ],
        };
        let names =
            item(json!({"#seg": "segment", "#pk": "pk", "#project": "project", "#rk": "rk"}));
        let values = item(json!({
            ":pk": {"S": "P1"}, ":seg": {"N": "42"}, ":from": {"S": "P0"},
            ":before": {"N": "9"}, ":prefix": {"S": "C#"},
        }));
        let find = |index, expression| {
            query_partition_value(&schema, index, expression, Some(&names), Some(&values))
        };
        assert_eq!(find(None, "pk = :pk"), Some("P1".into()));
        assert_eq!(
            find(Some("by_segment"), "#seg = :seg AND #pk > :from"),
            Some("42".into())
        );
        assert_eq!(
            find(None, "#seg = :seg AND #pk > :from"),
            None,
            "pk only compared with >"
        );
        assert_eq!(
            find(Some("by_project"), "#project = :pk AND #rk < :before"),
            Some("P1".into())
        );
        assert_eq!(
            find(None, "pk = :pk AND begins_with(sk, :prefix)"),
            Some("P1".into())
        );
        // Spacing, parentheses and operand order vary.
        assert_eq!(
            find(None, "(pk=:pk)AND(begins_with ( sk , :prefix ))"),
            Some("P1".into())
        );
        assert_eq!(
            find(Some("by_segment"), "  ( :seg = #seg ) and #pk>=:from"),
            Some("42".into())
        );
        assert_eq!(find(None, "#pk<=:from AND #pk = :pk"), Some("P1".into()));
        // Unresolvable pieces give None rather than a guess.
        assert_eq!(find(Some("missing"), "pk = :pk"), None);
        assert_eq!(find(None, "pk = :unknown"), None);
        assert_eq!(find(None, "#nope = :pk"), None);
        assert_eq!(
            query_partition_value(&schema, None, "#pk = :pk", None, Some(&values)),
            None
        );
        assert_eq!(
            query_partition_value(&schema, None, "pk = :pk", None, None),
            None
        );
    }

    #[test]
    fn key_pattern_masks_project_then_numbers() {
        assert_eq!(
            key_pattern("BENCH-EU1#72000#07", "BENCH-EU1"),
            "<project>#<n>#<n>"
        );
        assert_eq!(
            key_pattern("C#BENCH-EU1#72000#03", "BENCH-EU1"),
            "C#<project>#<n>#<n>"
        );
        assert_eq!(key_pattern("S#12#a3b45", ""), "S#<n>#a<n>b<n>");
        assert_eq!(key_pattern("P7#P7x", "P7"), "<project>#<project>x");
    }

    #[test]
    fn load_is_multiples_of_the_key_cap_at_the_quoted_rate() {
        close(load(1.0, 0.0), 17.0);
        close(load(0.0, 3.0), 17.0);
        close(load(1.0, 3.0), 34.0);
        close(load(1.0 / 17.0, 0.0), 1.0);
        close(load(0.0, 0.0), 0.0);
    }

    fn charge(key: &KeyId, wcu: f64, rcu: f64) -> Charge {
        Charge {
            key: key.clone(),
            wcu,
            rcu,
        }
    }

    #[test]
    fn heat_map_per_change_and_windows() {
        let a = key("events", "A");
        let b = key("events/by_segment", "B");
        let mut heat = HeatMap::new(10);
        // 43 changes: four full windows and a 3-change tail, too thin to rate.
        for i in 0..43 {
            if i < 40 {
                heat.charge(&charge(&a, 1.0, 3.0)); // steady
            }
            if (10..20).contains(&i) {
                heat.charge(&charge(&b, 3.0, 0.0)); // bunched in window 1
            }
            if i == 41 {
                heat.charge(&charge(&b, 10.0, 0.0)); // in the ignored tail
            }
            heat.add_changes(1);
        }
        assert_eq!(heat.changes(), 43);
        let report = heat.report();
        assert_eq!(report.changes, 43);
        close(report.wcu, 80.0);
        close(report.rcu, 120.0);

        let targets: Vec<_> = report.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(targets, ["events", "events/by_segment"]);
        let [ta, tb] = &report.targets[..] else {
            panic!("two targets")
        };
        assert_eq!((ta.keys, tb.keys), (1, 1));

        let ha = &ta.hottest;
        assert_eq!(ha.key, a);
        close(ha.wcu_per_change, 40.0 / 43.0);
        close(ha.rcu_per_change, 120.0 / 43.0);
        close(
            ha.load,
            (40.0 / 43.0 / 1000.0 + 120.0 / 43.0 / 3000.0) * 17_000.0,
        );
        close(ha.worst_window_load, 34.0);

        let hb = &tb.hottest;
        close(hb.wcu, 40.0);
        close(hb.wcu_per_change, 40.0 / 43.0);
        close(hb.load, 40.0 / 43.0 * 17.0);
        // Window 1 alone: 3 WCU a change. The tail (10 WCU over 3 changes) would be worse.
        close(hb.worst_window_load, 51.0);
        assert!(hb.worst_window_load > hb.load);

        assert_eq!(report.hottest.as_ref().map(|h| &h.key), Some(&a));
    }

    #[test]
    fn target_sums_and_hottest_within_target() {
        let mut heat = HeatMap::new(10);
        heat.add_changes(10);
        heat.charge(&charge(&key("t", "cool"), 1.0, 0.0));
        heat.charge(&charge(&key("t", "hot"), 2.0, 3.0));
        heat.charge(&charge(&key("u", "x"), 5.0, 0.0));
        let report = heat.report();
        let t = &report.targets[0];
        assert_eq!((t.target.as_str(), t.keys), ("t", 2));
        close(t.wcu, 3.0);
        close(t.rcu, 3.0);
        assert_eq!(t.hottest.key, key("t", "hot"));
        assert_eq!(report.hottest.map(|h| h.key), Some(key("u", "x")));
    }

    #[test]
    fn a_lone_short_window_counts() {
        let x = key("t", "x");
        let mut heat = HeatMap::new(10);
        heat.charge(&charge(&x, 2.0, 0.0));
        heat.add_changes(3);
        let report = heat.report();
        let h = report.hottest.expect("one key");
        close(h.load, 2.0 / 3.0 * 17.0);
        close(h.worst_window_load, 2.0 / 3.0 * 17.0);
    }

    #[test]
    fn a_window_without_changes_is_not_rated() {
        let x = key("t", "x");
        let mut heat = HeatMap::new(10);
        heat.add_changes(10);
        heat.charge(&charge(&x, 5.0, 0.0)); // window 1, which holds no change
        let h = heat.report().hottest.expect("one key");
        close(h.load, 5.0 / 10.0 * 17.0);
        close(h.worst_window_load, 0.0);
    }

    #[test]
    fn without_changes_load_is_zero_and_raw_units_break_the_tie() {
        let mut heat = HeatMap::new(0);
        heat.charge(&charge(&key("t", "a"), 1.0, 0.0));
        heat.charge(&charge(&key("t", "b"), 0.0, 6.0));
        let report = heat.report();
        assert_eq!(report.changes, 0);
        let h = report.hottest.expect("keys charged");
        assert_eq!(h.key, key("t", "b"));
        close(h.wcu_per_change, 0.0);
        close(h.load, 0.0);
        close(h.worst_window_load, 0.0);
        assert_eq!(HeatMap::new(5).report().hottest, None);
        assert!(HeatMap::new(5).report().targets.is_empty());
    }
}
