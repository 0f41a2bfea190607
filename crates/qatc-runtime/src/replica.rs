//! Data-parallel training helpers: the deterministic sharding of global batches over the
//! replicas, and [`ReplicaProbe`], the debugging hooks the MPI tests drive through the
//! environment.
//!
//! - `QATC_DP_TRACE=DIR`: after every training step each rank appends one line to
//!   `DIR/rank<R>.trace`: the global step and, for every parameter and state tensor (in
//!   name order), a 64-bit FNV-1a hash of its bytes. Replicas in sync write identical
//!   files.
//! - `QATC_DP_FAIL=RANK:STEP[:kill]`: rank `RANK` fails with an error after global step `STEP`
//!   (with `:kill`, the process aborts itself instead, as a killed rank would vanish)
//!   (to test that a failing rank ends the whole job).

use std::io::Write as _;
use std::path::PathBuf;

use qir::{Data, Graph};
use qir_exec::Store;

use crate::error::{Result, RuntimeError};
use crate::io::weights::params_and_state;

/// Rank `rank`'s share of the epoch order `order` cut into global batches of
/// `global_batch` examples over `replicas` replicas: for every whole global batch, its
/// `rank`-th slice of `global_batch / replicas` examples, in order. A trailing partial
/// global batch is dropped. Every replica computes its slice of the very batch a single
/// process would take.
pub fn shard(order: &[usize], global_batch: usize, replicas: usize, rank: usize) -> Vec<usize> {
    let local = global_batch / replicas.max(1);
    order
        .chunks_exact(global_batch.max(1))
        .flat_map(|b| b[rank * local..(rank + 1) * local].iter().copied())
        .collect()
}

/// 64-bit FNV-1a of a tensor's bytes.
fn fnv(data: &Data) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match data {
        Data::F32(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        Data::F64(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        Data::I32(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        Data::I64(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        other => eat(format!("{other:?}").as_bytes()),
    }
    h
}

/// The environment-driven debugging hooks of one rank (see the module docs).
#[derive(Debug, Default)]
pub struct ReplicaProbe {
    rank: usize,
    trace: Option<PathBuf>,
    fail_at: Option<(u64, bool)>,
}

impl ReplicaProbe {
    /// Reads `QATC_DP_TRACE` and `QATC_DP_FAIL` for rank `rank`.
    pub fn from_env(rank: usize) -> Result<ReplicaProbe> {
        let trace = std::env::var_os("QATC_DP_TRACE")
            .map(|d| PathBuf::from(d).join(format!("rank{rank}.trace")));
        let fail_at = match std::env::var("QATC_DP_FAIL") {
            Ok(v) => {
                let bad = || {
                    RuntimeError::Config(format!(
                        "QATC_DP_FAIL must be RANK:STEP or RANK:STEP:kill, found '{v}'"
                    ))
                };
                let (r, rest) = v.split_once(':').ok_or_else(bad)?;
                let (s, kill) = match rest.split_once(':') {
                    Some((s, "kill")) => (s, true),
                    Some(_) => return Err(bad()),
                    None => (rest, false),
                };
                let r: usize = r.trim().parse().map_err(|_| bad())?;
                let s: u64 = s.trim().parse().map_err(|_| bad())?;
                (r == rank).then_some((s, kill))
            }
            Err(_) => None,
        };
        if let Some(p) = &trace {
            std::fs::write(p, "").map_err(|e| RuntimeError::File {
                path: p.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(ReplicaProbe {
            rank,
            trace,
            fail_at,
        })
    }

    /// After global step `step`: appends the trace line, then fails if asked to.
    pub fn after_step(&self, step: u64, g: &Graph, store: &Store) -> Result<()> {
        if let Some(p) = &self.trace {
            let mut line = format!("step {step}");
            for (name, t) in params_and_state(g, store) {
                line.push_str(&format!(" {name}:{:016x}", fnv(&t.data)));
            }
            line.push('\n');
            let io = |e: std::io::Error| RuntimeError::File {
                path: p.clone(),
                message: e.to_string(),
            };
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(io)?;
            f.write_all(line.as_bytes()).map_err(io)?;
        }
        if self.fail_at == Some((step, true)) {
            // a rank that dies without a word: no error handling of ours runs
            std::process::abort();
        }
        if self.fail_at == Some((step, false)) {
            return Err(RuntimeError::Exec(format!(
                "injected failure (QATC_DP_FAIL) on rank {} after step {step}",
                self.rank
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_each_global_batch_in_order() {
        let order: Vec<usize> = (100..110).collect();
        // global batches [100..104), [104..108); 108, 109 dropped
        assert_eq!(shard(&order, 4, 2, 0), [100, 101, 104, 105]);
        assert_eq!(shard(&order, 4, 2, 1), [102, 103, 106, 107]);
        assert_eq!(
            shard(&order, 4, 1, 0),
            [100, 101, 102, 103, 104, 105, 106, 107]
        );
    }
}
