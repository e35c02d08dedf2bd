//! `mockplane.v1.PersonaService`.

use mockplane_proto::v1;
use mockplane_proto::v1::persona_service_server::PersonaService;
use mockplane_shared::model::persona::{parse_persona_data, parse_persona_name};
use mockplane_shared::{FieldError, Slug};
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::error::{ApiError, missing};
use super::{ApiState, etag, parse_etag, timestamp};
use crate::store::{PersonaRecord, WorkspaceRef};

pub struct Personas(pub ApiState);

pub fn to_proto(record: &PersonaRecord) -> v1::Persona {
    v1::Persona {
        name: record.name.to_string(),
        data: record.data.to_string(),
        version: u32::try_from(record.version).unwrap_or(u32::MAX),
        etag: etag(record.version),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        deployments: record
            .served
            .iter()
            .map(|(environment, version)| v1::PersonaDeployment {
                environment: environment.clone(),
                version: u32::try_from(*version).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

fn name(raw: &str, field: &str) -> Result<Slug, ApiError> {
    if raw.is_empty() {
        return Err(missing(field));
    }
    Ok(parse_persona_name(raw).map_err(|e| FieldError::new(field, e.message))?)
}

/// Parses persona data off the async workers (a persona is up to
/// hundreds of kilobytes of JSON).
async fn data(raw: String, field: &'static str) -> Result<serde_json::Value, Status> {
    if raw.is_empty() {
        return Err(missing(field).into());
    }
    let parsed = super::blocking::run(move || parse_persona_data(&raw)).await?;
    Ok(parsed
        .map_err(|e| FieldError::new(field, e.message))
        .map_err(ApiError::from)?)
}

#[tonic::async_trait]
impl PersonaService for Personas {
    async fn create_persona(
        &self,
        request: Request<v1::CreatePersonaRequest>,
    ) -> Result<Response<v1::Persona>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let persona = request.persona.ok_or_else(|| missing("persona"))?;
        let name = name(&persona.name, "persona.name")?;
        let data = data(persona.data, "persona.data").await?;
        let record = grant
            .store()
            .create_persona(grant.org_id(), &key, &name, &data)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_persona(
        &self,
        request: Request<v1::GetPersonaRequest>,
    ) -> Result<Response<v1::Persona>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.persona, "persona")?;
        let record = grant
            .store()
            .get_persona(
                grant.org_id(),
                &key,
                &name,
                (request.version > 0).then_some(request.version),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_personas(
        &self,
        request: Request<v1::ListPersonasRequest>,
    ) -> Result<Response<v1::ListPersonasResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let records = grant
            .store()
            .list_personas(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListPersonasResponse {
            personas: records.iter().map(to_proto).collect(),
        }))
    }

    async fn update_persona(
        &self,
        request: Request<v1::UpdatePersonaRequest>,
    ) -> Result<Response<v1::Persona>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let mut request = request.into_inner();
        let name = name(&request.persona, "persona")?;
        let data = data(std::mem::take(&mut request.data), "data").await?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = grant
            .store()
            .update_persona(grant.org_id(), &key, &name, &data, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn delete_persona(
        &self,
        request: Request<v1::DeletePersonaRequest>,
    ) -> Result<Response<()>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.persona, "persona")?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        grant
            .store()
            .delete_persona(grant.org_id(), &key, &name, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(()))
    }
}
