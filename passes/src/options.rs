//! Pass options: their declaration ([`OptionSpec`]), the checked set a pass is built from
//! ([`Options`]) and the errors a user sees when an option is unknown or malformed.
//!
//! Invariant: an [`Options`] value only holds options its pass declares, each given at
//! most once and already checked against its kind, so the typed getters only fail on a
//! programming error (asking for an option that was never declared or with the wrong kind).

use std::collections::HashMap;
use std::fmt;

use crate::pipeline::{OptValue, parse_value};

/// The kind of value an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    UInt,
    /// A finite number.
    Float,
    /// Any word or quoted string.
    Str,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// A bracketed list of words (`[fc1, fc2]`); a single word is a one-element list.
    List,
}

impl OptionKind {
    /// What the kind accepts, for messages and `qatc passes`.
    pub fn describe(self) -> String {
        match self {
            OptionKind::Bool => "true or false".into(),
            OptionKind::UInt => "a non-negative integer".into(),
            OptionKind::Float => "a number".into(),
            OptionKind::Str => "a string".into(),
            OptionKind::Choice(vs) => format!("one of {}", vs.join(", ")),
            OptionKind::List => "a list [a, b, ...]".into(),
        }
    }
}

/// One declared option of a pass.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// kebab-case name, as written in pipelines.
    pub name: &'static str,
    /// What values it takes.
    pub kind: OptionKind,
    /// The default in pipeline value syntax (`true`, `65536`, `[]`).
    pub default: &'static str,
    /// One line, lowercase, no final period.
    pub doc: &'static str,
}

/// A problem with the options given to a pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The pass has no option of that name.
    #[error("{}", unknown_option_message(pass, option, valid))]
    Unknown {
        /// The pass.
        pass: String,
        /// The option as written.
        option: String,
        /// The options the pass has.
        valid: Vec<&'static str>,
    },
    /// The option is given more than once.
    #[error("option '{option}' of pass '{pass}' is given twice")]
    Duplicate {
        /// The pass.
        pass: String,
        /// The option.
        option: String,
    },
    /// The value is not of the option's kind.
    #[error("option '{option}' of pass '{pass}' expects {expected}, found '{found}'")]
    BadValue {
        /// The pass.
        pass: String,
        /// The option.
        option: String,
        /// What the option takes.
        expected: String,
        /// The value as written.
        found: String,
    },
    /// The value has the right kind but the pass cannot use it (a scheme file that does
    /// not parse, say); `message` says why.
    #[error("option '{option}' of pass '{pass}': {message}")]
    Invalid {
        /// The pass.
        pass: String,
        /// The option.
        option: String,
        /// What is wrong with the value.
        message: String,
    },
    /// A pass asked for an option it does not declare, or with the wrong kind (a bug).
    #[error("internal error: pass '{pass}' has no {kind} option '{option}'")]
    Undeclared {
        /// The pass.
        pass: String,
        /// The option asked for.
        option: String,
        /// The kind asked for.
        kind: &'static str,
    },
}

