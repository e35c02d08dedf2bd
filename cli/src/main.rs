//! `mockplane`: the admin CLI. It speaks only the control plane's gRPC API;
//! `mockplane up` also runs a whole local Mockplane.
#![forbid(unsafe_code)]

mod client;
mod envfile;
mod mockfile;
mod output;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use mockplane_proto::v1;
use mockplane_shared::EnvSettings;
use mockplane_shared::environment::{SettingKey, ValidationMode};

use crate::client::{Api, status_error};
use crate::output::{EnvironmentView, Format, RouteView, WorkspaceView};

/// Mockplane's admin CLI: manage workspaces and their mocks over the gRPC API.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// The control plane's gRPC address.
    #[arg(
        long,
        global = true,
        env = "MOCKPLANE_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// API token; the control plane prints one on its first run.
    #[arg(long, global = true, env = "MOCKPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How to print results.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Format,
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
    /// Run a local Mockplane: a control plane on SQLite and one data-plane node.
    Up(up::UpArgs),
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
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Add the routes of a YAML or JSON mock file, all or none.
    ///
    /// A mock file lists routes: `routes: [{name, method, path, response:
    /// {status, headers, body | json}}]`. `-` reads standard input.
    Add {
        workspace: String,
        #[arg(long, short)]
        file: PathBuf,
        #[command(flatten)]
        env: EnvArg,
    },
    /// List a workspace's routes.
    List { workspace: String },
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
    match cli.command {
        Command::Up(args) => up::run(args, format).await,
        Command::Workspace(command) => {
            workspace(&cli.server, cli.token.as_deref(), command, format).await
        }
        Command::Route(command) => route(&cli.server, cli.token.as_deref(), command, format).await,
        Command::Env(command) => env(&cli.server, cli.token.as_deref(), command, format).await,
    }
}

const WORKSPACE_COLUMNS: [&str; 5] = ["slug", "name", "routes", "id", "active_env"];
const ROUTE_COLUMNS: [&str; 5] = ["id", "method", "path", "status", "name"];
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
        } => {
            let request = v1::CreateWorkspaceRequest {
                workspace: Some(v1::Workspace {
                    slug,
                    name,
                    description,
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
            if let Some(defaults) = defaults {
                paths.push("environment_defaults".to_owned());
                patch.environment_defaults = Some(defaults);
            }
            if paths.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give --slug, --name, --description, --active-env, --chain, --allow-skips or --defaults-file"
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
        } => {
            let routes = mockfile::load(&file)?;
            let created = connect()
                .await?
                .routes
                .create_routes(v1::CreateRoutesRequest {
                    workspace,
                    routes,
                    environment: env.name,
                    scenario: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<RouteView> = created.routes.iter().map(RouteView::from).collect();
            output::list(format, &views, &ROUTE_COLUMNS);
        }
        RouteCommand::List { workspace } => {
            let routes = all_routes(&mut connect().await?, &workspace).await?;
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
            let paths = [
                "name",
                "method",
                "path",
                "request_match",
                "priority",
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
                (None, true) => all_routes(&mut api, &workspace)
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

async fn all_routes(api: &mut Api, workspace: &str) -> anyhow::Result<Vec<v1::Route>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api
            .routes
            .list_routes(v1::ListRoutesRequest {
                workspace: workspace.to_owned(),
                page_size: 1000,
                page_token,
                scenario: String::new(),
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
    let existing = all_routes(api, workspace).await?;
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
                println!("{}", parts.join(", "));
            }
        }
    }
}
