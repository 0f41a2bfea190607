//! Runs the `canonicalize` pass alone on a model, from Rust, and prints the result.
//!
//! ```text
//! cargo run -p qatc-passes --example canonicalize            # a built-in model
//! cargo run -p qatc-passes --example canonicalize -- m.qir   # a model file
//! ```

use passes::{Canonicalize, Pass};

/// A model with a duplicated op, a dead op and a constant transposed at every run.
const MODEL: &str = "\
graph @example {
  input %x: f32[B, 2]
  const %w: f32[2, 3] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

  %wt = transpose(%w) {perm = [1, 0]} : f32[3, 2]
  %y = linear(%x, %wt) : f32[B, 3]
  %a = relu(%y) : f32[B, 3]
  %b = relu(%y) : f32[B, 3]
  %unused = tanh(%y) : f32[B, 3]
  %s = add(%a, %b) : f32[B, 3]

  output s = %s
}
";

fn main() -> std::process::ExitCode {
    let (name, source) = match std::env::args().nth(1) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(s) => (path, s),
            Err(e) => {
                eprintln!("error: cannot read {path}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => ("<example>".to_string(), MODEL.to_string()),
    };
    let mut g = match qir_reader::parse_and_verify(&source) {
        Ok(g) => g,
        Err(diags) => {
            eprint!("{}", qir_reader::render(&diags, &name, &source));
            return std::process::ExitCode::FAILURE;
        }
    };
    match Canonicalize::default().run(&mut g) {
        Ok(changed) => {
            eprintln!("// changed: {changed}");
            print!("{}", qir::print::print(&g));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
