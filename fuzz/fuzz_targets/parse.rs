//! Fuzz target `parse`: any byte string, read as (lossy) UTF-8, must give a graph or
//! diagnostics; diagnostics must render; an accepted graph's canonical text must read
//! back to the same text.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match qir_reader::parse_and_verify(&text) {
        Ok(g) => {
            let printed = qir::print::print(&g);
            match qir_reader::parse_and_verify(&printed) {
                Ok(again) => assert_eq!(qir::print::print(&again), printed),
                Err(d) => panic!(
                    "canonical text does not read back:\n{}",
                    qir_reader::render(&d, "printed.qir", &printed)
                ),
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            let rendered = qir_reader::render(&diags, "fuzz.qir", &text);
            assert!(rendered.starts_with("fuzz.qir:"));
        }
    }
});
