//! Fuzz target `hostile`: the inputs that used to bring qatc down, generated from the
//! fuzzer's bytes — names up to 200,000 characters (defined and misspelt, for the
//! did-you-mean search) and shapes with dimensions up to 2^40. Reading must give a graph
//! or diagnostics quickly; materializing the store must give a graph's values or an
//! `ExecError::Memory` under a 64 MB limit, never an allocation failure.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0) as usize;
    // name lengths: up to 200,000 characters each
    let n1 = (byte(0) << 8 | byte(1)) * 3 + 1;
    let n2 = (byte(2) << 8 | byte(3)) * 3 + 1;
    let a = "a".repeat(n1);
    let mut b = "a".repeat(n2);
    if byte(4) % 2 == 1 {
        b.replace_range(0..1, "b");
    }
    // a dimension up to 2^40
    let dim = 1u64 << (byte(5) % 41);
    let text = format!(
        "graph @g {{\n  input %{a}: f32[B, 4]\n  param %w: f32[{dim}, 4] = zeros\n  const %c: f32[{dim}] = fill(1.0)\n  %y = linear(%{a}, %w) : f32[B, {dim}]\n  output o = %{b}\n}}\n"
    );
    match qir_reader::parse_and_verify(&text) {
        Ok(g) => {
            qir_exec::memory::set_max_memory(Some(64 << 20));
            match qir_exec::init_store(&g, 0) {
                Ok(_) => assert!(dim * 20 <= 64 << 20, "{dim} fits the limit"),
                Err(e) => assert!(matches!(e, qir_exec::ExecError::Memory(_)), "{e}"),
            }
        }
        Err(diags) => {
            let rendered = qir_reader::render(&diags, "fuzz.qir", &text);
            assert!(rendered.starts_with("fuzz.qir:"));
        }
    }
});
