//! Compiles `mockplane/v1/*.proto` with the pure-Rust `protox` compiler, so a
//! build needs no system `protoc`, and keeps the encoded descriptor set for
//! gRPC server reflection.

use std::path::PathBuf;

use protox::prost::Message as _;

const PROTOS: &[&str] = &[
    "mockplane/v1/workspace.proto",
    "mockplane/v1/route.proto",
    "mockplane/v1/environment.proto",
    "mockplane/v1/config.proto",
    "mockplane/v1/scenario.proto",
    "mockplane/v1/persona.proto",
    "mockplane/v1/journal.proto",
    "mockplane/v1/node.proto",
    "mockplane/v1/access.proto",
    "mockplane/v1/audit.proto",
    "mockplane/v1/keys.proto",
    "mockplane/v1/usage.proto",
    "mockplane/v1/promotion.proto",
    "mockplane/v1/org.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        out_dir.join("mockplane_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Requests are checked against what their method takes as they are
        // decoded (`codec.rs`, `takes.rs`).
        .codec_path("crate::codec::CheckedCodec")
        // Resource payloads are encoded once and shared by every stream:
        // `Bytes` makes handing them to another message a reference-count bump.
        .bytes(".mockplane.v1.WorkspaceResource.config")
        .bytes(".mockplane.v1.RouteConfig.body")
        .compile_fds(fds)?;
    Ok(())
}