fn unknown_option_message(pass: &str, option: &str, valid: &[&'static str]) -> String {
    if valid.is_empty() {
        return format!("pass '{pass}' has no options, found '{option}'");
    }
    let hint = match crate::suggest(option, valid.iter().copied()) {
        Some(s) => format!("; did you mean '{s}'?"),
        None => String::new(),
    };
    format!(
        "pass '{pass}' has no option '{option}' (valid options: {}){hint}",
        valid.join(", ")
    )
}

/// The checked options of one pass instance.
#[derive(Clone, Debug)]
pub struct Options {
    pass: &'static str,
    specs: &'static [OptionSpec],
    given: HashMap<&'static str, OptValue>,
}

impl Options {
    /// Checks `given` against `specs`: every name declared, none twice, every value of the
    /// declared kind.
    pub fn new(
        pass: &'static str,
        specs: &'static [OptionSpec],
        given: &[(String, OptValue)],
    ) -> Result<Options, OptionError> {
        let mut map = HashMap::new();
        for (name, value) in given {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                return Err(OptionError::Unknown {
                    pass: pass.to_string(),
                    option: name.clone(),
                    valid: specs.iter().map(|s| s.name).collect(),
                });
            };
            if map.contains_key(spec.name) {
                return Err(OptionError::Duplicate {
                    pass: pass.to_string(),
                    option: name.clone(),
                });
            }
            check_kind(pass, spec, value)?;
            map.insert(spec.name, value.clone());
        }
        Ok(Options {
            pass,
            specs,
            given: map,
        })
    }

    /// Options with every value at its default.
    pub fn defaults(pass: &'static str, specs: &'static [OptionSpec]) -> Options {
        Options {
            pass,
            specs,
            given: HashMap::new(),
        }
    }

    fn value(&self, name: &str, kind: &'static str) -> Result<(OptionSpec, OptValue), OptionError> {
        let undeclared = || OptionError::Undeclared {
            pass: self.pass.to_string(),
            option: name.to_string(),
            kind,
        };
        let spec = *self
            .specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(undeclared)?;
        let value = match self.given.get(spec.name) {
            Some(v) => v.clone(),
            None => parse_value(spec.default).map_err(|_| undeclared())?,
        };
        Ok((spec, value))
    }

    /// A [`OptionKind::Bool`] option.
    pub fn bool(&self, name: &str) -> Result<bool, OptionError> {
        let (spec, v) = self.value(name, "boolean")?;
        match (spec.kind, v.as_scalar()) {
            (OptionKind::Bool, Some("true")) => Ok(true),
            (OptionKind::Bool, Some("false")) => Ok(false),
            _ => Err(self.undeclared(name, "boolean")),
        }
    }

    /// A [`OptionKind::UInt`] option.
    pub fn uint(&self, name: &str) -> Result<u64, OptionError> {
        let (spec, v) = self.value(name, "integer")?;
        match (spec.kind, v.as_scalar().and_then(|s| s.parse().ok())) {
            (OptionKind::UInt, Some(n)) => Ok(n),
            _ => Err(self.undeclared(name, "integer")),
        }
    }

    /// A [`OptionKind::Float`] option.
    pub fn float(&self, name: &str) -> Result<f64, OptionError> {
        let (spec, v) = self.value(name, "number")?;
        match (spec.kind, v.as_scalar().and_then(parse_finite)) {
            (OptionKind::Float, Some(x)) => Ok(x),
            _ => Err(self.undeclared(name, "number")),
        }
    }

    /// A [`OptionKind::Str`] option.
    pub fn string(&self, name: &str) -> Result<String, OptionError> {
        let (spec, v) = self.value(name, "string")?;
        match (spec.kind, v.as_scalar()) {
            (OptionKind::Str, Some(s)) => Ok(s.to_string()),
            _ => Err(self.undeclared(name, "string")),
        }
    }

    /// A [`OptionKind::Choice`] option, as the declared spelling.
    pub fn choice(&self, name: &str) -> Result<&'static str, OptionError> {
        let (spec, v) = self.value(name, "choice")?;
        match (spec.kind, v.as_scalar()) {
            (OptionKind::Choice(allowed), Some(s)) => allowed
                .iter()
                .find(|a| **a == s)
                .copied()
                .ok_or_else(|| self.undeclared(name, "choice")),
            _ => Err(self.undeclared(name, "choice")),
        }
    }

    /// A [`OptionKind::List`] option.
    pub fn list(&self, name: &str) -> Result<Vec<String>, OptionError> {
        let (spec, v) = self.value(name, "list")?;
        match (spec.kind, v) {
            (OptionKind::List, OptValue::List(items)) => Ok(items),
            (OptionKind::List, OptValue::Scalar(s)) => Ok(vec![s]),
            _ => Err(self.undeclared(name, "list")),
        }
    }

    fn undeclared(&self, name: &str, kind: &'static str) -> OptionError {
        OptionError::Undeclared {
            pass: self.pass.to_string(),
            option: name.to_string(),
            kind,
        }
    }
}

