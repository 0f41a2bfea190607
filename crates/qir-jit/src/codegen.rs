//! Code generation with Cranelift: one JIT module per compiled program, holding one
//! function per loop nest and the entry function that runs the plan's steps in order —
//! loop calls (split over the thread pool when the plan says so), kernel calls (imported
//! symbols, each given the address of its call description), accumulator set-up and
//! combination, and the loss check.
//!
//! A loop function walks its dimensions with one pointer per memory operand, bumped by
//! the operand's stride (Cranelift does not hoist address arithmetic); every body entry
//! is computed at the depth of the innermost dimension it depends on (loop-invariant code
//! is emitted outside the loops that do not change it); the innermost dimension runs four
//! lanes at a time with 128-bit vectors when every operand allows it, then a scalar
//! remainder. Reductions whose accumulator does not move along the innermost dimension
//! accumulate in registers and are combined with memory once per inner loop.
//!
//! Debugging: with `QATC_JIT_DISASM=TEXT` in the environment, the IR and machine code of
//! every loop whose label contains TEXT are printed to standard error.
//!
//! Invariants: every address a loop forms lies inside the buffer its operand names (the
//! planner sized them); the entry function returns 0, or `(step + 1) << 32 | status` for
//! the first step that failed (status 1: a non-finite loss; others: a kernel's status).

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{
    AbiParam, ConstantData, Endianness, FuncRef, InstBuilder, MemFlagsData, Signature, Type,
    UserFuncName, Value, types,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use crate::dtype::DType;
use crate::lgraph::{Ex, Fun, RedOp, Ty};
use crate::plan::{LoopSpec, Plan, Step};
use crate::rt::Loc;

/// The entry function of a compiled program.
pub type EntryFn = unsafe extern "C" fn(ctx: *const crate::rt::RunCtx) -> i64;

/// A compiled program: the module (which owns the code) and its entry point.
pub struct Code {
    /// Kept alive as long as the code runs.
    module: Option<JITModule>,
    /// The entry function.
    pub entry: EntryFn,
    /// Wall-clock seconds spent in Cranelift.
    pub compile_seconds: f64,
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the code is not running (the program owning it is being dropped).
            unsafe { m.free_memory() };
        }
    }
}

// SAFETY: the module's code and data are immutable once finalized; the entry function is
// called from one thread at a time (a program is used through `&mut`).
unsafe impl Send for Code {}

/// The host ISA (register allocation and instruction selection; no e-graph mid-end).
fn isa() -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift setting {k}: {e}"))
    };
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    // The code generator hoists loop-invariant values itself (each body entry is emitted at
    // the depth of the innermost dimension it depends on); Cranelift's e-graph mid-end
    // would place those pure values back at their uses inside the inner loops (its
    // elaboration does not hoist them), so it is off.
    set(&mut flags, "opt_level", "none")?;
    // Cranelift's IR verifier runs in debug builds (every test compiles its programs
    // through it); a release build trusts the lowering, as rustc's does (the verifier was
    // a fifth of the MNIST MLP's compile time).
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    let builder = cranelift_native::builder().map_err(|e| format!("unsupported host: {e}"))?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("cranelift: {e}"))
}

/// The imported functions of a module.
struct Imports {
    ids: HashMap<&'static str, FuncId>,
}

fn sig(module: &JITModule, params: &[Type], ret: Option<Type>) -> Signature {
    let mut s = module.make_signature();
    for &p in params {
        s.params.push(AbiParam::new(p));
    }
    if let Some(r) = ret {
        s.returns.push(AbiParam::new(r));
    }
    s
}

impl Imports {
    fn declare(module: &mut JITModule, ptr: Type) -> Result<Imports, String> {
        let mut ids = HashMap::new();
        let mut add = |m: &mut JITModule, name: &'static str, s: Signature| -> Result<(), String> {
            let id = m
                .declare_function(name, Linkage::Import, &s)
                .map_err(|e| format!("declaring {name}: {e}"))?;
            ids.insert(name, id);
            Ok(())
        };
        for (name, _) in crate::kernels::symbols() {
            let s = sig(module, &[ptr, ptr], Some(types::I32));
            add(module, name, s)?;
        }
        let i64t = types::I64;
        let f32t = types::F32;
        let f64t = types::F64;
        let list: Vec<(&'static str, Vec<Type>, Option<Type>)> = vec![
            ("qatc_parallel_for", vec![ptr, ptr, i64t, i64t], None),
            ("qatc_prof_step", vec![ptr, i64t], None),
            ("qatc_fill_f32", vec![ptr, i64t, f32t], None),
            ("qatc_zero_f64", vec![ptr, i64t], None),
            ("qatc_finish_sum", vec![ptr, i64t, i64t, f64t, ptr], None),
            (
                "qatc_finish_extreme",
                vec![ptr, i64t, i64t, i64t, ptr],
                None,
            ),
            ("qatc_expf", vec![f32t], Some(f32t)),
            ("qatc_lnf", vec![f32t], Some(f32t)),
            ("qatc_tanhf", vec![f32t], Some(f32t)),
            ("qatc_erff", vec![f32t], Some(f32t)),
            ("qatc_pow2_ceil", vec![f32t], Some(f32t)),
            ("qatc_fmaf", vec![f32t, f32t, f32t], Some(f32t)),
            ("qatc_adam_correction", vec![f64t, f32t], Some(f32t)),
            ("qatc_check_scales", vec![ptr, i64t], Some(types::I32)),
        ];
        for (name, p, r) in list {
            let s = sig(module, &p, r);
            add(module, name, s)?;
        }
        Ok(Imports { ids })
    }

    fn get(
        &self,
        module: &mut JITModule,
        f: &mut cranelift_codegen::ir::Function,
        name: &str,
    ) -> FuncRef {
        let id = self.ids[name];
        module.declare_func_in_func(id, f)
    }
}

