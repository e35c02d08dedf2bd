//! Promotions: `mockplane promote`, `promotions list|get|approve|reject|
//! execute|rollback|check|releases|rules`, and the top-level `approve`,
//! `reject` and `rollback`.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use mockplane_proto::v1;
use serde::Serialize;

use crate::client::{Api, status_error};
use crate::output::{self, Format, time};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["scenario", "persona", "settings"])))]
pub struct PromoteArgs {
    pub workspace: String,
    /// The scenario to promote (or give --persona, or --settings).
    pub scenario: Option<String>,
    /// Promote a persona instead of a scenario.
    #[arg(long)]
    pub persona: Option<String>,
    /// Promote the --from environment's served settings (reality level,
    /// latency, chaos, validation; never approvals, data policy, drift
    /// budget or required checks) instead of a scenario.
    #[arg(long)]
    pub settings: bool,
    /// The environment it comes from (default: the first of the chain).
    #[arg(long, default_value = "dev")]
    pub from: String,
    /// The environment it goes to.
    #[arg(long)]
    pub to: String,
    /// The version; default: what --from serves (the newest version when
    /// --from is the first environment of the chain). With --settings: the
    /// settings version of --from, which must be its current one.
    #[arg(long)]
    pub version: Option<u32>,
    /// Why, for the approvers and the record.
    #[arg(long, short, default_value = "")]
    pub comment: String,
    /// Metadata to record with it: key=value, repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub metadata: Vec<(String, String)>,
    /// Only show what it would change and what its gates say.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave an approved promotion for `promotions execute` instead of
    /// executing it at once.
    #[arg(long)]
    pub no_execute: bool,
}

fn parse_meta(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{raw:?} is not key=value"))
}

#[derive(Args)]
pub struct DecideArgs {
    /// The promotion's id.
    pub id: String,
    #[arg(long, short, default_value = "")]
    pub comment: String,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The completed promotion's id.
    pub id: String,
    /// Why it is rolled back (recorded on the promotion).
    #[arg(long, short, default_value = "")]
    pub comment: String,
}

#[derive(Subcommand)]
pub enum PromotionCommand {
    /// A workspace's promotions, newest first; or with --pending the
    /// org's pending promotions you may approve.
    List {
        /// Required unless --pending.
        workspace: Option<String>,
        /// Only this status: pending, approved, completed, rejected,
        /// failed, expired, rolled_back.
        #[arg(long, default_value = "")]
        status: String,
        /// Your approval queue, across workspaces.
        #[arg(long)]
        pending: bool,
    },
    /// One promotion: its gates, approvals, transitions and propagation.
    Get { id: String },
    /// Approve a promotion.
    Approve(DecideArgs),
    /// Reject a promotion (final).
    Reject(DecideArgs),
    /// Execute an approved promotion.
    Execute { id: String },
    /// Restore what the target served before a completed promotion.
    Rollback(RollbackArgs),
    /// Report an external check's result (what a CI job runs).
    Check {
        id: String,
        /// The check's name, as the target's required_checks name it.
        name: String,
        /// passed, failed or pending.
        status: String,
        #[arg(long, default_value = "")]
        url: String,
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// What an environment served when: promotions, rollbacks, deployments.
    Releases {
        workspace: String,
        #[arg(long = "env", default_value = "")]
        env: String,
    },
    /// Show the pillar-tag approval rules in force (the org's without a
    /// workspace).
    Rules { workspace: Option<String> },
    /// Set the pillar-tag approval rules from a file (`patterns:` and
    /// `pillars:`), or --clear them.
    SetRules {
        workspace: Option<String>,
        #[arg(long, short, required_unless_present = "clear")]
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "file")]
        clear: bool,
    },
}

/// A promotion as the CLI prints it.
#[derive(Serialize)]
pub struct PromotionView {
    pub id: String,
    pub number: u64,
    pub workspace: String,
    /// scenario, persona or environment.
    pub entity: String,
    pub name: String,
    pub version: u32,
    /// Environment settings: what is promoted, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    pub from: String,
    pub to: String,
    pub status: String,
    pub reason: String,
    pub requested_by: String,
    /// Given of needed, `1/2`.
    pub approvals: String,
    /// Who must approve, and why.
    pub approval_reasons: Vec<String>,
    pub gates: Vec<String>,
    pub breaking_changes: u32,
    /// `2/3` nodes serve it (completed promotions).
    pub propagation: String,
    pub previous_version: u32,
    pub pr_url: String,
    pub created: String,
    pub expires: String,
    pub transitions: Vec<String>,
}

