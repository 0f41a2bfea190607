//! `qatc export MODEL.qir [--weights W] -o MODEL.onnx`: write a graph as an ONNX model with
//! `qir-onnx`'s exporter — a float model as the ops the importer reads back, a fake-quant
//! (prepared) model as QuantizeLinear/DequantizeLinear pairs with its observers frozen at
//! their running ranges. The weights default to `MODEL.safetensors` beside the graph when
//! it declares `external` values. Only what the outputs depend on is written (a loss and
//! its label input are left out). An op the exporter cannot translate is an error naming
//! the node and the op.

use std::collections::BTreeMap;
use std::path::PathBuf;

use runtime::io::weights::read_safetensors;

use crate::io::{CmdResult, check_output, fail, is_std, read_input, write_stdout};

/// Export a .qir graph and its weights as an ONNX model.
#[derive(clap::Args)]
pub struct Args {
    /// The graph (`-` for standard input, which needs --weights when it has external values).
    #[arg(value_name = "MODEL.qir")]
    file: PathBuf,
    /// The weights (safetensors) [default: the graph with the extension .safetensors, when
    /// the graph declares external values].
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Where to write the ONNX model.
    #[arg(short, long, value_name = "MODEL.onnx")]
    output: PathBuf,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    let external = g
        .node_ids()
        .iter()
        .any(|&i| matches!(g.node(i).init(), Some(qir::Init::External)));
    let path = match (&args.weights, external) {
        (Some(w), _) => Some(w.clone()),
        (None, true) if is_std(&args.file) => {
            return fail("the graph has external values: give their file with --weights");
        }
        (None, true) => Some(args.file.with_extension("safetensors")),
        (None, false) => None,
    };
    let weights = match &path {
        Some(p) => {
            read_safetensors(p)
                .or_else(|e| fail(e.to_string()))?
                .tensors
        }
        None => BTreeMap::new(),
    };
    let mut inputs = vec![("the model", args.file.as_path())];
    if let Some(p) = &path {
        inputs.push(("the --weights file", p.as_path()));
    }
    check_output("-o", &args.output, &inputs)?;
    let model = qir_onnx::export(&g, &weights)
        .or_else(|e| fail(format!("cannot export {}: {e}", input.name)))?;
    let bytes = qir_onnx::export::encode(&model);
    runtime::io::write_atomic(&args.output, &bytes)
        .or_else(|e| fail(format!("cannot write {}: {e}", args.output.display())))?;
    let graph = model.graph.unwrap_or_default();
    write_stdout(&format!(
        "wrote {} (opset {}, {} nodes, {} initializers)\n",
        args.output.display(),
        qir_onnx::export::EXPORT_OPSET,
        graph.node.len(),
        graph.initializer.len()
    ))
}
