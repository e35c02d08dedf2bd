//! `mockplane.v1.RouteService`.

use bytes::Bytes;
use mockplane_proto::convert::{
    chaos, latency, parse_realism, parse_request_match, parse_response, parse_route, parse_uuid,
    raw_state, request_match, response, route_state,
};
use mockplane_proto::v1;
use mockplane_proto::v1::route_service_server::RouteService;
use mockplane_shared::model::environment::parse_env_name;
use mockplane_shared::model::scenario::parse_scenario_name;
use mockplane_shared::{FieldError, RoutePatch, RouteSpec, Slug};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::authz::Target;
use super::error::ApiError;
use super::{
    ApiState, decode_page_token, encode_page_token, etag, mask_paths, page_size, parse_etag,
    timestamp,
};
use crate::store::{RouteRecord, StoreError, WorkspaceRecord, WorkspaceRef};

const PAGE_KIND: &str = "routes";
/// Most routes one CreateRoutes or DeleteRoutes call takes.
const MAX_BATCH: usize = mockplane_shared::model::route::MAX_ROUTES_PER_CALL;

pub struct Routes(pub ApiState);

pub fn to_proto(record: &RouteRecord) -> v1::Route {
    v1::Route {
        id: record.id.to_string(),
        scenario: record.scenario.to_string(),
        etag: etag(record.version),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        ..spec_to_proto(&record.spec)
    }
}

/// A route's content on the wire, without its bookkeeping.
pub fn spec_to_proto(spec: &RouteSpec) -> v1::Route {
    v1::Route {
        name: spec.name.clone(),
        method: spec.method.as_str().to_owned(),
        path: spec.path.as_str().to_owned(),
        response: Some(response(&spec.response)),
        request_match: request_match(&spec.matcher),
        priority: u32::from(spec.priority),
        latency: spec.realism.latency.as_ref().map(latency),
        chaos: spec.realism.chaos.as_ref().map(chaos),
        state: spec.state.as_ref().map(route_state),
        ..Default::default()
    }
}

/// The scenario a route request names; `None` when it names none.
fn scenario(raw: &str) -> Result<Option<Slug>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        parse_scenario_name(raw).map_err(|e| FieldError::new("scenario", e.message))?,
    ))
}

/// Refuses a write aimed at an environment that does not serve working
/// copies, naming the way a change gets there.
/// `workspace` is the one authorization already loaded.
fn check_editable(workspace: Option<&WorkspaceRecord>, environment: &str) -> Result<(), ApiError> {
    if environment.is_empty() {
        return Ok(());
    }
    let name =
        parse_env_name(environment).map_err(|e| FieldError::new("environment", e.message))?;
    let workspace = workspace.ok_or_else(|| {
        StoreError::Internal("authorization returned no workspace for a workspace call".into())
    })?;
    let chain = workspace.chain();
    if workspace.environment(name.as_str()).is_none() {
        return Err(StoreError::NotFound(format!(
            "environment '{name}' of workspace '{}'",
            workspace.slug
        ))
        .into());
    }
    match chain.first() {
        Some(first) if first == name.as_str() => Ok(()),
        Some(first) => Err(StoreError::FailedPrecondition(format!(
            "{name} serves versions only and cannot be edited directly: change the working copy in {first}, then promote it along {}",
            chain.path_to(name.as_str())
        ))
        .into()),
        None => Err(StoreError::FailedPrecondition(format!(
            "workspace '{}' has no promotion chain",
            workspace.slug
        ))
        .into()),
    }
}

fn route_id(raw: &str) -> Result<Uuid, ApiError> {
    Ok(parse_uuid("route_id", raw)?)
}

