//! Quantization schemes as data: how weights and activations are fake-quantized (bits,
//! signedness, symmetric or affine, per channel or per tensor, observer, power-of-two
//! scales, learned step size), how batch-norm is trained (simulated folding or unfolded,
//! freezing its statistics after N steps), and per-layer overrides and skips. The QAT
//! passes (`fold-batchnorm-qat`, `insert-fake-quant`) take a scheme as their `scheme`
//! option: a preset name or the path of a TOML file.
//!
//! # Presets
//!
//! | preset        | weights                                               | activations                                   |
//! |---------------|-------------------------------------------------------|-----------------------------------------------|
//! | `tflite-int8` | int8 [-127, 127] symmetric per-channel, last value    | int8 [-128, 127] affine per-tensor, EMA 0.01  |
//! | `onnx-qdq`    | int8 [-127, 127] symmetric per-channel, last value    | uint8 [0, 255] affine per-tensor, EMA 0.01    |
//! | `tensorrt`    | int8 [-127, 127] symmetric per-channel, last value    | int8 [-127, 127] symmetric per-tensor, min-max|
//! | `w4a8`        | int4 [-7, 7] symmetric per-channel, last value        | int8 [-128, 127] affine per-tensor, EMA 0.01  |
//! | `pot`         | int8 [-127, 127] symmetric per-tensor, 2^k scale, last| int8 [-128, 127] symmetric per-tensor, 2^k scale, EMA 0.01 |
//! | `lsq`         | int8 [-127, 127] symmetric per-channel, LSQ           | int8 [-128, 127] affine per-tensor, LSQ+      |
//!
//! Every preset trains batch-norm with simulated folding and never freezes its statistics
//! unless a file says so. "Last value" is an observer with averaging 1 (TF's
//! `LastValueQuantizer`: the range of the current weights); EMA 0.01 is PyTorch's
//! moving-average observer; min-max keeps the running extremes (TensorRT's max calibrator).
//! `onnx-qdq` follows onnxruntime's QDQ format (uint8 activations, int8 symmetric weights;
//! onnxruntime defaults to per-tensor weights, per-channel is its recommended setting for
//! convolutions and what is chosen here). `tensorrt` uses zero point 0 everywhere and the
//! narrow range so that the scale is `amax / 127`, as TensorRT does.
//!
//! # Scheme files
//!
//! A TOML file starts from a preset (`preset`, default `tflite-int8`) and changes what it
//! names; keys are kebab-case and unknown keys are errors:
//!
//! ```toml
//! preset = "w4a8"                 # the starting point
//! name = "w4a8-first-last-8bit"   # shown in messages (default: the file stem)
//!
//! [weights]                       # any subset of the spec keys below
//! bits = 4                        # 2..=8
//! signed = true                   # int (true) or uint (false) grid
//! narrow-range = true             # drop the most negative (or zero) grid point: [-7, 7]
//! symmetric = true                # zero point 0 (signed) instead of affine
//! per-channel = true              # along the output-channel axis (weights only)
//! power-of-two = false            # round scales up to a power of two
//! observer = "last"               # "minmax", "ema" (with averaging) or "last"
//! learned = "none"                # "none", "lsq" (symmetric) or "lsq+" (learned zero point)
//!
//! [activations]
//! bits = 8
//! observer = "ema"
//! averaging = 0.01
//!
//! [batch-norm]
//! mode = "simulated"              # or "unfolded"
//! freeze-after = 2000             # training steps; absent = never
//!
//! [[override]]                    # exactly one selector: node, op, first or last
//! first = "conv2d"                # the first conv2d of the graph
//! weights = { bits = 8 }
//!
//! [[override]]
//! last = "linear"
//! weights = { bits = 8 }
//!
//! [[override]]
//! node = ["fc2"]                  # a name of the layer's op, of its batch-norm or relu,
//! skip = true                     # or of its weight; skip keeps the layer in float
//!
//! [[override]]
//! op = "depthwise_conv2d"         # an op mnemonic, or depthwise_conv2d, layer, input
//! skip = true
//! ```
//!
//! Overrides apply in file order (a later one wins for the keys it sets). Kinds for `op`,
//! `first` and `last`: any op mnemonic (`conv2d` includes depthwise ones),
//! `depthwise_conv2d` (a conv2d whose groups equal its input channels), `layer` (any
//! conv2d, linear or matmul) and `input` (the graph inputs that are fake-quantized).
//!
//! Invariant: a [`Scheme`] returned by this module is valid — every spec has bits in
//! 2..=8, a learned spec is consistent with its range, activations are per tensor.

