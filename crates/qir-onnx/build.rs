//! Generates the Rust types of the ONNX protobuf schema (`proto/onnx.proto`, the official
//! file of ONNX 1.23.2) with prost. protox parses the schema in Rust, so the build needs no
//! `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
