//! The audit trail: list its events, verify its hash chain, prune old
//! content. All of it needs the org role owner or admin.

use anyhow::anyhow;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{self, AuditEventView, AuditPruneView, AuditVerifyView, Format};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List the org's audit events, newest first: one for every change
    /// made through the API.
    List(ListArgs),
    /// Recompute every event's digest and the hash chain; fails when an
    /// event was edited, removed or reordered, naming the first.
    Verify,
    /// Empty the content of events older than their environment's
    /// retention; the events stay in the chain. Environments that require
    /// a reason (prod by default) are never pruned.
    Prune {
        /// Days to keep per environment, comma separated: `dev=30,test=90`.
        /// Default: the control plane's --audit-retention.
        #[arg(long, value_name = "ENV=DAYS,...", value_parser = parse_retention)]
        retention: Option<Retention>,
        /// Only say how many events would be pruned.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
pub struct ListArgs {
    /// Only events of this workspace (slug or id).
    #[arg(long, default_value = "", hide_default_value = true)]
    workspace: String,
    /// Only events of this environment.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    env: String,
    /// Only events of this actor: `user:<id>`, `service:<id>` or `system`.
    #[arg(
        long = "actor",
        value_name = "ID",
        default_value = "",
        hide_default_value = true
    )]
    actor: String,
    /// Only actions starting with this: `api_key.`, `route.`,
    /// `workspace.delete`.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    action: String,
    #[command(flatten)]
    window: Window,
    /// At most this many events, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_EVENTS))]
    limit: u32,
}

/// Most events one `audit list` gathers.
const MAX_EVENTS: i64 = 100_000;

/// A window of time given on the command line.
#[derive(Args)]
pub struct Window {
    /// From this time on: RFC 3339 (`2024-05-01T12:00:00Z`) or a date
    /// (`2024-05-01`, its midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Up to this time: RFC 3339 or a date.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
}

impl Window {
    /// The window as the API takes it; `--until` before `--since` is
    /// refused before anything is sent.
    pub fn timestamps(
        &self,
    ) -> anyhow::Result<(
        Option<prost_types::Timestamp>,
        Option<prost_types::Timestamp>,
    )> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until < since
        {
            return Err(anyhow!(
                "--until {} is before --since {}: the window runs from --since to --until",
                until.to_rfc3339(),
                since.to_rfc3339()
            ));
        }
        let stamp = |t: DateTime<Utc>| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        };
        Ok((self.since.map(stamp), self.until.map(stamp)))
    }
}

/// A time: RFC 3339 (`2024-05-01T12:00:00Z`, `…+02:00`; a space for the
/// `T`, as the CLI prints times, is fine too) or a date (its midnight UTC).
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let text = raw.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(format!(
        "{raw:?} is not a time: give RFC 3339 with a time zone (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00) or a date (2024-05-01)"
    ))
}

/// Days to keep per environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention(Vec<(String, u32)>);

/// `dev=30,test=90`: every environment once, every number of days at
/// least 1.
pub fn parse_retention(raw: &str) -> Result<Retention, String> {
    let mut pairs: Vec<(String, u32)> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (env, days) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not <environment>=<days>, e.g. dev=30"))?;
        let env = env.trim();
        if env.is_empty() {
            return Err(format!(
                "`{part}` names no environment; write <environment>=<days>"
            ));
        }
        let days: u32 =
            days.trim().parse().ok().filter(|d| *d > 0).ok_or_else(|| {
                format!("`{part}`: the days must be a whole number of at least 1")
            })?;
        if pairs.iter().any(|(seen, _)| seen == env) {
            return Err(format!("`{env}` is given more than once"));
        }
        pairs.push((env.to_owned(), days));
    }
    if pairs.is_empty() {
        return Err("names no environment; write e.g. dev=30,test=90".to_owned());
    }
    Ok(Retention(pairs))
}

const EVENT_COLUMNS: [&str; 7] = [
    "seq",
    "time",
    "actor",
    "action",
    "resource",
    "environment",
    "reason",
];
const PRUNED_COLUMNS: [&str; 2] = ["environment", "events"];

pub async fn audit(
    server: &str,
    token: Option<&str>,
    command: AuditCommand,
    format: Format,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::List(args) => list(server, token, args, format).await,
        AuditCommand::Verify => verify(server, token, format).await,
        AuditCommand::Prune { retention, dry_run } => {
            prune(server, token, retention, dry_run, format).await
        }
    }
}

