//! Memory checks made before allocating, so that a huge declaration or intermediate is an
//! [`ExecError::Memory`] naming the value and its size rather than an aborted process.
//!
//! The budget is the smallest of: the limit set with [`set_max_memory`] (the driver's
//! `--max-memory`), the memory the kernel reports available (`MemAvailable` in
//! `/proc/meminfo`), and the room left under the cgroup's memory limit (v2 `memory.max`
//! less `memory.current`, or v1 `memory.limit_in_bytes` less `memory.usage_in_bytes`).
//! Sizes are computed from the declared types: a value's elements times its element size
//! (4 bytes for quantized types, as the executors keep them in f32 or i32), with symbolic
//! dimensions at their bound value.
//!
//! What is checked: [`fill_store`](crate::fill_store) checks the parameters, state and
//! constants it is about to materialize, together; [`bind_inputs`](crate::bind_inputs)
//! checks, once the batch is known, every value of the graph against the budget left
//! after the store (a lower bound of the live set; the JIT's memory plan adds its arena
//! check on top).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qir::{Dim, ElemType, Graph, NodeKind, Type};

use crate::ExecError;

/// The user's limit in bytes (`u64::MAX`: none).
static MAX_MEMORY: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets (or with `None` clears) a limit in bytes on what one run may need.
pub fn set_max_memory(bytes: Option<u64>) {
    MAX_MEMORY.store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
}

/// The budget in bytes and a phrase naming where it comes from.
pub fn budget() -> (u64, &'static str) {
    let mut best = (u64::MAX, "memory");
    let user = MAX_MEMORY.load(Ordering::SeqCst);
    if user != u64::MAX {
        best = (user, "the --max-memory limit");
    }
    let (system, source) = system_budget();
    if system < best.0 {
        best = (system, source);
    }
    best
}