/// Converts a request's routes (`routes[i]` naming the one that is wrong)
/// off the async workers: a batch compiles up to thousands of paths,
/// regexes and templates.
pub async fn parse_routes(routes: Vec<v1::Route>) -> Result<Vec<RouteSpec>, Status> {
    let parsed = super::blocking::run(move || {
        routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                parse_route(route).map_err(|e| e.within(&format!("routes[{index}]")))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(parsed.map_err(ApiError::from)?)
}

#[tonic::async_trait]
impl RouteService for Routes {
    async fn create_routes(
        &self,
        request: Request<v1::CreateRoutesRequest>,
    ) -> Result<Response<v1::CreateRoutesResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let mut request = request.into_inner();
        if request.routes.is_empty() || request.routes.len() > MAX_BATCH {
            return Err(ApiError::from(FieldError::new(
                "routes",
                format!("give 1 to {MAX_BATCH} routes, got {}", request.routes.len()),
            ))
            .into());
        }
        let specs = parse_routes(std::mem::take(&mut request.routes)).await?;
        let scenario = scenario(&request.scenario)?;
        check_editable(grant.workspace.as_ref(), &request.environment)?;
        let records = grant
            .store()
            .create_scenario_routes(grant.org_id(), &key, scenario.as_ref(), specs)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::CreateRoutesResponse {
            routes: records.iter().map(to_proto).collect(),
        }))
    }

    async fn get_route(
        &self,
        request: Request<v1::GetRouteRequest>,
    ) -> Result<Response<v1::Route>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let id = route_id(&request.route_id)?;
        let record = grant
            .store()
            .get_route(grant.org_id(), &key, id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_routes(
        &self,
        request: Request<v1::ListRoutesRequest>,
    ) -> Result<Response<v1::ListRoutesResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let request = request.into_inner();
        let after = decode_page_token(PAGE_KIND, &request.page_token)
            .and_then(|after| after.map(|raw| parse_uuid("page_token", &raw)).transpose())
            .map_err(ApiError::from)?;
        let scenario = scenario(&request.scenario)?;
        let page = grant
            .store()
            .list_scenario_routes(
                grant.org_id(),
                &key,
                scenario.as_ref(),
                after,
                page_size(request.page_size, 100, 1000),
            )
            .await
            .map_err(ApiError::from)?;
        let (items, next) = cut_to_budget(page.items, page.next);
        Ok(Response::new(v1::ListRoutesResponse {
            routes: items.iter().map(to_proto).collect(),
            next_page_token: next
                .map(|id| encode_page_token(PAGE_KIND, &id.to_string()))
                .unwrap_or_default(),
        }))
    }

    async fn update_route(
        &self,
        request: Request<v1::UpdateRouteRequest>,
    ) -> Result<Response<v1::Route>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        let id = route_id(&request.route_id)?;
        let patch = parse_patch(&request).map_err(ApiError::from)?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        check_editable(grant.workspace.as_ref(), &request.environment)?;
        let record = grant
            .store()
            .update_route(grant.org_id(), &key, id, &patch, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn delete_routes(
        &self,
        request: Request<v1::DeleteRoutesRequest>,
    ) -> Result<Response<v1::DeleteRoutesResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Origin(&key)).await?;
        let request = request.into_inner();
        if request.route_ids.is_empty() || request.route_ids.len() > MAX_BATCH {
            return Err(ApiError::from(FieldError::new(
                "route_ids",
                format!(
                    "give 1 to {MAX_BATCH} route ids, got {}",
                    request.route_ids.len()
                ),
            ))
            .into());
        }
        let ids = request
            .route_ids
            .iter()
            .enumerate()
            .map(|(index, raw)| parse_uuid(&format!("route_ids[{index}]"), raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::from)?;
        check_editable(grant.workspace.as_ref(), &request.environment)?;
        let deleted = grant
            .store()
            .delete_routes(grant.org_id(), &key, &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::DeleteRoutesResponse {
            deleted: u32::try_from(deleted).unwrap_or(u32::MAX),
        }))
    }
}

/// A page of routes ends early once its bodies pass this many bytes, so a
/// response stays under the 4 MiB message limit gRPC clients have by default.
const PAGE_BODY_BUDGET: usize = 3 * 1024 * 1024;

fn cut_to_budget(
    mut items: Vec<RouteRecord>,
    next: Option<Uuid>,
) -> (Vec<RouteRecord>, Option<Uuid>) {
    let mut bytes = 0;
    let over = items.iter().position(|route| {
        bytes += route.spec.response.body.len();
        bytes > PAGE_BODY_BUDGET
    });
    match over {
        // Always at least one route per page, or paging would never end.
        Some(cut) if cut > 0 => {
            items.truncate(cut);
            let last = items.last().map(|r| r.id);
            (items, last)
        }
        _ => (items, next),
    }
}

const MASK_FIELDS: [&str; 13] = [
    "name",
    "method",
    "path",
    "request_match",
    "priority",
    "latency",
    "chaos",
    "state",
    "response",
    "response.status",
    "response.headers",
    "response.body",
    "response.template",
];

/// The patch a request's mask and values describe. Values are checked when
/// the store applies the patch to the stored route.
fn parse_patch(request: &v1::UpdateRouteRequest) -> Result<RoutePatch, FieldError> {
    let paths = mask_paths(request.update_mask.as_ref(), &MASK_FIELDS)?;
    let values = request
        .patch
        .as_ref()
        .ok_or_else(|| FieldError::new("patch", "is required"))?;
    let response = || {
        values.response.as_ref().ok_or_else(|| {
            FieldError::new("patch.response", "is required when update_mask names it")
        })
    };
    let mut patch = RoutePatch::default();
    for path in paths {
        match path {
            "name" => patch.name = Some(values.name.clone()),
            "method" => patch.method = Some(values.method.clone()),
            "path" => patch.path = Some(values.path.clone()),
            "request_match" => {
                patch.matcher = Some(
                    parse_request_match(values.request_match.as_ref())
                        .map_err(|e| e.within("patch"))?,
                );
            }
            "priority" => patch.priority = Some(values.priority),
            "state" => patch.state = Some(raw_state(values.state.as_ref())),
            "latency" | "chaos" => {
                // Each names one half; the other half stays as it is.
                let parsed = parse_realism(values.latency.as_ref(), values.chaos.as_ref())
                    .map_err(|e| e.within("patch"))?;
                if path == "latency" {
                    patch.latency = Some(parsed.latency);
                } else {
                    patch.chaos = Some(parsed.chaos);
                }
            }
            "response" => {
                // Checks the response as a whole, so a bad one names its field.
                let spec = parse_response(response()?).map_err(|e| e.within("patch.response"))?;
                patch.status = Some(u32::from(spec.status));
                patch.headers = Some(spec.headers);
                patch.body = Some(spec.body);
                patch.template = Some(spec.template);
            }
            "response.status" => patch.status = Some(response()?.status),
            "response.headers" => {
                patch.headers = Some(
                    response()?
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                );
            }
            "response.body" => patch.body = Some(Bytes::copy_from_slice(&response()?.body)),
            "response.template" => patch.template = Some(response()?.template),
            // mask_paths admits only MASK_FIELDS.
            _ => {}
        }
    }
    Ok(patch)
}
