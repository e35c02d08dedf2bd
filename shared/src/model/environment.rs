//! Environments: the stages a workspace's mocks move through (dev → test →
//! prod by default), each with its own realism and rules.
//!
//! An environment's settings are overrides: every field left unset takes the
//! workspace's default, and a field the workspace leaves unset takes the
//! built-in one. Each field replaces the one below it whole (a chaos profile
//! set on prod replaces the workspace's chaos profile; it is not merged
//! status by status). The control plane computes the effective settings once
//! per change and publishes them in the snapshot.
//!
//! File form (YAML or JSON):
//!
//! ```yaml
//! reality: 4                      # 1 (instant, perfect) to 5 (production-like)
//! latency: { normal: { mean: 120, stddev: 40 }, max: 800 }   # replaces the level's latency
//! chaos: { rate: 0.02, statuses: { 503: 1 } }                 # replaces the level's chaos
//! drift_budget: 0                 # breaking changes a promotion into it may carry
//! validation: enforce             # off | warn | enforce
//! reason_required: true           # acting on it needs a stated reason
//! approvals: { required: 1, roles: [admin], expire_after_secs: 259200 }
//! data_policy: { forbid_pii: true, forbid_test_data: false }
//! required_checks: [ci]           # external checks a promotion into it needs green
//! limits: { requests_per_second: 100, burst: 200, max_concurrent: 50 }   # per node
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::error::FieldError;
use crate::model::realism::{Chaos, Fault, LogNormal, Normal, Pareto, Realism, Uniform};
use crate::model::slug::Slug;

/// Most environments one workspace may have.
pub const MAX_ENVIRONMENTS: usize = 16;
/// The reality level of an environment whose settings name none.
pub const DEFAULT_REALITY: u8 = 1;
/// Largest drift budget that can be set; larger is "unlimited" (unset).
pub const MAX_DRIFT_BUDGET: u32 = 100_000;
/// Most approvals an environment may require of one promotion.
pub const MAX_REQUIRED_APPROVALS: u32 = 10;
/// How long a promotion waits for its approvals unless the environment says.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u32 = 72 * 3600;
/// Longest approval timeout: 90 days.
pub const MAX_APPROVAL_TIMEOUT_SECS: u32 = 90 * 24 * 3600;
/// Most external checks an environment may require.
pub const MAX_REQUIRED_CHECKS: usize = 16;
/// Largest rate, burst or concurrency limit that can be set.
pub const MAX_LIMIT: u32 = 1_000_000;

/// What each node admits of one environment's traffic. Limits are per
/// node: with k nodes serving the environment, the fleet admits up to k
/// times as much. A request over a limit is answered `429` with
/// `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second a node admits on average (a token bucket that
    /// refills at this rate); unset: no rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Requests the bucket holds for a burst; unset: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests a node answers at once (a slow route's requests count
    /// while they wait); unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

impl Limits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_second.is_none() && self.max_concurrent.is_none()
    }

    /// The bucket's size: the burst, else one second's worth.
    pub fn burst_size(&self) -> Option<u32> {
        self.requests_per_second
            .map(|rate| self.burst.unwrap_or(rate))
    }

    /// Checks every field; the error names it (`limits.<field>`).
    pub fn check(&self) -> Result<(), FieldError> {
        let fields = [
            ("requests_per_second", self.requests_per_second),
            ("burst", self.burst),
            ("max_concurrent", self.max_concurrent),
        ];
        for (name, value) in fields {
            if let Some(value) = value
                && !(1..=MAX_LIMIT).contains(&value)
            {
                return Err(FieldError::new(
                    format!("limits.{name}"),
                    format!("must be 1 to {MAX_LIMIT} (leave it unset for no limit), got {value}"),
                ));
            }
        }
        if self.burst.is_some() && self.requests_per_second.is_none() {
            return Err(FieldError::new(
                "limits.burst",
                "a burst needs requests_per_second",
            ));
        }
        Ok(())
    }
}

/// Who must approve a promotion into an environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// Distinct approvers needed; 0: none unless a rule asks for one.
    #[serde(default)]
    pub required: u32,
    /// Roles (in the environment) an approver must hold one of; empty: any
    /// role with `promotion.approve` there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// How long a promotion waits for its approvals before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after_secs: Option<u32>,
}

impl Approvals {
    pub fn expire_after_secs(&self) -> u32 {
        self.expire_after_secs
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SECS)
    }
}

