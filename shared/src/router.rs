//! The route compiler: a workspace's routes become a path trie, built once
//! per config change, so that matching a request walks its path segments once
//! instead of scanning routes, and allocates nothing.
//!
//! Specificity: at every segment a literal beats a parameter; when the more
//! specific branch has no route for the method, matching backtracks to the
//! parameter branch. At the end of the path the request's own method beats
//! `ANY`, and `HEAD` falls back to `GET`.

use std::collections::HashMap;

use crate::route::{Method, PathTemplate, Segment};

const METHODS: usize = Method::ALL.len();

/// A compiled set of routes carrying a payload `T` each (the data plane keeps
/// its ready-to-send response there).
#[derive(Debug)]
pub struct Router<T> {
    root: Node,
    entries: Vec<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    method: Method,
    template: PathTemplate,
    value: T,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, Node>,
    param: Option<Box<Node>>,
    /// Route index per method, `Method::index()` order.
    methods: [Option<u32>; METHODS],
}

/// Two routes that would answer exactly the same requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {second} ({method} {path}) matches the same requests as route {first}")]
pub struct DuplicateRoute {
    /// Index, in build order, of the route that came first.
    pub first: usize,
    pub second: usize,
    pub method: Method,
    pub path: String,
}

/// The outcome of matching one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    /// Some route has this path, none has this method.
    MethodNotAllowed,
    NotFound,
}

