//! Promotions: how a version moves from one environment of the chain to a
//! later one. This module holds what needs no I/O: the statuses and which
//! transitions between them are allowed, the pillar-tag approval rules, and
//! the approval requirement a promotion gets from its target environment,
//! its tags and its drift.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::governance::contract;
use crate::governance::datapolicy;
use crate::governance::drift::{self, Diff};
use crate::model::checks::ContractCheck;
use crate::model::config::{ConfigRoute, EnvironmentConfig};
use crate::model::environment::{Approvals, Effective, EnvSettings};
use crate::model::error::FieldError;
use crate::model::persona::{MAX_PERSONA_BYTES, PersonaConfig};
use crate::model::scenario::{Pillar, Tag, pillars};
use crate::model::slug::Slug;

/// Longest comment on a promotion or a decision.
pub const MAX_COMMENT_LEN: usize = 2000;
/// Most metadata entries on one promotion.
pub const MAX_METADATA: usize = 32;

/// Where a promotion is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Waiting for approvals (or for nothing: see `Approved`).
    Pending,
    /// Every approval it needs is given; it can be executed.
    Approved,
    /// The target serves the promoted version.
    Completed,
    /// An approver said no.
    Rejected,
    /// A gate failed or the execution could not be carried out.
    Failed,
    /// Nobody approved it in time.
    Expired,
    /// Completed, then rolled back: the target serves what it served before.
    RolledBack,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Approved,
        Status::Completed,
        Status::Rejected,
        Status::Failed,
        Status::Expired,
        Status::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::RolledBack => "rolled_back",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    "status",
                    format!(
                        "`{raw}` is not a promotion status; one of: {}",
                        Self::ALL.map(Status::as_str).join(", ")
                    ),
                )
            })
    }

    /// No transition leaves it.
    pub fn is_final(self) -> bool {
        Status::ALL.iter().all(|next| !self.can_become(*next))
    }

    /// The transitions a promotion may make:
    /// `pending → approved → completed → rolled_back`, and from pending
    /// to rejected, failed or expired, and from approved to failed.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Pending, Approved | Rejected | Failed | Expired)
                | (Approved, Completed | Failed)
                | (Completed, RolledBack)
        )
    }

    /// Why `self → next` is refused, in words for the caller.
    pub fn refuse(self, next: Status) -> String {
        let allowed: Vec<&str> = Status::ALL
            .into_iter()
            .filter(|s| self.can_become(*s))
            .map(Status::as_str)
            .collect();
        if allowed.is_empty() {
            format!(
                "the promotion is {} and cannot become {}: {} is final",
                self, next, self
            )
        } else {
            format!(
                "the promotion is {} and cannot become {}; from {} it can only become {}",
                self,
                next,
                self,
                allowed.join(" or ")
            )
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a promotion moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// One version of one scenario.
    Scenario,
    /// One version of one persona.
    Persona,
    /// An environment's served settings (reality level, latency, chaos,
    /// validation; never its governance: see
    /// [`crate::model::environment::EnvSettings::served_part`]).
    Environment,
}

impl EntityKind {
    pub const ALL: [EntityKind; 3] = [
        EntityKind::Scenario,
        EntityKind::Persona,
        EntityKind::Environment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Scenario => "scenario",
            EntityKind::Persona => "persona",
            EntityKind::Environment => "environment",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "scenario" | "" => Ok(EntityKind::Scenario),
            "persona" => Ok(EntityKind::Persona),
            "environment" => Ok(EntityKind::Environment),
            other => Err(FieldError::new(
                "entity_kind",
                format!(
                    "`{other}` cannot be promoted; promotions move a scenario, a persona or an environment's settings"
                ),
            )),
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::model::environment::check_name;

/// Checks a free-text comment.
pub fn parse_comment(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.chars().count() > MAX_COMMENT_LEN {
        return Err(FieldError::new(
            field,
            format!("at most {MAX_COMMENT_LEN} characters"),
        ));
    }
    Ok(raw.trim().to_owned())
}

/// Which scenarios need an approval because of their pillar tags, whatever
/// their target environment says.
///
/// File form:
///
/// ```yaml
/// patterns: ["[Cloud][Contracts][Reality]"]   # all of these pillars together
/// pillars: [Contracts]                        # any tag with this pillar
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PillarRules {
    /// A scenario whose tags name every pillar of one of these needs an
    /// approval.
    #[serde(default, with = "pillar_sets")]
    pub patterns: Vec<BTreeSet<Pillar>>,
    /// A scenario whose tags name any of these needs an approval.
    #[serde(default, with = "pillar_list")]
    pub pillars: BTreeSet<Pillar>,
}

impl Default for PillarRules {
    /// The built-in rule: `[Cloud][Contracts][Reality]` is high impact.
    fn default() -> Self {
        Self {
            patterns: vec![BTreeSet::from([
                Pillar::Cloud,
                Pillar::Contracts,
                Pillar::Reality,
            ])],
            pillars: BTreeSet::new(),
        }
    }
}

impl PillarRules {
    /// Most patterns one rule set may have.
    pub const MAX_PATTERNS: usize = 32;

    pub fn check(&self) -> Result<(), FieldError> {
        if self.patterns.len() > Self::MAX_PATTERNS {
            return Err(FieldError::new(
                "patterns",
                format!("at most {} patterns", Self::MAX_PATTERNS),
            ));
        }
        for (i, pattern) in self.patterns.iter().enumerate() {
            if pattern.is_empty() {
                return Err(FieldError::new(
                    format!("patterns[{i}]"),
                    "a pattern names at least one pillar, e.g. \"[Cloud][Contracts]\"",
                ));
            }
        }
        Ok(())
    }

    /// Why these rules want an approval for a scenario with `tags`; empty
    /// when they do not.
    pub fn reasons(&self, tags: &[Tag]) -> Vec<String> {
        let have = pillars(tags);
        let mut reasons = Vec::new();
        for pattern in &self.patterns {
            if pattern.is_subset(&have) {
                reasons.push(format!(
                    "the scenario's tags combine {}, a high-impact combination",
                    show(pattern)
                ));
            }
        }
        let hit: BTreeSet<Pillar> = self.pillars.intersection(&have).copied().collect();
        if !hit.is_empty() {
            reasons.push(format!(
                "the scenario is tagged {}, which always needs an approval",
                show(&hit)
            ));
        }
        reasons
    }
}

/// `[Cloud][Contracts]`.
pub fn show(pillars: &BTreeSet<Pillar>) -> String {
    pillars.iter().map(|p| format!("[{p}]")).collect()
}

mod pillar_sets {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        sets: &[BTreeSet<Pillar>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(sets.iter().map(show))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<BTreeSet<Pillar>>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter()
            .map(|text| match Tag::parse(text) {
                Ok(Tag::Pillars(list)) => Ok(list.into_iter().collect()),
                Ok(Tag::Plain(word)) => Err(serde::de::Error::custom(format!(
                    "{word:?} is not a pillar pattern; write pillars in brackets, e.g. \"[Cloud][Contracts]\""
                ))),
                Err(e) => Err(serde::de::Error::custom(e)),
            })
            .collect()
    }
}

mod pillar_list {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        set: &BTreeSet<Pillar>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.iter().map(|p| p.as_str()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeSet<Pillar>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter()
            .map(|text| {
                let name = text.trim().trim_start_matches('[').trim_end_matches(']');
                Pillar::parse(name).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown pillar {text:?}; the pillars are {}",
                        Pillar::ALL.map(Pillar::as_str).join(", ")
                    ))
                })
            })
            .collect()
    }
}

