//! The store: the values of a graph's parameters, state and constants by name, and their
//! materialization from the graph's initializers.
//!
//! Invariants: initialization is deterministic per (seed, value name) — the same seed and
//! name give the same tensor whatever else the graph holds, so adding a layer does not
//! reshuffle the others; values already in the store are kept (that is how `External`
//! weights loaded from a file and checkpoints take precedence); every materialized tensor
//! has its declaration's shape and element type (quantized types in their storage type).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use qir::{Data, ElemType, Graph, Init, NodeKind, Storage, Tensor, Type};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;

use crate::error::ExecError;

/// Parameters, state and constants by value name.
///
/// Every value carries a version: a number drawn from one process-wide counter whenever
/// the value is inserted or lent out mutably. Equal versions of a name therefore mean the
/// same contents (a clone shares its versions with the original until either changes), so
/// an executor that baked a value into compiled code checks the version instead of
/// comparing the tensor on every run.
#[derive(Clone, Debug, Default)]
pub struct Store {
    values: BTreeMap<String, (Tensor, u64)>,
}

/// The next version of any store's value.
fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl PartialEq for Store {
    /// Same names with the same tensors (versions do not count).
    fn eq(&self, other: &Store) -> bool {
        self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|((ka, (a, _)), (kb, (b, _)))| ka == kb && a == b)
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }
    /// The value named `name` (without the `%`).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.values.get(name).map(|(t, _)| t)
    }
    /// The version of the value named `name`: it changes whenever the value may have.
    pub fn version(&self, name: &str) -> Option<u64> {
        self.values.get(name).map(|&(_, v)| v)
    }
    /// The value named `name`, for changing it in place (executors update parameters and
    /// state this way; the shape and element type must stay those of the declaration).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.values.get_mut(name).map(|(t, v)| {
            *v = next_version();
            t
        })
    }
    /// Sets (or replaces) the value named `name`.
    pub fn insert(&mut self, name: &str, t: Tensor) {
        self.values.insert(name.to_string(), (t, next_version()));
    }
    /// Removes and returns the value named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.values.remove(name).map(|(t, _)| t)
    }
    /// The names held, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
    /// Every (name, value) pair, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.values.iter().map(|(k, (t, _))| (k.as_str(), t))
    }
    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }
    /// True if the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl FromIterator<(String, Tensor)> for Store {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Store {
        Store {
            values: iter
                .into_iter()
                .map(|(k, t)| (k, (t, next_version())))
                .collect(),
        }
    }
}

/// A fresh store with every parameter, state and constant of `g` materialized from its
/// initializer; random initializers draw from a generator seeded by (`seed`, value name).
/// `External` values cannot be materialized: use [`fill_store`] on a store that already
/// holds them (read from the weights file).
pub fn init_store(g: &Graph, seed: u64) -> Result<Store, ExecError> {
    let mut store = Store::new();
    fill_store(g, &mut store, seed)?;
    Ok(store)
}

/// Materializes every parameter, state and constant of `g` that `store` does not hold
/// yet (see [`init_store`]); values already present are checked against their
/// declaration and kept. An `External` value missing from the store is an error.
pub fn fill_store(g: &Graph, store: &mut Store, seed: u64) -> Result<(), ExecError> {
    crate::memory::check_declarations(g, &|name| store.get(name).is_none())?;
    for id in g.node_ids() {
        let node = g.node(id);
        let (what, init) = match &node.kind {
            NodeKind::Param(i) => ("param", i),
            NodeKind::State(i) => ("state", i),
            NodeKind::Const(i) => ("const", i),
            NodeKind::Input | NodeKind::Op(_) => continue,
        };
        let Some(name) = node.name.as_deref() else {
            return Err(ExecError::Store(format!(
                "{} {} has no name, so it cannot be kept in the store",
                what,
                g.describe(id)
            )));
        };
        if let Some(t) = store.get(name) {
            check_stored(name, &node.ty, t).map_err(ExecError::Store)?;
            continue;
        }
        let t = materialize(name, &node.ty, init, seed)
            .map_err(|e| ExecError::Store(format!("{what} %{name}: {e}")))?;
        store.insert(name, t);
    }
    Ok(())
}

/// Checks the scales of `g`'s fake-quant ops that are declared values (inputs, params,
/// state, constants), held in `store` or `inputs`: every one must be positive and finite,
/// else the error names the op. Scales computed by the graph are checked by the
/// interpreter's kernel only.
pub fn check_fake_quant_scales(
    g: &Graph,
    store: &Store,
    inputs: &std::collections::HashMap<String, Tensor>,
) -> Result<(), ExecError> {
    for (op, scale) in fake_quant_scale_values(g) {
        let node = g.node(scale);
        let name = node.name.as_deref().unwrap_or_default();
        let t = if node.is_input() {
            inputs.get(name)
        } else {
            store.get(name)
        };
        if let Some(t) = t {
            check_fake_quant_scale(g, op, scale, t)?;
        }
    }
    Ok(())
}

