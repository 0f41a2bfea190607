//! Diagnostics: the error type of the reader, the conversion of every lalrpop and lexer
//! error into one, verifier errors mapped onto source spans, and rendering as
//! `FILE:LINE:COL: error: message`, the source line with an underline (drawn by ariadne,
//! colours off), then `note:` lines.
//!
//! Invariants: nothing here panics on any span or source (spans are clamped to the source
//! and widened to `char` boundaries before use); lines are counted at `\n` and columns in
//! `char`s, both from 1.

use std::fmt::Write as _;
use std::ops::Range;

use ariadne::{Config, Label, Report, ReportKind, Source};
use lalrpop_util::ParseError;
use qir::verify::{Site, VerifyErrors};
use qir::{Graph, Loc};

use crate::lexer::{LexError, Token, char_aligned};

/// One error found in a source text (or in the graph read from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Lowercase, without a final period; names the op or value at fault.
    pub message: String,
    /// The byte range the error is about, when it has a place in the source.
    pub span: Option<Range<usize>>,
    /// Further explanations, each printed as `note: ...`.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` without notes.
    pub fn new(message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span: Some(span),
            notes: Vec::new(),
        }
    }

    /// Adds a note, builder style.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// 1-based line and column (in `char`s) of byte offset `at` in `source`.
pub fn line_col(source: &str, at: usize) -> (usize, usize) {
    let at = char_aligned(source, at..at).start;
    let before = source.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).unwrap_or("").chars().count() + 1;
    (line, col)
}

/// Line starts of a source, for positions in O(log n) (rendering many diagnostics of a
/// large file must not rescan it for each one).
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    /// Byte offset and char offset of the start of each line.
    starts: Vec<(usize, usize)>,
}

