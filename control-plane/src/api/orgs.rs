//! `mockplane.v1.OrgService`: orgs made by platform admins, their display
//! name, settings and quotas, and their deletion.
//!
//! A caller acts in its own org. A platform admin may name any org (by
//! name or id); anyone else naming another org learns nothing of it
//! (`NOT_FOUND`, as for every other tenant's resource). Quotas are the
//! platform's to set: only a platform admin changes them, even in its own
//! org.

use std::num::NonZeroU32;

use mockplane_proto::v1;
use mockplane_proto::v1::org_service_server::OrgService;
use mockplane_shared::FieldError;
use mockplane_shared::model::org::{Quota, Quotas, parse_delete_reason, parse_display_name};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use mockplane_shared::Slug;
use mockplane_shared::governance::access::OrgRole;

use super::authz::{Caller, Grant, Target};
use super::error::{ApiError, missing};
use super::identity::{check_email, principal_proto};
use super::{
    ApiState, decode_page_token, encode_page_token, etag, mask_paths, page_size, parse_etag,
    timestamp,
};
use crate::identity::password;
use crate::store::{NewPrincipal, OrgPatch, OrgRecord, OrgUsage, PrincipalKind, StoreError};

pub struct Orgs(pub ApiState);

fn saturate(count: u64) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn quotas_proto(quotas: &Quotas) -> v1::Quotas {
    let effective = quotas.effective();
    v1::Quotas {
        max_workspaces: effective.max_workspaces.unwrap_or_default(),
        max_routes_per_workspace: effective.max_routes_per_workspace.unwrap_or_default(),
        max_api_keys: effective.max_api_keys.unwrap_or_default(),
        max_members: effective.max_members.unwrap_or_default(),
    }
}

fn usage_proto(usage: &OrgUsage) -> v1::OrgUsage {
    v1::OrgUsage {
        workspaces: saturate(usage.workspaces),
        api_keys: saturate(usage.api_keys),
        members: saturate(usage.members),
    }
}

pub fn to_proto(record: &OrgRecord) -> v1::Org {
    v1::Org {
        id: record.id.to_string(),
        name: record.name.clone(),
        display_name: record.display_name.clone(),
        settings: Some(v1::OrgSettings {
            members_create_workspaces: Some(record.settings.members_create_workspaces()),
            quotas: Some(quotas_proto(&record.settings.quotas)),
        }),
        usage: Some(usage_proto(&record.usage)),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        etag: etag(record.version),
    }
}

const QUOTAS: &str = "settings.quotas";
const MEMBERS_CREATE: &str = "settings.members_create_workspaces";

/// The paths an update mask may name.
fn allowed_paths() -> Vec<String> {
    let mut paths = vec![
        "display_name".to_owned(),
        MEMBERS_CREATE.to_owned(),
        QUOTAS.to_owned(),
    ];
    paths.extend(Quota::ALL.map(|q| format!("{QUOTAS}.{}", q.as_str())));
    paths
}

/// The changes an update asks for. A quota of 0 (or left out under a
/// masked `settings.quotas`) goes back to its default.
pub fn org_patch(request: &v1::UpdateOrgRequest) -> Result<OrgPatch, FieldError> {
    let allowed = allowed_paths();
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let paths = mask_paths(request.update_mask.as_ref(), &allowed)?;
    let values = request
        .patch
        .as_ref()
        .ok_or_else(|| FieldError::new("patch", "is required"))?;
    let settings = values.settings.unwrap_or_default();
    let quotas = settings.quotas.unwrap_or_default();
    let value_of = |quota: Quota| {
        let raw = match quota {
            Quota::Workspaces => quotas.max_workspaces,
            Quota::RoutesPerWorkspace => quotas.max_routes_per_workspace,
            Quota::ApiKeys => quotas.max_api_keys,
            Quota::Members => quotas.max_members,
        };
        (raw != 0).then_some(raw)
    };
    let mut patch = OrgPatch::default();
    for path in paths {
        match path {
            "display_name" => {
                patch.display_name = Some(values.display_name.clone());
            }
            MEMBERS_CREATE => {
                patch.members_create_workspaces = Some(settings.members_create_workspaces);
            }
            QUOTAS => {
                for quota in Quota::ALL {
                    patch.quotas.push((quota, value_of(quota)));
                }
            }
            quota => {
                // mask_paths admits only the paths above and one per quota.
                if let Some(quota) = quota
                    .strip_prefix("settings.quotas.")
                    .and_then(Quota::parse)
                {
                    patch.quotas.push((quota, value_of(quota)));
                }
            }
        }
    }
    Ok(patch)
}