/// Compiles `plan` into native code; with `profile`, the entry function marks the end of
/// every step ([`crate::rt::qatc_prof_step`]).
pub fn compile(plan: &Plan, profile: bool) -> Result<Code, String> {
    let start = std::time::Instant::now();
    let isa = isa()?;
    let has_fma = isa
        .isa_flags()
        .iter()
        .any(|v| v.name == "has_fma" && v.as_bool() == Some(true));
    let ptr = isa.pointer_type();
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    for (name, addr) in crate::kernels::symbols()
        .into_iter()
        .chain(crate::rt::symbols())
    {
        jb.symbol(name, addr);
    }
    let mut module = JITModule::new(jb);
    let imports = Imports::declare(&mut module, ptr)?;
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();

    // loop functions
    let loop_sig = sig(&module, &[ptr, types::I64, types::I64, types::I64], None);
    let mut loop_ids = Vec::with_capacity(plan.loops.len());
    for (i, lp) in plan.loops.iter().enumerate() {
        let id = module
            .declare_function(&format!("loop{i}"), Linkage::Local, &loop_sig)
            .map_err(|e| e.to_string())?;
        ctx.func.signature = loop_sig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let disasm = std::env::var("QATC_JIT_DISASM").is_ok_and(|v| lp.label.contains(&v));
        ctx.set_disasm(disasm);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            LoopGen::new(&mut b, &mut module, &imports, lp, ptr, has_fma).emit()?;
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("loop {i} ({}): {e:?}", lp.label))?;
        if disasm
            && let Some(code) = ctx.compiled_code()
            && let Some(text) = &code.vcode
        {
            eprintln!("; loop {i}: {}\n{}\n{text}", lp.label, ctx.func.display());
        }
        module.clear_context(&mut ctx);
        loop_ids.push(id);
    }

    // the entry function
    let entry_sig = sig(&module, &[ptr], Some(types::I64));
    let entry_id = module
        .declare_function("entry", Linkage::Local, &entry_sig)
        .map_err(|e| e.to_string())?;
    ctx.func.signature = entry_sig;
    ctx.func.name = UserFuncName::user(0, entry_id.as_u32());
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        emit_entry(&mut b, &mut module, &imports, plan, &loop_ids, ptr, profile)?;
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module
        .define_function(entry_id, &mut ctx)
        .map_err(|e| format!("entry: {e:?}"))?;
    module.clear_context(&mut ctx);
    module
        .finalize_definitions()
        .map_err(|e| format!("linking: {e}"))?;
    let addr = module.get_finalized_function(entry_id);
    // SAFETY: the entry function was compiled with exactly this signature.
    let entry: EntryFn = unsafe { std::mem::transmute::<*const u8, EntryFn>(addr) };
    Ok(Code {
        module: Some(module),
        entry,
        compile_seconds: start.elapsed().as_secs_f64(),
    })
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The address of `loc` from the run context.
fn addr(b: &mut FunctionBuilder, ctx: Value, loc: Loc, ptr: Type) -> Value {
    match loc {
        Loc::Arena(off) => {
            let arena = b.ins().load(ptr, flags(), ctx, 0);
            b.ins().iadd_imm_s(arena, off as i64)
        }
        Loc::Io(i) => {
            let io = b.ins().load(ptr, flags(), ctx, 8);
            b.ins().load(ptr, flags(), io, (i * 8) as i32)
        }
    }
}

