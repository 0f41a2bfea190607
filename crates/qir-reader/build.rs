//! Generates the parser from the workspace's one grammar, `grammar/qir.lalrpop` (two levels
//! up from this crate), into `OUT_DIR`; `lalrpop_mod!` in `src/lib.rs` includes it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../grammar/qir.lalrpop");
    lalrpop::Configuration::new()
        .set_in_dir("../../grammar")
        .emit_rerun_directives(true)
        .process()
}
