//! `mockplane`: the admin CLI. It speaks only the control plane's gRPC API;
//! `mockplane up` also runs a whole local Mockplane.
#![forbid(unsafe_code)]

/// `print!` to standard output, ending quietly when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_out(format_args!($($arg)*)) };
}

/// `println!` to standard output, ending quietly when the reader has gone.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

mod access;
mod audit;
mod client;
mod envfile;
mod envs;
mod journal;
mod keys;
mod mockfile;
mod nodes;
mod orgs;
mod output;
mod personafile;
mod personas;
mod promotions;
mod prompt;
mod roles;
mod routes;
mod scenariofile;
mod scenarios;
mod session;
mod up;
mod workspaces;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::envs::*;
use crate::journal::*;
use crate::output::Format;
use crate::personas::*;
use crate::routes::*;
use crate::scenarios::*;
use crate::workspaces::*;

/// Mockplane's admin CLI: manage workspaces and their mocks over the gRPC API.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// The control plane's gRPC address. Default: the one `mockplane
    /// login` logged in to, else http://127.0.0.1:7070.
    #[arg(long, global = true, env = "MOCKPLANE_SERVER")]
    server: Option<String>,
    /// The token to authenticate with: an API token (the control plane
    /// prints one on its first run) or an environment token (`mockplane
    /// env-token`). Without one, the session of `mockplane login` is used.
    #[arg(long, global = true, env = "MOCKPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How to print results.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Format,
    /// Why you make this change (8 to 500 characters). Changes that reach
    /// every environment of a workspace (deleting it, its defaults,
    /// personas, state resets) need one when an environment requires a
    /// reason, as prod does by default. It goes to the audit trail.
    /// `env-token` needs one: it goes to the workspace's access log.
    /// `api-key create --test` needs one: it is the test key's reason.
    /// `org delete` needs one: it stays in the audit trail.
    #[arg(long, global = true, env = "MOCKPLANE_REASON")]
    reason: Option<String>,
    /// The org to act in, by name or id: platform admins act in any org
    /// with an owner's role there (and audited as such); anyone else only
    /// in their own. Default: your own org.
    /// (No environment variable: the control plane's MOCKPLANE_ORG names
    /// the org its first run creates.)
    #[arg(long = "org", global = true, value_name = "ORG")]
    act_in: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, inspect, change and delete workspaces.
    #[command(subcommand, visible_alias = "ws")]
    Workspace(WorkspaceCommand),
    /// Add, list, change and remove a workspace's mocks (routes).
    #[command(subcommand, visible_alias = "routes")]
    Route(RouteCommand),
    /// List, inspect, add, change and delete a workspace's environments
    /// (dev → test → prod by default).
    #[command(subcommand, visible_aliases = ["envs", "environment"])]
    Env(EnvCommand),
    /// Create, version, import and export a workspace's scenarios: named,
    /// tagged sets of its routes.
    #[command(subcommand, visible_alias = "scenarios")]
    Scenario(ScenarioCommand),
    /// Create, list, inspect, change and delete a workspace's personas: the
    /// JSON documents templates read as {{persona.…}}.
    #[command(subcommand, visible_alias = "personas")]
    Persona(PersonaCommand),
    /// Show the latest requests nodes answered for a workspace, newest
    /// first, and for those no route answered, why.
    Journal(JournalArgs),
    /// Run a local Mockplane: a control plane on SQLite and one data-plane node.
    Up(up::UpArgs),
    /// Log in with your e-mail and password; the session is saved and
    /// used by every command that gets no --token.
    Login(access::LoginArgs),
    /// Create an org of your own, as its owner, where the control plane
    /// allows sign-up (--allow-signup); then `mockplane login`.
    Signup(orgs::SignupArgs),
    /// End the saved session on the control plane and forget it.
    Logout,
    /// Show who you are: principal, org, and how you authenticated.
    Whoami,
    /// Show and change your org: its display name, settings and quotas.
    #[command(subcommand, visible_alias = "orgs")]
    Org(orgs::OrgCommand),
    /// Invite, list, inspect, change and delete the org's users; change
    /// your password.
    #[command(subcommand, visible_alias = "users")]
    User(access::UserCommand),
    /// Create service accounts: principals for automation.
    #[command(subcommand, visible_alias = "service-accounts")]
    ServiceAccount(access::ServiceAccountCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand, visible_alias = "api-tokens")]
    ApiToken(access::ApiTokenCommand),
    /// List, define, change and delete roles; list the permissions.
    #[command(subcommand, visible_alias = "roles")]
    Role(roles::RoleCommand),
    /// Who has which role in which environment of a workspace.
    #[command(subcommand, visible_alias = "members")]
    Member(roles::MemberCommand),
    /// Environment policies: which roles may use a permission in an
    /// environment.
    #[command(subcommand, visible_alias = "policies")]
    Policy(roles::PolicyCommand),
    /// Get a short-lived token for changes to one environment (prod needs
    /// one), for a reason given with --reason.
    EnvToken(access::EnvTokenArgs),
    /// Show a workspace's environment access log: who got an environment
    /// token, for which environment, why and until when. Newest first.
    AccessLog(access::AccessLogArgs),
    /// Data-plane API keys: make, list and revoke the keys requests to a
    /// workspace's mocks present in the x-mockplane-key header.
    #[command(subcommand, visible_alias = "api-keys")]
    ApiKey(keys::ApiKeyCommand),
    /// The audit trail (org owners and admins): list its events, verify
    /// its hash chain, prune old content.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show the requests the nodes answered for a workspace, per
    /// environment; requests made with test keys apart.
    Usage(keys::UsageArgs),
    /// The data-plane nodes (org owners and admins): which replica each
    /// streams from, the revision it serves, its lag, its errors; and
    /// `nodes propagation WORKSPACE`: how many serve its newest change.
    #[command(visible_alias = "node")]
    Nodes(nodes::NodesArgs),
    /// Promote a scenario version, a persona version (--persona) or an
    /// environment's served settings (--settings) to a later environment
    /// of the chain: gated, approved when it must be, executed when it may
    /// be.
    #[command(disable_version_flag = true)]
    Promote(promotions::PromoteArgs),
    /// List, inspect, approve, reject, execute and roll back promotions;
    /// report external checks; release history; approval rules.
    #[command(subcommand, visible_alias = "promotion")]
    Promotions(promotions::PromotionCommand),
    /// Approve a promotion (same as `promotions approve`).
    Approve(promotions::DecideArgs),
    /// Reject a promotion (same as `promotions reject`).
    Reject(promotions::DecideArgs),
    /// Roll back a completed promotion (same as `promotions rollback`).
    Rollback(promotions::RollbackArgs),
    /// Where a workspace's promotion events go (webhooks, e-mail, GitOps
    /// pull requests), and the delivery log.
    #[command(subcommand, visible_alias = "notification")]
    Notifications(promotions::NotificationCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    // A blank reason (`MOCKPLANE_REASON=`) states none. env-token sends
    // its reason in the request, not as call metadata.
    let reason = cli.reason.as_deref().filter(|r| !r.trim().is_empty());
    if let Some(reason) = reason
        && !matches!(cli.command, Command::EnvToken(_))
    {
        client::set_reason(reason)?;
    }
    if let Some(org) = cli.act_in.as_deref().filter(|o| !o.trim().is_empty()) {
        client::set_org(org)?;
    }
    match cli.command {
        Command::Up(args) => return up::run(args, format).await,
        Command::Login(args) => return access::login(cli.server.as_deref(), args, format).await,
        Command::Signup(args) => return orgs::signup(cli.server.as_deref(), args, format).await,
        Command::Logout => return access::logout(format).await,
        _ => {}
    }
    let credentials = session::credentials(cli.server.as_deref(), cli.token.as_deref()).await?;
    client::set_source(credentials.source);
    let (server, token) = (credentials.server.as_str(), credentials.token.as_deref());
    match cli.command {
        Command::Up(_) | Command::Login(_) | Command::Signup(_) | Command::Logout => Ok(()),
        Command::Workspace(command) => workspace(server, token, command, format).await,
        Command::Route(command) => route(server, token, command, format).await,
        Command::Env(command) => env(server, token, command, format).await,
        Command::Scenario(command) => scenario(server, token, command, format).await,
        Command::Persona(command) => persona(server, token, command, format).await,
        Command::Journal(args) => journal(server, token, args, format).await,
        Command::Whoami => access::whoami(server, token, format).await,
        Command::Org(command) => orgs::org(server, token, command, reason, format).await,
        Command::User(command) => access::user(server, token, command, format).await,
        Command::ServiceAccount(command) => {
            access::service_account(server, token, command, format).await
        }
        Command::ApiToken(command) => access::api_token(server, token, command, format).await,
        Command::Role(command) => roles::role(server, token, command, format).await,
        Command::Member(command) => roles::member(server, token, command, format).await,
        Command::Policy(command) => roles::policy(server, token, command, format).await,
        Command::EnvToken(args) => access::env_token(server, token, args, reason, format).await,
        Command::AccessLog(args) => access::access_log(server, token, args, format).await,
        Command::ApiKey(command) => keys::api_key(server, token, command, reason, format).await,
        Command::Audit(command) => audit::audit(server, token, command, format).await,
        Command::Usage(args) => keys::usage(server, token, args, format).await,
        Command::Nodes(args) => nodes::nodes(server, token, args, format).await,
        Command::Promote(args) => promotions::promote(server, token, args, format).await,
        Command::Promotions(command) => {
            promotions::promotions(server, token, command, format).await
        }
        Command::Approve(args) => promotions::decide(server, token, args, true, format).await,
        Command::Reject(args) => promotions::decide(server, token, args, false, format).await,
        Command::Rollback(args) => promotions::rollback(server, token, args, format).await,
        Command::Notifications(command) => {
            promotions::notifications(server, token, command, format).await
        }
    }
}

