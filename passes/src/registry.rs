//! The pass registry: every pass of the crate, declared once in the `passes!` list of
//! `lib.rs`, created by name from pipeline text, and listed with its summary and options.
//!
//! Invariant (tested): for each registration the type name, the file (module) name and the
//! pipeline name are one spelling — `FoldBatchNorm`, `fold_batchnorm.rs`,
//! `fold-batchnorm` — and every registered pass has tests.

use crate::options::{OptionError, Options};
use crate::pass::{Pass, PassInfo};
use crate::pipeline::{ParseError, PassSpec, Pipeline};

/// One registered pass: its description and how to build it.
#[derive(Clone, Copy)]
pub struct Registration {
    /// Name, summary and options.
    pub info: PassInfo,
    /// The module (file) the pass lives in, e.g. `fold_batchnorm`.
    pub module: &'static str,
    /// The pass type, e.g. `FoldBatchNorm`.
    pub type_name: &'static str,
    pub(crate) create: fn(&Options) -> Result<Box<dyn Pass>, OptionError>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.info.name)
            .field("type_name", &self.type_name)
            .finish()
    }
}

/// A problem turning pipeline text or a pass name into passes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The pipeline text does not parse.
    #[error("invalid pipeline: {0}")]
    Parse(#[from] ParseError),
    /// No pass has that name.
    #[error("{}", unknown_message("pass", "passes", name, valid))]
    UnknownPass {
        /// The name as written.
        name: String,
        /// Every registered pass.
        valid: Vec<&'static str>,
    },
    /// A pass's options are wrong.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// No named pipeline has that name.
    #[error("{}", unknown_message("pipeline", "pipelines", name, valid))]
    UnknownPipeline {
        /// The name as written.
        name: String,
        /// Every named pipeline.
        valid: Vec<&'static str>,
    },
    /// No pass of a named pipeline takes the parameter given to it.
    #[error(
        "pipeline '{pipeline}' has no parameter '{parameter}' (no pass in it has a '{parameter}' option)"
    )]
    UnknownParameter {
        /// The named pipeline.
        pipeline: String,
        /// The parameter as given.
        parameter: String,
    },
    /// A named pipeline's file is broken (a bug in the repository).
    #[error("named pipeline '{name}' is invalid: {error}")]
    BadNamedPipeline {
        /// The pipeline.
        name: String,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
}

fn unknown_message(what: &str, plural: &str, name: &str, valid: &[&'static str]) -> String {
    let hint = match crate::suggest(name, valid.iter().copied()) {
        Some(s) => format!("; did you mean '{s}'?"),
        None => String::new(),
    };
    format!(
        "unknown {what} '{name}' (valid {plural}: {}){hint}",
        valid.join(", ")
    )
}

/// Every registered pass, in declaration order.
pub fn all() -> &'static [Registration] {
    crate::REGISTERED
}

/// The names of all registered passes.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|r| r.info.name).collect()
}

/// The registration of the pass called `name`.
pub fn lookup(name: &str) -> Option<&'static Registration> {
    all().iter().find(|r| r.info.name == name)
}

/// Creates a pass from its name and options as written in a pipeline.
pub fn create(spec: &PassSpec) -> Result<Box<dyn Pass>, ConfigError> {
    let reg = lookup(&spec.name).ok_or_else(|| ConfigError::UnknownPass {
        name: spec.name.clone(),
        valid: names(),
    })?;
    let options = Options::new(reg.info.name, reg.info.options, &spec.options)?;
    Ok((reg.create)(&options)?)
}

/// Creates every pass of a pipeline; the first unknown pass or bad option is the error.
pub fn create_all(pipeline: &Pipeline) -> Result<Vec<Box<dyn Pass>>, ConfigError> {
    pipeline.passes.iter().map(create).collect()
}

