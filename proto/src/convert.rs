//! Conversions between wire messages and domain types. Every message that
//! can be wrong becomes a [`FieldError`] naming the field, never a panic.

use bytes::Bytes;
use mockplane_shared::model::environment::{Approvals, DataPolicy, Effective, Limits};
use mockplane_shared::model::keys::{ApiKeyConfig, parse_sha256_hex};
use mockplane_shared::model::matcher::{
    BodyMatch, FieldMatch, RawTextTest, RequestMatch, StringMatch,
};
use mockplane_shared::model::persona::{PersonaConfig, parse_persona_data, parse_persona_name};
use mockplane_shared::model::realism::{
    Chaos, Fault, Latency, LogNormal, Normal, Pareto, Realism, Uniform,
};
use mockplane_shared::model::state::{RawStateRule, StateRule};
use mockplane_shared::{
    ConfigRoute, EnvSettings, EnvironmentConfig, FieldError, ResponseSpec, RouteSpec, Slug,
    ValidationMode, WorkspaceConfig,
};
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
    })?
    .matching(
        parse_request_match(route.request_match.as_ref())?,
        route.priority,
    )?
    .templated(route.response.as_ref().is_some_and(|r| r.template))?
    .with_realism(parse_realism(route.latency.as_ref(), route.chaos.as_ref())?)?
    .with_state(raw_state(route.state.as_ref()).as_ref())
}

/// A route's state rule as the wire has it, unchecked.
pub fn raw_state(state: Option<&v1::RouteState>) -> Option<RawStateRule> {
    let state = state?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Some(RawStateRule {
        machine: state.machine.clone(),
        when: non_empty(&state.when),
        set: non_empty(&state.set),
        key: non_empty(&state.key),
    })
}