fn emit_entry(
    b: &mut FunctionBuilder,
    module: &mut JITModule,
    im: &Imports,
    plan: &Plan,
    loop_ids: &[FuncId],
    ptr: Type,
    profile: bool,
) -> Result<(), String> {
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    let ctx = b.block_params(block)[0];
    let fail = b.create_block();
    b.append_block_param(fail, types::I64);
    for (i, step) in plan.steps.iter().enumerate() {
        if profile && i > 0 {
            let f = im.get(module, b.func, "qatc_prof_step");
            let k = b.ins().iconst(types::I64, i as i64 - 1);
            b.ins().call(f, &[ctx, k]);
        }
        let code_base = ((i as i64) + 1) << 32;
        match step {
            Step::Loop(l) => {
                let lp = &plan.loops[*l];
                let f = module.declare_func_in_func(loop_ids[*l], b.func);
                let n = b.ins().iconst(types::I64, lp.dims[0] as i64);
                let zero = b.ins().iconst(types::I64, 0);
                if lp.parts > 1 {
                    let pf = im.get(module, b.func, "qatc_parallel_for");
                    let fa = b.ins().func_addr(ptr, f);
                    let parts = b.ins().iconst(types::I64, lp.parts as i64);
                    b.ins().call(pf, &[ctx, fa, n, parts]);
                } else {
                    b.ins().call(f, &[ctx, zero, n, zero]);
                }
            }
            Step::Call(bound) => {
                let f = im.get(module, b.func, bound.kernel.symbol());
                let desc = b.ins().iconst(ptr, &**bound as *const _ as i64);
                let call = b.ins().call(f, &[ctx, desc]);
                let status = b.inst_results(call)[0];
                let s64 = b.ins().uextend(types::I64, status);
                let code = b.ins().bor_imm_s(s64, code_base);
                let cont = b.create_block();
                b.ins().brif(status, fail, &[code.into()], cont, &[]);
                b.switch_to_block(cont);
            }
            Step::Fill { loc, n, value } => {
                let f = im.get(module, b.func, "qatc_fill_f32");
                let p = addr(b, ctx, *loc, ptr);
                let n = b.ins().iconst(types::I64, *n as i64);
                let v = b.ins().f32const(*value);
                b.ins().call(f, &[p, n, v]);
            }
            Step::Zero { loc, n } => {
                let f = im.get(module, b.func, "qatc_zero_f64");
                let p = addr(b, ctx, *loc, ptr);
                let n = b.ins().iconst(types::I64, *n as i64);
                b.ins().call(f, &[p, n]);
            }
            Step::FinishSum {
                acc,
                parts,
                n,
                div,
                out,
            } => {
                let f = im.get(module, b.func, "qatc_finish_sum");
                let a = addr(b, ctx, *acc, ptr);
                let o = addr(b, ctx, *out, ptr);
                let p = b.ins().iconst(types::I64, *parts as i64);
                let n = b.ins().iconst(types::I64, *n as i64);
                let d = b.ins().f64const(*div);
                b.ins().call(f, &[a, p, n, d, o]);
            }
            Step::FinishExtreme {
                acc,
                parts,
                n,
                is_max,
                out,
            } => {
                let f = im.get(module, b.func, "qatc_finish_extreme");
                let a = addr(b, ctx, *acc, ptr);
                let o = addr(b, ctx, *out, ptr);
                let p = b.ins().iconst(types::I64, *parts as i64);
                let n = b.ins().iconst(types::I64, *n as i64);
                let m = b.ins().iconst(types::I64, *is_max as i64);
                b.ins().call(f, &[a, p, n, m, o]);
            }
            Step::CheckScale { loc, n, .. } => {
                let f = im.get(module, b.func, "qatc_check_scales");
                let p = addr(b, ctx, *loc, ptr);
                let n = b.ins().iconst(types::I64, *n as i64);
                let call = b.ins().call(f, &[p, n]);
                let status = b.inst_results(call)[0];
                let s64 = b.ins().uextend(types::I64, status);
                let code = b.ins().bor_imm_s(s64, code_base);
                let cont = b.create_block();
                b.ins().brif(status, fail, &[code.into()], cont, &[]);
                b.switch_to_block(cont);
            }
            Step::CheckLoss(loc) => {
                let p = addr(b, ctx, *loc, ptr);
                let v = b.ins().load(types::F32, flags(), p, 0);
                // finite exactly when v - v == 0 (inf - inf and NaN give NaN)
                let d = b.ins().fsub(v, v);
                let z = b.ins().f32const(0.0);
                let ok = b.ins().fcmp(FloatCC::Equal, d, z);
                let code = b.ins().iconst(types::I64, code_base | 1);
                let cont = b.create_block();
                b.ins().brif(ok, cont, &[], fail, &[code.into()]);
                b.switch_to_block(cont);
            }
        }
    }
    if profile && !plan.steps.is_empty() {
        let f = im.get(module, b.func, "qatc_prof_step");
        let k = b.ins().iconst(types::I64, plan.steps.len() as i64 - 1);
        b.ins().call(f, &[ctx, k]);
    }
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().return_(&[zero]);
    b.switch_to_block(fail);
    let code = b.block_params(fail)[0];
    b.ins().return_(&[code]);
    Ok(())
}

/// The Cranelift type of a body value at `w` lanes.
fn cl_ty(t: Ty, w: usize) -> Type {
    match (t, w) {
        (Ty::F, 1) => types::F32,
        (Ty::I, 1) => types::I32,
        (Ty::M, 1) => types::I8,
        (Ty::F, _) => types::F32X4,
        (Ty::I | Ty::M, _) => types::I32X4,
    }
}

/// The register accumulators of a reduction along the innermost dimension: the scalar
/// one, and the vector ones (two f64x2 for sums; for min/max an f32x4 of extremes and an
/// i32x4 mask of the lanes that saw a NaN).
type RegAcc = (Variable, Option<Variable>, Option<Variable>);

struct LoopGen<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    module: &'a mut JITModule,
    im: &'a Imports,
    lp: &'a LoopSpec,
    ptr: Type,
    has_fma: bool,
    /// Depth at which each body entry is computed (0: before every loop).
    level: Vec<usize>,
    /// Scalar values of entries computed so far.
    scalar: HashMap<usize, Value>,
    /// Splats of lower-level entries for the vector body.
    splat: HashMap<usize, Value>,
    /// pointer variables: ptrs[d][op] walks operand `op` at depth `d`.
    ptrs: Vec<Vec<Variable>>,
    /// For each accumulator: register accumulation along the innermost dimension.
    reg_acc: Vec<bool>,
}

impl<'a, 'b> LoopGen<'a, 'b> {
    fn new(
        b: &'a mut FunctionBuilder<'b>,
        module: &'a mut JITModule,
        im: &'a Imports,
        lp: &'a LoopSpec,
        ptr: Type,
        has_fma: bool,
    ) -> LoopGen<'a, 'b> {
        let r = lp.dims.len();
        // level of each entry: loads depend on the deepest dimension they move along
        let mut level = vec![0usize; lp.body.len()];
        for (i, e) in lp.body.iter().enumerate() {
            level[i] = match e {
                Ex::Arg(k) => lp.ops[*k]
                    .strides
                    .iter()
                    .rposition(|&s| s != 0)
                    .map_or(0, |d| d + 1),
                other => other
                    .operands()
                    .iter()
                    .map(|&o| level[o])
                    .max()
                    .unwrap_or(0),
            };
        }
        let inner = r - 1;
        let reg_acc = lp
            .accs
            .iter()
            .map(|a| lp.ops[a.op].strides[inner] == 0)
            .collect();
        LoopGen {
            b,
            module,
            im,
            lp,
            ptr,
            has_fma,
            level,
            scalar: HashMap::new(),
            splat: HashMap::new(),
            ptrs: Vec::new(),
            reg_acc,
        }
    }

    fn call(&mut self, name: &str, args: &[Value]) -> Value {
        let f = self.im.get(self.module, self.b.func, name);
        let c = self.b.ins().call(f, args);
        self.b.inst_results(c)[0]
    }

