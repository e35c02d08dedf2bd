//! Workspace resources on the config stream: a `WorkspaceConfig` encoded
//! once, with its content hash. Both directions live here, so the control
//! plane and the nodes cannot disagree on the format.

use bytes::Bytes;
use mockplane_shared::WorkspaceConfig;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::v1;

/// Encodes a workspace's config for the stream, with its sha256.
pub fn encode(config: &WorkspaceConfig, revision: u64) -> v1::WorkspaceResource {
    let bytes = Bytes::from(v1::WorkspaceConfig::from(config).encode_to_vec());
    v1::WorkspaceResource {
        workspace_id: config.id.to_string(),
        revision,
        hash: hex::encode(Sha256::digest(&bytes)),
        config: bytes,
    }
}

/// Checks a resource end to end (hash, encoding, every rule of the domain,
/// and that it is the workspace it claims to be) and decodes it.
pub fn decode(resource: &v1::WorkspaceResource) -> Result<WorkspaceConfig, String> {
    let hash = hex::encode(Sha256::digest(&resource.config));
    if hash != resource.hash {
        return Err(format!(
            "content hash mismatch: got {hash}, expected {}",
            resource.hash
        ));
    }
    let wire = v1::WorkspaceConfig::decode(resource.config.clone())
        .map_err(|e| format!("undecodable config: {e}"))?;
    let config = WorkspaceConfig::try_from(wire).map_err(|e| format!("invalid config: {e}"))?;
    if config.id.to_string() != resource.workspace_id {
        return Err(format!(
            "config is for workspace {}, not {}",
            config.id, resource.workspace_id
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use mockplane_shared::Slug;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn round_trips_and_detects_tampering() {
        let config = WorkspaceConfig::single(Uuid::new_v4(), Slug::parse("w").unwrap(), Vec::new());
        let resource = encode(&config, 4);
        assert_eq!(decode(&resource).unwrap(), config);

        let mut tampered = resource.clone();
        tampered.hash = "0".repeat(64);
        assert!(decode(&tampered).unwrap_err().contains("hash mismatch"));

        let mut elsewhere = resource.clone();
        elsewhere.workspace_id = Uuid::new_v4().to_string();
        assert!(decode(&elsewhere).unwrap_err().contains("not"));

        let garbage = Bytes::from_static(b"\xff\xff\xff");
        let broken = v1::WorkspaceResource {
            hash: hex::encode(Sha256::digest(&garbage)),
            config: garbage,
            ..resource
        };
        assert!(decode(&broken).unwrap_err().contains("undecodable"));
    }
}
