//! One file per table: the only code that maps a table's `Item` to and from its record,
//! attribute names included (key shapes stay in `store::keys`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;

pub mod inbox;
pub mod projects;

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
