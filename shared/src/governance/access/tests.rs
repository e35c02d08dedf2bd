use super::*;
use Permission::*;

fn envs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn standing(pairs: &[(&str, &str)]) -> Standing {
    Standing {
        roles: pairs
            .iter()
            .map(|(e, r)| (e.to_string(), r.to_string()))
            .collect(),
    }
}

fn set(items: &[Permission]) -> BTreeSet<Permission> {
    items.iter().copied().collect()
}

fn catalog() -> RoleCatalog {
    RoleCatalog::new([
        (
            "platform".to_owned(),
            set(&[
                EnvironmentRead,
                RealityConfig,
                ChaosConfig,
                DriftBudgetConfig,
            ]),
        ),
        (
            "qa".to_owned(),
            set(&[EnvironmentRead, ScenarioRead, ChaosConfig]),
        ),
    ])
}

fn ask(
    org_role: OrgRole,
    standing: &Standing,
    policies: &Policies,
    permission: Permission,
    env: Option<&str>,
) -> Result<(), Denied> {
    let environments = envs(&["dev", "test", "prod"]);
    let catalog = catalog();
    decide(&Question {
        org_role,
        permission,
        workspace: Some(WorkspaceFacts {
            environments: &environments,
            standing,
            policies,
            catalog: &catalog,
        }),
        environment: env,
    })
}

#[test]
fn names_round_trip_and_are_unique() {
    let mut seen = BTreeSet::new();
    for p in Permission::ALL {
        assert_eq!(Permission::parse(p.as_str()).unwrap(), *p);
        assert!(seen.insert(p.as_str()));
    }
    let error = Permission::parse("scenario.fly").unwrap_err();
    assert!(error.message.contains("`scenario.fly` is not a permission"));
}

#[test]
fn a_role_in_one_environment_says_nothing_of_another() {
    let member = standing(&[("dev", EDITOR), ("test", EDITOR), ("prod", VIEWER)]);
    let none = Policies::default();
    assert!(ask(OrgRole::Member, &member, &none, ScenarioWrite, Some("dev")).is_ok());
    let denied = ask(OrgRole::Member, &member, &none, ScenarioWrite, Some("prod")).unwrap_err();
    assert!(denied.0.contains("role in `prod` is viewer"), "{denied}");
    assert!(ask(OrgRole::Member, &member, &none, ScenarioRead, Some("prod")).is_ok());
    let denied = ask(
        OrgRole::Member,
        &member,
        &none,
        ScenarioRead,
        Some("sandbox"),
    )
    .unwrap_err();
    assert!(denied.0.contains("no role in the `sandbox`"), "{denied}");

    let prod_only = standing(&[("prod", ADMIN)]);
    assert!(
        ask(
            OrgRole::Member,
            &prod_only,
            &none,
            ScenarioWrite,
            Some("prod")
        )
        .is_ok()
    );
    assert!(
        ask(
            OrgRole::Member,
            &prod_only,
            &none,
            ScenarioRead,
            Some("dev")
        )
        .is_err()
    );
}

#[test]
fn workspace_permissions_need_a_role_somewhere_and_all_environment_ones_everywhere() {
    let none = Policies::default();
    let prod_viewer = standing(&[("prod", VIEWER)]);
    assert!(ask(OrgRole::Member, &prod_viewer, &none, WorkspaceRead, None).is_ok());
    assert!(ask(OrgRole::Member, &standing(&[]), &none, WorkspaceRead, None).is_err());

    let mostly_admin = standing(&[("dev", ADMIN), ("test", ADMIN), ("prod", EDITOR)]);
    let denied = ask(OrgRole::Member, &mostly_admin, &none, WorkspaceDelete, None).unwrap_err();
    assert!(denied.0.contains("needed in each"), "{denied}");
    let admin = standing(&[("dev", ADMIN), ("test", ADMIN), ("prod", ADMIN)]);
    assert!(ask(OrgRole::Member, &admin, &none, WorkspaceDelete, None).is_ok());
    assert!(ask(OrgRole::Admin, &standing(&[]), &none, WorkspaceDelete, None).is_ok());
}

