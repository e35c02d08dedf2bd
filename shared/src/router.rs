//! The route compiler: a workspace's routes become a path trie, built once
//! per config change, so that matching a request walks its path segments once
//! instead of scanning routes, and allocates nothing.
//!
//! Specificity: at every segment a literal beats a parameter; when the more
//! specific branch has no route for the method, matching backtracks to the
//! parameter branch. At the end of the path the request's own method beats
//! `ANY`, and `HEAD` falls back to `GET`.
//!
//! Layout: the nodes of a trie live in one vector and refer to each other by
//! index, and the text of every literal segment lives in one string. A
//! node's literal children are a slice sorted by segment, searched linearly
//! when short and by bisection when long: no hashing per segment, a few
//! dozen bytes per node, and few cache lines per lookup, which is what a
//! lookup costs once a node holds 10 000 workspaces of routes.

use crate::route::{Method, PathTemplate, Segment};

const METHODS: usize = Method::ALL.len();
/// No child, no route.
const NONE: u32 = u32::MAX;
/// Literal children up to this many are searched linearly.
const LINEAR_SEARCH: usize = 8;

/// A compiled set of routes carrying a payload `T` each (the data plane keeps
/// its response there).
#[derive(Debug)]
pub struct Router<T> {
    /// `nodes[0]` is the root.
    nodes: Box<[Node]>,
    /// Every node's literal children, node after node.
    edges: Box<[Edge]>,
    /// Every literal segment's text, one after the other.
    texts: Box<str>,
    entries: Vec<Entry<T>>,
}

#[derive(Debug)]
struct Entry<T> {
    method: Method,
    template: Box<str>,
    value: T,
}

#[derive(Debug)]
struct Node {
    /// This node's literal children are `edges[first..first + count]`,
    /// sorted by segment text.
    first: u32,
    count: u32,
    param: u32,
    /// Route index per method, `Method::index()` order.
    methods: [u32; METHODS],
}

/// A literal child: its segment text is `texts[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Edge {
    start: u32,
    end: u32,
    child: u32,
}

impl Edge {
    fn text(self, texts: &str) -> &str {
        texts
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

impl Node {
    fn literals<'a>(&self, edges: &'a [Edge]) -> &'a [Edge] {
        let start = self.first as usize;
        edges
            .get(start..start + self.count as usize)
            .unwrap_or_default()
    }

    fn literal(&self, edges: &[Edge], texts: &str, part: &str) -> Option<u32> {
        let literals = self.literals(edges);
        if literals.len() <= LINEAR_SEARCH {
            literals
                .iter()
                .find(|edge| edge.text(texts) == part)
                .map(|edge| edge.child)
        } else {
            literals
                .binary_search_by(|edge| edge.text(texts).cmp(part))
                .ok()
                .map(|index| literals[index].child)
        }
    }

    fn param(&self) -> Option<u32> {
        (self.param != NONE).then_some(self.param)
    }

    fn has_routes(&self) -> bool {
        self.methods.iter().any(|slot| *slot != NONE)
    }

    fn children<'a>(&self, edges: &'a [Edge]) -> impl Iterator<Item = u32> + 'a {
        self.literals(edges)
            .iter()
            .map(|edge| edge.child)
            .chain(self.param())
    }
}