/// The fake-quant ops of `g` whose scale operand is a named declared value (an input or
/// a stored value), as `(op, scale)` pairs: what [`check_fake_quant_scales`] checks, for an
/// executor that checks a stored scale again only when its store version moves.
pub fn fake_quant_scale_values(g: &Graph) -> Vec<(qir::NodeId, qir::NodeId)> {
    let mut v = Vec::new();
    for id in g.node_ids() {
        let Some(inst) = g.node(id).inst() else {
            continue;
        };
        if inst.op.class() != qir::OpClass::FakeQuant {
            continue;
        }
        let Some(&s) = g.operands(id).get(1) else {
            continue;
        };
        let node = g.node(s);
        if node.name.is_some() && (node.is_input() || node.op().is_none()) {
            v.push((id, s));
        }
    }
    v
}

/// Checks the scale tensor `t` of fake-quant op `op` (operand `scale`): every value must
/// be positive and finite, else the error names the op.
pub fn check_fake_quant_scale(
    g: &Graph,
    op: qir::NodeId,
    scale: qir::NodeId,
    t: &Tensor,
) -> Result<(), ExecError> {
    let Some(v) = (0..t.numel())
        .map(|i| t.data.get_f64(i))
        .find(|v| !(v.is_finite() && *v > 0.0))
    else {
        return Ok(());
    };
    let name = g.node(scale).name.as_deref().unwrap_or_default();
    let mnemonic = g
        .node(op)
        .inst()
        .map(|i| i.op.to_string())
        .unwrap_or_default();
    Err(ExecError::Node {
        node: g.describe(op),
        message: format!(
            "'{mnemonic}' scale %{name} holds {}: scales must be positive and finite",
            qir::float::fmt_f64(v)
        ),
    })
}

/// Checks a stored tensor against the declaration of the value it stands for. Float
/// declarations accept f32 or f64 data (converted to the run's precision on load).
pub fn check_stored(name: &str, ty: &Type, t: &Tensor) -> Result<(), String> {
    let want = ty.shape.as_fixed();
    let shape_ok = want.as_ref().is_some_and(|w| {
        w.len() == t.shape.len() && w.iter().zip(&t.shape).all(|(&a, &b)| a == b as u64)
    });
    if !shape_ok {
        return Err(format!(
            "stored value %{name}: expected {ty}, got shape {:?}",
            t.shape
        ));
    }
    check_data(t).map_err(|e| format!("stored value %{name}: {e}"))?;
    if !dtype_fits(&ty.elem, &t.data) {
        return Err(format!(
            "stored value %{name}: expected {ty}, got {} data",
            t.data.dtype()
        ));
    }
    Ok(())
}

/// True if `data` can stand for a value of element type `elem` (floats of either width
/// for float types).
pub fn dtype_fits(elem: &ElemType, data: &Data) -> bool {
    if elem.is_float() {
        matches!(data, Data::F32(_) | Data::F64(_))
    } else {
        data.matches(elem)
    }
}

/// Checks that a tensor's data length is the product of its shape.
pub fn check_data(t: &Tensor) -> Result<(), String> {
    let n = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has too many elements", t.shape))?;
    if n != t.data.len() {
        return Err(format!(
            "shape {:?} needs {n} elements but the data holds {}",
            t.shape,
            t.data.len()
        ));
    }
    Ok(())
}

pub use qir::graph::fans;

/// A stable 64-bit key for (seed, name): FNV-1a over the name, mixed with the seed by
/// SplitMix64 finalizers (std's hashers are not promised to be stable across releases).
fn rng_key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(seed ^ splitmix(h))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator for value `name`: ChaCha8, whose output is fixed by its specification
/// (rand's `StdRng` is documented as not reproducible across rand releases).
fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(rng_key(seed, name))
}

