//! Workspace slugs: the DNS-label names that address a workspace in URLs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest slug, as for a DNS label.
pub const MAX_SLUG_LEN: usize = 63;

/// A validated workspace slug: 1–63 characters of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`, and not shaped like a UUID (so that an API
/// argument that names a workspace "by id or slug" is never ambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

/// Why a string is not a valid slug. The messages name the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("slug must not be empty")]
    Empty,
    #[error("slug must be at most {MAX_SLUG_LEN} characters, got {0}")]
    TooLong(usize),
    #[error(
        "slug may contain only lower-case letters a-z, digits 0-9 and '-': {found:?} at position {position} is not allowed"
    )]
    InvalidChar { found: char, position: usize },
    #[error("slug must not start or end with '-'")]
    EdgeHyphen,
    #[error("slug must not have the shape of a UUID (UUIDs are workspace ids)")]
    LooksLikeUuid,
}

impl Slug {
    /// Checks every rule and returns the first one broken.
    pub fn parse(raw: &str) -> Result<Self, SlugError> {
        if raw.is_empty() {
            return Err(SlugError::Empty);
        }
        let len = raw.chars().count();
        if len > MAX_SLUG_LEN {
            return Err(SlugError::TooLong(len));
        }
        if let Some((index, found)) = raw
            .chars()
            .enumerate()
            .find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(SlugError::InvalidChar {
                found,
                position: index + 1,
            });
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(SlugError::EdgeHyphen);
        }
        if uuid::Uuid::try_parse(raw).is_ok() {
            return Err(SlugError::LooksLikeUuid);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Slug {
    type Error = SlugError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> Self {
        slug.0
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["demo", "a", "team-42", "0", &"x".repeat(63)] {
            assert_eq!(Slug::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_the_rule_broken() {
        assert_eq!(Slug::parse(""), Err(SlugError::Empty));
        assert_eq!(Slug::parse(&"x".repeat(64)), Err(SlugError::TooLong(64)));
        assert_eq!(
            Slug::parse("Demo"),
            Err(SlugError::InvalidChar {
                found: 'D',
                position: 1
            })
        );
        assert_eq!(
            Slug::parse("a/b"),
            Err(SlugError::InvalidChar {
                found: '/',
                position: 2
            })
        );
        assert_eq!(Slug::parse("-a"), Err(SlugError::EdgeHyphen));
        assert_eq!(Slug::parse("a-"), Err(SlugError::EdgeHyphen));
        assert_eq!(
            Slug::parse("6f1c2a9e-0b7d-4c1e-9a57-3d2f8e4b6c10"),
            Err(SlugError::LooksLikeUuid)
        );
        let message = Slug::parse("My_ws").unwrap_err().to_string();
        assert!(message.contains("lower-case"), "{message}");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(
            Slug::parse("café"),
            Err(SlugError::InvalidChar {
                found: 'é',
                position: 4
            })
        );
    }
}
