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

use crate::model::route::{Method, ParamKind, PathTemplate, Segment};

const METHODS: usize = Method::ALL.len();
/// No child, no route.
const NONE: u32 = u32::MAX;
/// Literal children up to this many are searched linearly.
const LINEAR_SEARCH: usize = 8;

/// One route to compile: where it is, how it ranks, and its payload `T`
/// (the data plane keeps its response and matchers there).
#[derive(Debug, Clone)]
pub struct RouteDef<T> {
    pub method: Method,
    pub template: PathTemplate,
    /// Lower wins.
    pub priority: u16,
    /// How many request matchers the route has: more is more specific.
    pub conditions: u16,
    /// Identity of the matchers: two routes at the same method, path shape
    /// and priority with equal keys would match the same requests.
    pub key: String,
    pub value: T,
}

impl<T> RouteDef<T> {
    /// A route with no matchers at the default priority.
    pub fn plain(method: Method, template: PathTemplate, value: T) -> Self {
        Self {
            method,
            template,
            priority: crate::model::route::DEFAULT_PRIORITY,
            conditions: 0,
            key: String::new(),
            value,
        }
    }
}

/// A compiled set of routes carrying a payload `T` each.
#[derive(Debug)]
pub struct Router<T> {
    /// `nodes[0]` is the root.
    nodes: Box<[Node]>,
    /// Every node's literal children, node after node.
    edges: Box<[Edge]>,
    /// Every literal segment's text, one after the other.
    texts: Box<str>,
    /// Every node's parameter children, node after node, narrowest first.
    params: Box<[ParamEdge]>,
    /// The candidates of every (node, method) slot, best first.
    candidates: Box<[u32]>,
    entries: Vec<Entry<T>>,
    /// The best priority of any route: a match at it ends the search.
    top_priority: u16,
}

#[derive(Debug)]
struct Entry<T> {
    method: Method,
    template: Box<str>,
    priority: u16,
    value: T,
}

#[derive(Debug)]
struct Node {
    /// This node's literal children are `edges[first..first + count]`,
    /// sorted by segment text.
    first: u32,
    count: u32,
    /// Its parameter children are `params[params_first..][..params_count]`.
    params_first: u32,
    params_count: u32,
    /// Per method (`Method::index()` order): the slot's candidates are
    /// `candidates[start..start + len]` packed as `start << 8 | len`;
    /// `NONE` when the method has no route here.
    methods: [u32; METHODS],
}

/// Most routes sharing one (path, method) slot.
pub const MAX_SLOT_ROUTES: usize = 255;

/// A literal child: its segment text is `texts[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Edge {
    start: u32,
    end: u32,
    child: u32,
}

#[derive(Debug, Clone)]
struct ParamEdge {
    kind: ParamKind,
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

    fn params<'a>(&self, params: &'a [ParamEdge]) -> &'a [ParamEdge] {
        let start = self.params_first as usize;
        params
            .get(start..start + self.params_count as usize)
            .unwrap_or_default()
    }

    fn has_routes(&self) -> bool {
        self.methods.iter().any(|slot| *slot != NONE)
    }

    fn children<'a>(
        &self,
        edges: &'a [Edge],
        params: &'a [ParamEdge],
    ) -> impl Iterator<Item = u32> + 'a {
        self.literals(edges)
            .iter()
            .map(|edge| edge.child)
            .chain(self.params(params).iter().map(|edge| edge.child))
    }
}

/// A node while the trie is being built.
#[derive(Default)]
struct Building {
    literals: Vec<(Box<str>, u32)>,
    params: Vec<(ParamKind, u32)>,
    methods: [Vec<u32>; METHODS],
}

/// Two routes that would answer exactly the same requests, or too many on
/// one path and method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("route {second} ({method} {path}) matches the same requests as route {first}")]
    Duplicate {
        /// Index, in build order, of the route that came first.
        first: usize,
        second: usize,
        method: Method,
        path: String,
    },
    #[error("more than {MAX_SLOT_ROUTES} routes for {method} {path}")]
    Crowded { method: Method, path: String },
}

/// The outcome of matching one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(&'a T),
    /// Routes have this path and method, but the request failed their
    /// matchers.
    Rejected,
    /// Some route has this path, none has this method.
    MethodNotAllowed,
    NotFound,
}

