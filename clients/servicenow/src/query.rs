//! Encoded queries (`sysparm_query`) built from parts, so that a value can
//! never add a condition.
//!
//! In an encoded query `^` separates conditions (`^OR` adds an
//! alternative, `^NQ` a new query) and ServiceNow has no way to quote it
//! inside a value, so a value such as `INC1^ORactive=true` would widen the
//! query to every active record; and a value starting with `javascript:`
//! is run as a server-side script (`caller_id=javascript:gs.getUserID()`).
//! A value with `^`, a line break, a leading `javascript:` or (for lists)
//! a comma is refused, as is a field name with anything but letters,
//! digits, `_` and `.`.

use switchyard_sdk::{Error, Result};

/// An encoded query being built; [`Query::encode`] checks it.
///
/// ```
/// use switchyard_servicenow::Query;
///
/// let q = Query::new()
///     .eq("number", "INC0010001")
///     .one_of("state", ["1", "2"])
///     .order_by_desc("sys_updated_on");
/// assert_eq!(q.encode().unwrap(), "number=INC0010001^stateIN1,2^ORDERBYDESCsys_updated_on");
/// assert!(Query::new().eq("number", "INC1^ORactive=true").encode().is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    parts: Vec<String>,
    /// The first thing found wrong, reported by `encode`.
    error: Option<String>,
}

/// Whether `value` is safe as a query value: no `^`, no control
/// characters, and not a script (`javascript:…`, in any case).
pub fn is_safe_value(value: &str) -> bool {
    let script = value
        .trim_start()
        .get(..11)
        .is_some_and(|p| p.eq_ignore_ascii_case("javascript:"));
    !script && !value.contains('^') && !value.chars().any(char::is_control)
}

/// Letters, digits, `_`, and `.` for dot-walking (`caller_id.email`).
pub(crate) fn is_field(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
}

fn not_a_field(name: &str) -> String {
    format!(
        "`{}` is not a ServiceNow field name",
        name.chars().take(64).collect::<String>()
    )
}

impl Query {
    /// The empty query (every row).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the first thing wrong; later parts are then ignored.
    fn fail(mut self, why: String) -> Self {
        self.error.get_or_insert(why);
        self
    }

    fn push(mut self, field: &str, op: &str, value: &str) -> Self {
        if self.error.is_some() {
            return self;
        }
        if !is_field(field) {
            return self.fail(not_a_field(field));
        }
        if !is_safe_value(value) {
            return self.fail(format!(
                "the value for `{field}` contains `^` or a control character, or is a `javascript:` script, which would change a ServiceNow query"
            ));
        }
        self.parts.push(format!("{field}{op}{value}"));
        self
    }

    fn order(mut self, keyword: &str, field: &str) -> Self {
        if self.error.is_some() {
            return self;
        }
        if !is_field(field) {
            return self.fail(not_a_field(field));
        }
        self.parts.push(format!("{keyword}{field}"));
        self
    }

    /// `field` equals `value`.
    pub fn eq(self, field: &str, value: &str) -> Self {
        self.push(field, "=", value)
    }

    /// `field` does not equal `value`.
    pub fn ne(self, field: &str, value: &str) -> Self {
        self.push(field, "!=", value)
    }

    /// `field` starts with `value`.
    pub fn starts_with(self, field: &str, value: &str) -> Self {
        self.push(field, "STARTSWITH", value)
    }

    /// `field` contains `value`.
    pub fn contains(self, field: &str, value: &str) -> Self {
        self.push(field, "LIKE", value)
    }

    /// `field` is one of `values` (none may contain a comma, and each must
    /// be safe on its own).
    pub fn one_of<'a>(self, field: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let values: Vec<&str> = values.into_iter().collect();
        if values.iter().any(|v| v.contains(',')) {
            return self.fail(format!(
                "a value for `{field}` contains a comma, which would split a ServiceNow IN list"
            ));
        }
        if values.iter().any(|v| !is_safe_value(v)) {
            return self.fail(format!(
                "a value for `{field}` contains `^` or a control character, or is a `javascript:` script, which would change a ServiceNow query"
            ));
        }
        self.push(field, "IN", &values.join(","))
    }

    /// `field` is empty.
    pub fn is_empty(self, field: &str) -> Self {
        self.push(field, "ISEMPTY", "")
    }

    /// `field` is not empty.
    pub fn is_not_empty(self, field: &str) -> Self {
        self.push(field, "ISNOTEMPTY", "")
    }

    /// Results sorted by `field`, ascending.
    pub fn order_by(self, field: &str) -> Self {
        self.order("ORDERBY", field)
    }

    /// Results sorted by `field`, descending.
    pub fn order_by_desc(self, field: &str) -> Self {
        self.order("ORDERBYDESC", field)
    }

    /// The `sysparm_query` value, or `invalid-input` naming the first part
    /// that was refused.
    pub fn encode(&self) -> Result<String> {
        match &self.error {
            Some(e) => Err(Error::invalid_input(e.clone())),
            None => Ok(self.parts.join("^")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_add_conditions() {
        for bad in ["INC1^ORactive=true", "x^NQsys_id!=y", "a\nb", "a^"] {
            let err = Query::new().eq("number", bad).encode().unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput(ref m) if m.contains("`number`")),
                "{bad}: {err:?}"
            );
        }
        // The first problem is the one reported, whatever follows.
        let q = Query::new()
            .eq("a", "1")
            .eq("b c", "2")
            .eq("d", "^")
            .encode()
            .unwrap_err();
        assert!(q.to_string().contains("`b c`"), "{q}");
        assert!(Query::new().one_of("state", ["1", "2,3"]).encode().is_err());
        assert!(
            Query::new()
                .one_of("sys_id", ["a", "javascript:gs.getUserID()"])
                .encode()
                .is_err()
        );
        assert!(Query::new().order_by("x^ORy").encode().is_err());
    }

    #[test]
    fn parts_join_with_carets() {
        let q = Query::new()
            .eq("caller_id.email", "a@b.example")
            .ne("state", "7")
            .starts_with("short_description", "VPN")
            .contains("description", "100% = broken")
            .is_empty("assigned_to")
            .is_not_empty("number")
            .order_by("sys_id");
        assert_eq!(
            q.encode().unwrap(),
            "caller_id.email=a@b.example^state!=7^short_descriptionSTARTSWITHVPN^\
             descriptionLIKE100% = broken^assigned_toISEMPTY^numberISNOTEMPTY^ORDERBYsys_id"
        );
        assert_eq!(Query::new().encode().unwrap(), "");
    }
}
