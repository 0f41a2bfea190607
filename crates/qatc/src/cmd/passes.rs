//! `qatc passes`: list every registered pass with its summary and options, then every
//! named pipeline with its description and text.

use std::fmt::Write as _;

use crate::io::{CmdResult, write_stdout};

/// List the passes with their options, and the named pipelines.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> CmdResult {
    let mut s = String::from("Passes:\n");
    let regs = passes::registry::all();
    let width = regs.iter().map(|r| r.info.name.len()).max().unwrap_or(0);
    for r in regs {
        let _ = writeln!(s, "  {:width$}  {}", r.info.name, r.info.summary);
        for o in r.info.options {
            let _ = writeln!(
                s,
                "  {:width$}    {}={} ({}): {}",
                "",
                o.name,
                o.default,
                o.kind.describe(),
                o.doc
            );
        }
    }
    s.push_str("\nPipelines (--pipeline NAME):\n");
    for p in passes::named_pipelines() {
        let _ = writeln!(s, "  {}  {}", p.name, p.description());
        match p.pipeline() {
            Ok(pl) => {
                let _ = writeln!(s, "      {pl}");
            }
            Err(e) => {
                let _ = writeln!(s, "      (invalid: {e})");
            }
        }
    }
    write_stdout(&s)
}
