//! The CLI's connection to the control plane: address, credentials, and
//! errors turned into messages a person can act on.

use std::time::Duration;

use anyhow::anyhow;
use mockplane_proto::v1::api_key_service_client::ApiKeyServiceClient;
use mockplane_proto::v1::audit_service_client::AuditServiceClient;
use mockplane_proto::v1::auth_service_client::AuthServiceClient;
use mockplane_proto::v1::environment_service_client::EnvironmentServiceClient;
use mockplane_proto::v1::journal_service_client::JournalServiceClient;
use mockplane_proto::v1::member_service_client::MemberServiceClient;
use mockplane_proto::v1::node_service_client::NodeServiceClient;
use mockplane_proto::v1::notification_service_client::NotificationServiceClient;
use mockplane_proto::v1::org_service_client::OrgServiceClient;
use mockplane_proto::v1::persona_service_client::PersonaServiceClient;
use mockplane_proto::v1::promotion_service_client::PromotionServiceClient;
use mockplane_proto::v1::role_service_client::RoleServiceClient;
use mockplane_proto::v1::route_service_client::RouteServiceClient;
use mockplane_proto::v1::scenario_service_client::ScenarioServiceClient;
use mockplane_proto::v1::usage_service_client::UsageServiceClient;
use mockplane_proto::v1::user_service_client::UserServiceClient;
use mockplane_proto::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Responses can carry many routes; allow more than gRPC's default 4 MiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The reason this invocation states (`--reason`), sent with every call.
static REASON: std::sync::OnceLock<AsciiMetadataValue> = std::sync::OnceLock::new();

/// The org this invocation acts in (`--org`, platform admins), sent with
/// every call.
static ORG: std::sync::OnceLock<AsciiMetadataValue> = std::sync::OnceLock::new();

/// Sets the org every call of this process acts in; checked here so a bad
/// name fails before anything is sent.
pub fn set_org(org: &str) -> anyhow::Result<()> {
    let org = org.trim();
    if org.is_empty() || org.len() > 100 {
        return Err(anyhow!(
            "--org names an org by its name or id (1 to 100 characters)"
        ));
    }
    let value = org
        .parse::<AsciiMetadataValue>()
        .map_err(|_| anyhow!("--org must be an org's name or id (plain ASCII), not {org:?}"))?;
    let _ = ORG.set(value);
    Ok(())
}

/// Where this invocation's credentials came from, for hints when they are
/// refused.
static SOURCE: std::sync::OnceLock<TokenSource> = std::sync::OnceLock::new();

/// Sets the reason every call of this process states; checked here so a
/// bad one fails before anything is sent.
pub fn set_reason(reason: &str) -> anyhow::Result<()> {
    let reason = reason.trim();
    let length = reason.chars().count();
    if !(8..=500).contains(&length) {
        return Err(anyhow!(
            "--reason must be 8 to 500 characters saying why (e.g. \"debugging issue #123\"), not {length}"
        ));
    }
    let value = reason
        .parse::<AsciiMetadataValue>()
        .map_err(|_| anyhow!("--reason must be plain ASCII text without line breaks"))?;
    let _ = REASON.set(value);
    Ok(())
}

/// Where the token sent with every call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// No token: the call goes without credentials.
    None,
    /// `--token` or `MOCKPLANE_TOKEN`; the text describes the token
    /// without revealing it (`the API token mpt_Ab12…`).
    Given(String),
    /// The session `mockplane login` saved, in this file.
    Session(String),
    /// None, because the saved session is for this other server.
    OtherServer(String),
}

/// Records where this invocation's token came from, for error hints.
pub fn set_source(source: TokenSource) {
    let _ = SOURCE.set(source);
}

/// Whether this process's calls carry the saved session's token.
pub fn uses_session() -> bool {
    matches!(SOURCE.get(), Some(TokenSource::Session(_)))
}

/// A token in words, without revealing it: API tokens by their first
/// characters, JWTs by what they are for and, once expired, since when.
pub fn describe_token(token: &str) -> String {
    let token = token.trim();
    if token.starts_with("mpt_") {
        let shown: String = token.chars().take(8).collect();
        return format!("the API token {shown}…");
    }
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(claims) = claims else {
        return "the token".to_owned();
    };
    let mut text = match claims["env"]["environment"].as_str() {
        Some(environment) => format!("the environment token for `{environment}`"),
        None => "the access token".to_owned(),
    };
    if let Some(expired) = claims["exp"]
        .as_i64()
        .and_then(|exp| chrono::DateTime::from_timestamp(exp, 0))
        .filter(|exp| *exp <= chrono::Utc::now())
    {
        text.push_str(&format!(
            " (it expired at {})",
            expired.format("%Y-%m-%d %H:%M:%SZ")
        ));
    }
    text
}

