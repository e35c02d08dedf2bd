//! How a data-plane request path names its workspace.

/// The prefixes that put a workspace slug in the path, matched on whole
/// segments: `/w/demo/x` names `demo`, `/widgets/1` names nothing.
const PREFIXES: [&str; 2] = ["/w/", "/workspace/"];

/// Splits `/w/{slug}/{rest}` (or `/workspace/{slug}/{rest}`) into the slug and
/// the rest of the path, which keeps its leading `/`. `/w/demo` and
/// `/w/demo/` both leave `/`. `None` when the path names no workspace.
/// The query string is not part of `path`; callers keep it as it was.
pub fn split_workspace_path(path: &str) -> Option<(&str, &str)> {
    let tail = PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))?;
    let (slug, rest) = match tail.find('/') {
        Some(end) => (&tail[..end], &tail[end..]),
        None => (tail, "/"),
    };
    (!slug.is_empty()).then_some((slug, rest))
}

#[cfg(test)]
mod tests {
    use super::split_workspace_path as split;

    #[test]
    fn matches_whole_segments_only() {
        assert_eq!(split("/w/demo/users/1"), Some(("demo", "/users/1")));
        assert_eq!(split("/workspace/demo/users/1"), Some(("demo", "/users/1")));
        assert_eq!(split("/w/demo"), Some(("demo", "/")));
        assert_eq!(split("/w/demo/"), Some(("demo", "/")));
        assert_eq!(split("/widgets/1"), None);
        assert_eq!(split("/workspaces/demo/x"), None);
        assert_eq!(split("/w"), None);
        assert_eq!(split("/w/"), None);
        assert_eq!(split("/w//x"), None);
        assert_eq!(split("/"), None);
    }
}
