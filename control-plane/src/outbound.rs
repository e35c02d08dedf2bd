//! Where the control plane may call out to on a user's behalf (webhooks,
//! GitOps providers and repositories). By default nothing on this machine
//! or its private networks: loopback, private, link-local, shared (CGNAT),
//! unique-local, unspecified, multicast and broadcast addresses are refused,
//! so a notification channel cannot reach the control plane's own network.
//! `--outbound-allow` lists exceptions: networks (`10.1.0.0/16`, an address),
//! host names (allowed by name, whatever they resolve to) and `local-git`
//! (GitOps repositories given as a path on this machine).
//!
//! Targets are checked when a channel is created and again at every
//! delivery, after name resolution: the HTTP client resolves names through
//! [`Outbound::resolver`], which drops refused addresses, so a name that
//! changes what it resolves to (DNS rebinding) reaches nothing refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The allow-list.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
    local_git: bool,
}

/// The keyword that lets GitOps repositories be paths on this machine.
pub const LOCAL_GIT: &str = "local-git";

impl Outbound {
    /// Parses `--outbound-allow` entries (empty ones are ignored).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut allowed = Self::default();
        for entry in entries.iter().map(|e| e.as_ref().trim()) {
            if entry.is_empty() {
                continue;
            }
            if entry == LOCAL_GIT {
                allowed.local_git = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                allowed.nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                allowed.nets.push(IpNet::from(ip));
            } else if valid_host(entry) {
                allowed.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is neither a network (10.0.0.0/8), an address, a host name nor {LOCAL_GIT}"
                ));
            }
        }
        Ok(allowed)
    }

    /// Why `ip` may not be called, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        if self.nets.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        refused_kind(ip).map(|kind| {
            format!(
                "{ip} is {kind} address; calls to loopback, private and link-local addresses are refused unless --outbound-allow lists them"
            )
        })
    }

    /// Checks an `http`/`https` URL: its host allowed by name, or every
    /// address it resolves to allowed.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let host = uri.host().ok_or_else(|| format!("{url:?} names no host"))?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        self.check_host(host, port).await
    }

    /// Checks a GitOps repository: a URL or `user@host:path` is checked as
    /// a host; a path on this machine only with [`LOCAL_GIT`].
    pub async fn check_git(&self, target: &str) -> Result<(), String> {
        if let Some((scheme, rest)) = target.split_once("://") {
            return match scheme {
                "http" | "https" => self.check_url(target).await,
                "ssh" | "git" => {
                    let authority = rest.split('/').next().unwrap_or_default();
                    let host_port = authority.rsplit('@').next().unwrap_or_default();
                    let (host, port) =
                        split_port(host_port, if scheme == "ssh" { 22 } else { 9418 });
                    self.check_host(host, port).await
                }
                "file" => self.local_git(target),
                other => Err(format!(
                    "{target:?}: git over {other} is not supported; use https, ssh or git"
                )),
            };
        }
        // scp-like `user@host:path`; anything else is a path.
        match target.split_once(':') {
            Some((authority, _)) if !authority.contains('/') && authority.contains('@') => {
                let host = authority.rsplit('@').next().unwrap_or_default();
                self.check_host(host, 22).await
            }
            _ => self.local_git(target),
        }
    }

    fn local_git(&self, target: &str) -> Result<(), String> {
        if self.local_git {
            Ok(())
        } else {
            Err(format!(
                "{target:?} is a repository on the control plane's machine; that needs --outbound-allow {LOCAL_GIT}"
            ))
        }
    }

    async fn check_host(&self, host: &str, port: u16) -> Result<(), String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the target names no host".into());
        }
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Ok(());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.refuses(ip).map_or(Ok(()), Err);
        }
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect();
        if addresses.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        for address in addresses {
            if let Some(why) = self.refuses(address.ip()) {
                return Err(format!("{host} resolves to {why}"));
            }
        }
        Ok(())
    }

    /// A name resolver for HTTP clients that keeps only allowed addresses
    /// (names the allow-list lists resolve as they are).
    pub fn resolver(self: &Arc<Self>) -> Arc<Guarded> {
        Arc::new(Guarded(self.clone()))
    }
}