/// Who must approve one promotion, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requirement {
    /// Distinct approvers needed; 0: none.
    pub approvals: u32,
    /// Roles an approver must hold one of in the target; empty: any role
    /// with `promotion.approve` there.
    pub roles: Vec<String>,
    /// Why approval is needed, one line per source.
    pub reasons: Vec<String>,
}

/// What a promotion needs: the target's own approvals, raised to one when
/// pillar rules or drift ask for an approval.
pub fn requirement(
    target: &str,
    approvals: &Approvals,
    rules: &PillarRules,
    tags: &[Tag],
    breaking: usize,
) -> Requirement {
    let mut reasons = Vec::new();
    if approvals.required > 0 {
        reasons.push(format!(
            "{target} requires {} approval{}{}",
            approvals.required,
            if approvals.required == 1 { "" } else { "s" },
            if approvals.roles.is_empty() {
                String::new()
            } else {
                format!(" by {}", approvals.roles.join(" or "))
            }
        ));
    }
    reasons.extend(rules.reasons(tags));
    if breaking > 0 {
        reasons.push(format!(
            "the promotion carries {breaking} breaking change{} into {target}",
            if breaking == 1 { "" } else { "s" }
        ));
    }
    let needed = if reasons.is_empty() {
        0
    } else {
        approvals.required.max(1)
    };
    Requirement {
        approvals: needed,
        roles: approvals.roles.clone(),
        reasons,
    }
}