/// A node while the trie is being built.
#[derive(Default)]
struct Building {
    literals: Vec<(Box<str>, u32)>,
    param: Option<u32>,
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
        let mut building = vec![Building::default()];
        let mut entries = Vec::new();
        for (index, (method, template, value)) in routes.into_iter().enumerate() {
            let mut node = 0;
            for segment in template.segments() {
                let next = match segment {
                    Segment::Literal(text) => building[node]
                        .literals
                        .iter()
                        .find(|(existing, _)| **existing == **text)
                        .map(|(_, child)| *child),
                    Segment::Param(_) => building[node].param,
                };
                node = match next {
                    Some(child) => child as usize,
                    None => {
                        let child = u32::try_from(building.len()).unwrap_or(NONE);
                        building.push(Building::default());
                        match segment {
                            Segment::Literal(text) => {
                                building[node].literals.push((text.as_str().into(), child));
                            }
                            Segment::Param(_) => building[node].param = Some(child),
                        }
                        child as usize
                    }
                };
            }
            let slot = &mut building[node].methods[method.index()];
            if let Some(first) = *slot {
                return Err(DuplicateRoute {
                    first: first as usize,
                    second: index,
                    method,
                    path: template.as_str().to_owned(),
                });
            }
            *slot = Some(u32::try_from(index).unwrap_or(NONE));
            entries.push(Entry {
                method,
                template: template.as_str().into(),
                value,
            });
        }
        let mut texts = String::new();
        let mut edges = Vec::new();
        let nodes = building
            .into_iter()
            .map(|mut node| {
                node.literals.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let first = u32::try_from(edges.len()).unwrap_or(u32::MAX);
                for (text, child) in &node.literals {
                    let start = u32::try_from(texts.len()).unwrap_or(u32::MAX);
                    texts.push_str(text);
                    let end = u32::try_from(texts.len()).unwrap_or(u32::MAX);
                    edges.push(Edge {
                        start,
                        end,
                        child: *child,
                    });
                }
                Node {
                    first,
                    count: u32::try_from(node.literals.len()).unwrap_or(u32::MAX),
                    param: node.param.unwrap_or(NONE),
                    methods: node.methods.map(|slot| slot.unwrap_or(NONE)),
                }
            })
            .collect();
        Ok(Self {
            nodes,
            edges: edges.into_boxed_slice(),
            texts: texts.into_boxed_str(),
            entries,
        })
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
        match self.find(0, Segments::new(path), method, &mut path_exists) {
            Some(index) => Lookup::Found(&self.entries[index as usize].value),
            None if path_exists => Lookup::MethodNotAllowed,
            None => Lookup::NotFound,
        }
    }

    fn find(
        &self,
        node: u32,
        mut segments: Segments<'_>,
        method: Option<Method>,
        path_exists: &mut bool,
    ) -> Option<u32> {
        let current = &self.nodes[node as usize];
        let Some(part) = segments.next() else {
            let slot = method_slot(current, method);
            if slot.is_none() && current.has_routes() {
                *path_exists = true;
            }
            return slot;
        };
        if let Some(child) = current.literal(&self.edges, &self.texts, part)
            && let Some(found) = self.find(child, segments.clone(), method, path_exists)
        {
            return Some(found);
        }
        match current.param() {
            Some(child) if !part.is_empty() => self.find(child, segments, method, path_exists),
            _ => None,
        }
    }

    /// The methods with a route for this path, for an `Allow` header.
    pub fn allowed_methods(&self, path: &str) -> Vec<Method> {
        let mut seen = [false; METHODS];
        self.collect_methods(0, Segments::new(path), &mut seen);
        Method::ALL
            .into_iter()
            .filter(|m| seen[m.index()])
            .collect()
    }

    fn collect_methods(&self, node: u32, mut segments: Segments<'_>, seen: &mut [bool; METHODS]) {
        let current = &self.nodes[node as usize];
        let Some(part) = segments.next() else {
            for (slot, flag) in current.methods.iter().zip(seen.iter_mut()) {
                *flag |= *slot != NONE;
            }
            return;
        };
        if let Some(child) = current.literal(&self.edges, &self.texts, part) {
            self.collect_methods(child, segments.clone(), seen);
        }
        if let Some(child) = current.param()
            && !part.is_empty()
        {
            self.collect_methods(child, segments, seen);
        }
    }

    /// The route that comes closest to a request that matched none, for a
    /// hint: one under the deepest node the path reaches (at least one
    /// segment deep), preferring the request's method. Only called on a miss.
    pub fn closest(&self, method: Option<Method>, path: &str) -> Option<(Method, &str)> {
        let (depth, node) = self.deepest(0, Segments::new(path), 0);
        if depth == 0 {
            return None;
        }
        // The routes under that node, nearest first.
        let mut queue = std::collections::VecDeque::from([node]);
        let mut fallback = None;
        while let Some(next) = queue.pop_front() {
            let current = &self.nodes[next as usize];
            if let Some(index) = method_slot(current, method) {
                return Some(self.describe(index));
            }
            if fallback.is_none() {
                fallback = current.methods.iter().copied().find(|slot| *slot != NONE);
            }
            queue.extend(current.children(&self.edges));
        }
        fallback.map(|index| self.describe(index))
    }

    fn describe(&self, index: u32) -> (Method, &str) {
        let entry = &self.entries[index as usize];
        (entry.method, &entry.template)
    }

    /// How many segments of the path the trie follows, and where it ends.
    fn deepest(&self, node: u32, mut segments: Segments<'_>, depth: usize) -> (usize, u32) {
        let Some(part) = segments.next() else {
            return (depth, node);
        };
        let current = &self.nodes[node as usize];
        let literal = current
            .literal(&self.edges, &self.texts, part)
            .map(|child| self.deepest(child, segments.clone(), depth + 1));
        let param = current
            .param()
            .filter(|_| !part.is_empty())
            .map(|child| self.deepest(child, segments, depth + 1));
        match (literal, param) {
            (Some(a), Some(b)) => {
                if b.0 > a.0 {
                    b
                } else {
                    a
                }
            }
            (Some(found), None) | (None, Some(found)) => found,
            (None, None) => (depth, node),
        }
    }
}

fn method_slot(node: &Node, method: Option<Method>) -> Option<u32> {
    let slot = |m: Method| Some(node.methods[m.index()]).filter(|s| *s != NONE);
    method
        .and_then(slot)
        .or_else(|| match method {
            Some(Method::Head) => slot(Method::Get),
            _ => None,
        })
        .or_else(|| slot(Method::Any))
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
    fn many_literal_children_are_found_by_bisection() {
        let paths: Vec<String> = (0..100).map(|i| format!("/items/{i}")).collect();
        let routes: Vec<(&str, &str)> = paths.iter().map(|p| ("GET", p.as_str())).collect();
        let r = router(&routes);
        for (index, path) in paths.iter().enumerate() {
            assert_eq!(
                r.lookup(Some(Method::Get), path),
                Lookup::Found(&index),
                "{path}"
            );
        }
        assert_eq!(r.lookup(Some(Method::Get), "/items/100"), Lookup::NotFound);
        assert_eq!(r.lookup(Some(Method::Get), "/items/"), Lookup::NotFound);
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
        assert_eq!(
            r.closest(Some(Method::Get), "/users/1/x"),
            Some((Method::Get, "/users/{id}"))
        );
        assert!(r.closest(Some(Method::Put), "/nothing").is_none());
        // Sharing only the method is not close.
        assert!(r.closest(Some(Method::Post), "/nothing").is_none());
        let (method, _) = r.closest(Some(Method::Post), "/users/1").unwrap();
        assert_eq!(method, Method::Get);
        // Deeper is closer; the request's method breaks ties below.
        let r = router(&[("GET", "/a/b/c"), ("POST", "/a/b/d"), ("GET", "/a/x")]);
        assert_eq!(
            r.closest(Some(Method::Post), "/a/b"),
            Some((Method::Post, "/a/b/d"))
        );
        assert_eq!(
            r.closest(Some(Method::Get), "/a/b/zzz"),
            Some((Method::Get, "/a/b/c"))
        );
    }
}
