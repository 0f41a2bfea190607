//! A graph prepared by the JIT: one compiled program per set of symbolic-dimension
//! values (batch size), made at the first run that needs it and kept; each run binds the
//! inputs and the store's tensors into the io table, calls the entry function, and copies
//! outputs, fetched values and non-in-place updates out of the arena.
//!
//! Invariants: inputs and stored values are checked against the graph before the code
//! runs (the code trusts every shape); a run that fails leaves the store as it was (the
//! loss is checked before anything is written in place, and updates are copied back only
//! after success); a program whose baked per-axis quantization parameters no longer match
//! the store is recompiled.

use std::collections::{BTreeMap, HashMap};

use qir::{Data, Graph, NodeId, Tensor};
use qir_exec::{
    Bindings, ExecError, Inputs, Program, ProgramStats, RunOutput, Store, bind_inputs, check_stored,
};

use crate::Jit;
use crate::codegen::{Code, compile};
use crate::dtype::{DType, data_ptr, data_ptr_mut};
use crate::kernels::status;
use crate::lower::lower;
use crate::plan::{Io, Place, Plan, Roots, plan};
use crate::rt::{Profile, RunCtx};

/// One compiled program: the plan, its code and its arena.
pub struct Compiled {
    /// The plan (the code refers to its kernel call descriptions).
    pub plan: Box<Plan>,
    code: Code,
    arena: Vec<u64>,
    /// Store values baked into the code, and the store version last found equal to each
    /// (0: not checked yet).
    baked: Vec<(String, Tensor, u64)>,
    /// The element type of each input and stored entry of the plan's io table (found
    /// once, not by name on every run).
    io_dtypes: Vec<Option<DType>>,
    /// Seconds spent lowering and planning.
    pub plan_seconds: f64,
    profile: Option<Box<Profile>>,
}

impl Compiled {
    /// True if every baked value is still what the store holds: a version seen before
    /// needs no comparison of contents.
    fn baked_current(&mut self, store: &Store) -> bool {
        for (name, t, seen) in &mut self.baked {
            let v = store.version(name);
            if v == Some(*seen) {
                continue;
            }
            if store.get(name) != Some(t) {
                return false;
            }
            *seen = v.unwrap_or(0);
        }
        true
    }

    /// Seconds spent in Cranelift.
    pub fn compile_seconds(&self) -> f64 {
        self.code.compile_seconds
    }

    /// Seconds per step summed over the profiled runs, with each step's kind and label
    /// (empty unless the JIT was made with `profile`).
    pub fn profile(&self) -> Vec<(String, String, f64)> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.plan
            .steps
            .iter()
            .zip(&self.plan.step_labels)
            .zip(&p.seconds)
            .map(|((s, label), &t)| (crate::plan::step_kind(s, &self.plan), label.clone(), t))
            .collect()
    }
}

/// A graph prepared by the JIT (see the module docs).
pub struct JitProgram {
    graph: Graph,
    fetch: Vec<NodeId>,
    jit: Jit,
    cache: HashMap<Bindings, Compiled>,
    checks: RunChecks,
}

/// What a run checks before the code runs, kept between runs so that a repeated run with
/// inputs of the same shapes and an unchanged store re-checks only what may have changed
/// (a batch-1 inference spent ~5% of its time re-validating every stored value).
#[derive(Default)]
struct RunChecks {
    /// The declared inputs, in declaration order.
    inputs: Vec<String>,
    /// The shapes and element types of the inputs last bound, and their bindings.
    last_bind: Option<(Vec<InputSig>, Bindings)>,
    /// Every stored value the graph declares (param, state, const), with the store
    /// version last found to fit its declaration (0: not yet).
    stored: Vec<(NodeId, String, u64)>,
    /// Fake-quant ops whose scale is a declared value, `(op, scale, version last found
    /// valid)` (a stored scale is checked again when its version moves, an input's on
    /// every run).
    scales: Vec<(NodeId, NodeId, u64)>,
}