/// A gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Passed,
    Failed,
    /// Waiting for something outside (an external check's report).
    Pending,
    /// Nothing to check (no contract checks, no data policy).
    Skipped,
}

impl GateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Passed => "passed",
            GateStatus::Failed => "failed",
            GateStatus::Pending => "pending",
            GateStatus::Skipped => "skipped",
        }
    }
}

/// One gate's result, as recorded on the promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// `compile`, `drift`, `data_policy`, `contracts`, `external_checks`.
    pub name: String,
    pub status: GateStatus,
    pub detail: String,
}

/// An external check's state as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Pending,
    Passed,
    Failed,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Passed => "passed",
            CheckState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "pending" => Ok(Self::Pending),
            "passed" => Ok(Self::Passed),
            "failed" => Ok(Self::Failed),
            other => Err(FieldError::new(
                "status",
                format!("`{other}` is not a check status; one of: pending, passed, failed"),
            )),
        }
    }
}

/// What is promoted, and what the target serves of it now.
pub enum Subject<'a> {
    Scenario {
        /// The workspace's slug, as a node names it in its answers.
        workspace: &'a str,
        /// The version promoted.
        promoted: &'a [ConfigRoute],
        /// What the target serves of the scenario now (empty: nothing).
        served: &'a [ConfigRoute],
        /// What the target serves of its other scenarios.
        others: &'a [ConfigRoute],
        checks: &'a [ContractCheck],
        /// The personas the target serves: templates the checks reach
        /// read them as they would on a node.
        personas: &'a [PersonaConfig],
    },
    Persona {
        name: &'a str,
        /// The version's document.
        promoted: &'a Value,
        /// What the target serves of the persona now.
        served: Option<&'a Value>,
    },
    /// An environment's served settings (see
    /// [`EnvSettings::served_part`]).
    Environment {
        /// The source's own served settings, as frozen at the request.
        promoted: &'a EnvSettings,
        /// The target's own settings now, and the workspace defaults they
        /// inherit from.
        served: &'a EnvSettings,
        defaults: &'a EnvSettings,
    },
}

/// Everything the gates read, gathered in the transaction that acts.
pub struct Inputs<'a> {
    pub target: &'a str,
    pub settings: &'a Effective,
    pub rules: &'a PillarRules,
    pub tags: &'a [Tag],
    pub subject: Subject<'a>,
    /// External checks reported so far.
    pub reported: &'a [(String, CheckState)],
}

/// What the gates found and who must approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub diff: Diff,
    pub gates: Vec<Gate>,
    pub requirement: Requirement,
}

