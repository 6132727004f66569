//! Compiles `proto/` with prost. Needs `protoc` (Debian package `protobuf-compiler`).
fn main() {
    println!("cargo:rerun-if-changed=proto");
    prost_build::compile_protos(&["proto/veil/v1/change.proto"], &["proto"])
        .expect("compiling proto/veil/v1/change.proto (is protoc installed?)");
}