impl<'s> LineIndex<'s> {
    pub(crate) fn new(source: &'s str) -> LineIndex<'s> {
        let mut starts = vec![(0, 0)];
        let mut chars = 0;
        for (i, c) in source.char_indices() {
            chars += 1;
            if c == '\n' {
                starts.push((i + 1, chars));
            }
        }
        LineIndex { source, starts }
    }

    /// (0-based line, line start byte, line start char) of a `char`-aligned byte offset.
    fn line_of(&self, at: usize) -> (usize, usize, usize) {
        let i = self
            .starts
            .partition_point(|&(b, _)| b <= at)
            .saturating_sub(1);
        let (b, c) = self.starts.get(i).copied().unwrap_or((0, 0));
        (i, b, c)
    }

    /// 1-based line and column (in chars), as [`line_col`].
    fn line_col(&self, at: usize) -> (usize, usize) {
        let (line, b, _) = self.line_of(at);
        let col = self.source.get(b..at).map_or(0, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// `LINE:COL` of a byte offset, for notes that point elsewhere in the file.
    pub(crate) fn at(&self, offset: usize) -> String {
        let offset = char_aligned(self.source, offset..offset).start;
        let (l, c) = self.line_col(offset);
        format!("{l}:{c}")
    }

    /// The char offset of a `char`-aligned byte offset.
    fn char_offset(&self, at: usize) -> usize {
        let (_, b, c) = self.line_of(at);
        c + self.source.get(b..at).map_or(0, |s| s.chars().count())
    }
}

/// Renders diagnostics for `source` read from `file`. Each one starts with
/// `FILE:LINE:COL: error: message` (or `FILE: error: message` when it has no place),
/// followed by the source line with the span underlined, then its notes.
pub fn render(diags: &[Diagnostic], file: &str, source: &str) -> String {
    let mut out = String::new();
    let index = LineIndex::new(source);
    // ariadne's line table, built once for all the diagnostics; the extra blank gives an
    // end-of-file position a character to underline on the last line
    let padded = format!("{source} ");
    let table = Source::from(padded.as_str());
    for d in diags {
        match &d.span {
            Some(span) => {
                let span = char_aligned(source, span.clone());
                let (line, col) = index.line_col(span.start);
                let _ = writeln!(out, "{file}:{line}:{col}: error: {}", d.message);
                // ariadne counts in chars by default; converting here keeps it away from
                // byte arithmetic inside multi-byte characters
                let cs = index.char_offset(span.start)..index.char_offset(span.end);
                out.push_str(&snippet(file, &table, cs, &d.message));
            }
            None => {
                let _ = writeln!(out, "{file}: error: {}", d.message);
            }
        }
        for n in &d.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    out
}

/// The source line(s) of the char range `cs` with the range underlined, drawn by ariadne
/// without its header line (the caller writes the `FILE:LINE:COL` line itself).
fn snippet(file: &str, table: &Source<&str>, mut cs: Range<usize>, label: &str) -> String {
    if cs.is_empty() {
        // an empty span (end of file) still gets a one-column mark
        cs.end = cs.start + 1;
    }
    let id = file.to_string();
    let report = Report::build(ReportKind::Error, (id.clone(), cs.clone()))
        .with_config(Config::default().with_color(false))
        .with_label(Label::new((id.clone(), cs)).with_message(label))
        .finish();
    let mut buf = Vec::new();
    if report.write((id, table), &mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    // drop ariadne's own "Error: ..." header line; keep the drawing, without the
    // trailing blanks ariadne pads some lines with
    let mut out = String::new();
    for line in text.lines().skip(1) {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The readable name of a grammar terminal, as lalrpop lists it in `expected`.
fn terminal_name(t: &str) -> String {
    match t {
        "INT" => "an integer".into(),
        "FLOAT" => "a float".into(),
        "VALUE" => "a value (%name)".into(),
        "GRAPHNAME" => "a graph name (@name)".into(),
        "DIALECT" => "a quantized type (!quant.uniform<...>)".into(),
        "IDENT" => "an identifier".into(),
        quoted => match quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) => format!("'{inner}'"),
            None => quoted.to_string(),
        },
    }
}

/// `expected X` or `expected one of X, Y, Z`.
fn expected_note(expected: &[String]) -> Option<String> {
    let names: Vec<String> = expected.iter().map(|t| terminal_name(t)).collect();
    match names.len() {
        0 => None,
        1 => Some(format!("expected {}", names.join(""))),
        _ => Some(format!("expected one of {}", names.join(", "))),
    }
}

/// How a token appears in a message: its source text, shortened if long.
fn token_text(source: &str, span: &Range<usize>) -> String {
    let span = char_aligned(source, span.clone());
    let text = source.get(span).unwrap_or("");
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("'{}'", short.escape_debug())
}

/// The diagnostic of a lexical error.
pub(crate) fn lex_diagnostic(e: &LexError) -> Diagnostic {
    Diagnostic::new(e.kind.to_string(), e.span.clone())
}

/// The diagnostic of a parser error (every lalrpop error kind).
pub(crate) fn parse_diagnostic(
    source: &str,
    err: ParseError<usize, Token<'_>, LexError>,
) -> Diagnostic {
    match err {
        ParseError::InvalidToken { location } => {
            Diagnostic::new("invalid token", location..location)
        }
        ParseError::UnrecognizedEof { location, expected } => {
            let d = Diagnostic::new("unexpected end of file", location..location);
            match expected_note(&expected) {
                Some(n) => d.with_note(n),
                None => d,
            }
        }
        // lalrpop reports a token after a complete file as unrecognized with nothing
        // expected; it is the same error as an extra token
        ParseError::UnrecognizedToken { token, expected } if expected.is_empty() => {
            parse_diagnostic(source, ParseError::ExtraToken { token })
        }
        ParseError::UnrecognizedToken {
            token: (lo, _, hi),
            expected,
        } => {
            let d = Diagnostic::new(
                format!("unexpected {}", token_text(source, &(lo..hi))),
                lo..hi,
            );
            match expected_note(&expected) {
                Some(n) => d.with_note(n),
                None => d,
            }
        }
        ParseError::ExtraToken { token: (lo, _, hi) } => Diagnostic::new(
            format!(
                "unexpected {} after the end of the graph",
                token_text(source, &(lo..hi))
            ),
            lo..hi,
        )
        .with_note("a file holds exactly one graph"),
        ParseError::User { error } => lex_diagnostic(&error),
    }
}

fn span_of(loc: Option<Loc>) -> Option<Range<usize>> {
    loc.map(|l| l.start as usize..l.end as usize)
}

/// Maps verifier errors to diagnostics, placing each at the source span of the node,
/// output, loss or update it concerns (`span: None` where the graph has no location).
pub fn verify_diagnostics(g: &Graph, errs: &VerifyErrors) -> Vec<Diagnostic> {
    errs.0
        .iter()
        .map(|e| {
            let (span, anonymous) = match e.site {
                Site::Graph => (span_of(g.loc), false),
                Site::Node(id) => match g.get(id) {
                    Some(n) => (span_of(n.loc), n.name.is_none()),
                    None => (None, false),
                },
                Site::Output(i) => (g.outputs().get(i).and_then(|o| span_of(o.loc)), false),
                Site::Loss => (g.loss_decl().and_then(|l| span_of(l.loc)), false),
                Site::Update(i) => (g.updates().get(i).and_then(|u| span_of(u.loc)), false),
            };
            // An anonymous node's subject is an index meaningless to the reader; the
            // underlined line shows which value it is.
            let message = if anonymous && span.is_some() {
                e.message.clone()
            } else {
                e.to_string()
            };
            Diagnostic {
                message,
                span,
                notes: Vec::new(),
            }
        })
        .collect()
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    // a suggestion must keep most of the word: none for one-letter names; long names and
    // candidates whose length differs by more than the limit are not compared at all
    candidates
        .into_iter()
        .filter_map(|c| qir::names::bounded_distance(word, c, limit).map(|d| (d, c)))
        .filter(|&(d, c)| d < len && d < c.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// ` (did you mean 'x'?)` or nothing.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> String {
    suggest(word, candidates)
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_chars() {
        let s = "ab\nçd\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 5), (2, 2)); // after the two-byte 'ç'
        assert_eq!(line_col(s, 4), (2, 1)); // inside 'ç': moved to its start
        assert_eq!(line_col(s, 100), (3, 1));
    }

    proptest::proptest! {
        #[test]
        fn line_index_agrees_with_line_col(text in "(a|é|\n|\r|\t){0,40}", at in 0usize..60) {
            let index = LineIndex::new(&text);
            let aligned = char_aligned(&text, at..at).start;
            proptest::prop_assert_eq!(index.line_col(aligned), line_col(&text, at));
            let chars = text.get(..aligned).map_or(0, |s| s.chars().count());
            proptest::prop_assert_eq!(index.char_offset(aligned), chars);
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("relux", ["relu", "relu6", "gelu"]), Some("relu"));
        assert_eq!(suggest("f3", ["f32", "f64"]), Some("f32"));
        assert_eq!(suggest("banana", ["relu"]), None);
        assert_eq!(suggest("x", ["y", "xy"]), None);
        assert_eq!(suggest("hh", ["h"]), None);
        assert_eq!(suggest("fc1.b", ["fc1.w", "fc2.b"]), Some("fc1.w"));
        // long names get no suggestion, and cost nothing
        let long_a = "a".repeat(100_000);
        let long_b = "b".repeat(100_000);
        assert_eq!(suggest(&long_a, [long_b.as_str()]), None);
    }

    /// Every lalrpop error kind, including those the grammar's own driver cannot produce
    /// with this lexer (`InvalidToken`) or produces in another form (`ExtraToken`).
    #[test]
    fn every_parse_error_kind_becomes_a_diagnostic() {
        let src = "graph @m {} }";
        let d = parse_diagnostic(src, ParseError::InvalidToken { location: 3 });
        assert_eq!((d.message.as_str(), d.span), ("invalid token", Some(3..3)));
        let d = parse_diagnostic(
            src,
            ParseError::UnrecognizedEof {
                location: 13,
                expected: vec!["\"}\"".into(), "VALUE".into()],
            },
        );
        assert_eq!(d.message, "unexpected end of file");
        assert_eq!(d.notes, ["expected one of '}', a value (%name)"]);
        let d = parse_diagnostic(
            src,
            ParseError::UnrecognizedToken {
                token: (6, Token::GraphName("m"), 8),
                expected: vec!["\"{\"".into()],
            },
        );
        assert_eq!(d.message, "unexpected '@m'");
        assert_eq!(d.notes, ["expected '{'"]);
        let d = parse_diagnostic(
            src,
            ParseError::ExtraToken {
                token: (12, Token::RBrace, 13),
            },
        );
        assert_eq!(d.message, "unexpected '}' after the end of the graph");
        assert_eq!(d.span, Some(12..13));
        let d = parse_diagnostic(
            src,
            ParseError::User {
                error: LexError {
                    kind: crate::lexer::LexErrorKind::UnexpectedChar('$'),
                    span: 1..2,
                },
            },
        );
        assert_eq!(d.message, "unexpected character '$'");
        assert_eq!(d.span, Some(1..2));
    }

    #[test]
    fn rendering_without_span_and_out_of_range_spans() {
        let d = Diagnostic {
            message: "graph is odd".into(),
            span: None,
            notes: vec!["look closer".into()],
        };
        assert_eq!(
            render(&[d], "m.qir", ""),
            "m.qir: error: graph is odd\nnote: look closer\n"
        );
        let d = Diagnostic::new("far away", 50..70);
        let text = render(&[d], "m.qir", "ab\ncd");
        assert!(text.starts_with("m.qir:2:3: error: far away\n"), "{text}");
    }
}
