//! Tensors and data on disk: IDX data sets ([`idx`]), NumPy `.npy`/`.npz` ([`npy`]),
//! safetensors weights and checkpoints ([`weights`]), and the atomic write every writer
//! here goes through ([`atomic`]).
//!
//! Invariant: no reader panics on malformed bytes; every error is one line naming the file.

pub mod atomic;
pub mod idx;
pub mod npy;
pub mod weights;

pub use atomic::{clean_stale_temporaries, write_atomic, write_atomic_with};
pub use idx::{IdxArray, parse_idx, read_idx};
pub use npy::{parse_npy, parse_npz, read_npy, read_npz, write_npy, write_npz};
pub use weights::{
    Require, TensorFile, params_and_state, read_safetensors, store_from_file, write_safetensors,
};