/// What data an environment refuses in the responses promoted into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPolicy {
    /// E-mail addresses, card numbers, national IDs.
    #[serde(default)]
    pub forbid_pii: bool,
    /// Test cards, example.com addresses, placeholder text.
    #[serde(default)]
    pub forbid_test_data: bool,
}

/// How strictly requests and promoted content are checked against the
/// scenario's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    Off,
    Warn,
    Enforce,
}

impl ValidationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationMode::Off => "off",
            ValidationMode::Warn => "warn",
            ValidationMode::Enforce => "enforce",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "off" => Ok(Self::Off),
            "warn" => Ok(Self::Warn),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!(
                "validation mode must be off, warn or enforce, got {other:?}"
            )),
        }
    }
}

/// An environment's settings as someone set them: `None` inherits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reality: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::model::realism::Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_budget: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_policy: Option<DataPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_checks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

// f64 fields inside latency and chaos are checked finite.
impl Eq for EnvSettings {}

impl EnvSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The settings this one sets, in [`SettingKey::ALL`] order.
    pub fn set_keys(&self) -> Vec<SettingKey> {
        SettingKey::ALL
            .into_iter()
            .filter(|key| match key {
                SettingKey::Reality => self.reality.is_some(),
                SettingKey::Latency => self.latency.is_some(),
                SettingKey::Chaos => self.chaos.is_some(),
                SettingKey::DriftBudget => self.drift_budget.is_some(),
                SettingKey::Validation => self.validation.is_some(),
                SettingKey::ReasonRequired => self.reason_required.is_some(),
                SettingKey::Approvals => self.approvals.is_some(),
                SettingKey::DataPolicy => self.data_policy.is_some(),
                SettingKey::RequiredChecks => self.required_checks.is_some(),
                SettingKey::Limits => self.limits.is_some(),
            })
            .collect()
    }

    /// Checks every field; the error names it.
    pub fn check(&self) -> Result<(), FieldError> {
        if let Some(level) = self.reality
            && !(1..=5).contains(&level)
        {
            return Err(FieldError::new(
                "reality",
                format!("must be a level from 1 to 5, got {level}"),
            ));
        }
        if let Some(budget) = self.drift_budget
            && budget > MAX_DRIFT_BUDGET
        {
            return Err(FieldError::new(
                "drift_budget",
                format!("must be at most {MAX_DRIFT_BUDGET} (leave it unset for no limit)"),
            ));
        }
        if let Some(approvals) = &self.approvals {
            if approvals.required > MAX_REQUIRED_APPROVALS {
                return Err(FieldError::new(
                    "approvals.required",
                    format!(
                        "at most {MAX_REQUIRED_APPROVALS} approvals, got {}",
                        approvals.required
                    ),
                ));
            }
            if let Some(secs) = approvals.expire_after_secs
                && !(1..=MAX_APPROVAL_TIMEOUT_SECS).contains(&secs)
            {
                return Err(FieldError::new(
                    "approvals.expire_after_secs",
                    format!("must be 1 to {MAX_APPROVAL_TIMEOUT_SECS} seconds, got {secs}"),
                ));
            }
            if approvals.roles.len() > 16 {
                return Err(FieldError::new("approvals.roles", "at most 16 roles"));
            }
            for (i, role) in approvals.roles.iter().enumerate() {
                if Slug::parse(role).is_err() {
                    return Err(FieldError::new(
                        format!("approvals.roles[{i}]"),
                        format!("{role:?} is not a role name (lower-case letters, digits and -)"),
                    ));
                }
            }
        }
        if let Some(checks) = &self.required_checks {
            if checks.len() > MAX_REQUIRED_CHECKS {
                return Err(FieldError::new(
                    "required_checks",
                    format!("at most {MAX_REQUIRED_CHECKS} checks, got {}", checks.len()),
                ));
            }
            for (i, name) in checks.iter().enumerate() {
                check_name(name)
                    .map_err(|m| FieldError::new(format!("required_checks[{i}]"), m))?;
            }
        }
        if let Some(limits) = &self.limits {
            limits.check()?;
        }
        Realism {
            latency: self.latency,
            chaos: self.chaos.clone(),
        }
        .check()
    }

    /// The part of these settings an environment-config promotion moves:
    /// what shapes the answers (reality level, latency, chaos, validation).
    /// Governance (drift budget, reasons, approvals, data policy, required
    /// checks) stays with each environment and never travels.
    #[must_use]
    pub fn served_part(&self) -> EnvSettings {
        EnvSettings {
            reality: self.reality,
            latency: self.latency,
            chaos: self.chaos.clone(),
            validation: self.validation,
            ..EnvSettings::default()
        }
    }

    /// These settings with their served part replaced by `promoted`'s
    /// (fields `promoted` leaves unset become unset here too, so the
    /// environment inherits them as the source did); governance is kept.
    #[must_use]
    pub fn with_served_of(&self, promoted: &EnvSettings) -> EnvSettings {
        EnvSettings {
            reality: promoted.reality,
            latency: promoted.latency,
            chaos: promoted.chaos.clone(),
            validation: promoted.validation,
            ..self.clone()
        }
    }

    /// What changes in the served part from `self` to `next`, one line per
    /// field: `reality: 2 → 4`.
    pub fn served_changes(&self, next: &EnvSettings) -> Vec<String> {
        fn show<T: Serialize>(value: &Option<T>) -> String {
            match value {
                None => "inherited".to_owned(),
                Some(v) => serde_json::to_string(v).unwrap_or_default(),
            }
        }
        let mut out = Vec::new();
        let mut field = |name: &str, was: String, now: String| {
            if was != now {
                out.push(format!("{name}: {was} → {now}"));
            }
        };
        field("reality", show(&self.reality), show(&next.reality));
        field("latency", show(&self.latency), show(&next.latency));
        field("chaos", show(&self.chaos), show(&next.chaos));
        field("validation", show(&self.validation), show(&next.validation));
        out
    }

    /// These settings over `base`: each field set here wins, each field
    /// left unset here takes `base`'s.
    #[must_use]
    pub fn over(&self, base: &EnvSettings) -> EnvSettings {
        EnvSettings {
            reality: self.reality.or(base.reality),
            latency: self.latency.or(base.latency),
            chaos: self.chaos.clone().or_else(|| base.chaos.clone()),
            drift_budget: self.drift_budget.or(base.drift_budget),
            validation: self.validation.or(base.validation),
            reason_required: self.reason_required.or(base.reason_required),
            approvals: self.approvals.clone().or_else(|| base.approvals.clone()),
            data_policy: self.data_policy.or(base.data_policy),
            required_checks: self
                .required_checks
                .clone()
                .or_else(|| base.required_checks.clone()),
            limits: self.limits.or(base.limits),
        }
    }

    /// What these settings amount to once nothing is left to inherit.
    pub fn effective(&self) -> Effective {
        let reality = self.reality.unwrap_or(DEFAULT_REALITY).clamp(1, 5);
        let level = reality_level(reality);
        Effective {
            reality,
            realism: Realism {
                latency: self.latency.or(level.latency),
                chaos: self.chaos.clone().or(level.chaos),
            },
            drift_budget: self.drift_budget,
            validation: self.validation.unwrap_or(ValidationMode::Warn),
            reason_required: self.reason_required.unwrap_or(false),
            approvals: self.approvals.clone().unwrap_or_default(),
            data_policy: self.data_policy.unwrap_or_default(),
            required_checks: self.required_checks.clone().unwrap_or_default(),
            limits: self.limits.unwrap_or_default(),
        }
    }
}

