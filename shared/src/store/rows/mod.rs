//! One file per table: the only code that maps a table's `Item` to and from its record,
//! attribute names included (key shapes stay in `store::keys`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

pub mod erasures;
pub mod events;
pub mod inbox;
pub mod memberships;
pub mod profiles;
pub mod progress;
pub mod projects;

/// An item as DynamoDB holds it.
pub type Item = HashMap<String, AttributeValue>;

pub(in crate::store) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(in crate::store) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(in crate::store) fn get_s<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(in crate::store) fn get_n(item: &Item, key: &str) -> Option<i64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The key attributes (`pk`, `sk`) of an item of any table.
pub fn keys_of(item: &Item) -> Item {
    item.iter()
        .filter(|(name, _)| *name == super::keys::PK || *name == super::keys::SK)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The `pk` and `sk` of an item as strings (empty when absent).
pub fn key_strings(item: &Item) -> (String, String) {
    let text = |name: &str| get_s(item, name).unwrap_or_default().to_owned();
    (text(super::keys::PK), text(super::keys::SK))
}

/// An UpdateItem's expressions and placeholders, as a row file states them: the adapter only
/// sends them.
#[derive(Debug, Clone, Default)]
pub struct UpdateSpec {
    pub update: String,
    pub condition: Option<String>,
    pub names: HashMap<String, String>,
    pub values: Item,
}

impl UpdateSpec {
    pub fn new(update: impl Into<String>) -> Self {
        Self {
            update: update.into(),
            ..Self::default()
        }
    }

    pub fn condition(mut self, condition: impl Into<String>) -> Self {
        self.condition = Some(condition.into());
        self
    }

    pub fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names
            .insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    pub fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// Sets the condition and its placeholders on a DeleteItem request (a spec built for a
    /// delete states no update, and names only what its condition uses).
    pub fn on_delete(
        self,
        request: aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder {
        request
            .set_condition_expression(self.condition)
            .set_expression_attribute_names((!self.names.is_empty()).then_some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
    }

    /// The update as one action of a transaction, on `key` of `table`.
    pub fn transact(self, table: &str, key: Item) -> aws_sdk_dynamodb::types::TransactWriteItem {
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(self.update)
            .set_condition_expression(self.condition)
            .set_expression_attribute_names((!self.names.is_empty()).then_some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .build()
            .expect("table, key and expression are set");
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .update(update)
            .build()
    }

    /// Sets the expressions on an UpdateItem request.
    pub fn on(
        self,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        request
            .update_expression(self.update)
            .set_condition_expression(self.condition)
            .set_expression_attribute_names((!self.names.is_empty()).then_some(self.names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
    }
}

/// DynamoDB's measure of an item's size: each attribute's name and value (UTF-8 bytes of
/// strings, bytes of binaries, about a byte per two digits of numbers, 3 bytes plus the
/// contents of lists and maps).
pub fn item_size(item: &Item) -> usize {
    use AttributeValue as A;
    fn value(v: &A) -> usize {
        match v {
            A::S(s) => s.len(),
            A::N(n) => n.len().div_ceil(2) + 1,
            A::B(b) => b.as_ref().len(),
            A::Bool(_) | A::Null(_) => 1,
            A::Ss(v) => v.iter().map(String::len).sum(),
            A::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
            A::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
            A::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            A::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>(),
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_size_counts_names_and_values_as_dynamodb_does() {
        let item = Item::from([
            ("pk".to_owned(), AttributeValue::S("abc".into())),
            ("n".to_owned(), AttributeValue::N("12345".into())),
            (
                "m".to_owned(),
                AttributeValue::M(Item::from([("k".to_owned(), AttributeValue::Bool(true))])),
            ),
        ]);
        // pk + abc, n + 4 bytes for five digits, m + 3 + (1 + k + 1).
        assert_eq!(item_size(&item), 5 + (1 + 4) + (1 + 3 + 3));
    }
}
