//! The JIT's int8 paths against the interpreter, bit for bit: `quantize`, `qlinear` and
//! `qconv2d` with their `requantize` fused into the int8 kernels' epilogue, max pooling on
//! int8, `dequantize` — random weights, zero points, multipliers, both rounding policies
//! and every fused activation, batch sizes that leave edge tiles.

use std::collections::HashMap;
use std::fmt::Write as _;

use qir::{Data, Tensor};
use qir_exec::{Executor, Program, init_store};

/// A tiny deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn f(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

fn list(v: impl IntoIterator<Item = i64>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A quantize -> q-op -> requantize -> dequantize graph; `conv` picks qconv2d (with a max
/// pool on int8 after it, which the JIT fuses into the convolution): strided with
/// padding, or with `wide` at stride 1 (the kernels' wide-row route).
fn graph(rng: &mut Rng, conv: bool, act: &str, rounding: &str, unsigned: bool) -> String {
    graph_with(rng, conv, false, act, rounding, unsigned)
}

fn graph_with(
    rng: &mut Rng,
    conv: bool,
    wide: bool,
    act: &str,
    rounding: &str,
    unsigned: bool,
) -> String {
    let (o, k) = if conv {
        (5usize, 3 * 3 * 3)
    } else {
        (19usize, 37)
    };
    let wdims = if conv {
        "[5, 3, 3, 3]".to_string()
    } else {
        format!("[{o}, {k}]")
    };
    let scales: Vec<String> = (0..o)
        .map(|c| format!("{}", 0.01 + 0.003 * c as f64))
        .collect();
    let w = list((0..o * k).map(|_| rng.int(-127, 127)));
    let b = list((0..o).map(|_| rng.int(-300, 300)));
    let mult = list((0..o).map(|_| rng.int(1 << 30, (1 << 31) - 1)));
    let shift = list((0..o).map(|_| rng.int(4, 9)));
    let (xst, xzp) = if unsigned { ("u8", 120) } else { ("i8", -7) };
    let mut s = String::new();
    let _ = writeln!(s, "graph @q {{");
    if conv {
        let _ = writeln!(s, "  input %x: f32[B, 3, 9, 8]");
    } else {
        let _ = writeln!(s, "  input %x: f32[B, {k}]");
    }
    let _ = writeln!(s, "  const %w.scales: f32[{o}] = [{}]", scales.join(", "));
    let _ = writeln!(
        s,
        "  const %wq: !quant.uniform<i8<-127:127>:f32:0, %w.scales>{wdims} = [{w}]"
    );
    let _ = writeln!(s, "  const %bq: i32[{o}] = [{b}]");
    let _ = writeln!(s);
    let xdims = if conv {
        "[B, 3, 9, 8]".to_string()
    } else {
        format!("[B, {k}]")
    };
    let _ = writeln!(
        s,
        "  %xq = quantize(%x) {{rounding = half_even}} : !quant.uniform<{xst}:f32, 0.0078125:{xzp}>{xdims}"
    );
    let (op, acc_dims, attrs) = if conv && wide {
        (
            "qconv2d",
            "[B, 5, 8, 8]".to_string(),
            " {padding = [1, 1, 0, 1]}",
        )
    } else if conv {
        (
            "qconv2d",
            "[B, 5, 8, 4]".to_string(),
            " {stride = [1, 2], padding = [1, 1, 0, 1]}",
        )
    } else {
        ("qlinear", format!("[B, {o}]"), "")
    };
    let _ = writeln!(s, "  %acc = {op}(%xq, %wq, %bq){attrs} : i32{acc_dims}");
    let act_attr = if act == "none" {
        String::new()
    } else {
        format!(", act = {act}")
    };
    let round_attr = format!(", rounding = {rounding}");
    let _ = writeln!(
        s,
        "  %yq = requantize(%acc) {{multiplier = [{mult}], shift = [{shift}], axis = 1{round_attr}{act_attr}}} : !quant.uniform<i8:f32, 0.05:-9>{acc_dims}"
    );
    if conv {
        let pw = if wide { 4 } else { 2 };
        let _ = writeln!(
            s,
            "  %pq = max_pool2d(%yq) {{kernel = [2, 2]}} : !quant.uniform<i8:f32, 0.05:-9>[B, 5, 4, {pw}]"
        );
        let _ = writeln!(s, "  %y = dequantize(%pq) : f32[B, 5, 4, {pw}]");
    } else {
        let _ = writeln!(s, "  %y = dequantize(%yq) : f32{acc_dims}");
    }
    let _ = writeln!(s, "\n  output y = %y\n}}");
    s
}

#[test]
fn jit_int8_layers_equal_the_interpreter() {
    let mut rng = Rng(7);
    for (conv, wide) in [(false, false), (true, false), (true, true)] {
        for (act, rounding, unsigned) in [
            ("none", "half_away_from_zero", false),
            ("relu", "half_even", true),
            ("relu6", "half_away_from_zero", true),
            ("relu", "half_away_from_zero", false),
        ] {
            let text = graph_with(&mut rng, conv, wide, act, rounding, unsigned);
            let g = qir_reader::parse_and_verify(&text)
                .unwrap_or_else(|d| panic!("{}", qir_reader::render(&d, "int8.qir", &text)));
            let store = init_store(&g, 0).unwrap();
            let mut interp = qir_interp::Interpreter::default().prepare(&g, &[]).unwrap();
            let mut jit = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
            for batch in [1usize, 7, 64] {
                let per: usize = if conv { 3 * 9 * 8 } else { 37 };
                let shape = if conv {
                    vec![batch, 3, 9, 8]
                } else {
                    vec![batch, 37]
                };
                let x: Vec<f32> = (0..batch * per).map(|_| rng.f()).collect();
                let inputs = HashMap::from([("x".to_string(), Tensor::f32(shape, x).unwrap())]);
                let a = interp.run(&mut store.clone(), &inputs).unwrap();
                let b = jit.run(&mut store.clone(), &inputs).unwrap();
                assert_eq!(
                    a.outputs["y"], b.outputs["y"],
                    "conv {conv} (wide {wide}), {act}, {rounding}, u8 {unsigned}, batch {batch}"
                );
            }
            // the fused int8 path is the one compiled, with the pool after a convolution
            let plans: String = jit.stats().iter().map(|s| s.plan.clone()).collect();
            assert!(plans.contains("+ requantize"), "{plans}");
            assert_eq!(conv, plans.contains("+ max pool"), "{plans}");
        }
    }
}

/// Weights the JIT packs into its code are re-read when the store's value changes (the
/// store's version moves), also through `get_mut` and in a clone of the store, and only
/// then: an unchanged store is not recompiled.
#[test]
fn jit_int8_recompiles_when_baked_weights_change() {
    let mut rng = Rng(11);
    let text = graph(&mut rng, false, "none", "half_even", false);
    let g = qir_reader::parse_and_verify(&text).unwrap();
    let mut store = init_store(&g, 0).unwrap();
    let mut interp = qir_interp::Interpreter::default().prepare(&g, &[]).unwrap();
    let mut jit = qir_jit::Jit::default().prepare(&g, &[]).unwrap();
    let x: Vec<f32> = (0..4 * 37).map(|_| rng.f()).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![4, 37], x).unwrap())]);
    let first = jit.run(&mut store, &inputs).unwrap();
    let compiled = |jit: &dyn Program| jit.stats()[0].plan_seconds;
    let t0 = compiled(jit.as_ref());
    assert_eq!(jit.run(&mut store, &inputs).unwrap().outputs, first.outputs);
    assert_eq!(
        compiled(jit.as_ref()),
        t0,
        "an unchanged store is not recompiled"
    );

    // change the weights in place: the JIT follows, and agrees with the interpreter
    if let Data::I8(w) = &mut store.get_mut("wq").unwrap().data {
        w.iter_mut().for_each(|v| *v = -(*v).max(-127));
    } else {
        panic!("wq is stored as i8");
    }
    let a = interp.run(&mut store.clone(), &inputs).unwrap();
    let b = jit.run(&mut store, &inputs).unwrap();
    assert_eq!(a.outputs["y"], b.outputs["y"]);
    assert_ne!(b.outputs["y"], first.outputs["y"]);

    // a clone with other weights is a store of its own
    let mut other = store.clone();
    other.insert("wq", init_store(&g, 0).unwrap().get("wq").unwrap().clone());
    assert_eq!(jit.run(&mut other, &inputs).unwrap().outputs, first.outputs);
    assert_eq!(jit.run(&mut store, &inputs).unwrap().outputs, b.outputs);
}