impl Orgs {
    /// The org a request names: the caller's own when it names none or
    /// names its own; another only for a platform admin.
    async fn target(&self, grant: &Grant, named: &str) -> Result<Uuid, Status> {
        let named = named.trim();
        let own = grant.org_id();
        if named.is_empty() || named == own.to_string() {
            return Ok(own);
        }
        let not_found = || Status::not_found(format!("org '{named}' not found"));
        if !grant.caller.principal.platform_admin {
            let own_record = grant.store().get_org(own).await.map_err(ApiError::from)?;
            return if own_record.name == named {
                Ok(own)
            } else {
                Err(not_found())
            };
        }
        grant
            .store()
            .find_org(named)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(not_found)
    }
}

fn platform_only(caller: &Caller, what: &str) -> Result<(), Status> {
    if caller.principal.platform_admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "only a platform admin may change {what}"
        )))
    }
}

/// A new org's first owner: a user signing in with `password` (hashed off
/// the async workers), who must change it first when `one_time`.
async fn new_owner(
    email: String,
    password: String,
    one_time: bool,
) -> Result<NewPrincipal, Status> {
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|_| Status::internal("hashing failed"))?
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(NewPrincipal {
        kind: PrincipalKind::User,
        name: email.clone(),
        email: Some(email),
        org_role: OrgRole::Owner,
        password_hash: Some(hash),
        must_change_password: one_time,
    })
}

const PAGE_KIND: &str = "orgs";

/// Sign-ups allowed (`--allow-signup`): at most so many a minute on this
/// replica, so a script cannot fill the platform with orgs.
pub struct Signups {
    limiter: governor::DefaultDirectRateLimiter,
    per_minute: NonZeroU32,
}

impl Signups {
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            limiter: governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)),
            per_minute,
        }
    }

    fn admit(&self) -> Result<(), Status> {
        self.limiter.check().map_err(|_| {
            Status::resource_exhausted(format!(
                "this control plane takes at most {} sign-ups a minute; try again in a minute",
                self.per_minute
            ))
        })
    }
}

