//! `mockplane persona`: the JSON documents templates read, per environment.

use std::path::PathBuf;

use clap::Subcommand;
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{self, Format, PersonaView};
use crate::{done, personafile};

#[derive(Subcommand)]
pub(crate) enum PersonaCommand {
    /// List a workspace's personas, at their current versions.
    List { workspace: String },
    /// Show a persona: its current version, or an earlier one.
    #[command(disable_version_flag = true)]
    Get {
        workspace: String,
        name: String,
        /// The version to show. Default: the current one.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Create a persona from a file holding a JSON object (JSON or YAML;
    /// `-` reads standard input).
    Create {
        workspace: String,
        /// 1-63 characters of a-z, 0-9 and -; requests without an
        /// x-mockplane-persona header get the persona `default`.
        name: String,
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Replace a persona's data; its version goes up by one and the
    /// earlier versions stay readable.
    Update {
        workspace: String,
        name: String,
        #[arg(long, short)]
        file: PathBuf,
        /// Only update if the persona still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
    /// Delete a persona and its versions.
    Delete {
        workspace: String,
        name: String,
        /// Only delete if the persona still has this etag.
        #[arg(long, default_value = "")]
        etag: String,
    },
}

pub(crate) const PERSONA_COLUMNS: [&str; 5] = ["name", "version", "served", "updated", "data"];

/// Persona files are checked before connecting, as mock files are.
pub(crate) async fn persona(
    server: &str,
    token: Option<&str>,
    command: PersonaCommand,
    format: Format,
) -> anyhow::Result<()> {
    let connect = || Api::connect(server, token);
    match command {
        PersonaCommand::List { workspace } => {
            let listed = connect()
                .await?
                .personas
                .list_personas(v1::ListPersonasRequest { workspace })
                .await
                .map_err(status_error)?
                .into_inner();
            let views: Vec<PersonaView> = listed.personas.iter().map(PersonaView::from).collect();
            output::list(format, &views, &PERSONA_COLUMNS);
        }
        PersonaCommand::Get {
            workspace,
            name,
            version,
        } => {
            let found = connect()
                .await?
                .personas
                .get_persona(v1::GetPersonaRequest {
                    workspace,
                    persona: name,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&found));
        }
        PersonaCommand::Create {
            workspace,
            name,
            file,
        } => {
            let data = personafile::load(&file)?;
            let created = connect()
                .await?
                .personas
                .create_persona(v1::CreatePersonaRequest {
                    workspace,
                    persona: Some(v1::Persona {
                        name,
                        data,
                        ..Default::default()
                    }),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&created));
        }
        PersonaCommand::Update {
            workspace,
            name,
            file,
            etag,
        } => {
            let data = personafile::load(&file)?;
            let updated = connect()
                .await?
                .personas
                .update_persona(v1::UpdatePersonaRequest {
                    workspace,
                    persona: name,
                    data,
                    etag,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::one(format, &PersonaView::from(&updated));
        }
        PersonaCommand::Delete {
            workspace,
            name,
            etag,
        } => {
            connect()
                .await?
                .personas
                .delete_persona(v1::DeletePersonaRequest {
                    workspace: workspace.clone(),
                    persona: name.clone(),
                    etag,
                })
                .await
                .map_err(status_error)?;
            done(
                format,
                serde_json::json!({ "workspace": workspace, "deleted": name }),
            );
        }
    }
    Ok(())
}