/// Environment settings as they read in a settings file (unset fields
/// left out).
fn settings_json(settings: &v1::EnvironmentSettings) -> serde_json::Value {
    mockplane_proto::convert::parse_env_settings(Some(settings))
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_else(|e| serde_json::json!({ "unreadable": e.to_string() }))
}

fn status_name(status: i32) -> String {
    v1::PromotionStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("PROMOTION_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| status.to_string())
}

impl From<&v1::Promotion> for PromotionView {
    fn from(p: &v1::Promotion) -> Self {
        let requirement = p.requirement.clone().unwrap_or_default();
        Self {
            id: p.id.clone(),
            number: p.number,
            workspace: p.workspace.clone(),
            entity: p.entity_kind.clone(),
            name: p.name.clone(),
            settings: p.settings.as_ref().map(settings_json),
            version: p.version,
            from: p.from_environment.clone(),
            to: p.to_environment.clone(),
            status: status_name(p.status),
            reason: p.status_reason.clone(),
            requested_by: p.requested_by.clone(),
            approvals: format!("{}/{}", requirement.given, requirement.approvals),
            approval_reasons: requirement.reasons,
            gates: p
                .gates
                .iter()
                .map(|g| format!("{}: {} — {}", g.name, g.status, g.detail))
                .collect(),
            breaking_changes: p.diff.as_ref().map_or(0, |d| d.breaking_count),
            propagation: p
                .propagation
                .as_ref()
                .map(|n| format!("{}/{}", n.nodes_serving, n.nodes_total))
                .unwrap_or_default(),
            previous_version: p.previous_version,
            pr_url: p.pr_url.clone(),
            created: time(p.create_time.as_ref()),
            expires: time(p.expire_time.as_ref()),
            transitions: p
                .transitions
                .iter()
                .map(|t| {
                    let from = if t.from.is_empty() {
                        "requested"
                    } else {
                        &t.from
                    };
                    format!(
                        "{} {from} → {} by {}{}",
                        time(t.time.as_ref()),
                        t.to,
                        t.actor,
                        if t.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", t.reason)
                        }
                    )
                })
                .collect(),
        }
    }
}

const COLUMNS: [&str; 10] = [
    "number",
    "workspace",
    "entity",
    "name",
    "version",
    "from",
    "to",
    "status",
    "approvals",
    "id",
];

#[derive(Serialize)]
struct ReleaseView {
    time: String,
    environment: String,
    entity: String,
    name: String,
    version: u32,
    previous: u32,
    kind: String,
    actor: String,
    promotion: String,
}

/// Prints a promotion; a failed one is an error (exit status 1) after it
/// is shown.
fn show(format: Format, promotion: &v1::Promotion) -> anyhow::Result<()> {
    output::one(format, &PromotionView::from(promotion));
    if promotion.status == v1::PromotionStatus::Failed as i32 {
        return Err(anyhow!(
            "promotion #{} failed: {}",
            promotion.number,
            promotion.status_reason
        ));
    }
    Ok(())
}