pub fn route_state(rule: &StateRule) -> v1::RouteState {
    v1::RouteState {
        machine: rule.machine.clone(),
        when: rule.when.clone().unwrap_or_default(),
        set: rule.set.clone().unwrap_or_default(),
        key: rule
            .key
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

/// Parses latency and chaos as a client sent them.
pub fn parse_realism(
    latency: Option<&v1::Latency>,
    chaos: Option<&v1::Chaos>,
) -> Result<Realism, FieldError> {
    let latency = latency.map(|wire| {
        use v1::latency::Distribution as D;
        let mut latency = Latency {
            min: wire.min_ms,
            max: wire.max_ms,
            ..Latency::default()
        };
        match &wire.distribution {
            None => {}
            Some(D::FixedMs(ms)) => latency.fixed = Some(*ms),
            Some(D::Uniform(u)) => {
                latency.uniform = Some(Uniform {
                    min: u.min_ms,
                    max: u.max_ms,
                });
            }
            Some(D::Normal(n)) => {
                latency.normal = Some(Normal {
                    mean: n.mean_ms,
                    stddev: n.stddev_ms,
                });
            }
            Some(D::Lognormal(l)) => {
                latency.lognormal = Some(LogNormal {
                    median: l.median_ms,
                    sigma: l.sigma,
                });
            }
            Some(D::Pareto(p)) => {
                latency.pareto = Some(Pareto {
                    scale: p.scale_ms,
                    shape: p.shape,
                });
            }
        }
        latency
    });
    let chaos = chaos
        .map(|wire| {
            let mut statuses = std::collections::BTreeMap::new();
            for (index, s) in wire.statuses.iter().enumerate() {
                let status = u16::try_from(s.status).map_err(|_| {
                    FieldError::new(
                        format!("chaos.statuses[{index}].status"),
                        "not an HTTP status",
                    )
                })?;
                statuses.insert(status, s.weight);
            }
            let mut faults = std::collections::BTreeMap::new();
            for (index, f) in wire.faults.iter().enumerate() {
                let fault = Fault::parse(&f.fault)
                    .map_err(|e| FieldError::new(format!("chaos.faults[{index}].fault"), e))?;
                faults.insert(fault, f.weight);
            }
            Ok::<_, FieldError>(Chaos {
                rate: wire.rate,
                statuses,
                faults,
                seed: wire.seed,
            })
        })
        .transpose()?;
    Ok(Realism { latency, chaos })
}

/// Latency as a wire message.
pub fn latency(latency: &Latency) -> v1::Latency {
    use v1::latency::Distribution as D;
    let distribution = if let Some(ms) = latency.fixed {
        Some(D::FixedMs(ms))
    } else if let Some(u) = latency.uniform {
        Some(D::Uniform(v1::UniformLatency {
            min_ms: u.min,
            max_ms: u.max,
        }))
    } else if let Some(n) = latency.normal {
        Some(D::Normal(v1::NormalLatency {
            mean_ms: n.mean,
            stddev_ms: n.stddev,
        }))
    } else if let Some(l) = latency.lognormal {
        Some(D::Lognormal(v1::LogNormalLatency {
            median_ms: l.median,
            sigma: l.sigma,
        }))
    } else {
        latency.pareto.map(|p| {
            D::Pareto(v1::ParetoLatency {
                scale_ms: p.scale,
                shape: p.shape,
            })
        })
    };
    v1::Latency {
        distribution,
        min_ms: latency.min,
        max_ms: latency.max,
    }
}

/// Chaos as a wire message.
pub fn chaos(chaos: &Chaos) -> v1::Chaos {
    v1::Chaos {
        rate: chaos.rate,
        statuses: chaos
            .statuses
            .iter()
            .map(|(status, weight)| v1::WeightedStatus {
                status: u32::from(*status),
                weight: *weight,
            })
            .collect(),
        faults: chaos
            .faults
            .iter()
            .map(|(fault, weight)| v1::WeightedFault {
                fault: fault.as_str().to_owned(),
                weight: *weight,
            })
            .collect(),
        seed: chaos.seed,
    }
}

/// Parses matchers as a client sent them; unset is none.
pub fn parse_request_match(wire: Option<&v1::RequestMatch>) -> Result<RequestMatch, FieldError> {
    let Some(wire) = wire else {
        return Ok(RequestMatch::default());
    };
    let fields = |list: &[v1::FieldMatch], what: &str| {
        list.iter()
            .enumerate()
            .map(|(index, m)| {
                FieldMatch::new(m.name.clone(), raw_text(m.test.as_ref()))
                    .map_err(|e| FieldError::new(format!("request_match.{what}[{index}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let body = wire
        .body
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let field = format!("request_match.body[{index}]");
            let parsed = match &m.kind {
                None => BodyMatch::new(None, false, false, None, RawTextTest::default()),
                Some(v1::body_match::Kind::Json(json)) => {
                    let value = serde_json::from_str(&json.json).map_err(|e| {
                        FieldError::new(format!("{field}.json.json"), format!("not JSON: {e}"))
                    })?;
                    let (extra, order) = (json.ignore_extra_fields, json.ignore_array_order);
                    BodyMatch::new(Some(value), extra, order, None, RawTextTest::default())
                }
                Some(v1::body_match::Kind::JsonPath(path)) => BodyMatch::new(
                    None,
                    false,
                    false,
                    Some(path.path.clone()),
                    raw_text(path.test.as_ref()),
                ),
                Some(v1::body_match::Kind::Text(text)) => {
                    BodyMatch::new(None, false, false, None, raw_text(Some(text)))
                }
            };
            parsed.map_err(|e| FieldError::new(field, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RequestMatch {
        query: fields(&wire.query, "query")?,
        headers: fields(&wire.headers, "headers")?,
        body,
    })
}

fn raw_text(wire: Option<&v1::TextMatch>) -> RawTextTest {
    let mut raw = RawTextTest {
        ignore_case: wire.is_some_and(|w| w.ignore_case),
        ..RawTextTest::default()
    };
    match wire.and_then(|w| w.test.as_ref()) {
        Some(v1::text_match::Test::Equals(text)) => raw.equals = Some(text.clone()),
        Some(v1::text_match::Test::Contains(text)) => raw.contains = Some(text.clone()),
        Some(v1::text_match::Test::Regex(text)) => raw.regex = Some(text.clone()),
        Some(v1::text_match::Test::Present(present)) => raw.present = Some(*present),
        None => {}
    }
    raw
}

fn text_match(test: &StringMatch) -> v1::TextMatch {
    let raw = RawTextTest::from_match(test);
    let test = if let Some(text) = raw.equals {
        v1::text_match::Test::Equals(text)
    } else if let Some(text) = raw.contains {
        v1::text_match::Test::Contains(text)
    } else if let Some(text) = raw.regex {
        v1::text_match::Test::Regex(text)
    } else {
        v1::text_match::Test::Present(raw.present.unwrap_or(true))
    };
    v1::TextMatch {
        test: Some(test),
        ignore_case: raw.ignore_case,
    }
}

/// Matchers as a wire message; `None` when there are none.
pub fn request_match(matcher: &RequestMatch) -> Option<v1::RequestMatch> {
    if matcher.is_empty() {
        return None;
    }
    let fields = |list: &[FieldMatch]| {
        list.iter()
            .map(|m| v1::FieldMatch {
                name: m.name.clone(),
                test: Some(text_match(&m.test)),
            })
            .collect()
    };
    Some(v1::RequestMatch {
        query: fields(&matcher.query),
        headers: fields(&matcher.headers),
        body: matcher
            .body
            .iter()
            .map(|m| v1::BodyMatch {
                kind: Some(match m {
                    BodyMatch::Json {
                        value,
                        ignore_extra_fields,
                        ignore_array_order,
                    } => v1::body_match::Kind::Json(v1::JsonBodyMatch {
                        json: value.to_string(),
                        ignore_extra_fields: *ignore_extra_fields,
                        ignore_array_order: *ignore_array_order,
                    }),
                    BodyMatch::JsonPath { path, test } => {
                        v1::body_match::Kind::JsonPath(v1::JsonPathMatch {
                            path: path.as_str().to_owned(),
                            test: test.as_ref().map(text_match),
                        })
                    }
                    BodyMatch::Text(test) => v1::body_match::Kind::Text(text_match(test)),
                }),
            })
            .collect(),
    })
}

/// Parses a mock response.
/// Whether it is a template is carried, not checked: templates are checked
/// with the route they belong to ([`RouteSpec::templated`]).
pub fn parse_response(response: &v1::MockResponse) -> Result<ResponseSpec, FieldError> {
    Ok(ResponseSpec {
        template: response.template,
        ..ResponseSpec::parse(
            response.status,
            header_pairs(&response.headers),
            Bytes::copy_from_slice(&response.body),
        )?
    })
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
        template: spec.template,
    }
}

/// An environment's settings on the wire.
pub fn env_settings(settings: &EnvSettings) -> v1::EnvironmentSettings {
    v1::EnvironmentSettings {
        reality_level: settings.reality.map(u32::from),
        latency: settings.latency.as_ref().map(latency),
        chaos: settings.chaos.as_ref().map(chaos),
        drift_budget: settings.drift_budget,
        validation: validation_mode(settings.validation) as i32,
        reason_required: settings.reason_required,
        approvals: settings.approvals.as_ref().map(approvals),
        data_policy: settings.data_policy.map(data_policy),
        required_checks: settings
            .required_checks
            .as_ref()
            .map(|names| v1::RequiredChecks {
                names: names.clone(),
            }),
        limits: settings.limits.map(limits),
    }
}

/// Limits on the wire: 0 for each one unset.
pub fn limits(limits: Limits) -> v1::Limits {
    v1::Limits {
        requests_per_second: limits.requests_per_second.unwrap_or(0),
        burst: limits.burst.unwrap_or(0),
        max_concurrent: limits.max_concurrent.unwrap_or(0),
    }
}

/// Limits from the wire (0: unset), checked.
pub fn parse_limits(wire: &v1::Limits) -> Result<Limits, FieldError> {
    let set = |value: u32| (value > 0).then_some(value);
    let parsed = Limits {
        requests_per_second: set(wire.requests_per_second),
        burst: set(wire.burst),
        max_concurrent: set(wire.max_concurrent),
    };
    parsed.check()?;
    Ok(parsed)
}

fn approvals(a: &Approvals) -> v1::Approvals {
    v1::Approvals {
        required: a.required,
        roles: a.roles.clone(),
        expire_after_secs: a.expire_after_secs.unwrap_or(0),
    }
}

fn data_policy(p: DataPolicy) -> v1::DataPolicy {
    v1::DataPolicy {
        forbid_pii: p.forbid_pii,
        forbid_test_data: p.forbid_test_data,
    }
}

/// The settings in force, every field filled in.
pub fn effective_settings(effective: &Effective) -> v1::EnvironmentSettings {
    v1::EnvironmentSettings {
        reality_level: Some(u32::from(effective.reality)),
        latency: effective.realism.latency.as_ref().map(latency),
        chaos: effective.realism.chaos.as_ref().map(chaos),
        drift_budget: effective.drift_budget,
        validation: validation_mode(Some(effective.validation)) as i32,
        reason_required: Some(effective.reason_required),
        approvals: Some(v1::Approvals {
            required: effective.approvals.required,
            roles: effective.approvals.roles.clone(),
            expire_after_secs: effective.approvals.expire_after_secs(),
        }),
        data_policy: Some(data_policy(effective.data_policy)),
        required_checks: Some(v1::RequiredChecks {
            names: effective.required_checks.clone(),
        }),
        limits: Some(limits(effective.limits)),
    }
}

fn validation_mode(mode: Option<ValidationMode>) -> v1::ValidationMode {
    match mode {
        None => v1::ValidationMode::Unspecified,
        Some(ValidationMode::Off) => v1::ValidationMode::Off,
        Some(ValidationMode::Warn) => v1::ValidationMode::Warn,
        Some(ValidationMode::Enforce) => v1::ValidationMode::Enforce,
    }
}

/// Parses settings from the wire; unset fields stay unset (inherit).
pub fn parse_env_settings(
    wire: Option<&v1::EnvironmentSettings>,
) -> Result<EnvSettings, FieldError> {
    let Some(wire) = wire else {
        return Ok(EnvSettings::default());
    };
    let realism = parse_realism(wire.latency.as_ref(), wire.chaos.as_ref())?;
    let validation = match v1::ValidationMode::try_from(wire.validation) {
        Ok(v1::ValidationMode::Unspecified) => None,
        Ok(v1::ValidationMode::Off) => Some(ValidationMode::Off),
        Ok(v1::ValidationMode::Warn) => Some(ValidationMode::Warn),
        Ok(v1::ValidationMode::Enforce) => Some(ValidationMode::Enforce),
        Err(_) => {
            return Err(FieldError::new(
                "validation",
                format!("{} is not a validation mode", wire.validation),
            ));
        }
    };
    let reality = match wire.reality_level {
        None => None,
        Some(level) => Some(u8::try_from(level).map_err(|_| {
            FieldError::new("reality_level", format!("must be 1 to 5, got {level}"))
        })?),
    };
    let settings = EnvSettings {
        reality,
        latency: realism.latency,
        chaos: realism.chaos,
        drift_budget: wire.drift_budget,
        validation,
        reason_required: wire.reason_required,
        approvals: wire.approvals.as_ref().map(|a| Approvals {
            required: a.required,
            roles: a.roles.clone(),
            expire_after_secs: (a.expire_after_secs > 0).then_some(a.expire_after_secs),
        }),
        data_policy: wire.data_policy.as_ref().map(|p| DataPolicy {
            forbid_pii: p.forbid_pii,
            forbid_test_data: p.forbid_test_data,
        }),
        required_checks: wire.required_checks.as_ref().map(|c| c.names.clone()),
        limits: wire.limits.as_ref().map(parse_limits).transpose()?,
    };
    settings.check().map_err(|e| {
        if e.field == "reality" {
            FieldError::new("reality_level", e.message)
        } else {
            e
        }
    })?;
    Ok(settings)
}

/// Parses a UUID field, naming the field when it is not one.
pub fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, FieldError> {
    Uuid::try_parse(raw).map_err(|_| FieldError::new(field, format!("{raw:?} is not a UUID")))
}

impl From<&ConfigRoute> for v1::RouteConfig {
    fn from(route: &ConfigRoute) -> Self {
        v1::RouteConfig {
            id: route.id.to_string(),
            name: route.spec.name.clone(),
            method: route.spec.method.as_str().to_owned(),
            path: route.spec.path.as_str().to_owned(),
            status: u32::from(route.spec.response.status),
            headers: headers(&route.spec.response.headers),
            body: route.spec.response.body.clone(),
            request_match: request_match(&route.spec.matcher),
            priority: u32::from(route.spec.priority),
            template: route.spec.response.template,
            latency: route.spec.realism.latency.as_ref().map(latency),
            chaos: route.spec.realism.chaos.as_ref().map(chaos),
            state: route.spec.state.as_ref().map(route_state),
        }
    }
}

impl From<&WorkspaceConfig> for v1::WorkspaceConfig {
    fn from(config: &WorkspaceConfig) -> Self {
        v1::WorkspaceConfig {
            id: config.id.to_string(),
            slug: config.slug.to_string(),
            active_environment: config.active.to_string(),
            environments: config
                .environments
                .iter()
                .map(|env| v1::EnvironmentConfig {
                    name: env.name.to_string(),
                    latency: env.realism.latency.as_ref().map(latency),
                    chaos: env.realism.chaos.as_ref().map(chaos),
                    routes: env.routes.iter().map(v1::RouteConfig::from).collect(),
                    api_keys: env
                        .keys
                        .iter()
                        .map(|key| v1::ApiKeyConfig {
                            id: key.id.to_string(),
                            sha256: hex::encode(key.sha256),
                            test: key.test,
                            expires_at_unix: key.expires_at_unix,
                        })
                        .collect(),
                    personas: env
                        .personas
                        .iter()
                        .map(|persona| v1::PersonaConfig {
                            name: persona.name.to_string(),
                            data: persona.data.to_string(),
                        })
                        .collect(),
                    limits: (!env.limits.is_unlimited()).then(|| limits(env.limits)),
                })
                .collect(),
            state_epoch: config.state_epoch,
            require_api_keys: config.require_api_keys,
        }
    }
}

impl TryFrom<v1::WorkspaceConfig> for WorkspaceConfig {
    type Error = FieldError;

    /// Checks everything a node relies on: ids, slug, environments, every
    /// route, and the workspace-wide rules of [`WorkspaceConfig::validate`].
    fn try_from(config: v1::WorkspaceConfig) -> Result<Self, Self::Error> {
        let id = parse_uuid("id", &config.id)?;
        let slug = Slug::parse(&config.slug).map_err(|e| FieldError::new("slug", e.to_string()))?;
        let active = Slug::parse(&config.active_environment)
            .map_err(|e| FieldError::new("active_environment", e.to_string()))?;
        let environments = config
            .environments
            .into_iter()
            .enumerate()
            .map(|(index, env)| {
                parse_environment_config(env)
                    .map_err(|e| e.within(&format!("environments[{index}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = WorkspaceConfig {
            id,
            slug,
            active,
            environments,
            state_epoch: config.state_epoch,
            require_api_keys: config.require_api_keys,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Parses a route of a snapshot or a scenario version.
pub fn parse_config_routes(routes: Vec<v1::RouteConfig>) -> Result<Vec<ConfigRoute>, FieldError> {
    routes
        .into_iter()
        .enumerate()
        .map(|(index, route)| {
            parse_config_route(route).map_err(|e| e.within(&format!("routes[{index}]")))
        })
        .collect()
}

fn parse_environment_config(env: v1::EnvironmentConfig) -> Result<EnvironmentConfig, FieldError> {
    let name = Slug::parse(&env.name).map_err(|e| FieldError::new("name", e.to_string()))?;
    Ok(EnvironmentConfig {
        name,
        realism: parse_realism(env.latency.as_ref(), env.chaos.as_ref())?,
        routes: parse_config_routes(env.routes)?,
        keys: env
            .api_keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| {
                parse_api_key_config(key).map_err(|e| e.within(&format!("api_keys[{index}]")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        personas: env
            .personas
            .into_iter()
            .enumerate()
            .map(|(index, persona)| {
                let field = format!("personas[{index}]");
                Ok(PersonaConfig {
                    name: parse_persona_name(&persona.name).map_err(|e| e.within(&field))?,
                    data: parse_persona_data(&persona.data).map_err(|e| e.within(&field))?,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?,
        limits: env
            .limits
            .as_ref()
            .map(parse_limits)
            .transpose()?
            .unwrap_or_default(),
    })
}

fn parse_api_key_config(key: v1::ApiKeyConfig) -> Result<ApiKeyConfig, FieldError> {
    Ok(ApiKeyConfig {
        id: parse_uuid("id", &key.id)?,
        sha256: parse_sha256_hex(&key.sha256)?,
        test: key.test,
        expires_at_unix: key.expires_at_unix,
    })
}

fn parse_config_route(route: v1::RouteConfig) -> Result<ConfigRoute, FieldError> {
    let id = parse_uuid("id", &route.id)?;
    let spec = RouteSpec::parse(&route.name, &route.method, &route.path, || {
        ResponseSpec::parse(route.status, header_pairs(&route.headers), route.body)
    })?
    .matching(
        parse_request_match(route.request_match.as_ref())?,
        route.priority,
    )?
    .templated(route.template)?
    .with_realism(parse_realism(route.latency.as_ref(), route.chaos.as_ref())?)?
    .with_state(raw_state(route.state.as_ref()).as_ref())?;
    Ok(ConfigRoute { id, spec })
}

/// A contract check as the API shows it.
pub fn contract_check(check: &mockplane_shared::model::checks::ContractCheck) -> v1::ContractCheck {
    v1::ContractCheck {
        name: check.name.clone(),
        request: Some(v1::CheckRequest {
            method: check.request.method.clone(),
            path: check.request.path.clone(),
            headers: check.request.headers.iter().cloned().collect(),
            body: check.request.body.clone(),
        }),
        expect: Some(v1::CheckExpectation {
            status: u32::from(check.expect.status),
            headers: check.expect.headers.iter().cloned().collect(),
            body_json: check
                .expect
                .body
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            body_contains: check.expect.body_contains.clone().unwrap_or_default(),
        }),
    }
}

/// Parses contract checks from the wire, naming the field that is wrong.
pub fn parse_contract_checks(
    wire: &[v1::ContractCheck],
) -> Result<Vec<mockplane_shared::model::checks::ContractCheck>, FieldError> {
    use mockplane_shared::model::checks::{CheckRequest, ContractCheck, Expectation, check_all};
    let mut checks = Vec::with_capacity(wire.len());
    for (index, check) in wire.iter().enumerate() {
        let field = format!("checks[{index}]");
        let request = check
            .request
            .as_ref()
            .ok_or_else(|| FieldError::new(format!("{field}.request"), "is required"))?;
        let expect = check
            .expect
            .as_ref()
            .ok_or_else(|| FieldError::new(format!("{field}.expect"), "is required"))?;
        let body = if expect.body_json.trim().is_empty() {
            None
        } else {
            Some(serde_json::from_str(&expect.body_json).map_err(|e| {
                FieldError::new(
                    format!("{field}.expect.body_json"),
                    format!("is not JSON: {e}"),
                )
            })?)
        };
        let status = u16::try_from(expect.status).map_err(|_| {
            FieldError::new(
                format!("{field}.expect.status"),
                format!("must be an HTTP status, got {}", expect.status),
            )
        })?;
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers.sort();
        let mut expected_headers: Vec<(String, String)> = expect
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        expected_headers.sort();
        checks.push(ContractCheck {
            name: check.name.clone(),
            request: CheckRequest {
                method: if request.method.is_empty() {
                    "GET".into()
                } else {
                    request.method.to_ascii_uppercase()
                },
                path: request.path.clone(),
                headers,
                body: request.body.clone(),
            },
            expect: Expectation {
                status,
                headers: expected_headers,
                body,
                body_contains: (!expect.body_contains.is_empty())
                    .then(|| expect.body_contains.clone()),
            },
        });
    }
    check_all(&checks)?;
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkspaceConfig {
        WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("demo").unwrap(),
            vec![ConfigRoute {
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
        )
    }

    #[test]
    fn workspace_config_round_trips() {
        let mut config = sample();
        let mut prod = config.environments[0].clone();
        prod.name = Slug::parse("prod").unwrap();
        prod.realism = mockplane_shared::model::environment::reality_level(5);
        config.environments.push(prod);
        let wire = v1::WorkspaceConfig::from(&config);
        assert_eq!(WorkspaceConfig::try_from(wire).unwrap(), config);
    }

    #[test]
    fn api_keys_travel_as_hashes() {
        let mut config = sample();
        config.require_api_keys = true;
        config.environments[0].keys.push(ApiKeyConfig {
            id: Uuid::new_v4(),
            sha256: mockplane_shared::model::keys::digest(b"mpk_secret"),
            test: true,
            expires_at_unix: 1_900_000_000,
        });
        let wire = v1::WorkspaceConfig::from(&config);
        let sent = &wire.environments[0].api_keys[0];
        assert_eq!(
            sent.sha256,
            mockplane_shared::model::keys::hash_hex("mpk_secret")
        );
        assert!(wire.require_api_keys);
        assert_eq!(WorkspaceConfig::try_from(wire.clone()).unwrap(), config);

        let mut bad = wire.clone();
        bad.environments[0].api_keys[0].sha256 = "nope".into();
        let err = WorkspaceConfig::try_from(bad).unwrap_err();
        assert_eq!(err.field, "environments[0].api_keys[0].sha256");
        let mut twice = wire;
        let key = twice.environments[0].api_keys[0].clone();
        twice.environments[0].api_keys.push(v1::ApiKeyConfig {
            id: Uuid::new_v4().to_string(),
            ..key
        });
        let err = WorkspaceConfig::try_from(twice).unwrap_err();
        assert_eq!(err.field, "environments[0].keys[1]");
    }

    #[test]
    fn bad_wire_config_names_the_field() {
        let mut wire = v1::WorkspaceConfig::from(&sample());
        let routes = &mut wire.environments[0].routes;
        routes[0].status = 42;
        let err = WorkspaceConfig::try_from(wire.clone()).unwrap_err();
        assert_eq!(err.field, "environments[0].routes[0].response.status");

        let routes = &mut wire.environments[0].routes;
        routes[0].status = 200;
        routes.push(routes[0].clone());
        routes[1].id = Uuid::new_v4().to_string();
        let err = WorkspaceConfig::try_from(wire.clone()).unwrap_err();
        assert_eq!(err.field, "environments[0].routes[1]");
        wire.environments[0].routes.pop();

        let mut twice = wire.clone();
        twice.environments.push(twice.environments[0].clone());
        let err = WorkspaceConfig::try_from(twice).unwrap_err();
        assert_eq!(err.field, "environments[1].name");

        let mut elsewhere = wire.clone();
        elsewhere.active_environment = "prod".into();
        let err = WorkspaceConfig::try_from(elsewhere).unwrap_err();
        assert_eq!(err.field, "active_environment");

        let mut chaotic = wire.clone();
        chaotic.environments[0].chaos = Some(v1::Chaos {
            rate: 3.0,
            ..Default::default()
        });
        let err = WorkspaceConfig::try_from(chaotic).unwrap_err();
        assert_eq!(err.field, "environments[0].chaos");

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

    #[test]
    fn matchers_and_realism_round_trip_and_bad_ones_name_the_field() {
        let matcher: RequestMatch = serde_json::from_value(serde_json::json!({
            "query": [{ "name": "q", "contains": "x", "ignoreCase": true }],
            "headers": [{ "name": "h", "present": false }],
            "body": [
                { "json": { "a": [1] }, "ignoreArrayOrder": true },
                { "jsonPath": "$.a", "regex": "^1" },
                { "equals": "raw" },
            ],
        }))
        .unwrap();
        let wire = request_match(&matcher).unwrap();
        assert_eq!(parse_request_match(Some(&wire)).unwrap(), matcher);
        assert!(request_match(&RequestMatch::default()).is_none());

        let realism: Realism = serde_json::from_value(serde_json::json!({
            "latency": { "lognormal": { "median": 80, "sigma": 0.5 }, "max": 900 },
            "chaos": { "rate": 0.2, "statuses": { "503": 2 }, "faults": { "truncated": 1 }, "seed": 3 },
        }))
        .unwrap();
        let back = parse_realism(
            realism.latency.as_ref().map(latency).as_ref(),
            realism.chaos.as_ref().map(chaos).as_ref(),
        )
        .unwrap();
        assert_eq!(back, realism);

        let mut bad = wire.clone();
        bad.body[0] = v1::BodyMatch {
            kind: Some(v1::body_match::Kind::Json(v1::JsonBodyMatch {
                json: "{".into(),
                ..Default::default()
            })),
        };
        assert_eq!(
            parse_request_match(Some(&bad)).unwrap_err().field,
            "request_match.body[0].json.json"
        );
        let mut bad = wire;
        bad.headers[0].test = None;
        let err = parse_request_match(Some(&bad)).unwrap_err();
        assert_eq!(err.field, "request_match.headers[0]");
        assert!(err.message.contains("needs a test"), "{err}");
        let fault = v1::Chaos {
            rate: 0.1,
            faults: vec![v1::WeightedFault {
                fault: "melt".into(),
                weight: 1,
            }],
            ..Default::default()
        };
        assert_eq!(
            parse_realism(None, Some(&fault)).unwrap_err().field,
            "chaos.faults[0].fault"
        );
    }
}