/// One field of [`EnvSettings`], as update masks name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettingKey {
    Reality,
    Latency,
    Chaos,
    DriftBudget,
    Validation,
    ReasonRequired,
    Approvals,
    DataPolicy,
    RequiredChecks,
    Limits,
}

impl SettingKey {
    pub const ALL: [SettingKey; 10] = [
        SettingKey::Reality,
        SettingKey::Latency,
        SettingKey::Chaos,
        SettingKey::DriftBudget,
        SettingKey::Validation,
        SettingKey::ReasonRequired,
        SettingKey::Approvals,
        SettingKey::DataPolicy,
        SettingKey::RequiredChecks,
        SettingKey::Limits,
    ];

    /// The name in update masks (`settings.<name>`) and files.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingKey::Reality => "reality_level",
            SettingKey::Latency => "latency",
            SettingKey::Chaos => "chaos",
            SettingKey::DriftBudget => "drift_budget",
            SettingKey::Validation => "validation",
            SettingKey::ReasonRequired => "reason_required",
            SettingKey::Approvals => "approvals",
            SettingKey::DataPolicy => "data_policy",
            SettingKey::RequiredChecks => "required_checks",
            SettingKey::Limits => "limits",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// A change to settings: each named field takes its value from `values`;
/// a field named there but unset goes back to inheriting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsPatch {
    pub values: EnvSettings,
    pub keys: Vec<SettingKey>,
}

