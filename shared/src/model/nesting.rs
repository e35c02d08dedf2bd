//! How deeply a JSON or YAML text nests, measured in one linear pass before
//! any parser sees it.
//!
//! The YAML parser we use keeps a "simple key" per open flow collection and
//! re-checks all of them at every token, so a document that opens `[` fifty
//! thousand times costs it seconds (quadratic) before it gives up with
//! "recursion limit exceeded". This scanner follows the YAML scanner's own
//! token rules closely enough to count what it would open: flow collections
//! (`[`, `{`, outside quoted scalars, comments and block scalars) and block
//! collections (each new indentation and each compact `- ` or `? `), and
//! refuses a text that nests deeper than [`MAX_DEPTH`] at the first place it
//! does, so the parser only ever sees texts it handles in linear time. JSON
//! is flow YAML, so the same pass serves both.
//!
//! Where the scanner cannot be sure it errs towards counting: a bracket that
//! may start a collection counts, so a document can only be refused for
//! depth it (nearly) has, never let through with depth it hides.

use std::fmt;

/// Deepest nesting a document may have: the parsers' own limit.
pub const MAX_DEPTH: usize = 128;

/// Most work a document's flow collections may cost the YAML parser: the
/// sum, over its tokens, of the flow collections open at each (what the
/// parser re-checks at every token). Nesting just under [`MAX_DEPTH`] over
/// and over would otherwise cost seconds per 8 MiB; an ordinary 8 MiB JSON
/// document (a few levels deep) costs a few million, and this budget about
/// a quarter of a second.
pub const MAX_FLOW_WORK: u64 = 40_000_000;

/// A text nests deeper than it may, or so deeply for its size that parsing
/// it would cost too much. Line and column are 1-based; the column counts
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
    pub why: Why,
}

/// Which limit a text passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Nested deeper than this many levels.
    Depth(usize),
    /// Its flow collections cost more than this much work.
    Work(u64),
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Why::Depth(limit) => write!(
                f,
                "nests deeper than {limit} levels at line {}, column {}",
                self.line, self.column
            ),
            Why::Work(limit) => write!(
                f,
                "nests too deeply for its size: by line {}, column {} its flow collections ([…] and {{…}}) would cost the parser more than {limit} steps; nest them less or split the document",
                self.line, self.column
            ),
        }
    }
}

impl std::error::Error for TooDeep {}

/// Refuses a text that nests deeper than [`MAX_DEPTH`], or whose flow
/// collections cost more than [`MAX_FLOW_WORK`].
pub fn check(text: &str) -> Result<(), TooDeep> {
    check_limits(text, MAX_DEPTH, MAX_FLOW_WORK)
}

/// [`check`] with other limits.
pub fn check_limits(text: &str, depth: usize, work: u64) -> Result<(), TooDeep> {
    let mut scanner = Scanner::new(text, depth, work);
    scanner.run().map_err(|stop| scanner.too_deep(stop))
}

/// The deepest nesting of a text as the scanner counts it (for tests and
/// diagnostics; [`check`] stops at the limit instead).
pub fn depth(text: &str) -> usize {
    let mut scanner = Scanner::new(text, usize::MAX, u64::MAX);
    let _ = scanner.run();
    scanner.deepest
}

struct Scanner<'t> {
    text: &'t str,
    b: &'t [u8],
    i: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Open flow collections.
    flow: usize,
    /// Columns of the open block collections (the YAML scanner's indents).
    indents: Vec<usize>,
    limit: usize,
    deepest: usize,
    /// The flow work so far, and its limit.
    work: u64,
    work_limit: u64,
}

/// Why the scan stopped early: the byte offset where a limit was passed,
/// and which.
type Stop = (usize, Why);

