//! Textual pipelines: `canonicalize,fold-batchnorm,insert-fake-quant{scheme=tflite-int8}`.
//!
//! Grammar (whitespace, including newlines, may appear between any two tokens):
//! ```text
//! pipeline := (pass (',' pass)*)?
//! pass     := NAME ('{' (option (',' option)*)? '}')?
//! option   := NAME '=' value
//! value    := WORD | STRING | '[' ((WORD | STRING) (',' (WORD | STRING))*)? ']'
//! NAME     := [A-Za-z0-9_-]+
//! WORD     := [A-Za-z0-9_.+\-:/%@*]+
//! STRING   := '"' ([^"\\] | '\"' | '\\')* '"'
//! ```
//! Invariant: [`Pipeline`]'s `Display` is the canonical text (no whitespace, strings quoted
//! only when they are not a WORD), and parsing it gives back an equal [`Pipeline`]; so
//! printing canonical text after parsing reproduces it exactly. Pass and option names are
//! only checked against the registry later, so this module knows no pass.

use std::fmt;
use std::str::FromStr;

/// An option value as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OptValue {
    /// A word or a quoted string (stored unquoted).
    Scalar(String),
    /// A bracketed list.
    List(Vec<String>),
}

impl OptValue {
    /// The text of a scalar value.
    pub fn as_scalar(&self) -> Option<&str> {
        match self {
            OptValue::Scalar(s) => Some(s),
            OptValue::List(_) => None,
        }
    }
}

/// One pass of a pipeline with its options, in the order written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PassSpec {
    /// The pass name as written (checked against the registry later).
    pub name: String,
    /// `name=value` pairs as written.
    pub options: Vec<(String, OptValue)>,
}

impl PassSpec {
    /// A pass without options.
    pub fn new(name: impl Into<String>) -> PassSpec {
        PassSpec {
            name: name.into(),
            options: Vec::new(),
        }
    }
}

/// A sequence of passes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pipeline {
    /// The passes, in the order they run.
    pub passes: Vec<PassSpec>,
}

/// A syntax error in pipeline text, with its position (1-based line and column, in
/// characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({})", position(*line, *column))]
pub struct ParseError {
    /// What was expected and what was found.
    pub message: String,
    /// Byte offset of the problem in the text.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

fn position(line: usize, column: usize) -> String {
    if line == 1 {
        format!("column {column}")
    } else {
        format!("line {line}, column {column}")
    }
}

/// Parses pipeline text.
pub fn parse(text: &str) -> Result<Pipeline, ParseError> {
    let mut p = Parser { text, pos: 0 };
    let mut passes = Vec::new();
    p.skip_ws();
    if p.at_end() {
        return Ok(Pipeline { passes });
    }
    loop {
        passes.push(p.pass()?);
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(',') => p.bump(),
            Some(_) => return Err(p.error("expected ',' or the end of the pipeline")),
        }
        p.skip_ws();
    }
    Ok(Pipeline { passes })
}

/// Parses one option value (`word`, `"string"` or `[a, b]`); used for option defaults.
pub fn parse_value(text: &str) -> Result<OptValue, ParseError> {
    let mut p = Parser { text, pos: 0 };
    p.skip_ws();
    let v = p.value()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("unexpected text after the value"));
    }
    Ok(v)
}

impl FromStr for Pipeline {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Pipeline, ParseError> {
        parse(s)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.+-:/%@*".contains(c)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }
    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }
    fn error(&self, message: impl Into<String>) -> ParseError {
        let before = &self.text[..self.pos];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let found = match self.peek() {
            Some(c) => format!(", found '{c}'"),
            None => ", found the end of the text".to_string(),
        };
        ParseError {
            message: format!("{}{found}", message.into()),
            offset: self.pos,
            line,
            column,
        }
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.text[start..self.pos]
    }
    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        let n = self.take_while(is_name_char).to_string();
        if n.is_empty() {
            return Err(self.error(format!("expected {what}")));
        }
        Ok(n)
    }
    fn pass(&mut self) -> Result<PassSpec, ParseError> {
        let name = self.name("a pass name")?;
        let mut options = Vec::new();
        self.skip_ws();
        if self.peek() == Some('{') {
            self.bump();
            self.skip_ws();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(PassSpec { name, options });
            }
            loop {
                self.skip_ws();
                let key = self.name("an option name")?;
                self.skip_ws();
                if self.peek() != Some('=') {
                    return Err(self.error(format!("expected '=' after option '{key}'")));
                }
                self.bump();
                self.skip_ws();
                let value = self.value()?;
                options.push((key, value));
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.bump(),
                    Some('}') => {
                        self.bump();
                        break;
                    }
                    _ => return Err(self.error("expected ',' or '}' in the option list")),
                }
            }
        }
        Ok(PassSpec { name, options })
    }
    fn scalar(&mut self) -> Result<String, ParseError> {
        if self.peek() == Some('"') {
            self.bump();
            let mut s = String::new();
            loop {
                match self.peek() {
                    None => return Err(self.error("unterminated string")),
                    Some('"') => {
                        self.bump();
                        return Ok(s);
                    }
                    Some('\\') => {
                        self.bump();
                        match self.peek() {
                            Some(c @ ('"' | '\\')) => {
                                s.push(c);
                                self.bump();
                            }
                            _ => return Err(self.error("expected '\"' or '\\' after '\\'")),
                        }
                    }
                    Some(c) => {
                        s.push(c);
                        self.bump();
                    }
                }
            }
        }
        let w = self.take_while(is_word_char).to_string();
        if w.is_empty() {
            return Err(self.error("expected an option value"));
        }
        Ok(w)
    }
    fn value(&mut self) -> Result<OptValue, ParseError> {
        if self.peek() != Some('[') {
            return self.scalar().map(OptValue::Scalar);
        }
        self.bump();
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(OptValue::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.scalar()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.bump(),
                Some(']') => {
                    self.bump();
                    return Ok(OptValue::List(items));
                }
                _ => return Err(self.error("expected ',' or ']' in the list")),
            }
        }
    }
}