fn materialize(name: &str, ty: &Type, init: &Init, seed: u64) -> Result<Tensor, String> {
    let shape: Vec<usize> = ty
        .shape
        .as_fixed()
        .ok_or_else(|| format!("declarations need a fixed shape, found {ty}"))?
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{ty} is too large"))?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("{ty} is too large"))?;
    let fan = || fans(&shape).ok_or_else(|| format!("cannot compute fans of {ty}"));
    let uniform = |lo: f64, hi: f64| -> Result<Vec<f64>, String> {
        let d = Uniform::new(lo, hi).map_err(|e| format!("uniform({lo}, {hi}): {e}"))?;
        let mut rng = rng_for(seed, name);
        Ok((0..n).map(|_| d.sample(&mut rng)).collect())
    };
    let normal = |mean: f64, std: f64| -> Result<Vec<f64>, String> {
        let d = Normal::new(mean, std).map_err(|e| format!("normal({mean}, {std}): {e}"))?;
        let mut rng = rng_for(seed, name);
        Ok((0..n).map(|_| d.sample(&mut rng)).collect())
    };
    let positive = |fan: usize| {
        if fan == 0 {
            Err(format!("{ty} has a zero fan, the initializer is undefined"))
        } else {
            Ok(fan as f64)
        }
    };
    let vals: Vec<f64> = match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Fill(v) => vec![*v; n],
        Init::Dense(v) => {
            if v.len() != n {
                return Err(format!(
                    "{} values given for {ty}, which has {n} elements",
                    v.len()
                ));
            }
            v.clone()
        }
        Init::Uniform(lo, hi) => uniform(*lo, *hi)?,
        Init::Normal(mean, std) => normal(*mean, *std)?,
        Init::KaimingUniform => {
            let b = (6.0 / positive(fan()?.0)?).sqrt();
            uniform(-b, b)?
        }
        Init::KaimingNormal => normal(0.0, (2.0 / positive(fan()?.0)?).sqrt())?,
        Init::XavierUniform => {
            let (fi, fo) = fan()?;
            let b = (6.0 / positive(fi + fo)?).sqrt();
            uniform(-b, b)?
        }
        Init::XavierNormal => {
            let (fi, fo) = fan()?;
            normal(0.0, (2.0 / positive(fi + fo)?).sqrt())?
        }
        Init::LecunUniform => {
            let b = 1.0 / positive(fan()?.0)?.sqrt();
            uniform(-b, b)?
        }
        Init::External => {
            return Err(
                "is external: load it from the weights file into the store first".to_string(),
            );
        }
    };
    let data = data_from_f64(&ty.elem, &vals)?;
    Ok(Tensor { shape, data })
}