#[test]
fn policies_decide_where_they_exist_and_bind_org_admins() {
    let policies = Policies::new([
        (
            ("prod".to_owned(), RealityConfig),
            ["platform".to_owned()].into(),
        ),
        (
            ("test".to_owned(), ChaosConfig),
            ["qa".to_owned(), ADMIN.to_owned()].into(),
        ),
        (("prod".to_owned(), ChaosConfig), ["qa".to_owned()].into()),
    ]);
    let platform = standing(&[("prod", "platform")]);
    let editor = standing(&[("test", EDITOR), ("prod", EDITOR)]);
    let qa = standing(&[("test", "qa"), ("prod", "qa")]);

    // Only platform changes reality in prod: not editors, not org admins.
    assert!(
        ask(
            OrgRole::Member,
            &platform,
            &policies,
            RealityConfig,
            Some("prod")
        )
        .is_ok()
    );
    let denied = ask(
        OrgRole::Member,
        &editor,
        &policies,
        RealityConfig,
        Some("prod"),
    )
    .unwrap_err();
    assert!(
        denied
            .0
            .contains("reserved by policy for the roles platform"),
        "{denied}"
    );
    assert!(
        ask(
            OrgRole::Owner,
            &standing(&[]),
            &policies,
            RealityConfig,
            Some("prod")
        )
        .is_err()
    );
    // Where no policy exists the role decides: editors change reality in test.
    assert!(
        ask(
            OrgRole::Member,
            &editor,
            &policies,
            RealityConfig,
            Some("test")
        )
        .is_ok()
    );

    // qa changes chaos in test and prod; an editor, whose role includes
    // chaos, does not where a policy says otherwise.
    assert!(ask(OrgRole::Member, &qa, &policies, ChaosConfig, Some("test")).is_ok());
    assert!(ask(OrgRole::Member, &qa, &policies, ChaosConfig, Some("prod")).is_ok());
    assert!(
        ask(
            OrgRole::Member,
            &editor,
            &policies,
            ChaosConfig,
            Some("test")
        )
        .is_err()
    );
    assert!(
        ask(
            OrgRole::Member,
            &editor,
            &policies,
            ChaosConfig,
            Some("prod")
        )
        .is_err()
    );
    // A policy grants only what it names: qa still cannot write scenarios.
    assert!(ask(OrgRole::Member, &qa, &policies, ScenarioWrite, Some("test")).is_err());
}

#[test]
fn org_permissions_follow_the_org_role() {
    for (role, manage) in [
        (OrgRole::Owner, true),
        (OrgRole::Admin, true),
        (OrgRole::Member, false),
    ] {
        let q = |permission| {
            decide(&Question {
                org_role: role,
                permission,
                workspace: None,
                environment: None,
            })
        };
        assert_eq!(q(UserManage).is_ok(), manage, "{role}");
        assert_eq!(q(AuditRead).is_ok(), manage, "{role}");
        assert!(q(WorkspaceCreate).is_ok(), "{role}");
    }
}

#[test]
fn custom_roles_and_policies_are_checked() {
    assert!(check_custom_role("platform", &set(&[RealityConfig])).is_ok());
    assert!(check_custom_role("admin", &set(&[RealityConfig])).is_err());
    assert!(check_custom_role("Platform", &set(&[])).is_err());
    let error = check_custom_role("ops", &set(&[UserManage])).unwrap_err();
    assert!(error.message.contains("org permission"));

    let catalog = catalog();
    let roles: BTreeSet<String> = ["platform".to_owned()].into();
    assert!(check_policy(RealityConfig, &roles, &catalog).is_ok());
    assert!(check_policy(PolicyManage, &roles, &catalog).is_err());
    assert!(check_policy(WorkspaceDelete, &roles, &catalog).is_err());
    assert!(check_policy(RealityConfig, &BTreeSet::new(), &catalog).is_err());
    let unknown: BTreeSet<String> = ["ghost".to_owned()].into();
    let error = check_policy(RealityConfig, &unknown, &catalog).unwrap_err();
    assert!(error.message.contains("`ghost` is not a role"));
}

/// The reference access matrix: end user, tester, developer and admin
/// across dev, stage and prod; who gets in at all, and who may create
/// temporary test keys.
#[test]
fn the_reference_access_matrix() {
    let environments = envs(&["dev", "stage", "prod"]);
    let catalog = RoleCatalog::new([
        ("user".to_owned(), set(&[EnvironmentRead])),
        (
            "tester".to_owned(),
            set(&[EnvironmentRead, ScenarioRead, JournalRead]),
        ),
        ("developer".to_owned(), builtin_permissions(EDITOR).unwrap()),
    ]);
    let policies = Policies::new([(("dev".to_owned(), TestKeyCreate), [ADMIN.to_owned()].into())]);
    struct Row {
        who: &'static str,
        org_role: OrgRole,
        roles: &'static [(&'static str, &'static str)],
        access: [bool; 3],
        test_keys: [bool; 3],
    }
    let rows = [
        Row {
            who: "end user",
            org_role: OrgRole::Member,
            roles: &[("prod", "user")],
            access: [false, false, true],
            test_keys: [false, false, false],
        },
        Row {
            who: "tester",
            org_role: OrgRole::Member,
            roles: &[("stage", "tester")],
            access: [false, true, false],
            test_keys: [false, false, false],
        },
        Row {
            who: "developer",
            org_role: OrgRole::Member,
            roles: &[
                ("dev", "developer"),
                ("stage", "developer"),
                ("prod", "developer"),
            ],
            access: [true, true, true],
            test_keys: [false, true, true],
        },
        Row {
            who: "admin",
            org_role: OrgRole::Member,
            roles: &[("dev", ADMIN), ("stage", ADMIN), ("prod", ADMIN)],
            access: [true, true, true],
            test_keys: [true, true, true],
        },
        Row {
            who: "org owner",
            org_role: OrgRole::Owner,
            roles: &[],
            access: [true, true, true],
            test_keys: [true, true, true],
        },
    ];
    for row in rows {
        let standing = standing(row.roles);
        for (i, env) in environments.iter().enumerate() {
            let q = |permission| {
                decide(&Question {
                    org_role: row.org_role,
                    permission,
                    workspace: Some(WorkspaceFacts {
                        environments: &environments,
                        standing: &standing,
                        policies: &policies,
                        catalog: &catalog,
                    }),
                    environment: Some(env),
                })
                .is_ok()
            };
            assert_eq!(q(EnvironmentRead), row.access[i], "{} in {env}", row.who);
            assert_eq!(
                q(TestKeyCreate),
                row.test_keys[i],
                "{} keys in {env}",
                row.who
            );
        }
    }
}
#[test]
fn token_rules() {
    use Permission::UserManage;
    // (org role, environment token, own tokens) -> allowed
    let table = [
        (OrgRole::Member, false, true, true),
        (OrgRole::Member, false, false, false),
        (OrgRole::Admin, false, false, true),
        (OrgRole::Owner, false, false, true),
        (OrgRole::Owner, true, true, false),
        (OrgRole::Member, true, true, false),
    ];
    for (role, env_token, own, allowed) in table {
        assert_eq!(
            decide_tokens(role, env_token, own, &[UserManage]).is_ok(),
            allowed,
            "{role} env_token={env_token} own={own}"
        );
    }
    assert!(
        decide_tokens(OrgRole::Owner, true, true, &[UserManage])
            .unwrap_err()
            .0
            .contains("environment token")
    );
}