impl Evaluation {
    /// The first gate that failed for good (external checks can still turn
    /// green, so they are not among these).
    pub fn blocked(&self) -> Option<&Gate> {
        self.gates
            .iter()
            .find(|g| g.status == GateStatus::Failed && g.name != EXTERNAL_GATE)
    }

    /// The external checks gate when it is not yet green.
    pub fn waiting(&self) -> Option<&Gate> {
        self.gates.iter().find(|g| {
            g.name == EXTERNAL_GATE && matches!(g.status, GateStatus::Pending | GateStatus::Failed)
        })
    }
}

pub const EXTERNAL_GATE: &str = "external_checks";
/// Most items a gate's detail lists.
const LISTED: usize = 5;

fn listed(items: impl IntoIterator<Item = String>, total: usize) -> String {
    let mut shown: Vec<String> = items.into_iter().take(LISTED).collect();
    if total > shown.len() {
        shown.push(format!("and {} more", total - shown.len()));
    }
    shown.join("; ")
}

/// The drift gate: the breaking changes against the target's budget.
fn drift_gate(input: &Inputs<'_>, diff: &Diff) -> Gate {
    let count = diff.breaking_count;
    let changes = || {
        listed(
            diff.breaking
                .iter()
                .map(|b| format!("{}: {}", b.route, b.detail)),
            count,
        )
    };
    match input.settings.drift_budget {
        Some(budget) if count > budget as usize => Gate {
            name: "drift".into(),
            status: GateStatus::Failed,
            detail: format!(
                "{count} breaking change{} exceed{} the drift budget of {} ({budget}): {}",
                if count == 1 { "" } else { "s" },
                if count == 1 { "s" } else { "" },
                input.target,
                changes()
            ),
        },
        budget => Gate {
            name: "drift".into(),
            status: GateStatus::Passed,
            detail: match (count, budget) {
                (0, _) => "no breaking changes".into(),
                (n, Some(b)) => format!(
                    "{n} breaking change(s) within the budget of {b}: {}",
                    changes()
                ),
                (n, None) => format!(
                    "{n} breaking change(s); {} sets no budget: {}",
                    input.target,
                    changes()
                ),
            },
        },
    }
}

/// The data-policy gate: `scan` finds what the target's policy forbids.
fn policy_gate(
    input: &Inputs<'_>,
    scan: impl FnOnce(crate::model::environment::DataPolicy) -> Vec<datapolicy::Violation>,
) -> Gate {
    let policy = input.settings.data_policy;
    if !policy.forbid_pii && !policy.forbid_test_data {
        Gate {
            name: "data_policy".into(),
            status: GateStatus::Skipped,
            detail: format!("{} allows any data", input.target),
        }
    } else {
        let found = scan(policy);
        if found.is_empty() {
            Gate {
                name: "data_policy".into(),
                status: GateStatus::Passed,
                detail: format!(
                    "no {} found",
                    match (policy.forbid_pii, policy.forbid_test_data) {
                        (true, true) => "PII or test data",
                        (true, false) => "PII",
                        _ => "test data",
                    }
                ),
            }
        } else {
            Gate {
                name: "data_policy".into(),
                status: GateStatus::Failed,
                detail: format!(
                    "{} forbids it: {}",
                    input.target,
                    listed(
                        found.iter().map(datapolicy::Violation::message),
                        found.len()
                    )
                ),
            }
        }
    }
}

/// What the scenario gates read (the fields of [`Subject::Scenario`]).
struct ScenarioSubject<'a> {
    promoted: &'a [ConfigRoute],
    served: &'a [ConfigRoute],
    others: &'a [ConfigRoute],
    checks: &'a [ContractCheck],
    personas: &'a [PersonaConfig],
}

