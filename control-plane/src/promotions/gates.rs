//! The gates of a promotion, over what one transaction gathered: the
//! pure evaluation (`shared::promotion::evaluate`) bound to the workspace's
//! settings for the target.

use mockplane_shared::governance::promotion::{
    CheckState, Evaluation, Inputs, Subject, evaluate as run,
};

use crate::store::{Entity, Gathered, StoreError, StoreResult, WorkspaceRecord};

/// Runs the gates for `target` with the external checks `reported`.
pub(super) fn evaluate(
    gathered: &Gathered,
    ws: &WorkspaceRecord,
    target: &str,
    reported: &[(String, CheckState)],
) -> StoreResult<Evaluation> {
    let env = ws.environment(target).ok_or_else(|| {
        StoreError::FailedPrecondition(format!(
            "environment '{target}' of workspace '{}' no longer exists",
            ws.slug
        ))
    })?;
    let settings = env.settings.over(&ws.environment_defaults).effective();
    let subject = match &gathered.entity {
        Entity::Scenario {
            checks,
            promoted,
            served,
            others,
            personas,
            ..
        } => Subject::Scenario {
            workspace: ws.slug.as_str(),
            promoted,
            served,
            others,
            checks,
            personas,
        },
        Entity::Persona {
            promoted, current, ..
        } => Subject::Persona {
            name: &gathered.name,
            promoted,
            served: current.as_ref().map(|(_, data)| data),
        },
        Entity::Environment {
            promoted,
            target,
            defaults,
            ..
        } => Subject::Environment {
            promoted,
            served: target,
            defaults,
        },
    };
    Ok(run(&Inputs {
        target,
        settings: &settings,
        rules: &gathered.rules,
        tags: &gathered.tags,
        subject,
        reported,
    }))
}
