//! The preset schemes for the common deploy targets (the table in the `scheme` module
//! docs is the specification; a test checks every preset validates).

use super::{BnFolding, Learned, Observer, QuantSpec, Scheme};

/// PyTorch's moving-average observer constant.
const EMA: Observer = Observer::Ema(0.01);

/// int8 `[-127, 127]` symmetric per-channel weights observed by their last value: the
/// weights of every preset but `w4a8` and `pot`.
const W_INT8_PER_CHANNEL: QuantSpec = QuantSpec {
    bits: 8,
    signed: true,
    narrow_range: true,
    symmetric: true,
    per_channel: true,
    power_of_two: false,
    observer: Observer::LastValue,
    learned: Learned::No,
};

/// int8 `[-128, 127]` affine per-tensor activations with an EMA observer.
const A_INT8_AFFINE: QuantSpec = QuantSpec {
    bits: 8,
    signed: true,
    narrow_range: false,
    symmetric: false,
    per_channel: false,
    power_of_two: false,
    observer: EMA,
    learned: Learned::No,
};

/// Builds a preset's (weights, activations) specs.
pub type PresetSpecs = fn() -> (QuantSpec, QuantSpec);

/// Every preset: its name and constructor.
pub const PRESETS: &[(&str, PresetSpecs)] = &[
    ("tflite-int8", tflite_int8),
    ("onnx-qdq", onnx_qdq),
    ("tensorrt", tensorrt),
    ("w4a8", w4a8),
    ("pot", pot),
    ("lsq", lsq),
];

/// TFLite's int8 scheme (the TF-MOT default): per-channel symmetric narrow-range weights,
/// asymmetric per-tensor activations.
fn tflite_int8() -> (QuantSpec, QuantSpec) {
    (W_INT8_PER_CHANNEL, A_INT8_AFFINE)
}

/// onnxruntime's QDQ format: uint8 asymmetric activations, int8 symmetric weights.
fn onnx_qdq() -> (QuantSpec, QuantSpec) {
    (
        W_INT8_PER_CHANNEL,
        QuantSpec {
            signed: false,
            ..A_INT8_AFFINE
        },
    )
}

/// TensorRT: symmetric int8 everywhere with zero point 0 and scale `amax / 127`; the
/// activation range is the running maximum (TensorRT's max calibrator).
fn tensorrt() -> (QuantSpec, QuantSpec) {
    (
        W_INT8_PER_CHANNEL,
        QuantSpec {
            narrow_range: true,
            symmetric: true,
            observer: Observer::MinMax,
            ..A_INT8_AFFINE
        },
    )
}

/// 4-bit weights (`[-7, 7]`, per channel, symmetric) and 8-bit affine activations.
fn w4a8() -> (QuantSpec, QuantSpec) {
    (
        QuantSpec {
            bits: 4,
            ..W_INT8_PER_CHANNEL
        },
        A_INT8_AFFINE,
    )
}

/// Power-of-two scales for shift-only requantization: per-tensor symmetric int8 weights
/// and symmetric int8 activations, every scale rounded up to a power of two.
fn pot() -> (QuantSpec, QuantSpec) {
    (
        QuantSpec {
            per_channel: false,
            power_of_two: true,
            ..W_INT8_PER_CHANNEL
        },
        QuantSpec {
            symmetric: true,
            power_of_two: true,
            ..A_INT8_AFFINE
        },
    )
}

/// Learned step size: LSQ on int8 per-channel symmetric weights, LSQ+ (learned zero
/// point) on int8 affine activations.
fn lsq() -> (QuantSpec, QuantSpec) {
    (
        QuantSpec {
            learned: Learned::Lsq,
            ..W_INT8_PER_CHANNEL
        },
        QuantSpec {
            learned: Learned::LsqPlus,
            ..A_INT8_AFFINE
        },
    )
}

/// The preset `name`.
pub fn get(name: &str) -> Option<Scheme> {
    let (_, make) = PRESETS.iter().find(|(n, _)| *n == name)?;
    let (weights, activations) = make();
    Some(Scheme {
        name: name.to_string(),
        weights,
        activations,
        batch_norm: BnFolding::Simulated,
        freeze_bn_after: None,
        overrides: Vec::new(),
    })
}