    fn emit(mut self) -> Result<(), String> {
        let lp = self.lp;
        let r = lp.dims.len();
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (ctx, start, end, part) = (params[0], params[1], params[2], params[3]);

        // base pointers, offset to the first outer iteration and to the part
        let mut base = Vec::with_capacity(lp.ops.len());
        for op in &lp.ops {
            let mut p = addr(self.b, ctx, op.loc, self.ptr);
            if op.part_bytes > 0 {
                let off = self.b.ins().imul_imm_s(part, op.part_bytes as i64);
                p = self.b.ins().iadd(p, off);
            }
            let step0 = op.strides[0] * op.dtype.size() as isize;
            if step0 != 0 {
                let off = self.b.ins().imul_imm_s(start, step0 as i64);
                p = self.b.ins().iadd(p, off);
            }
            base.push(p);
        }
        for _ in 0..r {
            let vars: Vec<Variable> = lp
                .ops
                .iter()
                .map(|_| self.b.declare_var(self.ptr))
                .collect();
            self.ptrs.push(vars);
        }
        // entries of level 0
        self.emit_level(0, &base)?;
        let count0 = self.b.ins().isub(end, start);
        self.emit_dim(0, count0, &base)?;
        self.b.ins().return_(&[]);
        Ok(())
    }

    /// Emits the scalar entries of exactly `level`, reading loads through `ptrs`.
    fn emit_level(&mut self, level: usize, ptrs: &[Value]) -> Result<(), String> {
        let lp = self.lp;
        for i in 0..lp.body.len() {
            if self.level[i] == level && !self.scalar.contains_key(&i) {
                let v = self.emit_entry(i, 1, ptrs, false)?;
                self.scalar.insert(i, v);
            }
        }
        Ok(())
    }

    /// The loop over dimension `d` with `count` iterations, operands starting at `start`.
    fn emit_dim(&mut self, d: usize, count: Value, start: &[Value]) -> Result<(), String> {
        let lp = self.lp;
        let r = lp.dims.len();
        if d == r - 1 {
            return self.emit_inner(count, start);
        }
        let n_ops = lp.ops.len();
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(iv, zero);
        for (k, &p) in start.iter().enumerate() {
            self.b.def_var(self.ptrs[d][k], p);
        }
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(header);
        let i = self.b.use_var(iv);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, count);
        self.b.ins().brif(go, body, &[], exit, &[]);

