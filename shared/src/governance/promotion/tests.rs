use super::*;
use crate::model::scenario::parse_tags;

#[test]
fn only_the_documented_transitions_are_allowed() {
    use Status::*;
    let allowed: BTreeSet<(Status, Status)> = Status::ALL
        .into_iter()
        .flat_map(|a| Status::ALL.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.can_become(*b))
        .collect();
    let expected = BTreeSet::from([
        (Pending, Approved),
        (Pending, Rejected),
        (Pending, Failed),
        (Pending, Expired),
        (Approved, Completed),
        (Approved, Failed),
        (Completed, RolledBack),
    ]);
    assert_eq!(allowed, expected);
    for s in [Rejected, Failed, Expired, RolledBack] {
        assert!(s.is_final(), "{s}");
    }
    assert!(Rejected.refuse(Approved).contains("rejected is final"));
    assert!(
        Approved
            .refuse(Rejected)
            .contains("can only become completed or failed")
    );
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()).unwrap(), s);
    }
    assert!(
        Status::parse("done")
            .unwrap_err()
            .message
            .contains("pending")
    );
}

fn tags(raw: &[&str]) -> Vec<Tag> {
    parse_tags(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn the_default_rule_wants_approval_for_the_high_impact_combination() {
    let rules = PillarRules::default();
    assert_eq!(
        rules.reasons(&tags(&["[Cloud][Contracts][Reality]", "checkout"])),
        vec!["the scenario's tags combine [Reality][Contracts][Cloud], a high-impact combination"]
    );
    // Spread over several tags counts the same.
    assert_eq!(
        rules
            .reasons(&tags(&["[Cloud]", "[Contracts][Reality]"]))
            .len(),
        1
    );
    assert!(rules.reasons(&tags(&["[Cloud][Contracts]"])).is_empty());
    assert!(rules.reasons(&[]).is_empty());
}

#[test]
fn custom_rules_parse_and_name_what_is_wrong() {
    let rules: PillarRules =
        serde_json::from_str(r#"{"patterns":["[Cloud][Contracts]"],"pillars":["[AI]","devx"]}"#)
            .unwrap();
    assert_eq!(rules.patterns.len(), 1);
    assert_eq!(rules.pillars, BTreeSet::from([Pillar::Ai, Pillar::DevX]));
    assert_eq!(rules.reasons(&tags(&["[AI]"])).len(), 1);
    assert_eq!(rules.reasons(&tags(&["[Contracts][Cloud]"])).len(), 1);
    let back: PillarRules = serde_json::from_str(&serde_json::to_string(&rules).unwrap()).unwrap();
    assert_eq!(back, rules);

    let err = serde_json::from_str::<PillarRules>(r#"{"patterns":["cloud"]}"#).unwrap_err();
    assert!(err.to_string().contains("not a pillar pattern"), "{err}");
    let err = serde_json::from_str::<PillarRules>(r#"{"pillars":["Weather"]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown pillar"), "{err}");
    let err = serde_json::from_str::<PillarRules>(r#"{"patern":[]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn the_requirement_combines_the_target_the_tags_and_the_drift() {
    let none = Approvals::default();
    let rules = PillarRules::default();
    let plain = tags(&["payments"]);
    assert_eq!(requirement("test", &none, &rules, &plain, 0).approvals, 0);

    let prod = Approvals {
        required: 2,
        roles: vec!["admin".into(), "qa".into()],
        expire_after_secs: None,
    };
    let r = requirement("prod", &prod, &rules, &plain, 0);
    assert_eq!(r.approvals, 2);
    assert_eq!(r.roles, vec!["admin", "qa"]);
    assert_eq!(r.reasons, vec!["prod requires 2 approvals by admin or qa"]);

    let r = requirement(
        "test",
        &none,
        &rules,
        &tags(&["[Cloud][Contracts][Reality]"]),
        3,
    );
    assert_eq!(r.approvals, 1);
    assert_eq!(r.reasons.len(), 2);
    assert!(r.reasons[1].contains("3 breaking changes"));
}

fn routes(items: &[(&str, u32, &str)]) -> Vec<ConfigRoute> {
    items
        .iter()
        .map(|(path, status, body)| ConfigRoute {
            id: uuid::Uuid::new_v4(),
            spec: crate::model::route::RouteSpec::parse("r", "GET", path, || {
                crate::model::route::ResponseSpec::parse(
                    *status,
                    vec![],
                    bytes::Bytes::from(body.to_string()),
                )
            })
            .unwrap(),
        })
        .collect()
}

fn status_of(e: &Evaluation, gate: &str) -> GateStatus {
    e.gates.iter().find(|g| g.name == gate).unwrap().status
}

#[test]
fn evaluate_runs_every_gate_and_says_which_blocks() {
    let mut settings = crate::model::environment::EnvSettings::default().effective();
    settings.drift_budget = Some(0);
    settings.data_policy.forbid_pii = true;
    settings.required_checks = vec!["ci".into()];
    let rules = PillarRules::default();
    let served = routes(&[("/a", 200, r#"{"id":1}"#)]);
    let clean = routes(&[("/a", 200, r#"{"id":2,"name":"x"}"#)]);
    let checks: Vec<ContractCheck> = serde_yaml::from_str(
        "- { name: a, request: { path: /a }, expect: { status: 200, body: { name: x } } }",
    )
    .unwrap();
    let run =
        |promoted: &[ConfigRoute], others: &[ConfigRoute], reported: &[(String, CheckState)]| {
            evaluate(&Inputs {
                target: "prod",
                settings: &settings,
                rules: &rules,
                tags: &[],
                subject: Subject::Scenario {
                    workspace: "shop",
                    promoted,
                    served: &served,
                    others,
                    checks: &checks,
                    personas: &[],
                },
                reported,
            })
        };
    let green = [("ci".to_owned(), CheckState::Passed)];
    let red = [("ci".to_owned(), CheckState::Failed)];

    let ok = run(&clean, &[], &[]);
    assert_eq!(ok.blocked(), None);
    assert_eq!(status_of(&ok, "contracts"), GateStatus::Passed);
    assert_eq!(status_of(&ok, EXTERNAL_GATE), GateStatus::Pending);
    assert!(ok.waiting().is_some());
    assert_eq!(ok.requirement.approvals, 0);
    assert!(run(&clean, &[], &green).waiting().is_none());

    // A clash with another scenario's route stops it at compile.
    let clash = run(&clean, &routes(&[("/a", 200, "{}")]), &[]);
    assert_eq!(clash.blocked().unwrap().name, "compile");
    // A removed field exceeds prod's budget of 0.
    let drift = run(&routes(&[("/a", 200, r#"{"name":"x"}"#)]), &[], &[]);
    assert_eq!(drift.blocked().unwrap().name, "drift");
    assert_eq!(drift.diff.breaking_count, 1);
    // PII.
    let pii = run(
        &routes(&[("/a", 200, r#"{"id":1,"name":"x","mail":"jo@corp.io"}"#)]),
        &[],
        &[],
    );
    assert_eq!(pii.blocked().unwrap().name, "data_policy");
    // A failing contract check.
    let contract = run(&routes(&[("/a", 200, r#"{"id":1,"name":"y"}"#)]), &[], &[]);
    assert_eq!(contract.blocked().unwrap().name, "contracts");
    // A failed external check waits (it may be re-run); it does not block.
    let failed = run(&clean, &[], &red);
    assert_eq!(failed.blocked(), None);
    assert_eq!(status_of(&failed, EXTERNAL_GATE), GateStatus::Failed);
}

#[test]
fn persona_gates_judge_the_document() {
    let mut settings = crate::model::environment::EnvSettings::default().effective();
    settings.drift_budget = Some(0);
    settings.data_policy.forbid_pii = true;
    let rules = PillarRules::default();
    let run = |promoted: &Value, served: Option<&Value>| {
        evaluate(&Inputs {
            target: "prod",
            settings: &settings,
            rules: &rules,
            tags: &[],
            subject: Subject::Persona {
                name: "alice",
                promoted,
                served,
            },
            reported: &[],
        })
    };
    let v1 = serde_json::json!({"user": {"name": "Alice", "id": 7}});
    let ok = run(
        &serde_json::json!({"user": {"name": "Alice", "id": 8}}),
        Some(&v1),
    );
    assert_eq!(ok.blocked(), None, "{:?}", ok.gates);
    assert_eq!(ok.diff.changed, vec!["persona alice"]);
    assert_eq!(status_of(&ok, "contracts"), GateStatus::Skipped);
    // A removed field breaks templates reading it.
    let drift = run(&serde_json::json!({"user": {"name": "Alice"}}), Some(&v1));
    let gate = drift.blocked().unwrap();
    assert_eq!(gate.name, "drift");
    assert!(
        gate.detail
            .contains("persona alice: field $.user.id was removed"),
        "{}",
        gate.detail
    );
    // PII named by field, masked.
    let pii = run(
        &serde_json::json!({"user": {"mail": "alice.smith@corp.io"}}),
        None,
    );
    let gate = pii.blocked().unwrap();
    assert_eq!(gate.name, "data_policy");
    assert!(
        gate.detail.contains("persona alice $.user.mail"),
        "{}",
        gate.detail
    );
    assert!(
        !gate.detail.contains("alice.smith@corp.io"),
        "{}",
        gate.detail
    );
    assert_eq!(pii.diff.added, vec!["persona alice"]);
    // Not an object.
    assert_eq!(
        run(&serde_json::json!([1]), None).blocked().unwrap().name,
        "compile"
    );
}

#[test]
fn environment_gates_move_only_the_served_part() {
    use crate::model::environment::{Approvals, EnvSettings};
    let settings = EnvSettings::default().effective();
    let rules = PillarRules::default();
    let source = EnvSettings {
        reality: Some(4),
        approvals: Some(Approvals {
            required: 0,
            roles: vec![],
            expire_after_secs: None,
        }),
        ..EnvSettings::default()
    };
    let target = EnvSettings {
        reality: Some(2),
        drift_budget: Some(0),
        approvals: Some(Approvals {
            required: 2,
            roles: vec![],
            expire_after_secs: None,
        }),
        ..EnvSettings::default()
    };
    let e = evaluate(&Inputs {
        target: "prod",
        settings: &settings,
        rules: &rules,
        tags: &[],
        subject: Subject::Environment {
            promoted: &source.served_part(),
            served: &target,
            defaults: &EnvSettings::default(),
        },
        reported: &[],
    });
    assert_eq!(e.blocked(), None, "{:?}", e.gates);
    assert_eq!(e.diff.changed, vec!["settings.reality: 2 → 4"]);
    // Governance stays with the target.
    let next = target.with_served_of(&source.served_part());
    assert_eq!(next.reality, Some(4));
    assert_eq!(next.drift_budget, Some(0));
    assert_eq!(next.approvals.unwrap().required, 2);
    // Invalid settings stop it at compile.
    let bad = EnvSettings {
        reality: Some(9),
        ..EnvSettings::default()
    };
    let e = evaluate(&Inputs {
        target: "prod",
        settings: &settings,
        rules: &rules,
        tags: &[],
        subject: Subject::Environment {
            promoted: &bad,
            served: &target,
            defaults: &EnvSettings::default(),
        },
        reported: &[],
    });
    assert_eq!(e.blocked().unwrap().name, "compile");
    assert!(e.blocked().unwrap().detail.contains("reality"));
}

#[test]
fn check_names_are_checked() {
    assert!(check_name("ci/build-1").is_ok());
    assert!(check_name("").is_err());
    assert!(check_name("a b").unwrap_err().contains("letters"));
}
