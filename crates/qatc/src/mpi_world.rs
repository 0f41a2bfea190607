//! The MPI world of a data-parallel run (feature `mpi`): when the process was started by
//! `mpirun` (the launcher's environment says so), MPI is initialized and its world
//! communicator installed as the process' [`qir_exec::collective::Communicator`]; the
//! returned [`World`] finalizes MPI when dropped, at the end of `main`.
//!
//! Invariant: MPI calls are serialized by a mutex (MPI is initialized with
//! `MPI_THREAD_SERIALIZED`), so the communicator can be shared across threads.

use std::sync::Mutex;

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use qir_exec::collective::{Buffer, Communicator, ReduceOp, set_communicator};

/// Keeps MPI initialized; finalizes it when dropped.
pub struct World {
    _universe: Universe,
}

struct MpiComm {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
}

// SAFETY: the world communicator is a predefined handle valid for the whole run, and every
// use goes through the mutex, which MPI_THREAD_SERIALIZED allows from any thread.
unsafe impl Send for MpiComm {}
// SAFETY: as above.
unsafe impl Sync for MpiComm {}

fn op(op: ReduceOp) -> SystemOperation {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => SystemOperation::sum(),
        ReduceOp::Min => SystemOperation::min(),
        ReduceOp::Max => SystemOperation::max(),
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn reduce(&self, buf: Buffer<'_>, o: ReduceOp) -> Result<(), String> {
        let world = self.world.lock().map_err(|_| "the MPI lock is poisoned")?;
        match buf {
            Buffer::F32(b) => {
                let send = b.to_vec();
                world.all_reduce_into(&send[..], b, op(o));
            }
            Buffer::F64(b) => {
                let send = b.to_vec();
                world.all_reduce_into(&send[..], b, op(o));
            }
        }
        Ok(())
    }
    fn abort(&self, message: &str, code: i32) {
        eprintln!(
            "error: rank {} failed, aborting the MPI job: {message}",
            self.rank
        );
        // Not through the mutex: the failing thread may hold it.
        SimpleCommunicator::world().abort(code)
    }
}

/// True when the process was started by an MPI launcher.
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Initializes MPI and installs its communicator when started by `mpirun`; `None` for a
/// plain run (nothing changes then).
pub fn init() -> Result<Option<World>, String> {
    if !launched_by_mpi() {
        return Ok(None);
    }
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        .ok_or("MPI could not be initialized")?;
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    set_communicator(Box::new(MpiComm {
        world: Mutex::new(world),
        rank,
        size,
    }))?;
    Ok(Some(World {
        _universe: universe,
    }))
}