#[tonic::async_trait]
impl OrgService for Orgs {
    async fn create_org(
        &self,
        request: Request<v1::CreateOrgRequest>,
    ) -> Result<Response<v1::CreateOrgResponse>, Status> {
        let grant = self.0.platform(&request)?;
        let request = request.into_inner();
        let name = Slug::parse(request.name.trim())
            .map_err(|e| ApiError::Invalid(FieldError::new("name", e.to_string())))?;
        let display_name = parse_display_name(&request.display_name).map_err(ApiError::from)?;
        if request.owner_email.trim().is_empty() {
            return Err(missing("owner_email").into());
        }
        let email = check_email(&request.owner_email).map_err(|status| {
            Status::invalid_argument(status.message().replacen("email", "owner_email", 1))
        })?;
        let one_time = password::generate();
        let owner = new_owner(email, one_time.clone(), true).await?;
        let (org, owner) = grant
            .store()
            .create_org_with_owner(
                name.as_str(),
                &display_name,
                &owner,
                Some(grant.caller.home_org()),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::CreateOrgResponse {
            org: Some(to_proto(&org)),
            owner: Some(principal_proto(&owner)),
            one_time_password: one_time,
        }))
    }

    async fn list_orgs(
        &self,
        request: Request<v1::ListOrgsRequest>,
    ) -> Result<Response<v1::ListOrgsResponse>, Status> {
        let grant = self.0.authenticated(&request)?;
        let request = request.into_inner();
        if !grant.caller.principal.platform_admin {
            // Anyone else sees their own org, on one page.
            let own = grant
                .store()
                .get_org(grant.org_id())
                .await
                .map_err(ApiError::from)?;
            return Ok(Response::new(v1::ListOrgsResponse {
                orgs: vec![to_proto(&own)],
                next_page_token: String::new(),
            }));
        }
        let after = decode_page_token(PAGE_KIND, &request.page_token).map_err(ApiError::from)?;
        let page = grant
            .store()
            .list_orgs(after, page_size(request.page_size, 100, 1000))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListOrgsResponse {
            orgs: page.items.iter().map(to_proto).collect(),
            next_page_token: page
                .next
                .map(|name| encode_page_token(PAGE_KIND, &name))
                .unwrap_or_default(),
        }))
    }

    async fn get_org(
        &self,
        request: Request<v1::GetOrgRequest>,
    ) -> Result<Response<v1::Org>, Status> {
        let grant = self.0.authenticated(&request)?;
        let org = self.target(&grant, &request.get_ref().org).await?;
        let record = grant.store().get_org(org).await.map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn update_org(
        &self,
        request: Request<v1::UpdateOrgRequest>,
    ) -> Result<Response<v1::Org>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let message = request.get_ref();
        let patch = org_patch(message).map_err(ApiError::from)?;
        let expected = parse_etag(&message.etag).map_err(ApiError::from)?;
        if !patch.quotas.is_empty() {
            platform_only(&grant.caller, "an org's quotas")?;
        }
        let org = self.target(&grant, &message.org).await?;
        let record = grant
            .store()
            .update_org(org, &patch, expected)
            .await
            .map_err(|e| match e {
                // The store names the org's fields; the request holds them
                // in its patch.
                StoreError::Invalid(field) => ApiError::Invalid(field.within("patch")),
                other => ApiError::from(other),
            })?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn sign_up(
        &self,
        request: Request<v1::SignUpRequest>,
    ) -> Result<Response<v1::SignUpResponse>, Status> {
        let public = self.0.public(&request)?;
        let Some(signups) = self.0.signup.as_ref() else {
            return Err(Status::permission_denied(
                "sign-up is off on this control plane: a platform admin creates orgs (`mockplane org create`), or it runs with --allow-signup",
            ));
        };
        let request = request.into_inner();
        let name = Slug::parse(request.name.trim())
            .map_err(|e| ApiError::Invalid(FieldError::new("name", e.to_string())))?;
        let display_name = parse_display_name(&request.display_name).map_err(ApiError::from)?;
        if request.email.trim().is_empty() {
            return Err(missing("email").into());
        }
        let email = check_email(&request.email)?;
        password::check_policy(&request.password)
            .map_err(|message| ApiError::Invalid(FieldError::new("password", message)))?;
        // Only well-formed sign-ups count against the rate.
        signups.admit()?;
        let owner = new_owner(email, request.password, false).await?;
        let (org, owner) = public
            .store()
            .create_org_with_owner(name.as_str(), &display_name, &owner, None)
            .await
            .map_err(|e| match e {
                // One answer for a taken name and a taken e-mail, so that
                // sign-up tells strangers as little as it can of who is here.
                StoreError::AlreadyExists(_) => Status::already_exists(
                    "that org name or e-mail address is taken; choose another name, or sign in (`mockplane login`) if the address is yours",
                ),
                other => ApiError::from(other).into(),
            })?;
        Ok(Response::new(v1::SignUpResponse {
            org: Some(to_proto(&org)),
            owner: Some(principal_proto(&owner)),
        }))
    }

    async fn delete_org(
        &self,
        request: Request<v1::DeleteOrgRequest>,
    ) -> Result<Response<v1::DeleteOrgResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let message = request.get_ref();
        if message.org.trim().is_empty() {
            return Err(missing("org").into());
        }
        let reason = parse_delete_reason(&message.reason).map_err(ApiError::from)?;
        let expected = parse_etag(&message.etag).map_err(ApiError::from)?;
        let org = self.target(&grant, &message.org).await?;
        let deleted = grant
            .store()
            .delete_org(org, &reason, Some(grant.caller.home_org()), expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::DeleteOrgResponse {
            name: deleted.name,
            deleted: Some(usage_proto(&deleted.usage)),
            audit_events_pruned: deleted.audit_events_pruned,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(paths: &[&str], patch: v1::Org) -> v1::UpdateOrgRequest {
        v1::UpdateOrgRequest {
            org: String::new(),
            patch: Some(patch),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            etag: String::new(),
        }
    }

    #[test]
    fn masks_pick_what_changes() {
        let patch = v1::Org {
            display_name: "  Acme  ".into(),
            settings: Some(v1::OrgSettings {
                members_create_workspaces: Some(false),
                quotas: Some(v1::Quotas {
                    max_workspaces: 3,
                    max_api_keys: 0,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let only_name = org_patch(&request(&["display_name"], patch.clone())).unwrap();
        assert_eq!(only_name.display_name.as_deref(), Some("  Acme  "));
        assert!(only_name.quotas.is_empty());
        assert_eq!(only_name.members_create_workspaces, None);

        let one = org_patch(&request(&["settings.quotas.max_workspaces"], patch.clone())).unwrap();
        assert_eq!(one.quotas, vec![(Quota::Workspaces, Some(3))]);

        let all = org_patch(&request(&["settings.quotas"], patch.clone())).unwrap();
        assert_eq!(all.quotas.len(), 4);
        assert!(all.quotas.contains(&(Quota::ApiKeys, None)));

        let members = org_patch(&request(&[MEMBERS_CREATE], patch.clone())).unwrap();
        assert_eq!(members.members_create_workspaces, Some(Some(false)));

        let unknown = org_patch(&request(&["name"], patch.clone())).unwrap_err();
        assert_eq!(unknown.field, "update_mask");
        let empty = org_patch(&request(&[], patch)).unwrap_err();
        assert!(
            empty.message.contains("settings.quotas.max_members"),
            "{empty}"
        );
    }
}