/// Tensor data of element type `elem` from f64 values; integer types need integral values
/// inside the type's range (quantized types: their storage range), bool needs 0 or 1.
pub fn data_from_f64(elem: &ElemType, v: &[f64]) -> Result<Data, String> {
    fn ints<T: TryFrom<i64>>(v: &[f64], ty: &str) -> Result<Vec<T>, String> {
        v.iter()
            .map(|&x| {
                let bad = || format!("value {x} is not a {ty} integer");
                if x.fract() != 0.0 || !x.is_finite() || x.abs() > 9.3e18 {
                    return Err(bad());
                }
                T::try_from(x as i64).map_err(|_| bad())
            })
            .collect()
    }
    Ok(match elem {
        ElemType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
        ElemType::F64 => Data::F64(v.to_vec()),
        ElemType::I8 => Data::I8(ints(v, "i8")?),
        ElemType::U8 => Data::U8(ints(v, "u8")?),
        ElemType::I32 => Data::I32(ints(v, "i32")?),
        ElemType::I64 => Data::I64(ints(v, "i64")?),
        ElemType::Bool => Data::Bool(
            v.iter()
                .map(|&x| match x {
                    0.0 => Ok(false),
                    1.0 => Ok(true),
                    _ => Err(format!("value {x} is not a boolean (0 or 1)")),
                })
                .collect::<Result<_, _>>()?,
        ),
        ElemType::Quant(q) => match q.storage {
            // i4 is held unpacked, one value per byte
            Storage::I4 => {
                let v: Vec<i8> = ints(v, "i4")?;
                if let Some(x) = v.iter().find(|x| !(-8..=7).contains(*x)) {
                    return Err(format!("value {x} is not a i4 integer"));
                }
                Data::I8(v)
            }
            Storage::I8 => Data::I8(ints(v, "i8")?),
            Storage::U8 => Data::U8(ints(v, "u8")?),
            Storage::I16 => Data::I16(ints(v, "i16")?),
            Storage::I32 => Data::I32(ints(v, "i32")?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qir::{QuantType, Shape};

    #[test]
    fn versions_move_with_every_possible_change_and_clones_share_them() {
        let t = Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap();
        let mut a: Store = [("w".to_string(), t.clone())].into_iter().collect();
        let v0 = a.version("w").unwrap();
        let b = a.clone();
        assert_eq!(b.version("w"), Some(v0));
        a.get_mut("w").unwrap();
        let v1 = a.version("w").unwrap();
        assert_ne!(v1, v0);
        a.insert("w", t);
        assert_ne!(a.version("w").unwrap(), v1);
        assert_eq!(b.version("w"), Some(v0));
        // equality is about the tensors only
        assert_eq!(a, b);
        assert_eq!(a.version("x"), None);
    }

    fn graph_with(init: Init, ty: Type) -> Graph {
        let mut g = Graph::new("t");
        g.add_param("w", ty, init).unwrap();
        g
    }

    #[test]
    fn fans_follow_pytorch() {
        assert_eq!(fans(&[32, 64]), Some((64, 32)));
        assert_eq!(fans(&[8, 2, 3, 3]), Some((18, 72)));
        assert_eq!(fans(&[10]), Some((10, 10)));
        assert_eq!(fans(&[]), None);
    }

    #[test]
    fn random_init_is_deterministic_per_seed_and_name() {
        let ty = Type::new(ElemType::F32, Shape::fixed(&[32, 64]));
        let g = graph_with(Init::KaimingUniform, ty.clone());
        let a = init_store(&g, 7).unwrap();
        let b = init_store(&g, 7).unwrap();
        let c = init_store(&g, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.get("w"), c.get("w"));
        // another value declared before does not change this one
        let mut g2 = Graph::new("t");
        g2.add_param("v", ty.clone(), Init::KaimingUniform).unwrap();
        g2.add_param("w", ty, Init::KaimingUniform).unwrap();
        assert_eq!(init_store(&g2, 7).unwrap().get("w"), a.get("w"));
        // kaiming uniform bound sqrt(6 / 64) and a mean near 0
        let w = a.get("w").unwrap().as_f32().unwrap();
        let bound = (6.0f32 / 64.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        assert!(w.iter().any(|v| v.abs() > 0.9 * bound));
        let mean: f32 = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
    }

    #[test]
    fn normal_init_has_the_requested_spread() {
        let ty = Type::new(ElemType::F32, Shape::fixed(&[64, 50]));
        let s = init_store(&graph_with(Init::KaimingNormal, ty), 1).unwrap();
        let w = s.get("w").unwrap().as_f32().unwrap();
        let var: f64 = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        // N(0, 2/50): variance 0.04, estimated from 3200 samples (std error ~0.001)
        assert!((var - 0.04).abs() < 0.004, "variance {var}");
    }

    #[test]
    fn int_and_quantized_inits() {
        let mut g = Graph::new("t");
        g.add_const(
            "z",
            Type::new(ElemType::I32, Shape::fixed(&[3])),
            Init::Dense(vec![1.0, -2.0, 3.0]),
        )
        .unwrap();
        g.add_const(
            "q",
            Type::new(
                ElemType::Quant(Box::new(QuantType::per_tensor(
                    Storage::I8,
                    -128,
                    127,
                    0.5,
                    0,
                ))),
                Shape::fixed(&[2]),
            ),
            Init::Fill(-3.0),
        )
        .unwrap();
        g.add_state(
            "o",
            Type::new(ElemType::I64, Shape::fixed(&[2])),
            Init::Ones,
        )
        .unwrap();
        let s = init_store(&g, 0).unwrap();
        assert_eq!(s.get("z").unwrap().data, Data::I32(vec![1, -2, 3]));
        assert_eq!(s.get("q").unwrap().data, Data::I8(vec![-3, -3]));
        assert_eq!(s.get("o").unwrap().data, Data::I64(vec![1, 1]));
        assert_eq!(s.names().collect::<Vec<_>>(), ["o", "q", "z"]);
    }

    #[test]
    fn bad_inits_are_errors() {
        let g = graph_with(Init::External, Type::new(ElemType::F32, Shape::fixed(&[2])));
        let e = init_store(&g, 0).unwrap_err().to_string();
        assert!(e.starts_with("param %w: is external"), "{e}");
        // a stored external value is accepted
        let mut s = Store::new();
        s.insert("w", Tensor::f32(vec![2], vec![1.0, 2.0]).unwrap());
        fill_store(&g, &mut s, 0).unwrap();
        // but not with the wrong shape
        s.insert("w", Tensor::f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap());
        let e = fill_store(&g, &mut s, 0).unwrap_err().to_string();
        assert_eq!(e, "stored value %w: expected f32[2], got shape [3]");
        let mut g = Graph::new("t");
        g.add_const(
            "z",
            Type::new(ElemType::I8, Shape::fixed(&[1])),
            Init::Fill(300.0),
        )
        .unwrap();
        let e = init_store(&g, 0).unwrap_err().to_string();
        assert_eq!(e, "const %z: value 300 is not a i8 integer");
    }
}