impl SettingsPatch {
    /// Every field: the settings become `values`.
    pub fn replace(values: EnvSettings) -> Self {
        Self {
            values,
            keys: SettingKey::ALL.to_vec(),
        }
    }

    #[must_use]
    pub fn apply(&self, current: &EnvSettings) -> EnvSettings {
        let mut next = current.clone();
        let from = &self.values;
        for key in &self.keys {
            match key {
                SettingKey::Reality => next.reality = from.reality,
                SettingKey::Latency => next.latency = from.latency,
                SettingKey::Chaos => next.chaos = from.chaos.clone(),
                SettingKey::DriftBudget => next.drift_budget = from.drift_budget,
                SettingKey::Validation => next.validation = from.validation,
                SettingKey::ReasonRequired => next.reason_required = from.reason_required,
                SettingKey::Approvals => next.approvals = from.approvals.clone(),
                SettingKey::DataPolicy => next.data_policy = from.data_policy,
                SettingKey::RequiredChecks => {
                    next.required_checks = from.required_checks.clone();
                }
                SettingKey::Limits => next.limits = from.limits,
            }
        }
        next
    }
}

/// An environment's settings with everything inherited filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub reality: u8,
    /// The latency and chaos every route of the environment gets unless
    /// the route sets its own.
    pub realism: Realism,
    /// `None`: no limit.
    pub drift_budget: Option<u32>,
    pub validation: ValidationMode,
    pub reason_required: bool,
    pub approvals: Approvals,
    pub data_policy: DataPolicy,
    /// External checks a promotion into the environment needs green.
    pub required_checks: Vec<String>,
    /// What each node admits of the environment's traffic.
    pub limits: Limits,
}

/// The latency and chaos a reality level stands for.
///
/// | level | latency                                   | chaos                               |
/// |-------|-------------------------------------------|-------------------------------------|
/// | 1     | none                                      | none                                |
/// | 2     | uniform 10–50 ms                          | none                                |
/// | 3     | normal, mean 80 ms, sd 25, 20–400         | 1%: 500, 503                        |
/// | 4     | lognormal, median 120 ms, σ 0.6, 20–2000  | 2%: 500, 502, 503, 504              |
/// | 5     | pareto, scale 60 ms, shape 1.8, ≤ 5000    | 5%: 429, 5xx, resets, truncations   |
pub fn reality_level(level: u8) -> Realism {
    match level {
        0 | 1 => Realism::default(),
        2 => Realism {
            latency: Some(crate::model::realism::Latency {
                uniform: Some(Uniform { min: 10, max: 50 }),
                ..Default::default()
            }),
            chaos: None,
        },
        3 => Realism {
            latency: Some(crate::model::realism::Latency {
                normal: Some(Normal {
                    mean: 80.0,
                    stddev: 25.0,
                }),
                min: Some(20),
                max: Some(400),
                ..Default::default()
            }),
            chaos: Some(Chaos {
                rate: 0.01,
                statuses: BTreeMap::from([(500, 1), (503, 1)]),
                ..Default::default()
            }),
        },
        4 => Realism {
            latency: Some(crate::model::realism::Latency {
                lognormal: Some(LogNormal {
                    median: 120.0,
                    sigma: 0.6,
                }),
                min: Some(20),
                max: Some(2000),
                ..Default::default()
            }),
            chaos: Some(Chaos {
                rate: 0.02,
                statuses: BTreeMap::from([(500, 2), (502, 1), (503, 2), (504, 1)]),
                ..Default::default()
            }),
        },
        _ => Realism {
            latency: Some(crate::model::realism::Latency {
                pareto: Some(Pareto {
                    scale: 60.0,
                    shape: 1.8,
                }),
                max: Some(5000),
                ..Default::default()
            }),
            chaos: Some(Chaos {
                rate: 0.05,
                statuses: BTreeMap::from([(429, 2), (500, 3), (502, 1), (503, 3), (504, 1)]),
                faults: BTreeMap::from([(Fault::Reset, 1), (Fault::Truncated, 1)]),
                seed: None,
            }),
        },
    }
}

