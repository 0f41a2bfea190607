//! `qatc run FILE --input NAME=FILE.npy ... [--weights W] [-o OUT.npz] [--mode eval|train]`:
//! evaluate a model once with the reference interpreter on inputs from NumPy files, and
//! print the outputs or write them to a `.npz` archive. A missing input, or one of the
//! wrong type or shape, is an error naming the input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qir::{Data, ElemType, Tensor};
use runtime::executor::eval_graph;
use runtime::io::weights::{Require, read_safetensors, store_from_file};

use crate::io::{CmdResult, check_output, fail, read_input, write_stdout};

/// Evaluate a model once on the chosen executor.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// An input as NAME=FILE.npy, or FILE.npz for every array of the archive by name
    /// (repeatable).
    #[arg(short, long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Parameters and state (safetensors); without it they are initialized from the
    /// model's initializers with --seed. Every param must be in the file unless
    /// --init-missing is given; absent state is always initialized.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Initialize the params that --weights lacks from the model's initializers (with
    /// --seed) instead of refusing them.
    #[arg(long, requires = "weights")]
    init_missing: bool,
    /// Seed of the initializers: of every param and state without --weights, of the
    /// state (and with --init-missing the params) the weights do not provide.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the outputs (and the loss, as `loss`) to this .npz archive instead of
    /// printing them.
    #[arg(short, long, value_name = "OUT.npz")]
    output: Option<PathBuf>,
    /// eval: observers return their stored ranges; train: observers fold in this batch.
    #[arg(long, value_enum, default_value_t = ModeArg::Eval)]
    mode: ModeArg,
    #[command(flatten)]
    backend: super::BackendArg,
}

/// The `--mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Eval,
    Train,
}

fn read_inputs(specs: &[String]) -> Result<HashMap<String, Tensor>, crate::io::Failure> {
    let mut inputs = HashMap::new();
    for spec in specs {
        match spec.split_once('=') {
            Some((name, path)) => {
                let name = name.trim_start_matches('%');
                if name.is_empty() {
                    return fail(format!("--input '{spec}': the input name is empty"));
                }
                let t = runtime::io::read_npy(Path::new(path)).or_else(|e| fail(e.to_string()))?;
                if t.numel() == 0 {
                    return fail(format!(
                        "--input '{spec}': the array has shape {:?}, no elements (an empty batch has nothing to evaluate)",
                        t.shape
                    ));
                }
                inputs.insert(name.to_string(), t);
            }
            None if spec.ends_with(".npz") => {
                let arrays =
                    runtime::io::read_npz(Path::new(spec)).or_else(|e| fail(e.to_string()))?;
                if let Some((name, t)) = arrays.iter().find(|(_, t)| t.numel() == 0) {
                    return fail(format!(
                        "--input '{spec}': the array '{name}' has shape {:?}, no elements (an empty batch has nothing to evaluate)",
                        t.shape
                    ));
                }
                inputs.extend(arrays);
            }
            None => {
                return fail(format!(
                    "--input '{spec}': expected NAME=FILE.npy or FILE.npz"
                ));
            }
        }
    }
    Ok(inputs)
}

/// `name: f32[2, 10] = [v0, v1, ...]`, at most 16 values.
fn show(name: &str, t: &Tensor) -> String {
    const MAX: usize = 16;
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let vals: Vec<String> = (0..t.numel().min(MAX))
        .map(|i| match &t.data {
            Data::F32(v) => qir::float::fmt_f32(v[i]),
            Data::F64(v) => qir::float::fmt_f64(v[i]),
            Data::Bool(v) => v[i].to_string(),
            other => format!("{}", other.get_f64(i) as i64),
        })
        .collect();
    let more = if t.numel() > MAX {
        format!(", ... ({} more)", t.numel() - MAX)
    } else {
        String::new()
    };
    format!(
        "{name}: {}[{}] = [{}{more}]\n",
        t.data.dtype(),
        dims.join(", "),
        vals.join(", ")
    )
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    args.backend.limit_memory();
    if let Some(out) = &args.output {
        let mut inputs: Vec<(&str, &Path)> = vec![("the model", args.file.as_path())];
        if let Some(p) = &args.weights {
            inputs.push(("the --weights file", p.as_path()));
        }
        inputs.extend(args.inputs.iter().map(|spec| {
            let path = spec.split_once('=').map_or(spec.as_str(), |(_, p)| p);
            ("an --input file", Path::new(path))
        }));
        check_output("-o", out, &inputs)?;
    }
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    let inputs = read_inputs(&args.inputs)?;
    let mut store = match &args.weights {
        Some(w) => {
            let require = if args.init_missing {
                Require::Nothing
            } else {
                Require::Params
            };
            read_safetensors(w)
                .and_then(|f| store_from_file(&g, &f, require, args.seed))
                .or_else(|e| {
                    let hint = if e.to_string().contains("no tensor for param") {
                        " (pass --init-missing to initialize it with --seed)"
                    } else {
                        ""
                    };
                    fail(format!("{e}{hint}"))
                })?
        }
        None => qir_interp::init_store(&g, args.seed).or_else(|e| fail(e.to_string()))?,
    };
    // The graph that runs: eval freezes the observers (the `freeze-observers` rewrite);
    // either way nothing is written back, since the store is not saved.
    let g = match args.mode {
        ModeArg::Eval => eval_graph(&g).or_else(|e| fail(e.to_string()))?,
        ModeArg::Train => {
            let mut g = g;
            g.updates_mut().clear();
            g
        }
    };
    let out = args
        .backend
        .executor()
        .prepare(&g, &[])
        .and_then(|mut p| p.run(&mut store, &inputs))
        .or_else(|e| fail(e.to_string()))?;
    let mut arrays = out.outputs;
    if let Some(loss) = out.loss
        && !arrays.contains_key("loss")
    {
        let elem = g.loss().map(|l| g.ty(l).elem.clone());
        let data = match elem {
            Some(ElemType::F64) => Data::F64(vec![loss]),
            _ => Data::F32(vec![loss as f32]),
        };
        arrays.insert(
            "loss".into(),
            Tensor {
                shape: Vec::new(),
                data,
            },
        );
    }
    match &args.output {
        Some(path) => runtime::io::write_npz(path, arrays.iter().map(|(k, v)| (k.as_str(), v)))
            .or_else(|e| fail(e.to_string())),
        None => {
            let text: String = arrays.iter().map(|(k, v)| show(k, v)).collect();
            write_stdout(&text)
        }
    }
}
