//! Scenarios: named, tagged sets of routes, edited as a working copy and
//! frozen into immutable, content-hashed versions.
//!
//! Tags are free words (`payments`, `smoke-test`) or pillar tags in
//! brackets, alone or combined: `[Cloud][Contracts][Reality]` marks a
//! scenario that uses all three pillars. Promotion rules read the pillars.

use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::model::config::ConfigRoute;
use crate::model::error::FieldError;
use crate::model::slug::Slug;

/// The scenario every workspace starts with; routes added without naming
/// a scenario go here.
pub const DEFAULT_SCENARIO: &str = "default";
/// Most tags one scenario may carry.
pub const MAX_TAGS: usize = 32;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 100;
/// Longest scenario description or version note.
pub const MAX_TEXT_LEN: usize = 2000;

/// The product's pillars, as tags name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pillar {
    Reality,
    Contracts,
    DevX,
    Cloud,
    Ai,
}

impl Pillar {
    pub const ALL: [Pillar; 5] = [
        Pillar::Reality,
        Pillar::Contracts,
        Pillar::DevX,
        Pillar::Cloud,
        Pillar::Ai,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pillar::Reality => "Reality",
            Pillar::Contracts => "Contracts",
            Pillar::DevX => "DevX",
            Pillar::Cloud => "Cloud",
            Pillar::Ai => "AI",
        }
    }

    /// Case-insensitive: `[reality]` is `[Reality]`.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(raw))
    }
}

impl fmt::Display for Pillar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tag, checked: either pillars in brackets or a plain word.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    /// `[Cloud][Contracts]`, pillars in the order written, canonical case.
    Pillars(Vec<Pillar>),
    Plain(String),
}

impl Tag {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("a tag must not be empty".into());
        }
        if raw.chars().count() > MAX_TAG_LEN {
            return Err(format!("a tag is at most {MAX_TAG_LEN} characters"));
        }
        if !raw.starts_with('[') {
            if raw.contains(['[', ']']) {
                return Err(format!(
                    "{raw:?}: pillar tags are written [Pillar] or [Pillar][Pillar], brackets around each pillar"
                ));
            }
            if !raw
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
            {
                return Err(format!(
                    "{raw:?}: plain tags are letters, digits and - _ . : /"
                ));
            }
            return Ok(Tag::Plain(raw.to_owned()));
        }
        let mut pillars = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let Some(inner) = rest.strip_prefix('[') else {
                return Err(format!(
                    "{raw:?}: expected '[' at {rest:?}; pillar tags are [Pillar][Pillar]…"
                ));
            };
            let Some(end) = inner.find(']') else {
                return Err(format!("{raw:?}: '[' without a closing ']'"));
            };
            let name = &inner[..end];
            let pillar = Pillar::parse(name.trim()).ok_or_else(|| {
                format!(
                    "{raw:?}: unknown pillar {name:?}; the pillars are {}",
                    Pillar::ALL.map(Pillar::as_str).join(", ")
                )
            })?;
            if pillars.contains(&pillar) {
                return Err(format!("{raw:?}: [{pillar}] appears twice"));
            }
            pillars.push(pillar);
            rest = &inner[end + 1..];
        }
        Ok(Tag::Pillars(pillars))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tag::Plain(word) => f.write_str(word),
            Tag::Pillars(pillars) => pillars.iter().try_for_each(|p| write!(f, "[{p}]")),
        }
    }
}

/// Checks tags (the error names the one at fault) and returns them in
/// canonical form, without duplicates, in the order given.
pub fn parse_tags(raw: &[String]) -> Result<Vec<Tag>, FieldError> {
    if raw.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!("at most {MAX_TAGS} tags, got {}", raw.len()),
        ));
    }
    let mut tags: Vec<Tag> = Vec::with_capacity(raw.len());
    for (index, tag) in raw.iter().enumerate() {
        let tag = Tag::parse(tag).map_err(|m| FieldError::new(format!("tags[{index}]"), m))?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Every pillar any of the tags names.
pub fn pillars(tags: &[Tag]) -> BTreeSet<Pillar> {
    tags.iter()
        .flat_map(|tag| match tag {
            Tag::Pillars(pillars) => pillars.clone(),
            Tag::Plain(_) => Vec::new(),
        })
        .collect()
}

pub fn parse_scenario_name(raw: &str) -> Result<Slug, FieldError> {
    Slug::parse(raw).map_err(|e| FieldError::new("name", format!("scenario name {raw:?}: {e}")))
}

pub fn parse_text(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.chars().count() > MAX_TEXT_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(raw.trim().to_owned())
}

/// A scenario to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScenario {
    pub name: Slug,
    pub description: String,
    pub tags: Vec<Tag>,
    /// The working copy's contract checks (run by `governance::contract`).
    pub checks: Vec<crate::model::checks::ContractCheck>,
}

