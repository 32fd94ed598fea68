//! The update-expression builder: SET (and REMOVE) with a placeholder for every name and value.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure, Update};

use super::Item;
use crate::ports::LedgerError;

/// A SET expression over `fields`, with placeholders for every name (many are reserved words).
pub(super) struct Expression {
    parts: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Expression {
    pub(super) fn new() -> Self {
        Expression { parts: Vec::new(), names: HashMap::new(), values: HashMap::new() }
    }

    pub(super) fn name(&mut self, field: &str) -> String {
        let key = format!("#{field}");
        self.names.insert(key.clone(), field.to_string());
        key
    }

    pub(super) fn value(&mut self, field: &str, value: AttributeValue) -> String {
        let key = format!(":{field}");
        self.values.insert(key.clone(), value);
        key
    }

    pub(super) fn set(&mut self, field: &str, value: AttributeValue) {
        let (name, value) = (self.name(field), self.value(field, value));
        self.parts.push(format!("{name} = {value}"));
    }

    pub(super) fn set_if_absent(&mut self, field: &str, value: AttributeValue) {
        let (name, value) = (self.name(field), self.value(field, value));
        self.parts.push(format!("{name} = if_not_exists({name}, {value})"));
    }

    pub(super) fn update(
        self,
        key: Item,
        table: &str,
        remove: &[&str],
        condition: &str,
    ) -> Result<Update, LedgerError> {
        let mut names = self.names;
        let mut expression = format!("SET {}", self.parts.join(", "));
        if !remove.is_empty() {
            let removed: Vec<String> = remove
                .iter()
                .map(|f| {
                    names.insert(format!("#{f}"), (*f).to_string());
                    format!("#{f}")
                })
                .collect();
            expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression((!condition.is_empty()).then(|| condition.to_string()))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| LedgerError(format!("building an update: {e}")))
    }
}
