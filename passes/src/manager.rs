//! The pass manager: runs passes in order, verifies the graph after every pass
//! (`qir::verify::verify`), names the pass that broke it, dumps the IR after chosen passes
//! and times each pass.
//!
//! Invariant: when [`PassManager::run`] returns `Ok`, the graph verifies; when a pass breaks
//! verification the run stops at that pass and the error carries the verifier errors and
//! the IR annotated with them (the graph itself is left as that pass made it).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use qir::Graph;
use qir::verify::{Site, VerifyErrors, verify};

use crate::pass::{Changed, Pass, PassError};
use crate::pipeline::{PassSpec, Pipeline};
use crate::registry::{self, ConfigError};

/// Runs a sequence of passes with verification after each.
#[derive(Default)]
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    print_ir_after_all: bool,
    print_ir_after: Vec<String>,
}

/// What one pass did and how long it took.
#[derive(Clone, Debug)]
pub struct PassRun {
    /// The pass's name.
    pub name: &'static str,
    /// What the pass reported.
    pub changed: Changed,
    /// Wall time of the pass itself.
    pub time: Duration,
    /// Wall time of the verification after it.
    pub verify_time: Duration,
}

/// The IR printed after a pass (when asked for with `print_ir_after*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrDump {
    /// The pass after which the IR was printed.
    pub pass: &'static str,
    /// The canonical text of the graph.
    pub ir: String,
}

/// The outcome of a successful run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One entry per pass run, in order.
    pub runs: Vec<PassRun>,
    /// Time spent verifying the input before the first pass.
    pub input_verify_time: Duration,
    /// Dumps collected by [`PassManager::run`] (empty with [`PassManager::run_with`],
    /// which hands them to its callback instead).
    pub dumps: Vec<IrDump>,
}

/// Why a run stopped.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RunError {
    /// The graph did not verify before the first pass.
    #[error("the input graph does not verify:\n{errors}")]
    InvalidInput {
        /// The verifier's errors.
        errors: VerifyErrors,
        /// The input IR with the errors under the culprits.
        ir: String,
    },
    /// A pass returned an error. `ir` is the annotated IR when the error names a node.
    #[error("pass '{pass}' failed: {error}")]
    PassFailed {
        /// The failing pass.
        pass: &'static str,
        /// What it reported.
        error: PassError,
        /// The IR with the error under its node, when the error names one.
        ir: Option<String>,
    },
    /// The graph did not verify after a pass: the pass broke it.
    #[error("verifier failed after pass '{pass}':\n{errors}")]
    VerifyFailed {
        /// The pass after which the graph no longer verifies.
        pass: &'static str,
        /// The verifier's errors.
        errors: VerifyErrors,
        /// The IR after the pass with the errors shown under the culprits.
        ir: String,
    },
}

/// The header line printed before an IR dump, as mlir-opt does.
pub fn dump_header(pass: &str) -> String {
    format!("// -----// IR after {pass} //----- //")
}

impl PassManager {
    /// An empty manager.
    pub fn new() -> PassManager {
        PassManager::default()
    }

    /// A manager running the passes of `pipeline`, created through the registry.
    pub fn from_pipeline(pipeline: &Pipeline) -> Result<PassManager, ConfigError> {
        Ok(PassManager {
            passes: registry::create_all(pipeline)?,
            ..PassManager::default()
        })
    }

    /// A manager running the pipeline written as `text`.
    pub fn parse(text: &str) -> Result<PassManager, ConfigError> {
        PassManager::from_pipeline(&crate::pipeline::parse(text)?)
    }

    /// Appends a pass.
    pub fn add(&mut self, pass: Box<dyn Pass>) -> &mut PassManager {
        self.passes.push(pass);
        self
    }

    /// Dump the IR after every pass.
    pub fn set_print_ir_after_all(&mut self, on: bool) -> &mut PassManager {
        self.print_ir_after_all = on;
        self
    }

