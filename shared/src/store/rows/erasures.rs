//! The segments table's erasure partition (`E#<project>`): when each request began (`B#<request
//! id>`), with its cut-off and the CleverTap IDs its attempts found. The audit rows beside them
//! are mapped by `serde_dynamo` in `store/erasure.rs`.

use aws_sdk_dynamodb::types::AttributeValue;

use super::UpdateSpec;
use crate::domain::records::HeldValue;
use crate::ports::erasures::Begun;
use crate::store::{Item, get_n, n};

const CUT_OFF_MS: &str = "cut_off_ms";
const CLEVERTAP_IDS: &str = "clevertap_ids";
/// Holders records, each a JSON array `[kind, value, CleverTap ID]`.
const HOLDERS: &str = "holders";

fn holder_entry((kind, value, ct): &(HeldValue, String, String)) -> String {
    serde_json::json!([kind.as_str(), value, ct]).to_string()
}

fn holder_of(entry: &str) -> Option<(HeldValue, String, String)> {
    let (kind, value, ct): (String, String, String) = serde_json::from_str(entry).ok()?;
    let kind = [HeldValue::Email, HeldValue::Phone]
        .into_iter()
        .find(|k| k.as_str() == kind)?;
    Some((kind, value, ct))
}

/// The first attempt's cut-off stays; what each attempt found is added to what is recorded.
pub fn erasure_begun(cut_off_ms: i64, found: &Begun) -> UpdateSpec {
    let mut spec = UpdateSpec::new("SET #c = if_not_exists(#c, :c)")
        .name("#c", CUT_OFF_MS)
        .value(":c", n(cut_off_ms));
    let mut adds = Vec::new();
    if !found.clevertap_ids.is_empty() {
        adds.push("#cts :cts");
        spec = spec.name("#cts", CLEVERTAP_IDS).value(
            ":cts",
            AttributeValue::Ss(found.clevertap_ids.iter().cloned().collect()),
        );
    }
    if !found.holders.is_empty() {
        adds.push("#h :h");
        spec = spec.name("#h", HOLDERS).value(
            ":h",
            AttributeValue::Ss(found.holders.iter().map(holder_entry).collect()),
        );
    }
    if !adds.is_empty() {
        spec.update.push_str(&format!(" ADD {}", adds.join(", ")));
    }
    spec
}

/// A begun item as [`Begun`] (`None`: not one).
pub fn begun_of(item: &Item) -> Option<Begun> {
    Some(Begun {
        cut_off_ms: get_n(item, CUT_OFF_MS)?,
        clevertap_ids: (item.get(CLEVERTAP_IDS).and_then(|v| v.as_ss().ok()))
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        holders: (item.get(HOLDERS).and_then(|v| v.as_ss().ok()))
            .into_iter()
            .flatten()
            .filter_map(|e| holder_of(e))
            .collect(),
    })
}
