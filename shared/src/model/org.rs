//! An org's settings: whether members may create workspaces, and its
//! quotas. Stored as JSON with the org; a field left out takes its default,
//! so quotas added later apply to existing orgs at their defaults.

use serde::{Deserialize, Serialize};

use crate::model::config::MAX_ROUTES_PER_WORKSPACE;
use crate::model::error::{FieldError, parse_reason};

/// The quotas' defaults and the most each may be set to.
pub const DEFAULT_MAX_WORKSPACES: u32 = 1_000;
pub const MOST_WORKSPACES: u32 = 100_000;
pub const DEFAULT_MAX_API_KEYS: u32 = 10_000;
pub const MOST_API_KEYS: u32 = 1_000_000;
pub const DEFAULT_MAX_MEMBERS: u32 = 1_000;
pub const MOST_MEMBERS: u32 = 100_000;

/// The longest display name an org may have, in characters.
pub const MAX_DISPLAY_NAME: usize = 200;

/// An org's display name as given: trimmed, at most [`MAX_DISPLAY_NAME`]
/// characters (empty: the org's name shows).
pub fn parse_display_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(FieldError::new(
            "display_name",
            format!(
                "is at most {MAX_DISPLAY_NAME} characters, got {}",
                name.chars().count()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The reason an org is deleted for (see [`parse_reason`]). It stays in
/// the audit trail when the rest of the org's events are pruned.
pub fn parse_delete_reason(raw: &str) -> Result<String, FieldError> {
    parse_reason(
        raw,
        "say why the org is deleted (e.g. \"customer closed their account, ticket 4411\")",
    )
}

/// Most of each thing an org may hold; `None` takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workspaces: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_routes_per_workspace: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_keys: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<u32>,
}

/// One quota, as errors and masks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Workspaces,
    RoutesPerWorkspace,
    ApiKeys,
    Members,
}

impl Quota {
    pub const ALL: [Quota; 4] = [
        Quota::Workspaces,
        Quota::RoutesPerWorkspace,
        Quota::ApiKeys,
        Quota::Members,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Workspaces => "max_workspaces",
            Quota::RoutesPerWorkspace => "max_routes_per_workspace",
            Quota::ApiKeys => "max_api_keys",
            Quota::Members => "max_members",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == raw)
    }

    fn default_value(self) -> u32 {
        match self {
            Quota::Workspaces => DEFAULT_MAX_WORKSPACES,
            Quota::RoutesPerWorkspace => MAX_ROUTES_PER_WORKSPACE as u32,
            Quota::ApiKeys => DEFAULT_MAX_API_KEYS,
            Quota::Members => DEFAULT_MAX_MEMBERS,
        }
    }

    /// The most it may be set to.
    pub fn most(self) -> u32 {
        match self {
            Quota::Workspaces => MOST_WORKSPACES,
            Quota::RoutesPerWorkspace => MAX_ROUTES_PER_WORKSPACE as u32,
            Quota::ApiKeys => MOST_API_KEYS,
            Quota::Members => MOST_MEMBERS,
        }
    }
}

impl Quotas {
    fn field(&self, quota: Quota) -> Option<u32> {
        match quota {
            Quota::Workspaces => self.max_workspaces,
            Quota::RoutesPerWorkspace => self.max_routes_per_workspace,
            Quota::ApiKeys => self.max_api_keys,
            Quota::Members => self.max_members,
        }
    }

    pub fn set(&mut self, quota: Quota, value: Option<u32>) {
        match quota {
            Quota::Workspaces => self.max_workspaces = value,
            Quota::RoutesPerWorkspace => self.max_routes_per_workspace = value,
            Quota::ApiKeys => self.max_api_keys = value,
            Quota::Members => self.max_members = value,
        }
    }

    /// The quota in force: the value set, else the default.
    pub fn get(&self, quota: Quota) -> u32 {
        self.field(quota).unwrap_or(quota.default_value())
    }

    /// Every quota in force.
    pub fn effective(&self) -> Quotas {
        let mut all = Quotas::default();
        for quota in Quota::ALL {
            all.set(quota, Some(self.get(quota)));
        }
        all
    }