    /// Dump the IR after every run of the passes named here. Each name must be a registered
    /// pass or a pass of this manager.
    pub fn set_print_ir_after(
        &mut self,
        names: &[String],
    ) -> Result<&mut PassManager, ConfigError> {
        let mut valid = registry::names();
        for p in &self.passes {
            if !valid.contains(&p.name()) {
                valid.push(p.name());
            }
        }
        if let Some(bad) = names.iter().find(|n| !valid.contains(&n.as_str())) {
            return Err(ConfigError::UnknownPass {
                name: bad.clone(),
                valid,
            });
        }
        self.print_ir_after = names.to_vec();
        Ok(self)
    }

    /// The passes to run, in order.
    pub fn passes(&self) -> &[Box<dyn Pass>] {
        &self.passes
    }

    /// The pipeline this manager runs, with every option of every pass written out.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            passes: self
                .passes
                .iter()
                .map(|p| PassSpec {
                    name: p.name().to_string(),
                    options: p
                        .options()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                })
                .collect(),
        }
    }

    fn wants_dump(&self, name: &str) -> bool {
        self.print_ir_after_all || self.print_ir_after.iter().any(|n| n == name)
    }

    /// Runs every pass on `g`, collecting IR dumps in the report.
    pub fn run(&self, g: &mut Graph) -> Result<Report, RunError> {
        let mut dumps = Vec::new();
        let mut report = self.run_with(g, &mut |pass, g| {
            dumps.push(IrDump {
                pass,
                ir: qir::print::print(g),
            })
        })?;
        report.dumps = dumps;
        Ok(report)
    }

    /// Runs every pass on `g`, handing each requested IR dump (pass name, graph after the
    /// pass) to `on_dump` as soon as the pass has run and verified.
    pub fn run_with(
        &self,
        g: &mut Graph,
        on_dump: &mut dyn FnMut(&'static str, &Graph),
    ) -> Result<Report, RunError> {
        let mut report = Report::default();
        let start = Instant::now();
        if let Err(errors) = verify(g) {
            let ir = annotate(g, &errors);
            return Err(RunError::InvalidInput { errors, ir });
        }
        report.input_verify_time = start.elapsed();
        for pass in &self.passes {
            let name = pass.name();
            let start = Instant::now();
            let changed = match pass.run(g) {
                Ok(c) => c,
                Err(error) => {
                    let ir = error
                        .node()
                        .filter(|&n| g.contains(n))
                        .map(|n| qir::print::print_annotated(g, &[(n, error.to_string())]));
                    return Err(RunError::PassFailed {
                        pass: name,
                        error,
                        ir,
                    });
                }
            };
            let time = start.elapsed();
            let start = Instant::now();
            if let Err(errors) = verify(g) {
                let ir = annotate(g, &errors);
                return Err(RunError::VerifyFailed {
                    pass: name,
                    errors,
                    ir,
                });
            }
            let verify_time = start.elapsed();
            report.runs.push(PassRun {
                name,
                changed,
                time,
                verify_time,
            });
            if self.wants_dump(name) {
                on_dump(name, g);
            }
        }
        Ok(report)
    }
}

impl Report {
    /// Whether any pass changed the graph.
    pub fn changed(&self) -> Changed {
        self.runs.iter().fold(Changed::No, |acc, r| acc | r.changed)
    }

    /// Total wall time of passes and verification.
    pub fn total_time(&self) -> Duration {
        self.input_verify_time
            + self
                .runs
                .iter()
                .map(|r| r.time + r.verify_time)
                .sum::<Duration>()
    }

    /// A timing table in the style of mlir-opt's `--mlir-timing`: one row per pass run,
    /// one row for all verification, and the total.
    pub fn timing_table(&self) -> String {
        let total = self.total_time().as_secs_f64();
        let pct = |t: f64| if total > 0.0 { 100.0 * t / total } else { 0.0 };
        let rule =
            "===-------------------------------------------------------------------------===";
        let mut s = String::new();
        let _ = writeln!(s, "{rule}");
        let title = format!("{:^79}", "... Pass execution timing report ...");
        let _ = writeln!(s, "{}", title.trim_end());
        let _ = writeln!(s, "{rule}");
        let _ = writeln!(s, "  Total Execution Time: {total:.4} seconds\n");
        let _ = writeln!(s, "  ----Wall Time----  ----Name----");
        for r in &self.runs {
            let t = r.time.as_secs_f64();
            let _ = writeln!(s, "  {t:>8.4} ({:>5.1}%)  {}", pct(t), r.name);
        }
        let v = (self.input_verify_time
            + self.runs.iter().map(|r| r.verify_time).sum::<Duration>())
        .as_secs_f64();
        let _ = writeln!(s, "  {v:>8.4} ({:>5.1}%)  (verifier)", pct(v));
        let _ = writeln!(s, "  {total:>8.4} (100.0%)  Total");
        s
    }
}