/// Parses pipeline text and creates its passes.
pub fn parse_and_create(text: &str) -> Result<Vec<Box<dyn Pass>>, ConfigError> {
    create_all(&crate::pipeline::parse(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `FoldBatchNorm` / `fold_batchnorm` / `fold-batchnorm` all reduce to `foldbatchnorm`.
    fn squash(s: &str) -> String {
        s.chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect()
    }

    #[test]
    fn type_file_and_pipeline_names_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for r in all() {
            let name = r.info.name;
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "pass name '{name}' is not kebab-case"
            );
            assert_eq!(r.module, name.replace('-', "_"), "file of pass '{name}'");
            assert_eq!(squash(r.type_name), squash(name), "type of pass '{name}'");
            assert!(
                r.type_name.starts_with(|c: char| c.is_ascii_uppercase())
                    && !r.type_name.contains('_'),
                "type '{}' is not UpperCamelCase",
                r.type_name
            );
            let file = root.join("src").join(format!("{}.rs", r.module));
            let dir = root.join("src").join(r.module);
            assert!(
                file.is_file() || dir.join("mod.rs").is_file(),
                "pass '{name}' should live in src/{}.rs",
                r.module
            );
            let pass = create(&PassSpec::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pass.name(), name, "{}::name()", r.type_name);
        }
        let mut seen = std::collections::HashSet::new();
        for n in names() {
            assert!(seen.insert(n), "pass '{n}' is registered twice");
        }
    }

    fn source_has_tests(path: &Path) -> bool {
        if path.is_dir() {
            std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| source_has_tests(&e.path()))
        } else {
            std::fs::read_to_string(path).is_ok_and(|s| s.contains("#[test]"))
        }
    }

    fn has_snapshot_inputs(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "qir"))
    }

    #[test]
    fn every_pass_has_tests() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let testdata = root.join("../testdata/passes");
        for r in all() {
            let src = root.join("src").join(format!("{}.rs", r.module));
            let src_dir = root.join("src").join(r.module);
            let unit = source_has_tests(&src) || source_has_tests(&src_dir);
            let snapshots = has_snapshot_inputs(&testdata.join(r.info.name));
            assert!(
                unit || snapshots,
                "pass '{}' has no tests: add #[test]s to src/{}.rs or inputs to testdata/passes/{}/",
                r.info.name,
                r.module,
                r.info.name
            );
        }
    }

    #[test]
    fn option_defaults_are_valid_values() {
        for r in all() {
            for o in r.info.options {
                let v = crate::pipeline::parse_value(o.default)
                    .unwrap_or_else(|e| panic!("{}.{}: {e}", r.info.name, o.name));
                let spec = PassSpec {
                    name: r.info.name.to_string(),
                    options: vec![(o.name.to_string(), v)],
                };
                create(&spec).unwrap_or_else(|e| panic!("{}.{}: {e}", r.info.name, o.name));
            }
            assert!(!r.info.summary.is_empty(), "{}: no summary", r.info.name);
            assert!(
                !r.info.summary.ends_with('.'),
                "{}: summary ends with a period",
                r.info.name
            );
        }
    }

    #[test]
    fn configured_passes_print_back_to_their_spec() {
        // A pass created from a spec reports the same options (all of them, in
        // declaration order), so the pipeline text of a pass manager is faithful.
        for r in all() {
            let pass = create(&PassSpec::new(r.info.name)).unwrap();
            let names: Vec<&str> = pass.options().iter().map(|(k, _)| *k).collect();
            let declared: Vec<&str> = r.info.options.iter().map(|o| o.name).collect();
            assert_eq!(names, declared, "options of '{}'", r.info.name);
        }
    }

    #[test]
    fn unknown_pass_lists_the_valid_ones() {
        let e = parse_and_create("canonicalise").err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("unknown pass 'canonicalise' (valid passes: "),
            "{msg}"
        );
        for n in names() {
            assert!(msg.contains(n), "{msg} should list {n}");
        }
        assert!(msg.ends_with("did you mean 'canonicalize'?"), "{msg}");
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let e = parse_and_create("canonicalize{fold-limt=3}").err().unwrap();
        assert_eq!(
            e.to_string(),
            "pass 'canonicalize' has no option 'fold-limt' (valid options: dce, cse, fold, fold-limit); did you mean 'fold-limit'?"
        );
        let e = parse_and_create("canonicalize{dce=maybe}").err().unwrap();
        assert_eq!(
            e.to_string(),
            "option 'dce' of pass 'canonicalize' expects true or false, found 'maybe'"
        );
        let e = parse_and_create("canonicalize,").err().unwrap();
        assert!(
            e.to_string()
                .starts_with("invalid pipeline: expected a pass name")
        );
    }
}