/// Follows page tokens until `--limit` events or the last page.
async fn list(
    server: &str,
    token: Option<&str>,
    args: ListArgs,
    format: Format,
) -> anyhow::Result<()> {
    let (since, until) = args.window.timestamps()?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    // The control plane drops `_` and `%` from the action prefix (instead
    // of escaping them for its LIKE), so `api_key.` would match nothing:
    // ask for the part before the first of them, and keep here the events
    // whose action starts with the whole prefix.
    let (sent_prefix, filter_here) = match args.action.find(['_', '%']) {
        Some(at) => (args.action[..at].to_owned(), true),
        None => (args.action.clone(), false),
    };
    let mut api = Api::connect(server, token).await?;
    let mut events: Vec<v1::AuditEvent> = Vec::new();
    let mut page_token = String::new();
    while events.len() < limit {
        let wanted = if filter_here {
            1000
        } else {
            u32::try_from((limit - events.len()).min(1000)).unwrap_or(1000)
        };
        let page = api
            .audit
            .list_audit_events(v1::ListAuditEventsRequest {
                workspace: args.workspace.clone(),
                environment: args.env.clone(),
                actor_id: args.actor.clone(),
                action: sent_prefix.clone(),
                since,
                until,
                page_size: wanted,
                page_token: page_token.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        events.extend(
            page.events
                .into_iter()
                .filter(|event| !filter_here || event.action.starts_with(&args.action)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == page_token {
            return Err(anyhow!(
                "the control plane answered the same page of audit events twice; stopped listing"
            ));
        }
        page_token = page.next_page_token;
    }
    events.truncate(limit);
    let views: Vec<AuditEventView> = events.iter().map(AuditEventView::from).collect();
    output::list(format, &views, &EVENT_COLUMNS);
    Ok(())
}

/// Prints what was found; a broken chain is an error, so the exit status
/// says it too.
async fn verify(server: &str, token: Option<&str>, format: Format) -> anyhow::Result<()> {
    let verified = Api::connect(server, token)
        .await?
        .audit
        .verify_audit_chain(v1::VerifyAuditChainRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let view = AuditVerifyView::from(&verified);
    if format == Format::Json {
        output::json(&view);
    }
    if !verified.ok {
        return Err(anyhow!(
            "the audit chain is broken at seq {}: {} ({} events checked); the events from seq {} on cannot be trusted",
            verified.broken_seq,
            verified.problem,
            verified.events,
            verified.broken_seq
        ));
    }
    if format == Format::Table {
        if view.events == 0 {
            outln!("ok: the audit trail has no events yet");
        } else {
            outln!(
                "ok: {} events verify; head seq {}, hash {}",
                view.events,
                view.head_seq,
                view.head_hash
            );
        }
    }
    Ok(())
}

async fn prune(
    server: &str,
    token: Option<&str>,
    retention: Option<Retention>,
    dry_run: bool,
    format: Format,
) -> anyhow::Result<()> {
    let pruned = Api::connect(server, token)
        .await?
        .audit
        .prune_audit_events(v1::PruneAuditEventsRequest {
            retention_days: retention
                .map(|r| r.0)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            dry_run,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let view = AuditPruneView::from(&pruned);
    match format {
        Format::Json => output::json(&view),
        Format::Table => {
            let total: u64 = view.pruned.iter().map(|p| p.events).sum();
            if total == 0 {
                outln!(
                    "{}",
                    if view.dry_run {
                        "nothing would be pruned"
                    } else {
                        "nothing was pruned"
                    }
                );
            } else {
                output::list(format, &view.pruned, &PRUNED_COLUMNS);
            }
            if !view.protected.is_empty() {
                outln!("protected (never pruned): {}", view.protected.join(", "));
            }
            if view.dry_run && total > 0 {
                outln!("dry run: nothing was pruned; run again without --dry-run to prune");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_say_what_is_wrong() {
        let at = |raw| parse_time(raw).unwrap().to_rfc3339();
        assert_eq!(at("2024-05-01T12:00:00Z"), "2024-05-01T12:00:00+00:00");
        assert_eq!(at("2024-05-01T14:00:00+02:00"), "2024-05-01T12:00:00+00:00");
        assert_eq!(at("2024-05-01 12:00:00Z"), "2024-05-01T12:00:00+00:00");
        assert_eq!(at("2024-05-01"), "2024-05-01T00:00:00+00:00");
        for bad in ["yesterday", "2024-05-01T12:00:00", "2024-13-01", ""] {
            let error = parse_time(bad).unwrap_err();
            assert!(
                error.contains("is not a time") && error.contains("RFC 3339"),
                "{error}"
            );
        }
        let window = Window {
            since: parse_time("2024-05-02").ok(),
            until: parse_time("2024-05-01").ok(),
        };
        let error = window.timestamps().unwrap_err().to_string();
        assert!(
            error.contains("--until") && error.contains("before --since"),
            "{error}"
        );
        let window = Window {
            since: parse_time("2024-05-01T00:00:00.5Z").ok(),
            until: None,
        };
        let (since, until) = window.timestamps().unwrap();
        assert_eq!(
            since,
            Some(prost_types::Timestamp {
                seconds: 1_714_521_600,
                nanos: 500_000_000
            })
        );
        assert_eq!(until, None);
    }

    #[test]
    fn retention_parses_and_says_what_is_wrong() {
        assert_eq!(
            parse_retention("dev=30, test=90").unwrap(),
            Retention(vec![("dev".into(), 30), ("test".into(), 90)])
        );
        let error = |raw| parse_retention(raw).unwrap_err();
        assert!(error("dev").contains("<environment>=<days>"));
        assert!(error("dev=0").contains("at least 1"));
        assert!(error("dev=x").contains("whole number"));
        assert!(error("dev=-3").contains("whole number"));
        assert!(error("=3").contains("names no environment"));
        assert!(error("dev=1,dev=2").contains("more than once"));
        assert!(error(" , ").contains("names no environment"));
    }
}
