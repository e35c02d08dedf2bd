//! `mockplane.v1.ScenarioService`: scenarios, their versions and contract
//! checks, and the admin-only direct deploy (promotions are the way).

use mockplane_proto::v1;
use mockplane_proto::v1::scenario_service_server::ScenarioService;
use mockplane_shared::model::environment::parse_env_name;
use mockplane_shared::model::scenario::{
    MAX_TEXT_LEN, NewScenario, ScenarioPatch, parse_scenario_name, parse_tags, parse_text, pillars,
};
use mockplane_shared::{FieldError, Slug};
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::error::{ApiError, missing};
use super::{ApiState, etag, mask_paths, parse_etag, timestamp};
use crate::store::{DeploymentRecord, ScenarioRecord, VersionRecord, WorkspaceRef};

pub struct Scenarios(pub ApiState);

/// Most routes one ImportScenario call takes.
const MAX_IMPORTED_ROUTES: usize = 1000;

pub fn to_proto(record: &ScenarioRecord) -> v1::Scenario {
    v1::Scenario {
        name: record.name.to_string(),
        description: record.description.clone(),
        tags: record.tags.iter().map(ToString::to_string).collect(),
        pillars: pillars(&record.tags)
            .into_iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        route_count: u32::try_from(record.route_count).unwrap_or(u32::MAX),
        latest_version: record.latest_version,
        deployments: record.deployments.iter().map(deployment).collect(),
        etag: etag(record.version),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        checks: record
            .checks
            .iter()
            .map(mockplane_proto::convert::contract_check)
            .collect(),
    }
}

fn deployment(record: &DeploymentRecord) -> v1::Deployment {
    v1::Deployment {
        environment: record.environment.to_string(),
        scenario: record.scenario.to_string(),
        version: record.version,
        deploy_time: Some(timestamp(record.deployed_at)),
    }
}

fn version(record: &VersionRecord) -> v1::ScenarioVersion {
    v1::ScenarioVersion {
        scenario: record.scenario.to_string(),
        number: record.number,
        content_hash: record.content_hash.clone(),
        route_count: record.route_count,
        note: record.note.clone(),
        create_time: Some(timestamp(record.created_at)),
        checks: record
            .checks
            .iter()
            .map(mockplane_proto::convert::contract_check)
            .collect(),
        routes: record
            .routes
            .iter()
            .map(|route| {
                let mut wire = super::routes::spec_to_proto(&route.spec);
                wire.id = route.id.to_string();
                wire.scenario = record.scenario.to_string();
                wire
            })
            .collect(),
    }
}

fn name(raw: &str, field: &str) -> Result<Slug, ApiError> {
    if raw.is_empty() {
        return Err(missing(field));
    }
    Ok(parse_scenario_name(raw).map_err(|e| FieldError::new(field, e.message))?)
}

fn number(raw: u32) -> Option<u32> {
    (raw > 0).then_some(raw)
}

