//! Delivers the notification outbox: webhooks (HMAC-signed), e-mail over
//! SMTP, and GitOps pull requests. Any replica claims due deliveries with a
//! lease, delivers them and records each attempt; a failed attempt is
//! retried with exponential backoff until it succeeds or runs out of
//! attempts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::store::{ChannelKind, Claimed, GitOpsConfig, Outcome, Proposal, PullRequest, Store};

/// Header of a webhook delivery's signature.
pub const SIGNATURE_HEADER: &str = "x-mockplane-signature";
pub const TIMESTAMP_HEADER: &str = "x-mockplane-timestamp";
pub const EVENT_HEADER: &str = "x-mockplane-event";
pub const DELIVERY_HEADER: &str = "x-mockplane-delivery";

/// How long a claimed delivery is this replica's before another may take it.
const LEASE: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// How long one webhook call or SMTP exchange may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The SMTP relay e-mail goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// `host:port`.
    pub address: String,
    pub from: String,
}

impl Smtp {
    /// `smtp://host:port` (port 25 when left out).
    pub fn parse(url: &str, from: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("smtp://")
            .ok_or_else(|| anyhow!("{url:?} is not an smtp://host:port URL"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '@']) {
            bail!("{url:?} is not an smtp://host:port URL (no user, no path)");
        }
        let address = if rest
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            rest.to_owned()
        } else {
            format!("{rest}:25")
        };
        if !from.contains('@') || from.contains(['\r', '\n', '<', '>']) {
            bail!("{from:?} is not a sender address (name@host)");
        }
        Ok(Self {
            address,
            from: from.to_owned(),
        })
    }
}

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll: Duration,
    /// The wait after the first failed attempt; doubled after each.
    pub retry_base: Duration,
    pub max_attempts: u32,
    pub smtp: Option<Smtp>,
    /// Where GitOps clones repositories (one directory per delivery,
    /// removed afterwards).
    pub work_dir: PathBuf,
    /// Where deliveries may go (checked again at every delivery, after
    /// name resolution).
    pub outbound: Arc<crate::outbound::Outbound>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            retry_base: Duration::from_secs(2),
            max_attempts: 8,
            smtp: None,
            work_dir: std::env::temp_dir(),
            outbound: Arc::default(),
        }
    }
}

/// An error retrying cannot fix (a provider refusing the request).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Permanent(String);

/// `sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers due notifications every `settings.poll` until `shutdown`.
pub async fn run(store: Arc<dyn Store>, settings: Settings, shutdown: CancellationToken) {
    let outbound = settings.outbound.clone();
    // Names resolve to allowed addresses only; a redirect to a refused
    // address literal is not followed.
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .user_agent(concat!("mockplane/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(settings.outbound.resolver())
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let refused = attempt
                .url()
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                .and_then(|ip| outbound.refuses(ip));
            match refused {
                Some(why) => attempt.error(why),
                None if attempt.previous().len() >= 5 => attempt.stop(),
                None => attempt.follow(),
            }
        }))
        .build()
        .unwrap_or_default();
    let mut ticker = tokio::time::interval(settings.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let claimed = match store.claim_deliveries(chrono::Utc::now(), LEASE, 16).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim notifications; will retry");
                continue;
            }
        };
        let deliveries = claimed
            .into_iter()
            .map(|claimed| deliver_one(&*store, &http, &settings, claimed));
        futures::future::join_all(deliveries).await;
    }
}

async fn deliver_one(
    store: &dyn Store,
    http: &reqwest::Client,
    settings: &Settings,
    claimed: Claimed,
) {
    let attempt = claimed.attempts + 1;
    let (result, pull_request) = match claimed.channel.kind {
        ChannelKind::Webhook => (webhook(http, settings, &claimed).await, None),
        ChannelKind::Email => (email(settings.smtp.as_ref(), &claimed).await, None),
        ChannelKind::GitOps => match gitops(store, http, settings, &claimed).await {
            Ok(url) => (
                Ok(format!("pull request {url}")),
                Some(PullRequest::Opened(url)),
            ),
            Err(error) => {
                let message = format!("{error:#}");
                (Err(error), Some(PullRequest::Error(message)))
            }
        },
    };
    let outcome = match result {
        Ok(detail) => Outcome::Delivered { detail },
        Err(error) if error.downcast_ref::<Permanent>().is_some() => Outcome::Failed {
            error: format!("{error:#} (not retried)"),
        },
        Err(error) if attempt >= settings.max_attempts => Outcome::Failed {
            error: format!("gave up after {attempt} attempts: {error:#}"),
        },
        Err(error) => {
            let wait = settings
                .retry_base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(3600));
            Outcome::Retry {
                at: chrono::Utc::now() + chrono::TimeDelta::from_std(wait).unwrap_or_default(),
                error: format!("{error:#}"),
            }
        }
    };
    match &outcome {
        Outcome::Delivered { .. } => {
            tracing::info!(delivery = %claimed.id, event = %claimed.event, kind = claimed.channel.kind.as_str(), "notification delivered")
        }
        Outcome::Retry { error, at } => {
            tracing::warn!(delivery = %claimed.id, event = %claimed.event, %error, retry_at = %at, "notification not delivered; will retry")
        }
        Outcome::Failed { error } => {
            tracing::warn!(delivery = %claimed.id, event = %claimed.event, %error, "notification given up")
        }
    }
    if let Err(error) = store.record_attempt(&claimed, outcome, pull_request).await {
        tracing::warn!(delivery = %claimed.id, %error, "could not record a delivery attempt; its lease runs out and it is tried again");
    }
}

