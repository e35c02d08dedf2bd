//! The CLI's connection to the control plane: address, credentials, and
//! errors turned into messages a person can act on.

use std::time::Duration;

use anyhow::anyhow;
use mockplane_proto::v1::environment_service_client::EnvironmentServiceClient;
use mockplane_proto::v1::journal_service_client::JournalServiceClient;
use mockplane_proto::v1::persona_service_client::PersonaServiceClient;
use mockplane_proto::v1::route_service_client::RouteServiceClient;
use mockplane_proto::v1::scenario_service_client::ScenarioServiceClient;
use mockplane_proto::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Responses can carry many routes; allow more than gRPC's default 4 MiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The reason this invocation states (`--reason`), sent with every call.
static REASON: std::sync::OnceLock<AsciiMetadataValue> = std::sync::OnceLock::new();

/// Sets the reason every call of this process states; checked here so a
/// bad one fails before anything is sent.
pub fn set_reason(reason: &str) -> anyhow::Result<()> {
    let value = reason
        .trim()
        .parse::<AsciiMetadataValue>()
        .map_err(|_| anyhow!("--reason must be plain ASCII text without line breaks"))?;
    let _ = REASON.set(value);
    Ok(())
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
            journal: JournalServiceClient::with_interceptor(channel, credentials)
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
        tonic::Code::Unauthenticated => {
            "\nhint: set MOCKPLANE_TOKEN (or --token) to a token of your org; the first run of the control plane prints one"
        }
        tonic::Code::Aborted => "\nhint: get the resource again for its current etag, then retry",
        tonic::Code::Unavailable => "\nhint: is the control plane running and reachable?",
        _ => "",
    };
    anyhow!("{} ({:?}){hint}", status.message(), status.code())
}
