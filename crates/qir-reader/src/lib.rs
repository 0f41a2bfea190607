//! `qir-reader`: reads `.qir` text into a [`qir::Graph`] and reports what is wrong with
//! text that does not read, as `FILE:LINE:COL: error: message` diagnostics.
//!
//! The pipeline is lex ([`lexer`], logos) → parse (the lalrpop grammar in the workspace's
//! `grammar/qir.lalrpop`, into the syntax tree of [`ast`]) → lower (names resolved, types
//! inferred where not written, source locations and comments recorded) → optionally verify
//! (`qir::verify`, with its errors placed at the source spans of the nodes they concern).
//! The printer `qir::print::print` writes the canonical form; reading its output and
//! printing again gives the same text. No input makes the reader panic.
//!
//! ```
//! let text = "\
//! // a tiny model
//! graph @tiny {
//!   input %x: f32[B, 4]
//!   param %w: f32[3, 4] = kaiming_uniform
//!
//!   %h = linear(%x, %w)
//!   %0 = relu(%h) : f32[B, 3]
//!
//!   output y = %0
//! }
//! ";
//! let g = qir_reader::parse_and_verify(text).unwrap();
//! let printed = qir::print::print(&g);
//! assert!(printed.contains("  %h = linear(%x, %w) : f32[B, 3]\n"));
//! assert_eq!(qir::print::print(&qir_reader::parse(&printed).unwrap()), printed);
//!
//! let errs = qir_reader::parse("graph @m {\n  %y = relux(%x)\n}\n").unwrap_err();
//! let text = qir_reader::render(&errs, "m.qir", "graph @m {\n  %y = relux(%x)\n}\n");
//! assert!(text.starts_with("m.qir:2:8: error: unknown op 'relux' (did you mean 'relu'?)\n"));
//! ```

#![warn(missing_docs)]

pub mod ast;
mod diag;
pub mod lexer;
mod lower;
pub mod reference;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused_parens, missing_docs)]
    grammar,
    "/qir.rs"
);

pub use diag::{Diagnostic, line_col, render, verify_diagnostics};

use qir::Graph;

/// At most this many lexical errors are reported (a binary file would give thousands).
const MAX_LEX_ERRORS: usize = 100;

/// The diagnostics of lexical errors, the first [`MAX_LEX_ERRORS`] of them.
fn lex_diagnostics(errors: &[lexer::LexError]) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = errors
        .iter()
        .take(MAX_LEX_ERRORS)
        .map(diag::lex_diagnostic)
        .collect();
    if errors.len() > MAX_LEX_ERRORS
        && let Some(last) = diags.last_mut()
    {
        last.notes.push(format!(
            "{} more lexical errors follow and are not shown",
            errors.len() - MAX_LEX_ERRORS
        ));
    }
    diags
}

/// Lexes and parses `source` into its syntax tree (no name resolution), with the comments.
fn parse_file(source: &str) -> Result<(ast::File<'_>, Vec<lexer::Comment>), Vec<Diagnostic>> {
    let lexed = lexer::lex(source);
    let lexer::Lexed {
        tokens,
        comments,
        errors,
    } = lexed;
    match grammar::FileParser::new().parse(tokens) {
        Ok(file) => Ok((file, comments)),
        Err(e) => {
            // The parser stops at the first lexical error it meets (as `User`) or at a
            // syntax error before it; either way every lexical error is worth reporting.
            let mut diags = lex_diagnostics(&errors);
            if !matches!(e, lalrpop_util::ParseError::User { .. }) {
                diags.push(diag::parse_diagnostic(source, e));
            }
            diags.sort_by_key(|d| d.span.as_ref().map(|s| s.start));
            Err(diags)
        }
    }
}

/// Reads `source` into a graph: lex, parse and lower (names resolved, result types inferred
/// where not written, locations and comments recorded). Does not verify the graph.
pub fn parse(source: &str) -> Result<Graph, Vec<Diagnostic>> {
    let (file, comments) = parse_file(source)?;
    lower::lower(source, &file, &comments)
}

/// [`parse`], then `qir::verify::verify`, whose errors are placed at the source spans of
/// the nodes, outputs, loss and updates they concern.
pub fn parse_and_verify(source: &str) -> Result<Graph, Vec<Diagnostic>> {
    let g = parse(source)?;
    match qir::verify::verify(&g) {
        Ok(()) => Ok(g),
        Err(errs) => Err(verify_diagnostics(&g, &errs)),
    }
}

/// Parses one op statement such as an op table example (`%h = linear(%x, %w) : f32[B, 3]`),
/// resolving the op, its attributes and its written type but not its operands.
pub fn parse_op_statement(source: &str) -> Result<qir::Op, Vec<Diagnostic>> {
    let lexed = lexer::lex(source);
    let errors = lexed.errors;
    match grammar::ItemParser::new().parse(lexed.tokens) {
        Ok(item) => lower::lower_op_statement(source, &item),
        Err(e) => {
            let mut diags = lex_diagnostics(&errors);
            if !matches!(e, lalrpop_util::ParseError::User { .. }) {
                diags.push(diag::parse_diagnostic(source, e));
            }
            Err(diags)
        }
    }
}
