//! `mockplane workspace`: create, list, show, change, delete workspaces and
//! reset their state.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{self, Format, WorkspaceView};
use crate::{done, envfile};

#[derive(Subcommand)]
pub(crate) enum WorkspaceCommand {
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

pub(crate) const WORKSPACE_COLUMNS: [&str; 5] = ["slug", "name", "routes", "id", "active_env"];

/// Files are checked before connecting, as for routes.
pub(crate) async fn workspace(
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
