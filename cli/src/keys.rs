//! Data-plane API keys (what requests to the mocks present in
//! `x-mockplane-key`) and the usage the nodes report.

use anyhow::anyhow;
use clap::{Args, Subcommand};
use mockplane_proto::v1;

use crate::audit::Window;
use crate::client::{Api, status_error};
use crate::done;
use crate::output::{self, ApiKeyView, Format, UsageView};

/// The request header that carries a key.
const KEY_HEADER: &str = "x-mockplane-key";

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Make a key that opens one environment of a workspace; its secret
    /// (`mpk_…`) is printed this once.
    Create {
        workspace: String,
        /// The one environment the key opens.
        env: String,
        /// What the key is for, 1 to 200 characters. Default: `<env> key`
        /// (`<env> test key` with --test).
        #[arg(long)]
        name: Option<String>,
        /// Seconds until the key expires; default: never (a test key
        /// needs one, at most 604800, 7 days).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
        ttl_secs: Option<u32>,
        /// A temporary test key for an environment after the first of the
        /// chain: its requests are not counted as usage. Needs --reason
        /// (who it is for and why) and --ttl-secs.
        #[arg(long)]
        test: bool,
    },
    /// List a workspace's keys, newest first (never their secrets).
    List {
        workspace: String,
        /// Only this environment's keys. Default: every environment whose
        /// keys you may read.
        #[arg(
            long = "env",
            value_name = "ENV",
            default_value = "",
            hide_default_value = true
        )]
        env: String,
    },
    /// Revoke a key, by id: nodes refuse it within a second or so.
    Revoke { workspace: String, id: String },
}

#[derive(Args)]
pub struct UsageArgs {
    workspace: String,
    /// Only this environment.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    env: String,
    #[command(flatten)]
    window: Window,
}

const KEY_COLUMNS: [&str; 8] = [
    "id",
    "environment",
    "name",
    "hint",
    "test",
    "expires",
    "expired",
    "last_used",
];
const USAGE_COLUMNS: [&str; 4] = [
    "environment",
    "requests",
    "test_requests",
    "limited_requests",
];

/// `reason` is the global --reason: a test key states it in the request
/// (normal keys take none there; it goes with the call for the audit
/// trail all the same).
pub async fn api_key(
    server: &str,
    token: Option<&str>,
    command: ApiKeyCommand,
    reason: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        ApiKeyCommand::Create {
            workspace,
            env,
            name,
            ttl_secs,
            test,
        } => {
            let name = name.unwrap_or_else(|| {
                if test {
                    format!("{env} test key")
                } else {
                    format!("{env} key")
                }
            });
            let created = connect()
                .await?
                .api_keys
                .create_api_key(v1::CreateApiKeyRequest {
                    workspace: workspace.clone(),
                    environment: env,
                    name,
                    ttl_seconds: ttl_secs.unwrap_or(0),
                    test,
                    reason: if test {
                        reason.unwrap_or_default().trim().to_owned()
                    } else {
                        String::new()
                    },
                })
                .await
                .map_err(create_error)?
                .into_inner();
            let key = created.key.unwrap_or_default();
            let mut view = ApiKeyView::from(&key);
            view.secret = Some(created.secret);
            output::one(format, &view);
            if format == Format::Table {
                eprintln!(
                    "note: the secret is not shown again (the control plane keeps only its hash); store it now. \
                     Requests send it in the {KEY_HEADER} header, e.g. \
                     curl -H '{KEY_HEADER}: <secret>' http://<node>/w/{workspace}/… \
                     (and -H 'x-mockplane-env: {}' unless it is the workspace's active environment)",
                    key.environment
                );
            }
        }
        ApiKeyCommand::List { workspace, env } => {
            let listed = connect()
                .await?
                .api_keys
                .list_api_keys(v1::ListApiKeysRequest {
                    workspace,
                    environment: env,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<ApiKeyView> = listed.keys.iter().map(ApiKeyView::from).collect();
            output::list(format, &views, &KEY_COLUMNS);
        }
        ApiKeyCommand::Revoke { workspace, id } => {
            if id.trim().is_empty() {
                return Err(anyhow!(
                    "the key id is empty; `mockplane api-key list {workspace}` shows the ids"
                ));
            }
            connect()
                .await?
                .api_keys
                .revoke_api_key(v1::RevokeApiKeyRequest {
                    workspace: workspace.clone(),
                    id: id.trim().to_owned(),
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "revoked": id.trim() }),
            );
        }
    }
    Ok(())
}

/// The server's words for a refused key, and the option that fixes it:
/// the API names request fields, the CLI options.
fn create_error(status: tonic::Status) -> anyhow::Error {
    let message = status.message();
    let hint = if status.code() != tonic::Code::InvalidArgument {
        None
    } else if message.starts_with("reason:") {
        Some("state who the test key is for and why with --reason \"…\" (or MOCKPLANE_REASON)")
    } else if message.starts_with("ttl_seconds:") {
        Some("give the key's life in seconds with --ttl-secs")
    } else if message.starts_with("name:") {
        Some("say what the key is for with --name")
    } else {
        None
    };
    let error = status_error(status);
    match hint {
        Some(hint) => anyhow!("{error}\nhint: {hint}"),
        None => error,
    }
}

pub async fn usage(
    server: &str,
    token: Option<&str>,
    args: UsageArgs,
    format: Format,
) -> anyhow::Result<()> {
    let (since, until) = args.window.timestamps()?;
    let found = Api::connect(server, token)
        .await?
        .usage
        .get_usage(v1::GetUsageRequest {
            workspace: args.workspace.clone(),
            environment: args.env.clone(),
            since,
            until,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let view = UsageView::new(&args.workspace, &found);
    if view.environments.is_empty() && !args.env.is_empty() {
        eprintln!(
            "note: workspace {} has no environment `{}`, and no usage was recorded under that name in the window",
            args.workspace, args.env
        );
    }
    match format {
        Format::Json => output::json(&view),
        Format::Table => {
            output::list(format, &view.environments, &USAGE_COLUMNS);
            let from = if since.is_none() {
                "the beginning".to_owned()
            } else {
                view.since.clone()
            };
            outln!(
                "window: from {from} up to {} (excluded), in whole minutes",
                view.until
            );
        }
    }
    Ok(())
}