async fn webhook(
    http: &reqwest::Client,
    settings: &Settings,
    claimed: &Claimed,
) -> anyhow::Result<String> {
    settings
        .outbound
        .check_url(&claimed.channel.target)
        .await
        .map_err(|why| Permanent(format!("POST {}: {why}", claimed.channel.target)))?;
    let body = serde_json::to_vec(&claimed.payload)?;
    let timestamp = chrono::Utc::now().timestamp();
    let response = http
        .post(&claimed.channel.target)
        .header("content-type", "application/json")
        .header(EVENT_HEADER, &claimed.event)
        .header(DELIVERY_HEADER, claimed.id.to_string())
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            sign(&claimed.channel.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow!("POST {}: {e}", claimed.channel.target))?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        let text: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        bail!(
            "POST {} answered HTTP {}: {text}",
            claimed.channel.target,
            status.as_u16()
        )
    }
}

fn field<'a>(payload: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &payload["promotion"][name]
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The subject and text of a notification e-mail.
fn message(claimed: &Claimed) -> (String, String) {
    let p = &claimed.payload;
    let what = match claimed.event.as_str() {
        "approval_needed" => "needs your approval",
        "approved" => "was approved",
        "rejected" => "was rejected",
        "completed" => "is live",
        "failed" => "failed",
        "expiring" => "expires soon",
        "expired" => "expired",
        "rolled_back" => "was rolled back",
        _ => "was requested",
    };
    let subject = format!(
        "[Mockplane] promotion #{} of {} {what}: {} v{} {} → {}",
        text(field(p, "number")),
        text(field(p, "workspace")),
        text(field(p, "scenario")),
        text(field(p, "version")),
        text(field(p, "from")),
        text(field(p, "to")),
    );
    let body = format!(
        "Promotion #{number} of workspace {workspace}: scenario {scenario}, version {version}, {from} -> {to}.\r\n\
         Status: {status}\r\nReason: {reason}\r\nRequested by: {requested_by}\r\nBy: {actor}\r\nId: {id}\r\n",
        number = text(field(p, "number")),
        workspace = text(field(p, "workspace")),
        scenario = text(field(p, "scenario")),
        version = text(field(p, "version")),
        from = text(field(p, "from")),
        to = text(field(p, "to")),
        status = text(field(p, "status")),
        reason = text(field(p, "reason")),
        requested_by = text(field(p, "requested_by")),
        actor = text(&p["actor"]),
        id = text(field(p, "id")),
    );
    (subject, body)
}

async fn email(smtp: Option<&Smtp>, claimed: &Claimed) -> anyhow::Result<String> {
    let smtp = smtp.ok_or_else(|| {
        anyhow!(
            "no SMTP relay is configured: start the control plane with --smtp-url smtp://host:port"
        )
    })?;
    let (subject, body) = message(claimed);
    tokio::time::timeout(
        CALL_TIMEOUT,
        send_mail(smtp, &claimed.channel.target, &subject, &body, claimed.id),
    )
    .await
    .map_err(|_| anyhow!("the SMTP relay {} did not answer in time", smtp.address))??;
    Ok(format!("accepted by {}", smtp.address))
}

