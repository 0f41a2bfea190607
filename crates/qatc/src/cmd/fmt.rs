//! `qatc fmt [--check] FILE...`: print each file in canonical form (`qir::print`), in
//! place (atomically) or, with `--check`, only list the files that would change.
//! Formatting needs a file that parses; it does not need one that verifies.

use std::path::{Path, PathBuf};

use crate::io::{
    CmdResult, Failure, display_name, is_std, read_input, write_atomic, write_stderr, write_stdout,
};

/// Rewrite .qir files in canonical form (`-` formats standard input to standard output).
#[derive(clap::Args)]
pub struct Args {
    /// Change nothing; list the files that are not in canonical form and fail if any.
    #[arg(long)]
    check: bool,
    /// The files to format.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let mut ok = true;
    for path in &args.files {
        match format_one(path, args.check) {
            Ok(true) => {}
            Ok(false) => ok = false,
            Err(Failure::Reported) => ok = false,
            Err(Failure::Message(m)) => {
                write_stderr(&format!("error: {m}\n"));
                ok = false;
            }
        }
    }
    if ok { Ok(()) } else { Err(Failure::Reported) }
}

/// Formats one file; `Ok(false)` when `--check` finds it would change.
fn format_one(path: &Path, check: bool) -> Result<bool, Failure> {
    let input = read_input(path)?;
    let g = qir_reader::parse(&input.text).map_err(|diags| {
        write_stderr(&qir_reader::render(&diags, &input.name, &input.text));
        Failure::Reported
    })?;
    let formatted = qir::print::print(&g);
    let same = formatted == input.text;
    if check {
        if !same {
            write_stdout(&format!("{}\n", display_name(path)))?;
        }
        return Ok(same);
    }
    if is_std(path) {
        write_stdout(&formatted)?;
    } else if !same {
        write_atomic(path, &formatted)?;
    }
    Ok(true)
}