/// The environments a new workspace gets, in chain order, with their
/// settings: dev is instant and lenient, prod realistic, guarded and
/// closed to breaking changes.
pub fn default_environments() -> Vec<(Slug, EnvSettings)> {
    let name = |raw: &str| Slug::parse(raw).expect("built-in environment names are valid slugs");
    vec![
        (
            name("dev"),
            EnvSettings {
                reality: Some(1),
                ..Default::default()
            },
        ),
        (
            name("test"),
            EnvSettings {
                reality: Some(3),
                drift_budget: Some(5),
                ..Default::default()
            },
        ),
        (
            name("prod"),
            EnvSettings {
                reality: Some(4),
                drift_budget: Some(0),
                validation: Some(ValidationMode::Enforce),
                reason_required: Some(true),
                approvals: Some(Approvals {
                    required: 1,
                    ..Default::default()
                }),
                data_policy: Some(DataPolicy {
                    forbid_pii: true,
                    forbid_test_data: false,
                }),
                ..Default::default()
            },
        ),
    ]
}

/// Parses an environment name: the rules of a slug.
pub fn parse_env_name(raw: &str) -> Result<Slug, FieldError> {
    Slug::parse(raw).map_err(|e| FieldError::new("name", format!("environment name {raw:?}: {e}")))
}

/// A workspace's promotion chain: the environments changes move through,
/// in order. Environments off the chain (a sandbox, say) are never a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    steps: Vec<String>,
    allow_skips: bool,
}

impl Chain {
    pub fn new(steps: Vec<String>, allow_skips: bool) -> Self {
        Self { steps, allow_skips }
    }

    /// The environment working copies are live in.
    pub fn first(&self) -> Option<&str> {
        self.steps.first().map(String::as_str)
    }

    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// `dev → test → prod`.
    pub fn describe(&self) -> String {
        self.steps.join(" → ")
    }

    /// Whether a change may move from `from` straight to `to`: the next
    /// step only, or any later step when the workspace allows skips.
    pub fn allows(&self, from: &str, to: &str) -> Result<(), String> {
        let position = |name: &str| self.steps.iter().position(|s| s == name);
        let Some(i) = position(from) else {
            return Err(format!(
                "{from} is not on the promotion chain ({})",
                self.describe()
            ));
        };
        let Some(j) = position(to) else {
            return Err(format!(
                "{to} is not on the promotion chain ({})",
                self.describe()
            ));
        };
        if j == i + 1 || (j > i && self.allows_skips()) {
            return Ok(());
        }
        if j <= i {
            return Err(format!(
                "promotions go forward along {}: {to} comes before {from}",
                self.describe()
            ));
        }
        Err(format!(
            "{from} → {to} skips {}; the workspace allows only the next step ({from} → {})",
            self.steps[i + 1..j].join(", "),
            self.steps[i + 1]
        ))
    }

    pub fn allows_skips(&self) -> bool {
        self.allow_skips
    }

    /// How a change reaches `target`: through the first environment, then
    /// promotions. For the message that refuses a direct edit.
    pub fn path_to(&self, target: &str) -> String {
        match self.steps.iter().position(|s| s == target) {
            Some(j) => self.steps[..=j].join(" → "),
            None => format!(
                "{target} is off the promotion chain; it serves only versions deployed to it"
            ),
        }
    }
}

