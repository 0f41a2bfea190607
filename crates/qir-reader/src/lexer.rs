//! The logos lexer of `.qir` text and the token stream the lalrpop parser consumes.
//!
//! Invariants: every token and error carries a byte span that lies on `char` boundaries of
//! the source; comments never reach the parser (they are collected on the side, with their
//! spans, for the lowering step to attach to items); integers are range-checked here
//! (anything that fits neither `i64` nor `u64` is a lexical error), floats keep their text
//! so that each use can round them to its own width (`f32` scales are parsed as `f32`).

use std::fmt;
use std::ops::Range;

use logos::Logos;

/// What went wrong while lexing one token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LexErrorKind {
    /// A character that starts no token.
    UnexpectedChar(char),
    /// A sigil (`%`, `@`, `!`) not followed by a name.
    MissingName(char),
    /// A `-` not followed by a number or `inf`.
    LoneMinus,
    /// An integer literal outside both `i64` and `u64`.
    IntOverflow,
    /// Only produced for an empty error slice (not expected in practice).
    #[default]
    Unknown,
}

impl LexErrorKind {
    fn from_lexer<'a>(lex: &mut logos::Lexer<'a, Token<'a>>) -> LexErrorKind {
        match lex.slice().chars().next() {
            Some(c @ ('%' | '@' | '!')) => LexErrorKind::MissingName(c),
            Some('-') => LexErrorKind::LoneMinus,
            Some(c) => LexErrorKind::UnexpectedChar(c),
            None => LexErrorKind::Unknown,
        }
    }
}

impl fmt::Display for LexErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LexErrorKind::UnexpectedChar('/') => {
                f.write_str("unexpected character '/' (comments start with '//')")
            }
            LexErrorKind::UnexpectedChar(c) => {
                write!(f, "unexpected character '{}'", c.escape_debug())
            }
            LexErrorKind::MissingName('%') => {
                f.write_str("expected a value name after '%' (like %x or %0)")
            }
            LexErrorKind::MissingName('@') => {
                f.write_str("expected a graph name after '@' (like @model)")
            }
            LexErrorKind::MissingName(c) => write!(f, "expected a name after '{c}'"),
            LexErrorKind::LoneMinus => f.write_str("expected a number or 'inf' after '-'"),
            LexErrorKind::IntOverflow => {
                f.write_str("integer literal is out of range (it must fit in 64 bits)")
            }
            LexErrorKind::Unknown => f.write_str("invalid input"),
        }
    }
}

/// A lexical error with the byte span it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    /// What went wrong.
    pub kind: LexErrorKind,
    /// The offending text.
    pub span: Range<usize>,
}

fn int<'a>(lex: &mut logos::Lexer<'a, Token<'a>>) -> Result<i128, LexErrorKind> {
    let v: i128 = lex.slice().parse().map_err(|_| LexErrorKind::IntOverflow)?;
    if v < i64::MIN as i128 || v > u64::MAX as i128 {
        return Err(LexErrorKind::IntOverflow);
    }
    Ok(v)
}

fn after_sigil<'a>(lex: &mut logos::Lexer<'a, Token<'a>>) -> &'a str {
    lex.slice().get(1..).unwrap_or("")
}

fn comment_text<'a>(lex: &mut logos::Lexer<'a, Token<'a>>) -> &'a str {
    lex.slice().get(2..).unwrap_or("").trim_end()
}

