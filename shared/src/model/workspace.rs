//! Workspace fields as users set them, validated.

use crate::model::environment::{
    EnvSettings, MAX_ENVIRONMENTS, SettingsPatch, default_environments,
};
use crate::model::error::FieldError;
use crate::model::route::parse_name;
use crate::model::slug::Slug;

/// Longest workspace description.
pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// A workspace to create: every field a workspace has, so that one is
/// born as it is meant to be (protected by keys, with its chain) rather
/// than changed right after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkspace {
    pub slug: Slug,
    pub name: String,
    pub description: String,
    /// The environment that serves requests naming none; the first of the
    /// chain when `None`.
    pub active_environment: Option<Slug>,
    /// The promotion chain, of the default environments; dev → test → prod
    /// when `None`.
    pub promotion_chain: Option<Vec<Slug>>,
    pub allow_promotion_skips: bool,
    /// Settings every environment inherits.
    pub environment_defaults: EnvSettings,
    /// Whether every request must present an API key of its environment.
    pub require_api_keys: bool,
}

impl NewWorkspace {
    /// A workspace with the default environments and settings. An empty
    /// name defaults to the slug.
    pub fn parse(slug: &str, name: &str, description: &str) -> Result<Self, FieldError> {
        let slug = parse_slug(slug)?;
        let name = parse_workspace_name(name)?;
        Ok(Self {
            name: if name.is_empty() {
                slug.to_string()
            } else {
                name
            },
            slug,
            description: parse_description(description)?,
            active_environment: None,
            promotion_chain: None,
            allow_promotion_skips: false,
            environment_defaults: EnvSettings::default(),
            require_api_keys: false,
        })
    }

    /// The environments a new workspace has.
    pub fn environment_names() -> Vec<Slug> {
        default_environments()
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Its promotion chain: as given, else every environment in order.
    pub fn chain(&self) -> Vec<Slug> {
        self.promotion_chain
            .clone()
            .unwrap_or_else(Self::environment_names)
    }

    /// Its active environment: as given, else the first of the chain.
    pub fn active(&self) -> Slug {
        self.active_environment
            .clone()
            .unwrap_or_else(|| self.chain()[0].clone())
    }

    /// Checks what it sets against the environments a new workspace has.
    pub fn check(&self) -> Result<(), FieldError> {
        let names = Self::environment_names();
        let listed = names
            .iter()
            .map(Slug::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let chain = self.chain();
        check_chain(&chain)?;
        for (index, step) in chain.iter().enumerate() {
            if !names.contains(step) {
                return Err(FieldError::new(
                    format!("promotion_chain[{index}]"),
                    format!("'{step}' is not an environment of a new workspace; it has {listed}"),
                ));
            }
        }
        let active = self.active();
        if !names.contains(&active) {
            return Err(FieldError::new(
                "active_environment",
                format!("'{active}' is not an environment of a new workspace; it has {listed}"),
            ));
        }
        self.environment_defaults
            .check()
            .map_err(|e| e.within("environment_defaults"))
    }
}

/// Changes to a workspace; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspacePatch {
    pub slug: Option<Slug>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The environment that serves requests naming none.
    pub active_environment: Option<Slug>,
    /// The promotion chain, in order; environments left out go off it.
    pub promotion_chain: Option<Vec<Slug>>,
    pub allow_promotion_skips: Option<bool>,
    /// Changes to the settings every environment inherits.
    pub environment_defaults: Option<SettingsPatch>,
    /// Whether every request must present an API key of its environment.
    pub require_api_keys: Option<bool>,
}

impl WorkspacePatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the patch changes what nodes serve beyond the slug.
    pub fn changes_environments(&self) -> bool {
        self.active_environment.is_some()
            || self.promotion_chain.is_some()
            || self.environment_defaults.is_some()
            || self.require_api_keys.is_some()
    }
}

/// Checks a promotion chain: 1 to [`MAX_ENVIRONMENTS`] distinct names.
pub fn check_chain(chain: &[Slug]) -> Result<(), FieldError> {
    if chain.is_empty() || chain.len() > MAX_ENVIRONMENTS {
        return Err(FieldError::new(
            "promotion_chain",
            format!(
                "name 1 to {MAX_ENVIRONMENTS} environments in promotion order, got {}",
                chain.len()
            ),
        ));
    }
    for (index, name) in chain.iter().enumerate() {
        if chain[..index].contains(name) {
            return Err(FieldError::new(
                format!("promotion_chain[{index}]"),
                format!("'{name}' appears twice"),
            ));
        }
    }
    Ok(())
}

pub fn parse_slug(raw: &str) -> Result<Slug, FieldError> {
    Slug::parse(raw).map_err(|e| FieldError::new("slug", e.to_string()))
}

pub fn parse_workspace_name(raw: &str) -> Result<String, FieldError> {
    parse_name(raw).map_err(|m| FieldError::new("name", m))
}

pub fn parse_description(raw: &str) -> Result<String, FieldError> {
    if raw.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(raw.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_defaults_to_slug() {
        let ws = NewWorkspace::parse("demo", "  ", "").unwrap();
        assert_eq!(ws.name, "demo");
        assert_eq!(
            NewWorkspace::parse("Demo", "", "").unwrap_err().field,
            "slug"
        );
        let long = "x".repeat(MAX_DESCRIPTION_LEN + 1);
        assert_eq!(
            NewWorkspace::parse("d", "", &long).unwrap_err().field,
            "description"
        );
    }
}
