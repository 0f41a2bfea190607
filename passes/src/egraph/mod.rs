//! E-graph rewriting of qir graphs with `egg`: the language ([`lang`]), the analysis
//! ([`analysis`]), the conversion to and from graphs ([`convert`]), the cost model
//! ([`cost`]), the themed rule sets ([`rules`]) and the driver [`rewrite`] that the
//! `simplify`, `fuse` and `fold-batchnorm` passes share.
//!
//! Invariants of [`rewrite`]: every run is bounded by [`Limits`] and the returned
//! [`Report`] says when a limit (not saturation) stopped it; the rewritten graph is only
//! accepted when its shared work (the cost model summed once per value) is strictly lower
//! than the source graph's, so a pass never rewrites to worse code and an unchanged graph
//! keeps its exact text; `Changed::Yes` is returned only when the printed text differs.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod lang;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use egg::{Runner, StopReason};
use qir::Graph;

use crate::options::{OptionError, OptionKind, OptionSpec, Options};
use crate::pass::{Changed, PassError};
use crate::pipeline::OptValue;

pub use analysis::{EGraph, QirAnalysis};
pub use lang::QirLang;
pub use rules::Rewrite;

/// Bounds of one e-graph run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Stop once the e-graph holds more e-nodes than this.
    pub node_limit: usize,
    /// Stop after this many rule-application rounds.
    pub iter_limit: usize,
    /// Stop after this much wall time.
    pub time_limit: Duration,
}

impl Limits {
    /// The default node limit.
    pub const NODE_LIMIT: usize = 50_000;
    /// The default iteration limit.
    pub const ITER_LIMIT: usize = 30;
    /// The default time limit in milliseconds.
    pub const TIME_LIMIT_MS: u64 = 10_000;

    /// The option declarations every e-graph pass accepts (`node-limit`, `iter-limit`,
    /// `time-limit-ms`).
    pub const OPTIONS: &'static [OptionSpec] = &[
        OptionSpec {
            name: "node-limit",
            kind: OptionKind::UInt,
            default: "50000",
            doc: "stop rewriting once the e-graph holds this many e-nodes",
        },
        OptionSpec {
            name: "iter-limit",
            kind: OptionKind::UInt,
            default: "30",
            doc: "stop rewriting after this many rounds",
        },
        OptionSpec {
            name: "time-limit-ms",
            kind: OptionKind::UInt,
            default: "10000",
            doc: "stop rewriting after this many milliseconds",
        },
    ];

    /// Limits from checked pass options.
    pub fn from_options(o: &Options) -> Result<Limits, OptionError> {
        Ok(Limits {
            node_limit: usize::try_from(o.uint("node-limit")?).unwrap_or(usize::MAX),
            iter_limit: usize::try_from(o.uint("iter-limit")?).unwrap_or(usize::MAX),
            time_limit: Duration::from_millis(o.uint("time-limit-ms")?),
        })
    }

    /// The option values as pipeline text pairs, in declaration order.
    pub fn to_options(&self) -> Vec<(&'static str, OptValue)> {
        vec![
            ("node-limit", OptValue::Scalar(self.node_limit.to_string())),
            ("iter-limit", OptValue::Scalar(self.iter_limit.to_string())),
            (
                "time-limit-ms",
                OptValue::Scalar(self.time_limit.as_millis().to_string()),
            ),
        ]
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            node_limit: Limits::NODE_LIMIT,
            iter_limit: Limits::ITER_LIMIT,
            time_limit: Duration::from_millis(Limits::TIME_LIMIT_MS),
        }
    }
}

/// Why an e-graph run stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// No rule had anything left to add: every rewrite was explored.
    Saturated,
    /// The iteration limit stopped the run after this many rounds.
    IterLimit(usize),
    /// The node limit stopped the run with this many e-nodes.
    NodeLimit(usize),
    /// The time limit stopped the run after this many seconds.
    TimeLimit(f64),
    /// egg stopped for another reason.
    Other(String),
}

impl Stop {
    fn from_egg(r: Option<&StopReason>) -> Stop {
        match r {
            Some(StopReason::Saturated) => Stop::Saturated,
            Some(StopReason::IterationLimit(n)) => Stop::IterLimit(*n),
            Some(StopReason::NodeLimit(n)) => Stop::NodeLimit(*n),
            Some(StopReason::TimeLimit(s)) => Stop::TimeLimit(*s),
            Some(StopReason::Other(s)) => Stop::Other(s.clone()),
            None => Stop::Other("no stop reason".into()),
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        match self {
            Stop::Saturated => f.write_str("saturated"),
            Stop::IterLimit(n) => write!(
                f,
                "stopped by the iteration limit ({n} round{})",
                plural(*n)
            ),
            Stop::NodeLimit(n) => write!(f, "stopped by the node limit ({n} e-nodes)"),
            Stop::TimeLimit(s) => write!(f, "stopped by the time limit ({s:.3} s)"),
            Stop::Other(s) => write!(f, "stopped: {s}"),
        }
    }
}

/// What one e-graph run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The pass that ran.
    pub pass: &'static str,
    /// Why the run stopped.
    pub stop: Stop,
    /// Rounds of rule application.
    pub iterations: usize,
    /// E-nodes at the end.
    pub egraph_nodes: usize,
    /// E-classes at the end.
    pub egraph_classes: usize,
    /// How often each rule added something new, by rule name.
    pub applied: BTreeMap<String, usize>,
    /// Shared work of the source graph (cost model units).
    pub work_before: u64,
    /// Shared work of the cheapest extracted graph; the graph is replaced only when this
    /// is lower than `work_before`.
    pub work_after: u64,
    /// Whether the graph's text changed.
    pub changed: Changed,
}

