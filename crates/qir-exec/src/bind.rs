//! Binding a run's inputs to a graph: every fed tensor is checked against its input's
//! declaration (element type, rank, fixed dimensions) and the symbolic dimensions (`B`)
//! are bound consistently across inputs. Executors call this before touching any data,
//! so that compiled code can trust every shape it is given.

use std::collections::{BTreeMap, HashMap};

use qir::{Dim, Graph, Tensor};

use crate::error::ExecError;
use crate::store::{check_data, dtype_fits};

/// The values of a graph's symbolic dimensions for one run, by name.
pub type Bindings = BTreeMap<String, usize>;

/// The declared input name (`%x`) closest to an unknown one, if it is close: names
/// longer than 64 characters get no suggestion (bounding the edit-distance work), and a
/// suggestion differs in at most a third of the characters, and at least one.
fn did_you_mean<'n>(unknown: &str, names: &'n [String]) -> Option<&'n str> {
    const MAX_LEN: usize = 64;
    if unknown.len() > MAX_LEN {
        return None;
    }
    names
        .iter()
        .filter(|n| n.len() <= MAX_LEN + 1)
        .map(|n| (strsim::osa_distance(unknown, &n[1..]), n))
        .filter(|&(d, _)| d <= (unknown.len() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n.as_str())
}

/// Checks `inputs` (by input name, without `%`) against the inputs `g` declares and
/// returns the symbolic dimensions they bind. A name the graph does not declare as an
/// input is an error (a misspelt input would otherwise go unnoticed), and so is a
/// declared input that is not fed; float inputs accept f32 or f64 data.
pub fn bind_inputs(g: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Bindings, ExecError> {
    let declared = g.inputs();
    let mut unknown: Vec<&str> = inputs
        .keys()
        .map(String::as_str)
        .filter(|k| g.find(k).is_none_or(|id| !g.node(id).is_input()))
        .collect();
    unknown.sort_unstable();
    if let Some(k) = unknown.first() {
        let names: Vec<String> = declared
            .iter()
            .filter_map(|&id| g.node(id).name.as_ref().map(|n| format!("%{n}")))
            .collect();
        let hint = did_you_mean(k, &names)
            .map(|n| format!("did you mean {n}? "))
            .unwrap_or_default();
        return Err(ExecError::Input(format!(
            "unknown input '{k}': the graph has no input %{k} ({hint}the graph's inputs: {})",
            names.join(", ")
        )));
    }
    let mut syms: HashMap<String, (usize, String)> = HashMap::new();
    for &id in &declared {
        let node = g.node(id);
        let name = node.name.as_deref().unwrap_or_default();
        let Some(t) = inputs.get(name) else {
            return Err(ExecError::Input(format!(
                "missing input %{name} ({})",
                node.ty
            )));
        };
        let bad = |why: String| ExecError::Input(format!("input %{name}: {why}"));
        check_data(t).map_err(bad)?;
        if !dtype_fits(&node.ty.elem, &t.data) {
            return Err(bad(format!(
                "expected {}, got {} data",
                node.ty,
                t.data.dtype()
            )));
        }
        let dims = node.ty.shape.dims();
        let shape_err = || format!("expected {}, got shape {:?}", node.ty, t.shape);
        if dims.len() != t.shape.len() {
            return Err(bad(shape_err()));
        }
        for (d, &n) in dims.iter().zip(&t.shape) {
            match d {
                Dim::Fixed(f) if *f == n as u64 => {}
                Dim::Fixed(_) => return Err(bad(shape_err())),
                Dim::Sym(s) => match syms.get(s) {
                    Some((v, _)) if *v == n => {}
                    Some((v, from)) => {
                        return Err(bad(format!("{} ({s} = {v} from %{from})", shape_err())));
                    }
                    None => {
                        syms.insert(s.clone(), (n, name.to_string()));
                    }
                },
            }
        }
    }
    let bindings: Bindings = syms.into_iter().map(|(k, (v, _))| (k, v)).collect();
    crate::memory::check_values(g, &bindings)?;
    Ok(bindings)
}

/// The symbolic dimensions of `g`'s values that no input binds (a graph whose only
/// symbolic dimensions come from its inputs has none).
pub fn unbound_symbols(g: &Graph) -> Vec<String> {
    let mut bound = std::collections::BTreeSet::new();
    for id in g.inputs() {
        for d in g.ty(id).shape.dims() {
            if let Dim::Sym(s) = d {
                bound.insert(s.clone());
            }
        }
    }
    let mut free = std::collections::BTreeSet::new();
    for id in g.node_ids() {
        for d in g.ty(id).shape.dims() {
            if let Dim::Sym(s) = d
                && !bound.contains(s)
            {
                free.insert(s.clone());
            }
        }
    }
    free.into_iter().collect()
}