impl<T> Router<T> {
    /// Compiles routes; fails on the first pair that would match the same
    /// requests (same method, path shape, priority and matchers).
    pub fn build(routes: impl IntoIterator<Item = RouteDef<T>>) -> Result<Self, BuildError> {
        let mut building = vec![Building::default()];
        let mut entries: Vec<Entry<T>> = Vec::new();
        let mut ranks: Vec<(u16, std::cmp::Reverse<u16>, String)> = Vec::new();
        for (index, route) in routes.into_iter().enumerate() {
            let mut node = 0;
            for segment in route.template.segments() {
                let next = match segment {
                    Segment::Literal(text) => building[node]
                        .literals
                        .iter()
                        .find(|(existing, _)| **existing == **text)
                        .map(|(_, child)| *child),
                    Segment::Param { kind, .. } => building[node]
                        .params
                        .iter()
                        .find(|(existing, _)| existing == kind)
                        .map(|(_, child)| *child),
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
                            Segment::Param { kind, .. } => {
                                building[node].params.push((kind.clone(), child));
                            }
                        }
                        child as usize
                    }
                };
            }
            let slot = &mut building[node].methods[route.method.index()];
            if let Some(&first) = slot.iter().find(|&&other| {
                let (priority, _, key) = &ranks[other as usize];
                *priority == route.priority && *key == route.key
            }) {
                return Err(BuildError::Duplicate {
                    first: first as usize,
                    second: index,
                    method: route.method,
                    path: route.template.as_str().to_owned(),
                });
            }
            if slot.len() >= MAX_SLOT_ROUTES {
                return Err(BuildError::Crowded {
                    method: route.method,
                    path: route.template.as_str().to_owned(),
                });
            }
            slot.push(u32::try_from(index).unwrap_or(NONE));
            ranks.push((
                route.priority,
                std::cmp::Reverse(route.conditions),
                route.key,
            ));
            entries.push(Entry {
                method: route.method,
                template: route.template.as_str().into(),
                priority: route.priority,
                value: route.value,
            });
        }
        let top_priority = entries.iter().map(|e| e.priority).min().unwrap_or(0);
        let mut texts = String::new();
        let mut edges = Vec::new();
        let mut params = Vec::new();
        let mut candidates: Vec<u32> = Vec::new();
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
                // Narrowest parameter first; equal ranks keep their order.
                node.params.sort_by_key(|(kind, _)| kind.rank());
                let params_first = u32::try_from(params.len()).unwrap_or(u32::MAX);
                let params_count = u32::try_from(node.params.len()).unwrap_or(u32::MAX);
                params.extend(
                    node.params
                        .into_iter()
                        .map(|(kind, child)| ParamEdge { kind, child }),
                );
                let methods = node.methods.map(|mut slot| {
                    if slot.is_empty() {
                        return NONE;
                    }
                    // Best first: priority, then more matchers, then order.
                    slot.sort_by(|a, b| {
                        let (pa, ca, _) = &ranks[*a as usize];
                        let (pb, cb, _) = &ranks[*b as usize];
                        (pa, ca, a).cmp(&(pb, cb, b))
                    });
                    let start = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
                    let len = slot.len() as u32;
                    candidates.extend(slot);
                    (start << 8) | len
                });
                Node {
                    first,
                    count: u32::try_from(node.literals.len()).unwrap_or(u32::MAX),
                    params_first,
                    params_count,
                    methods,
                }
            })
            .collect();
        Ok(Self {
            nodes,
            edges: edges.into_boxed_slice(),
            texts: texts.into_boxed_str(),
            params: params.into_boxed_slice(),
            candidates: candidates.into_boxed_slice(),
            entries,
            top_priority,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every route's payload, in build order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|entry| &entry.value)
    }

    fn slot(&self, packed: u32) -> &[u32] {
        if packed == NONE {
            return &[];
        }
        let start = (packed >> 8) as usize;
        let len = (packed & 0xff) as usize;
        self.candidates.get(start..start + len).unwrap_or_default()
    }

    /// Matches a request on method and path alone. `method` is `None` for
    /// methods only `ANY` routes answer; `path` is the path without the query
    /// string.
    pub fn lookup(&self, method: Option<Method>, path: &str) -> Lookup<'_, T> {
        self.lookup_where(method, path, |_| true)
    }

    /// Matches a request: among the routes whose method and path fit and
    /// that `accept` takes (their matchers), the one with the best priority;
    /// between equal priorities, the most specific path (literal before
    /// parameter, narrow parameter before wide, the request's method before
    /// `ANY`), then the most matchers, then the first created.
    pub fn lookup_where(
        &self,
        method: Option<Method>,
        path: &str,
        accept: impl FnMut(&T) -> bool,
    ) -> Lookup<'_, T> {
        let mut search = Search {
            router: self,
            method,
            accept,
            best: None,
            path_exists: false,
            rejected: false,
        };
        search.find(0, Segments::new(path));
        match search.best {
            Some(index) => Lookup::Found(&self.entries[index as usize].value),
            None if search.rejected => Lookup::Rejected,
            None if search.path_exists => Lookup::MethodNotAllowed,
            None => Lookup::NotFound,
        }
    }

    /// The routes whose method and path fit a request, best first by the
    /// order [`Router::lookup_where`] tries them, for near-miss reports.
    pub fn candidates(&self, method: Option<Method>, path: &str, limit: usize) -> Vec<&T> {
        let mut found = Vec::new();
        self.collect_candidates(0, Segments::new(path), method, limit, &mut found);
        found
            .into_iter()
            .map(|index| &self.entries[index as usize].value)
            .collect()
    }

    fn collect_candidates(
        &self,
        node: u32,
        mut segments: Segments<'_>,
        method: Option<Method>,
        limit: usize,
        found: &mut Vec<u32>,
    ) {
        if found.len() >= limit {
            return;
        }
        let current = &self.nodes[node as usize];
        let Some(part) = segments.next() else {
            for packed in method_slots(current, method) {
                for &index in self.slot(packed) {
                    if found.len() < limit {
                        found.push(index);
                    }
                }
            }
            return;
        };
        if let Some(child) = current.literal(&self.edges, &self.texts, part) {
            self.collect_candidates(child, segments.clone(), method, limit, found);
        }
        for edge in current.params(&self.params) {
            if edge.kind.accepts(part) {
                self.collect_candidates(edge.child, segments.clone(), method, limit, found);
            }
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
        for edge in current.params(&self.params) {
            if edge.kind.accepts(part) {
                self.collect_methods(edge.child, segments.clone(), seen);
            }
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
            if let Some(&index) = method_slots(current, method)
                .next()
                .and_then(|packed| self.slot(packed).first())
            {
                return Some(self.describe(index));
            }
            if fallback.is_none() {
                fallback = current
                    .methods
                    .iter()
                    .find(|slot| **slot != NONE)
                    .and_then(|packed| self.slot(*packed).first().copied());
            }
            queue.extend(current.children(&self.edges, &self.params));
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
        let mut best = (depth, node);
        if let Some(child) = current.literal(&self.edges, &self.texts, part) {
            best = self.deepest(child, segments.clone(), depth + 1);
        }
        for edge in current.params(&self.params) {
            if edge.kind.accepts(part) {
                let found = self.deepest(edge.child, segments.clone(), depth + 1);
                if found.0 > best.0 {
                    best = found;
                }
            }
        }
        best
    }
}

/// One lookup's walk: depth first, most specific branch first, keeping the
/// best accepted route so far.
struct Search<'r, T, F> {
    router: &'r Router<T>,
    method: Option<Method>,
    accept: F,
    best: Option<u32>,
    path_exists: bool,
    rejected: bool,
}

