//! Kernel paths and their run-time selection: which instruction set a call uses.
//!
//! Invariant: a concrete path is only ever run after [`Path::is_available`] said yes for it
//! (for AMX that includes the kernel granting the tile state to the process), and every
//! path computes bit-identical results.

use std::sync::OnceLock;

use crate::error::{KResult, KernelError};

/// An implementation of the kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Choose per call from the shape and the CPU (see [`Path::resolve`]).
    Auto,
    /// Plain Rust, the reference; runs everywhere.
    Portable,
    /// AVX2: `vpmaddwd` on widened 16-bit operands (exact; `vpmaddubsw` would saturate).
    Avx2,
    /// AVX-512 VNNI: `vpdpbusd` on 512-bit vectors, AVX-512 epilogue.
    Avx512Vnni,
    /// AMX-INT8: `tdpbusd`/`tdpbsud` on 16x64-byte tiles, AVX-512 epilogue.
    Amx,
    /// The AMX kernels run on a software model of the tile unit (portable epilogue): slow,
    /// for testing the AMX blocking and layouts on machines without AMX. Always available,
    /// never chosen by `Auto`, not listed by [`Path::available`].
    AmxEmulated,
}

impl Path {
    /// Every concrete path, slowest first.
    pub const ALL: [Path; 4] = [Path::Portable, Path::Avx2, Path::Avx512Vnni, Path::Amx];

    /// A short lowercase name (`portable`, `avx2`, `avx512-vnni`, `amx`, `amx-emulated`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            Path::Auto => "auto",
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512Vnni => "avx512-vnni",
            Path::Amx => "amx",
            Path::AmxEmulated => "amx-emulated",
        }
    }

    /// The path named `s` (as printed by [`Path::name`]).
    pub fn from_name(s: &str) -> Option<Path> {
        [
            Path::Auto,
            Path::Portable,
            Path::Avx2,
            Path::Avx512Vnni,
            Path::Amx,
            Path::AmxEmulated,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }

    /// Whether this path can run here (`Auto` always can).
    pub fn is_available(self) -> bool {
        let f = features();
        match self {
            Path::Auto | Path::Portable | Path::AmxEmulated => true,
            Path::Avx2 => f.avx2,
            Path::Avx512Vnni => f.vnni,
            Path::Amx => f.amx,
        }
    }

    /// The concrete paths this machine runs, slowest first.
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// The fastest concrete path for large shapes on this machine.
    pub fn best() -> Path {
        *Path::available().last().unwrap_or(&Path::Portable)
    }

    /// The concrete path of a contraction of `rows x k` by `k x cols` (rows: the broadcast
    /// side of the tile, cols: the vector side). `Auto` picks AMX when the tiles are
    /// reasonably filled (at least 16 rows, 32 columns and 64 reduction steps — below that,
    /// padding to 16x64 tiles and spilling the tiles through memory costs more than VNNI's
    /// register tiles), else AVX-512 VNNI, else AVX2, else portable. A concrete path is
    /// returned as is if available, else an error.
    pub fn resolve(self, rows: usize, cols: usize, k: usize) -> KResult<Path> {
        match self {
            Path::Auto => {
                let f = features();
                Ok(if f.amx && rows >= 16 && cols >= 32 && k >= 64 {
                    Path::Amx
                } else if f.vnni {
                    Path::Avx512Vnni
                } else if f.avx2 {
                    Path::Avx2
                } else {
                    Path::Portable
                })
            }
            p if p.is_available() => Ok(p),
            p => Err(KernelError::PathUnavailable(p.name())),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Features {
    avx2: bool,
    vnni: bool,
    amx: bool,
}

fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    let vnni = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("avx512vnni");
    // the AMX kernels use the AVX-512 epilogue
    let amx = vnni && crate::kernels::amx::enable();
    Features { avx2, vnni, amx }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::default()
}