pub mod lsq;
mod presets;
mod toml_file;

use std::fmt;
use std::path::Path;

use qir::{Graph, Op};

pub use presets::PRESETS;

/// How a range observer folds each batch into its running range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observer {
    /// The running extremes over every batch (`observe_min`/`observe_max` without
    /// averaging).
    MinMax,
    /// The exponential moving average `r + c * (batch - r)` of the batch extremes.
    Ema(f64),
    /// The extremes of the last batch only (averaging 1): for weights, the current range.
    LastValue,
}

impl Observer {
    /// The `averaging` attribute of the observer ops.
    pub fn averaging(self) -> Option<f64> {
        match self {
            Observer::MinMax => None,
            Observer::Ema(c) => Some(c),
            Observer::LastValue => Some(1.0),
        }
    }
}

/// Whether the quantization step is derived from observers or trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Scale and zero point follow from the observed range (`fake_quant`).
    No,
    /// Learned step size (LSQ, Esser et al. 2020): the scale is a trained parameter, the
    /// zero point fixed by the (symmetric) range.
    Lsq,
    /// LSQ+ (Bhalgat et al. 2020): scale and zero point are trained (affine ranges).
    LsqPlus,
}

impl Learned {
    /// The scheme-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Learned::No => "none",
            Learned::Lsq => "lsq",
            Learned::LsqPlus => "lsq+",
        }
    }
}

/// How one kind of value (weights or activations) is fake-quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantSpec {
    /// Bits of the integer grid, 2..=8.
    pub bits: u32,
    /// A signed grid `[-2^(b-1), 2^(b-1) - 1]` or an unsigned one `[0, 2^b - 1]`.
    pub signed: bool,
    /// Drop the lowest grid point (`[-127, 127]` for int8), so that a symmetric range is
    /// exactly symmetric.
    pub narrow_range: bool,
    /// Zero point fixed by the grid (0 for signed grids) and the scale from `max(|min|,
    /// max)`; otherwise affine (scale and zero point from the range).
    pub symmetric: bool,
    /// One scale per output channel (weights only; axis 0 of conv and linear weights).
    pub per_channel: bool,
    /// Scales rounded up to a power of two.
    pub power_of_two: bool,
    /// How the range is observed (unused for learned specs).
    pub observer: Observer,
    /// Observed or learned step size.
    pub learned: Learned,
}

impl QuantSpec {
    /// `bits` clamped to what an i64 grid can hold (a valid spec has 2..=8).
    fn grid_bits(&self) -> u32 {
        self.bits.clamp(1, 32)
    }

    /// The smallest grid value.
    pub fn qmin(&self) -> i64 {
        let low = if self.signed {
            -(1i64 << (self.grid_bits() - 1))
        } else {
            0
        };
        low + i64::from(self.narrow_range)
    }

    /// The largest grid value.
    pub fn qmax(&self) -> i64 {
        if self.signed {
            (1i64 << (self.grid_bits() - 1)) - 1
        } else {
            (1i64 << self.grid_bits()) - 1
        }
    }

