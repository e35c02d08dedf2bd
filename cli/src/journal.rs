//! `mockplane journal`: the latest requests the nodes answered.

use clap::Args;
use mockplane_proto::v1;

use crate::client::{Api, status_error};
use crate::output::{self, Format, JournalView};

#[derive(Args)]
pub(crate) struct JournalArgs {
    pub(crate) workspace: String,
    /// Only requests to this environment.
    #[arg(
        long = "env",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    pub(crate) env: String,
    /// Only requests with this method.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub(crate) method: String,
    /// Only requests whose whole path starts with this: `/w/<slug>/orders`.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    pub(crate) path: String,
    /// Only requests answered with this status.
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=599))]
    pub(crate) status: Option<u32>,
    /// Only requests no route answered.
    #[arg(long)]
    pub(crate) unmatched: bool,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,
}

pub(crate) const JOURNAL_COLUMNS: [&str; 7] = [
    "time", "env", "method", "path", "status", "outcome", "route",
];

pub(crate) async fn journal(
    server: &str,
    token: Option<&str>,
    args: JournalArgs,
    format: Format,
) -> anyhow::Result<()> {
    let listed = Api::connect(server, token)
        .await?
        .journal
        .list_requests(v1::ListRequestsRequest {
            workspace: args.workspace,
            environment: args.env,
            method: args.method,
            path_prefix: args.path,
            status: args.status.unwrap_or(0),
            unmatched_only: args.unmatched,
            since: None,
            limit: args.limit,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !listed.unreachable_nodes.is_empty() {
        eprintln!(
            "note: {} of {} nodes did not answer, their requests are missing: {}",
            listed.unreachable_nodes.len(),
            listed.nodes_asked,
            listed.unreachable_nodes.join(", ")
        );
    }
    let views: Vec<JournalView> = listed.entries.iter().map(JournalView::from).collect();
    output::list(format, &views, &JOURNAL_COLUMNS);
    Ok(())
}
