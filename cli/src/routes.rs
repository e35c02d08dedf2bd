//! `mockplane route`: a workspace's mocks, added from mock files (in batches
//! of what one call takes), listed, shown, replaced and removed.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use mockplane_proto::v1;
use mockplane_shared::model::route::MAX_ROUTES_PER_CALL;

use crate::client::{Api, status_error};
use crate::output::{self, Format, RouteView};
use crate::{done, mockfile};

#[derive(Subcommand)]
pub(crate) enum RouteCommand {
    /// Add the routes of a YAML or JSON mock file: all or none, per batch
    /// of 1000 routes (one call each).
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
pub(crate) struct EnvArg {
    /// The environment the change is meant for; only the first of the
    /// promotion chain can be edited, the others get changes by promotion.
    /// Default: the working copy.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    pub(crate) name: String,
}

/// The scenario whose working copy a route command is about.
#[derive(Args)]
pub(crate) struct ScenarioArg {
    /// The scenario whose working copy to use. Default: when adding,
    /// `default`; when listing, every scenario.
    #[arg(
        long = "scenario",
        value_name = "NAME",
        default_value = "",
        hide_default_value = true
    )]
    pub(crate) scenario: String,
}

pub(crate) const ROUTE_COLUMNS: [&str; 5] = ["id", "method", "path", "status", "name"];

/// Files are checked before connecting: a broken file is reported as such,
/// whether or not the control plane is reachable.
pub(crate) async fn route(
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

/// A workspace's routes, in the order they were created; with a
/// `scenario`, only that scenario's working copy.
pub(crate) async fn all_routes(
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
pub(crate) async fn ids_matching(
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
