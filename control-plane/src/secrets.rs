//! Secrets at rest: notification channels' webhook secrets and GitOps
//! provider tokens are stored sealed with XChaCha20-Poly1305 (a random
//! 192-bit nonce per value), as `enc1:<key id>:<base64 of nonce and
//! ciphertext>`. The key file holds one key per line (64 hex digits): the
//! first seals, every one opens, so a key is rotated by putting a new one
//! first and dropping the old one once nothing sealed with it remains
//! (values are resealed when their channel is made again). A value without
//! the prefix (written before sealing existed) is read as it is.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc1:";

/// The keys secrets are sealed and opened with; none: stored as given (a
/// store opened only to read what is not secret, or tests).
#[derive(Default)]
pub struct Secrets {
    /// (key id, cipher); the first seals.
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Secrets").field("keys", &ids).finish()
    }
}

impl Secrets {
    /// Keys from text: one per line, 64 hex digits; blank lines and `#`
    /// comments are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex::decode(line)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| format!("line {}: a key is 64 hex digits (32 bytes)", number + 1))?;
            let id = hex::encode(&Sha256::digest(&bytes)[..4]);
            keys.push((id, XChaCha20Poly1305::new(Key::from_slice(&bytes))));
        }
        if keys.is_empty() {
            return Err("no key: one per line, 64 hex digits".into());
        }
        Ok(Self { keys })
    }

    /// The keys of `path`, made (one new key, mode 0600) when it does not
    /// exist; replicas starting together on one data directory end up with
    /// the same key.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let key: [u8; 32] = rand::random();
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            crate::keyfile::create_once(path, format!("{}\n", hex::encode(key)).as_bytes())
                .with_context(|| format!("writing the secrets key {}", path.display()))?;
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the secrets key {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Seals `plain` with the first key (as it is when there is none).
    pub fn seal(&self, plain: &str) -> String {
        let Some((id, cipher)) = self.keys.first() else {
            return plain.to_owned();
        };
        if plain.is_empty() {
            return String::new();
        }
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Sealing in memory cannot fail for inputs this small.
        let sealed = cipher.encrypt(&nonce, plain.as_bytes()).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{id}:{}", STANDARD_NO_PAD.encode(bytes))
    }

    /// Opens what [`Secrets::seal`] stored (a value without the prefix is
    /// returned as it is).
    pub fn open(&self, stored: &str) -> Result<String, String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest
            .split_once(':')
            .ok_or("a sealed secret without its key id")?;
        let (_, cipher) = self.keys.iter().find(|(key, _)| key == id).ok_or_else(|| {
            format!("the secret was sealed with key {id}, which the key file no longer holds")
        })?;
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| "a sealed secret that is not base64")?;
        if bytes.len() < 24 {
            return Err("a sealed secret too short to hold its nonce".into());
        }
        let (nonce, sealed) = bytes.split_at(24);
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| format!("a secret sealed with key {id} does not open: it was changed"))?;
        String::from_utf8(plain).map_err(|_| "a sealed secret that is not text".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn sealed_values_open_and_hide_what_they_hold() {
        let secrets = Secrets::parse(KEY_A).unwrap();
        let sealed = secrets.seal("whsec_abc");
        assert!(
            sealed.starts_with("enc1:") && !sealed.contains("whsec_abc"),
            "{sealed}"
        );
        assert_ne!(
            sealed,
            secrets.seal("whsec_abc"),
            "a fresh nonce every time"
        );
        assert_eq!(secrets.open(&sealed).unwrap(), "whsec_abc");
        // Older, unsealed values read as they are; no key stores as given.
        assert_eq!(secrets.open("ghp_plain").unwrap(), "ghp_plain");
        assert_eq!(Secrets::default().seal("x"), "x");
    }

    #[test]
    fn keys_rotate_and_tampering_shows() {
        let old = Secrets::parse(KEY_A).unwrap();
        let sealed = old.seal("token");
        let rotated = Secrets::parse(&format!("{KEY_B}\n# the old one\n{KEY_A}\n")).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), "token");
        assert!(
            rotated
                .seal("t")
                .starts_with(&format!("enc1:{}:", rotated.keys[0].0))
        );
        let only_new = Secrets::parse(KEY_B).unwrap();
        assert!(
            only_new
                .open(&sealed)
                .unwrap_err()
                .contains("no longer holds")
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(old.open(&tampered).is_err());
        assert!(Secrets::parse("abc").unwrap_err().contains("64 hex digits"));
        assert!(Secrets::parse("\n# none\n").is_err());
    }

    #[test]
    fn a_key_file_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let first = Secrets::load_or_create(&path).unwrap();
        let sealed = first.seal("s");
        let again = Secrets::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "s");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