impl Report {
    fn unchanged(pass: &'static str) -> Report {
        Report {
            pass,
            stop: Stop::Saturated,
            iterations: 0,
            egraph_nodes: 0,
            egraph_classes: 0,
            applied: BTreeMap::new(),
            work_before: 0,
            work_after: 0,
            changed: Changed::No,
        }
    }

    /// True when a limit, not saturation, ended the run.
    pub fn limited(&self) -> bool {
        !matches!(self.stop, Stop::Saturated)
    }

    /// The message for the user when a limit ended the run: the result is correct but some
    /// rewrites may not have been found.
    pub fn remark(&self) -> Option<String> {
        self.limited().then(|| {
            format!(
                "remark: pass '{}' {}; the graph is valid but may miss rewrites (raise node-limit, iter-limit or time-limit-ms)",
                self.pass, self.stop
            )
        })
    }
}

static REMARKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records a remark for the driver (see [`take_remarks`]).
pub fn push_remark(remark: String) {
    REMARKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(remark);
}

/// The remarks e-graph passes recorded since the last call (limit reports), oldest first.
/// The driver prints them after running a pipeline.
pub fn take_remarks() -> Vec<String> {
    std::mem::take(&mut *REMARKS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The time the search leaves for the steps after it, in multiples of the conversion into
/// the e-graph.
const AFTER_SEARCH: u32 = 3;

/// Runs `rules` on `g` within `limits`, extracts the cheapest equivalent graph and
/// replaces `g` by it when it is strictly cheaper (see the module invariants).
pub fn rewrite(
    g: &mut Graph,
    pass: &'static str,
    rules: &[Rewrite],
    limits: &Limits,
) -> Result<Report, PassError> {
    // the time limit covers the whole pass: conversion in counts against the search, and
    // the search leaves room for what follows it (cost model, extraction, conversion out:
    // each one walk over the e-graph, measured at about as long as the conversion in)
    let start = std::time::Instant::now();
    let (egraph, map) = convert::to_egraph(g)?;
    if map.ops.is_empty() {
        return Ok(Report::unchanged(pass));
    }
    let convert_in = start.elapsed();
    let reserve = convert_in * AFTER_SEARCH;
    let runner = Runner::<QirLang, QirAnalysis, ()>::new(QirAnalysis::default())
        .with_egraph(egraph)
        .with_node_limit(limits.node_limit)
        .with_iter_limit(limits.iter_limit)
        .with_time_limit(
            limits
                .time_limit
                .saturating_sub(convert_in)
                .saturating_sub(reserve),
        )
        .run(rules);
    let egraph = &runner.egraph;
    if let Some(c) = egraph.analysis.conflicts.first() {
        return Err(PassError::new(format!(
            "internal error in pass '{pass}': a rule {c}"
        )));
    }
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            *applied.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    let mut report = Report {
        pass,
        stop: Stop::from_egg(runner.stop_reason.as_ref()),
        iterations: runner.iterations.len(),
        egraph_nodes: egraph.total_size(),
        egraph_classes: egraph.number_of_classes(),
        applied,
        work_before: 0,
        work_after: 0,
        changed: Changed::No,
    };
    if start.elapsed() >= limits.time_limit {
        // no time left to extract: the graph stays as it was
        report.stop = Stop::TimeLimit(start.elapsed().as_secs_f64());
        return Ok(report);
    }
    let originals = map.canonical_originals(egraph);
    let model = cost::CostModel::new(egraph, &originals);
    report.work_before = map.ops.iter().fold(0u64, |sum, (_, n)| {
        sum.saturating_add(model.local(&convert::canonical(egraph, n)).work)
    });
    let extraction = cost::Extraction::new(egraph, &model);
    // every class of the (acyclic) source graph has a finite choice; the first e-node
    // stands in for a class that has none, and costs INFINITE in the model
    let choice = |c: egg::Id| {
        extraction
            .best_node(egraph, c)
            .unwrap_or_else(|| &egraph[c].nodes[0])
    };
    report.work_after = cost::dag_work(egraph, &model, &map.roots, choice);
    if report.work_after >= report.work_before {
        return Ok(report);
    }
    let new = convert::rebuild(g, &map, egraph, choice)?;
    if let Err(errs) = qir::verify::verify(&new) {
        return Err(PassError::new(format!(
            "internal error in pass '{pass}': the rewritten graph does not verify: {errs}"
        )));
    }
    if qir::print::print(&new) != qir::print::print(g) {
        *g = new;
        report.changed = Changed::Yes;
    }
    Ok(report)
}

/// Runs an e-graph pass for the [`crate::Pass`] wrappers: [`rewrite`], with the limit
/// report (if any) recorded as a remark for the driver.
pub fn run_pass(
    g: &mut Graph,
    pass: &'static str,
    rules: &[Rewrite],
    limits: &Limits,
) -> Result<Changed, PassError> {
    let report = rewrite(g, pass, rules, limits)?;
    if let Some(r) = report.remark() {
        push_remark(r);
    }
    Ok(report.changed)
}