/// An external check's name: what a CI job reports under.
pub fn check_name(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > 63 {
        return Err(format!(
            "a check name is 1 to 63 characters, got {} characters",
            raw.len()
        ));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
    {
        return Err(format!(
            "{raw:?}: a check name is letters, digits and - _ . / :"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::realism::{Outcome, Rng};

    #[test]
    fn overrides_merge_field_by_field() {
        let workspace = EnvSettings {
            reality: Some(2),
            chaos: Some(Chaos {
                rate: 0.5,
                ..Default::default()
            }),
            validation: Some(ValidationMode::Off),
            ..Default::default()
        };
        let env = EnvSettings {
            reality: Some(4),
            reason_required: Some(true),
            ..Default::default()
        };
        let merged = env.over(&workspace);
        assert_eq!(merged.reality, Some(4), "the environment's own field wins");
        assert_eq!(merged.validation, Some(ValidationMode::Off), "inherited");
        assert_eq!(merged.chaos.as_ref().map(|c| c.rate), Some(0.5));
        let effective = merged.effective();
        assert_eq!(effective.reality, 4);
        // An explicit chaos profile replaces the level's; the level still
        // gives the latency.
        assert_eq!(effective.realism.chaos.unwrap().rate, 0.5);
        assert_eq!(effective.realism.latency, reality_level(4).latency);
        assert!(effective.reason_required);
        assert_eq!(effective.drift_budget, None);

        let nothing = EnvSettings::default().effective();
        assert_eq!(nothing.reality, DEFAULT_REALITY);
        assert!(nothing.realism.is_empty());
        assert_eq!(nothing.validation, ValidationMode::Warn);
        // An empty override changes nothing.
        assert_eq!(EnvSettings::default().over(&workspace), workspace);
    }

    #[test]
    fn a_patch_sets_or_clears_only_the_fields_it_names() {
        let current = EnvSettings {
            reality: Some(3),
            drift_budget: Some(2),
            ..Default::default()
        };
        let patch = SettingsPatch {
            values: EnvSettings {
                reality: Some(5),
                reason_required: Some(true),
                ..Default::default()
            },
            keys: vec![SettingKey::Reality, SettingKey::DriftBudget],
        };
        let next = patch.apply(&current);
        assert_eq!(next.reality, Some(5));
        assert_eq!(next.drift_budget, None, "named and unset: inherits again");
        assert_eq!(next.reason_required, None, "not named: unchanged");
        for key in SettingKey::ALL {
            assert_eq!(SettingKey::parse(key.as_str()), Some(key));
        }
    }

    #[test]
    fn settings_errors_name_the_field() {
        let bad = |s: EnvSettings| s.check().unwrap_err().field;
        assert_eq!(
            bad(EnvSettings {
                reality: Some(6),
                ..Default::default()
            }),
            "reality"
        );
        assert_eq!(
            bad(EnvSettings {
                drift_budget: Some(MAX_DRIFT_BUDGET + 1),
                ..Default::default()
            }),
            "drift_budget"
        );
        assert_eq!(
            bad(EnvSettings {
                chaos: Some(Chaos {
                    rate: 2.0,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "chaos"
        );
        let parsed: Result<EnvSettings, _> = serde_json::from_str(r#"{"realty": 3}"#);
        assert!(parsed.unwrap_err().to_string().contains("realty"));
        for (_, settings) in default_environments() {
            settings.check().unwrap();
        }
    }

    #[test]
    fn every_level_is_valid_and_more_real_than_the_last() {
        let mut last_rate = -1.0;
        for level in 1..=5 {
            let realism = reality_level(level);
            realism.check().unwrap();
            let rate = realism.chaos.as_ref().map_or(0.0, |c| c.rate);
            assert!(rate >= last_rate, "level {level}");
            last_rate = rate;
        }
    }

    /// Mean delay and error share over many seeded samples, within bounds
    /// that a correct sampler misses with negligible probability.
    #[test]
    fn levels_produce_their_distributions() {
        const N: u64 = 40_000;
        let sample = |level: u8| {
            let realism = reality_level(level);
            let (mut total_ms, mut errors, mut faults, mut max_ms) = (0.0, 0u64, 0u64, 0.0f64);
            for i in 0..N {
                let mut rng = Rng::at(7, i);
                match realism.chaos.as_ref().map(|c| c.decide(&mut rng)) {
                    Some(Outcome::Status(_)) => errors += 1,
                    Some(Outcome::Fault(_)) => faults += 1,
                    _ => {}
                }
                let ms = realism
                    .latency
                    .as_ref()
                    .map_or(0.0, |l| l.sample(&mut rng).as_secs_f64() * 1000.0);
                total_ms += ms;
                max_ms = max_ms.max(ms);
            }
            let n = N as f64;
            (total_ms / n, errors as f64 / n, faults as f64 / n, max_ms)
        };
        let (mean, errors, faults, _) = sample(1);
        assert_eq!((mean, errors, faults), (0.0, 0.0, 0.0));

        let (mean, errors, _, max) = sample(2);
        assert!((28.0..32.0).contains(&mean), "uniform 10-50: mean {mean}");
        assert!(max <= 50.0 && errors == 0.0);

        let (mean, errors, _, max) = sample(3);
        assert!((77.0..83.0).contains(&mean), "normal 80: mean {mean}");
        assert!((0.008..0.012).contains(&errors), "1% errors: {errors}");
        assert!(max <= 400.0);

        // lognormal median 120, sigma 0.6: mean 120·e^(0.18) ≈ 143.7
        let (mean, errors, _, max) = sample(4);
        assert!((137.0..151.0).contains(&mean), "lognormal: mean {mean}");
        assert!((0.017..0.023).contains(&errors), "2% errors: {errors}");
        assert!(max <= 2000.0);

        // pareto scale 60, shape 1.8: mean 60·1.8/0.8 = 135 before the cap
        let (mean, errors, faults, max) = sample(5);
        assert!((115.0..145.0).contains(&mean), "pareto: mean {mean}");
        let broken = errors + faults;
        assert!((0.045..0.055).contains(&broken), "5% chaos: {broken}");
        assert!(faults > 0.0 && faults < errors);
        assert!(max <= 5000.0);
    }

    #[test]
    fn the_chain_allows_the_next_step_or_declared_skips() {
        let names = || vec!["dev".to_owned(), "test".into(), "prod".into()];
        let strict = Chain::new(names(), false);
        assert!(strict.allows("dev", "test").is_ok());
        assert!(strict.allows("test", "prod").is_ok());
        let skip = strict.allows("dev", "prod").unwrap_err();
        assert!(skip.contains("skips test"), "{skip}");
        let back = strict.allows("prod", "dev").unwrap_err();
        assert!(back.contains("forward"), "{back}");
        assert!(
            strict
                .allows("dev", "sandbox")
                .unwrap_err()
                .contains("not on")
        );
        assert!(strict.allows("dev", "dev").is_err());
        let lenient = Chain::new(names(), true);
        assert!(lenient.allows("dev", "prod").is_ok());
        assert!(lenient.allows("test", "dev").is_err());
        assert_eq!(strict.first(), Some("dev"));
        assert_eq!(strict.path_to("prod"), "dev → test → prod");
        assert!(
            strict
                .path_to("sandbox")
                .contains("off the promotion chain")
        );
    }

    #[test]
    fn limits_are_checked_inherited_whole_and_kept_out_of_promotions() {
        let limits = |rate, burst, max| Limits {
            requests_per_second: rate,
            burst,
            max_concurrent: max,
        };
        assert!(limits(Some(100), Some(200), Some(50)).check().is_ok());
        assert_eq!(limits(Some(100), None, None).burst_size(), Some(100));
        for (bad, field, needle) in [
            (
                limits(Some(0), None, None),
                "limits.requests_per_second",
                "1 to",
            ),
            (limits(None, None, Some(0)), "limits.max_concurrent", "1 to"),
            (
                limits(Some(1), Some(MAX_LIMIT + 1), None),
                "limits.burst",
                "1 to 1000000",
            ),
            (
                limits(None, Some(5), None),
                "limits.burst",
                "needs requests_per_second",
            ),
        ] {
            let error = EnvSettings {
                limits: Some(bad),
                ..Default::default()
            }
            .check()
            .unwrap_err();
            assert_eq!(error.field, field, "{bad:?}");
            assert!(error.message.contains(needle), "{}", error.message);
        }
        // The environment's limits replace the workspace's whole.
        let workspace = EnvSettings {
            limits: Some(limits(Some(10), None, Some(5))),
            ..Default::default()
        };
        let env = EnvSettings {
            limits: Some(limits(None, None, Some(2))),
            ..Default::default()
        };
        assert_eq!(
            env.over(&workspace).effective().limits,
            limits(None, None, Some(2))
        );
        assert_eq!(
            EnvSettings::default().over(&workspace).effective().limits,
            limits(Some(10), None, Some(5))
        );
        assert!(EnvSettings::default().effective().limits.is_unlimited());
        // Capacity stays with each environment: a promotion does not move it.
        assert_eq!(env.served_part().limits, None);
        assert_eq!(
            workspace.with_served_of(&env).limits,
            workspace.limits,
            "the target keeps its own"
        );
        // Named in masks and files as `limits`.
        assert_eq!(SettingKey::parse("limits"), Some(SettingKey::Limits));
        let parsed: EnvSettings =
            serde_json::from_str(r#"{"limits":{"requests_per_second":5,"max_concurrent":2}}"#)
                .unwrap();
        assert_eq!(parsed.limits, Some(limits(Some(5), None, Some(2))));
        assert!(serde_json::from_str::<EnvSettings>(r#"{"limits":{"rps":5}}"#).is_err());
    }
}