    /// Checks the spec; `what` names it in messages (`weights`, `activations`).
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if !(2..=8).contains(&self.bits) {
            return Err(format!("{what}.bits must be in 2..=8, found {}", self.bits));
        }
        if let Observer::Ema(c) = self.observer
            && !(c > 0.0 && c <= 1.0)
        {
            return Err(format!(
                "{what}.averaging must be in (0, 1], found {}",
                qir::float::fmt_f64(c)
            ));
        }
        match self.learned {
            Learned::Lsq if !self.symmetric => Err(format!(
                "{what}: learned = \"lsq\" needs symmetric = true (an affine range needs a learned zero point: use \"lsq+\")"
            )),
            Learned::LsqPlus if self.symmetric => Err(format!(
                "{what}: learned = \"lsq+\" learns the zero point of an affine range; set symmetric = false or use \"lsq\""
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for QuantSpec {
    /// `int8 [-127, 127] symmetric per-channel, last-value observer`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}int{} [{}, {}] {} {}",
            if self.signed { "" } else { "u" },
            self.bits,
            self.qmin(),
            self.qmax(),
            if self.symmetric {
                "symmetric"
            } else {
                "affine"
            },
            if self.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        )?;
        if self.power_of_two {
            f.write_str(", power-of-two scales")?;
        }
        match (self.learned, self.observer) {
            (Learned::No, Observer::MinMax) => f.write_str(", min-max observer"),
            (Learned::No, Observer::LastValue) => f.write_str(", last-value observer"),
            (Learned::No, Observer::Ema(c)) => {
                write!(f, ", EMA observer ({})", qir::float::fmt_f64(c))
            }
            (Learned::Lsq, _) => f.write_str(", learned scale (LSQ)"),
            (Learned::LsqPlus, _) => f.write_str(", learned scale and zero point (LSQ+)"),
        }
    }
}

/// Changes to a [`QuantSpec`] made by an override: the fields it sets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpecPatch {
    /// A new [`QuantSpec::bits`].
    pub bits: Option<u32>,
    /// A new [`QuantSpec::signed`].
    pub signed: Option<bool>,
    /// A new [`QuantSpec::narrow_range`].
    pub narrow_range: Option<bool>,
    /// A new [`QuantSpec::symmetric`].
    pub symmetric: Option<bool>,
    /// A new [`QuantSpec::per_channel`].
    pub per_channel: Option<bool>,
    /// A new [`QuantSpec::power_of_two`].
    pub power_of_two: Option<bool>,
    /// A new [`QuantSpec::observer`].
    pub observer: Option<Observer>,
    /// A new [`QuantSpec::learned`].
    pub learned: Option<Learned>,
}

impl SpecPatch {
    /// `base` with the fields this patch sets.
    pub fn apply(&self, base: &QuantSpec) -> QuantSpec {
        QuantSpec {
            bits: self.bits.unwrap_or(base.bits),
            signed: self.signed.unwrap_or(base.signed),
            narrow_range: self.narrow_range.unwrap_or(base.narrow_range),
            symmetric: self.symmetric.unwrap_or(base.symmetric),
            per_channel: self.per_channel.unwrap_or(base.per_channel),
            power_of_two: self.power_of_two.unwrap_or(base.power_of_two),
            observer: self.observer.unwrap_or(base.observer),
            learned: self.learned.unwrap_or(base.learned),
        }
    }

    /// True if the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == SpecPatch::default()
    }
}

/// How batch-norm is trained under QAT (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnFolding {
    /// Krishnamoorthi §3.2.2 / PyTorch's ConvBn QAT modules: the weight is scaled by
    /// `gamma / sqrt(running_var + eps)` before its fake-quant, the convolution's result is
    /// divided by the same factor, and an ordinary batch-norm follows (batch statistics in
    /// training). Done by `fold-batchnorm-qat`.
    Simulated,
    /// Train conv → batch-norm unfolded (no fake-quant between them, the weights
    /// fake-quantized as they are); fold at convert.
    Unfolded,
}

impl BnFolding {
    /// The scheme-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            BnFolding::Simulated => "simulated",
            BnFolding::Unfolded => "unfolded",
        }
    }
}

/// A kind of layer an override selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Ops with this mnemonic (`conv2d` includes depthwise convolutions).
    Op(Op),
    /// A `conv2d` whose groups equal its input channels (and are more than 1).
    DepthwiseConv2d,
    /// Any `conv2d`, `linear` or `matmul`.
    Layer,
    /// A graph input that is fake-quantized.
    Input,
}

impl LayerKind {
    /// Every spelling accepted besides op mnemonics.
    pub const SPECIAL: [&'static str; 3] = ["depthwise_conv2d", "layer", "input"];

    /// Parses a scheme-file spelling.
    pub fn parse(s: &str) -> Result<LayerKind, String> {
        match s {
            "depthwise_conv2d" => Ok(LayerKind::DepthwiseConv2d),
            "layer" => Ok(LayerKind::Layer),
            "input" => Ok(LayerKind::Input),
            _ => match Op::from_mnemonic(s) {
                Some(op) => Ok(LayerKind::Op(op)),
                None => {
                    let hint = crate::suggest(
                        s,
                        Op::ALL
                            .iter()
                            .map(|o| o.mnemonic())
                            .chain(LayerKind::SPECIAL),
                    )
                    .map(|h| format!("; did you mean '{h}'?"))
                    .unwrap_or_default();
                    Err(format!(
                        "unknown layer kind '{s}' (an op mnemonic such as conv2d or linear, or one of {}){hint}",
                        LayerKind::SPECIAL.join(", ")
                    ))
                }
            },
        }
    }

    /// The scheme-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Op(op) => op.mnemonic(),
            LayerKind::DepthwiseConv2d => "depthwise_conv2d",
            LayerKind::Layer => "layer",
            LayerKind::Input => "input",
        }
    }
}