/// The system's part of the budget (memory available, cgroup room), read from `/proc`
/// and `/sys` at most every [`SYSTEM_REFRESH`]: a run of a small model takes
/// microseconds, and reading those files every run took longer than the run.
fn system_budget() -> (u64, &'static str) {
    static CACHE: Mutex<Option<(Instant, (u64, &'static str))>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, b)) = *cache
        && at.elapsed() < SYSTEM_REFRESH
    {
        return b;
    }
    let mut best = (u64::MAX, "memory");
    if let Some(a) = mem_available()
        && a < best.0
    {
        best = (a, "the memory available");
    }
    if let Some(c) = cgroup_room()
        && c < best.0
    {
        best = (c, "the room under the cgroup's memory limit");
    }
    *cache = Some((Instant::now(), best));
    best
}

/// How long a reading of the system's memory stays current.
const SYSTEM_REFRESH: Duration = Duration::from_millis(200);

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

fn cgroup_room() -> Option<u64> {
    let (limit, used) = match read_u64("/sys/fs/cgroup/memory.max") {
        Some(l) => (l, read_u64("/sys/fs/cgroup/memory.current").unwrap_or(0)),
        None => (
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes")?,
            read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes").unwrap_or(0),
        ),
    };
    // v1 reports "no limit" as a huge number
    (limit < 1 << 60).then(|| limit.saturating_sub(used))
}

/// Bytes per element as the executors hold it.
pub fn elem_bytes(e: &ElemType) -> u64 {
    match e {
        ElemType::F64 | ElemType::I64 => 8,
        ElemType::F32 | ElemType::I32 | ElemType::Quant(_) => 4,
        ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
    }
}

/// The bytes of a value of type `ty`, with symbolic dimensions as `sym` gives them
/// (unbound ones count 1); saturates instead of overflowing.
pub fn type_bytes(ty: &Type, sym: &dyn Fn(&str) -> Option<usize>) -> u128 {
    ty.shape
        .dims()
        .iter()
        .fold(u128::from(elem_bytes(&ty.elem)), |acc, d| {
            let n = match d {
                Dim::Fixed(n) => u128::from(*n),
                Dim::Sym(s) => sym(s).map_or(1, |v| v as u128),
            };
            acc.saturating_mul(n)
        })
}

/// `12.3 GB`, `512 B`: decimal units.
pub fn show_bytes(b: u128) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    let f = b as f64;
    UNITS.iter().find(|(u, _)| f >= *u).map_or_else(
        || format!("{b} B"),
        |(u, name)| format!("{:.1} {name}", f / u),
    )
}

fn over(needs: String, size: u128, limit: u64, source: &str) -> ExecError {
    ExecError::Memory(format!(
        "{needs} needs {}, more than {source} ({}){}",
        show_bytes(size),
        show_bytes(u128::from(limit)),
        if source.contains("--max-memory") {
            ""
        } else {
            "; a smaller model or batch may fit"
        }
    ))
}

/// Checks that the parameters, state and constants of `g` for which `missing` is true
/// fit the budget, one by one and together.
pub fn check_declarations(g: &Graph, missing: &dyn Fn(&str) -> bool) -> Result<(), ExecError> {
    let (limit, source) = budget();
    let mut total: u128 = 0;
    for id in g.node_ids() {
        let node = g.node(id);
        let what = match node.kind {
            NodeKind::Param(_) => "param",
            NodeKind::State(_) => "state",
            NodeKind::Const(_) => "const",
            NodeKind::Input | NodeKind::Op(_) => continue,
        };
        if node.name.as_deref().is_some_and(|n| !missing(n)) {
            continue;
        }
        let size = type_bytes(&node.ty, &|_| None);
        if size > u128::from(limit) {
            return Err(over(
                format!("{what} {}: {}", g.describe(id), node.ty),
                size,
                limit,
                source,
            ));
        }
        total = total.saturating_add(size);
    }
    if total > u128::from(limit) {
        return Err(over(
            format!(
                "graph @{}: its parameters, state and constants together",
                g.name
            ),
            total,
            limit,
            source,
        ));
    }
    Ok(())
}

/// Checks the values of `g` with the symbolic dimensions of `bindings` against the
/// budget (the store is already allocated, and counted in the memory available): the
/// largest one alone must fit, and so must the values live at once when each is freed
/// after its last use (computed only when all values together would not fit, so the
/// common case costs one pass over the nodes).
pub fn check_values(g: &Graph, bindings: &crate::Bindings) -> Result<(), ExecError> {
    let (limit, source) = budget();
    let limit128 = u128::from(limit);
    let sym = |s: &str| bindings.get(s).copied();
    let sizes: Vec<(u128, qir::NodeId)> = g
        .node_ids()
        .into_iter()
        .filter(|&id| matches!(g.node(id).kind, NodeKind::Op(_)))
        .map(|id| (type_bytes(g.ty(id), &sym), id))
        .collect();
    let at = || {
        if bindings.is_empty() {
            String::new()
        } else {
            let b: Vec<String> = bindings.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!(" with {}", b.join(", "))
        }
    };
    if let Some(&(size, id)) = sizes.iter().max_by_key(|&&(b, _)| b)
        && size > limit128
    {
        return Err(over(
            format!("value {}: {}{}", g.describe(id), g.ty(id), at()),
            size,
            limit,
            source,
        ));
    }
    let total = sizes.iter().fold(0u128, |a, &(b, _)| a.saturating_add(b));
    if total <= limit128 {
        return Ok(());
    }
    if let Some((peak, id)) = peak_live(g, &sizes)
        && peak > limit128
    {
        return Err(over(
            format!("the values live at once after {}{}", g.describe(id), at()),
            peak,
            limit,
            source,
        ));
    }
    Ok(())
}

/// The largest sum of the sizes of values live at once, when values are computed in
/// topological order and freed after their last reader (outputs and the loss are kept to
/// the end), and the node after which it is reached.
fn peak_live(g: &Graph, sizes: &[(u128, qir::NodeId)]) -> Option<(u128, qir::NodeId)> {
    let order = g.topo_order().ok()?;
    let size: std::collections::HashMap<qir::NodeId, u128> =
        sizes.iter().map(|&(b, id)| (id, b)).collect();
    let pos: std::collections::HashMap<qir::NodeId, usize> =
        order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let mut last = vec![0usize; order.len()];
    for (i, &id) in order.iter().enumerate() {
        last[i] = i;
        for (u, _) in g.users(id) {
            if let Some(&p) = pos.get(&u) {
                last[i] = last[i].max(p);
            }
        }
    }
    let kept: std::collections::HashSet<qir::NodeId> = g
        .outputs()
        .iter()
        .map(|o| o.value)
        .chain(g.loss())
        .collect();
    let mut frees: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for (i, &id) in order.iter().enumerate() {
        if !kept.contains(&id) {
            frees[last[i]].push(i);
        }
    }
    let (mut live, mut peak) = (0u128, (0u128, order[0]));
    for (i, &id) in order.iter().enumerate() {
        live = live.saturating_add(*size.get(&id).unwrap_or(&0));
        if live > peak.0 {
            peak = (live, id);
        }
        for &j in &frees[i] {
            live = live.saturating_sub(*size.get(&order[j]).unwrap_or(&0));
        }
    }
    Some(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_saturate_and_print_in_decimal_units() {
        let ty = Type::f32(&[1_000_000_000u64.into(), 64u64.into()]);
        assert_eq!(type_bytes(&ty, &|_| None), 256_000_000_000);
        assert_eq!(show_bytes(256_000_000_000), "256.0 GB");
        assert_eq!(show_bytes(512), "512 B");
        let huge = Type::f32(&[u64::MAX.into(), u64::MAX.into(), u64::MAX.into()]);
        assert_eq!(type_bytes(&huge, &|_| None), u128::MAX);
        let batch = Type::f32(&[Dim::from("B"), 10u64.into()]);
        assert_eq!(type_bytes(&batch, &|s| (s == "B").then_some(32)), 1280);
    }
}
