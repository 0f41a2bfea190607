//! Value names: ONNX names (any string) as `.qir` names (`[A-Za-z_][A-Za-z0-9_.]*`).
//!
//! Invariants: a name that is already valid is kept as it is (valid names are reserved
//! before any other is assigned, so a sanitized name never takes one); every other name is
//! sanitized deterministically (each character outside `[A-Za-z0-9_.]` becomes `_`, and a
//! name that does not start with a letter or `_` gets a `v` in front: `/fc1/Gemm_output_0`
//! → `_fc1_Gemm_output_0`, `13` → `v13`) and made unique with a `.1`, `.2`, ... suffix;
//! the same model always gets the same names.

use std::collections::{HashMap, HashSet};

/// The sanitized form of `s`, not yet made unique.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, 'v');
    }
    out
}

/// True if `s` is a valid `.qir` value name as it is.
pub fn is_valid(s: &str) -> bool {
    qir::verify::is_valid_name(s)
}

/// Assigns `.qir` names to ONNX names and hands out fresh names for the values the
/// importer adds.
#[derive(Debug, Default)]
pub struct Namer {
    taken: HashSet<String>,
    map: HashMap<String, String>,
}

impl Namer {
    /// A namer for these ONNX names (in model order; repeats are ignored).
    pub fn new<'a>(onnx_names: impl IntoIterator<Item = &'a str> + Clone) -> Namer {
        let mut n = Namer::default();
        for s in onnx_names.clone() {
            if is_valid(s) && n.taken.insert(s.to_string()) {
                n.map.insert(s.to_string(), s.to_string());
            }
        }
        for s in onnx_names {
            if s.is_empty() || n.map.contains_key(s) {
                continue;
            }
            let name = n.fresh(&sanitize(s));
            n.map.insert(s.to_string(), name);
        }
        n
    }

    /// The `.qir` name of an ONNX name given to [`Namer::new`].
    pub fn get(&self, onnx: &str) -> Option<&str> {
        self.map.get(onnx).map(String::as_str)
    }

    /// `base` (sanitized) if it is free, else `base.1`, `base.2`, ...; reserved from now on.
    pub fn fresh(&mut self, base: &str) -> String {
        let base = if is_valid(base) {
            base.to_string()
        } else {
            sanitize(base)
        };
        let name = if self.taken.contains(&base) {
            (1u64..)
                .map(|i| format!("{base}.{i}"))
                .find(|c| !self.taken.contains(c))
                .unwrap_or_default()
        } else {
            base
        };
        self.taken.insert(name.clone());
        name
    }

    /// True if `name` is taken.
    pub fn is_taken(&self, name: &str) -> bool {
        self.taken.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_and_others_sanitized_uniquely() {
        let names = [
            "a/b",
            "a_b",
            "fc1.weight",
            "13",
            "onnx::Gemm_0",
            "a:b",
            "v13",
        ];
        let n = Namer::new(names.iter().copied());
        assert_eq!(n.get("a_b"), Some("a_b"));
        assert_eq!(n.get("fc1.weight"), Some("fc1.weight"));
        assert_eq!(n.get("v13"), Some("v13"));
        assert_eq!(n.get("a/b"), Some("a_b.1"));
        assert_eq!(n.get("a:b"), Some("a_b.2"));
        assert_eq!(n.get("13"), Some("v13.1"));
        assert_eq!(n.get("onnx::Gemm_0"), Some("onnx__Gemm_0"));
        for s in names {
            assert!(is_valid(n.get(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn sanitize_always_gives_a_valid_name() {
        for s in ["", "0", "/", ".x", "é", "%x", "-1", "a b"] {
            assert!(is_valid(&sanitize(s)), "{s:?} -> {}", sanitize(s));
        }
    }

    #[test]
    fn fresh_names_avoid_taken_ones() {
        let mut n = Namer::new(["loss", "loss.1"]);
        assert_eq!(n.fresh("loss"), "loss.2");
        assert_eq!(n.fresh("y.alpha"), "y.alpha");
        assert_eq!(n.fresh("y.alpha"), "y.alpha.1");
    }
}
