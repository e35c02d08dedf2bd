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
mod keys;
mod mockfile;
mod nodes;
mod output;
mod personafile;
mod promotions;
mod prompt;
mod scenariofile;
mod session;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{Args, Parser, Subcommand};
use mockplane_proto::v1;
use mockplane_shared::EnvSettings;
use mockplane_shared::environment::{SettingKey, ValidationMode};
use mockplane_shared::route::MAX_ROUTES_PER_CALL;

use crate::client::{Api, status_error};
use crate::output::{
    DeploymentView, EnvironmentView, Format, JournalView, PersonaView, RouteView, ScenarioView,
    VersionView, WorkspaceView,
};

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
    #[arg(long, global = true, env = "MOCKPLANE_REASON")]
    reason: Option<String>,
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
    /// End the saved session on the control plane and forget it.
    Logout,
    /// Show who you are: principal, org, and how you authenticated.
    Whoami,
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
    Role(access::RoleCommand),
    /// Who has which role in which environment of a workspace.
    #[command(subcommand, visible_alias = "members")]
    Member(access::MemberCommand),
    /// Environment policies: which roles may use a permission in an
    /// environment.
    #[command(subcommand, visible_alias = "policies")]
    Policy(access::PolicyCommand),
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

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace; its slug is its URL name (/w/<slug>/...).
    Create {
        slug: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The environment that answers requests without an
        /// x-mockplane-env header (default: the first of the chain).
        #[arg(long, value_name = "ENV")]
        active_env: Option<String>,
        /// The promotion chain, of dev, test and prod, comma separated
        /// (default: dev,test,prod).
        #[arg(long, value_name = "ENVS", value_delimiter = ',')]
        chain: Option<Vec<String>>,
        /// Let promotions skip steps of the chain (dev → prod).
        #[arg(long)]
        allow_skips: bool,
        /// Every request to the workspace's mocks must present an API key
        /// of the environment it reaches, from the start.
        #[arg(long)]
        require_api_keys: bool,
        /// A settings file (YAML or JSON, `-` for standard input) with the
        /// defaults every environment inherits.
        #[arg(long, value_name = "FILE")]
        defaults_file: Option<PathBuf>,
    },
    /// List the workspaces of your org.
    List,
    /// Show one workspace, by slug or id.
    Get { workspace: String },
    /// Change a workspace's slug, name, description or environments.
    Update {
        workspace: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The environment that answers requests without an
        /// x-mockplane-env header.
        #[arg(long, value_name = "ENV")]
        active_env: Option<String>,
        /// The promotion chain in order, comma separated: `dev,test,prod`.
        /// The first serves the working copies; environments left out go
        /// off the chain.
        #[arg(long, value_name = "ENVS", value_delimiter = ',')]
        chain: Option<Vec<String>>,
        /// Whether a promotion may skip steps of the chain (dev → prod).
        #[arg(long, value_name = "true|false")]
        allow_skips: Option<bool>,
        /// Whether every request to the workspace's mocks must present an
        /// API key of the environment it reaches (x-mockplane-key; see
        /// `mockplane api-key`). It reaches prod: it needs --reason.
        #[arg(long, value_name = "true|false")]
        require_api_keys: Option<bool>,
        /// A settings file (YAML or JSON, `-` for standard input) that
        /// replaces the defaults every environment inherits.
        #[arg(long, value_name = "FILE")]
        defaults_file: Option<PathBuf>,
        /// Only update if the workspace still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a workspace and all its routes.
    Delete {
        workspace: String,
        /// Only delete if the workspace still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Make every node forget the workspace's state machines: stateful
    /// routes start again from `started`.
    ResetState { workspace: String },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Add the routes of a YAML or JSON mock file, all or none.
    ///
    /// A mock file lists routes: `routes: [{name, method, path, match,
    /// priority, latency, chaos, state, response: {status, headers, body |
    /// json, template}}]`. `-` reads standard input.
    Add {
        workspace: String,
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        scenario: ScenarioArg,
    },
    /// List a workspace's routes.
    List {
        workspace: String,
        #[command(flatten)]
        scenario: ScenarioArg,
    },
    /// Show one route.
    Get { workspace: String, route_id: String },
    /// Replace a route with the single route of a mock file.
    Update {
        workspace: String,
        route_id: String,
        #[arg(long, short)]
        file: PathBuf,
        /// Only update if the route still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
        #[command(flatten)]
        env: EnvArg,
    },
    /// Remove routes: by id, those matching the method and path of each
    /// route of a mock file, or all of them.
    Remove {
        workspace: String,
        route_ids: Vec<String>,
        #[arg(long, short, conflicts_with_all = ["route_ids", "all"])]
        file: Option<PathBuf>,
        #[arg(long, conflicts_with = "route_ids")]
        all: bool,
        #[command(flatten)]
        env: EnvArg,
    },
}

/// The environment a route change is meant for.
#[derive(Args)]
struct EnvArg {
    /// The environment the change is meant for; only the first of the
    /// promotion chain can be edited, the others get changes by promotion.
    /// Default: the working copy.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    name: String,
}

/// The scenario whose working copy a route command is about.
#[derive(Args)]
struct ScenarioArg {
    /// The scenario whose working copy to use. Default: when adding,
    /// `default`; when listing, every scenario.
    #[arg(
        long = "scenario",
        value_name = "NAME",
        default_value = "",
        hide_default_value = true
    )]
    scenario: String,
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// List a workspace's scenarios.
    List { workspace: String },
    /// Show one scenario: its tags, routes, newest version, and what each
    /// environment serves of it.
    Get { workspace: String, name: String },
    /// Create an empty scenario; `route add --scenario` fills its working
    /// copy.
    Create {
        workspace: String,
        /// 1-63 characters of a-z, 0-9 and -.
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A tag: a plain word (`payments`) or pillars in brackets
        /// (`[Cloud][Reality]`). Repeatable.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Rename a scenario or change its description or tags.
    Update {
        workspace: String,
        name: String,
        /// A new name for the scenario (`default` keeps its name).
        #[arg(long, value_name = "NAME")]
        rename: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The new tags, comma separated; an empty value removes them all.
        #[arg(long, value_name = "TAGS", value_delimiter = ',')]
        tags: Option<Vec<String>>,
        /// A file (YAML or JSON) of contract checks that replace the
        /// scenario's: example requests and the answers they must get.
        /// Versions freeze them; promotions run them.
        #[arg(long, value_name = "FILE")]
        checks: Option<PathBuf>,
        /// Only update if the scenario still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a scenario, its working copy and its versions; refused while
    /// an environment serves one of its versions.
    Delete {
        workspace: String,
        name: String,
        /// Only delete if the scenario still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Freeze the working copy as the next version (or return the newest
    /// version when nothing changed since).
    Version {
        workspace: String,
        name: String,
        /// What changed.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List a scenario's versions, newest first.
    Versions { workspace: String, name: String },
    /// FOR ADMINS AND TESTS ONLY: serve a version in an environment after
    /// the first at once. It bypasses promotions (no gates, approvals or
    /// audit); do not build workflows on it.
    #[command(disable_version_flag = true)]
    Deploy {
        workspace: String,
        name: String,
        /// The environment to serve the version in; not the first of the
        /// promotion chain, which serves the working copies.
        #[arg(long = "env", value_name = "ENV")]
        env: String,
        /// The version to serve. Default: the newest.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Create a scenario from an OpenAPI 3 document (YAML or JSON): a route
    /// per operation, answering with its example or a body from its schema.
    ImportOpenapi {
        workspace: String,
        /// The new scenario's name.
        name: String,
        /// The OpenAPI document; `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        /// Default: the document's info.description.
        #[arg(long, default_value = "")]
        description: String,
        /// A tag for the new scenario. Repeatable.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Print a scenario as a scenario file (YAML; JSON with `--output
    /// json`): its name, description and tags, and its routes in mock-file
    /// form, which `scenario import` reads back.
    #[command(disable_version_flag = true)]
    Export {
        workspace: String,
        name: String,
        /// Export this version. Default: the working copy.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Create a scenario from a scenario file (as `scenario export` writes
    /// it), its routes as its working copy, all or none.
    Import {
        workspace: String,
        /// The scenario file; `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
        /// Create it under this name instead of the file's.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum PersonaCommand {
    /// List a workspace's personas, at their current versions.
    List { workspace: String },
    /// Show a persona: its current version, or an earlier one.
    #[command(disable_version_flag = true)]
    Get {
        workspace: String,
        name: String,
        /// The version to show. Default: the current one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Create a persona from a file holding a JSON object (JSON or YAML;
    /// `-` reads standard input).
    Create {
        workspace: String,
        /// 1-63 characters of a-z, 0-9 and -; requests without an
        /// x-mockplane-persona header get the persona `default`.
        name: String,
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Replace a persona's data; its version goes up by one and the
    /// earlier versions stay readable.
    Update {
        workspace: String,
        name: String,
        #[arg(long, short)]
        file: PathBuf,
        /// Only update if the persona still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a persona and its versions.
    Delete {
        workspace: String,
        name: String,
        /// Only delete if the persona still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

#[derive(Args)]
struct JournalArgs {
    workspace: String,
    /// Only requests to this environment.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    env: String,
    /// Only requests with this method.
    #[arg(long, default_value = "", hide_default_value = true)]
    method: String,
    /// Only requests whose whole path starts with this: `/w/<slug>/orders`.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    path: String,
    /// Only requests answered with this status.
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=599))]
    status: Option<u32>,
    /// Only requests no route answered.
    #[arg(long)]
    unmatched: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

#[derive(Subcommand)]
enum EnvCommand {
    /// List a workspace's environments: the promotion chain in order, then
    /// the others; the settings shown are those in force.
    List { workspace: String },
    /// Show one environment: its settings as set and in force.
    Get { workspace: String, env: String },
    /// Add an environment, on the promotion chain or off it.
    Create {
        workspace: String,
        name: String,
        /// Place on the promotion chain, 1 first (later ones move down);
        /// 0 keeps it off the chain.
        #[arg(long, default_value_t = 0)]
        position: u32,
        /// A settings file (YAML or JSON, `-` for standard input): `reality`,
        /// `latency`, `chaos`, `drift_budget`, `validation`,
        /// `reason_required`. What it leaves out is inherited.
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Rename an environment or change its settings.
    Update(EnvUpdate),
    /// Delete an environment and everything deployed to it. The active
    /// environment and the last one on the chain cannot be deleted.
    Delete {
        workspace: String,
        env: String,
        /// Only delete if the environment still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

#[derive(Args)]
struct EnvUpdate {
    workspace: String,
    env: String,
    /// A new name for the environment.
    #[arg(long, value_name = "NAME")]
    rename: Option<String>,
    /// A settings file (YAML or JSON, `-` for standard input) that replaces
    /// all the settings; what it leaves out is inherited.
    #[arg(long, short, conflicts_with_all = ["reality", "drift_budget", "validation", "reason_required", "inherit"])]
    file: Option<PathBuf>,
    /// The reality level: 1 (instant, perfect) to 5 (production-like).
    #[arg(long, value_name = "1-5", value_parser = clap::value_parser!(u8).range(1..=5))]
    reality: Option<u8>,
    /// Most breaking changes a promotion into it may carry; `unlimited`
    /// sets none here (the workspace's default, if any, then applies).
    #[arg(long, value_name = "N|unlimited", value_parser = parse_drift_budget)]
    drift_budget: Option<DriftBudget>,
    /// How strictly requests and promoted content are checked.
    #[arg(long, value_name = "off|warn|enforce", value_parser = ValidationMode::parse)]
    validation: Option<ValidationMode>,
    /// Whether acting on the environment needs a stated reason.
    #[arg(long, value_name = "true|false")]
    reason_required: Option<bool>,
    /// A setting to clear, so that it is inherited again: reality_level,
    /// latency, chaos, drift_budget, validation or reason_required.
    /// Repeatable.
    #[arg(long, value_name = "SETTING", value_parser = parse_setting)]
    inherit: Vec<SettingKey>,
    /// Only update if the environment still has this etag.
    #[arg(long, default_value = "")]
    etag: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DriftBudget {
    Limit(u32),
    Unlimited,
}

fn parse_drift_budget(raw: &str) -> Result<DriftBudget, String> {
    if raw == "unlimited" {
        return Ok(DriftBudget::Unlimited);
    }
    raw.parse()
        .map(DriftBudget::Limit)
        .map_err(|_| format!("{raw:?} is neither a number of breaking changes nor `unlimited`"))
}

fn parse_setting(raw: &str) -> Result<SettingKey, String> {
    // The settings file calls the reality level `reality`.
    let name = if raw == "reality" {
        "reality_level"
    } else {
        raw
    };
    SettingKey::parse(name).ok_or_else(|| {
        let names: Vec<&str> = SettingKey::ALL.iter().map(|k| k.as_str()).collect();
        format!("{raw:?} is not a setting; use one of {}", names.join(", "))
    })
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
    match cli.command {
        Command::Up(args) => return up::run(args, format).await,
        Command::Login(args) => return access::login(cli.server.as_deref(), args, format).await,
        Command::Logout => return access::logout(format).await,
        _ => {}
    }
    let credentials = session::credentials(cli.server.as_deref(), cli.token.as_deref()).await?;
    client::set_source(credentials.source);
    let (server, token) = (credentials.server.as_str(), credentials.token.as_deref());
    match cli.command {
        Command::Up(_) | Command::Login(_) | Command::Logout => Ok(()),
        Command::Workspace(command) => workspace(server, token, command, format).await,
        Command::Route(command) => route(server, token, command, format).await,
        Command::Env(command) => env(server, token, command, format).await,
        Command::Scenario(command) => scenario(server, token, command, format).await,
        Command::Persona(command) => persona(server, token, command, format).await,
        Command::Journal(args) => journal(server, token, args, format).await,
        Command::Whoami => access::whoami(server, token, format).await,
        Command::User(command) => access::user(server, token, command, format).await,
        Command::ServiceAccount(command) => {
            access::service_account(server, token, command, format).await
        }
        Command::ApiToken(command) => access::api_token(server, token, command, format).await,
        Command::Role(command) => access::role(server, token, command, format).await,
        Command::Member(command) => access::member(server, token, command, format).await,
        Command::Policy(command) => access::policy(server, token, command, format).await,
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

const WORKSPACE_COLUMNS: [&str; 5] = ["slug", "name", "routes", "id", "active_env"];
const ROUTE_COLUMNS: [&str; 5] = ["id", "method", "path", "status", "name"];
const SCENARIO_COLUMNS: [&str; 5] = ["name", "routes", "version", "deployed", "tags"];
const VERSION_COLUMNS: [&str; 5] = ["version", "created", "routes", "note", "hash"];
const PERSONA_COLUMNS: [&str; 5] = ["name", "version", "served", "updated", "data"];
const JOURNAL_COLUMNS: [&str; 7] = [
    "time", "env", "method", "path", "status", "outcome", "route",
];
const ENV_COLUMNS: [&str; 9] = [
    "name",
    "chain",
    "active",
    "reality",
    "latency",
    "chaos",
    "drift_budget",
    "validation",
    "reason",
];

/// Files are checked before connecting, as for routes.
async fn workspace(
    server: &str,
    token: Option<&str>,
    command: WorkspaceCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        WorkspaceCommand::Create {
            slug,
            name,
            description,
            active_env,
            chain,
            allow_skips,
            require_api_keys,
            defaults_file,
        } => {
            let environment_defaults = defaults_file.as_deref().map(envfile::load).transpose()?;
            let request = v1::CreateWorkspaceRequest {
                workspace: Some(v1::Workspace {
                    slug,
                    name,
                    description,
                    active_environment: active_env.unwrap_or_default(),
                    promotion_chain: chain
                        .unwrap_or_default()
                        .iter()
                        .map(|name| name.trim().to_owned())
                        .collect(),
                    allow_promotion_skips: allow_skips,
                    require_api_keys,
                    environment_defaults,
                    ..Default::default()
                }),
            };
            let created = connect()
                .await?
                .workspaces
                .create_workspace(request)
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &WorkspaceView::from(&created));
        }
        WorkspaceCommand::List => {
            let mut api = connect().await?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .workspaces
                    .list_workspaces(v1::ListWorkspacesRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.workspaces.iter().map(WorkspaceView::from));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::list(format, &all, &WORKSPACE_COLUMNS);
        }
        WorkspaceCommand::Get { workspace } => {
            let found = connect()
                .await?
                .workspaces
                .get_workspace(v1::GetWorkspaceRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &WorkspaceView::from(&found));
        }
        WorkspaceCommand::Update {
            workspace,
            slug,
            name,
            description,
            active_env,
            chain,
            allow_skips,
            require_api_keys,
            defaults_file,
            etag,
        } => {
            let defaults = defaults_file.as_deref().map(envfile::load).transpose()?;
            let mut paths = Vec::new();
            let mut patch = v1::Workspace::default();
            if let Some(slug) = slug {
                paths.push("slug".to_owned());
                patch.slug = slug;
            }
            if let Some(name) = name {
                paths.push("name".to_owned());
                patch.name = name;
            }
            if let Some(description) = description {
                paths.push("description".to_owned());
                patch.description = description;
            }
            if let Some(active_env) = active_env {
                paths.push("active_environment".to_owned());
                patch.active_environment = active_env;
            }
            if let Some(chain) = chain {
                paths.push("promotion_chain".to_owned());
                patch.promotion_chain = chain.iter().map(|name| name.trim().to_owned()).collect();
            }
            if let Some(allow_skips) = allow_skips {
                paths.push("allow_promotion_skips".to_owned());
                patch.allow_promotion_skips = allow_skips;
            }
            if let Some(require_api_keys) = require_api_keys {
                paths.push("require_api_keys".to_owned());
                patch.require_api_keys = require_api_keys;
            }
            if let Some(defaults) = defaults {
                paths.push("environment_defaults".to_owned());
                patch.environment_defaults = Some(defaults);
            }
            if paths.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give --slug, --name, --description, --active-env, --chain, --allow-skips, --require-api-keys or --defaults-file"
                ));
            }
            let updated = connect()
                .await?
                .workspaces
                .update_workspace(v1::UpdateWorkspaceRequest {
                    workspace,
                    patch: Some(patch),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &WorkspaceView::from(&updated));
            if require_api_keys == Some(true) && format == Format::Table {
                eprintln!(
                    "note: requests to {}'s mocks now need an API key of the environment they reach, in the x-mockplane-key header; \
                     `mockplane api-key create {} <env>` makes one",
                    updated.slug, updated.slug
                );
            }
        }
        WorkspaceCommand::Delete { workspace, etag } => {
            connect()
                .await?
                .workspaces
                .delete_workspace(v1::DeleteWorkspaceRequest {
                    workspace: workspace.clone(),
                    etag,
                })
                .await
                .map_err(status_error)?;
            done(format, serde_json::json!({ "deleted": workspace }));
        }
        WorkspaceCommand::ResetState { workspace } => {
            let reset = connect()
                .await?
                .workspaces
                .reset_state(v1::ResetStateRequest {
                    workspace: workspace.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            done(
                format,
                serde_json::json!({ "workspace": workspace, "state_epoch": reset.state_epoch }),
            );
        }
    }
    Ok(())
}

/// Files are checked before connecting: a broken file is reported as such,
/// whether or not the control plane is reachable.
async fn route(
    server: &str,
    token: Option<&str>,
    command: RouteCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        RouteCommand::Add {
            workspace,
            file,
            env,
            scenario,
        } => {
            let routes = mockfile::load(&file)?;
            mockfile::check_distinct(&routes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let mut api = connect().await?;
            let total = routes.len();
            let batches = total.div_ceil(MAX_ROUTES_PER_CALL);
            let mut created = Vec::with_capacity(total);
            for (number, batch) in routes.chunks(MAX_ROUTES_PER_CALL).enumerate() {
                let first = number * MAX_ROUTES_PER_CALL;
                let reply = api
                    .routes
                    .create_routes(v1::CreateRoutesRequest {
                        workspace: workspace.clone(),
                        routes: batch.to_vec(),
                        environment: env.name.clone(),
                        scenario: scenario.scenario.clone(),
                    })
                    .await
                    .map_err(|status| {
                        let error = status_error(status);
                        if first == 0 {
                            return error;
                        }
                        // Routes of this batch are numbered from its start.
                        anyhow!(
                            "routes 1–{first} of {total} were added; routes {}–{} were not (they start at routes[0] below): {error}",
                            first + 1,
                            first + batch.len(),
                        )
                    })?
                    .into_inner();
                created.extend(reply.routes);
                if batches > 1 {
                    eprintln!(
                        "added routes {}–{} of {total} (batch {} of {batches})",
                        first + 1,
                        first + batch.len(),
                        number + 1
                    );
                }
            }
            let views: Vec<RouteView> = created.iter().map(RouteView::from).collect();
            output::list(format, &views, &ROUTE_COLUMNS);
        }
        RouteCommand::List {
            workspace,
            scenario,
        } => {
            let routes = all_routes(&mut connect().await?, &workspace, &scenario.scenario).await?;
            let views: Vec<RouteView> = routes.iter().map(RouteView::from).collect();
            output::list(format, &views, &ROUTE_COLUMNS);
        }
        RouteCommand::Get {
            workspace,
            route_id,
        } => {
            let found = connect()
                .await?
                .routes
                .get_route(v1::GetRouteRequest {
                    workspace,
                    route_id,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &RouteView::from(&found));
        }
        RouteCommand::Update {
            workspace,
            route_id,
            file,
            etag,
            env,
        } => {
            let mut routes = mockfile::load(&file)?;
            if routes.len() != 1 {
                return Err(anyhow!(
                    "{} must hold exactly one route, it has {}",
                    file.display(),
                    routes.len()
                ));
            }
            let patch = routes.remove(0);
            // The file's route replaces the route whole: what it leaves
            // out (latency, chaos, state) is cleared.
            let paths = [
                "name",
                "method",
                "path",
                "request_match",
                "priority",
                "latency",
                "chaos",
                "state",
                "response",
            ]
            .map(str::to_owned)
            .to_vec();
            let updated = connect()
                .await?
                .routes
                .update_route(v1::UpdateRouteRequest {
                    workspace,
                    route_id,
                    patch: Some(patch),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    etag,
                    environment: env.name,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &RouteView::from(&updated));
        }
        RouteCommand::Remove {
            workspace,
            route_ids,
            file,
            all,
            env,
        } => {
            let wanted = file.as_deref().map(mockfile::load).transpose()?;
            let mut api = connect().await?;
            let ids = match (wanted, all) {
                (Some(wanted), _) => ids_matching(&mut api, &workspace, &wanted).await?,
                (None, true) => all_routes(&mut api, &workspace, "")
                    .await?
                    .into_iter()
                    .map(|r| r.id)
                    .collect(),
                (None, false) => route_ids,
            };
            if ids.is_empty() {
                return Err(anyhow!(
                    "no routes to remove: give route ids, --file or --all"
                ));
            }
            let mut deleted = 0;
            // The API takes at most 1000 ids per call.
            for batch in ids.chunks(1000) {
                deleted += api
                    .routes
                    .delete_routes(v1::DeleteRoutesRequest {
                        workspace: workspace.clone(),
                        route_ids: batch.to_vec(),
                        environment: env.name.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .deleted;
            }
            done(
                format,
                serde_json::json!({ "workspace": workspace, "deleted": deleted }),
            );
        }
    }
    Ok(())
}

/// Settings files are checked before connecting, as mock files are.
async fn env(
    server: &str,
    token: Option<&str>,
    command: EnvCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        EnvCommand::List { workspace } => {
            let listed = connect()
                .await?
                .environments
                .list_environments(v1::ListEnvironmentsRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<EnvironmentView> = listed
                .environments
                .iter()
                .map(EnvironmentView::from)
                .collect();
            output::list(format, &views, &ENV_COLUMNS);
        }
        EnvCommand::Get { workspace, env } => {
            let found = connect()
                .await?
                .environments
                .get_environment(v1::GetEnvironmentRequest {
                    workspace,
                    environment: env,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &EnvironmentView::from(&found));
        }
        EnvCommand::Create {
            workspace,
            name,
            position,
            file,
        } => {
            let settings = file.as_deref().map(envfile::load).transpose()?;
            let created = connect()
                .await?
                .environments
                .create_environment(v1::CreateEnvironmentRequest {
                    workspace,
                    environment: Some(v1::Environment {
                        name,
                        chain_position: position,
                        settings,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &EnvironmentView::from(&created));
        }
        EnvCommand::Update(update) => {
            let unlimited = update.drift_budget == Some(DriftBudget::Unlimited);
            let request = env_update_request(update)?;
            let updated = connect()
                .await?
                .environments
                .update_environment(request)
                .await
                .map_err(status_error)?
                .into_inner();
            let view = EnvironmentView::from(&updated);
            if unlimited && let Some(budget) = view.effective.drift_budget {
                eprintln!(
                    "note: {} sets no drift budget now, and inherits {budget} from the workspace's defaults \
                     (`mockplane workspace update --defaults-file` changes them)",
                    view.name
                );
            }
            output::one(format, &view);
        }
        EnvCommand::Delete {
            workspace,
            env,
            etag,
        } => {
            connect()
                .await?
                .environments
                .delete_environment(v1::DeleteEnvironmentRequest {
                    workspace: workspace.clone(),
                    environment: env.clone(),
                    etag,
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "deleted": env }),
            );
        }
    }
    Ok(())
}

/// Scenario and OpenAPI files are checked (read, for OpenAPI) before
/// connecting, as mock files are.
async fn scenario(
    server: &str,
    token: Option<&str>,
    command: ScenarioCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        ScenarioCommand::List { workspace } => {
            let listed = connect()
                .await?
                .scenarios
                .list_scenarios(v1::ListScenariosRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<ScenarioView> =
                listed.scenarios.iter().map(ScenarioView::from).collect();
            output::list(format, &views, &SCENARIO_COLUMNS);
        }
        ScenarioCommand::Get { workspace, name } => {
            let found = get_scenario(&mut connect().await?, &workspace, &name).await?;
            output::one(format, &ScenarioView::from(&found));
        }
        ScenarioCommand::Create {
            workspace,
            name,
            description,
            tags,
        } => {
            let created = connect()
                .await?
                .scenarios
                .create_scenario(v1::CreateScenarioRequest {
                    workspace,
                    scenario: Some(v1::Scenario {
                        name,
                        description,
                        tags,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &ScenarioView::from(&created));
        }
        ScenarioCommand::Update {
            workspace,
            name,
            rename,
            description,
            tags,
            checks,
            etag,
        } => {
            let mut paths = Vec::new();
            let mut patch = v1::Scenario::default();
            if let Some(file) = &checks {
                paths.push("checks".to_owned());
                patch.checks = load_checks(file)?;
            }
            if let Some(rename) = rename {
                paths.push("name".to_owned());
                patch.name = rename;
            }
            if let Some(description) = description {
                paths.push("description".to_owned());
                patch.description = description;
            }
            if let Some(tags) = tags {
                paths.push("tags".to_owned());
                patch.tags = tags
                    .iter()
                    .map(|tag| tag.trim().to_owned())
                    .filter(|tag| !tag.is_empty())
                    .collect();
            }
            if paths.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give --rename, --description, --tags or --checks"
                ));
            }
            let updated = connect()
                .await?
                .scenarios
                .update_scenario(v1::UpdateScenarioRequest {
                    workspace,
                    scenario: name,
                    patch: Some(patch),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &ScenarioView::from(&updated));
        }
        ScenarioCommand::Delete {
            workspace,
            name,
            etag,
        } => {
            connect()
                .await?
                .scenarios
                .delete_scenario(v1::DeleteScenarioRequest {
                    workspace: workspace.clone(),
                    scenario: name.clone(),
                    etag,
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "deleted": name }),
            );
        }
        ScenarioCommand::Version {
            workspace,
            name,
            note,
        } => {
            let version = connect()
                .await?
                .scenarios
                .create_version(v1::CreateVersionRequest {
                    workspace,
                    scenario: name,
                    note,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &VersionView::from(&version));
        }
        ScenarioCommand::Versions { workspace, name } => {
            let listed = connect()
                .await?
                .scenarios
                .list_versions(v1::ListVersionsRequest {
                    workspace,
                    scenario: name,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<VersionView> = listed.versions.iter().map(VersionView::from).collect();
            output::list(format, &views, &VERSION_COLUMNS);
        }
        ScenarioCommand::Deploy {
            workspace,
            name,
            env,
            version,
        } => {
            let deployed = connect()
                .await?
                .scenarios
                .admin_deploy_version(v1::AdminDeployVersionRequest {
                    workspace,
                    scenario: name,
                    version: version.unwrap_or(0),
                    environment: env,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &DeploymentView::from(&deployed));
        }
        ScenarioCommand::ImportOpenapi {
            workspace,
            name,
            file,
            description,
            tags,
        } => {
            let (document, _) = mockfile::read(&file, "the OpenAPI document")?;
            if document.trim().is_empty() {
                return Err(anyhow!("{} is empty", file.display()));
            }
            let imported = connect()
                .await?
                .scenarios
                .import_open_api(v1::ImportOpenApiRequest {
                    workspace,
                    scenario: Some(v1::Scenario {
                        name,
                        description,
                        tags,
                        ..Default::default()
                    }),
                    document,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_import(format, &imported);
        }
        ScenarioCommand::Export {
            workspace,
            name,
            version,
        } => {
            let mut api = connect().await?;
            let found = get_scenario(&mut api, &workspace, &name).await?;
            let (routes, checks) = match version {
                None => (
                    all_routes(&mut api, &workspace, &found.name).await?,
                    found.checks.clone(),
                ),
                Some(number) => {
                    let version = api
                        .scenarios
                        .get_version(v1::GetVersionRequest {
                            workspace,
                            scenario: name,
                            version: number,
                        })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    (version.routes, version.checks)
                }
            };
            let file = scenariofile::export(&found, &routes, &checks)
                .with_context(|| format!("cannot export scenario {}", found.name))?;
            match format {
                Format::Json => output::json(&file),
                Format::Table => out!("{}", serde_yaml::to_string(&file)?),
            }
        }
        ScenarioCommand::Import {
            workspace,
            file,
            name,
        } => {
            let (scenario, routes) = scenariofile::load(&file, name.as_deref())?;
            let imported = connect()
                .await?
                .scenarios
                .import_scenario(v1::ImportScenarioRequest {
                    workspace,
                    scenario: Some(scenario),
                    routes,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_import(format, &imported);
        }
    }
    Ok(())
}

async fn get_scenario(api: &mut Api, workspace: &str, name: &str) -> anyhow::Result<v1::Scenario> {
    Ok(api
        .scenarios
        .get_scenario(v1::GetScenarioRequest {
            workspace: workspace.to_owned(),
            scenario: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner())
}

/// A new scenario and its routes: a line and the routes' table, or
/// `{scenario, routes}` as JSON.
fn print_import(format: Format, imported: &v1::ImportOpenApiResponse) {
    let scenario = ScenarioView::from(&imported.scenario.clone().unwrap_or_default());
    let routes: Vec<RouteView> = imported.routes.iter().map(RouteView::from).collect();
    match format {
        Format::Json => output::json(&serde_json::json!({
            "scenario": scenario,
            "routes": routes,
        })),
        Format::Table => {
            outln!("scenario {}: {} routes", scenario.name, routes.len());
            output::list(format, &routes, &ROUTE_COLUMNS);
        }
    }
}

/// Persona files are checked before connecting, as mock files are.
async fn persona(
    server: &str,
    token: Option<&str>,
    command: PersonaCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        PersonaCommand::List { workspace } => {
            let listed = connect()
                .await?
                .personas
                .list_personas(v1::ListPersonasRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<PersonaView> = listed.personas.iter().map(PersonaView::from).collect();
            output::list(format, &views, &PERSONA_COLUMNS);
        }
        PersonaCommand::Get {
            workspace,
            name,
            version,
        } => {
            let found = connect()
                .await?
                .personas
                .get_persona(v1::GetPersonaRequest {
                    workspace,
                    persona: name,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&found));
        }
        PersonaCommand::Create {
            workspace,
            name,
            file,
        } => {
            let data = personafile::load(&file)?;
            let created = connect()
                .await?
                .personas
                .create_persona(v1::CreatePersonaRequest {
                    workspace,
                    persona: Some(v1::Persona {
                        name,
                        data,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&created));
        }
        PersonaCommand::Update {
            workspace,
            name,
            file,
            etag,
        } => {
            let data = personafile::load(&file)?;
            let updated = connect()
                .await?
                .personas
                .update_persona(v1::UpdatePersonaRequest {
                    workspace,
                    persona: name,
                    data,
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&updated));
        }
        PersonaCommand::Delete {
            workspace,
            name,
            etag,
        } => {
            connect()
                .await?
                .personas
                .delete_persona(v1::DeletePersonaRequest {
                    workspace: workspace.clone(),
                    persona: name.clone(),
                    etag,
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "deleted": name }),
            );
        }
    }
    Ok(())
}

async fn journal(
    server: &str,
    token: Option<&str>,
    args: JournalArgs,
    format: Format,
) -> anyhow::Result<()> {
    let listed = Api::connect(server, token)
        .await?
        .journal
        .list_requests(v1::ListRequestsRequest {
            workspace: args.workspace,
            environment: args.env,
            method: args.method,
            path_prefix: args.path,
            status: args.status.unwrap_or(0),
            unmatched_only: args.unmatched,
            since: None,
            limit: args.limit,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !listed.unreachable_nodes.is_empty() {
        eprintln!(
            "note: {} of {} nodes did not answer, their requests are missing: {}",
            listed.unreachable_nodes.len(),
            listed.nodes_asked,
            listed.unreachable_nodes.join(", ")
        );
    }
    let views: Vec<JournalView> = listed.entries.iter().map(JournalView::from).collect();
    output::list(format, &views, &JOURNAL_COLUMNS);
    Ok(())
}

/// The request `env update` sends: a mask path per change; a setting named
/// by `--inherit` is in the mask with no value, so it is inherited again.
fn env_update_request(update: EnvUpdate) -> anyhow::Result<v1::UpdateEnvironmentRequest> {
    let mut paths = Vec::new();
    let mut patch = v1::Environment::default();
    if let Some(name) = update.rename {
        paths.push("name".to_owned());
        patch.name = name;
    }
    if let Some(file) = &update.file {
        paths.push("settings".to_owned());
        patch.settings = Some(envfile::load(file)?);
    } else {
        let mut values = EnvSettings::default();
        let mut keys = Vec::new();
        if let Some(level) = update.reality {
            values.reality = Some(level);
            keys.push(SettingKey::Reality);
        }
        if let Some(budget) = update.drift_budget {
            if let DriftBudget::Limit(limit) = budget {
                values.drift_budget = Some(limit);
            }
            keys.push(SettingKey::DriftBudget);
        }
        if let Some(mode) = update.validation {
            values.validation = Some(mode);
            keys.push(SettingKey::Validation);
        }
        if let Some(required) = update.reason_required {
            values.reason_required = Some(required);
            keys.push(SettingKey::ReasonRequired);
        }
        let set = keys.len();
        for key in update.inherit {
            if keys[..set].contains(&key) {
                return Err(anyhow!(
                    "--inherit {} clears the setting another option sets; give one of them",
                    key.as_str()
                ));
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        // Only fields a flag sets can be wrong: name the flag.
        values
            .check()
            .map_err(|e| anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
        if !keys.is_empty() {
            paths.extend(keys.iter().map(|key| format!("settings.{}", key.as_str())));
            patch.settings = Some(mockplane_proto::convert::env_settings(&values));
        }
    }
    if paths.is_empty() {
        return Err(anyhow!(
            "nothing to change: give --rename, --file, --reality, --drift-budget, --validation, --reason-required or --inherit"
        ));
    }
    Ok(v1::UpdateEnvironmentRequest {
        workspace: update.workspace,
        environment: update.env,
        patch: Some(patch),
        update_mask: Some(prost_types::FieldMask { paths }),
        etag: update.etag,
    })
}

/// A workspace's routes, in the order they were created; with a
/// `scenario`, only that scenario's working copy.
async fn all_routes(
    api: &mut Api,
    workspace: &str,
    scenario: &str,
) -> anyhow::Result<Vec<v1::Route>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api
            .routes
            .list_routes(v1::ListRoutesRequest {
                workspace: workspace.to_owned(),
                page_size: 1000,
                page_token,
                scenario: scenario.to_owned(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(page.routes);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// The ids of the workspace's routes that match the same requests as a
/// wanted route (method, path shape, matchers and priority). Every wanted
/// route must be there.
async fn ids_matching(
    api: &mut Api,
    workspace: &str,
    wanted: &[v1::Route],
) -> anyhow::Result<Vec<String>> {
    let existing = all_routes(api, workspace, "").await?;
    let key = |route: &v1::Route| {
        mockplane_proto::convert::parse_route(route)
            .ok()
            .map(|spec| spec.match_key())
    };
    let existing: Vec<(Option<String>, &v1::Route)> =
        existing.iter().map(|route| (key(route), route)).collect();
    wanted
        .iter()
        .enumerate()
        .map(|(index, route)| {
            existing
                .iter()
                .find(|(existing, _)| existing.is_some() && *existing == key(route))
                .map(|(_, r)| r.id.clone())
                .ok_or_else(|| {
                    anyhow!(
                        "routes[{index}]: workspace {workspace} has no route {} {}",
                        route.method,
                        route.path
                    )
                })
        })
        .collect()
}

/// Reads a contract checks file: a list of checks (YAML or JSON), each
/// checked with the field that is wrong named.
fn load_checks(path: &std::path::Path) -> anyhow::Result<Vec<v1::ContractCheck>> {
    let (text, _) = mockfile::read(path, "checks")?;
    mockplane_shared::nesting::check(&text)
        .map_err(|e| anyhow!("{} is not a valid checks file: it {e}", path.display()))?;
    let checks: Vec<mockplane_shared::contract::ContractCheck> = serde_yaml::from_str(&text)
        .map_err(|e| anyhow!("{} is not a valid checks file: {e}", path.display()))?;
    mockplane_shared::contract::check_all(&checks)
        .map_err(|e| anyhow!("{} is not a valid checks file: {e}", path.display()))?;
    Ok(checks
        .iter()
        .map(mockplane_proto::convert::contract_check)
        .collect())
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
