//! Compiles the workspace's `proto/` with prost. Needs `protoc` (Debian package `protobuf-compiler`).
//! `Value` gets a hand-written, redacting `Debug` (src/proto.rs), so no event ever prints a value.
fn main() {
    println!("cargo:rerun-if-changed=../../proto");
    prost_build::Config::new()
        .skip_debug(["veil.v1.Value"])
        .compile_protos(
            &[
                "../../proto/veil/v1/change.proto",
                "../../proto/veil/v1/audit.proto",
            ],
            &["../../proto"],
        )
        .expect("compiling proto/veil/v1/*.proto (is protoc installed?)");
}