fn done(format: Format, summary: serde_json::Value) {
    match format {
        Format::Json => output::json(&summary),
        Format::Table => {
            if let serde_json::Value::Object(map) = summary {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}: {}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                        )
                    })
                    .collect();
                outln!("{}", parts.join(", "));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scenario_and_journal_options_parse() {
        let cli = Cli::try_parse_from([
            "mockplane",
            "route",
            "add",
            "shop",
            "-f",
            "m.yaml",
            "--scenario",
            "checkout",
            "--env",
            "dev",
        ])
        .unwrap();
        let Command::Route(RouteCommand::Add { scenario, env, .. }) = cli.command else {
            panic!("not route add");
        };
        assert_eq!(
            (scenario.scenario.as_str(), env.name.as_str()),
            ("checkout", "dev")
        );
        let cli = Cli::try_parse_from([
            "mockplane",
            "scenario",
            "update",
            "shop",
            "checkout",
            "--tags",
            "a,[Reality]",
        ])
        .unwrap();
        let Command::Scenario(ScenarioCommand::Update { tags, .. }) = cli.command else {
            panic!("not scenario update");
        };
        assert_eq!(tags.unwrap(), ["a", "[Reality]"]);
        assert!(
            Cli::try_parse_from(["mockplane", "scenario", "deploy", "shop", "checkout"]).is_err(),
            "deploy needs --env"
        );
        assert!(Cli::try_parse_from(["mockplane", "journal", "shop", "--limit", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "mockplane",
            "journal",
            "shop",
            "--unmatched",
            "--status",
            "404",
        ])
        .unwrap();
        let Command::Journal(args) = cli.command else {
            panic!("not journal");
        };
        assert!(args.unmatched);
        assert_eq!((args.status, args.limit), (Some(404), 100));
    }

    #[test]
    fn key_audit_and_usage_options_parse() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("mockplane").chain(args.iter().copied()))
        };
        let cli = parse(&[
            "--reason",
            "trying the new checkout",
            "api-key",
            "create",
            "shop",
            "prod",
            "--test",
            "--ttl-secs",
            "3600",
        ])
        .unwrap();
        assert_eq!(cli.reason.as_deref(), Some("trying the new checkout"));
        assert!(matches!(
            cli.command,
            Command::ApiKey(keys::ApiKeyCommand::Create {
                test: true,
                ttl_secs: Some(3600),
                name: None,
                ..
            })
        ));
        for bad in [
            &["api-key", "create", "shop", "dev", "--ttl-secs", "0"][..],
            &["api-key", "create", "shop"],
            &["audit", "list", "--limit", "0"],
            &["audit", "list", "--since", "yesterday"],
            &["audit", "prune", "--retention", "dev=0"],
            &["usage", "shop", "--until", "soon"],
            &["workspace", "update", "shop", "--require-api-keys", "maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let cli = parse(&[
            "audit",
            "list",
            "--action",
            "api_key.",
            "--since",
            "2024-05-01",
            "--limit",
            "5",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Audit(audit::AuditCommand::List(_))
        ));
        let cli = parse(&["workspace", "update", "shop", "--require-api-keys", "true"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::Update {
                require_api_keys: Some(true),
                ..
            })
        ));
        assert!(
            parse(&[
                "usage",
                "shop",
                "--env",
                "dev",
                "--since",
                "2024-05-01T00:00:00Z"
            ])
            .is_ok()
        );
    }
}
