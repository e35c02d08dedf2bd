//! `mockplane scenario`: scenarios, their versions, deployments, contract
//! checks, OpenAPI and scenario-file imports and exports.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{self, DeploymentView, Format, RouteView, ScenarioView, VersionView};
use crate::routes::*;
use crate::{done, mockfile, scenariofile};

#[derive(Subcommand)]
pub(crate) enum ScenarioCommand {
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

pub(crate) const SCENARIO_COLUMNS: [&str; 5] = ["name", "routes", "version", "deployed", "tags"];

pub(crate) const VERSION_COLUMNS: [&str; 5] = ["version", "created", "routes", "note", "hash"];

/// Scenario and OpenAPI files are checked (read, for OpenAPI) before
/// connecting, as mock files are.
pub(crate) async fn scenario(
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

pub(crate) async fn get_scenario(
    api: &mut Api,
    workspace: &str,
    name: &str,
) -> anyhow::Result<v1::Scenario> {
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
pub(crate) fn print_import(format: Format, imported: &v1::ImportOpenApiResponse) {
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

/// Reads a contract checks file: a list of checks (YAML or JSON), each
/// checked with the field that is wrong named.
pub(crate) fn load_checks(path: &std::path::Path) -> anyhow::Result<Vec<v1::ContractCheck>> {
    let (text, _) = mockfile::read(path, "checks")?;
    mockplane_shared::model::nesting::check(&text)
        .map_err(|e| anyhow!("{} is not a valid checks file: it {e}", path.display()))?;
    let checks: Vec<mockplane_shared::model::checks::ContractCheck> =
        serde_yaml::from_str(&text)
            .map_err(|e| anyhow!("{} is not a valid checks file: {e}", path.display()))?;
    mockplane_shared::model::checks::check_all(&checks)
        .map_err(|e| anyhow!("{} is not a valid checks file: {e}", path.display()))?;
    Ok(checks
        .iter()
        .map(mockplane_proto::convert::contract_check)
        .collect())
}