/// The gates of a scenario version: compile, drift, data policy, contracts.
fn scenario_gates(
    input: &Inputs<'_>,
    workspace: &str,
    ScenarioSubject {
        promoted: promoted_routes,
        served,
        others,
        checks,
        personas,
    }: ScenarioSubject<'_>,
) -> (Diff, Vec<Gate>) {
    let mut gates = Vec::new();
    let specs = |routes: &[ConfigRoute]| routes.iter().map(|r| r.spec.clone()).collect::<Vec<_>>();
    let promoted = specs(promoted_routes);
    // Compiles and validates next to what the target serves of the rest.
    let contracts = contract::serve(workspace, input.target, promoted_routes, personas);
    let mut all: Vec<ConfigRoute> = promoted_routes.to_vec();
    all.extend(others.iter().cloned());
    let compiled = EnvironmentConfig::plain(
        Slug::parse(input.target).unwrap_or_else(|_| Slug::parse("target").expect("valid")),
        all,
    )
    .validate()
    .map_err(|e| e.to_string())
    .and_then(|()| contracts.as_ref().map(|_| ()).map_err(Clone::clone));
    gates.push(match compiled {
        Ok(()) => Gate {
            name: "compile".into(),
            status: GateStatus::Passed,
            detail: format!(
                "{} route{} compile next to the {} other route{} {} serves",
                promoted.len(),
                if promoted.len() == 1 { "" } else { "s" },
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                input.target
            ),
        },
        Err(e) => Gate {
            name: "compile".into(),
            status: GateStatus::Failed,
            detail: format!("the version cannot be served by {}: {e}", input.target),
        },
    });

    let diff = drift::diff(&specs(served), &promoted);
    gates.push(drift_gate(input, &diff));

    gates.push(policy_gate(input, |policy| {
        datapolicy::scan(&promoted, policy)
    }));

    let outcomes = contract::run(checks, &contracts);
    let failed: Vec<&contract::CheckOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
    gates.push(if outcomes.is_empty() {
        Gate {
            name: "contracts".into(),
            status: GateStatus::Skipped,
            detail: "the scenario has no contract checks".into(),
        }
    } else if failed.is_empty() {
        Gate {
            name: "contracts".into(),
            status: GateStatus::Passed,
            detail: format!("{} contract check(s) passed", outcomes.len()),
        }
    } else {
        Gate {
            name: "contracts".into(),
            status: GateStatus::Failed,
            detail: format!(
                "{} of {} contract check(s) failed: {}",
                failed.len(),
                outcomes.len(),
                listed(
                    failed.iter().map(|o| format!("{}: {}", o.name, o.detail)),
                    failed.len()
                )
            ),
        }
    });

    (diff, gates)
}

/// The gates of a persona version: the document is one a node serves,
/// removed or retyped fields against the drift budget (templates read
/// them), the data policy over its values. Personas have no contract
/// checks of their own.
fn persona_gates(
    input: &Inputs<'_>,
    name: &str,
    promoted: &Value,
    served: Option<&Value>,
) -> (Diff, Vec<Gate>) {
    let subject = format!("persona {name}");
    let mut gates = Vec::new();
    let size = promoted.to_string().len();
    let valid = match Slug::parse(name) {
        Err(e) => Err(format!("name {name:?}: {e}")),
        Ok(_) if !promoted.is_object() => Err("its document is not a JSON object".to_owned()),
        Ok(_) if size > MAX_PERSONA_BYTES => Err(format!(
            "its document is {size} bytes; at most {MAX_PERSONA_BYTES}"
        )),
        Ok(_) => Ok(()),
    };
    gates.push(match valid {
        Ok(()) => Gate {
            name: "compile".into(),
            status: GateStatus::Passed,
            detail: format!("{subject} is a JSON object of {size} bytes"),
        },
        Err(e) => Gate {
            name: "compile".into(),
            status: GateStatus::Failed,
            detail: format!("{subject} cannot be served by {}: {e}", input.target),
        },
    });
    let diff = drift::document_diff(&subject, served, promoted);
    gates.push(drift_gate(input, &diff));
    gates.push(policy_gate(input, |policy| {
        datapolicy::scan_document(&subject, promoted, policy)
    }));
    gates.push(Gate {
        name: "contracts".into(),
        status: GateStatus::Skipped,
        detail: "personas have no contract checks".into(),
    });
    (diff, gates)
}