impl<T, F: FnMut(&T) -> bool> Search<'_, T, F> {
    /// Returns `true` when the search is over: a route at the best priority
    /// any route has was accepted, and nothing later can beat it.
    fn find(&mut self, node: u32, mut segments: Segments<'_>) -> bool {
        let router = self.router;
        let current = &router.nodes[node as usize];
        let Some(part) = segments.next() else {
            let mut any_slot = false;
            for packed in method_slots(current, self.method) {
                any_slot = true;
                for &index in router.slot(packed) {
                    let entry = &router.entries[index as usize];
                    if let Some(best) = self.best
                        && router.entries[best as usize].priority <= entry.priority
                    {
                        // Candidates are sorted: none after this one wins.
                        break;
                    }
                    if (self.accept)(&entry.value) {
                        self.best = Some(index);
                        if entry.priority == router.top_priority {
                            return true;
                        }
                        break;
                    }
                    self.rejected = true;
                }
            }
            if !any_slot && current.has_routes() {
                self.path_exists = true;
            }
            return false;
        };
        if let Some(child) = current.literal(&router.edges, &router.texts, part)
            && self.find(child, segments.clone())
        {
            return true;
        }
        for edge in current.params(&router.params) {
            if edge.kind.accepts(part) && self.find(edge.child, segments.clone()) {
                return true;
            }
        }
        false
    }
}

