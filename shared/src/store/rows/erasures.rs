//! The segments table's erasure partition (`E#<project>`): when each request began (`B#<request
//! id>`), with its cut-off and the CleverTap IDs its attempts found. The audit rows beside them
//! are mapped by `serde_dynamo` in `store/erasure.rs`.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;

use super::UpdateSpec;
use crate::ports::erasures::Begun;
use crate::store::{Item, get_n, n};

const CUT_OFF_MS: &str = "cut_off_ms";
const CLEVERTAP_IDS: &str = "clevertap_ids";

/// The first attempt's cut-off stays; the CleverTap IDs found are added to those recorded.
pub fn erasure_begun(cut_off_ms: i64, clevertap_ids: &BTreeSet<String>) -> UpdateSpec {
    let mut spec = UpdateSpec::new("SET #c = if_not_exists(#c, :c)")
        .name("#c", CUT_OFF_MS)
        .value(":c", n(cut_off_ms));
    if !clevertap_ids.is_empty() {
        spec.update.push_str(" ADD #cts :cts");
        spec = spec.name("#cts", CLEVERTAP_IDS).value(
            ":cts",
            AttributeValue::Ss(clevertap_ids.iter().cloned().collect()),
        );
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
    })
}