#[derive(Clone)]
pub struct Credentials(Option<AsciiMetadataValue>);

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(reason) = REASON.get() {
            request
                .metadata_mut()
                .insert("x-mockplane-reason", reason.clone());
        }
        if let Some(org) = ORG.get() {
            request
                .metadata_mut()
                .insert("x-mockplane-org", org.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Credentials>;

pub struct Api {
    pub workspaces: WorkspaceServiceClient<Authed>,
    pub routes: RouteServiceClient<Authed>,
    pub environments: EnvironmentServiceClient<Authed>,
    pub scenarios: ScenarioServiceClient<Authed>,
    pub personas: PersonaServiceClient<Authed>,
    pub journal: JournalServiceClient<Authed>,
    pub auth: AuthServiceClient<Authed>,
    pub users: UserServiceClient<Authed>,
    pub roles: RoleServiceClient<Authed>,
    pub members: MemberServiceClient<Authed>,
    pub audit: AuditServiceClient<Authed>,
    pub api_keys: ApiKeyServiceClient<Authed>,
    pub usage: UsageServiceClient<Authed>,
    pub nodes: NodeServiceClient<Authed>,
    pub promotions: PromotionServiceClient<Authed>,
    pub notifications: NotificationServiceClient<Authed>,
    pub orgs: OrgServiceClient<Authed>,
}

impl Api {
    pub async fn connect(server: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(server.to_owned())
            .map_err(|_| {
                anyhow!("--server {server:?} is not a valid address; use http://host:port")
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow!(
                "cannot reach the control plane at {server}: {} (is it running? `make run` starts one)",
                causes(&e)
            )
        })?;
        let credentials = match token {
            Some(token) => {
                let value = format!("Bearer {}", token.trim())
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| {
                        anyhow!(
                            "the token contains characters a token never has; check MOCKPLANE_TOKEN"
                        )
                    })?;
                Credentials(Some(value))
            }
            None => Credentials(None),
        };
        Ok(Self {
            workspaces: WorkspaceServiceClient::with_interceptor(
                channel.clone(),
                credentials.clone(),
            )
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
            routes: RouteServiceClient::with_interceptor(channel.clone(), credentials.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            environments: EnvironmentServiceClient::with_interceptor(
                channel.clone(),
                credentials.clone(),
            ),
            // Versions, imports and exports carry routes, OpenAPI documents
            // up to 8 MiB among them.
            scenarios: ScenarioServiceClient::with_interceptor(
                channel.clone(),
                credentials.clone(),
            )
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
            personas: PersonaServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            journal: JournalServiceClient::with_interceptor(channel.clone(), credentials.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            auth: AuthServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            users: UserServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            roles: RoleServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            members: MemberServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            // A page of audit events carries up to 1000 summaries.
            audit: AuditServiceClient::with_interceptor(channel.clone(), credentials.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            api_keys: ApiKeyServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            orgs: OrgServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            notifications: NotificationServiceClient::with_interceptor(
                channel.clone(),
                credentials.clone(),
            ),
            promotions: PromotionServiceClient::with_interceptor(
                channel.clone(),
                credentials.clone(),
            ),
            usage: UsageServiceClient::with_interceptor(channel.clone(), credentials.clone()),
            // A thousand nodes with their labels and errors.
            nodes: NodeServiceClient::with_interceptor(channel, credentials)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        })
    }
}

/// An error and its causes, `outer: inner: innermost`: tonic's transport
/// errors say what went wrong only in their sources.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failed call as the server explained it, with a hint where one helps.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated => match SOURCE.get().unwrap_or(&TokenSource::None) {
            TokenSource::None => "\nhint: log in with `mockplane login`, or set MOCKPLANE_TOKEN (or --token) to a token of your org; the first run of the control plane prints one".to_owned(),
            TokenSource::Given(token) => format!(
                "\nhint: the server refused {token}, given with --token or MOCKPLANE_TOKEN; check it, or leave both unset to use the session of `mockplane login`"
            ),
            TokenSource::OtherServer(server) => format!(
                "\nhint: the session of `mockplane login` is for {server}, not this server; log in here with `mockplane --server <this server> login`, or give a token with --token (MOCKPLANE_TOKEN)"
            ),
            TokenSource::Session(file) => format!(
                "\nhint: the server refused the session saved in {file}; log in again with `mockplane login`"
            ),
        },
        tonic::Code::Aborted => {
            "\nhint: get the resource again for its current etag, then retry".to_owned()
        }
        tonic::Code::Unavailable => "\nhint: is the control plane running and reachable?".to_owned(),
        _ => String::new(),
    };
    anyhow!("{} ({:?}){hint}", status.message(), status.code())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn tokens_are_described_without_being_revealed() {
        let secret = "mpt_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg";
        let text = describe_token(secret);
        assert_eq!(text, "the API token mpt_AbCd…");
        let jwt = |claims: &str| {
            let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            format!("{}.{}.sig", encode(r#"{"alg":"HS256"}"#), encode(claims))
        };
        assert_eq!(
            describe_token(&jwt(r#"{"exp": 1, "env": {"environment": "prod"}}"#)),
            "the environment token for `prod` (it expired at 1970-01-01 00:00:01Z)"
        );
        assert_eq!(
            describe_token(&jwt(r#"{"exp": 99999999999}"#)),
            "the access token"
        );
        assert_eq!(describe_token("garbage"), "the token");
    }
}