fn write_scalar(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.is_empty() && s.chars().all(is_word_char) {
        return f.write_str(s);
    }
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

impl fmt::Display for OptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptValue::Scalar(s) => write_scalar(f, s),
            OptValue::List(items) => {
                f.write_str("[")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_scalar(f, s)?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.options.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(s: &str) {
        let p = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(p.to_string(), s);
    }

    #[test]
    fn canonical_text_prints_back_exactly() {
        roundtrip("");
        roundtrip("canonicalize");
        roundtrip("a,b{k=v,k2=v2},c");
        roundtrip("canonicalize,fold-batchnorm,insert-fake-quant{scheme=tflite-int8}");
        roundtrip("p{skip=[fc1,fc2.w],eps=1e-5,x=-3,s=\"two words\",e=[]}");
        roundtrip("p{s=\"quote \\\" and backslash \\\\\"}");
    }

    #[test]
    fn whitespace_and_newlines_are_ignored() {
        let p = parse("  a ,\n b { k = v , k2 = [ x , y ] } ,\n\tc  ").unwrap();
        assert_eq!(p.to_string(), "a,b{k=v,k2=[x,y]},c");
        assert_eq!(parse("a{}").unwrap().to_string(), "a");
        assert_eq!(parse("p{s=\"word\"}").unwrap().to_string(), "p{s=word}");
    }

    #[test]
    fn structure() {
        let p = parse("a,b{k=v,l=[1,2]}").unwrap();
        assert_eq!(p.passes.len(), 2);
        assert_eq!(p.passes[0], PassSpec::new("a"));
        assert_eq!(
            p.passes[1].options,
            vec![
                ("k".to_string(), OptValue::Scalar("v".into())),
                (
                    "l".to_string(),
                    OptValue::List(vec!["1".into(), "2".into()])
                ),
            ]
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("a,,b", "expected a pass name, found ',' (column 3)"),
            (
                "a,",
                "expected a pass name, found the end of the text (column 3)",
            ),
            (
                "a b",
                "expected ',' or the end of the pipeline, found 'b' (column 3)",
            ),
            (
                "a{k}",
                "expected '=' after option 'k', found '}' (column 4)",
            ),
            ("a{k=}", "expected an option value, found '}' (column 5)"),
            (
                "a{k=v",
                "expected ',' or '}' in the option list, found the end of the text (column 6)",
            ),
            (
                "a{k=[x y]}",
                "expected ',' or ']' in the list, found 'y' (column 8)",
            ),
            (
                "a{k=\"x}",
                "unterminated string, found the end of the text (column 8)",
            ),
            (
                "a{k=\"\\n\"}",
                "expected '\"' or '\\' after '\\', found 'n' (column 7)",
            ),
            (
                "a,\n  {",
                "expected a pass name, found '{' (line 2, column 3)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_.+:/%@*-]{1,8}",
            any::<String>(),
            Just(String::new()),
        ]
    }

    fn value() -> impl Strategy<Value = OptValue> {
        prop_oneof![
            scalar().prop_map(OptValue::Scalar),
            prop::collection::vec(scalar(), 0..4).prop_map(OptValue::List),
        ]
    }

    fn pipeline() -> impl Strategy<Value = Pipeline> {
        let pass = (
            "[a-z][a-z0-9_-]{0,10}",
            prop::collection::vec(("[a-z][a-z0-9-]{0,6}", value()), 0..4),
        )
            .prop_map(|(name, options)| PassSpec { name, options });
        prop::collection::vec(pass, 0..5).prop_map(|passes| Pipeline { passes })
    }

    proptest! {
        #[test]
        fn print_parse_print_is_identity(p in pipeline()) {
            let text = p.to_string();
            let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &p);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn parsing_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn spaces_between_tokens_do_not_matter(p in pipeline()) {
            let text = p.to_string();
            // Insert a space after every separator that cannot be inside a string.
            if !text.contains('"') {
                let spaced = text.replace(',', " , ").replace('{', " { ").replace('}', " } ").replace('=', " = ");
                prop_assert_eq!(parse(&spaced).map_err(|e| TestCaseError::fail(e.to_string()))?, p);
            }
        }
    }
}