/// See [`Outbound::resolver`].
#[derive(Debug)]
pub struct Guarded(Arc<Outbound>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let outbound = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let by_name = outbound.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
            let mut refused = None;
            let kept: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| {
                    if by_name {
                        return true;
                    }
                    match outbound.refuses(address.ip()) {
                        None => true,
                        Some(why) => {
                            refused = Some(why);
                            false
                        }
                    }
                })
                .collect();
            if kept.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".into());
                return Err(format!("{host} resolves to {why}").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn split_port(host_port: &str, default: u16) -> (&str, u16) {
    if host_port.starts_with('[') {
        // [v6]:port
        return match host_port.rsplit_once("]:") {
            Some((host, port)) => (host, port.parse().unwrap_or(default)),
            None => (host_port, default),
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(default)),
        _ => (host_port, default),
    }
}

fn valid_host(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// What kind of address is refused by default, with its article.
fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback")
            } else if v4.is_private() {
                Some("a private")
            } else if v4.is_link_local() {
                Some("a link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("a shared (carrier-grade NAT)")
            } else if v4.is_unspecified() || a == 0 {
                Some("an unspecified")
            } else if v4.is_multicast() {
                Some("a multicast")
            } else if v4.is_broadcast() {
                Some("a broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_kind(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback")
            } else if v6.is_unspecified() {
                Some("an unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique-local (private)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local")
            } else if v6.is_multicast() {
                Some("a multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_refused_unless_listed() {
        let none = Outbound::default();
        // (address, refused by default)
        let table = [
            ("127.0.0.1", true),
            ("10.2.3.4", true),
            ("172.16.0.1", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("100.128.0.1", false),
            ("0.0.0.0", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("93.184.216.34", false),
            ("::1", true),
            ("::", true),
            ("fd00::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:93.184.216.34", false),
            ("2606:2800:220:1::", false),
        ];
        for (raw, refused) in table {
            let ip: IpAddr = raw.parse().unwrap();
            assert_eq!(none.refuses(ip).is_some(), refused, "{raw}");
        }
        let allowed = Outbound::parse(&["127.0.0.0/8", "fd00::1"]).unwrap();
        assert!(allowed.refuses("127.0.0.1".parse().unwrap()).is_none());
        assert!(allowed.refuses("fd00::1".parse().unwrap()).is_none());
        assert!(allowed.refuses("10.0.0.1".parse().unwrap()).is_some());
        assert!(
            none.refuses("169.254.169.254".parse().unwrap())
                .unwrap()
                .contains("link-local")
        );
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        let error = Outbound::parse(&["10.0.0.0/33"]).unwrap_err();
        assert!(error.contains("10.0.0.0/33"), "{error}");
        assert!(Outbound::parse(&["not a host!"]).is_err());
        assert!(Outbound::parse(&["", " hooks.example.com ", LOCAL_GIT]).is_ok());
    }

    #[tokio::test]
    async fn urls_and_git_targets_are_checked_after_resolution() {
        let none = Outbound::default();
        let error = none
            .check_url("http://localhost:8080/hook")
            .await
            .unwrap_err();
        assert!(
            error.contains("localhost resolves to") && error.contains("loopback"),
            "{error}"
        );
        assert!(none.check_url("https://127.0.0.1/").await.is_err());
        assert!(none.check_url("https://[::1]:8443/").await.is_err());
        assert!(
            none.check_git("/srv/repos/mocks.git")
                .await
                .unwrap_err()
                .contains(LOCAL_GIT)
        );
        assert!(none.check_git("file:///srv/repos/mocks.git").await.is_err());
        assert!(
            none.check_git("git@127.0.0.1:acme/mocks.git")
                .await
                .is_err()
        );
        assert!(
            none.check_git("ssh://git@[::1]:2222/acme/mocks.git")
                .await
                .is_err()
        );
        assert!(none.check_git("ftp://example.com/x").await.is_err());

        let some = Outbound::parse(&["localhost", LOCAL_GIT, "127.0.0.1"]).unwrap();
        some.check_url("http://localhost:8080/hook").await.unwrap();
        some.check_url("http://127.0.0.1:9/").await.unwrap();
        some.check_git("/srv/repos/mocks.git").await.unwrap();
        some.check_git("git@127.0.0.1:acme/mocks.git")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve as _;
        let none = Arc::new(Outbound::default());
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let refused = none.resolver().resolve(name).await;
        assert!(refused.is_err());
        let allowed = Arc::new(Outbound::parse(&["127.0.0.0/8", "::1"]).unwrap());
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = allowed.resolver().resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty());
    }
}