/// The slots a request method may use at a node, in order: its own, `GET`
/// for `HEAD`, then `ANY`.
fn method_slots(node: &Node, method: Option<Method>) -> impl Iterator<Item = u32> + '_ {
    let own = method.map(|m| node.methods[m.index()]);
    let head_get = match method {
        Some(Method::Head) => Some(node.methods[Method::Get.index()]),
        _ => None,
    };
    own.into_iter()
        .chain(head_get)
        .chain(Some(node.methods[Method::Any.index()]))
        .filter(|packed| *packed != NONE)
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
        Router::build(routes.iter().enumerate().map(|(i, (m, p))| {
            RouteDef::plain(m.parse().unwrap(), PathTemplate::parse(p).unwrap(), i)
        }))
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
            RouteDef::plain(Method::Get, PathTemplate::parse("/u/{id}").unwrap(), ()),
            RouteDef::plain(Method::Get, PathTemplate::parse("/u/{uid}").unwrap(), ()),
        ])
        .unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::Duplicate {
                    first: 0,
                    second: 1,
                    ..
                }
            ),
            "{err}"
        );
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

    fn def(method: &str, path: &str, priority: u16, key: &str, value: usize) -> RouteDef<usize> {
        RouteDef {
            method: method.parse().unwrap(),
            template: PathTemplate::parse(path).unwrap(),
            priority,
            conditions: u16::from(!key.is_empty()),
            key: key.to_owned(),
            value,
        }
    }

    #[test]
    fn typed_parameters_are_tried_narrowest_first() {
        let r = router(&[
            ("GET", "/items/{name}"),
            ("GET", "/items/{id:int}"),
            ("GET", "/items/{id:uuid}"),
            ("GET", "/items/{code:[A-Z]{3}}"),
        ]);
        let found = |path: &str| match r.lookup(Some(Method::Get), path) {
            Lookup::Found(index) => Some(*index),
            _ => None,
        };
        assert_eq!(found("/items/42"), Some(1));
        assert_eq!(found("/items/-7"), Some(1));
        assert_eq!(
            found("/items/6f1c0a8e-3b1d-4f3a-9a51-0c9e2b7d4e11"),
            Some(2)
        );
        assert_eq!(found("/items/ABC"), Some(3));
        assert_eq!(found("/items/ABCD"), Some(0));
        assert_eq!(found("/items/4x"), Some(0));
        // Without the catch-all, what fits no type is not found.
        let r = router(&[("GET", "/n/{id:int}")]);
        assert_eq!(r.lookup(Some(Method::Get), "/n/x"), Lookup::NotFound);
        // The hint still points at the route whose type refused it.
        assert_eq!(
            r.closest(Some(Method::Get), "/n/x"),
            Some((Method::Get, "/n/{id:int}"))
        );
    }

    #[test]
    fn matchers_priority_then_specificity() {
        // 0: plain; 1: needs "a"; 2: needs "b" at a better priority; 3: a
        // literal sibling at the default priority.
        let r = Router::build([
            def("GET", "/u/{id}", 5, "", 0),
            def("GET", "/u/{id}", 5, "a", 1),
            def("GET", "/u/{id}", 2, "b", 2),
            def("GET", "/u/me", 5, "", 3),
        ])
        .unwrap();
        let pick =
            |path: &str, passes: &[usize]| match r.lookup_where(Some(Method::Get), path, |v| {
                *v == 0 || *v == 3 || passes.contains(v)
            }) {
                Lookup::Found(v) => Some(*v),
                _ => None,
            };
        assert_eq!(pick("/u/7", &[]), Some(0));
        // More matchers beat fewer at equal priority.
        assert_eq!(pick("/u/7", &[1]), Some(1));
        // Priority beats matchers and beats the more specific literal path.
        assert_eq!(pick("/u/7", &[1, 2]), Some(2));
        assert_eq!(pick("/u/me", &[2]), Some(2));
        // At equal priority the literal path wins over the parameter.
        assert_eq!(pick("/u/me", &[1]), Some(3));

        // When every candidate refuses, the outcome says so.
        let r = Router::build([def("POST", "/x", 5, "a", 0)]).unwrap();
        assert_eq!(
            r.lookup_where(Some(Method::Post), "/x", |_| false),
            Lookup::Rejected
        );
        assert_eq!(
            r.lookup_where(Some(Method::Get), "/x", |_| false),
            Lookup::MethodNotAllowed
        );
        assert_eq!(r.candidates(Some(Method::Post), "/x", 3), vec![&0]);
    }

    #[test]
    fn same_matchers_and_priority_are_duplicates_others_are_not() {
        assert!(Router::build([def("GET", "/a", 5, "k", 0), def("GET", "/a", 5, "k", 1)]).is_err());
        assert!(Router::build([def("GET", "/a", 5, "k", 0), def("GET", "/a", 1, "k", 1)]).is_ok());
        assert!(Router::build([def("GET", "/a", 5, "k", 0), def("GET", "/a", 5, "j", 1)]).is_ok());
        let crowded = (0..=MAX_SLOT_ROUTES).map(|i| def("GET", "/a", 5, &i.to_string(), i));
        assert!(matches!(
            Router::build(crowded),
            Err(BuildError::Crowded { .. })
        ));
    }
}
