//! Conversions between wire messages and domain types. Every message that
//! can be wrong becomes a [`FieldError`] naming the field, never a panic.

use bytes::Bytes;
use mockplane_shared::{ConfigRoute, FieldError, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
use uuid::Uuid;

use crate::v1;

/// Parses a route as a client sent it (the id and output-only fields are
/// ignored).
pub fn parse_route(route: &v1::Route) -> Result<RouteSpec, FieldError> {
    RouteSpec::parse(&route.name, &route.method, &route.path, || {
        let response = route
            .response
            .as_ref()
            .ok_or_else(|| FieldError::new("", "is required"))?;
        parse_response(response)
    })
}

/// Parses a mock response.
pub fn parse_response(response: &v1::MockResponse) -> Result<ResponseSpec, FieldError> {
    ResponseSpec::parse(
        response.status,
        header_pairs(&response.headers),
        Bytes::copy_from_slice(&response.body),
    )
}

fn header_pairs(headers: &[v1::Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// Wire headers from domain pairs.
pub fn headers(pairs: &[(String, String)]) -> Vec<v1::Header> {
    pairs
        .iter()
        .map(|(name, value)| v1::Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// A route's response as a wire message.
pub fn response(spec: &ResponseSpec) -> v1::MockResponse {
    v1::MockResponse {
        status: u32::from(spec.status),
        headers: headers(&spec.headers),
        body: spec.body.to_vec(),
    }
}

/// Parses a UUID field, naming the field when it is not one.
pub fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, FieldError> {
    Uuid::try_parse(raw).map_err(|_| FieldError::new(field, format!("{raw:?} is not a UUID")))
}

impl From<&WorkspaceConfig> for v1::WorkspaceConfig {
    fn from(config: &WorkspaceConfig) -> Self {
        v1::WorkspaceConfig {
            id: config.id.to_string(),
            slug: config.slug.to_string(),
            routes: config
                .routes
                .iter()
                .map(|route| v1::RouteConfig {
                    id: route.id.to_string(),
                    name: route.spec.name.clone(),
                    method: route.spec.method.as_str().to_owned(),
                    path: route.spec.path.as_str().to_owned(),
                    status: u32::from(route.spec.response.status),
                    headers: headers(&route.spec.response.headers),
                    body: route.spec.response.body.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::WorkspaceConfig> for WorkspaceConfig {
    type Error = FieldError;

    /// Checks everything a node relies on: ids, slug, every route, and the
    /// workspace-wide rules of [`WorkspaceConfig::validate`].
    fn try_from(config: v1::WorkspaceConfig) -> Result<Self, Self::Error> {
        let id = parse_uuid("id", &config.id)?;
        let slug = Slug::parse(&config.slug).map_err(|e| FieldError::new("slug", e.to_string()))?;
        let routes = config
            .routes
            .into_iter()
            .enumerate()
            .map(|(index, route)| {
                parse_config_route(route).map_err(|e| e.within(&format!("routes[{index}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = WorkspaceConfig { id, slug, routes };
        config.validate()?;
        Ok(config)
    }
}

fn parse_config_route(route: v1::RouteConfig) -> Result<ConfigRoute, FieldError> {
    let id = parse_uuid("id", &route.id)?;
    let spec = RouteSpec::parse(&route.name, &route.method, &route.path, || {
        ResponseSpec::parse(route.status, header_pairs(&route.headers), route.body)
    })?;
    Ok(ConfigRoute { id, spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkspaceConfig {
        WorkspaceConfig {
            id: Uuid::new_v4(),
            slug: Slug::parse("demo").unwrap(),
            routes: vec![ConfigRoute {
                id: Uuid::new_v4(),
                spec: RouteSpec::parse("user", "GET", "/users/{id}", || {
                    ResponseSpec::parse(
                        200,
                        vec![("content-type".into(), "application/json".into())],
                        Bytes::from_static(b"{\"id\":1}"),
                    )
                })
                .unwrap(),
            }],
        }
    }

    #[test]
    fn workspace_config_round_trips() {
        let config = sample();
        let wire = v1::WorkspaceConfig::from(&config);
        assert_eq!(WorkspaceConfig::try_from(wire).unwrap(), config);
    }

    #[test]
    fn bad_wire_config_names_the_field() {
        let mut wire = v1::WorkspaceConfig::from(&sample());
        wire.routes[0].status = 42;
        let err = WorkspaceConfig::try_from(wire.clone()).unwrap_err();
        assert_eq!(err.field, "routes[0].response.status");

        wire.routes[0].status = 200;
        wire.routes.push(wire.routes[0].clone());
        wire.routes[1].id = Uuid::new_v4().to_string();
        let err = WorkspaceConfig::try_from(wire.clone()).unwrap_err();
        assert_eq!(err.field, "routes[1]");

        wire.slug = "Bad".into();
        assert_eq!(WorkspaceConfig::try_from(wire).unwrap_err().field, "slug");
    }

    #[test]
    fn missing_response_is_reported() {
        let route = v1::Route {
            method: "GET".into(),
            path: "/a".into(),
            ..Default::default()
        };
        assert_eq!(
            parse_route(&route).unwrap_err().to_string(),
            "response: is required"
        );
    }
}