/// The gates of an environment's settings: the target's settings with the
/// promoted served part must be valid. Settings change no response body,
/// so drift and the data policy have nothing to judge.
fn environment_gates(
    input: &Inputs<'_>,
    promoted: &EnvSettings,
    served: &EnvSettings,
    defaults: &EnvSettings,
) -> (Diff, Vec<Gate>) {
    let next = served.with_served_of(promoted);
    let changes = served.served_part().served_changes(&next.served_part());
    let diff = Diff {
        changed: changes.iter().map(|c| format!("settings.{c}")).collect(),
        ..Diff::default()
    };
    let mut gates = vec![match next.check() {
        Ok(()) => Gate {
            name: "compile".into(),
            status: GateStatus::Passed,
            detail: format!(
                "{} would serve reality level {} with these settings",
                input.target,
                next.over(defaults).effective().reality
            ),
        },
        Err(e) => Gate {
            name: "compile".into(),
            status: GateStatus::Failed,
            detail: format!("the settings are not valid for {}: {e}", input.target),
        },
    }];
    for (name, detail) in [
        ("drift", "settings change no response shapes"),
        ("data_policy", "settings carry no response data"),
        ("contracts", "settings have no contract checks"),
    ] {
        gates.push(Gate {
            name: name.into(),
            status: GateStatus::Skipped,
            detail: detail.into(),
        });
    }
    (diff, gates)
}

/// Runs every gate and works out the approvals.
pub fn evaluate(input: &Inputs<'_>) -> Evaluation {
    let (diff, mut gates) = match input.subject {
        Subject::Scenario {
            workspace,
            promoted,
            served,
            others,
            checks,
            personas,
        } => scenario_gates(
            input,
            workspace,
            ScenarioSubject {
                promoted,
                served,
                others,
                checks,
                personas,
            },
        ),
        Subject::Persona {
            name,
            promoted,
            served,
        } => persona_gates(input, name, promoted, served),
        Subject::Environment {
            promoted,
            served,
            defaults,
        } => environment_gates(input, promoted, served, defaults),
    };
    let count = diff.breaking_count;
    let required = &input.settings.required_checks;
    gates.push(if required.is_empty() {
        Gate {
            name: EXTERNAL_GATE.into(),
            status: GateStatus::Skipped,
            detail: format!("{} requires no external checks", input.target),
        }
    } else {
        let state = |name: &str| {
            input
                .reported
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| *s)
        };
        let failed: Vec<&str> = required
            .iter()
            .filter(|n| state(n) == Some(CheckState::Failed))
            .map(String::as_str)
            .collect();
        let waiting: Vec<&str> = required
            .iter()
            .filter(|n| matches!(state(n), None | Some(CheckState::Pending)))
            .map(String::as_str)
            .collect();
        if !failed.is_empty() {
            Gate {
                name: EXTERNAL_GATE.into(),
                status: GateStatus::Failed,
                detail: format!("failed: {}", failed.join(", ")),
            }
        } else if !waiting.is_empty() {
            Gate {
                name: EXTERNAL_GATE.into(),
                status: GateStatus::Pending,
                detail: format!("waiting for {}", waiting.join(", ")),
            }
        } else {
            Gate {
                name: EXTERNAL_GATE.into(),
                status: GateStatus::Passed,
                detail: format!("passed: {}", required.join(", ")),
            }
        }
    });

    let requirement = requirement(
        input.target,
        &input.settings.approvals,
        input.rules,
        input.tags,
        count,
    );
    Evaluation {
        diff,
        gates,
        requirement,
    }
}

#[cfg(test)]
mod tests;
