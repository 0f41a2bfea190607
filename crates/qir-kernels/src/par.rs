//! Where a parallel kernel call runs its parts: on the calling thread, on rayon's global
//! pool, or on a fork-join team the caller owns (the JIT passes its own, so that a
//! converted model's kernels and its compiled loops share one set of threads instead of
//! two pools competing for the same cores).

use rayon::prelude::*;

/// A fork-join: `run(parts, f)` calls `f(0)`, ..., `f(parts - 1)`, concurrently where it
/// can, and returns when every call has returned.
pub type ForkJoin<'a> = &'a (dyn Fn(usize, &(dyn Fn(usize) + Sync)) + Sync);

/// How a kernel call may split its work.
#[derive(Clone, Copy)]
pub enum Parallel<'a> {
    /// On the calling thread only.
    None,
    /// On the threads of rayon's global pool.
    Rayon,
    /// On a caller's team of `threads` threads (the caller included).
    Team {
        /// How many parts run at once.
        threads: usize,
        /// The team's fork-join.
        run: ForkJoin<'a>,
    },
}

impl Parallel<'_> {
    /// How many parts run at once.
    pub(crate) fn threads(&self) -> usize {
        match self {
            Parallel::None => 1,
            Parallel::Rayon => rayon::current_num_threads().max(1),
            Parallel::Team { threads, .. } => (*threads).max(1),
        }
    }

    /// Runs `f(0)`, ..., `f(parts - 1)` and returns when all are done.
    pub(crate) fn for_each(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        match self {
            Parallel::None => (0..parts).for_each(f),
            Parallel::Rayon => (0..parts).into_par_iter().for_each(f),
            Parallel::Team { run, .. } => run(parts, f),
        }
    }
}

impl std::fmt::Debug for Parallel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parallel::None => write!(f, "None"),
            Parallel::Rayon => write!(f, "Rayon"),
            Parallel::Team { threads, .. } => write!(f, "Team({threads})"),
        }
    }
}