#[test]
fn environment_tokens_act_in_their_environment_only() {
    use Permission::{ScenarioWrite, WorkspaceRead};
    // (own workspace, environment acted in, permissions) -> fits
    let table: [(bool, Option<&str>, &[Permission], bool); 6] = [
        (true, Some("prod"), &[ScenarioWrite], true),
        (true, Some("dev"), &[ScenarioWrite], false),
        (false, Some("prod"), &[ScenarioWrite], false),
        (true, None, &[WorkspaceRead], true),
        (true, None, &[ScenarioWrite], false),
        (false, None, &[WorkspaceRead], false),
    ];
    for (own, env, permissions, fits) in table {
        assert_eq!(
            environment_token_fits(own, "prod", env, permissions),
            fits,
            "own={own} env={env:?} {permissions:?}"
        );
    }
}
#[test]
fn what_each_change_needs() {
    use crate::model::environment::{EnvSettings, SettingKey, SettingsPatch};
    use Permission::*;
    let patch = |keys: &[SettingKey]| SettingsPatch {
        values: EnvSettings::default(),
        keys: keys.to_vec(),
    };
    let chaos = patch(&[SettingKey::Chaos]);
    let governance = patch(&[SettingKey::Approvals, SettingKey::Reality]);
    // UpdateEnvironment: (settings, renames) -> needed
    let updates: [(Option<&SettingsPatch>, bool, &[Permission]); 4] = [
        (Some(&chaos), false, &[ChaosConfig]),
        (Some(&chaos), true, &[ChaosConfig, EnvironmentManage]),
        (None, false, &[EnvironmentManage]),
        (
            Some(&governance),
            false,
            &[RealityConfig, EnvironmentManage],
        ),
    ];
    for (settings, renames, needed) in updates {
        let mut got = environment_update_permissions(settings, renames);
        let mut want = needed.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{settings:?} renames={renames}");
    }
    // CreateEnvironment: (settings, on the chain) -> needed
    let approvals = EnvSettings {
        approvals: Some(Default::default()),
        reality: Some(2),
        ..EnvSettings::default()
    };
    let creates: [(&EnvSettings, bool, &[Permission]); 3] = [
        (&EnvSettings::default(), false, &[WorkspaceUpdate]),
        (
            &EnvSettings::default(),
            true,
            &[WorkspaceUpdate, EnvironmentManage],
        ),
        (
            &approvals,
            false,
            &[WorkspaceUpdate, RealityConfig, EnvironmentManage],
        ),
    ];
    for (settings, on_chain, needed) in creates {
        let mut got = environment_create_permissions(settings, on_chain);
        let mut want = needed.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{settings:?} on_chain={on_chain}");
    }
    // UpdateWorkspace
    let changes: [(WorkspaceChange<'_>, &[Permission]); 4] = [
        (WorkspaceChange::default(), &[WorkspaceUpdate]),
        (
            WorkspaceChange {
                serving: true,
                ..Default::default()
            },
            &[WorkspaceUpdate, EnvironmentManage],
        ),
        (
            WorkspaceChange {
                api_keys: true,
                ..Default::default()
            },
            &[WorkspaceUpdate, ApiKeyManage],
        ),
        (
            WorkspaceChange {
                defaults: Some(&chaos),
                ..Default::default()
            },
            &[WorkspaceUpdate, ChaosConfig],
        ),
    ];
    for (change, needed) in changes {
        let mut got = workspace_update_permissions(change);
        let mut want = needed.to_vec();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{change:?}");
    }
}
