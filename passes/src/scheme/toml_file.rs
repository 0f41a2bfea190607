//! Scheme files: TOML in the format of the `scheme` module docs, read with serde
//! (unknown keys are errors) and checked value by value, each error placed at its key's
//! line and column.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{
    BnFolding, LayerKind, Learned, Observer, Override, QuantSpec, Scheme, SchemeError, Selector,
    SpecPatch, presets,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    preset: Option<Spanned<String>>,
    name: Option<String>,
    weights: Option<Spanned<FileSpec>>,
    activations: Option<Spanned<FileSpec>>,
    batch_norm: Option<FileBatchNorm>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<FileOverride>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSpec {
    bits: Option<Spanned<i64>>,
    signed: Option<bool>,
    narrow_range: Option<bool>,
    symmetric: Option<bool>,
    per_channel: Option<bool>,
    power_of_two: Option<bool>,
    observer: Option<Spanned<String>>,
    averaging: Option<Spanned<f64>>,
    learned: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileBatchNorm {
    mode: Option<Spanned<String>>,
    freeze_after: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Names {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileOverride {
    node: Option<Names>,
    op: Option<Spanned<String>>,
    first: Option<Spanned<String>>,
    last: Option<Spanned<String>>,
    #[serde(default)]
    skip: bool,
    weights: Option<Spanned<FileSpec>>,
    activations: Option<Spanned<FileSpec>>,
}

/// Turns byte offsets into errors with a line and column.
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> SchemeError {
        let line_col = span.map(|s| {
            let start = s.start.min(self.text.len());
            let before = self.text.get(..start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let col = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
            (line, col)
        });
        SchemeError {
            message: message.into(),
            file: Some(self.file.to_string()),
            line_col,
        }
    }
}

/// Parses a scheme file (see the module docs of `scheme`).
pub fn parse(text: &str, file: &str) -> Result<Scheme, SchemeError> {
    let src = Source { text, file };
    let f: File = toml::from_str(text).map_err(|e| src.error(e.span(), e.message().trim()))?;
    let mut scheme = match &f.preset {
        Some(p) => presets::get(p.get_ref()).ok_or_else(|| {
            let e = super::Scheme::preset(p.get_ref())
                .err()
                .map(|e| e.message)
                .unwrap_or_default();
            src.error(Some(p.span()), e)
        })?,
        None => presets::get("tflite-int8")
            .ok_or_else(|| SchemeError::new("the tflite-int8 preset is missing"))?,
    };
    scheme.name = match f.name {
        Some(n) => n,
        None => std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.to_string()),
    };
    if let Some(w) = &f.weights {
        let patch = spec_patch(&src, "weights", w.get_ref())?;
        scheme.weights = patch.apply(&scheme.weights);
        scheme
            .weights
            .validate("weights")
            .map_err(|m| src.error(Some(w.span()), m))?;
    }
    if let Some(a) = &f.activations {
        let patch = spec_patch(&src, "activations", a.get_ref())?;
        scheme.activations = patch.apply(&scheme.activations);
        check_activations(&scheme.activations, "activations")
            .map_err(|m| src.error(Some(a.span()), m))?;
    }
    if let Some(bn) = &f.batch_norm {
        if let Some(m) = &bn.mode {
            scheme.batch_norm = match m.get_ref().as_str() {
                "simulated" => BnFolding::Simulated,
                "unfolded" => BnFolding::Unfolded,
                other => {
                    return Err(src.error(
                        Some(m.span()),
                        format!(
                            "batch-norm.mode must be \"simulated\" or \"unfolded\", found \"{other}\""
                        ),
                    ));
                }
            };
        }
        if let Some(n) = &bn.freeze_after {
            let steps = u64::try_from(*n.get_ref()).map_err(|_| {
                src.error(
                    Some(n.span()),
                    format!(
                        "batch-norm.freeze-after must be a step count >= 0, found {}",
                        n.get_ref()
                    ),
                )
            })?;
            scheme.freeze_bn_after = Some(steps);
        }
    }
    for (i, o) in f.overrides.iter().enumerate() {
        let ov = override_of(&src, i + 1, o)?;
        scheme.overrides.push(ov);
    }
    scheme.validate().map_err(|m| src.error(None, m))?;
    Ok(scheme)
}

fn check_activations(spec: &QuantSpec, what: &str) -> Result<(), String> {
    spec.validate(what)?;
    if spec.per_channel {
        return Err(format!(
            "{what}.per-channel is not supported: activations are quantized per tensor"
        ));
    }
    Ok(())
}

fn spec_patch(src: &Source, what: &str, f: &FileSpec) -> Result<SpecPatch, SchemeError> {
    let mut p = SpecPatch {
        signed: f.signed,
        narrow_range: f.narrow_range,
        symmetric: f.symmetric,
        per_channel: f.per_channel,
        power_of_two: f.power_of_two,
        ..SpecPatch::default()
    };
    if let Some(b) = &f.bits {
        let bits = *b.get_ref();
        if !(2..=8).contains(&bits) {
            return Err(src.error(
                Some(b.span()),
                format!("{what}.bits must be in 2..=8, found {bits}"),
            ));
        }
        p.bits = u32::try_from(bits).ok();
    }
    let averaging = match &f.averaging {
        Some(a) => {
            let c = *a.get_ref();
            if !(c > 0.0 && c <= 1.0) {
                return Err(src.error(
                    Some(a.span()),
                    format!("{what}.averaging must be in (0, 1], found {c}"),
                ));
            }
            Some(c)
        }
        None => None,
    };
    p.observer = match (&f.observer, averaging) {
        (None, None) => None,
        (None, Some(c)) => Some(Observer::Ema(c)),
        (Some(o), c) => Some(match (o.get_ref().as_str(), c) {
            ("minmax", None) => Observer::MinMax,
            ("last", None) => Observer::LastValue,
            ("ema", c) => Observer::Ema(c.unwrap_or(0.01)),
            ("minmax" | "last", Some(_)) => {
                return Err(src.error(
                    Some(o.span()),
                    format!("{what}.averaging only applies to observer = \"ema\""),
                ));
            }
            (other, _) => {
                return Err(src.error(
                    Some(o.span()),
                    format!(
                        "{what}.observer must be \"minmax\", \"ema\" or \"last\", found \"{other}\""
                    ),
                ));
            }
        }),
    };
    if let Some(l) = &f.learned {
        p.learned = Some(match l.get_ref().as_str() {
            "none" => Learned::No,
            "lsq" => Learned::Lsq,
            "lsq+" => Learned::LsqPlus,
            other => {
                return Err(src.error(
                    Some(l.span()),
                    format!(
                        "{what}.learned must be \"none\", \"lsq\" or \"lsq+\", found \"{other}\""
                    ),
                ));
            }
        });
    }
    Ok(p)
}

fn kind(src: &Source, key: &str, v: &Spanned<String>) -> Result<LayerKind, SchemeError> {
    LayerKind::parse(v.get_ref()).map_err(|m| src.error(Some(v.span()), format!("{key}: {m}")))
}

fn override_of(
    src: &Source,
    index: usize,
    o: &Spanned<FileOverride>,
) -> Result<Override, SchemeError> {
    let at = format!("override {index}");
    let f = o.get_ref();
    let given = [
        f.node.is_some(),
        f.op.is_some(),
        f.first.is_some(),
        f.last.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(src.error(
            Some(o.span()),
            format!("{at} needs exactly one selector of node, op, first and last, found {given}"),
        ));
    }
    let selector = if let Some(n) = &f.node {
        let names = match n {
            Names::One(s) => vec![s.clone()],
            Names::Many(v) => v.clone(),
        };
        let names: Vec<String> = names
            .into_iter()
            .map(|s| s.strip_prefix('%').map(str::to_string).unwrap_or(s))
            .collect();
        if names.is_empty() {
            return Err(src.error(Some(o.span()), format!("{at}: 'node' lists no names")));
        }
        Selector::Nodes(names)
    } else if let Some(k) = &f.op {
        Selector::Kind(kind(src, "op", k)?)
    } else if let Some(k) = &f.first {
        Selector::First(kind(src, "first", k)?)
    } else if let Some(k) = &f.last {
        Selector::Last(kind(src, "last", k)?)
    } else {
        return Err(src.error(Some(o.span()), format!("{at} has no selector")));
    };
    let weights = match &f.weights {
        Some(w) => spec_patch(src, &format!("{at}: weights"), w.get_ref())?,
        None => SpecPatch::default(),
    };
    let activations = match &f.activations {
        Some(a) => spec_patch(src, &format!("{at}: activations"), a.get_ref())?,
        None => SpecPatch::default(),
    };
    if !f.skip && weights.is_empty() && activations.is_empty() {
        return Err(src.error(
            Some(o.span()),
            format!("{at} changes nothing: give skip = true, weights or activations"),
        ));
    }
    Ok(Override {
        selector,
        skip: f.skip,
        weights,
        activations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "s.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_file_changes_its_preset() {
        let s = parse(
            "preset = \"onnx-qdq\"\n[weights]\nbits = 6\nper-channel = false\n[batch-norm]\nmode = \"unfolded\"\nfreeze-after = 300\n",
            "dir/my-scheme.toml",
        )
        .unwrap();
        assert_eq!(s.name, "my-scheme");
        assert_eq!((s.weights.bits, s.weights.per_channel), (6, false));
        assert!(s.weights.symmetric && s.weights.narrow_range);
        assert_eq!((s.activations.qmin(), s.activations.qmax()), (0, 255));
        assert_eq!(s.batch_norm, BnFolding::Unfolded);
        assert_eq!(s.freeze_bn_after, Some(300));
    }

    #[test]
    fn errors_name_the_place_and_the_problem() {
        assert_eq!(
            err("preset = \"tflite\"\n"),
            "s.toml:1:10: unknown scheme preset 'tflite' (valid presets: tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq); did you mean 'tflite-int8'?"
        );
        assert_eq!(
            err("[weights]\nbits = 12\n"),
            "s.toml:2:8: weights.bits must be in 2..=8, found 12"
        );
        let e = err("[weights]\nbitz = 4\n");
        assert!(
            e.starts_with("s.toml:2:1: unknown field `bitz`, expected one of `bits`"),
            "{e}"
        );
        let e = err("scheme = 1\n");
        assert!(e.starts_with("s.toml:1:1: unknown field `scheme`"), "{e}");
        assert_eq!(
            err("[activations]\nobserver = \"avg\"\n"),
            "s.toml:2:12: activations.observer must be \"minmax\", \"ema\" or \"last\", found \"avg\""
        );
        assert_eq!(
            err("[activations]\nper-channel = true\n"),
            "s.toml:1:1: activations.per-channel is not supported: activations are quantized per tensor"
        );
        assert_eq!(
            err("[[override]]\nop = \"conv2\"\nskip = true\n"),
            "s.toml:2:6: op: unknown layer kind 'conv2' (an op mnemonic such as conv2d or linear, or one of depthwise_conv2d, layer, input); did you mean 'conv2d'?"
        );
        assert_eq!(
            err("[[override]]\nnode = \"fc1\"\nop = \"linear\"\nskip = true\n"),
            "s.toml:1:1: override 1 needs exactly one selector of node, op, first and last, found 2"
        );
        assert_eq!(
            err("[[override]]\nnode = \"fc1\"\n"),
            "s.toml:1:1: override 1 changes nothing: give skip = true, weights or activations"
        );
        assert_eq!(
            err("[weights]\nlearned = \"lsq+\"\n"),
            "s.toml:1:1: weights: learned = \"lsq+\" learns the zero point of an affine range; set symmetric = false or use \"lsq\""
        );
        assert_eq!(
            err("[batch-norm]\nfreeze-after = -1\n"),
            "s.toml:2:16: batch-norm.freeze-after must be a step count >= 0, found -1"
        );
        assert!(err("[weights\n").starts_with("s.toml:1:"));
    }

    #[test]
    fn overrides() {
        let s = parse(
            "preset = \"w4a8\"\n[[override]]\nfirst = \"conv2d\"\nweights = { bits = 8 }\n[[override]]\nnode = [\"%fc2\", \"fc3\"]\nskip = true\n[[override]]\nop = \"depthwise_conv2d\"\nactivations = { observer = \"minmax\" }\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(s.overrides.len(), 3);
        assert_eq!(
            s.overrides[0].selector,
            Selector::First(LayerKind::Op(qir::Op::Conv2d))
        );
        assert_eq!(s.overrides[0].weights.apply(&s.weights).bits, 8);
        assert_eq!(
            s.overrides[1].selector,
            Selector::Nodes(vec!["fc2".into(), "fc3".into()])
        );
        assert!(s.overrides[1].skip);
        assert_eq!(s.overrides[2].activations.observer, Some(Observer::MinMax));
    }
}
