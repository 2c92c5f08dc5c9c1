//! Compiles `proto/**/*.proto` with protox (pure Rust; no system `protoc` needed) and
//! generates prost messages and the tonic operator service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/zpanel/v1/stream.proto",
        "proto/zpanel/v1/docker.proto",
        "proto/zpanel/v1/metrics.proto",
        "proto/zpanel/v1/bridge.proto",
        "proto/zpanel/v1/operator.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