/// The canonical IR of `g` with each verifier error printed under the line it concerns
/// (`//^ error: ...`): node errors under the node, output/loss/update errors under that
/// line, graph-wide errors under the `graph` line.
pub fn annotate(g: &Graph, errors: &VerifyErrors) -> String {
    let node_notes: Vec<(qir::NodeId, String)> = errors
        .0
        .iter()
        .filter_map(|e| match e.site {
            Site::Node(id) if g.contains(id) => Some((id, e.message.clone())),
            Site::Node(_) | Site::Graph | Site::Output(_) | Site::Loss | Site::Update(_) => None,
        })
        .collect();
    let text = qir::print::print_annotated(g, &node_notes);
    // Lines of the tail sections, found by their keyword (comments print as `  //`).
    let mut outputs = Vec::new();
    let mut updates = Vec::new();
    let mut loss = None;
    let mut graph_line = None;
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("  output ") {
            outputs.push(i);
        } else if l.starts_with("  update ") {
            updates.push(i);
        } else if l.starts_with("  loss ") {
            loss = Some(i);
        } else if l.starts_with("graph @") && graph_line.is_none() {
            graph_line = Some(i);
        }
    }
    let mut extra: Vec<Vec<String>> = vec![Vec::new(); lines.len() + 1];
    for e in &errors.0 {
        let line = match e.site {
            Site::Node(id) if g.contains(id) => continue,
            Site::Node(_) => None,
            Site::Graph => graph_line,
            Site::Output(i) => outputs.get(i).copied(),
            Site::Loss => loss,
            Site::Update(i) => updates.get(i).copied(),
        };
        let msg = format!("//^ error: {}", e.message);
        match line {
            Some(l) => extra[l].push(msg),
            None => extra[lines.len()].push(format!("// error: {e}")),
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        out.push_str(l);
        out.push('\n');
        for m in &extra[i] {
            out.push_str(m);
            out.push('\n');
        }
    }
    for m in &extra[lines.len()] {
        out.push_str(m);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use qir::{Dim, Init, Inst, Op, Type};

    /// A pass that does exactly what it is told, for testing the manager.
    struct Probe {
        name: &'static str,
        action: fn(&mut Graph) -> Result<Changed, PassError>,
    }

    impl Pass for Probe {
        fn name(&self) -> &'static str {
            self.name
        }
        fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
            (self.action)(g)
        }
    }

    fn mlp() -> Graph {
        let mut g = Graph::new("m");
        let x = g
            .add_input("x", Type::f32(&[Dim::from("B"), 4u64.into()]))
            .unwrap();
        let w = g
            .add_param(
                "w",
                Type::f32(&[3u64.into(), 4u64.into()]),
                Init::LecunUniform,
            )
            .unwrap();
        let h = g.add_op(Inst::new(Op::Linear), &[x, w], Some("h")).unwrap();
        let r = g.op(Op::Relu, &[h]).unwrap();
        g.add_output("y", r);
        g
    }

    fn nothing(_: &mut Graph) -> Result<Changed, PassError> {
        Ok(Changed::No)
    }

    fn rename_graph(g: &mut Graph) -> Result<Changed, PassError> {
        g.name = "renamed".into();
        Ok(Changed::Yes)
    }

    /// Breaks the graph: retypes the op `%h` so that it no longer matches its inference.
    fn break_types(g: &mut Graph) -> Result<Changed, PassError> {
        let h = g.find("h").ok_or_else(|| PassError::new("no %h"))?;
        g.node_mut(h).ty = Type::f32(&[Dim::from("B"), 7u64.into()]);
        g.add_output("bad name!", h);
        Ok(Changed::Yes)
    }

    fn fail_at_h(g: &mut Graph) -> Result<Changed, PassError> {
        let h = g.find("h").ok_or_else(|| PassError::new("no %h"))?;
        Err(PassError::at(h, "cannot handle this node"))
    }

    fn probe(
        name: &'static str,
        action: fn(&mut Graph) -> Result<Changed, PassError>,
    ) -> Box<dyn Pass> {
        Box::new(Probe { name, action })
    }

    #[test]
    fn runs_in_order_dumps_and_times() {
        let mut pm = PassManager::new();
        pm.add(probe("first", nothing))
            .add(probe("second", rename_graph));
        pm.set_print_ir_after(&["second".to_string()]).unwrap();
        let mut g = mlp();
        let report = pm.run(&mut g).unwrap();
        assert_eq!(g.name, "renamed");
        let names: Vec<&str> = report.runs.iter().map(|r| r.name).collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(report.runs[0].changed, Changed::No);
        assert_eq!(report.changed(), Changed::Yes);
        assert_eq!(report.dumps.len(), 1);
        assert_eq!(report.dumps[0].pass, "second");
        assert!(report.dumps[0].ir.starts_with("graph @renamed {"));
        let table = report.timing_table();
        assert!(
            table.contains("  first\n") && table.contains("  second\n"),
            "{table}"
        );
        assert!(
            table.contains("(verifier)") && table.contains("Total"),
            "{table}"
        );

        pm.set_print_ir_after_all(true);
        let report = pm.run(&mut mlp()).unwrap();
        assert_eq!(report.dumps.len(), 2);
    }

    #[test]
    fn names_the_pass_that_broke_the_graph() {
        let mut pm = PassManager::new();
        pm.add(probe("fine", nothing))
            .add(probe("breaker", break_types))
            .add(probe("never", rename_graph));
        let mut g = mlp();
        let err = pm.run(&mut g).unwrap_err();
        let RunError::VerifyFailed { pass, errors, ir } = &err else {
            panic!("{err}")
        };
        assert_eq!(*pass, "breaker");
        assert_eq!(errors.0.len(), 2, "{errors}");
        assert!(
            err.to_string()
                .starts_with("verifier failed after pass 'breaker':\n")
        );
        assert_eq!(g.name, "m", "the run stops at the failing pass");
        // each error sits under its line
        let lines: Vec<&str> = ir.lines().collect();
        let h = lines
            .iter()
            .position(|l| l.starts_with("  %h = linear"))
            .unwrap();
        assert!(
            lines[h + 1].starts_with("//^ error: 'linear' result type is written f32[B, 7]"),
            "{ir}"
        );
        let o = lines
            .iter()
            .position(|l| l.starts_with("  output bad name!"))
            .unwrap();
        assert_eq!(
            lines[o + 1],
            "//^ error: 'bad name!' is not a valid output name",
            "{ir}"
        );
    }

    #[test]
    fn reports_pass_errors_and_invalid_input() {
        let mut pm = PassManager::new();
        pm.add(probe("picky", fail_at_h));
        let err = pm.run(&mut mlp()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pass 'picky' failed: cannot handle this node"
        );
        let RunError::PassFailed { ir: Some(ir), .. } = err else {
            panic!("no annotated IR")
        };
        assert!(
            ir.contains("  %h = linear(%x, %w) : f32[B, 3]\n//^ error: cannot handle this node\n"),
            "{ir}"
        );

        let mut g = mlp();
        break_types(&mut g).unwrap();
        let err = PassManager::new().run(&mut g).unwrap_err();
        assert!(matches!(err, RunError::InvalidInput { .. }), "{err}");
    }

    #[test]
    fn print_ir_after_needs_a_known_pass() {
        let mut pm = PassManager::new();
        pm.add(probe("mine", nothing));
        assert!(
            pm.set_print_ir_after(&["mine".into(), "canonicalize".into()])
                .is_ok()
        );
        let err = pm.set_print_ir_after(&["nope".into()]).err().unwrap();
        assert!(err.to_string().starts_with("unknown pass 'nope'"), "{err}");
    }

    #[test]
    fn pipeline_text_shows_every_option() {
        let pm = PassManager::parse("canonicalize{cse=false}").unwrap();
        assert_eq!(
            pm.pipeline().to_string(),
            "canonicalize{dce=true,cse=false,fold=true,fold-limit=65536}"
        );
    }
}
