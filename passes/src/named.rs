//! Named pipelines: the `passes/pipelines/NAME.pipeline` files, embedded in the binary by
//! the build script and referenced as `--pipeline NAME`.
//!
//! File format: pipeline text (see [`crate::pipeline`]) that may span lines, with `#`
//! comments to the end of a line; each ordering constraint carries its reason in a comment
//! beside it. The first paragraph of the leading comment is the pipeline's description. Comments are blanked
//! out (replaced by spaces) before parsing, so error positions are positions in the file.

use crate::pipeline::{OptValue, Pipeline, parse};
use crate::registry::{ConfigError, create_all, lookup};

include!(concat!(env!("OUT_DIR"), "/pipelines.rs"));

/// One named pipeline as embedded.
#[derive(Clone, Copy, Debug)]
pub struct NamedPipeline {
    /// The file name without `.pipeline`.
    pub name: &'static str,
    /// The file text, comments included.
    pub source: &'static str,
}

impl NamedPipeline {
    /// The description: the first paragraph of the leading comment, joined into one line.
    pub fn description(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        for line in self.source.lines() {
            let Some(c) = line.trim_start().strip_prefix('#') else {
                break;
            };
            let c = c.trim();
            if c.is_empty() {
                if words.is_empty() {
                    continue;
                }
                break;
            }
            words.push(c);
        }
        words.join(" ")
    }

    /// The pipeline, parsed (pass names are not checked here; see [`named`]).
    pub fn pipeline(&self) -> Result<Pipeline, ConfigError> {
        parse(&strip_comments(self.source)).map_err(|e| ConfigError::BadNamedPipeline {
            name: self.name.to_string(),
            error: Box::new(ConfigError::Parse(e)),
        })
    }
}

/// Every named pipeline, sorted by name.
pub fn named_pipelines() -> impl Iterator<Item = NamedPipeline> {
    NAMED
        .iter()
        .map(|&(name, source)| NamedPipeline { name, source })
}

/// The named pipeline `name`, parsed and checked against the registry (every pass exists
/// and every option is valid).
pub fn named(name: &str) -> Result<Pipeline, ConfigError> {
    let np =
        named_pipelines()
            .find(|p| p.name == name)
            .ok_or_else(|| ConfigError::UnknownPipeline {
                name: name.to_string(),
                valid: named_pipelines().map(|p| p.name).collect(),
            })?;
    let pipeline = np.pipeline()?;
    create_all(&pipeline).map_err(|e| ConfigError::BadNamedPipeline {
        name: name.to_string(),
        error: Box::new(e),
    })?;
    Ok(pipeline)
}

/// The named pipeline `name` with parameters: each `(option, value)` is set on every pass
/// of the pipeline that declares that option (the value written in the file is the
/// parameter's default), so `named_with("prepare-qat", &[("scheme", w4a8)])` prepares
/// with the `w4a8` scheme in every pass that reads a scheme. A parameter that no pass of
/// the pipeline declares is an error; the result is checked against the registry and
/// prints as ordinary pipeline text.
pub fn named_with(name: &str, params: &[(&str, OptValue)]) -> Result<Pipeline, ConfigError> {
    let mut pipeline = named(name)?;
    for (param, value) in params {
        let mut used = false;
        for spec in &mut pipeline.passes {
            let declares =
                lookup(&spec.name).is_some_and(|r| r.info.options.iter().any(|o| o.name == *param));
            if !declares {
                continue;
            }
            used = true;
            spec.options.retain(|(k, _)| k != param);
            spec.options.push((param.to_string(), value.clone()));
        }
        if !used {
            return Err(ConfigError::UnknownParameter {
                pipeline: name.to_string(),
                parameter: param.to_string(),
            });
        }
    }
    create_all(&pipeline)?;
    Ok(pipeline)
}

/// A named pipeline written as a pass would be, with its parameters in braces:
/// `train-step{scheme=lsq,optimizer=adam}` is [`named_with`] of `train-step` and those
/// parameters; a bare name is [`named`].
pub fn named_spec(text: &str) -> Result<Pipeline, ConfigError> {
    let parsed = crate::pipeline::parse(text)?;
    match parsed.passes.as_slice() {
        [spec] => {
            let params: Vec<(&str, OptValue)> = spec
                .options
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            named_with(&spec.name, &params)
        }
        _ => named(text.trim()),
    }
}

/// `text` with every `#` comment replaced by spaces (byte offsets are kept).
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match line.find('#') {
            Some(k) => {
                out.push_str(&line[..k]);
                out.extend(std::iter::repeat_n(' ', line.len() - k));
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_pipeline_resolves() {
        let all: Vec<NamedPipeline> = named_pipelines().collect();
        assert!(all.iter().any(|p| p.name == "cleanup"));
        for p in all {
            let pipeline = named(p.name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!pipeline.passes.is_empty(), "{} is empty", p.name);
            assert!(!p.description().is_empty(), "{} has no description", p.name);
        }
    }

    #[test]
    fn cleanup_is_canonicalize() {
        assert_eq!(named("cleanup").unwrap().to_string(), "canonicalize");
    }

    #[test]
    fn description_is_the_first_comment_paragraph() {
        let p = NamedPipeline {
            name: "x",
            source: "#\n# Does a thing,\n#  and another.\n#\n# Details.\na # why\n",
        };
        assert_eq!(p.description(), "Does a thing, and another.");
    }

    #[test]
    fn unknown_pipeline_lists_the_valid_ones() {
        let e = named("clean").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown pipeline 'clean' (valid pipelines: "),
            "{e}"
        );
        assert!(e.contains("cleanup"), "{e}");
    }

    #[test]
    fn parameters_set_an_option_of_every_pass_declaring_it() {
        let w4 = OptValue::Scalar("w4a8".into());
        let p = named_with("prepare-qat", &[("scheme", w4.clone())]).unwrap();
        let with_scheme: Vec<&str> = p
            .passes
            .iter()
            .filter(|s| s.options.contains(&("scheme".to_string(), w4.clone())))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(with_scheme, ["fold-batchnorm-qat", "insert-fake-quant"]);
        assert_eq!(
            crate::pipeline::parse(&p.to_string()).unwrap(),
            p,
            "prints and parses back"
        );
        assert_eq!(
            named_with("cleanup", &[("scheme", w4)])
                .unwrap_err()
                .to_string(),
            "pipeline 'cleanup' has no parameter 'scheme' (no pass in it has a 'scheme' option)"
        );
        let bad = OptValue::Scalar("w4a9".into());
        let e = named_with("prepare-qat", &[("scheme", bad)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown scheme preset 'w4a9'"), "{e}");
    }

    #[test]
    fn comments_are_blanked_keeping_positions() {
        let text = "a, # first\n# whole line\nb{k=v} # last";
        let stripped = strip_comments(text);
        assert_eq!(stripped.len(), text.len());
        assert_eq!(parse(&stripped).unwrap().to_string(), "a,b{k=v}");
        let err = parse(&strip_comments("a, # x\n  ,b")).unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
    }
}
