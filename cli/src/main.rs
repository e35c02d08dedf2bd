//! `mockplane`: the admin CLI. It speaks only the control plane's gRPC API;
//! `mockplane up` also runs a whole local Mockplane.
#![forbid(unsafe_code)]

mod client;
mod mockfile;
mod output;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{Format, RouteView, WorkspaceView};

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
    /// Change a workspace's slug, name or description.
    Update {
        workspace: String,
        #[arg(long)]
        slug: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
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
    },
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
            let api = Api::connect(&cli.server, cli.token.as_deref()).await?;
            workspace(api, command, format).await
        }
        Command::Route(command) => route(&cli.server, cli.token.as_deref(), command, format).await,
    }
}

const WORKSPACE_COLUMNS: [&str; 4] = ["slug", "name", "routes", "id"];
const ROUTE_COLUMNS: [&str; 5] = ["id", "method", "path", "status", "name"];

async fn workspace(mut api: Api, command: WorkspaceCommand, format: Format) -> anyhow::Result<()> {
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
            let created = api
                .workspaces
                .create_workspace(request)
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &WorkspaceView::from(&created));
        }
        WorkspaceCommand::List => {
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
            let found = api
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
            etag,
        } => {
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
            if paths.is_empty() {
                return Err(anyhow!(
                    "nothing to change: give --slug, --name or --description"
                ));
            }
            let updated = api
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
            api.workspaces
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
        RouteCommand::Add { workspace, file } => {
            let routes = mockfile::load(&file)?;
            let created = connect()
                .await?
                .routes
                .create_routes(v1::CreateRoutesRequest {
                    workspace,
                    routes,
                    environment: String::new(),
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
                    environment: String::new(),
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
                        environment: String::new(),
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