impl<'t> Scanner<'t> {
    fn new(text: &'t str, limit: usize, work_limit: u64) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            i: 0,
            line_start: 0,
            flow: 0,
            indents: Vec::new(),
            limit,
            deepest: 0,
            work: 0,
            work_limit,
        }
    }

    fn too_deep(&self, (at, why): Stop) -> TooDeep {
        let before = &self.text[..at.min(self.text.len())];
        let line = before.bytes().filter(|&c| c == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        TooDeep {
            line,
            column: before[line_start..].chars().count() + 1,
            why,
        }
    }

    fn peek(&self, at: usize) -> u8 {
        self.b.get(at).copied().unwrap_or(0)
    }

    fn column(&self) -> usize {
        self.i - self.line_start
    }

    /// Blank, line break or the end of the text.
    fn blankz(&self, at: usize) -> bool {
        self.b
            .get(at)
            .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
    }

    fn count(&mut self) -> Result<(), Stop> {
        let depth = self.flow + self.indents.len();
        self.deepest = self.deepest.max(depth);
        if depth > self.limit {
            Err((self.i, Why::Depth(self.limit)))
        } else {
            Ok(())
        }
    }

    /// A line break at `self.i` (`\n`, or `\r` with or without `\n`).
    fn newline(&mut self) {
        if self.peek(self.i) == b'\r' && self.peek(self.i + 1) == b'\n' {
            self.i += 1;
        }
        self.i += 1;
        self.line_start = self.i;
    }

    fn skip_line(&mut self) {
        while self.i < self.b.len() && !matches!(self.b[self.i], b'\n' | b'\r') {
            self.i += 1;
        }
    }

    /// Skips blanks, comments and line breaks; says whether a line break
    /// was crossed.
    fn skip_to_token(&mut self) -> bool {
        let mut crossed = false;
        loop {
            match self.peek(self.i) {
                b' ' | b'\t' => self.i += 1,
                b'#' => self.skip_line(),
                b'\r' | b'\n' => {
                    self.newline();
                    crossed = true;
                }
                _ => return crossed,
            }
            if self.i >= self.b.len() {
                return crossed;
            }
        }
    }

    /// A block collection starts at `column` (the YAML scanner's
    /// `roll_indent`).
    fn roll(&mut self, column: usize) -> Result<(), Stop> {
        if self.indents.last().is_none_or(|&top| top < column) {
            self.indents.push(column);
            self.count()?;
        }
        Ok(())
    }

    /// The YAML scanner's `unroll_indent`: a token at `column` closes every
    /// block collection deeper than it.
    fn unroll(&mut self, column: usize) {
        while self.indents.last().is_some_and(|&top| top > column) {
            self.indents.pop();
        }
    }

    fn run(&mut self) -> Result<(), Stop> {
        // The first token of the text starts its line too.
        let mut first_of_line = true;
        // Column of the last token that could be a key, in block context.
        let mut key_column = 0;
        while self.i < self.b.len() {
            if self.skip_to_token() {
                first_of_line = true;
            }
            if self.i >= self.b.len() {
                break;
            }
            // The parser re-checks every open flow collection per token.
            self.work += self.flow as u64;
            if self.work > self.work_limit {
                return Err((self.i, Why::Work(self.work_limit)));
            }
            let column = self.column();
            if self.flow == 0 {
                // Every token in block context closes the block
                // collections it is not inside of.
                self.unroll(column);
                if first_of_line && column == 0 && self.document_marker() {
                    continue;
                }
            }
            first_of_line = false;
            let c = self.b[self.i];
            match c {
                b'[' | b'{' => {
                    if self.flow == 0 {
                        key_column = column;
                    }
                    self.flow += 1;
                    self.count()?;
                    self.i += 1;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.i += 1;
                }
                b',' => self.i += 1,
                b'-' if self.blankz(self.i + 1) => {
                    if self.flow == 0 {
                        self.roll(column)?;
                    }
                    self.i += 1;
                    key_column = self.column() + 1;
                }
                b'?' if self.flow > 0 || self.blankz(self.i + 1) => {
                    if self.flow == 0 {
                        self.roll(column)?;
                    }
                    self.i += 1;
                    key_column = self.column() + 1;
                }
                b':' if self.flow > 0 || self.blankz(self.i + 1) => {
                    if self.flow == 0 {
                        self.roll(key_column)?;
                    }
                    self.i += 1;
                }
                b'*' | b'&' | b'!' => {
                    if self.flow == 0 && c != b'*' {
                        key_column = column;
                    }
                    self.i += 1;
                    while !self.blankz(self.i)
                        && !matches!(self.peek(self.i), b',' | b'[' | b']' | b'{' | b'}')
                    {
                        self.i += 1;
                    }
                }
                b'|' | b'>' if self.flow == 0 => self.block_scalar(),
                b'\'' => {
                    key_column = column;
                    self.single_quoted();
                }
                b'"' => {
                    key_column = column;
                    self.double_quoted();
                }
                _ => {
                    if self.flow == 0 {
                        key_column = column;
                    }
                    self.plain();
                }
            }
        }
        Ok(())
    }

    /// `---` or `...` at the start of a line: a new document begins or the
    /// current one ends, with nothing open.
    fn document_marker(&mut self) -> bool {
        let rest = &self.b[self.i..];
        if (rest.starts_with(b"---") || rest.starts_with(b"...")) && self.blankz(self.i + 3) {
            self.indents.clear();
            self.i += 3;
            true
        } else if rest.first() == Some(&b'%') {
            self.skip_line();
            true
        } else {
            false
        }
    }

    fn single_quoted(&mut self) {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\'' if self.peek(self.i + 1) == b'\'' => self.i += 2,
                b'\'' => {
                    self.i += 1;
                    return;
                }
                b'\r' | b'\n' => self.newline(),
                _ => self.i += 1,
            }
        }
    }

    fn double_quoted(&mut self) {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' if matches!(self.peek(self.i + 1), b'\r' | b'\n') => {
                    self.i += 1;
                    self.newline();
                }
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return;
                }
                b'\r' | b'\n' => self.newline(),
                _ => self.i += 1,
            }
        }
    }

    /// A plain scalar, as the YAML scanner reads it: it ends at `: `, at a
    /// comment, in flow context at a flow indicator, and at a line break
    /// unless the next line is indented past the current block collection
    /// (or the scalar is in a flow collection).
    fn plain(&mut self) {
        loop {
            while !self.blankz(self.i) {
                let c = self.b[self.i];
                if c == b':' && self.blankz(self.i + 1) {
                    return;
                }
                if self.flow > 0
                    && (matches!(c, b',' | b'[' | b']' | b'{' | b'}')
                        || (c == b':'
                            && matches!(self.peek(self.i + 1), b',' | b'[' | b']' | b'{' | b'}')))
                {
                    return;
                }
                self.i += 1;
            }
            // Blanks and line breaks: the scalar goes on if more of it follows.
            let mut crossed = false;
            let resume = self.i;
            let resume_line = self.line_start;
            while matches!(self.peek(self.i), b' ' | b'\t' | b'\r' | b'\n') {
                if matches!(self.b[self.i], b'\r' | b'\n') {
                    self.newline();
                    crossed = true;
                } else {
                    self.i += 1;
                }
            }
            let at_end = self.i >= self.b.len() || self.peek(self.i) == b'#';
            let at_marker = crossed
                && self.column() == 0
                && (self.b[self.i..].starts_with(b"---") || self.b[self.i..].starts_with(b"..."));
            let dedented = crossed
                && self.flow == 0
                && self
                    .indents
                    .last()
                    .is_some_and(|&indent| self.column() <= indent);
            if at_end || at_marker || dedented {
                // Hand the blanks back: the next token starts its own line.
                self.i = resume;
                self.line_start = resume_line;
                return;
            }
        }
    }

    /// A block scalar (`|` or `>`): its header, then every line indented
    /// past the current block collection (or as its indentation indicator
    /// says), and the empty lines among them.
    fn block_scalar(&mut self) {
        self.i += 1;
        let mut explicit = None;
        while let c @ (b'+' | b'-' | b'1'..=b'9') = self.peek(self.i) {
            if c.is_ascii_digit() {
                explicit = Some(usize::from(c - b'0'));
            }
            self.i += 1;
        }
        self.skip_line();
        let parent = self.indents.last().map_or(0, |&indent| indent + 1);
        let mut content = explicit.map(|n| parent.saturating_sub(1) + n);
        while self.i < self.b.len() {
            // At a line break: look at the next line.
            let line_break = self.i;
            let line_start = self.line_start;
            self.newline();
            let mut indent = 0;
            while self.peek(self.i) == b' ' {
                self.i += 1;
                indent += 1;
            }
            let empty = matches!(self.peek(self.i), b'\r' | b'\n' | 0);
            if empty {
                continue;
            }
            let needed = *content.get_or_insert(indent.max(parent));
            if indent < needed {
                self.i = line_break;
                self.line_start = line_start;
                return;
            }
            self.skip_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_ordinary_documents_are_shallow() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("hello"), 0);
        assert_eq!(depth("[1, 2, 3]"), 1);
        assert_eq!(depth(r#"{"a": {"b": [1, {"c": 2}]}}"#), 4);
        assert_eq!(depth("a: 1\nb:\n  c: 2\n  d:\n    - 1\n    - 2\n"), 3);
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let text = r#"
a: "[[[[{{{{"
b: '[[[[''[[[['
c: |
  [[[[[[[[[
  {{{{{{{{{
d: >-
    [[[[
e: plain text [[[[ with brackets
f: [ "]]]]", '}}}', x ]  # [[[[[
"#;
        assert_eq!(depth(text), 2);
    }

    #[test]
    fn a_closing_bracket_inside_a_string_does_not_hide_the_next_opening_one() {
        let hostile: String = (0..500).map(|_| r#"[ "]", "#).collect();
        let err = check(&hostile).unwrap_err();
        assert_eq!(err.line, 1);
        assert_eq!(err.why, Why::Depth(MAX_DEPTH));
        assert!(err.to_string().contains("deeper than 128 levels"), "{err}");
    }

    #[test]
    fn an_apostrophe_in_a_plain_scalar_opens_no_quote() {
        // "it's" and a continuation line starting with a quote are plain
        // text to a YAML parser; brackets after them are real.
        let deep = "[".repeat(200);
        for prefix in ["a: it's\n", "a: text\n  'more\n", "- don't\n"] {
            let text = format!("{prefix}z: {deep}");
            assert!(check(&text).is_err(), "{prefix:?} hid the nesting");
        }
    }

    #[test]
    fn deep_flow_block_and_compact_nesting_is_refused_where_it_passes_the_limit() {
        let flow = "[".repeat(50_000);
        let err = check(&flow).unwrap_err();
        assert_eq!((err.line, err.column), (1, 129));

        let braces = "{\"a\":".repeat(1000);
        assert!(check(&braces).is_err());

        let compact = "- ".repeat(1000);
        assert!(check(&compact).is_err());

        let mut indented = String::new();
        for level in 0..200 {
            indented.push_str(&" ".repeat(level));
            indented.push_str("k:\n");
        }
        let err = check(&indented).unwrap_err();
        assert_eq!(err.line, 129);
    }

    #[test]
    fn nesting_just_under_the_limit_over_and_over_is_refused_for_its_cost() {
        let unit = format!("{}{},", "[".repeat(120), "]".repeat(120));
        let text = format!("[{}]", unit.repeat(5_000));
        let err = check(&text).unwrap_err();
        assert_eq!(err.why, Why::Work(MAX_FLOW_WORK));
        assert!(
            err.to_string().contains("nests too deeply for its size"),
            "{err}"
        );
        // A few of them are fine.
        assert!(check(&format!("[{}]", unit.repeat(20))).is_ok());
        // Wide and shallow JSON of the same size costs little.
        let wide = format!("[{}]", r#"{"a": [1, 2, {"b": "c"}]},"#.repeat(20_000));
        assert!(wide.len() > 500_000);
        assert!(check(&wide).is_ok());
    }

    #[test]
    fn nesting_up_to_the_limit_passes() {
        let mut text = "[".repeat(MAX_DEPTH);
        text.push_str(&"]".repeat(MAX_DEPTH));
        assert!(check(&text).is_ok());
        text.insert(0, '[');
        assert!(check(&text).is_err());
    }

    #[test]
    fn serialized_values_measure_their_real_depth() {
        // What serde writes, as JSON and as YAML, measures exactly the
        // value's depth: nothing ordinary is refused for depth it lacks.
        fn nested(depth: usize, wide: bool) -> serde_json::Value {
            let mut value = serde_json::json!("leaf [with] {brackets} and 'quotes'\nand lines");
            for level in 0..depth {
                value = if level % 2 == 0 {
                    let mut items = vec![value];
                    if wide {
                        items.push(serde_json::json!({"x": "[", "y": [1, 2]}));
                    }
                    serde_json::Value::Array(items)
                } else {
                    serde_json::json!({"key": value, "other": "a: b - c # d"})
                };
            }
            value
        }
        fn real(value: &serde_json::Value) -> usize {
            match value {
                serde_json::Value::Array(items) => 1 + items.iter().map(real).max().unwrap_or(0),
                serde_json::Value::Object(map) => 1 + map.values().map(real).max().unwrap_or(0),
                _ => 0,
            }
        }
        for levels in [1, 2, 5, 17, 60, 120] {
            for wide in [false, true] {
                let value = nested(levels, wide);
                let depth_wanted = real(&value);
                let json = serde_json::to_string(&value).unwrap();
                let pretty = serde_json::to_string_pretty(&value).unwrap();
                let yaml = serde_yaml::to_string(&value).unwrap();
                assert_eq!(depth(&json), depth_wanted, "{json}");
                assert_eq!(depth(&pretty), depth_wanted, "{pretty}");
                // A sequence inside a mapping may share the mapping's
                // indentation, as the YAML scanner counts it too.
                let measured = depth(&yaml);
                assert!(
                    measured >= depth_wanted.div_ceil(2) && measured <= depth_wanted,
                    "depth {depth_wanted}, measured {measured}:\n{yaml}"
                );
            }
        }
    }

    #[test]
    fn block_scalars_end_where_their_indentation_does() {
        let text = "a: |\n  text [\n  more {\nb: [[1]]\n";
        assert_eq!(depth(text), 3);
        let explicit = "a: |2\n    [[[[\n  x\nb: 1\n";
        assert_eq!(depth(explicit), 1);
    }
}