    /// Checks each value set; the error names it (`quotas.<name>`).
    pub fn check(&self) -> Result<(), FieldError> {
        for quota in Quota::ALL {
            if let Some(value) = self.field(quota)
                && !(1..=quota.most()).contains(&value)
            {
                return Err(FieldError::new(
                    format!("quotas.{}", quota.as_str()),
                    format!("must be 1 to {}, got {value}", quota.most()),
                ));
            }
        }
        Ok(())
    }

    /// The refusal of one more thing past a quota: names it and its value.
    pub fn exceeded(&self, quota: Quota, have: u64) -> String {
        format!(
            "the org's quota {} is {} and it has {have}; a platform admin can raise it (`mockplane org update --{}`)",
            quota.as_str(),
            self.get(quota),
            quota.as_str().replace('_', "-")
        )
    }
}

/// An org's settings as set; `None` takes the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Members (not only owners and admins) may create workspaces;
    /// default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_create_workspaces: Option<bool>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub quotas: Quotas,
}

fn is_default(quotas: &Quotas) -> bool {
    *quotas == Quotas::default()
}

impl OrgSettings {
    pub fn members_create_workspaces(&self) -> bool {
        self.members_create_workspaces.unwrap_or(true)
    }

    pub fn check(&self) -> Result<(), FieldError> {
        self.quotas.check()
    }

    /// Reads stored settings; what cannot be read is the defaults (the
    /// store writes only checked settings).
    pub fn from_stored(raw: &str) -> Self {
        serde_json::from_str(raw).unwrap_or_default()
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_default_check_and_name_themselves() {
        let quotas = Quotas::default();
        assert_eq!(quotas.get(Quota::Workspaces), 1_000);
        assert_eq!(quotas.get(Quota::RoutesPerWorkspace), 2_000);
        let set = Quotas {
            max_workspaces: Some(3),
            ..Default::default()
        };
        assert_eq!(set.get(Quota::Workspaces), 3);
        assert_eq!(set.effective().max_api_keys, Some(DEFAULT_MAX_API_KEYS));
        for (bad, field) in [
            (
                Quotas {
                    max_workspaces: Some(0),
                    ..Default::default()
                },
                "quotas.max_workspaces",
            ),
            (
                Quotas {
                    max_routes_per_workspace: Some(2_001),
                    ..Default::default()
                },
                "quotas.max_routes_per_workspace",
            ),
        ] {
            assert_eq!(bad.check().unwrap_err().field, field);
        }
        let refusal = set.exceeded(Quota::Workspaces, 3);
        assert!(refusal.contains("max_workspaces is 3"), "{refusal}");
        assert!(refusal.contains("--max-workspaces"), "{refusal}");
        assert_eq!(Quota::parse("max_members"), Some(Quota::Members));
        assert_eq!(parse_display_name("  Acme ").unwrap(), "Acme");
        let long = parse_display_name(&"é".repeat(201)).unwrap_err();
        assert_eq!(long.field, "display_name");
        assert!(long.message.contains("got 201"), "{long}");
        assert!(parse_display_name("Acme\u{1b}[31m").is_err());
        assert_eq!(
            parse_delete_reason("  contract ended  ").unwrap(),
            "contract ended"
        );
        let short = parse_delete_reason(" bye ").unwrap_err();
        assert_eq!(short.field, "reason");
        assert!(short.message.contains("got 3"), "{short}");
        assert!(parse_delete_reason("closed\naccount").is_err());
    }

    #[test]
    fn settings_round_trip_and_default() {
        let settings = OrgSettings {
            members_create_workspaces: Some(false),
            quotas: Quotas {
                max_members: Some(5),
                ..Default::default()
            },
        };
        let stored = settings.to_stored();
        assert_eq!(OrgSettings::from_stored(&stored), settings);
        assert_eq!(OrgSettings::from_stored("{}"), OrgSettings::default());
        assert!(OrgSettings::default().members_create_workspaces());
        assert_eq!(OrgSettings::default().to_stored(), "{}");
    }
}