/// A token of `.qir` text. Keywords are few on purpose: element types, initializers,
/// storage types and op mnemonics are identifiers resolved by the lowering step.
#[derive(Logos, Clone, Copy, Debug, PartialEq)]
#[logos(error(LexErrorKind, LexErrorKind::from_lexer))]
#[logos(skip r"[ \t\r\n\f]+")]
pub enum Token<'a> {
    /// `// text` to the end of the line; holds the text after `//`, trailing whitespace
    /// trimmed. Never passed to the parser.
    #[regex(r"//[^\n]*", comment_text, allow_greedy = true)]
    Comment(&'a str),

    /// `graph`
    #[token("graph")]
    Graph,
    /// `input`
    #[token("input")]
    Input,
    /// `param`
    #[token("param")]
    Param,
    /// `state`
    #[token("state")]
    State,
    /// `const`
    #[token("const")]
    Const,
    /// `output`
    #[token("output")]
    Output,
    /// `loss`
    #[token("loss")]
    Loss,
    /// `update`
    #[token("update")]
    Update,
    /// `true`
    #[token("true")]
    True,
    /// `false`
    #[token("false")]
    False,
    /// `inf`
    #[token("inf")]
    Inf,
    /// `-inf`
    #[token("-inf")]
    NegInf,
    /// `nan`
    #[token("nan")]
    Nan,

    /// An integer, possibly negative; fits `i64` or `u64`.
    #[regex(r"-?[0-9]+", int)]
    Int(i128),
    /// A float literal with a fraction and/or an exponent, kept as text.
    #[regex(r"-?[0-9]+\.[0-9]+([eE][+-]?[0-9]+)?", |lex| lex.slice())]
    #[regex(r"-?[0-9]+[eE][+-]?[0-9]+", |lex| lex.slice())]
    Float(&'a str),
    /// `%name` or `%17`; holds the text after `%`.
    #[regex(r"%[A-Za-z_][A-Za-z0-9_.]*", after_sigil)]
    #[regex(r"%[0-9]+", after_sigil)]
    Value(&'a str),
    /// `@name`; holds the text after `@`.
    #[regex(r"@[A-Za-z_][A-Za-z0-9_.]*", after_sigil)]
    GraphName(&'a str),
    /// `!dialect.type` such as `!quant.uniform`; holds the whole text.
    #[regex(r"![A-Za-z_][A-Za-z0-9_.]*", |lex| lex.slice())]
    Dialect(&'a str),
    /// An identifier: op mnemonics, element types, initializers, attribute names, ...
    #[regex(r"[A-Za-z_][A-Za-z0-9_.]*", |lex| lex.slice())]
    Ident(&'a str),

    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `<`
    #[token("<")]
    Lt,
    /// `>`
    #[token(">")]
    Gt,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `=`
    #[token("=")]
    Eq,
}

/// A comment and where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    /// The text after `//`, trailing whitespace trimmed.
    pub text: String,
    /// The whole comment, `//` included.
    pub span: Range<usize>,
}

/// One item of the parser's input: a token with its byte span, or a lexical error.
pub type Spanned<'a> = Result<(usize, Token<'a>, usize), LexError>;

/// The whole of a source lexed: the parser's input (errors included, in place), the
/// comments, and the lexical errors again for reporting all of them at once.
#[derive(Debug, Default)]
pub struct Lexed<'a> {
    /// Tokens and errors in source order, comments excluded.
    pub tokens: Vec<Spanned<'a>>,
    /// The comments in source order.
    pub comments: Vec<Comment>,
    /// The lexical errors in source order.
    pub errors: Vec<LexError>,
}

/// Extends `span` to `char` boundaries of `source` and clamps it to the source.
pub(crate) fn char_aligned(source: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, source.len());
    while !source.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// Lexes all of `source`.
pub fn lex(source: &str) -> Lexed<'_> {
    let mut out = Lexed::default();
    let mut lexer = Token::lexer(source);
    while let Some(item) = lexer.next() {
        let span = char_aligned(source, lexer.span());
        match item {
            Ok(Token::Comment(text)) => out.comments.push(Comment {
                text: text.to_string(),
                span,
            }),
            Ok(tok) => out.tokens.push(Ok((span.start, tok, span.end))),
            Err(kind) => {
                // Point at the offending character only, not at whatever logos consumed
                // while trying to match a longer token.
                let span = match kind {
                    LexErrorKind::UnexpectedChar(c) | LexErrorKind::MissingName(c) => {
                        span.start..span.start + c.len_utf8()
                    }
                    LexErrorKind::LoneMinus => span.start..span.start + 1,
                    LexErrorKind::IntOverflow | LexErrorKind::Unknown => span,
                };
                let err = LexError { kind, span };
                out.errors.push(err.clone());
                out.tokens.push(Err(err));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token<'_>> {
        lex(s)
            .tokens
            .into_iter()
            .map(|t| t.map(|(_, t, _)| t).unwrap())
            .collect()
    }

    #[test]
    fn keywords_idents_and_values() {
        assert_eq!(
            toks("graph @m.1 { input %x %0 %fc1.w graphs f32 i8 loss.x }"),
            [
                Token::Graph,
                Token::GraphName("m.1"),
                Token::LBrace,
                Token::Input,
                Token::Value("x"),
                Token::Value("0"),
                Token::Value("fc1.w"),
                Token::Ident("graphs"),
                Token::Ident("f32"),
                Token::Ident("i8"),
                Token::Ident("loss.x"),
                Token::RBrace,
            ]
        );
    }

    #[test]
    fn numbers_in_every_printed_form() {
        assert_eq!(
            toks("0.1 1.0 1e-5 3e20 -2.5e-7 -3 18446744073709551615 inf -inf nan 1E+2"),
            [
                Token::Float("0.1"),
                Token::Float("1.0"),
                Token::Float("1e-5"),
                Token::Float("3e20"),
                Token::Float("-2.5e-7"),
                Token::Int(-3),
                Token::Int(u64::MAX as i128),
                Token::Inf,
                Token::NegInf,
                Token::Nan,
                Token::Float("1E+2"),
            ]
        );
    }

    #[test]
    fn quant_type_tokens() {
        assert_eq!(
            toks("!quant.uniform<i8<-127:127>:f32:0, {0.5:-3}>"),
            [
                Token::Dialect("!quant.uniform"),
                Token::Lt,
                Token::Ident("i8"),
                Token::Lt,
                Token::Int(-127),
                Token::Colon,
                Token::Int(127),
                Token::Gt,
                Token::Colon,
                Token::Ident("f32"),
                Token::Colon,
                Token::Int(0),
                Token::Comma,
                Token::LBrace,
                Token::Float("0.5"),
                Token::Colon,
                Token::Int(-3),
                Token::RBrace,
                Token::Gt,
            ]
        );
    }

    #[test]
    fn comments_are_collected_with_spans() {
        let l = lex("// one  \n%x // two\n//\n");
        assert_eq!(l.tokens.len(), 1);
        let c: Vec<(&str, Range<usize>)> = l
            .comments
            .iter()
            .map(|c| (c.text.as_str(), c.span.clone()))
            .collect();
        assert_eq!(c, [(" one", 0..8), (" two", 12..18), ("", 19..21)]);
    }

    #[test]
    fn errors_point_at_one_character() {
        let l = lex("%x = é 12345678901234567890123 % @ ! - /");
        let errs: Vec<(String, Range<usize>)> = l
            .errors
            .iter()
            .map(|e| (e.kind.to_string(), e.span.clone()))
            .collect();
        assert_eq!(
            errs,
            [
                ("unexpected character 'é'".to_string(), 5..7),
                (
                    "integer literal is out of range (it must fit in 64 bits)".to_string(),
                    8..31
                ),
                (
                    "expected a value name after '%' (like %x or %0)".to_string(),
                    32..33
                ),
                (
                    "expected a graph name after '@' (like @model)".to_string(),
                    34..35
                ),
                ("expected a name after '!'".to_string(), 36..37),
                ("expected a number or 'inf' after '-'".to_string(), 38..39),
                (
                    "unexpected character '/' (comments start with '//')".to_string(),
                    40..41
                ),
            ]
        );
        // errors stay in the token stream, in place, for the parser
        assert!(l.tokens[2].is_err());
    }

    #[test]
    fn integer_range_is_i64_or_u64() {
        assert_eq!(toks("-9223372036854775808"), [Token::Int(i64::MIN as i128)]);
        assert_eq!(lex("-9223372036854775809").errors.len(), 1);
        assert_eq!(lex("18446744073709551616").errors.len(), 1);
    }
}