#[tonic::async_trait]
impl ScenarioService for Scenarios {
    async fn create_scenario(
        &self,
        request: Request<v1::CreateScenarioRequest>,
    ) -> Result<Response<v1::Scenario>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let scenario = request.scenario.ok_or_else(|| missing("scenario"))?;
        let new = NewScenario {
            name: name(&scenario.name, "scenario.name")?,
            description: parse_text("scenario.description", &scenario.description)
                .map_err(ApiError::from)?,
            tags: parse_tags(&scenario.tags)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
            checks: mockplane_proto::convert::parse_contract_checks(&scenario.checks)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
        };
        let record = grant
            .store()
            .create_scenario(grant.org_id(), &key, new)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_scenario(
        &self,
        request: Request<v1::GetScenarioRequest>,
    ) -> Result<Response<v1::Scenario>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        let record = grant
            .store()
            .get_scenario(grant.org_id(), &key, &name)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_scenarios(
        &self,
        request: Request<v1::ListScenariosRequest>,
    ) -> Result<Response<v1::ListScenariosResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let records = grant
            .store()
            .list_scenarios(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListScenariosResponse {
            scenarios: records.iter().map(to_proto).collect(),
        }))
    }

    async fn update_scenario(
        &self,
        request: Request<v1::UpdateScenarioRequest>,
    ) -> Result<Response<v1::Scenario>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let current = name(&request.scenario, "scenario")?;
        let paths = mask_paths(
            request.update_mask.as_ref(),
            &["name", "description", "tags", "checks"],
        )
        .map_err(ApiError::from)?;
        let values = request.patch.as_ref().ok_or_else(|| missing("patch"))?;
        let mut patch = ScenarioPatch::default();
        for path in paths {
            match path {
                "name" => patch.name = Some(name(&values.name, "patch.name")?),
                "description" => {
                    patch.description = Some(
                        parse_text("patch.description", &values.description)
                            .map_err(ApiError::from)?,
                    );
                }
                "tags" => {
                    patch.tags = Some(
                        parse_tags(&values.tags)
                            .map_err(|e| e.within("patch"))
                            .map_err(ApiError::from)?,
                    );
                }
                "checks" => {
                    patch.checks = Some(
                        mockplane_proto::convert::parse_contract_checks(&values.checks)
                            .map_err(|e| e.within("patch"))
                            .map_err(ApiError::from)?,
                    );
                }
                _ => {}
            }
        }
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = grant
            .store()
            .update_scenario(grant.org_id(), &key, &current, &patch, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn delete_scenario(
        &self,
        request: Request<v1::DeleteScenarioRequest>,
    ) -> Result<Response<()>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        grant
            .store()
            .delete_scenario(grant.org_id(), &key, &name, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(()))
    }

    async fn create_version(
        &self,
        request: Request<v1::CreateVersionRequest>,
    ) -> Result<Response<v1::ScenarioVersion>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        let note = parse_text("note", &request.note).map_err(ApiError::from)?;
        let record = grant
            .store()
            .create_version(grant.org_id(), &key, &name, &note)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(version(&record)))
    }

    async fn list_versions(
        &self,
        request: Request<v1::ListVersionsRequest>,
    ) -> Result<Response<v1::ListVersionsResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        let records = grant
            .store()
            .list_versions(grant.org_id(), &key, &name)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListVersionsResponse {
            versions: records.iter().map(version).collect(),
        }))
    }

    async fn get_version(
        &self,
        request: Request<v1::GetVersionRequest>,
    ) -> Result<Response<v1::ScenarioVersion>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        let record = grant
            .store()
            .get_version(grant.org_id(), &key, &name, number(request.version))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(version(&record)))
    }

    async fn import_open_api(
        &self,
        request: Request<v1::ImportOpenApiRequest>,
    ) -> Result<Response<v1::ImportOpenApiResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let mut request = request.into_inner();
        let scenario = request.scenario.ok_or_else(|| missing("scenario"))?;
        if request.document.is_empty() {
            return Err(missing("document").into());
        }
        let document = std::mem::take(&mut request.document);
        let imported =
            super::blocking::run(move || mockplane_shared::model::openapi::import(&document))
                .await?
                .map_err(|e| e.within("document"))
                .map_err(ApiError::from)?;
        let description = if scenario.description.is_empty() {
            imported.description.chars().take(MAX_TEXT_LEN).collect()
        } else {
            scenario.description
        };
        let new = NewScenario {
            name: name(&scenario.name, "scenario.name")?,
            description: parse_text("scenario.description", &description)
                .map_err(ApiError::from)?,
            tags: parse_tags(&scenario.tags)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
            checks: mockplane_proto::convert::parse_contract_checks(&scenario.checks)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
        };
        let (record, routes) = grant
            .store()
            .import_scenario(grant.org_id(), &key, new, imported.routes)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ImportOpenApiResponse {
            scenario: Some(to_proto(&record)),
            routes: routes.iter().map(super::routes::to_proto).collect(),
        }))
    }

    async fn import_scenario(
        &self,
        request: Request<v1::ImportScenarioRequest>,
    ) -> Result<Response<v1::ImportOpenApiResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let mut request = request.into_inner();
        let scenario = request.scenario.ok_or_else(|| missing("scenario"))?;
        if request.routes.len() > MAX_IMPORTED_ROUTES {
            return Err(ApiError::from(FieldError::new(
                "routes",
                format!(
                    "at most {MAX_IMPORTED_ROUTES} routes, got {}",
                    request.routes.len()
                ),
            ))
            .into());
        }
        let routes = super::routes::parse_routes(std::mem::take(&mut request.routes)).await?;
        let new = NewScenario {
            name: name(&scenario.name, "scenario.name")?,
            description: parse_text("scenario.description", &scenario.description)
                .map_err(ApiError::from)?,
            tags: parse_tags(&scenario.tags)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
            checks: mockplane_proto::convert::parse_contract_checks(&scenario.checks)
                .map_err(|e| e.within("scenario"))
                .map_err(ApiError::from)?,
        };
        let (record, routes) = grant
            .store()
            .import_scenario(grant.org_id(), &key, new, routes)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ImportOpenApiResponse {
            scenario: Some(to_proto(&record)),
            routes: routes.iter().map(super::routes::to_proto).collect(),
        }))
    }

    async fn admin_deploy_version(
        &self,
        request: Request<v1::AdminDeployVersionRequest>,
    ) -> Result<Response<v1::Deployment>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self
            .0
            .authorize(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
            )
            .await?;
        let request = request.into_inner();
        let name = name(&request.scenario, "scenario")?;
        if request.environment.is_empty() {
            return Err(missing("environment").into());
        }
        let environment = parse_env_name(&request.environment)
            .map_err(|e| FieldError::new("environment", e.message))
            .map_err(ApiError::from)?;
        tracing::warn!(
            workspace = %key,
            scenario = %name,
            environment = %environment,
            "admin deploy: a version is served without a promotion"
        );
        let record = grant
            .store()
            .deploy_version(
                grant.org_id(),
                &key,
                &name,
                number(request.version),
                &environment,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(deployment(&record)))
    }
}
