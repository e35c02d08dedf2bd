//! Stateful routes: a route can require a state machine of its workspace
//! to be in some state, and move it to another when it answers, so a
//! sequence of requests (add to cart, then view the cart) gets answers
//! that depend on what came before.
//!
//! File form:
//!
//! ```yaml
//! state: { machine: cart, when: started, set: has-items }
//! state: { machine: cart, when: has-items, key: "header:x-test-run" }
//! ```
//!
//! Every machine starts in `started`. With a `key`, each value of that
//! request header, path parameter or query parameter has its own copy of
//! the machine, so parallel test runs do not see each other's state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::error::FieldError;

/// The state every machine starts in.
pub const INITIAL_STATE: &str = "started";
/// Longest machine or state name.
pub const MAX_STATE_NAME: usize = 64;

/// Where a keyed machine takes its key from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateKey {
    Header(String),
    Param(String),
    Query(String),
}

impl StateKey {
    /// `header:<name>`, `param:<name>` or `query:<name>`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (kind, name) = raw
            .split_once(':')
            .ok_or_else(|| format!("{raw:?}: write header:<name>, param:<name> or query:<name>"))?;
        if name.is_empty() {
            return Err(format!("{raw:?}: the {kind} name is missing"));
        }
        match kind {
            "header" => Ok(Self::Header(name.to_ascii_lowercase())),
            "param" => Ok(Self::Param(name.to_owned())),
            "query" => Ok(Self::Query(name.to_owned())),
            other => Err(format!(
                "{raw:?}: {other:?} is not a key source; use header, param or query"
            )),
        }
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateKey::Header(name) => write!(f, "header:{name}"),
            StateKey::Param(name) => write!(f, "param:{name}"),
            StateKey::Query(name) => write!(f, "query:{name}"),
        }
    }
}

/// A route's use of a state machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateRule {
    pub machine: String,
    /// The route matches only in this state; `None`: in any state.
    pub when: Option<String>,
    /// The state after the route answers; `None`: unchanged.
    pub set: Option<String>,
    /// Each value of this request part has its own machine.
    pub key: Option<StateKey>,
}

/// The file and storage form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStateRule {
    pub machine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn check_name(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.is_empty() || raw.len() > MAX_STATE_NAME {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_STATE_NAME} characters"),
        ));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(FieldError::new(
            field,
            format!("{raw:?}: use letters, digits, - _ and ."),
        ));
    }
    Ok(raw.to_owned())
}

impl StateRule {
    /// Checks the rule; `params` are the route's path parameter names, for
    /// `param:` keys.
    pub fn parse(raw: &RawStateRule, params: &[&str]) -> Result<Self, FieldError> {
        let machine = check_name("machine", &raw.machine)?;
        let when = raw
            .when
            .as_deref()
            .map(|w| check_name("when", w))
            .transpose()?;
        let set = raw
            .set
            .as_deref()
            .map(|s| check_name("set", s))
            .transpose()?;
        if when.is_none() && set.is_none() {
            return Err(FieldError::new(
                "",
                "give `when` (the state the route needs), `set` (the state it leaves), or both",
            ));
        }
        let key = raw
            .key
            .as_deref()
            .map(StateKey::parse)
            .transpose()
            .map_err(|m| FieldError::new("key", m))?;
        if let Some(StateKey::Param(name)) = &key
            && !params.contains(&name.as_str())
        {
            return Err(FieldError::new(
                "key",
                format!(
                    "the path has no parameter {name:?}{}",
                    if params.is_empty() {
                        String::new()
                    } else {
                        format!("; it has {}", params.join(", "))
                    }
                ),
            ));
        }
        Ok(Self {
            machine,
            when,
            set,
            key,
        })
    }

    pub fn raw(&self) -> RawStateRule {
        RawStateRule {
            machine: self.machine.clone(),
            when: self.when.clone(),
            set: self.set.clone(),
            key: self.key.as_ref().map(ToString::to_string),
        }
    }

    /// What makes routes with the same method and path different: the
    /// machine and state they need.
    pub fn fingerprint(&self) -> Option<String> {
        self.when.as_ref().map(|when| {
            format!(
                "{}={when}{}",
                self.machine,
                self.key
                    .as_ref()
                    .map(|k| format!("@{k}"))
                    .unwrap_or_default()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(
        machine: &str,
        when: Option<&str>,
        set: Option<&str>,
        key: Option<&str>,
    ) -> RawStateRule {
        RawStateRule {
            machine: machine.into(),
            when: when.map(Into::into),
            set: set.map(Into::into),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn rules_parse_and_errors_name_the_field() {
        let rule = StateRule::parse(
            &raw("cart", Some("started"), Some("full"), Some("header:X-Run")),
            &[],
        )
        .unwrap();
        assert_eq!(rule.key, Some(StateKey::Header("x-run".into())));
        assert_eq!(rule.fingerprint().unwrap(), "cart=started@header:x-run");
        assert_eq!(StateRule::parse(&rule.raw(), &[]).unwrap(), rule);
        let param = StateRule::parse(&raw("m", None, Some("s"), Some("param:id")), &["id"]);
        assert!(
            param.unwrap().fingerprint().is_none(),
            "set-only rules match any state"
        );

        for (bad, field, says) in [
            (raw("", Some("a"), None, None), "machine", "1 to 64"),
            (raw("m", Some("a b"), None, None), "when", "letters"),
            (raw("m", None, None, None), "", "give `when`"),
            (
                raw("m", Some("a"), None, Some("cookie:x")),
                "key",
                "not a key source",
            ),
            (
                raw("m", Some("a"), None, Some("header")),
                "key",
                "header:<name>",
            ),
            (
                raw("m", Some("a"), None, Some("param:nope")),
                "key",
                "has no parameter",
            ),
        ] {
            let error = StateRule::parse(&bad, &["id"]).unwrap_err();
            assert_eq!(error.field, field, "{bad:?}");
            assert!(error.message.contains(says), "{error}");
        }
        let unknown: Result<RawStateRule, _> =
            serde_json::from_str(r#"{"machine":"m","whenn":"a"}"#);
        assert!(unknown.unwrap_err().to_string().contains("whenn"));
    }
}
