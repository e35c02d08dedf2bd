//! The session `mockplane login` saves, and which credentials a command
//! uses: `--token`/`MOCKPLANE_TOKEN` first, else the saved session, whose
//! access token is refreshed (and the new pair saved) when it is about to
//! expire.
//!
//! The session lives in `session.json` of the config directory:
//! `$MOCKPLANE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/mockplane`, else
//! `~/.config/mockplane`. It is written atomically (a new file renamed over
//! the old) with mode 0600, in a directory made with mode 0700.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use mockplane_proto::v1;
use serde::{Deserialize, Serialize};

use crate::client::{Api, TokenSource, status_error};

/// Where the CLI talks to when neither `--server`, `MOCKPLANE_SERVER` nor a
/// session names a control plane.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";
const FILE_NAME: &str = "session.json";
/// An access token this close to its expiry is refreshed first.
const REFRESH_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How long to wait for another `mockplane` that is refreshing the same
/// session, and after how long its lock counts as left behind.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_STALE: Duration = Duration::from_secs(30);

/// What `session.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The control plane the tokens are for.
    pub server: String,
    /// Who logged in.
    #[serde(default)]
    pub email: String,
    pub access_token: String,
    pub access_token_expire_time: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expire_time: DateTime<Utc>,
}

impl Session {
    /// A session from Login's or Refresh's answer.
    pub fn new(server: &str, email: &str, answer: v1::Session) -> anyhow::Result<Self> {
        let time = |t: Option<prost_types::Timestamp>, what: &str| {
            t.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
                .ok_or_else(|| anyhow!("the control plane's answer has no valid {what}"))
        };
        if answer.access_token.is_empty() || answer.refresh_token.is_empty() {
            return Err(anyhow!(
                "the control plane's answer holds no access or refresh token"
            ));
        }
        Ok(Self {
            server: normalize(server),
            email: email.to_owned(),
            access_token_expire_time: time(answer.access_token_expire_time, "access token expiry")?,
            refresh_token_expire_time: time(
                answer.refresh_token_expire_time,
                "refresh token expiry",
            )?,
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
        })
    }

    /// Whether the access token should be refreshed before use.
    fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        self.access_token_expire_time - REFRESH_MARGIN <= now
    }
}

/// A server address as sessions compare it: without trailing slashes.
pub fn normalize(server: &str) -> String {
    server.trim().trim_end_matches('/').to_owned()
}

/// The config directory, or `None` when no variable names one (no
/// `MOCKPLANE_CONFIG_DIR`, `XDG_CONFIG_HOME` or `HOME`).
pub fn config_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("MOCKPLANE_CONFIG_DIR") {
        return Some(dir);
    }
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if let Some(dir) = var("XDG_CONFIG_HOME").filter(|d| d.is_absolute()) {
        return Some(dir.join("mockplane"));
    }
    var("HOME").map(|home| home.join(".config").join("mockplane"))
}

/// Where the session is kept.
pub fn path() -> anyhow::Result<PathBuf> {
    config_dir().map(|dir| dir.join(FILE_NAME)).ok_or_else(|| {
        anyhow!(
            "no place for the session: set MOCKPLANE_CONFIG_DIR (or XDG_CONFIG_HOME or HOME) to a directory"
        )
    })
}

/// The saved session, or `None` when there is none.
pub fn load(path: &Path) -> anyhow::Result<Option<Session>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow!(
                "cannot read the session file {}: {e}",
                path.display()
            ));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        anyhow!(
            "the session file {} is not valid ({e}); log in again with `mockplane login`, or delete it",
            path.display()
        )
    })
}

/// Saves `session` atomically: written to a new file (mode 0600) beside
/// the old one, flushed, then renamed over it.
pub fn save(path: &Path, session: &Session) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the config directory {}", dir.display()))?;
    let text = serde_json::to_string_pretty(session).context("cannot encode the session")?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temporary = dir.join(format!(".{FILE_NAME}.{}.{nanos}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        // The mode applies only if the umask allows it; make sure.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(anyhow!(
            "cannot save the session to {}: {error}",
            path.display()
        ));
    }
    // Make the rename itself durable where the platform allows.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Deletes the saved session; whether there was one.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!(
            "cannot delete the session file {}: {e}",
            path.display()
        )),
    }
}

/// The server and token a command uses.
pub struct Credentials {
    pub server: String,
    pub token: Option<String>,
    pub source: TokenSource,
}

/// The server a command talks to: `--server`/`MOCKPLANE_SERVER`, else the
/// saved session's, else the default. A session that cannot be read is no
/// reason to fail here.
pub fn server(given: Option<&str>) -> String {
    if let Some(server) = given.map(str::trim).filter(|s| !s.is_empty()) {
        return server.to_owned();
    }
    path()
        .ok()
        .and_then(|path| load(&path).ok().flatten())
        .map_or_else(|| DEFAULT_SERVER.to_owned(), |session| session.server)
}