impl<T> Router<T> {
    /// Compiles routes; fails on the first pair that would match the same
    /// requests (same method, same path up to parameter names).
    pub fn build(
        routes: impl IntoIterator<Item = (Method, PathTemplate, T)>,
    ) -> Result<Self, DuplicateRoute> {
        let mut root = Node::default();
        let mut entries = Vec::new();
        for (index, (method, template, value)) in routes.into_iter().enumerate() {
            let mut node = &mut root;
            for segment in template.segments() {
                node = match segment {
                    Segment::Literal(text) => {
                        node.literals.entry(text.as_str().into()).or_default()
                    }
                    Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                };
            }
            let slot = &mut node.methods[method.index()];
            if let Some(first) = *slot {
                return Err(DuplicateRoute {
                    first: first as usize,
                    second: index,
                    method,
                    path: template.as_str().to_owned(),
                });
            }
            *slot = Some(u32::try_from(index).unwrap_or(u32::MAX));
            entries.push(Entry {
                method,
                template,
                value,
            });
        }
        Ok(Self { root, entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Matches a request. `method` is `None` for methods only `ANY` routes
    /// answer; `path` is the path without the query string.
    pub fn lookup(&self, method: Option<Method>, path: &str) -> Lookup<'_, T> {
        let mut path_exists = false;
        match find(&self.root, Segments::new(path), method, &mut path_exists) {
            Some(index) => Lookup::Found(&self.entries[index as usize].value),
            None if path_exists => Lookup::MethodNotAllowed,
            None => Lookup::NotFound,
        }
    }

    /// The methods with a route for this path, for an `Allow` header.
    pub fn allowed_methods(&self, path: &str) -> Vec<Method> {
        let mut seen = [false; METHODS];
        collect_methods(&self.root, Segments::new(path), &mut seen);
        Method::ALL
            .into_iter()
            .filter(|m| seen[m.index()])
            .collect()
    }

    /// The route that comes closest to a request that matched none, for a
    /// hint: the most leading segments in common, then the same method.
    /// Linear in the number of routes; only called on a miss.
    pub fn closest(&self, method: Option<Method>, path: &str) -> Option<(Method, &PathTemplate)> {
        self.entries
            .iter()
            .map(|entry| {
                let common = entry
                    .template
                    .segments()
                    .iter()
                    .zip(Segments::new(path))
                    .take_while(|(segment, part)| match segment {
                        Segment::Literal(text) => text == part,
                        Segment::Param(_) => !part.is_empty(),
                    })
                    .count();
                let same_method = Some(entry.method) == method || entry.method == Method::Any;
                (common, usize::from(same_method), entry)
            })
            // A route with no segment in common is no hint at all.
            .filter(|(common, _, _)| *common > 0)
            .max_by_key(|(common, same_method, _)| (*common, *same_method))
            .map(|(_, _, entry)| (entry.method, &entry.template))
    }
}

fn method_slot(node: &Node, method: Option<Method>) -> Option<u32> {
    let exact = method.and_then(|m| node.methods[m.index()]);
    exact
        .or_else(|| match method {
            Some(Method::Head) => node.methods[Method::Get.index()],
            _ => None,
        })
        .or(node.methods[Method::Any.index()])
}

fn find(
    node: &Node,
    mut segments: Segments<'_>,
    method: Option<Method>,
    path_exists: &mut bool,
) -> Option<u32> {
    let Some(part) = segments.next() else {
        let slot = method_slot(node, method);
        if slot.is_none() && node.methods.iter().any(Option::is_some) {
            *path_exists = true;
        }
        return slot;
    };
    if let Some(child) = node.literals.get(part)
        && let Some(found) = find(child, segments.clone(), method, path_exists)
    {
        return Some(found);
    }
    match &node.param {
        Some(child) if !part.is_empty() => find(child, segments, method, path_exists),
        _ => None,
    }
}

fn collect_methods(node: &Node, mut segments: Segments<'_>, seen: &mut [bool; METHODS]) {
    let Some(part) = segments.next() else {
        for (slot, flag) in node.methods.iter().zip(seen.iter_mut()) {
            *flag |= slot.is_some();
        }
        return;
    };
    if let Some(child) = node.literals.get(part) {
        collect_methods(child, segments.clone(), seen);
    }
    if let Some(child) = &node.param
        && !part.is_empty()
    {
        collect_methods(child, segments, seen);
    }
}

/// The segments of a request path: `/a/b/` yields `a`, `b`, ``; `/` yields
/// nothing. Cloning is copying a slice, which makes backtracking free.
#[derive(Clone)]
struct Segments<'a>(Option<&'a str>);

impl<'a> Segments<'a> {
    fn new(path: &'a str) -> Self {
        let rest = path.strip_prefix('/').unwrap_or(path);
        Self((!rest.is_empty()).then_some(rest))
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.split_once('/') {
            Some((part, tail)) => {
                self.0 = Some(tail);
                Some(part)
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router<usize> {
        Router::build(
            routes
                .iter()
                .enumerate()
                .map(|(i, (m, p))| (m.parse().unwrap(), PathTemplate::parse(p).unwrap(), i)),
        )
        .unwrap()
    }

    #[test]
    fn literal_beats_parameter_and_backtracks() {
        let r = router(&[
            ("GET", "/users/{id}"),
            ("GET", "/users/me"),
            ("DELETE", "/users/{id}"),
            ("GET", "/users/{id}/orders"),
        ]);
        assert_eq!(r.lookup(Some(Method::Get), "/users/me"), Lookup::Found(&1));
        assert_eq!(r.lookup(Some(Method::Get), "/users/7"), Lookup::Found(&0));
        // `me` has no DELETE route: back to the parameter branch.
        assert_eq!(
            r.lookup(Some(Method::Delete), "/users/me"),
            Lookup::Found(&2)
        );
        assert_eq!(
            r.lookup(Some(Method::Get), "/users/7/orders"),
            Lookup::Found(&3)
        );
        assert_eq!(
            r.lookup(Some(Method::Post), "/users/7"),
            Lookup::MethodNotAllowed
        );
        assert_eq!(r.lookup(Some(Method::Get), "/users"), Lookup::NotFound);
        assert_eq!(r.lookup(Some(Method::Get), "/users/"), Lookup::NotFound);
        assert_eq!(
            r.lookup(Some(Method::Get), "/users/7/orders/x"),
            Lookup::NotFound
        );
        assert_eq!(
            r.allowed_methods("/users/7"),
            vec![Method::Get, Method::Delete]
        );
    }

    #[test]
    fn root_trailing_slash_and_any() {
        let r = router(&[
            ("GET", "/"),
            ("ANY", "/echo"),
            ("GET", "/dir/"),
            ("POST", "/echo"),
        ]);
        assert_eq!(r.lookup(Some(Method::Get), "/"), Lookup::Found(&0));
        assert_eq!(r.lookup(Some(Method::Get), ""), Lookup::Found(&0));
        assert_eq!(r.lookup(Some(Method::Put), "/echo"), Lookup::Found(&1));
        assert_eq!(r.lookup(None, "/echo"), Lookup::Found(&1));
        assert_eq!(r.lookup(Some(Method::Post), "/echo"), Lookup::Found(&3));
        assert_eq!(r.lookup(Some(Method::Get), "/dir/"), Lookup::Found(&2));
        assert_eq!(r.lookup(Some(Method::Get), "/dir"), Lookup::NotFound);
    }

    #[test]
    fn head_falls_back_to_get() {
        let r = router(&[("GET", "/a")]);
        assert_eq!(r.lookup(Some(Method::Head), "/a"), Lookup::Found(&0));
    }

    #[test]
    fn parameters_do_not_match_empty_segments() {
        let r = router(&[("GET", "/a/{x}/b")]);
        assert_eq!(r.lookup(Some(Method::Get), "/a//b"), Lookup::NotFound);
        assert_eq!(r.lookup(Some(Method::Get), "/a/1/b"), Lookup::Found(&0));
    }

    #[test]
    fn duplicates_are_refused() {
        let err = Router::build([
            (Method::Get, PathTemplate::parse("/u/{id}").unwrap(), ()),
            (Method::Get, PathTemplate::parse("/u/{uid}").unwrap(), ()),
        ])
        .unwrap_err();
        assert_eq!((err.first, err.second), (0, 1));
    }

    #[test]
    fn closest_route_for_hints() {
        let r = router(&[("GET", "/users/{id}"), ("POST", "/orders")]);
        let (method, template) = r.closest(Some(Method::Get), "/users/1/x").unwrap();
        assert_eq!((method, template.as_str()), (Method::Get, "/users/{id}"));
        assert!(r.closest(Some(Method::Put), "/nothing").is_none());
        // Sharing only the method is not close.
        assert!(r.closest(Some(Method::Post), "/nothing").is_none());
        let (method, _) = r.closest(Some(Method::Post), "/users/1").unwrap();
        assert_eq!(method, Method::Get);
    }
}
