//! Collectives: how an executor performs the IR's `all_reduce` across the replicas of a
//! data-parallel run.
//!
//! A [`Communicator`] reduces a buffer elementwise over every process of the run, in
//! place. The process has one communicator, installed once with [`set_communicator`]
//! before any graph runs (the driver installs its MPI communicator, behind the `mpi`
//! feature of `qatc`); without one, [`communicator`] is [`Solo`], the identity of a run of
//! one process. Both executors call [`all_reduce`] for every `all_reduce` op, so the
//! interpreter and the JIT reduce the same bytes.
//!
//! Invariants: every process runs the same graph, so every process issues the same
//! all-reduces in the same order with the same lengths (the contract of MPI collectives);
//! `mean` is the sum divided by the number of processes, in the buffer's precision.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How `all_reduce` combines the replicas' tensors (its `op` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise mean (the sum divided by the number of processes).
    Mean,
    /// Elementwise minimum.
    Min,
    /// Elementwise maximum.
    Max,
}

impl ReduceOp {
    /// The op of an `all_reduce` attribute value (`sum`, `mean`, `min`, `max`).
    pub fn from_name(name: &str) -> Option<ReduceOp> {
        match name {
            "sum" => Some(ReduceOp::Sum),
            "mean" => Some(ReduceOp::Mean),
            "min" => Some(ReduceOp::Min),
            "max" => Some(ReduceOp::Max),
            _ => None,
        }
    }
}

/// A buffer to reduce in place.
pub enum Buffer<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// f64 values.
    F64(&'a mut [f64]),
}

/// Elementwise reduction over the processes of a run. Implementations must be callable
/// from any thread, one call at a time per process being enough (executors never issue
/// two collectives at once).
pub trait Communicator: Send + Sync {
    /// This process' index in `0..size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Reduces `buf` over every process with `op` (sum, min or max; [`all_reduce`] turns
    /// `mean` into a sum and a division), leaving the result in every process' `buf`.
    fn reduce(&self, buf: Buffer<'_>, op: ReduceOp) -> Result<(), String>;
    /// Ends the whole run with `message` (every process), for a process that failed: the
    /// others would otherwise wait forever in their next collective. Returns only when
    /// there is nothing to end (one process).
    fn abort(&self, _message: &str, _code: i32) {}
}

/// The communicator of a run of one process: every reduction is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn reduce(&self, _buf: Buffer<'_>, _op: ReduceOp) -> Result<(), String> {
        Ok(())
    }
}

static COMMUNICATOR: OnceLock<Box<dyn Communicator>> = OnceLock::new();

/// Installs the process' communicator; fails if one is installed already (or a graph has
/// run with [`Solo`]).
pub fn set_communicator(c: Box<dyn Communicator>) -> Result<(), String> {
    COMMUNICATOR
        .set(c)
        .map_err(|_| "a communicator is installed already".to_string())
}

/// The process' communicator ([`Solo`] unless one was installed).
pub fn communicator() -> &'static dyn Communicator {
    COMMUNICATOR.get_or_init(|| Box::new(Solo)).as_ref()
}

static CALLS: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// The all-reduces of more than one process done so far by this process, and their
/// wall-clock seconds (waiting for the slowest process included).
pub fn comm_stats() -> (u64, f64) {
    (
        CALLS.load(Ordering::Relaxed),
        NANOS.load(Ordering::Relaxed) as f64 * 1e-9,
    )
}

/// Reduces `buf` in place over every process with `op`, through [`communicator`].
pub fn all_reduce(buf: Buffer<'_>, op: ReduceOp) -> Result<(), String> {
    let c = communicator();
    let n = c.size();
    if n == 1 {
        return Ok(());
    }
    let start = Instant::now();
    let r = reduce_with(c, n, buf, op);
    CALLS.fetch_add(1, Ordering::Relaxed);
    NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

fn reduce_with(
    c: &dyn Communicator,
    n: usize,
    buf: Buffer<'_>,
    op: ReduceOp,
) -> Result<(), String> {
    match (buf, op) {
        (Buffer::F32(b), ReduceOp::Mean) => {
            c.reduce(Buffer::F32(b), ReduceOp::Sum)?;
            let k = n as f32;
            b.iter_mut().for_each(|v| *v /= k);
            Ok(())
        }
        (Buffer::F64(b), ReduceOp::Mean) => {
            c.reduce(Buffer::F64(b), ReduceOp::Sum)?;
            let k = n as f64;
            b.iter_mut().for_each(|v| *v /= k);
            Ok(())
        }
        (b, op) => c.reduce(b, op),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_is_the_identity() {
        let mut v = vec![1.5f32, -2.0, 3.25];
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Min, ReduceOp::Max] {
            all_reduce(Buffer::F32(&mut v), op).unwrap();
            assert_eq!(v, [1.5, -2.0, 3.25]);
        }
        assert_eq!(communicator().size(), 1);
        assert_eq!(communicator().rank(), 0);
    }

    #[test]
    fn op_names() {
        assert_eq!(ReduceOp::from_name("mean"), Some(ReduceOp::Mean));
        assert_eq!(ReduceOp::from_name("max"), Some(ReduceOp::Max));
        assert_eq!(ReduceOp::from_name("avg"), None);
    }
}
