//! Regexes users write (path parameters, matchers), compiled once, bounded
//! in size, compared by their source.

/// Longest regex accepted in a path parameter or a matcher.
pub const MAX_PATTERN_LEN: usize = 1000;

/// A regex that must match a whole value, compiled once when the route is
/// parsed. Equal when the sources are equal.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: Box<str>,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source` anchored at both ends, with bounded size so that no
    /// pattern can take a node's memory.
    pub fn whole(source: &str) -> Result<Self, String> {
        Self::build(source, &format!("^(?:{source})$"))
    }

    /// Compiles `source` to match anywhere in a value.
    pub fn anywhere(source: &str) -> Result<Self, String> {
        Self::build(source, source)
    }

    fn build(source: &str, compiled: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("regex must not be empty".into());
        }
        if source.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "regex must be at most {MAX_PATTERN_LEN} characters, got {}",
                source.len()
            ));
        }
        let regex = regex::RegexBuilder::new(compiled)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build()
            .map_err(|e| match e {
                regex::Error::Syntax(text) => format!("invalid regex {source:?}: {text}"),
                regex::Error::CompiledTooBig(_) => {
                    format!("regex {source:?} is too large once compiled; simplify it")
                }
                other => format!("invalid regex {source:?}: {other}"),
            })?;
        Ok(Self {
            source: source.into(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}
