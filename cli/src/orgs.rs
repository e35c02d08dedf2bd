//! `mockplane org`: orgs, their display name, settings and quotas, and
//! their deletion.

use clap::Subcommand;
use mockplane_proto::v1;
use serde::Serialize;

use crate::client::{Api, status_error};
use crate::output::{self, Format};
use crate::{prompt, session};

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an org and its first owner (platform admins): prints the
    /// owner's one-time password once; they change it at the first login.
    Create {
        /// The org's unique name: lowercase letters, digits and '-'.
        name: String,
        /// The e-mail of its first owner.
        #[arg(long, value_name = "EMAIL")]
        owner: String,
        /// How people see the org (at most 200 characters).
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// List orgs: every org for a platform admin, yours for anyone else.
    List,
    /// Show an org: its settings, quotas and what it uses of them.
    Get {
        /// The org's name or id (default: yours; platform admins may name
        /// any).
        org: Option<String>,
    },
    /// Change an org's display name or settings (owners); its quotas
    /// (platform admins only).
    Update(OrgUpdate),
    /// Delete an org and everything in it, for the reason given with
    /// --reason: its workspaces, people and keys go at once and nodes stop
    /// serving them. Its audit trail keeps the hash chain and this
    /// deletion; the rest of its events are pruned. Owners of the org or
    /// platform admins; it cannot be undone.
    Delete {
        /// The org's name or id (required: no org is deleted by default).
        org: String,
        /// Only delete if the org still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

#[derive(clap::Args)]
pub struct SignupArgs {
    /// Your org's unique name: lowercase letters, digits and '-'.
    org: String,
    /// Your e-mail address: you sign in with it.
    #[arg(long)]
    email: String,
    /// How people see the org (at most 200 characters).
    #[arg(long, default_value = "")]
    display_name: String,
    /// Read the password from the first line of standard input instead of
    /// asking for it (twice) on the terminal.
    #[arg(long)]
    password_stdin: bool,
}

/// Creates an org of one's own on a control plane that allows sign-up.
pub async fn signup(server: Option<&str>, args: SignupArgs, format: Format) -> anyhow::Result<()> {
    let server = session::server(server);
    let password = if args.password_stdin {
        prompt::from_stdin(&["password"])?.remove(0)
    } else {
        let password = prompt::hidden("Password (12 to 1024 characters): ").await?;
        let again = prompt::hidden("The password again: ").await?;
        if password != again {
            anyhow::bail!("the two passwords differ; nothing was created");
        }
        password
    };
    let created = Api::connect(&server, None)
        .await?
        .orgs
        .sign_up(v1::SignUpRequest {
            name: args.org,
            display_name: args.display_name,
            email: args.email,
            password,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let org = created.org.unwrap_or_default();
    let owner = created.owner.unwrap_or_default();
    match format {
        Format::Json => output::json(&serde_json::json!({
            "org": org.name,
            "id": org.id,
            "owner": owner.email,
            "owner_id": owner.id,
        })),
        Format::Table => {
            outln!("created org {} ({}); you own it", org.name, org.id);
            outln!("sign in with: mockplane login --email {}", owner.email);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct OrgUpdate {
    /// The org's name or id (default: yours; platform admins may name any).
    org: Option<String>,
    /// How people see the org (at most 200 characters); "" shows its name.
    #[arg(long)]
    display_name: Option<String>,
    /// Whether members (not only owners and admins) may create workspaces.
    #[arg(long, value_name = "true|false")]
    members_create_workspaces: Option<bool>,
    /// Most workspaces the org may hold; `default` goes back to the default.
    #[arg(long, value_name = "N|default", value_parser = parse_quota)]
    max_workspaces: Option<QuotaArg>,
    /// Most routes one workspace may hold.
    #[arg(long, value_name = "N|default", value_parser = parse_quota)]
    max_routes_per_workspace: Option<QuotaArg>,
    /// Most data-plane API keys over all the org's workspaces.
    #[arg(long, value_name = "N|default", value_parser = parse_quota)]
    max_api_keys: Option<QuotaArg>,
    /// Most users and service accounts.
    #[arg(long, value_name = "N|default", value_parser = parse_quota)]
    max_members: Option<QuotaArg>,
    /// Only update if the org still has this etag.
    #[arg(long, default_value = "")]
    etag: String,
}

/// A quota option's value: a number from 1, or `default` (sent as 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaArg(u32);

fn parse_quota(raw: &str) -> Result<QuotaArg, String> {
    if raw == "default" {
        return Ok(QuotaArg(0));
    }
    match raw.parse::<u32>() {
        Ok(0) => Err("a quota is at least 1; `default` goes back to the default".into()),
        Ok(n) => Ok(QuotaArg(n)),
        Err(_) => Err(format!(
            "{raw:?} is neither a whole number from 1 nor `default`"
        )),
    }
}

#[derive(Serialize)]
struct OrgView {
    id: String,
    name: String,
    display_name: String,
    members_create_workspaces: bool,
    workspaces: String,
    max_routes_per_workspace: u32,
    api_keys: String,
    members: String,
    created: String,
    updated: String,
    etag: String,
}

impl OrgView {
    fn new(org: v1::Org) -> Self {
        let settings = org.settings.unwrap_or_default();
        let quotas = settings.quotas.unwrap_or_default();
        let usage = org.usage.unwrap_or_default();
        Self {
            id: org.id,
            name: org.name,
            display_name: org.display_name,
            members_create_workspaces: settings.members_create_workspaces.unwrap_or(true),
            workspaces: format!("{} of {}", usage.workspaces, quotas.max_workspaces),
            max_routes_per_workspace: quotas.max_routes_per_workspace,
            api_keys: format!("{} of {}", usage.api_keys, quotas.max_api_keys),
            members: format!("{} of {}", usage.members, quotas.max_members),
            created: output::time(org.create_time.as_ref()),
            updated: output::time(org.update_time.as_ref()),
            etag: org.etag,
        }
    }
}

fn show(format: Format, org: v1::Org) {
    match format {
        // JSON keeps the API's shape: quotas and usage as numbers.
        Format::Json => output::json(&serde_json::json!({
            "id": org.id,
            "name": org.name,
            "display_name": org.display_name,
            "settings": org.settings.as_ref().map(|s| serde_json::json!({
                "members_create_workspaces": s.members_create_workspaces.unwrap_or(true),
                "quotas": s.quotas.as_ref().map(|q| serde_json::json!({
                    "max_workspaces": q.max_workspaces,
                    "max_routes_per_workspace": q.max_routes_per_workspace,
                    "max_api_keys": q.max_api_keys,
                    "max_members": q.max_members,
                })),
            })),
            "usage": org.usage.as_ref().map(|u| serde_json::json!({
                "workspaces": u.workspaces,
                "api_keys": u.api_keys,
                "members": u.members,
            })),
            "create_time": output::time(org.create_time.as_ref()),
            "update_time": output::time(org.update_time.as_ref()),
            "etag": org.etag,
        })),
        Format::Table => output::one(format, &OrgView::new(org)),
    }
}

pub async fn org(
    server: &str,
    token: Option<&str>,
    command: OrgCommand,
    reason: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    if let OrgCommand::Delete { .. } = command
        && reason.is_none()
    {
        anyhow::bail!(
            "deleting an org needs a reason: add --reason \"...\" (8 to 500 characters; it stays in the audit trail)"
        );
    }
    let mut api = Api::connect(server, token).await?;
    match command {
        OrgCommand::Create {
            name,
            owner,
            display_name,
        } => {
            let created = api
                .orgs
                .create_org(v1::CreateOrgRequest {
                    name,
                    display_name,
                    owner_email: owner,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let org = created.org.unwrap_or_default();
            let owner = created.owner.unwrap_or_default();
            match format {
                Format::Json => output::json(&serde_json::json!({
                    "org": org.name,
                    "id": org.id,
                    "owner": owner.email,
                    "owner_id": owner.id,
                    "one_time_password": created.one_time_password,
                })),
                Format::Table => {
                    outln!("created org {} ({})", org.name, org.id);
                    outln!("owner: {}", owner.email);
                    outln!(
                        "one-time password (shown once; changed at the first login): {}",
                        created.one_time_password
                    );
                }
            }
        }
        OrgCommand::List => {
            let mut views = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .orgs
                    .list_orgs(v1::ListOrgsRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                views.extend(page.orgs.into_iter().map(OrgView::new));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::list(
                format,
                &views,
                &["name", "display_name", "workspaces", "members", "created"],
            );
        }
        OrgCommand::Get { org } => {
            let found = api
                .orgs
                .get_org(v1::GetOrgRequest {
                    org: org.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            show(format, found);
        }
        OrgCommand::Update(update) => {
            let request = update_request(update)?;
            let updated = api
                .orgs
                .update_org(request)
                .await
                .map_err(status_error)?
                .into_inner();
            show(format, updated);
        }
        OrgCommand::Delete { org, etag } => {
            let deleted = api
                .orgs
                .delete_org(v1::DeleteOrgRequest {
                    org,
                    reason: reason.unwrap_or_default().to_owned(),
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let usage = deleted.deleted.unwrap_or_default();
            match format {
                Format::Json => output::json(&serde_json::json!({
                    "deleted": deleted.name,
                    "workspaces": usage.workspaces,
                    "api_keys": usage.api_keys,
                    "members": usage.members,
                    "audit_events_pruned": deleted.audit_events_pruned,
                })),
                Format::Table => outln!(
                    "deleted org {} with {} workspaces, {} API keys and {} members; {} audit events pruned",
                    deleted.name,
                    usage.workspaces,
                    usage.api_keys,
                    usage.members,
                    deleted.audit_events_pruned
                ),
            }
        }
    }
    Ok(())
}

fn update_request(update: OrgUpdate) -> anyhow::Result<v1::UpdateOrgRequest> {
    let mut paths = Vec::new();
    let mut patch = v1::Org::default();
    let mut settings = v1::OrgSettings::default();
    let mut quotas = v1::Quotas::default();
    if let Some(name) = update.display_name {
        paths.push("display_name".to_owned());
        patch.display_name = name;
    }
    if let Some(members) = update.members_create_workspaces {
        paths.push("settings.members_create_workspaces".to_owned());
        settings.members_create_workspaces = Some(members);
    }
    for (name, value, field) in [
        (
            "max_workspaces",
            update.max_workspaces,
            &mut quotas.max_workspaces,
        ),
        (
            "max_routes_per_workspace",
            update.max_routes_per_workspace,
            &mut quotas.max_routes_per_workspace,
        ),
        (
            "max_api_keys",
            update.max_api_keys,
            &mut quotas.max_api_keys,
        ),
        ("max_members", update.max_members, &mut quotas.max_members),
    ] {
        if let Some(QuotaArg(value)) = value {
            paths.push(format!("settings.quotas.{name}"));
            *field = value;
        }
    }
    if paths.is_empty() {
        anyhow::bail!(
            "nothing to change: give --display-name, --members-create-workspaces or a quota (--max-workspaces, --max-routes-per-workspace, --max-api-keys, --max-members)"
        );
    }
    settings.quotas = Some(quotas);
    patch.settings = Some(settings);
    Ok(v1::UpdateOrgRequest {
        org: update.org.unwrap_or_default(),
        patch: Some(patch),
        update_mask: Some(prost_types::FieldMask { paths }),
        etag: update.etag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_and_refuse_nonsense() {
        assert_eq!(parse_quota("5"), Ok(QuotaArg(5)));
        assert_eq!(parse_quota("default"), Ok(QuotaArg(0)));
        assert!(parse_quota("0").unwrap_err().contains("at least 1"));
        assert!(parse_quota("-1").unwrap_err().contains("whole number"));
        assert!(parse_quota("lots").is_err());
    }

    #[test]
    fn an_update_names_only_what_it_changes() {
        let request = update_request(OrgUpdate {
            org: Some("acme".into()),
            display_name: None,
            members_create_workspaces: Some(false),
            max_workspaces: Some(QuotaArg(3)),
            max_routes_per_workspace: None,
            max_api_keys: Some(QuotaArg(0)),
            max_members: None,
            etag: String::new(),
        })
        .unwrap();
        assert_eq!(
            request.update_mask.unwrap().paths,
            [
                "settings.members_create_workspaces",
                "settings.quotas.max_workspaces",
                "settings.quotas.max_api_keys"
            ]
        );
        let quotas = request.patch.unwrap().settings.unwrap().quotas.unwrap();
        assert_eq!((quotas.max_workspaces, quotas.max_api_keys), (3, 0));
        assert!(
            update_request(OrgUpdate {
                org: None,
                display_name: None,
                members_create_workspaces: None,
                max_workspaces: None,
                max_routes_per_workspace: None,
                max_api_keys: None,
                max_members: None,
                etag: String::new(),
            })
            .is_err()
        );
    }
}