/// Which layers an override applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The layers with one of these names: the name of the layer's op, of an op fused into
    /// it (its batch-norm, its relu), of its output, or of its weight. A name that matches
    /// nothing in the graph is an error.
    Nodes(Vec<String>),
    /// Every layer of this kind.
    Kind(LayerKind),
    /// The first layer of this kind in topological order.
    First(LayerKind),
    /// The last layer of this kind in topological order.
    Last(LayerKind),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Nodes(ns) => write!(f, "node = [{}]", ns.join(", ")),
            Selector::Kind(k) => write!(f, "op = {}", k.name()),
            Selector::First(k) => write!(f, "first = {}", k.name()),
            Selector::Last(k) => write!(f, "last = {}", k.name()),
        }
    }
}

/// A per-layer change of the scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The layers it applies to.
    pub selector: Selector,
    /// Keep the selected layers in float: no fake-quant on their weights or outputs.
    pub skip: bool,
    /// Changes to the weights spec of the selected layers.
    pub weights: SpecPatch,
    /// Changes to the activations spec of the selected layers' outputs.
    pub activations: SpecPatch,
}

/// A quantization scheme (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Scheme {
    /// The preset name or the file's `name` (default: the file stem).
    pub name: String,
    /// The weights of conv2d, linear and matmul.
    pub weights: QuantSpec,
    /// Graph inputs and layer outputs.
    pub activations: QuantSpec,
    /// How batch-norm trains.
    pub batch_norm: BnFolding,
    /// Freeze batch-norm statistics after this many training steps (the trainer rebuilds
    /// the step with `grad{bn=frozen}`); `None`: never.
    pub freeze_bn_after: Option<u64>,
    /// Per-layer overrides, applied in order.
    pub overrides: Vec<Override>,
}

/// A scheme that could not be loaded: an unknown preset, a file that cannot be read or
/// does not parse, a bad value. Displays as `FILE:LINE:COL: message` when the place is
/// known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location_prefix(file, *line_col))]
pub struct SchemeError {
    /// What is wrong.
    pub message: String,
    /// The scheme file, if the scheme came from one.
    pub file: Option<String>,
    /// 1-based line and column in the file.
    pub line_col: Option<(usize, usize)>,
}

fn location_prefix(file: &Option<String>, lc: Option<(usize, usize)>) -> String {
    match (file, lc) {
        (Some(f), Some((l, c))) => format!("{f}:{l}:{c}: "),
        (Some(f), None) => format!("{f}: "),
        (None, Some((l, c))) => format!("line {l}, column {c}: "),
        (None, None) => String::new(),
    }
}

impl SchemeError {
    /// An error without a place.
    pub fn new(message: impl Into<String>) -> SchemeError {
        SchemeError {
            message: message.into(),
            file: None,
            line_col: None,
        }
    }
}

impl Scheme {
    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<Scheme, SchemeError> {
        presets::get(name).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            let hint = crate::suggest(name, names.iter().copied())
                .or_else(|| {
                    names
                        .iter()
                        .copied()
                        .find(|n| !name.is_empty() && n.starts_with(name))
                })
                .map(|h| format!("; did you mean '{h}'?"))
                .unwrap_or_default();
            SchemeError::new(format!(
                "unknown scheme preset '{name}' (valid presets: {}){hint}",
                names.join(", ")
            ))
        })
    }

    /// A scheme from TOML text; `file` names the source in messages (its stem is the
    /// default scheme name).
    pub fn from_toml(text: &str, file: &str) -> Result<Scheme, SchemeError> {
        toml_file::parse(text, file)
    }

    /// The scheme an option value names: a preset, or (when it ends in `.toml` or contains
    /// a path separator) a file read from disk.
    pub fn load(spec: &str) -> Result<Scheme, SchemeError> {
        if !looks_like_path(spec) {
            return Scheme::preset(spec).map_err(|mut e| {
                e.message
                    .push_str(" (or give the path of a .toml scheme file)");
                e
            });
        }
        let text = std::fs::read_to_string(Path::new(spec)).map_err(|e| SchemeError {
            message: format!("cannot read the scheme file: {e}"),
            file: Some(spec.to_string()),
            line_col: None,
        })?;
        Scheme::from_toml(&text, spec)
    }

    /// Checks every spec (base and overridden) and the overrides' shape.
    pub fn validate(&self) -> Result<(), String> {
        self.weights.validate("weights")?;
        self.activations.validate("activations")?;
        if self.activations.per_channel {
            return Err(
                "activations.per-channel is not supported: activations are quantized per tensor"
                    .into(),
            );
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let at = format!("override {}", i + 1);
            o.weights
                .apply(&self.weights)
                .validate(&format!("{at}: weights"))?;
            let a = o.activations.apply(&self.activations);
            a.validate(&format!("{at}: activations"))?;
            if a.per_channel {
                return Err(format!(
                    "{at}: activations.per-channel is not supported: activations are quantized per tensor"
                ));
            }
            if let Selector::Nodes(ns) = &o.selector
                && ns.is_empty()
            {
                return Err(format!("{at}: 'node' lists no names"));
            }
        }
        Ok(())
    }

    /// A multi-line description: the specs, batch-norm handling and overrides.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "scheme {}\n  weights:     {}\n  activations: {}\n  batch-norm:  {}",
            self.name,
            self.weights,
            self.activations,
            self.batch_norm.name()
        );
        if let Some(n) = self.freeze_bn_after {
            s.push_str(&format!(", statistics frozen after {n} steps"));
        }
        for o in &self.overrides {
            s.push_str(&format!("\n  override {}:", o.selector));
            if o.skip {
                s.push_str(" skip");
            }
            if !o.weights.is_empty() {
                s.push_str(&format!(" weights {}", o.weights.apply(&self.weights)));
            }
            if !o.activations.is_empty() {
                s.push_str(&format!(
                    " activations {}",
                    o.activations.apply(&self.activations)
                ));
            }
        }
        s
    }
}

