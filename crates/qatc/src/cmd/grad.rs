//! `qatc grad FILE [-o OUT] [--optimizer ...]`: print the training-step graph of a model
//! with a loss — the grad pass (forward, backward, optimizer updates; the learning rate
//! becomes the input `%lr`) followed by `simplify`, exactly the graph `qatc train` runs
//! (`runtime::train::step_pipeline`).

use std::path::PathBuf;

use passes::grad::{BnMode, GradOptions, Optimizer};
use runtime::train::{OptimizerKind, TrainConfig, build_step};

use crate::io::{CmdResult, check_output, fail, read_input, write_output};

/// Print the training-step graph of a model.
#[derive(clap::Args)]
pub struct Args {
    /// The model (`-` for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where to write the result (standard output by default or with `-`).
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// sgd, momentum, adam, adamw, or none (the gradients become outputs).
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Momentum of the momentum optimizer.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay (L2 for sgd and adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Batch-norm with batch statistics (train) or the stored ones (frozen).
    #[arg(long, default_value = "train")]
    bn: String,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    if let Some(out) = &args.output {
        check_output("-o", out, &[("the model", args.file.as_path())])?;
    }
    let bn = BnMode::from_name(&args.bn).map_or_else(
        || fail(format!("--bn must be train or frozen, found '{}'", args.bn)),
        Ok,
    )?;
    let opts = if args.optimizer == "none" {
        GradOptions {
            optimizer: Optimizer::None,
            bn,
            ..GradOptions::default()
        }
    } else {
        let optimizer: OptimizerKind = args.optimizer.parse().or_else(|_| {
            fail(format!(
                "unknown optimizer '{}' (valid: sgd, momentum, adam, adamw, none)",
                args.optimizer
            ))
        })?;
        TrainConfig {
            optimizer,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            bn,
            ..TrainConfig::default()
        }
        .grad_options()
    };
    let input = read_input(&args.file)?;
    let g = super::parse_and_verify(&input)?;
    if !g.node_ids().iter().any(|&id| g.node(id).is_param()) {
        return fail(format!(
            "{}: the graph has no param: there is nothing to differentiate",
            args.file.display()
        ));
    }
    let step = build_step(&g, &opts).or_else(|e| fail(e.to_string()))?;
    write_output(args.output.as_deref(), &qir::print::print(&step))
}