fn parse_finite(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn check_kind(pass: &str, spec: &OptionSpec, value: &OptValue) -> Result<(), OptionError> {
    let ok = match (spec.kind, value) {
        (OptionKind::Bool, OptValue::Scalar(s)) => s == "true" || s == "false",
        (OptionKind::UInt, OptValue::Scalar(s)) => s.parse::<u64>().is_ok(),
        (OptionKind::Float, OptValue::Scalar(s)) => parse_finite(s).is_some(),
        (OptionKind::Str, OptValue::Scalar(_)) => true,
        (OptionKind::Choice(allowed), OptValue::Scalar(s)) => allowed.contains(&s.as_str()),
        (OptionKind::List, _) => true,
        (
            OptionKind::Bool
            | OptionKind::UInt
            | OptionKind::Float
            | OptionKind::Str
            | OptionKind::Choice(_),
            OptValue::List(_),
        ) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(OptionError::BadValue {
            pass: pass.to_string(),
            option: spec.name.to_string(),
            expected: spec.kind.describe(),
            found: value.to_string(),
        })
    }
}

impl fmt::Display for OptionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (default {}) — {}",
            self.name,
            self.kind.describe(),
            self.default,
            self.doc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[OptionSpec] = &[
        OptionSpec {
            name: "flag",
            kind: OptionKind::Bool,
            default: "true",
            doc: "a flag",
        },
        OptionSpec {
            name: "limit",
            kind: OptionKind::UInt,
            default: "8",
            doc: "a limit",
        },
        OptionSpec {
            name: "scheme",
            kind: OptionKind::Choice(&["a", "b"]),
            default: "a",
            doc: "a scheme",
        },
        OptionSpec {
            name: "skip",
            kind: OptionKind::List,
            default: "[]",
            doc: "names to skip",
        },
        OptionSpec {
            name: "eps",
            kind: OptionKind::Float,
            default: "0.5",
            doc: "a number",
        },
    ];

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, OptValue)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), parse_value(v).unwrap()))
            .collect()
    }

    #[test]
    fn defaults_and_given_values() {
        let o = Options::new("p", SPECS, &given(&[("limit", "3"), ("skip", "[x, y]")])).unwrap();
        assert!(o.bool("flag").unwrap());
        assert_eq!(o.uint("limit").unwrap(), 3);
        assert_eq!(o.choice("scheme").unwrap(), "a");
        assert_eq!(o.list("skip").unwrap(), ["x", "y"]);
        assert_eq!(o.float("eps").unwrap(), 0.5);
        let o = Options::new("p", SPECS, &given(&[("skip", "fc1")])).unwrap();
        assert_eq!(o.list("skip").unwrap(), ["fc1"]);
    }

    #[test]
    fn unknown_option_lists_valid_ones() {
        let e = Options::new("p", SPECS, &given(&[("limt", "3")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pass 'p' has no option 'limt' (valid options: flag, limit, scheme, skip, eps); did you mean 'limit'?"
        );
        let e = Options::new("q", &[], &given(&[("x", "1")])).unwrap_err();
        assert_eq!(e.to_string(), "pass 'q' has no options, found 'x'");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let cases = [
            ("flag", "yes", "true or false"),
            ("limit", "-1", "a non-negative integer"),
            ("scheme", "c", "one of a, b"),
            ("eps", "inf", "a number"),
            ("limit", "[1]", "a non-negative integer"),
        ];
        for (k, v, want) in cases {
            let e = Options::new("p", SPECS, &given(&[(k, v)])).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("option '{k}' of pass 'p' expects {want}, found '{v}'")
            );
        }
        let e = Options::new("p", SPECS, &given(&[("flag", "true"), ("flag", "false")]));
        assert!(matches!(e, Err(OptionError::Duplicate { .. })));
    }

    #[test]
    fn getters_refuse_undeclared_or_mistyped_options() {
        let o = Options::defaults("p", SPECS);
        assert!(matches!(
            o.bool("nope"),
            Err(OptionError::Undeclared { .. })
        ));
        assert!(matches!(
            o.uint("flag"),
            Err(OptionError::Undeclared { .. })
        ));
    }
}