fn looks_like_path(spec: &str) -> bool {
    spec.ends_with(".toml") || spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR)
}

/// The graph comment that carries the batch-norm freeze step to the trainer.
const FREEZE_NOTE: &str = " qat: freeze-bn-after = ";

/// The graph-level note `// qat: freeze-bn-after = N` for `steps`.
pub fn freeze_bn_note(steps: u64) -> String {
    format!("{FREEZE_NOTE}{steps}")
}

/// The step after which batch-norm statistics freeze, as noted in the graph's leading
/// comments by `fold-batchnorm-qat` (`// qat: freeze-bn-after = N`); `None` when the
/// prepared graph has no such note.
pub fn freeze_bn_after(g: &Graph) -> Option<u64> {
    g.comments
        .iter()
        .find_map(|c| c.strip_prefix(FREEZE_NOTE))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids() {
        let t = Scheme::preset("tflite-int8").unwrap();
        assert_eq!((t.weights.qmin(), t.weights.qmax()), (-127, 127));
        assert_eq!((t.activations.qmin(), t.activations.qmax()), (-128, 127));
        let o = Scheme::preset("onnx-qdq").unwrap();
        assert_eq!((o.activations.qmin(), o.activations.qmax()), (0, 255));
        let w4 = Scheme::preset("w4a8").unwrap();
        assert_eq!((w4.weights.qmin(), w4.weights.qmax()), (-7, 7));
    }

    #[test]
    fn every_preset_is_valid_and_described() {
        for (name, _) in PRESETS {
            let s = Scheme::preset(name).unwrap();
            assert_eq!(s.name, *name);
            s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(s.describe().starts_with(&format!("scheme {name}\n")));
        }
    }

    #[test]
    fn unknown_preset_lists_the_valid_ones() {
        let e = Scheme::load("tflite").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown scheme preset 'tflite' (valid presets: tflite-int8, onnx-qdq, tensorrt, w4a8, pot, lsq); did you mean 'tflite-int8'? (or give the path of a .toml scheme file)"
        );
        let e = Scheme::preset("w4a9").unwrap_err().to_string();
        assert!(e.ends_with("did you mean 'w4a8'?"), "{e}");
    }

    #[test]
    fn freeze_note_round_trips() {
        let mut g = Graph::new("m");
        assert_eq!(freeze_bn_after(&g), None);
        g.comments.push(freeze_bn_note(1234));
        assert_eq!(freeze_bn_after(&g), Some(1234));
    }

    #[test]
    fn spec_validation() {
        let mut s = Scheme::preset("tflite-int8").unwrap().weights;
        s.bits = 9;
        assert_eq!(
            s.validate("weights").unwrap_err(),
            "weights.bits must be in 2..=8, found 9"
        );
        s.bits = 4;
        s.learned = Learned::LsqPlus;
        assert!(s.validate("weights").unwrap_err().contains("lsq+"));
        assert_eq!(
            s.to_string(),
            "int4 [-7, 7] symmetric per-channel, learned scale and zero point (LSQ+)"
        );
    }
}
