//! `qatc import MODEL.onnx -o MODEL.qir [--weights W] [--loss cross-entropy [--label NAME]
//! [--logits OUTPUT]] [--name NAME]`: translate an ONNX model (opset 13 to 28) with
//! `qir-onnx` and write the graph and its weights — by default `MODEL.safetensors` beside
//! the output, which the graph's `external` declarations are read from (`qatc run
//! --weights`, `qatc eval --weights`, `qatc train --init`). The graph is named after the
//! output file unless `--name` says otherwise. Remarks of the importer are `note:` lines on
//! standard error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use qir_onnx::{ImportOptions, LossKind, LossSpec};
use runtime::io::write_safetensors;

use crate::io::{CmdResult, check_output, fail, is_std, write_output, write_stderr, write_stdout};

/// Import an ONNX model as a .qir graph and its weights.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    #[arg(value_name = "MODEL.onnx")]
    file: PathBuf,
    /// Where to write the graph (`-` for standard output, which needs --weights).
    #[arg(short, long, value_name = "MODEL.qir")]
    output: PathBuf,
    /// Where to write the weights [default: the output with the extension .safetensors].
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Add a training loss: cross-entropy (softmax cross-entropy of the logits output
    /// against an i32 label input).
    #[arg(long, value_name = "LOSS")]
    loss: Option<String>,
    /// The name of the label input the loss adds.
    #[arg(long, value_name = "NAME", default_value = "label", requires = "loss")]
    label: String,
    /// The output holding the logits (by its ONNX name) [default: the only output, or the
    /// one named logits].
    #[arg(long, value_name = "OUTPUT", requires = "loss")]
    logits: Option<String>,
    /// The graph's name [default: the output file's name, or the ONNX graph's].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    let loss = match &args.loss {
        Some(l) => Some(LossSpec {
            kind: l
                .parse::<LossKind>()
                .or_else(|e| fail(format!("--loss: {e}")))?,
            label: args.label.clone(),
            logits: args.logits.clone(),
        }),
        None => None,
    };
    let to_stdout = is_std(&args.output);
    let name = args.name.clone().or_else(|| {
        (!to_stdout)
            .then(|| args.output.file_stem())
            .flatten()
            .map(|s| s.to_string_lossy().into_owned())
    });
    let opts = ImportOptions {
        name,
        loss,
        ..ImportOptions::default()
    };
    // outputs are checked before any work: neither may be the model, nor one the other
    check_output("-o", &args.output, &[("the model", &args.file)])?;
    if let Some(w) = &args.weights {
        check_output(
            "--weights",
            w,
            &[("the model", &args.file), ("the -o file", &args.output)],
        )?;
    } else if !to_stdout {
        let w = args.output.with_extension("safetensors");
        check_output("the weights file", &w, &[("the model", &args.file)])?;
    }
    let imported = qir_onnx::import_file(&args.file, &opts).or_else(|e| fail(e.to_string()))?;
    for n in &imported.notes {
        write_stderr(&format!("note: {n}\n"));
    }
    let weights = match (&args.weights, to_stdout) {
        (Some(w), _) => Some(w.clone()),
        (None, false) => Some(args.output.with_extension("safetensors")),
        (None, true) if imported.weights.is_empty() => None,
        (None, true) => {
            return fail("writing the graph to standard output needs --weights for its weights");
        }
    };
    let g = &imported.graph;
    if let Some(w) = &weights {
        let meta = BTreeMap::from([
            ("format".to_string(), "qatc-weights".to_string()),
            ("graph".to_string(), g.name.clone()),
            ("source".to_string(), args.file.display().to_string()),
        ]);
        write_safetensors(
            w,
            imported.weights.iter().map(|(k, t)| (k.as_str(), t)),
            &meta,
        )
        .or_else(|e| fail(e.to_string()))?;
    }
    write_output(Some(&args.output), &qir::print::print(g))?;
    if to_stdout {
        return Ok(());
    }
    let params = g.params().len();
    let state = g.states().len();
    write_stdout(&format!(
        "wrote {} (opset {}, {} ops, {params} params, {state} state{}){}\n",
        args.output.display(),
        imported.opset,
        g.op_count(),
        if g.loss().is_some() {
            ", with a loss"
        } else {
            ""
        },
        match &weights {
            Some(w) => format!(" and {} ({} tensors)", w.display(), imported.weights.len()),
            None => String::new(),
        }
    ))
}