/// One SMTP exchange: EHLO, MAIL, RCPT, DATA, QUIT (no TLS: a local relay).
async fn send_mail(
    smtp: &Smtp,
    to: &str,
    subject: &str,
    body: &str,
    id: uuid::Uuid,
) -> anyhow::Result<()> {
    let stream = TcpStream::connect(&smtp.address)
        .await
        .with_context(|| format!("connecting to the SMTP relay {}", smtp.address))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    async fn reply(
        read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    ) -> anyhow::Result<(u16, String)> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                bail!("the SMTP relay closed the connection");
            }
            all.push_str(line.trim_end());
            all.push(' ');
            // "250-more" continues; "250 last" ends the reply.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, all.trim().to_owned()));
            }
        }
    }
    let expect = |code: u16, wanted: &[u16], what: &str, text: String| {
        if wanted.contains(&code) {
            Ok(())
        } else {
            Err(anyhow!("the SMTP relay refused {what}: {text}"))
        }
    };
    let (code, text) = reply(&mut read).await?;
    expect(code, &[220], "the connection", text)?;
    for (command, wanted, what) in [
        ("EHLO mockplane".to_owned(), &[250u16][..], "EHLO"),
        (
            format!("MAIL FROM:<{}>", smtp.from),
            &[250][..],
            "the sender",
        ),
        (format!("RCPT TO:<{to}>"), &[250, 251][..], "the recipient"),
        ("DATA".to_owned(), &[354][..], "DATA"),
    ] {
        write.write_all(format!("{command}\r\n").as_bytes()).await?;
        let (code, text) = reply(&mut read).await?;
        expect(code, wanted, what, text)?;
    }
    let date = chrono::Utc::now().to_rfc2822();
    let mut data = format!(
        "From: Mockplane <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{id}@mockplane>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        from = smtp.from,
    );
    for line in body.split("\r\n") {
        // Dot-stuffing: a line starting with "." gets another.
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    write.write_all(data.as_bytes()).await?;
    let (code, text) = reply(&mut read).await?;
    expect(code, &[250], "the message", text)?;
    write.write_all(b"QUIT\r\n").await?;
    Ok(())
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .await
        .context("running git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Commits the target environment's document to a branch, pushes it and
/// opens a pull request; returns its URL.
async fn gitops(
    store: &dyn Store,
    http: &reqwest::Client,
    settings: &Settings,
    claimed: &Claimed,
) -> anyhow::Result<String> {
    let config: &GitOpsConfig = claimed
        .channel
        .gitops
        .as_ref()
        .ok_or_else(|| anyhow!("the channel has no GitOps settings"))?;
    let outbound = &settings.outbound;
    outbound
        .check_url(&config.api_url)
        .await
        .map_err(|why| Permanent(format!("the provider API {}: {why}", config.api_url)))?;
    outbound
        .check_git(&claimed.channel.target)
        .await
        .map_err(|why| Permanent(format!("the repository: {why}")))?;
    let p = &claimed.payload;
    let workspace = text(field(p, "workspace"));
    let environment = text(field(p, "to"));
    let number = text(field(p, "number"));
    // On request the pull request proposes the change; afterwards it
    // records what the environment serves.
    // Events written before personas and settings were promoted name
    // only a scenario.
    let name = match text(field(p, "name")) {
        name if name.is_empty() => text(field(p, "scenario")),
        name => name,
    };
    let version = field(p, "version")
        .as_u64()
        .and_then(|v| u32::try_from(v).ok());
    let proposing = matches!(
        claimed.event.as_str(),
        "requested" | "approval_needed" | "approved"
    );
    let proposed = match (text(field(p, "entity_kind")).as_str(), version) {
        _ if !proposing => None,
        ("persona", Some(v)) => Some(Proposal::Persona(name.as_str(), v)),
        ("environment", _) => Some(Proposal::Settings(Box::new(
            serde_json::from_value(field(p, "settings").clone())
                .map_err(|e| anyhow!("the event's settings: {e}"))?,
        ))),
        (_, Some(v)) => Some(Proposal::Scenario(name.as_str(), v)),
        (_, None) => None,
    };
    let document = store
        .environment_document(claimed.org_id, claimed.workspace_id, &environment, proposed)
        .await
        .map_err(|e| anyhow!("reading what {environment} serves: {e}"))?;
    let base = if config.base_branch.is_empty() {
        "main"
    } else {
        &config.base_branch
    };
    let path = if config.path.is_empty() {
        "mockplane/{workspace}/{environment}.yaml".to_owned()
    } else {
        config.path.clone()
    }
    .replace("{workspace}", &workspace)
    .replace("{environment}", &environment);
    let branch = format!(
        "mockplane/{workspace}/{environment}/promotion-{number}-{}",
        claimed.event
    );
    let dir = settings
        .work_dir
        .join(format!("mockplane-gitops-{}", claimed.id));
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let result = async {
        tokio::fs::create_dir_all(&dir).await?;
        let auth = if claimed.channel.target.starts_with("https://")
            && !claimed.channel.secret.is_empty()
        {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("x-access-token:{}", claimed.channel.secret));
            vec![
                "-c".to_owned(),
                format!("http.extraHeader=Authorization: Basic {basic}"),
            ]
        } else {
            Vec::new()
        };
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let mut clone = auth.clone();
        clone.extend([
            "clone",
            "--depth",
            "1",
            "--branch",
            base,
            &claimed.channel.target,
            "repo",
        ]);
        git(&dir, &clone).await?;
        let repo = dir.join("repo");
        git(&repo, &["checkout", "-b", &branch]).await?;
        let file = repo.join(&path);
        if let Some(parent) = file.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&file, document.as_bytes()).await?;
        git(&repo, &["add", "--", &path]).await?;
        let title = format!(
            "Mockplane: {workspace}/{environment} serves {} v{} (promotion #{number})",
            text(field(p, "scenario")),
            text(field(p, "version")),
        );
        git(
            &repo,
            &[
                "-c",
                "user.name=Mockplane",
                "-c",
                "user.email=mockplane@localhost",
                "commit",
                "--allow-empty",
                "-m",
                &title,
            ],
        )
        .await?;
        let mut push = auth.clone();
        push.extend(["push", "origin", &branch]);
        git(&repo, &push).await?;
        open_pull_request(
            http,
            config,
            &claimed.channel.secret,
            &branch,
            base,
            &title,
            p,
        )
        .await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

async fn open_pull_request(
    http: &reqwest::Client,
    config: &GitOpsConfig,
    token: &str,
    branch: &str,
    base: &str,
    title: &str,
    payload: &serde_json::Value,
) -> anyhow::Result<String> {
    let description = format!(
        "Promotion #{} of workspace {}: scenario {} version {}, {} → {}.\n\nRequested by {}: {}\nStatus: {} ({})\n",
        text(field(payload, "number")),
        text(field(payload, "workspace")),
        text(field(payload, "scenario")),
        text(field(payload, "version")),
        text(field(payload, "from")),
        text(field(payload, "to")),
        text(field(payload, "requested_by")),
        text(field(payload, "comment")),
        text(field(payload, "status")),
        text(field(payload, "reason")),
    );
    let api = config.api_url.trim_end_matches('/');
    let (request, url_field) = match config.provider.as_str() {
        "github" => (
            http.post(format!("{api}/repos/{}/pulls", config.repository))
                .header("authorization", format!("Bearer {token}"))
                .header("accept", "application/vnd.github+json")
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({
                        "title": title, "head": branch, "base": base, "body": description,
                    })
                    .to_string(),
                ),
            "html_url",
        ),
        "gitlab" => {
            let project: String =
                form_urlencoded::byte_serialize(config.repository.as_bytes()).collect();
            (
                http.post(format!("{api}/projects/{project}/merge_requests"))
                    .header("private-token", token)
                    .header("content-type", "application/json")
                    .body(
                        serde_json::json!({
                            "title": title, "source_branch": branch, "target_branch": base,
                            "description": description,
                        })
                        .to_string(),
                    ),
                "web_url",
            )
        }
        other => bail!("unknown GitOps provider {other:?}"),
    };
    let response = request
        .send()
        .await
        .map_err(|e| anyhow!("{} API: {e}", config.provider))?;
    let status = response.status();
    let body: serde_json::Value = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if !status.is_success() {
        let message = format!(
            "{} API answered HTTP {}: {}",
            config.provider,
            status.as_u16(),
            text(&body["message"])
        );
        if status.is_client_error() && status.as_u16() != 429 && status.as_u16() != 408 {
            return Err(Permanent(message).into());
        }
        bail!(message);
    }
    body[url_field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} API answered without {url_field}", config.provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe".
        let sig = sign("Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert_ne!(sig, sign("Jefe", 1, b"what do ya want for nothing?"));
        assert_eq!(sig, sign("Jefe", 0, b"what do ya want for nothing?"));
    }

    #[test]
    fn smtp_urls_are_checked() {
        assert_eq!(
            Smtp::parse("smtp://127.0.0.1:2525", "mp@localhost")
                .unwrap()
                .address,
            "127.0.0.1:2525"
        );
        assert_eq!(
            Smtp::parse("smtp://relay", "mp@localhost").unwrap().address,
            "relay:25"
        );
        assert!(Smtp::parse("http://relay", "mp@localhost").is_err());
        assert!(Smtp::parse("smtp://u@relay", "mp@localhost").is_err());
        assert!(Smtp::parse("smtp://relay", "nobody").is_err());
    }
}