pub async fn promote(
    server: &str,
    token: Option<&str>,
    args: PromoteArgs,
    format: Format,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server, token).await?;
    let kind = if args.settings {
        "environment"
    } else if args.persona.is_some() {
        "persona"
    } else {
        "scenario"
    };
    let request = v1::CreatePromotionRequest {
        workspace: args.workspace,
        scenario: args.scenario.unwrap_or_default(),
        persona: args.persona.unwrap_or_default(),
        version: args.version.unwrap_or(0),
        from_environment: args.from,
        to_environment: args.to,
        comment: args.comment,
        metadata: args.metadata.into_iter().collect(),
        entity_kind: kind.into(),
    };
    if args.dry_run {
        let preview = api
            .promotions
            .preview_promotion(request)
            .await
            .map_err(status_error)?
            .into_inner();
        let diff = preview.diff.clone().unwrap_or_default();
        let requirement = preview.requirement.clone().unwrap_or_default();
        output::one(
            format,
            &serde_json::json!({
                "entity": preview.entity_kind,
                "name": preview.name,
                "version": preview.version,
                "from": preview.from_environment,
                "to": preview.to_environment,
                "serves_now": preview.current_version,
                "added": diff.added,
                "removed": diff.removed,
                "changed": diff.changed,
                "breaking": diff.breaking.iter().map(|b| format!("{}: {}", b.route, b.detail)).collect::<Vec<_>>(),
                "gates": preview.gates.iter().map(|g| format!("{}: {} — {}", g.name, g.status, g.detail)).collect::<Vec<_>>(),
                "approvals_needed": requirement.approvals,
                "approval_reasons": requirement.reasons,
                "blocked": preview.blocked,
            }),
        );
        return Ok(());
    }
    let created = api
        .promotions
        .create_promotion(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let waiting = created
        .gates
        .iter()
        .find(|g| g.name == "external_checks" && (g.status == "pending" || g.status == "failed"));
    if let Some(gate) = waiting
        && created.status == v1::PromotionStatus::Approved as i32
    {
        show(format, &created)?;
        if format == Format::Table {
            eprintln!(
                "note: approved, but external checks are not green ({}): report them with `mockplane promotions check {} <name> passed`, then `mockplane promotions execute {}`",
                gate.detail, created.id, created.id
            );
        }
        return Ok(());
    }
    if created.status == v1::PromotionStatus::Approved as i32 && !args.no_execute {
        let executed = api
            .promotions
            .execute_promotion(v1::ExecutePromotionRequest {
                id: created.id.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        return show(format, &executed);
    }
    show(format, &created)?;
    if created.status == v1::PromotionStatus::Pending as i32 && format == Format::Table {
        eprintln!(
            "note: waiting for approval; an approver runs `mockplane approve {}`, then `mockplane promotions execute {}`",
            created.id, created.id
        );
    }
    Ok(())
}

pub async fn decide(
    server: &str,
    token: Option<&str>,
    args: DecideArgs,
    approve: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server, token).await?;
    let request = v1::DecidePromotionRequest {
        id: args.id.trim().to_owned(),
        comment: args.comment,
    };
    let decided = if approve {
        api.promotions.approve_promotion(request).await
    } else {
        api.promotions.reject_promotion(request).await
    }
    .map_err(status_error)?
    .into_inner();
    show(format, &decided)
}

pub async fn rollback(
    server: &str,
    token: Option<&str>,
    args: RollbackArgs,
    format: Format,
) -> anyhow::Result<()> {
    let rolled = Api::connect(server, token)
        .await?
        .promotions
        .rollback_promotion(v1::RollbackPromotionRequest {
            id: args.id.trim().to_owned(),
            reason: args.comment,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    show(format, &rolled)
}

pub async fn promotions(
    server: &str,
    token: Option<&str>,
    command: PromotionCommand,
    format: Format,
) -> anyhow::Result<()> {
    match command {
        PromotionCommand::List {
            workspace,
            status,
            pending,
        } => {
            if workspace.is_none() && !pending {
                return Err(anyhow!(
                    "name a workspace, or give --pending for your approval queue"
                ));
            }
            let listed = Api::connect(server, token)
                .await?
                .promotions
                .list_promotions(v1::ListPromotionsRequest {
                    workspace: workspace.unwrap_or_default(),
                    status,
                    pending_for_me: pending,
                    page_size: 200,
                    page_token: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<PromotionView> =
                listed.promotions.iter().map(PromotionView::from).collect();
            output::list(format, &views, &COLUMNS);
            Ok(())
        }
        PromotionCommand::Get { id } => {
            let got = Api::connect(server, token)
                .await?
                .promotions
                .get_promotion(v1::GetPromotionRequest {
                    id: id.trim().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PromotionView::from(&got));
            Ok(())
        }
        PromotionCommand::Approve(args) => decide(server, token, args, true, format).await,
        PromotionCommand::Reject(args) => decide(server, token, args, false, format).await,
        PromotionCommand::Execute { id } => {
            let executed = Api::connect(server, token)
                .await?
                .promotions
                .execute_promotion(v1::ExecutePromotionRequest {
                    id: id.trim().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            show(format, &executed)
        }
        PromotionCommand::Rollback(args) => rollback(server, token, args, format).await,
        PromotionCommand::Check {
            id,
            name,
            status,
            url,
            detail,
        } => {
            let reported = Api::connect(server, token)
                .await?
                .promotions
                .report_check(v1::ReportCheckRequest {
                    id: id.trim().to_owned(),
                    name,
                    status,
                    url,
                    detail,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PromotionView::from(&reported));
            Ok(())
        }
        PromotionCommand::Releases { workspace, env } => {
            let listed = Api::connect(server, token)
                .await?
                .promotions
                .list_releases(v1::ListReleasesRequest {
                    workspace,
                    environment: env,
                    page_size: 0,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<ReleaseView> = listed
                .releases
                .iter()
                .map(|r| ReleaseView {
                    time: time(r.time.as_ref()),
                    environment: r.environment.clone(),
                    entity: r.entity_kind.clone(),
                    name: r.name.clone(),
                    version: r.version,
                    previous: r.previous_version,
                    kind: r.kind.clone(),
                    actor: r.actor.clone(),
                    promotion: r.promotion.clone(),
                })
                .collect();
            output::list(
                format,
                &views,
                &[
                    "time",
                    "environment",
                    "entity",
                    "name",
                    "version",
                    "previous",
                    "kind",
                    "actor",
                ],
            );
            Ok(())
        }
        PromotionCommand::Rules { workspace } => {
            let rules = Api::connect(server, token)
                .await?
                .promotions
                .get_approval_rules(v1::GetApprovalRulesRequest {
                    workspace: workspace.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &rules_view(&rules));
            Ok(())
        }
        PromotionCommand::SetRules {
            workspace,
            file,
            clear,
        } => {
            let rules = match file {
                Some(path) => Some(load_rules(&path)?),
                None => None,
            };
            let set = Api::connect(server, token)
                .await?
                .promotions
                .set_approval_rules(v1::SetApprovalRulesRequest {
                    workspace: workspace.unwrap_or_default(),
                    rules,
                    clear,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &rules_view(&set));
            Ok(())
        }
    }
}

fn rules_view(rules: &v1::ApprovalRules) -> serde_json::Value {
    serde_json::json!({
        "patterns": rules.patterns,
        "pillars": rules.pillars,
        "source": rules.source,
    })
}

/// Reads a rules file (YAML or JSON): `patterns:` and `pillars:`.
fn load_rules(path: &std::path::Path) -> anyhow::Result<v1::ApprovalRules> {
    let (text, _) = crate::mockfile::read(path, "rules")?;
    mockplane_shared::model::nesting::check(&text)
        .map_err(|e| anyhow!("{} is not a valid rules file: it {e}", path.display()))?;
    let rules: mockplane_shared::governance::promotion::PillarRules =
        serde_yaml::from_str(&text)
            .map_err(|e| anyhow!("{} is not a valid rules file: {e}", path.display()))?;
    rules
        .check()
        .map_err(|e| anyhow!("{} is not a valid rules file: {e}", path.display()))?;
    Ok(v1::ApprovalRules {
        patterns: rules
            .patterns
            .iter()
            .map(mockplane_shared::governance::promotion::show)
            .collect(),
        pillars: rules
            .pillars
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        source: String::new(),
    })
}

#[derive(Subcommand)]
pub enum NotificationCommand {
    /// Send a workspace's promotion events somewhere: a webhook, an e-mail
    /// address, or a git repository (GitOps pull requests).
    Add(Box<AddChannel>),
    /// A workspace's channels.
    List { workspace: String },
    /// Stop sending to a channel, by id.
    Remove { workspace: String, id: String },
    /// The delivery log: each delivery and its attempts, newest first.
    Deliveries {
        workspace: String,
        /// Only this promotion's.
        #[arg(long, default_value = "")]
        promotion: String,
    },
}

#[derive(Args)]
pub struct AddChannel {
    workspace: String,
    /// POST events to this URL, signed (the secret is printed once).
    #[arg(long, group = "kind")]
    webhook: Option<String>,
    /// Mail events to this address (the control plane needs --smtp-url).
    #[arg(long, group = "kind")]
    email: Option<String>,
    /// Commit the target environment's config to this repository (URL
    /// or path) and open a pull request.
    #[arg(long, group = "kind", requires_all = ["provider", "api_url", "repository"])]
    gitops: Option<String>,
    /// GitOps: github or gitlab.
    #[arg(long)]
    provider: Option<String>,
    /// GitOps: the provider's API root (https://api.github.com).
    #[arg(long)]
    api_url: Option<String>,
    /// GitOps: owner/name (GitHub) or the project (GitLab).
    #[arg(long)]
    repository: Option<String>,
    /// GitOps: the branch pull requests go into (default main).
    #[arg(long, default_value = "")]
    base_branch: String,
    /// GitOps: the file's path ({workspace}, {environment} replaced).
    #[arg(long, default_value = "")]
    path: String,
    /// GitOps: the provider API token (or MOCKPLANE_GITOPS_TOKEN).
    #[arg(
        long,
        env = "MOCKPLANE_GITOPS_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    provider_token: String,
    /// Only these events (repeatable): requested, approval_needed,
    /// approved, rejected, completed, failed, expiring, expired,
    /// rolled_back. Default: all (GitOps: completed).
    #[arg(long = "event", value_name = "EVENT")]
    events: Vec<String>,
}

#[derive(Serialize)]
struct ChannelView {
    id: String,
    kind: String,
    target: String,
    events: Vec<String>,
    created_by: String,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn channel_view(c: &v1::NotificationChannel, secret: Option<String>) -> ChannelView {
    ChannelView {
        id: c.id.clone(),
        kind: c.kind.clone(),
        target: c.target.clone(),
        events: c.events.clone(),
        created_by: c.created_by.clone(),
        created: time(c.create_time.as_ref()),
        secret,
    }
}

#[derive(Serialize)]
struct DeliveryView {
    created: String,
    event: String,
    kind: String,
    target: String,
    status: String,
    attempts: usize,
    last_error: String,
    promotion: String,
}

pub async fn notifications(
    server: &str,
    token: Option<&str>,
    command: NotificationCommand,
    format: Format,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server, token).await?;
    match command {
        NotificationCommand::Add(add) => {
            let AddChannel {
                workspace,
                webhook,
                email,
                gitops,
                provider,
                api_url,
                repository,
                base_branch,
                path,
                provider_token,
                events,
            } = *add;
            let (kind, target, settings) = match (webhook, email, gitops) {
                (Some(url), None, None) => ("webhook", url, None),
                (None, Some(address), None) => ("email", address, None),
                (None, None, Some(repo)) => (
                    "gitops",
                    repo,
                    Some(v1::GitOpsSettings {
                        provider: provider.unwrap_or_default(),
                        api_url: api_url.unwrap_or_default(),
                        repository: repository.unwrap_or_default(),
                        base_branch,
                        path,
                        token: provider_token,
                    }),
                ),
                _ => return Err(anyhow!("give one of --webhook, --email or --gitops")),
            };
            let created = api
                .notifications
                .create_notification_channel(v1::CreateNotificationChannelRequest {
                    workspace,
                    channel: Some(v1::NotificationChannel {
                        kind: kind.into(),
                        target,
                        events,
                        gitops: settings,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let secret = (!created.secret.is_empty()).then(|| created.secret.clone());
            output::one(
                format,
                &channel_view(&created.channel.unwrap_or_default(), secret.clone()),
            );
            if secret.is_some() && format == Format::Table {
                eprintln!(
                    "note: the signing secret is not shown again. Each delivery carries x-mockplane-signature: sha256=HMAC-SHA256(secret, \"<x-mockplane-timestamp>.<body>\")"
                );
            }
        }
        NotificationCommand::List { workspace } => {
            let listed = api
                .notifications
                .list_notification_channels(v1::ListNotificationChannelsRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<ChannelView> = listed
                .channels
                .iter()
                .map(|c| channel_view(c, None))
                .collect();
            output::list(
                format,
                &views,
                &["id", "kind", "target", "events", "created_by"],
            );
        }
        NotificationCommand::Remove { workspace, id } => {
            api.notifications
                .delete_notification_channel(v1::DeleteNotificationChannelRequest {
                    workspace: workspace.clone(),
                    id: id.trim().to_owned(),
                })
                .await
                .map_err(status_error)?;
            output::one(
                format,
                &serde_json::json!({"workspace": workspace, "removed": id.trim()}),
            );
        }
        NotificationCommand::Deliveries {
            workspace,
            promotion,
        } => {
            let listed = api
                .notifications
                .list_deliveries(v1::ListDeliveriesRequest {
                    workspace,
                    promotion,
                    page_size: 0,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<DeliveryView> = listed
                .deliveries
                .iter()
                .map(|d| DeliveryView {
                    created: time(d.create_time.as_ref()),
                    event: d.event.clone(),
                    kind: d.kind.clone(),
                    target: d.target.clone(),
                    status: d.status.clone(),
                    attempts: d.attempts.len(),
                    last_error: d.last_error.clone(),
                    promotion: d.promotion.clone(),
                })
                .collect();
            output::list(
                format,
                &views,
                &[
                    "created",
                    "event",
                    "kind",
                    "target",
                    "status",
                    "attempts",
                    "last_error",
                ],
            );
        }
    }
    Ok(())
}
