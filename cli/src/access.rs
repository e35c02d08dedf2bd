//! Identity and access: logging in, users, service accounts, API tokens,
//! environment tokens and the environment access log (roles, members and
//! policies are in `roles.rs`).

use std::collections::HashMap;

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{
    self, AccessView, ApiTokenView, EnvTokenView, Format, NewUserView, PrincipalView, SessionView,
    WhoAmIView,
};
use crate::{done, prompt, session};

/// A standing in the org.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

impl OrgRole {
    fn as_str(self) -> &'static str {
        match self {
            OrgRole::Member => "member",
            OrgRole::Admin => "admin",
            OrgRole::Owner => "owner",
        }
    }
}

/// What kind of principal to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrincipalKind {
    User,
    Service,
}

#[derive(Args)]
pub struct LoginArgs {
    /// Your e-mail address; asked for when left out.
    #[arg(long)]
    email: Option<String>,
    /// Read the password from the first line of standard input instead of
    /// asking for it on the terminal.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Invite a user. Without --password-stdin a one-time password is made
    /// and printed, this once.
    Create {
        email: String,
        /// A display name (default: the e-mail address).
        #[arg(long)]
        name: Option<String>,
        /// The user's standing in the org (default: member).
        #[arg(long, value_enum)]
        org_role: Option<OrgRole>,
        /// Read the user's password (12 to 1024 characters) from the first
        /// line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the org's users and service accounts.
    List {
        /// Only users, or only service accounts.
        #[arg(long, value_enum)]
        kind: Option<PrincipalKind>,
    },
    /// Show one user or service account, by id.
    Get { id: String },
    /// Change a principal's org role, name, or whether it is disabled.
    /// Disabling ends its access at once.
    Update {
        id: String,
        #[arg(long, value_enum)]
        org_role: Option<OrgRole>,
        /// Disable: its tokens and sessions stop working.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Enable again.
        #[arg(long)]
        enable: bool,
        #[arg(long)]
        name: Option<String>,
        /// Only update if the principal still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a user or service account.
    Delete { id: String },
    /// Change your own password: asks for the current and the new one.
    Passwd {
        /// Read the current password from the first line of standard
        /// input and the new one from the second.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub enum ServiceAccountCommand {
    /// Create a service account: automation that authenticates with API
    /// tokens (`mockplane api-token create --for <id>`).
    Create {
        /// 1 to 40 lowercase letters, digits, `-` or `_`.
        name: String,
        /// Its standing in the org (default: member).
        #[arg(long, value_enum)]
        org_role: Option<OrgRole>,
    },
}

#[derive(Subcommand)]
pub enum ApiTokenCommand {
    /// Create an API token; its secret is printed this once.
    Create {
        /// The principal (a service account, say) the token acts as;
        /// default: you.
        #[arg(long = "for", value_name = "PRINCIPAL_ID")]
        principal: Option<String>,
        /// What the token is for.
        #[arg(long)]
        name: Option<String>,
        /// Days until it expires (at most 3650); default: never.
        #[arg(long, value_name = "DAYS")]
        ttl_days: Option<u32>,
    },
    /// List API tokens (never their secrets).
    List {
        /// Whose tokens; default: yours.
        #[arg(long = "for", value_name = "PRINCIPAL_ID")]
        principal: Option<String>,
    },
    /// Revoke an API token, by id: it stops working at once.
    Revoke { id: String },
}

#[derive(Args)]
pub struct EnvTokenArgs {
    workspace: String,
    env: String,
    /// How long the token lasts, in seconds (at most 3600); default: 15
    /// minutes.
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u32>,
}

#[derive(Args)]
pub struct AccessLogArgs {
    workspace: String,
}

const PRINCIPAL_COLUMNS: [&str; 6] = ["id", "kind", "email", "name", "org_role", "disabled"];
const TOKEN_COLUMNS: [&str; 5] = ["id", "name", "created", "expires", "last_used"];
const ACCESS_COLUMNS: [&str; 5] = ["granted", "expires", "environment", "principal", "reason"];

/// Logs in and saves the session.
pub async fn login(server: Option<&str>, args: LoginArgs, format: Format) -> anyhow::Result<()> {
    let path = session::path()?;
    let server = session::server(server);
    let email = match args.email.map(|e| e.trim().to_owned()) {
        Some(email) if !email.is_empty() => email,
        Some(_) => return Err(anyhow!("--email is empty")),
        None if args.password_stdin => {
            return Err(anyhow!(
                "--password-stdin needs --email: standard input carries only the password"
            ));
        }
        None => {
            let email = prompt::line("E-mail: ")?;
            if email.is_empty() {
                return Err(anyhow!("no e-mail address given"));
            }
            email
        }
    };
    let password = if args.password_stdin {
        prompt::from_stdin(&["password"])?.remove(0)
    } else {
        prompt::hidden(&format!("Password for {email}: ")).await?
    };
    let answer = Api::connect(&server, None)
        .await?
        .auth
        .login(v1::LoginRequest {
            email: email.clone(),
            password,
        })
        .await
        .map_err(|status| match status.code() {
            // The hint for other commands (log in) would only repeat this.
            tonic::Code::Unauthenticated => {
                anyhow!("{} ({:?})", status.message(), status.code())
            }
            _ => status_error(status),
        })?
        .into_inner();
    let must_change_password = answer.must_change_password;
    let saved = session::Session::new(&server, &email, answer)?;
    session::save(&path, &saved)?;
    if must_change_password {
        eprintln!(
            "note: you signed in with a one-time password; change it with `mockplane user passwd` \
             before anything else (until then every other command is refused)"
        );
    }
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let view = SessionView {
        server: saved.server.clone(),
        email: saved.email.clone(),
        session_file: path.display().to_string(),
        access_token_expires: when(saved.access_token_expire_time),
        refresh_token_expires: when(saved.refresh_token_expire_time),
    };
    match format {
        Format::Json => output::json(&view),
        Format::Table => outln!(
            "logged in to {} as {}; the session is saved in {} and lasts until {} unless used",
            view.server,
            view.email,
            view.session_file,
            view.refresh_token_expires
        ),
    }
    Ok(())
}

/// Logs the saved session's user in again (after a password change ended
/// the session). `false` when there is no saved session for `server`.
async fn renew_session(server: &str, password: &str) -> anyhow::Result<bool> {
    let path = session::path()?;
    let Some(saved) = session::load(&path)? else {
        return Ok(false);
    };
    if saved.server != session::normalize(server) {
        return Ok(false);
    }
    let answer = Api::connect(server, None)
        .await?
        .auth
        .login(v1::LoginRequest {
            email: saved.email.clone(),
            password: password.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    session::save(
        &path,
        &session::Session::new(&saved.server, &saved.email, answer)?,
    )?;
    Ok(true)
}

/// Ends the saved session on its control plane (its refresh tokens stop
/// working), then deletes it. A control plane that cannot be reached does
/// not keep the session file: it is deleted all the same, with a note.
pub async fn logout(format: Format) -> anyhow::Result<()> {
    let path = session::path()?;
    // A session file that cannot be read is removed all the same.
    let saved = session::load(&path).unwrap_or_else(|error| {
        eprintln!("note: {error:#}; removing it without ending the session on the control plane");
        None
    });
    if let Some(saved) = saved {
        let ended = match Api::connect(&saved.server, None).await {
            Ok(mut api) => api
                .auth
                .logout(v1::LogoutRequest {
                    refresh_token: saved.refresh_token.clone(),
                })
                .await
                .map(|_| ())
                .map_err(|status| status.message().to_owned()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(why) = ended {
            eprintln!(
                "note: the session could not be ended on {} ({why}); its tokens stay valid until they expire",
                saved.server
            );
        }
    }
    let removed = session::remove(&path)?;
    if !removed {
        eprintln!("note: there was no session to remove ({})", path.display());
    }
    done(
        format,
        serde_json::json!({ "logged_out": removed, "session_file": path.display().to_string() }),
    );
    Ok(())
}

pub async fn whoami(server: &str, token: Option<&str>, format: Format) -> anyhow::Result<()> {
    let me = Api::connect(server, token)
        .await?
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    output::one(format, &WhoAmIView::from(&me));
    Ok(())
}

pub async fn user(
    server: &str,
    token: Option<&str>,
    command: UserCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        UserCommand::Create {
            email,
            name,
            org_role,
            password_stdin,
        } => {
            let password = if password_stdin {
                prompt::from_stdin(&["user's password"])?.remove(0)
            } else {
                String::new()
            };
            let created = connect()
                .await?
                .users
                .create_user(v1::CreateUserRequest {
                    email,
                    name: name.unwrap_or_default(),
                    org_role: org_role.map(OrgRole::as_str).unwrap_or_default().to_owned(),
                    password,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let view = NewUserView {
                user: PrincipalView::from(&created.user.unwrap_or_default()),
                one_time_password: (!created.one_time_password.is_empty())
                    .then_some(created.one_time_password),
            };
            output::one(format, &view);
            if view.one_time_password.is_some() && format == Format::Table {
                eprintln!(
                    "note: the one-time password is shown only now; hand it over safely, and have the user change it with `mockplane user passwd` after `mockplane login`"
                );
            }
        }
        UserCommand::List { kind } => {
            let all = principals(&mut connect().await?, kind).await?;
            let views: Vec<PrincipalView> = all.iter().map(PrincipalView::from).collect();
            output::list(format, &views, &PRINCIPAL_COLUMNS);
        }
        UserCommand::Get { id } => {
            let found = connect()
                .await?
                .users
                .get_principal(v1::GetPrincipalRequest { id })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PrincipalView::from(&found));
        }
        UserCommand::Update {
            id,
            org_role,
            disable,
            enable,
            name,
            etag,
        } => {
            let disabled = match (disable, enable) {
                (true, _) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            if org_role.is_none() && disabled.is_none() && name.is_none() {
                return Err(anyhow!(
                    "nothing to change: give --org-role, --disable, --enable or --name"
                ));
            }
            if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(anyhow!("--name is empty; give 1 to 100 characters"));
            }
            let updated = connect()
                .await?
                .users
                .update_principal(v1::UpdatePrincipalRequest {
                    id,
                    org_role: org_role.map(OrgRole::as_str).unwrap_or_default().to_owned(),
                    disabled,
                    name: name.unwrap_or_default(),
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PrincipalView::from(&updated));
        }
        UserCommand::Delete { id } => {
            connect()
                .await?
                .users
                .delete_principal(v1::DeletePrincipalRequest { id: id.clone() })
                .await
                .map_err(status_error)?;
            done(format, serde_json::json!({ "deleted": id }));
        }
        UserCommand::Passwd { password_stdin } => {
            let (current_password, new_password) = if password_stdin {
                let mut lines = prompt::from_stdin(&["current password", "new password"])?;
                let new = lines.remove(1);
                (lines.remove(0), new)
            } else {
                let current = prompt::hidden("Current password: ").await?;
                let new = prompt::hidden("New password (12 to 1024 characters): ").await?;
                let again = prompt::hidden("The new password again: ").await?;
                if new != again {
                    return Err(anyhow!("the two new passwords differ; nothing was changed"));
                }
                (current, new)
            };
            connect()
                .await?
                .auth
                .change_password(v1::ChangePasswordRequest {
                    current_password,
                    new_password: new_password.clone(),
                })
                .await
                .map_err(status_error)?;
            // A password change ends every session, the saved one too: log
            // it in again with the new password.
            let renewed = if crate::client::uses_session() {
                renew_session(server, &new_password).await?
            } else {
                false
            };
            done(
                format,
                serde_json::json!({ "password": "changed", "session_renewed": renewed }),
            );
        }
    }
    Ok(())
}

pub async fn service_account(
    server: &str,
    token: Option<&str>,
    command: ServiceAccountCommand,
    format: Format,
) -> anyhow::Result<()> {
    match command {
        ServiceAccountCommand::Create { name, org_role } => {
            let created = Api::connect(server, token)
                .await?
                .users
                .create_service_account(v1::CreateServiceAccountRequest {
                    name,
                    org_role: org_role.map(OrgRole::as_str).unwrap_or_default().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PrincipalView::from(&created));
            if format == Format::Table {
                eprintln!(
                    "hint: give it an API token with `mockplane api-token create --for {}`",
                    created.id
                );
            }
        }
    }
    Ok(())
}

pub async fn api_token(
    server: &str,
    token: Option<&str>,
    command: ApiTokenCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        ApiTokenCommand::Create {
            principal,
            name,
            ttl_days,
        } => {
            let created = connect()
                .await?
                .users
                .create_api_token(v1::CreateApiTokenRequest {
                    principal_id: principal.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    ttl_days: ttl_days.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut view = ApiTokenView::from(&created.token.unwrap_or_default());
            view.secret = Some(created.secret);
            output::one(format, &view);
            if format == Format::Table {
                eprintln!(
                    "note: the secret is not shown again (the control plane keeps only its hash); store it now, e.g. as MOCKPLANE_TOKEN"
                );
            }
        }
        ApiTokenCommand::List { principal } => {
            let listed = connect()
                .await?
                .users
                .list_api_tokens(v1::ListApiTokensRequest {
                    principal_id: principal.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<ApiTokenView> = listed.tokens.iter().map(ApiTokenView::from).collect();
            output::list(format, &views, &TOKEN_COLUMNS);
        }
        ApiTokenCommand::Revoke { id } => {
            connect()
                .await?
                .users
                .revoke_api_token(v1::RevokeApiTokenRequest { id: id.clone() })
                .await
                .map_err(status_error)?;
            done(format, serde_json::json!({ "revoked": id }));
        }
    }
    Ok(())
}

/// Issues an environment token for a stated reason.
pub async fn env_token(
    server: &str,
    token: Option<&str>,
    args: EnvTokenArgs,
    reason: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Err(anyhow!(
            "env-token needs --reason \"why you need access\" (8 to 500 characters, e.g. \"debugging issue #123\"); it goes to the workspace's access log"
        ));
    };
    let issued = Api::connect(server, token)
        .await?
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: args.workspace.clone(),
            environment: args.env.clone(),
            reason: reason.to_owned(),
            ttl_seconds: args.ttl.unwrap_or(0),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let view = EnvTokenView {
        workspace: args.workspace,
        environment: args.env,
        token: issued.token,
        expires: output::time(issued.expire_time.as_ref()),
    };
    match format {
        Format::Json => output::json(&view),
        Format::Table => {
            outln!("token    {}", view.token);
            outln!("expires  {}", view.expires);
            eprintln!(
                "hint: use it for changes to `{}` of {} only, e.g. MOCKPLANE_TOKEN={} mockplane env update {} {} …",
                view.environment, view.workspace, view.token, view.workspace, view.environment
            );
        }
    }
    Ok(())
}

/// The environment access log, with principals named where the caller can
/// see them.
pub async fn access_log(
    server: &str,
    token: Option<&str>,
    args: AccessLogArgs,
    format: Format,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server, token).await?;
    let listed = api
        .auth
        .list_environment_access(v1::ListEnvironmentAccessRequest {
            workspace: args.workspace,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut views: Vec<AccessView> = listed.grants.iter().map(AccessView::from).collect();
    if !views.is_empty() {
        // Names are a convenience: the log stands without them.
        let names: HashMap<String, String> = principals(&mut api, None)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let name = if p.email.is_empty() { p.name } else { p.email };
                (p.id, name)
            })
            .collect();
        for view in &mut views {
            if let Some(name) = names.get(&view.principal_id) {
                view.principal.clone_from(name);
            }
        }
    }
    output::list(format, &views, &ACCESS_COLUMNS);
    Ok(())
}

/// Every principal of the org (of one kind), following page tokens.
async fn principals(
    api: &mut Api,
    kind: Option<PrincipalKind>,
) -> anyhow::Result<Vec<v1::Principal>> {
    let kind = match kind {
        None => "",
        Some(PrincipalKind::User) => "user",
        Some(PrincipalKind::Service) => "service",
    };
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api
            .users
            .list_principals(v1::ListPrincipalsRequest {
                kind: kind.to_owned(),
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(page.principals);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        if page.next_page_token == page_token {
            return Err(anyhow!(
                "the control plane answered the same page of principals twice; stopped listing"
            ));
        }
        page_token = page.next_page_token;
    }
}
