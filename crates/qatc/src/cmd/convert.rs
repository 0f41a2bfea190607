//! `qatc convert MODEL.qir --weights CKPT.safetensors [--scheme S] -o MODEL.int8.qir`:
//! converts a trained QAT model to an integer-only model — the `convert` named pipeline
//! (freeze-observers, bind-state, the lowering passes from strip-training to
//! lower-rescale-ops, simplify, canonicalize) — and writes the integer
//! model and, next to it, its integer tensors (safetensors: i8 weights, i4 weights packed
//! two per byte, i32 biases) as
//! `MODEL.int8.safetensors` (or `--weights-out`). `eval`, `run` and `bench` take the pair
//! (`--weights MODEL.int8.safetensors`).
//!
//! A float model (no fake-quant) is first prepared with `--scheme` (the `prepare-qat`
//! pipeline, as `qatc train --scheme` does, so the checkpoint's names match); a model
//! that already holds its fake-quants is converted as it is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use passes::{OptValue, PassManager, named_with};
use qir::{Data, Init, NodeKind, Op, Storage, Tensor};
use runtime::io::weights::{pack_i4, write_safetensors};

use crate::io::{CmdResult, Failure, check_output, fail, read_input, write_output, write_stderr};

/// Convert a trained QAT model to an integer-only model.
#[derive(clap::Args)]
pub struct Args {
    /// The model: the float model given to `qatc train --scheme`, or a prepared one.
    #[arg(value_name = "MODEL.qir")]
    file: PathBuf,
    /// The trained parameters and state (a checkpoint of `qatc train`).
    #[arg(long, value_name = "CKPT.safetensors")]
    weights: PathBuf,
    /// The scheme a float model was trained with: a preset (tflite-int8, onnx-qdq,
    /// tensorrt, w4a8, pot, lsq) or a .toml scheme file.
    #[arg(long, value_name = "NAME|FILE")]
    scheme: Option<String>,
    /// Rounding of every rescaling op: half_even (fake_quant's) or half_away_from_zero.
    #[arg(long, default_value = "half_even")]
    rounding: String,
    /// The integer model to write.
    #[arg(short, long, value_name = "MODEL.int8.qir")]
    output: PathBuf,
    /// Where the integer tensors go [default: the output with extension .safetensors].
    #[arg(long, value_name = "OUT.safetensors")]
    weights_out: Option<PathBuf>,
}

/// Constants larger than this many elements go to the tensor file.
const INLINE_LIMIT: usize = 64;

fn run_pipeline(g: &mut qir::Graph, name: &str, params: &[(&str, OptValue)]) -> CmdResult {
    let pipeline = named_with(name, params).or_else(|e| fail(e.to_string()))?;
    let pm = PassManager::from_pipeline(&pipeline).or_else(|e| fail(e.to_string()))?;
    let result = pm.run(g);
    super::print_remarks();
    result.map(|_| ()).map_err(|e| {
        write_stderr(&format!("error: {name}: {e}\n"));
        Failure::Reported
    })
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    // the outputs, before any work: none may be an input, nor the two the same file
    let weights_out = args
        .weights_out
        .clone()
        .unwrap_or_else(|| args.output.with_extension("safetensors"));
    let mut inputs = vec![
        ("the model", args.file.as_path()),
        ("the --weights file", args.weights.as_path()),
    ];
    if let Some(s) = &args.scheme {
        inputs.push(("the --scheme file", std::path::Path::new(s)));
    }
    check_output("-o", &args.output, &inputs)?;
    inputs.push(("the -o file", args.output.as_path()));
    check_output("--weights-out", &weights_out, &inputs)?;
    let input = read_input(&args.file)?;
    let mut g = super::parse_and_verify(&input)?;
    let prepared = g
        .node_ids()
        .iter()
        .any(|&id| matches!(g.node(id).op(), Some(Op::FakeQuant | Op::FakeQuantLsq)));
    match (&args.scheme, prepared) {
        (Some(s), false) => run_pipeline(
            &mut g,
            "prepare-qat",
            &[("scheme", OptValue::Scalar(s.clone()))],
        )?,
        (None, false) => {
            return fail(
                "the model has no fake-quant: give the --scheme it was trained with (or the prepared model)",
            );
        }
        (Some(_), true) => {
            return fail("the model is already prepared for QAT: --scheme would prepare it twice");
        }
        (None, true) => {}
    }
    let weights = args.weights.to_string_lossy().into_owned();
    run_pipeline(
        &mut g,
        "convert",
        &[
            ("weights", OptValue::Scalar(weights)),
            ("rounding", OptValue::Scalar(args.rounding.clone())),
        ],
    )?;
    // large constants move to the tensor file, in their storage type
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut meta = BTreeMap::from([
        ("format".to_string(), "qatc-integer".to_string()),
        ("graph".to_string(), g.name.clone()),
    ]);
    for id in g.node_ids() {
        let node = g.node(id);
        let NodeKind::Const(Init::Dense(v)) = &node.kind else {
            continue;
        };
        if v.len() <= INLINE_LIMIT {
            continue;
        }
        let Some(shape) = node.ty.shape.as_fixed() else {
            continue;
        };
        let data = Data::from_f64(&node.ty.elem, v);
        let shape = shape.into_iter().map(|d| d as usize).collect();
        let Some(t) = Tensor::new(shape, data) else {
            return fail(format!(
                "constant {} does not fill its shape",
                g.describe(id)
            ));
        };
        let name = node.name.clone().unwrap_or_default();
        // 4-bit weights are stored two per byte (`runtime::io::weights::pack_i4`)
        let t = match node.ty.elem.quant().map(|q| q.storage) {
            Some(Storage::I4) => {
                let Some((packed, (key, shape))) = pack_i4(&name, &t) else {
                    return fail(format!(
                        "constant {} holds values outside i4",
                        g.describe(id)
                    ));
                };
                meta.insert(key, shape);
                packed
            }
            _ => t,
        };
        tensors.push((name, t));
        g.node_mut(id).kind = NodeKind::Const(Init::External);
    }
    write_safetensors(
        &weights_out,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        &meta,
    )
    .or_else(|e| fail(e.to_string()))?;
    write_output(Some(&args.output), &qir::print::print(&g))
}
