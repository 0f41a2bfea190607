//! `qatc dot FILE [-o OUT]`: render a verified graph in Graphviz syntax (`qir::dot`).

use std::path::PathBuf;

use crate::io::{CmdResult, check_output, read_input, write_output};

/// Render a .qir file as a Graphviz graph (`dot -Tsvg` draws it).
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where to write the graph (standard output by default or with `-`).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    if let Some(out) = &args.output {
        check_output("-o", out, &[("the model", args.file.as_path())])?;
    }
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    write_output(args.output.as_deref(), &qir::dot::to_dot(&g))
}