/// The shape and element type of an input.
type InputSig = (Vec<usize>, &'static str);

impl RunChecks {
    fn of(g: &Graph) -> RunChecks {
        let stored = g
            .node_ids()
            .into_iter()
            .filter_map(|id| {
                let n = g.node(id);
                (n.is_param() || n.is_state() || n.is_const())
                    .then(|| (id, n.name.clone().unwrap_or_default(), 0))
            })
            .collect();
        let inputs = g
            .inputs()
            .into_iter()
            .map(|id| g.node(id).name.clone().unwrap_or_default())
            .collect();
        let scales = qir_exec::fake_quant_scale_values(g)
            .into_iter()
            .map(|(op, s)| (op, s, 0))
            .collect();
        RunChecks {
            inputs,
            last_bind: None,
            stored,
            scales,
        }
    }

    /// The bindings of `inputs` (checked as `bind_inputs` does, unless they have the
    /// shapes and element types of the last inputs bound, which passed).
    fn bind(&mut self, g: &Graph, inputs: &Inputs) -> Result<&Bindings, ExecError> {
        let same = self.last_bind.as_ref().is_some_and(|(sig, _)| {
            inputs.len() == self.inputs.len()
                && self.inputs.iter().zip(sig).all(|(name, (shape, dt))| {
                    inputs.get(name).is_some_and(|t| {
                        t.shape == *shape
                            && t.data.dtype() == *dt
                            && t.data.len() == shape.iter().product::<usize>()
                    })
                })
        });
        if !same {
            let b = bind_inputs(g, inputs)?;
            let sig = self
                .inputs
                .iter()
                .map(|name| {
                    let t = &inputs[name];
                    (t.shape.clone(), t.data.dtype())
                })
                .collect();
            self.last_bind = Some((sig, b));
        }
        Ok(&self.last_bind.as_ref().expect("bound above").1)
    }

    /// Every stored value the graph declares fits its declaration, and every declared
    /// fake-quant scale is positive and finite.
    fn check_store(&mut self, g: &Graph, store: &Store, inputs: &Inputs) -> Result<(), ExecError> {
        for (id, name, seen) in &mut self.stored {
            let v = store.version(name);
            if v.is_some() && v == Some(*seen) {
                continue;
            }
            let t = store.get(name).ok_or_else(|| {
                ExecError::Store(format!(
                    "%{name} ({}) is not in the store (initialize it with init_store or load it)",
                    g.node(*id).ty
                ))
            })?;
            check_stored(name, &g.node(*id).ty, t).map_err(ExecError::Store)?;
            *seen = v.unwrap_or(0);
        }
        for (op, scale, seen) in &mut self.scales {
            let node = g.node(*scale);
            let name = node.name.as_deref().unwrap_or_default();
            if node.is_input() {
                if let Some(t) = inputs.get(name) {
                    qir_exec::check_fake_quant_scale(g, *op, *scale, t)?;
                }
                continue;
            }
            let v = store.version(name);
            if v.is_some() && v == Some(*seen) {
                continue;
            }
            if let Some(t) = store.get(name) {
                qir_exec::check_fake_quant_scale(g, *op, *scale, t)?;
            }
            *seen = v.unwrap_or(0);
        }
        Ok(())
    }
}

impl JitProgram {
    pub(crate) fn new(graph: Graph, fetch: Vec<NodeId>, jit: Jit) -> JitProgram {
        let checks = RunChecks::of(&graph);
        JitProgram {
            graph,
            fetch,
            jit,
            cache: HashMap::new(),
            checks,
        }
    }

    /// Every compiled program, by the values of the symbolic dimensions.
    pub fn programs(&self) -> impl Iterator<Item = (&Bindings, &Compiled)> {
        self.cache.iter()
    }

    /// The compiled program for `bindings` (compiled now if needed).
    pub fn compiled(&mut self, bindings: &Bindings, store: &Store) -> Result<&Compiled, ExecError> {
        let stale = match self.cache.get_mut(bindings) {
            Some(c) => !c.baked_current(store),
            None => true,
        };
        if stale {
            let c = self.build(bindings, store)?;
            self.cache.insert(bindings.clone(), c);
        }
        self.cache
            .get(bindings)
            .ok_or_else(|| ExecError::Unsupported("the program was not compiled".into()))
    }

    fn build(&self, bindings: &Bindings, store: &Store) -> Result<Compiled, ExecError> {
        let t0 = std::time::Instant::now();
        let g = &self.graph;
        let roots = Roots::of(g, &self.fetch);
        let unsupported = |e: String| ExecError::Unsupported(format!("jit: {e}"));
        let low = lower(g, bindings, store, &roots.nodes()).map_err(unsupported)?;
        let p = plan(g, &low, &roots, self.jit.threads).map_err(unsupported)?;
        if let Some(max) = self.jit.max_arena_bytes
            && p.arena_bytes > max
        {
            return Err(ExecError::Memory(format!(
                "graph @{} needs a {} arena for batch {:?}, over the limit of {}",
                g.name,
                bytes(p.arena_bytes),
                bindings,
                bytes(max)
            )));
        }
        let plan_seconds = t0.elapsed().as_secs_f64();
        let p = Box::new(p);
        let code = compile(&p, self.jit.profile).map_err(unsupported)?;
        let words = p.arena_bytes.div_ceil(8) + 8;
        let mut arena = Vec::new();
        arena.try_reserve_exact(words).map_err(|_| {
            ExecError::Memory(format!("cannot allocate a {} arena", bytes(p.arena_bytes)))
        })?;
        arena.resize(words, 0u64);
        let profile = self
            .jit
            .profile
            .then(|| Box::new(Profile::new(p.steps.len())));
        let io_dtypes =
            p.io.iter()
                .map(|e| match e {
                    Io::Input(name) | Io::Stored(name) => {
                        g.find(name).and_then(|id| DType::of(&g.ty(id).elem).ok())
                    }
                    Io::Const(_) => None,
                })
                .collect();
        Ok(Compiled {
            io_dtypes,
            plan: p,
            code,
            arena,
            baked: low.baked.into_iter().map(|(n, t)| (n, t, 0)).collect(),
            plan_seconds,
            profile,
        })
    }
}

/// The element type of io entry `name`: the one found when the program was built, else
/// (a name the graph lacks, an unsupported type) the error that lookup gives.
fn dtype_of(g: &Graph, name: &str, found: Option<DType>) -> Result<DType, ExecError> {
    if let Some(dt) = found {
        return Ok(dt);
    }
    let id = g
        .find(name)
        .ok_or_else(|| ExecError::Input(format!("%{name} is not in the graph")))?;
    DType::of(&g.ty(id).elem).map_err(ExecError::Unsupported)
}

/// `n` bytes for messages.
pub(crate) fn bytes(n: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Element type of the data a value of `dt` must be handed to the code in.
fn want(dt: DType) -> &'static str {
    dt.name()
}

/// Copies a value out of the buffer at `base` laid out as `place` into a row-major tensor.
///
/// # Safety
/// `base` must hold every element `place` addresses.
unsafe fn copy_out(base: *const u8, place: &Place) -> Tensor {
    let n: usize = place.dims.iter().product();
    if crate::lgraph::same_layout(
        &place.strides,
        &crate::lgraph::row_major(&place.dims),
        &place.dims,
    ) {
        // row-major: one copy
        let mut data = place.dtype.zeros(n);
        // SAFETY: as the caller promised; `data` holds n elements of the type.
        unsafe {
            std::ptr::copy_nonoverlapping(base, data_ptr_mut(&mut data), n * place.dtype.size())
        };
        return Tensor {
            shape: place.dims.clone(),
            data,
        };
    }
    let rank = place.dims.len();
    let mut offsets = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        offsets.push(
            idx.iter()
                .zip(&place.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>(),
        );
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < place.dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    macro_rules! read {
        ($t:ty, $v:ident) => {
            // SAFETY: as the caller promised.
            Data::$v(
                offsets
                    .iter()
                    .map(|&o| unsafe { *(base as *const $t).add(o) })
                    .collect(),
            )
        };
    }
    let data = match place.dtype {
        DType::F32 => read!(f32, F32),
        DType::I32 => read!(i32, I32),
        DType::I64 => read!(i64, I64),
        DType::I16 => read!(i16, I16),
        DType::I8 => read!(i8, I8),
        DType::U8 => read!(u8, U8),
        DType::F64 => read!(f64, F64),
        DType::Bool => Data::Bool(
            offsets
                .iter()
                // SAFETY: as the caller promised.
                .map(|&o| unsafe { *base.add(o) } != 0)
                .collect(),
        ),
    };
    Tensor {
        shape: place.dims.clone(),
        data,
    }
}

impl Program for JitProgram {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn fetch(&self) -> &[NodeId] {
        &self.fetch
    }

    fn warm(&mut self, store: &Store, symbols: &Bindings) -> Result<(), ExecError> {
        self.compiled(symbols, store).map(|_| ())
    }

    fn run(&mut self, store: &mut Store, inputs: &Inputs) -> Result<RunOutput, ExecError> {
        let mut checks = std::mem::take(&mut self.checks);
        let r = self.run_checked(&mut checks, store, inputs);
        self.checks = checks;
        r
    }

    fn stats(&self) -> Vec<ProgramStats> {
        let mut v: Vec<ProgramStats> = self
            .cache
            .iter()
            .map(|(b, c)| ProgramStats {
                bindings: b.clone(),
                plan_seconds: c.plan_seconds,
                compile_seconds: c.compile_seconds(),
                arena_bytes: c.plan.arena_bytes,
                intermediate_bytes: c.plan.total_intermediate_bytes(),
                plan: c.plan.print(),
                profile: c.profile(),
                profiled_runs: c.profile.as_ref().map_or(0, |p| p.runs),
            })
            .collect();
        v.sort_by(|a, b| a.bindings.cmp(&b.bindings));
        v
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "jit ({} thread(s)), graph @{}, {} compiled batch size(s)",
            self.jit.threads,
            self.graph.name,
            self.cache.len()
        );
        for c in self.cache.values() {
            s.push_str(&format!(
                "\n  {} steps, {} loops, arena {}, planned in {:.1} ms, compiled in {:.1} ms",
                c.plan.steps.len(),
                c.plan.loops.len(),
                bytes(c.plan.arena_bytes),
                c.plan_seconds * 1e3,
                c.compile_seconds() * 1e3
            ));
        }
        s
    }
}

impl JitProgram {
    /// [`Program::run`] with the run checks of `checks` (kept between runs).
    fn run_checked(
        &mut self,
        checks: &mut RunChecks,
        store: &mut Store,
        inputs: &Inputs,
    ) -> Result<RunOutput, ExecError> {
        checks.bind(&self.graph, inputs)?;
        checks.check_store(&self.graph, store, inputs)?;
        let bindings = &checks.last_bind.as_ref().expect("bound above").1;
        self.compiled(bindings, store)?;
        let threads = self.jit.threads;
        let graph = &self.graph;
        let c = self
            .cache
            .get_mut(bindings)
            .ok_or_else(|| ExecError::Unsupported("the program was not compiled".into()))?;
        let plan = &c.plan;

        // the io table
        let mut converted: Vec<Tensor> = Vec::new();
        let mut io: Vec<*mut u8> = Vec::with_capacity(plan.io.len());
        for (entry, dt) in plan.io.iter().zip(&c.io_dtypes) {
            let p = match entry {
                Io::Input(name) => {
                    let t = inputs
                        .get(name)
                        .ok_or_else(|| ExecError::Input(format!("missing input %{name}")))?;
                    let dt = dtype_of(graph, name, *dt)?;
                    if dt.matches(&t.data) {
                        data_ptr(&t.data).0 as *mut u8
                    } else if let (DType::F32, Data::F64(v)) = (dt, &t.data) {
                        converted.push(Tensor {
                            shape: t.shape.clone(),
                            data: Data::F32(v.iter().map(|&x| x as f32).collect()),
                        });
                        data_ptr(&converted[converted.len() - 1].data).0 as *mut u8
                    } else {
                        return Err(ExecError::Input(format!(
                            "input %{name}: expected {} data, got {}",
                            want(dt),
                            t.data.dtype()
                        )));
                    }
                }
                Io::Stored(name) => {
                    let dt = dtype_of(graph, name, *dt)?;
                    let missing = || ExecError::Store(format!("%{name} is not in the store"));
                    // only a value the code writes is taken mutably (which moves its store
                    // version); the others are read through a shared borrow, so that
                    // weights baked into the code are not compared again next run
                    let read_only = !plan.in_place.iter().any(|n| n == name);
                    if read_only {
                        let t = store.get(name).ok_or_else(missing)?;
                        if dt.matches(&t.data) {
                            io.push(data_ptr(&t.data).0 as *mut u8);
                            continue;
                        }
                    }
                    let t = store.get_mut(name).ok_or_else(missing)?;
                    if !dt.matches(&t.data) {
                        if let (DType::F32, Data::F64(v)) = (dt, &t.data) {
                            // the JIT runs f32: the store keeps the value in its type
                            t.data = Data::F32(v.iter().map(|&x| x as f32).collect());
                        } else {
                            return Err(ExecError::Store(format!(
                                "stored value %{name}: expected {} data, got {}",
                                want(dt),
                                t.data.dtype()
                            )));
                        }
                    }
                    data_ptr_mut(&mut t.data)
                }
                Io::Const(d) => data_ptr(d).0 as *mut u8,
            };
            io.push(p);
        }
        let arena = c.arena.as_mut_ptr() as *mut u8;
        // 64-byte alignment of the arena base
        let arena = arena.wrapping_add(arena.align_offset(64));
        let prof = match c.profile.as_deref_mut() {
            Some(p) => {
                p.last = std::time::Instant::now();
                p.runs += 1;
                p as *mut Profile
            }
            None => std::ptr::null_mut(),
        };
        let ctx = RunCtx {
            arena,
            io: io.as_ptr(),
            threads,
            prof,
        };
        // SAFETY: the io table holds a valid pointer for every entry (inputs and store
        // tensors checked against the graph above, constants owned by the plan), the arena
        // is as large as the plan, and the code was compiled for this plan.
        let code = unsafe { (c.code.entry)(&ctx) };
        if code != 0 {
            let step = ((code >> 32) - 1) as usize;
            let st = (code & 0xffff_ffff) as i32;
            let label = plan.step_labels.get(step).cloned().unwrap_or_default();
            if st == 1 {
                let v = plan
                    .loss
                    .as_ref()
                    // SAFETY: the loss place lies in the arena or the io table.
                    .map(|p| unsafe { *(ctx.ptr(p.loc) as *const f32) } as f64)
                    .unwrap_or(f64::NAN);
                return Err(ExecError::Loss {
                    node: label,
                    value: v,
                });
            }
            if let Some(crate::plan::Step::CheckScale { loc, n, op }) = plan.steps.get(step) {
                // the interpreter's message, with the first bad scale
                // SAFETY: the plan placed n f32 scales at loc.
                let s = unsafe { std::slice::from_raw_parts(ctx.ptr(*loc) as *const f32, *n) };
                let (c, v) = s
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !(v.is_finite() && **v > 0.0))
                    .map_or((0, f32::NAN), |(c, v)| (c, *v));
                let which = if *n > 1 {
                    format!("the scale of channel {c}")
                } else {
                    "the scale".to_string()
                };
                return Err(ExecError::Node {
                    node: label,
                    message: format!(
                        "'{op}' {which} is {}: scales must be positive and finite",
                        v as f64
                    ),
                });
            }
            // the message starts with the op's mnemonic, as `ExecError::Node` promises:
            // kernels that fail are calls, whose description starts with the op
            let op = match plan.steps.get(step) {
                Some(crate::plan::Step::Call(b)) => b
                    .kernel
                    .describe()
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ => "kernel".to_string(),
            };
            return Err(ExecError::Node {
                node: label,
                message: format!("{op}: {}", status::message(st)),
            });
        }
        // SAFETY (all copies below): every place lies in the arena or the io table.
        let read = |p: &Place| unsafe { copy_out(ctx.ptr(p.loc), p) };
        let mut outputs = BTreeMap::new();
        for (name, p) in &plan.outputs {
            outputs.insert(name.clone(), read(p));
        }
        let mut fetched = HashMap::new();
        for (id, p) in &plan.fetch {
            fetched.insert(*id, read(p));
        }
        let loss = plan.loss.as_ref().map(|p| {
            let t = read(p);
            t.data.get_f64(0)
        });
        let copies: Vec<(String, Tensor)> = plan
            .copy_back
            .iter()
            .map(|(name, p)| (name.clone(), read(p)))
            .collect();
        for (name, t) in copies {
            store.insert(&name, t);
        }
        Ok(RunOutput {
            outputs,
            loss,
            fetched,
        })
    }
}