/// Resolves what a command authenticates with: the token given with
/// `--token`/`MOCKPLANE_TOKEN` as is, else the saved session (refreshed
/// first when its access token is about to expire), else nothing.
pub async fn credentials(server: Option<&str>, token: Option<&str>) -> anyhow::Result<Credentials> {
    let given_server = server.map(str::trim).filter(|s| !s.is_empty());
    if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Credentials {
            server: self::server(given_server),
            source: TokenSource::Given(crate::client::describe_token(token)),
            token: Some(token.to_owned()),
        });
    }
    let Some(path) = config_dir().map(|dir| dir.join(FILE_NAME)) else {
        return Ok(Credentials {
            server: given_server.unwrap_or(DEFAULT_SERVER).to_owned(),
            token: None,
            source: TokenSource::None,
        });
    };
    let Some(session) = load(&path)? else {
        return Ok(Credentials {
            server: given_server.unwrap_or(DEFAULT_SERVER).to_owned(),
            token: None,
            source: TokenSource::None,
        });
    };
    if let Some(server) = given_server
        && normalize(server) != session.server
    {
        // Never send a session's tokens to another server: go without,
        // and let the hint say why.
        return Ok(Credentials {
            server: server.to_owned(),
            token: None,
            source: TokenSource::OtherServer(session.server),
        });
    }
    let session = fresh(&path, session).await?;
    Ok(Credentials {
        server: session.server,
        token: Some(session.access_token),
        source: TokenSource::Session(path.display().to_string()),
    })
}

/// The session with an access token that lasts at least another minute:
/// as it is, or refreshed and saved. Refreshing holds a lock file, and
/// rereads the session once it has it, because a refresh token works once:
/// two `mockplane`s refreshing with the same one would end the session.
async fn fresh(path: &Path, session: Session) -> anyhow::Result<Session> {
    if !session.needs_refresh(Utc::now()) {
        return Ok(session);
    }
    let _lock = Lock::acquire(path).await?;
    let session = load(path)?.ok_or_else(|| {
        anyhow!(
            "the session file {} disappeared (`mockplane logout`?); log in again with `mockplane login`",
            path.display()
        )
    })?;
    if !session.needs_refresh(Utc::now()) {
        return Ok(session);
    }
    let login_again = |why: &str| {
        anyhow!(
            "your session with {} {why}\nhint: log in again with `mockplane --server {} login`",
            session.server,
            session.server
        )
    };
    if session.refresh_token_expire_time <= Utc::now() {
        return Err(login_again(&format!(
            "ended at {}",
            session
                .refresh_token_expire_time
                .format("%Y-%m-%d %H:%M:%SZ")
        )));
    }
    let answer = Api::connect(&session.server, None)
        .await?
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await;
    let answer = match answer {
        Ok(answer) => answer.into_inner(),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::PermissionDenied
                    | tonic::Code::NotFound
            ) =>
        {
            return Err(login_again(&format!(
                "could not be renewed: {} ({:?})",
                status.message(),
                status.code()
            )));
        }
        Err(status) => {
            return Err(status_error(status)
                .context(format!("cannot renew the session with {}", session.server)));
        }
    };
    let renewed = Session::new(&session.server, &session.email, answer)?;
    save(path, &renewed)?;
    Ok(renewed)
}

/// A lock file beside the session, held while refreshing it; removed when
/// dropped.
struct Lock(PathBuf);

impl Lock {
    async fn acquire(session: &Path) -> anyhow::Result<Self> {
        let path = session.with_extension("json.lock");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > LOCK_STALE);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(anyhow!(
                            "another mockplane has been renewing the session for {}s (lock file {}); if none is running, delete that file",
                            LOCK_WAIT.as_secs(),
                            path.display()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(anyhow!(
                        "cannot lock the session for renewal ({}): {e}",
                        path.display()
                    ));
                }
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(server: &str) -> Session {
        Session {
            server: server.to_owned(),
            email: "a@b.c".to_owned(),
            access_token: "access".to_owned(),
            access_token_expire_time: Utc::now() + chrono::TimeDelta::minutes(15),
            refresh_token: "refresh".to_owned(),
            refresh_token_expire_time: Utc::now() + chrono::TimeDelta::days(30),
        }
    }

    #[test]
    fn saves_privately_and_atomically() {
        let dir = std::env::temp_dir().join(format!("mockplane-session-{}", std::process::id()));
        let path = dir.join("nested").join(FILE_NAME);
        let first = session("http://a:1");
        save(&path, &first).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load(&path).unwrap(), Some(first));
        let second = session("http://b:2");
        save(&path, &second).unwrap();
        assert_eq!(load(&path).unwrap(), Some(second));
        // Nothing but the session is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        std::fs::write(&path, "{").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(
            error.contains("not valid") && error.contains("login"),
            "{error}"
        );
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(load(&path).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refreshes_a_minute_before_expiry() {
        let mut s = session("http://a:1");
        let now = Utc::now();
        s.access_token_expire_time = now + chrono::TimeDelta::seconds(61);
        assert!(!s.needs_refresh(now));
        s.access_token_expire_time = now + chrono::TimeDelta::seconds(60);
        assert!(s.needs_refresh(now));
        s.access_token_expire_time = now - chrono::TimeDelta::seconds(1);
        assert!(s.needs_refresh(now));
        assert_eq!(normalize(" http://a:1/ "), "http://a:1");
    }
}
