//! `qatc grad FILE [-o OUT] [--optimizer ...]`: print the training-step graph of a model
//! with a loss — the grad pass (forward, backward, optimizer updates; the learning rate
//! becomes the input `%lr`) followed by `simplify`, exactly the graph `qatc train` runs
//! (`runtime::train::step_pipeline`).

use std::path::PathBuf;

use passes::grad::{BnMode, GradOptions, Optimizer};
use runtime::train::{TrainConfig, build_step};

use super::train::OptimizerArg;

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
    /// The optimizer whose updates the step graph computes.
    #[arg(long, value_enum, default_value_t = GradOptimizer::Sgd)]
    optimizer: GradOptimizer,
    /// Momentum of the momentum optimizer.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay (L2 for sgd and adam, decoupled for adamw).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// How batch-norm layers normalize in the training step.
    #[arg(long, value_enum, default_value_t = BnArg::Train)]
    bn: BnArg,
}

/// The `--optimizer` values of `grad`: the trainer's, and none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GradOptimizer {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum (--momentum).
    Momentum,
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
    /// No update: the gradients become outputs.
    None,
}

/// The `--bn` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BnArg {
    /// Normalize with the batch's statistics and update the running ones.
    Train,
    /// Normalize with the stored running statistics (fine-tuning with frozen BN).
    Frozen,
}

/// Runs the command.
pub fn run(args: Args) -> CmdResult {
    if let Some(out) = &args.output {
        check_output("-o", out, &[("the model", args.file.as_path())])?;
    }
    let bn = match args.bn {
        BnArg::Train => BnMode::Train,
        BnArg::Frozen => BnMode::Frozen,
    };
    let optimizer = match args.optimizer {
        GradOptimizer::Sgd => Some(OptimizerArg::Sgd),
        GradOptimizer::Momentum => Some(OptimizerArg::Momentum),
        GradOptimizer::Adam => Some(OptimizerArg::Adam),
        GradOptimizer::Adamw => Some(OptimizerArg::Adamw),
        GradOptimizer::None => None,
    };
    let opts = if let Some(optimizer) = optimizer {
        TrainConfig {
            optimizer: optimizer.into(),
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            bn,
            ..TrainConfig::default()
        }
        .grad_options()
    } else {
        GradOptions {
            optimizer: Optimizer::None,
            bn,
            ..GradOptions::default()
        }
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
