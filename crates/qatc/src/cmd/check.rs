//! `qatc check FILE...`: parse and verify each file; print every error as
//! `FILE:LINE:COL: error: ...`; fail if any file has an error.

use std::path::PathBuf;

use crate::io::{CmdResult, Failure, read_input};

/// Parse and verify .qir files (`-` reads standard input).
#[derive(clap::Args)]
pub struct Args {
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let mut ok = true;
    for path in &args.files {
        let checked = read_input(path).and_then(|input| super::parse_and_verify(&input));
        match checked {
            Ok(_) => {}
            Err(Failure::Reported) => ok = false,
            Err(Failure::Message(m)) => {
                crate::io::write_stderr(&format!("error: {m}\n"));
                ok = false;
            }
        }
    }
    if ok { Ok(()) } else { Err(Failure::Reported) }
}
