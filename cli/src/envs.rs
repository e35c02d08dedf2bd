//! `mockplane env`: a workspace's environments and their settings.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use mockplane_proto::v1;
use mockplane_shared::EnvSettings;
use mockplane_shared::model::environment::{Limits, SettingKey, ValidationMode};

use crate::client::{Api, status_error};
use crate::output::{self, EnvironmentView, Format};
use crate::{done, envfile};

#[derive(Subcommand)]
pub(crate) enum EnvCommand {
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
pub(crate) struct EnvUpdate {
    pub(crate) workspace: String,
    pub(crate) env: String,
    /// A new name for the environment.
    #[arg(long, value_name = "NAME")]
    pub(crate) rename: Option<String>,
    /// A settings file (YAML or JSON, `-` for standard input) that replaces
    /// all the settings; what it leaves out is inherited.
    #[arg(long, short, conflicts_with_all = ["reality", "drift_budget", "validation", "reason_required", "rate_limit", "burst", "max_concurrent", "inherit"])]
    pub(crate) file: Option<PathBuf>,
    /// The reality level: 1 (instant, perfect) to 5 (production-like).
    #[arg(long, value_name = "1-5", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) reality: Option<u8>,
    /// Most breaking changes a promotion into it may carry; `unlimited`
    /// sets none here (the workspace's default, if any, then applies).
    #[arg(long, value_name = "N|unlimited", value_parser = parse_drift_budget)]
    pub(crate) drift_budget: Option<DriftBudget>,
    /// How strictly requests and promoted content are checked.
    #[arg(long, value_name = "off|warn|enforce", value_parser = ValidationMode::parse)]
    pub(crate) validation: Option<ValidationMode>,
    /// Whether acting on the environment needs a stated reason.
    #[arg(long, value_name = "true|false")]
    pub(crate) reason_required: Option<bool>,
    /// Requests per second each node admits (a token bucket); `none` lifts
    /// the rate limit (and its burst). The limits not given stay as they are.
    #[arg(long, value_name = "N|none", value_parser = parse_limit)]
    pub(crate) rate_limit: Option<LimitArg>,
    /// Requests the rate limit's bucket holds for a burst (default: one
    /// second's worth); `none` goes back to that.
    #[arg(long, value_name = "N|none", value_parser = parse_limit)]
    pub(crate) burst: Option<LimitArg>,
    /// Requests each node answers at once; `none` lifts the limit.
    #[arg(long, value_name = "N|none", value_parser = parse_limit)]
    pub(crate) max_concurrent: Option<LimitArg>,
    /// The environment's own limits before this update, which the limit
    /// options change (filled in from the server).
    #[arg(skip)]
    pub(crate) current_limits: Limits,
    /// A setting to clear, so that it is inherited again: reality_level,
    /// latency, chaos, drift_budget, validation, reason_required or limits.
    /// Repeatable.
    #[arg(long, value_name = "SETTING", value_parser = parse_setting)]
    pub(crate) inherit: Vec<SettingKey>,
    /// Only update if the environment still has this etag.
    #[arg(long, default_value = "")]
    pub(crate) etag: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DriftBudget {
    Limit(u32),
    Unlimited,
}

pub(crate) fn parse_drift_budget(raw: &str) -> Result<DriftBudget, String> {
    if raw == "unlimited" {
        return Ok(DriftBudget::Unlimited);
    }
    raw.parse()
        .map(DriftBudget::Limit)
        .map_err(|_| format!("{raw:?} is neither a number of breaking changes nor `unlimited`"))
}

/// A limit option's value: a number, or `none` (no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LimitArg(pub(crate) Option<u32>);

pub(crate) fn parse_limit(raw: &str) -> Result<LimitArg, String> {
    if raw == "none" {
        return Ok(LimitArg(None));
    }
    raw.parse()
        .map(|n| LimitArg(Some(n)))
        .map_err(|_| format!("{raw:?} is neither a whole number nor `none`"))
}

impl EnvUpdate {
    /// Whether a limit option is given (the environment's own limits are
    /// then read first, so the others stay).
    pub(crate) fn changes_limits(&self) -> bool {
        self.rate_limit.is_some() || self.burst.is_some() || self.max_concurrent.is_some()
    }
}

pub(crate) fn parse_setting(raw: &str) -> Result<SettingKey, String> {
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

pub(crate) const ENV_COLUMNS: [&str; 10] = [
    "name",
    "chain",
    "active",
    "reality",
    "latency",
    "chaos",
    "drift_budget",
    "validation",
    "reason",
    "limits",
];

/// Settings files are checked before connecting, as mock files are.
pub(crate) async fn env(
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
        EnvCommand::Update(mut update) => {
            let unlimited = update.drift_budget == Some(DriftBudget::Unlimited);
            let mut api = connect().await?;
            if update.changes_limits() {
                let current = api
                    .environments
                    .get_environment(v1::GetEnvironmentRequest {
                        workspace: update.workspace.clone(),
                        environment: update.env.clone(),
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                update.current_limits = current
                    .settings
                    .as_ref()
                    .and_then(|s| s.limits.as_ref())
                    .and_then(|l| mockplane_proto::convert::parse_limits(l).ok())
                    .unwrap_or_default();
            }
            let request = env_update_request(update)?;
            let updated = api
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
pub(crate) fn env_update_request(
    update: EnvUpdate,
) -> anyhow::Result<v1::UpdateEnvironmentRequest> {
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
        if update.rate_limit.is_some() || update.burst.is_some() || update.max_concurrent.is_some()
        {
            let mut limits = update.current_limits;
            if let Some(LimitArg(rate)) = update.rate_limit {
                limits.requests_per_second = rate;
                if rate.is_none() {
                    limits.burst = None;
                }
            }
            if let Some(LimitArg(burst)) = update.burst {
                limits.burst = burst;
            }
            if let Some(LimitArg(max)) = update.max_concurrent {
                limits.max_concurrent = max;
            }
            values.limits = Some(limits);
            keys.push(SettingKey::Limits);
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
        values.check().map_err(|e| {
            let flag = match e.field.as_str() {
                "limits.requests_per_second" => "rate-limit".to_owned(),
                "limits.burst" => "burst".to_owned(),
                "limits.max_concurrent" => "max-concurrent".to_owned(),
                field => field.replace('_', "-"),
            };
            anyhow!("--{flag}: {}", e.message)
        })?;
        if !keys.is_empty() {
            paths.extend(keys.iter().map(|key| format!("settings.{}", key.as_str())));
            patch.settings = Some(mockplane_proto::convert::env_settings(&values));
        }
    }
    if paths.is_empty() {
        return Err(anyhow!(
            "nothing to change: give --rename, --file, --reality, --drift-budget, --validation, --reason-required, --rate-limit, --burst, --max-concurrent or --inherit"
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