        self.b.switch_to_block(body);
        let cur: Vec<Value> = (0..n_ops)
            .map(|k| self.b.use_var(self.ptrs[d][k]))
            .collect();
        // entries varying with this dimension but no deeper one
        let saved: Vec<usize> = self.scalar.keys().copied().collect();
        self.emit_level(d + 1, &cur)?;
        let inner_count = self.b.ins().iconst(types::I64, lp.dims[d + 1] as i64);
        self.emit_dim(d + 1, inner_count, &cur)?;
        // next iteration
        for k in 0..n_ops {
            let step = lp.ops[k].strides[d] * lp.ops[k].dtype.size() as isize;
            let p = self.b.use_var(self.ptrs[d][k]);
            let p = if step != 0 {
                self.b.ins().iadd_imm_s(p, step as i64)
            } else {
                p
            };
            self.b.def_var(self.ptrs[d][k], p);
        }
        let i = self.b.use_var(iv);
        let i1 = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(iv, i1);
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(exit);
        // values computed inside this loop are not available after it
        self.scalar.retain(|k, _| saved.contains(k));
        self.splat.clear();
        Ok(())
    }

    /// The innermost loop: vector iterations, then scalar ones.
    fn emit_inner(&mut self, count: Value, start: &[Value]) -> Result<(), String> {
        let lp = self.lp;
        let inner = lp.dims.len() - 1;
        let n_ops = lp.ops.len();
        let d = inner;
        // accumulators kept in registers over the inner loop
        let mut acc_vars: Vec<Option<RegAcc>> = Vec::new();
        for (k, a) in lp.accs.iter().enumerate() {
            if !self.reg_acc[k] {
                acc_vars.push(None);
                continue;
            }
            let sum = a.red == RedOp::Sum;
            let sv = self
                .b
                .declare_var(if sum { types::F64 } else { types::F32 });
            let init = self.identity_scalar(a.red);
            self.b.def_var(sv, init);
            let (v1, v2) = if lp.vector {
                if sum {
                    let lo = self.b.declare_var(types::F64X2);
                    let hi = self.b.declare_var(types::F64X2);
                    let z = self.b.ins().f64const(0.0);
                    let zs = self.b.ins().splat(types::F64X2, z);
                    self.b.def_var(lo, zs);
                    self.b.def_var(hi, zs);
                    (Some(lo), Some(hi))
                } else {
                    let v = self.b.declare_var(types::F32X4);
                    let s = self.b.ins().splat(types::F32X4, init);
                    self.b.def_var(v, s);
                    let nan = self.b.declare_var(types::I32X4);
                    let z = self.b.ins().iconst(types::I32, 0);
                    let zs = self.b.ins().splat(types::I32X4, z);
                    self.b.def_var(nan, zs);
                    (Some(v), Some(nan))
                }
            } else {
                (None, None)
            };
            acc_vars.push(Some((sv, v1, v2)));
        }
        // splats of invariant entries used by the vector body
        if lp.vector {
            for i in 0..lp.body.len() {
                if self.level[i] <= inner && self.used_by_inner(i) {
                    let s = *self
                        .scalar
                        .get(&i)
                        .ok_or_else(|| format!("entry {i} not computed"))?;
                    let v = self.splat_of(i, s);
                    self.splat.insert(i, v);
                }
            }
        }
        // operands are addressed from the one induction variable (`start + i * step`), not
        // walked by a pointer each: with a pointer per operand carried around the loop, the
        // register allocator spilled several of them and every iteration reloaded, advanced
        // and stored them back (a memory round trip per pointer per iteration in the Adam
        // updates' loops)
        let iv = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(iv, zero);
        let steps: Vec<i64> = lp
            .ops
            .iter()
            .map(|o| (o.strides[d] * o.dtype.size() as isize) as i64)
            .collect();

        for &w in if lp.vector {
            &[4usize, 1][..]
        } else {
            &[1usize][..]
        } {
            let header = self.b.create_block();
            let body = self.b.create_block();
            let exit = self.b.create_block();
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(header);
            let i = self.b.use_var(iv);
            let next = self.b.ins().iadd_imm_s(i, w as i64);
            let go = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next, count);
            self.b.ins().brif(go, body, &[], exit, &[]);
            self.b.switch_to_block(body);
            let i = self.b.use_var(iv);
            // one offset per distinct step (most operands share the element size)
            let mut offsets: Vec<(i64, Value)> = Vec::new();
            let mut cur: Vec<Value> = Vec::with_capacity(n_ops);
            for k in 0..n_ops {
                let st = steps[k];
                if st == 0 {
                    cur.push(start[k]);
                    continue;
                }
                let off = match offsets.iter().find(|(s, _)| *s == st) {
                    Some(&(_, v)) => v,
                    None => {
                        let v = self.b.ins().imul_imm_s(i, st);
                        offsets.push((st, v));
                        v
                    }
                };
                cur.push(self.b.ins().iadd(start[k], off));
            }
            // the entries of the innermost level
            let mut vals: HashMap<usize, Value> = HashMap::new();
            for e in 0..lp.body.len() {
                if self.level[e] == inner + 1 {
                    let v = self.emit_elem(e, w, &cur, &vals)?;
                    vals.insert(e, v);
                }
            }
            let get = |this: &Self, e: usize| -> Value {
                if let Some(&v) = vals.get(&e) {
                    v
                } else if w > 1 {
                    this.splat[&e]
                } else {
                    this.scalar[&e]
                }
            };
            // stores
            for &(op, e) in &lp.stores {
                let v = get(self, e);
                self.store(op, v, cur[op], w);
            }
            // reductions
            for (k, a) in lp.accs.iter().enumerate() {
                let v = get(self, a.value);
                match acc_vars[k] {
                    Some((sv, v1, v2)) => {
                        if w == 1 {
                            let acc = self.b.use_var(sv);
                            let n = self.combine_scalar(a.red, acc, v);
                            self.b.def_var(sv, n);
                        } else if a.red == RedOp::Sum {
                            let (lo, hi) = self.promote(v);
                            let (lv, hv) = (v1.unwrap_or(sv), v2.unwrap_or(sv));
                            let l = self.b.use_var(lv);
                            let l = self.b.ins().fadd(l, lo);
                            self.b.def_var(lv, l);
                            let h = self.b.use_var(hv);
                            let h = self.b.ins().fadd(h, hi);
                            self.b.def_var(hv, h);
                        } else {
                            // `v < acc ? v : acc` (or `>`), one minps/maxps: the
                            // interpreter's order of ties; NaN lanes are recorded apart
                            // so that the loop-carried chain stays one instruction long
                            let vv = v1.unwrap_or(sv);
                            let acc = self.b.use_var(vv);
                            let lt = if a.red == RedOp::Min {
                                self.b.ins().fcmp(FloatCC::LessThan, v, acc)
                            } else {
                                self.b.ins().fcmp(FloatCC::LessThan, acc, v)
                            };
                            let le = MemFlagsData::new().with_endianness(Endianness::Little);
                            let m = self.b.ins().bitcast(types::F32X4, le, lt);
                            let n = self.b.ins().bitselect(m, v, acc);
                            self.b.def_var(vv, n);
                            if let Some(nv) = v2 {
                                let un = self.b.ins().fcmp(FloatCC::Unordered, v, v);
                                let old = self.b.use_var(nv);
                                let un = self.b.ins().bor(old, un);
                                self.b.def_var(nv, un);
                            }
                        }
                    }
                    None => self.rmw(a.red, a.op, cur[a.op], v, w),
                }
            }
            // advance
            let i1 = self.b.ins().iadd_imm_s(i, w as i64);
            self.b.def_var(iv, i1);
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(exit);
        }
        // combine register accumulators with memory
        for (k, a) in lp.accs.iter().enumerate() {
            let Some((sv, v1, v2)) = acc_vars[k] else {
                continue;
            };
            let mut acc = self.b.use_var(sv);
            if let Some(v1) = v1 {
                let v = self.b.use_var(v1);
                if a.red == RedOp::Sum {
                    let h = self.b.use_var(v2.unwrap_or(v1));
                    let s = self.b.ins().fadd(v, h);
                    let l0 = self.b.ins().extractlane(s, 0);
                    let l1 = self.b.ins().extractlane(s, 1);
                    let t = self.b.ins().fadd(l0, l1);
                    acc = self.b.ins().fadd(t, acc);
                } else {
                    let lanes: Vec<Value> =
                        (0..4u8).map(|l| self.b.ins().extractlane(v, l)).collect();
                    let m01 = self.combine_scalar(a.red, lanes[0], lanes[1]);
                    let m23 = self.combine_scalar(a.red, lanes[2], lanes[3]);
                    let m = self.combine_scalar(a.red, m01, m23);
                    acc = self.combine_scalar(a.red, m, acc);
                    if let Some(nv) = v2 {
                        let mask = self.b.use_var(nv);
                        let any = self.b.ins().vany_true(mask);
                        let nan = self.b.ins().f32const(f32::NAN);
                        acc = self.b.ins().select(any, nan, acc);
                    }
                }
            }
            let p = start[a.op];
            let ty = if a.red == RedOp::Sum {
                types::F64
            } else {
                types::F32
            };
            let old = self.b.ins().load(ty, flags(), p, 0);
            let new = if a.red == RedOp::Sum {
                self.b.ins().fadd(old, acc)
            } else {
                self.combine_scalar(a.red, old, acc)
            };
            self.b.ins().store(flags(), new, p, 0);
        }
        self.splat.clear();
        Ok(())
    }

    /// True if an innermost entry (or a store or reduction of one) reads entry `i`.
    fn used_by_inner(&self, i: usize) -> bool {
        let lp = self.lp;
        let inner = lp.dims.len();
        lp.body
            .iter()
            .enumerate()
            .any(|(e, x)| self.level[e] == inner && x.operands().contains(&i))
            || lp.stores.iter().any(|&(_, e)| e == i)
            || lp.accs.iter().any(|a| a.value == i)
    }

    fn splat_of(&mut self, i: usize, s: Value) -> Value {
        match self.lp.tys[i] {
            Ty::F => self.b.ins().splat(types::F32X4, s),
            Ty::I => self.b.ins().splat(types::I32X4, s),
            Ty::M => {
                let all = self.b.ins().iconst(types::I32, -1);
                let none = self.b.ins().iconst(types::I32, 0);
                let m = self.b.ins().select(s, all, none);
                self.b.ins().splat(types::I32X4, m)
            }
        }
    }

    fn identity_scalar(&mut self, red: RedOp) -> Value {
        match red {
            RedOp::Sum => self.b.ins().f64const(0.0),
            RedOp::Min => self.b.ins().f32const(f32::INFINITY),
            RedOp::Max => self.b.ins().f32const(f32::NEG_INFINITY),
        }
    }

    /// `acc ∘ v` for scalars: f64 sum of an f32 (or f64) value, or NaN-propagating
    /// min/max.
    fn combine_scalar(&mut self, red: RedOp, acc: Value, v: Value) -> Value {
        match red {
            RedOp::Sum => {
                let v = if self.b.func.dfg.value_type(v) == types::F32 {
                    self.b.ins().fpromote(types::F64, v)
                } else {
                    v
                };
                self.b.ins().fadd(acc, v)
            }
            RedOp::Min => self.b.ins().fmin(acc, v),
            RedOp::Max => self.b.ins().fmax(acc, v),
        }
    }

    /// The two f64x2 halves of an f32x4.
    fn promote(&mut self, v: Value) -> (Value, Value) {
        let lo = self.b.ins().fvpromote_low(v);
        let mask: Vec<u8> = (8..16).chain(8..16).collect();
        let imm = self.b.func.dfg.immediates.push(ConstantData::from(mask));
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes = self.b.ins().bitcast(types::I8X16, le, v);
        let high = self.b.ins().shuffle(bytes, bytes, imm);
        let high = self.b.ins().bitcast(types::F32X4, le, high);
        let hi = self.b.ins().fvpromote_low(high);
        (lo, hi)
    }

    /// Read-modify-write of a reduction accumulator in memory.
    fn rmw(&mut self, red: RedOp, _op: usize, p: Value, v: Value, w: usize) {
        if red == RedOp::Sum {
            if w == 1 {
                let old = self.b.ins().load(types::F64, flags(), p, 0);
                let n = self.combine_scalar(red, old, v);
                self.b.ins().store(flags(), n, p, 0);
            } else {
                let (lo, hi) = self.promote(v);
                let a = self.b.ins().load(types::F64X2, flags(), p, 0);
                let a = self.b.ins().fadd(a, lo);
                self.b.ins().store(flags(), a, p, 0);
                let c = self.b.ins().load(types::F64X2, flags(), p, 16);
                let c = self.b.ins().fadd(c, hi);
                self.b.ins().store(flags(), c, p, 16);
            }
        } else {
            let ty = if w == 1 { types::F32 } else { types::F32X4 };
            let old = self.b.ins().load(ty, flags(), p, 0);
            let n = if red == RedOp::Min {
                self.b.ins().fmin(old, v)
            } else {
                self.b.ins().fmax(old, v)
            };
            self.b.ins().store(flags(), n, p, 0);
        }
    }

    fn store(&mut self, op: usize, v: Value, p: Value, w: usize) {
        let dt = self.lp.ops[op].dtype;
        if w > 1 {
            if matches!(dt, DType::I8 | DType::U8) {
                // the low byte of each i32 lane (as istore8 stores it), four bytes at once
                let le = MemFlagsData::new().with_endianness(Endianness::Little);
                let bytes = self.b.ins().bitcast(types::I8X16, le, v);
                let mask: Vec<u8> = [0u8, 4, 8, 12].iter().copied().cycle().take(16).collect();
                let imm = self.b.func.dfg.immediates.push(ConstantData::from(mask));
                let packed = self.b.ins().shuffle(bytes, bytes, imm);
                let words = self.b.ins().bitcast(types::I32X4, le, packed);
                let word = self.b.ins().extractlane(words, 0);
                self.b.ins().store(flags(), word, p, 0);
            } else {
                self.b.ins().store(flags(), v, p, 0);
            }
            return;
        }
        match dt {
            DType::F32 | DType::I32 => {
                self.b.ins().store(flags(), v, p, 0);
            }
            DType::I64 => {
                let x = self.b.ins().sextend(types::I64, v);
                self.b.ins().store(flags(), x, p, 0);
            }
            DType::I16 => {
                self.b.ins().istore16(flags(), v, p, 0);
            }
            DType::I8 | DType::U8 | DType::Bool => {
                self.b.ins().istore8(flags(), v, p, 0);
            }
            DType::F64 => {
                let x = self.b.ins().fpromote(types::F64, v);
                self.b.ins().store(flags(), x, p, 0);
            }
        }
    }

    fn load(&mut self, op: usize, p: Value, w: usize) -> Value {
        let dt = self.lp.ops[op].dtype;
        let fl = flags();
        match (dt, w) {
            (DType::F32, 1) => self.b.ins().load(types::F32, fl, p, 0),
            (DType::F32, _) => self.b.ins().load(types::F32X4, fl, p, 0),
            (DType::I32, 1) => self.b.ins().load(types::I32, fl, p, 0),
            (DType::I32, _) => self.b.ins().load(types::I32X4, fl, p, 0),
            (DType::I64, _) => {
                let x = self.b.ins().load(types::I64, fl, p, 0);
                self.b.ins().ireduce(types::I32, x)
            }
            (DType::I8 | DType::U8, 4) => {
                // four bytes, widened lane by lane (sign-extended for i8)
                let le = MemFlagsData::new().with_endianness(Endianness::Little);
                let word = self.b.ins().load(types::I32, fl, p, 0);
                let v = self.b.ins().scalar_to_vector(types::I32X4, word);
                let bytes = self.b.ins().bitcast(types::I8X16, le, v);
                if dt == DType::I8 {
                    let h = self.b.ins().swiden_low(bytes);
                    self.b.ins().swiden_low(h)
                } else {
                    let h = self.b.ins().uwiden_low(bytes);
                    self.b.ins().uwiden_low(h)
                }
            }
            (DType::I16, _) => self.b.ins().sload16(types::I32, fl, p, 0),
            (DType::I8, _) => self.b.ins().sload8(types::I32, fl, p, 0),
            (DType::U8 | DType::Bool, _) => self.b.ins().uload8(types::I32, fl, p, 0),
            (DType::F64, _) => {
                let x = self.b.ins().load(types::F64, fl, p, 0);
                self.b.ins().fdemote(types::F32, x)
            }
        }
    }

    /// An entry computed below the innermost level (scalar).
    fn emit_entry(
        &mut self,
        i: usize,
        w: usize,
        ptrs: &[Value],
        _vec: bool,
    ) -> Result<Value, String> {
        let vals = HashMap::new();
        self.emit_elem_with(i, w, ptrs, &vals)
    }

    fn emit_elem(
        &mut self,
        i: usize,
        w: usize,
        ptrs: &[Value],
        vals: &HashMap<usize, Value>,
    ) -> Result<Value, String> {
        self.emit_elem_with(i, w, ptrs, vals)
    }

    /// Emits entry `i` at `w` lanes; operands come from `vals` (same level), else the
    /// splats (vector) or scalars of lower levels.
    fn emit_elem_with(
        &mut self,
        i: usize,
        w: usize,
        ptrs: &[Value],
        vals: &HashMap<usize, Value>,
    ) -> Result<Value, String> {
        let lp = self.lp;
        let get = |this: &Self, e: usize| -> Result<Value, String> {
            if let Some(&v) = vals.get(&e) {
                return Ok(v);
            }
            let m = if w > 1 { &this.splat } else { &this.scalar };
            m.get(&e)
                .copied()
                .ok_or_else(|| format!("{}: entry {e} used before it is computed", lp.label))
        };
        let ty = lp.tys[i];
        let e = lp.body[i].clone();
        let v = match e {
            Ex::Arg(k) => self.load(k, ptrs[k], w),
            Ex::F(c) => {
                let s = self.b.ins().f32const(Ieee32::with_float(c));
                if w > 1 {
                    self.b.ins().splat(types::F32X4, s)
                } else {
                    s
                }
            }
            Ex::I(c) => {
                let s = self.b.ins().iconst(types::I32, c as i64);
                if w > 1 {
                    self.b.ins().splat(types::I32X4, s)
                } else {
                    s
                }
            }
            Ex::Neg(a) => {
                let a = get(self, a)?;
                if ty == Ty::F {
                    self.b.ins().fneg(a)
                } else {
                    self.b.ins().ineg(a)
                }
            }
            Ex::Sqrt(a) => {
                let a = get(self, a)?;
                self.b.ins().sqrt(a)
            }
            Ex::Round(a) => {
                let a = get(self, a)?;
                self.b.ins().nearest(a)
            }
            Ex::Trunc(a) => {
                let a = get(self, a)?;
                self.b.ins().trunc(a)
            }
            Ex::RoundAway(a) => {
                // trunc(x) + 1 when x - trunc(x) >= 0.5, - 1 when it is <= -0.5 (the
                // fraction has the sign of x); no fcopysign, which Cranelift's x64
                // backend does not lower on f32x4 vectors
                let x = get(self, a)?;
                let t = self.b.ins().trunc(x);
                let d = self.b.ins().fsub(x, t);
                let half = self.fconst(0.5, w);
                let minus_half = self.fconst(-0.5, w);
                let one = self.fconst(1.0, w);
                let minus_one = self.fconst(-1.0, w);
                let zero = self.fconst(0.0, w);
                let up = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, d, half);
                let down = self.b.ins().fcmp(FloatCC::LessThanOrEqual, d, minus_half);
                let neg = self.select(Ty::F, w, down, minus_one, zero);
                let adj = self.select(Ty::F, w, up, one, neg);
                self.b.ins().fadd(t, adj)
            }
            Ex::Add(a, c) | Ex::Sub(a, c) | Ex::Mul(a, c) | Ex::Div(a, c) => {
                let (x, y) = (get(self, a)?, get(self, c)?);
                let f = ty == Ty::F;
                match (&lp.body[i], f) {
                    (Ex::Add(..), true) => self.b.ins().fadd(x, y),
                    (Ex::Add(..), false) => self.b.ins().iadd(x, y),
                    (Ex::Sub(..), true) => self.b.ins().fsub(x, y),
                    (Ex::Sub(..), false) => self.b.ins().isub(x, y),
                    (Ex::Mul(..), true) => self.b.ins().fmul(x, y),
                    (Ex::Mul(..), false) => self.b.ins().imul(x, y),
                    _ => self.b.ins().fdiv(x, y),
                }
            }
            Ex::Fma(a, c, d) => {
                let (x, y, z) = (get(self, a)?, get(self, c)?, get(self, d)?);
                if self.has_fma {
                    self.b.ins().fma(x, y, z)
                } else {
                    self.lanes3("qatc_fmaf", x, y, z, w)
                }
            }
            Ex::Lt(a, c) | Ex::Le(a, c) | Ex::Gt(a, c) | Ex::Ge(a, c) | Ex::Eq(a, c) => {
                let (x, y) = (get(self, a)?, get(self, c)?);
                let float = lp.tys[a] == Ty::F;
                let (fc, ic) = match &lp.body[i] {
                    Ex::Lt(..) => (FloatCC::LessThan, IntCC::SignedLessThan),
                    Ex::Le(..) => (FloatCC::LessThanOrEqual, IntCC::SignedLessThanOrEqual),
                    Ex::Gt(..) => (FloatCC::GreaterThan, IntCC::SignedGreaterThan),
                    Ex::Ge(..) => (FloatCC::GreaterThanOrEqual, IntCC::SignedGreaterThanOrEqual),
                    _ => (FloatCC::Equal, IntCC::Equal),
                };
                if float {
                    self.b.ins().fcmp(fc, x, y)
                } else {
                    self.b.ins().icmp(ic, x, y)
                }
            }
            Ex::IsNan(a) => {
                let x = get(self, a)?;
                self.b.ins().fcmp(FloatCC::Unordered, x, x)
            }
            Ex::And(a, c) => {
                let (x, y) = (get(self, a)?, get(self, c)?);
                self.b.ins().band(x, y)
            }
            Ex::Or(a, c) => {
                let (x, y) = (get(self, a)?, get(self, c)?);
                self.b.ins().bor(x, y)
            }
            Ex::Not(a) => {
                let x = get(self, a)?;
                self.b.ins().bnot(x)
            }
            Ex::Sel(m, a, c) => {
                let (mv, x, y) = (get(self, m)?, get(self, a)?, get(self, c)?);
                self.select(ty, w, mv, x, y)
            }
            Ex::Call(f, a) => {
                let x = get(self, a)?;
                let name = match f {
                    Fun::Exp => "qatc_expf",
                    Fun::Ln => "qatc_lnf",
                    Fun::Tanh => "qatc_tanhf",
                    Fun::Erf => "qatc_erff",
                    Fun::Pow2Ceil => "qatc_pow2_ceil",
                };
                self.lanes1(name, x, w)
            }
            Ex::AdamCorrection(beta, a) => {
                let x = get(self, a)?;
                let bv = self.b.ins().f64const(beta);
                if w == 1 {
                    self.call("qatc_adam_correction", &[bv, x])
                } else {
                    let mut out = None;
                    for l in 0..4u8 {
                        let xl = self.b.ins().extractlane(x, l);
                        let r = self.call("qatc_adam_correction", &[bv, xl]);
                        out = Some(match out {
                            None => self.b.ins().splat(types::F32X4, r),
                            Some(v) => self.b.ins().insertlane(v, r, l),
                        });
                    }
                    out.ok_or("empty vector")?
                }
            }
            Ex::FToI(a) => {
                let x = get(self, a)?;
                if w > 1 && cfg!(target_arch = "x86_64") {
                    // cvttps2dq: the value is integral and in range (see `Ex::FToI`), so
                    // the saturating form's six extra instructions per vector buy nothing
                    self.b.ins().x86_cvtt2dq(types::I32X4, x)
                } else {
                    self.b
                        .ins()
                        .fcvt_to_sint_sat(if w > 1 { types::I32X4 } else { types::I32 }, x)
                }
            }
            Ex::IToF(a) => {
                let x = get(self, a)?;
                self.b
                    .ins()
                    .fcvt_from_sint(if w > 1 { types::F32X4 } else { types::F32 }, x)
            }
        };
        debug_assert_eq!(
            self.b.func.dfg.value_type(v),
            cl_ty(ty, w),
            "{:?}",
            lp.body[i]
        );
        Ok(v)
    }

    fn fconst(&mut self, c: f32, w: usize) -> Value {
        let s = self.b.ins().f32const(c);
        if w > 1 {
            self.b.ins().splat(types::F32X4, s)
        } else {
            s
        }
    }

    /// `m ? a : b` for values of type `ty`.
    fn select(&mut self, ty: Ty, w: usize, m: Value, a: Value, b: Value) -> Value {
        if w == 1 {
            return self.b.ins().select(m, a, b);
        }
        let m = match ty {
            Ty::F => self.b.ins().bitcast(
                types::F32X4,
                MemFlagsData::new().with_endianness(Endianness::Little),
                m,
            ),
            Ty::I | Ty::M => m,
        };
        self.b.ins().bitselect(m, a, b)
    }

    /// A one-argument f32 function applied per lane.
    fn lanes1(&mut self, name: &str, x: Value, w: usize) -> Value {
        if w == 1 {
            return self.call(name, &[x]);
        }
        let mut out = None;
        for l in 0..4u8 {
            let xl = self.b.ins().extractlane(x, l);
            let r = self.call(name, &[xl]);
            out = Some(match out {
                None => self.b.ins().splat(types::F32X4, r),
                Some(v) => self.b.ins().insertlane(v, r, l),
            });
        }
        out.unwrap_or(x)
    }

    /// A three-argument f32 function applied per lane.
    fn lanes3(&mut self, name: &str, x: Value, y: Value, z: Value, w: usize) -> Value {
        if w == 1 {
            return self.call(name, &[x, y, z]);
        }
        let mut out = None;
        for l in 0..4u8 {
            let xl = self.b.ins().extractlane(x, l);
            let yl = self.b.ins().extractlane(y, l);
            let zl = self.b.ins().extractlane(z, l);
            let r = self.call(name, &[xl, yl, zl]);
            out = Some(match out {
                None => self.b.ins().splat(types::F32X4, r),
                Some(v) => self.b.ins().insertlane(v, r, l),
            });
        }
        out.unwrap_or(x)
    }
}
