//! Embeds every `pipelines/NAME.pipeline` file into the crate: adding a file is all it
//! takes to add a named pipeline. Generates `$OUT_DIR/pipelines.rs` holding
//! `NAMED: &[(&str, &str)]` (name, file text), sorted by name.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs, io};

fn main() -> io::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(io::Error::other)?);
    let dir = manifest.join("pipelines");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "pipeline") {
            continue;
        }
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let kebab = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !kebab || name.is_empty() {
            return Err(io::Error::other(format!(
                "pipeline file {} must be named in kebab-case",
                path.display()
            )));
        }
        println!("cargo:rerun-if-changed={}", path.display());
        entries.push((name, path));
    }
    entries.sort();
    let mut out = String::from("/// Named pipelines: (name, file text).\n");
    out.push_str("pub(crate) const NAMED: &[(&str, &str)] = &[\n");
    for (name, path) in &entries {
        let path = path
            .to_str()
            .ok_or_else(|| io::Error::other("non-UTF-8 path"))?;
        let _ = writeln!(out, "    ({name:?}, include_str!({path:?})),");
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(io::Error::other)?);
    fs::write(out_dir.join("pipelines.rs"), out)
}