/// Changes to a scenario; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioPatch {
    pub name: Option<Slug>,
    pub description: Option<String>,
    pub tags: Option<Vec<Tag>>,
    /// The contract checks, replaced whole.
    pub checks: Option<Vec<crate::model::checks::ContractCheck>>,
}

/// The content hash of a set of routes: sha256 over each route's
/// serving-relevant content in a fixed order, ids left out. Two versions
/// with the same routes have the same hash, whatever their ids or order.
/// `encode` turns one route into bytes (the wire encoding, in practice).
pub fn content_hash(routes: &[ConfigRoute], encode: impl Fn(&ConfigRoute) -> Vec<u8>) -> String {
    let mut parts: Vec<Vec<u8>> = routes.iter().map(encode).collect();
    parts.sort();
    let mut hasher = Sha256::new();
    for part in &parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// A version's hash: its routes' content hash, and its contract checks'
/// (canonical JSON) when it has any, so versions without checks keep the
/// hash they always had.
pub fn version_hash(routes_hash: &str, checks_json: &str) -> String {
    if checks_json == "[]" || checks_json.is_empty() {
        return routes_hash.to_owned();
    }
    let mut hasher = Sha256::new();
    hasher.update(routes_hash.as_bytes());
    hasher.update(b"\nchecks\n");
    hasher.update(checks_json.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillar_tags_parse_alone_and_combined() {
        assert_eq!(
            Tag::parse("[Cloud][Contracts][Reality]").unwrap(),
            Tag::Pillars(vec![Pillar::Cloud, Pillar::Contracts, Pillar::Reality])
        );
        assert_eq!(
            Tag::parse("[ai]").unwrap().to_string(),
            "[AI]",
            "case-insensitive, canonical on output"
        );
        assert_eq!(
            Tag::parse(" payments ").unwrap(),
            Tag::Plain("payments".into())
        );
        for (bad, says) in [
            ("[Cloud][Weather]", "unknown pillar \"Weather\""),
            ("[Cloud", "without a closing"),
            ("[Cloud]x", "expected '['"),
            ("[Cloud][cloud]", "appears twice"),
            ("a[Cloud]", "brackets around each pillar"),
            ("two words", "plain tags"),
            ("", "empty"),
        ] {
            let error = Tag::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn tags_are_checked_deduplicated_and_give_pillars() {
        let raw: Vec<String> = [
            "[Cloud][Reality]",
            "smoke",
            "[reality][cloud]",
            "smoke",
            "[AI]",
        ]
        .map(str::to_owned)
        .to_vec();
        let tags = parse_tags(&raw).unwrap();
        assert_eq!(tags.len(), 4, "exact duplicates dropped: {tags:?}");
        assert_eq!(
            pillars(&tags).into_iter().collect::<Vec<_>>(),
            [Pillar::Reality, Pillar::Cloud, Pillar::Ai]
        );
        let error = parse_tags(&["ok".into(), "[Nope]".into()]).unwrap_err();
        assert_eq!(error.field, "tags[1]");
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(parse_tags(&many).unwrap_err().field, "tags");
    }

    #[test]
    fn the_content_hash_ignores_ids_and_order() {
        use bytes::Bytes;
        use uuid::Uuid;

        use crate::{ResponseSpec, RouteSpec};
        let route = |path: &str| ConfigRoute {
            id: Uuid::new_v4(),
            spec: RouteSpec::parse("", "GET", path, || {
                ResponseSpec::parse(200, vec![], Bytes::from_static(b"x"))
            })
            .unwrap(),
        };
        let encode = |r: &ConfigRoute| format!("{:?}", r.spec).into_bytes();
        let a = [route("/a"), route("/b")];
        let b = [route("/b"), route("/a")];
        assert_eq!(content_hash(&a, encode), content_hash(&b, encode));
        assert_ne!(content_hash(&a, encode), content_hash(&a[..1], encode));
        assert_eq!(content_hash(&a, encode).len(), 64);
    }
}
