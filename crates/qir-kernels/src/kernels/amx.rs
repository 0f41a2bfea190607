//! The AMX-INT8 tile kernels: up to 2 x 2 accumulator tiles of 16 x 16 i32 (`tmm0..tmm3`),
//! two L tiles of 16 rows x 64 bytes (`tmm4`, `tmm5`) and two R tiles of 16 groups x 64
//! bytes (`tmm6`, `tmm7`, one panel each, the panel layout being exactly an AMX B tile).
//! A linear layer runs `tdpbusd` (L unsigned, R signed), a convolution `tdpbsud` (L signed,
//! R unsigned). All eight tiles use one configuration (16 rows x 64 bytes), loaded once per
//! thread and call; the accumulators go to the tile buffer with `tilestored` and the
//! AVX-512 epilogue runs from there.
//!
//! The kernel is written once over [`TileUnit`]: [`Hw`] issues the instructions through
//! `asm!`, [`Emu`] is a software model of the same eight tiles. The emulated path
//! ([`crate::Path::AmxEmulated`]) runs the AMX blocking, padding and layouts on any machine,
//! so the test suite checks them bit for bit even where the CPU has no AMX; only the
//! instruction encodings are then untested.
//!
//! Linux grants the tile state to a process only after
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; [`enable`] asks once and the path
//! is available only if CPUID reports AMX-TILE and AMX-INT8 and the kernel said yes.

use super::{Kernels, TileFn};
use crate::epilogue::{EpiFn, epilogue_portable};

/// The operations of an 8-tile AMX unit, tiles named by const index.
pub(crate) trait TileUnit {
    /// `tilezero tmm{T}`.
    unsafe fn zero<const T: u8>(&mut self);
    /// `tileloadd tmm{T}, [p + stride * row]` for 16 rows of 64 bytes.
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize);
    /// `tmm{C} += tmm{A} . tmm{B}` in 4-byte groups: `tdpbusd` if `LU` (A unsigned,
    /// B signed), else `tdpbsud` (A signed, B unsigned).
    unsafe fn dot<const C: u8, const A: u8, const B: u8, const LU: bool>(&mut self);
    /// `tilestored [p + stride * row], tmm{T}` for 16 rows of 64 bytes.
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize);
}

/// The hardware tile unit (the configuration must be loaded; see [`configure`]).
pub(crate) struct Hw;

#[cfg(target_arch = "x86_64")]
impl TileUnit for Hw {
    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        // SAFETY: the caller configured the tiles; tilezero touches no memory.
        unsafe { std::arch::asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }
    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        // SAFETY: the caller guarantees 16 rows of 64 readable bytes at `p + stride * row`.
        unsafe {
            std::arch::asm!("tileloadd tmm{t}, [{p} + {s} * 1]", t = const T, p = in(reg) p, s = in(reg) stride, options(nostack, readonly))
        };
    }
    #[inline(always)]
    unsafe fn dot<const C: u8, const A: u8, const B: u8, const LU: bool>(&mut self) {
        // SAFETY: register-only tile arithmetic on configured tiles.
        unsafe {
            if LU {
                std::arch::asm!("tdpbusd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B, options(nostack, nomem))
            } else {
                std::arch::asm!("tdpbsud tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B, options(nostack, nomem))
            }
        }
    }
    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        // SAFETY: the caller guarantees 16 rows of 64 writable bytes at `p + stride * row`.
        unsafe {
            std::arch::asm!("tilestored [{p} + {s} * 1], tmm{t}", t = const T, p = in(reg) p, s = in(reg) stride, options(nostack))
        };
    }
}

/// A software AMX unit: eight tiles of 16 rows x 64 bytes.
pub(crate) struct Emu {
    t: [[u8; 1024]; 8],
}

impl TileUnit for Emu {
    unsafe fn zero<const T: u8>(&mut self) {
        self.t[T as usize] = [0; 1024];
    }
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        for row in 0..16 {
            // SAFETY: as for the hardware load.
            let src = unsafe { std::slice::from_raw_parts(p.add(row * stride), 64) };
            self.t[T as usize][row * 64..row * 64 + 64].copy_from_slice(src);
        }
    }
    unsafe fn dot<const C: u8, const A: u8, const B: u8, const LU: bool>(&mut self) {
        let (a, b) = (self.t[A as usize], self.t[B as usize]);
        let c = &mut self.t[C as usize];
        for m in 0..16 {
            for n in 0..16 {
                let o = m * 64 + n * 4;
                let mut acc = i32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
                for g in 0..16 {
                    for i in 0..4 {
                        let x = a[m * 64 + g * 4 + i];
                        let y = b[g * 64 + n * 4 + i];
                        let p = if LU {
                            x as i32 * y as i8 as i32
                        } else {
                            x as i8 as i32 * y as i32
                        };
                        acc = acc.wrapping_add(p);
                    }
                }
                c[o..o + 4].copy_from_slice(&acc.to_le_bytes());
            }
        }
    }
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        for row in 0..16 {
            // SAFETY: as for the hardware store.
            let dst = unsafe { std::slice::from_raw_parts_mut(p.add(row * stride), 64) };
            dst.copy_from_slice(&self.t[T as usize][row * 64..row * 64 + 64]);
        }
    }
}

/// One tile of `16 RT` rows by `16 CT` columns.
///
/// # Safety
/// The tile unit is configured (hardware); `l` has `16 RT` rows of stride `ls` (a multiple
/// of 64) with `64 * kg.div_ceil(16)` readable bytes each; `r` has `CT` panels of stride
/// `rs`, each `64 * 16 * kg.div_ceil(16)` bytes; `out` holds `16 RT x 16 CT` i32.
#[inline(always)]
unsafe fn tile_on<U: TileUnit, const RT: usize, const CT: usize, const LU: bool>(
    u: &mut U,
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
) {
    let steps = kg.div_ceil(16);
    let ob = out.cast::<u8>();
    let os = CT * 64; // bytes per row of the tile buffer
    // SAFETY: all pointers stay inside the ranges of the function's contract.
    unsafe {
        u.zero::<0>();
        if CT == 2 {
            u.zero::<1>();
        }
        if RT == 2 {
            u.zero::<2>();
            if CT == 2 {
                u.zero::<3>();
            }
        }
        for s in 0..steps {
            u.load::<4>(l.add(s * 64), ls);
            u.load::<6>(r.add(s * 1024), 64);
            u.dot::<0, 4, 6, LU>();
            if CT == 2 {
                u.load::<7>(r.add(rs + s * 1024), 64);
                u.dot::<1, 4, 7, LU>();
            }
            if RT == 2 {
                u.load::<5>(l.add(16 * ls + s * 64), ls);
                u.dot::<2, 5, 6, LU>();
                if CT == 2 {
                    u.dot::<3, 5, 7, LU>();
                }
            }
        }
        u.store::<0>(ob, os);
        if CT == 2 {
            u.store::<1>(ob.add(64), os);
        }
        if RT == 2 {
            u.store::<2>(ob.add(16 * os), os);
            if CT == 2 {
                u.store::<3>(ob.add(16 * os + 64), os);
            }
        }
    }
}

/// The hardware tile function.
///
/// # Safety
/// As [`tile_on`], on a thread where [`configure`] ran.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_hw<const RT: usize, const CT: usize, const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
) {
    // SAFETY: forwarded contract.
    unsafe { tile_on::<Hw, RT, CT, LU>(&mut Hw, l, ls, r, rs, kg, out) }
}

/// The emulated tile function.
///
/// # Safety
/// As [`tile_on`].
unsafe fn tile_emu<const RT: usize, const CT: usize, const LU: bool>(
    l: *const u8,
    ls: usize,
    r: *const u8,
    rs: usize,
    kg: usize,
    out: *mut i32,
) {
    let mut e = Emu { t: [[0; 1024]; 8] };
    // SAFETY: forwarded contract.
    unsafe { tile_on::<Emu, RT, CT, LU>(&mut e, l, ls, r, rs, kg, out) }
}

static EMU: [[[TileFn; 2]; 2]; 2] = [
    [
        [tile_emu::<1, 1, false>, tile_emu::<1, 2, false>],
        [tile_emu::<2, 1, false>, tile_emu::<2, 2, false>],
    ],
    [
        [tile_emu::<1, 1, true>, tile_emu::<1, 2, true>],
        [tile_emu::<2, 1, true>, tile_emu::<2, 2, true>],
    ],
];

#[cfg(target_arch = "x86_64")]
static HW: [[[TileFn; 2]; 2]; 2] = [
    [
        [tile_hw::<1, 1, false>, tile_hw::<1, 2, false>],
        [tile_hw::<2, 1, false>, tile_hw::<2, 2, false>],
    ],
    [
        [tile_hw::<1, 1, true>, tile_hw::<1, 2, true>],
        [tile_hw::<2, 1, true>, tile_hw::<2, 2, true>],
    ],
];

/// The AMX kernels: 32-row tiles for more than 16 rows, else 16; up to two panels.
/// `hw` selects the hardware unit (with the AVX-512 epilogue), else the emulator (with the
/// portable epilogue, so that it runs anywhere).
pub(crate) fn kernels(lu: bool, rows: usize, hw: bool) -> Kernels {
    let rt = if rows > 16 { 2 } else { 1 };
    let (tiles, epi): (&'static [TileFn; 2], EpiFn) = if hw {
        #[cfg(target_arch = "x86_64")]
        {
            (&HW[lu as usize][rt - 1], crate::epilogue::epilogue_avx512)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the AMX path is never available off x86-64")
    } else {
        (&EMU[lu as usize][rt - 1], epilogue_portable)
    };
    Kernels {
        strided: None,
        pool2: None,
        mr: 16 * rt,
        tiles,
        kalign: 64,
        epi,
        amx_hw: hw,
    }
}

/// The one tile configuration: palette 1, all eight tiles 16 rows x 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

#[cfg(target_arch = "x86_64")]
static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1; // palette 1
    let mut t = 0;
    while t < 8 {
        // bytes 16..48: colsb of tiles 0..15 (u16, little endian); 48..64: rows
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

/// Loads the tile configuration on this thread.
pub(crate) fn configure() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only called when `enable` succeeded (the AMX path is available); the
    // configuration is a valid palette-1 layout in static memory.
    unsafe {
        std::arch::asm!("ldtilecfg [{c}]", c = in(reg) CONFIG.0.as_ptr(), options(nostack, readonly))
    };
}

/// Releases the tile state on this thread.
pub(crate) fn release() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `configure`; tilerelease has no operands.
    unsafe {
        std::arch::asm!("tilerelease", options(nostack, nomem))
    };
}

/// Whether the CPU has AMX-TILE and AMX-INT8, the OS enables the tile state in XCR0, and
/// (on Linux) the kernel granted this process the tile data permission.
pub(crate) fn enable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        let max = __cpuid_count(0, 0).eax;
        if max < 7 {
            return false;
        }
        let l7 = __cpuid_count(7, 0);
        let (amx_tile, amx_int8) = (l7.edx & (1 << 24) != 0, l7.edx & (1 << 25) != 0);
        let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
        if !(amx_tile && amx_int8 && osxsave) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so xgetbv with ecx = 0 is defined.
        let xcr0 = unsafe { xgetbv0() };
        // XTILECFG (bit 17) and XTILEDATA (bit 18) enabled by the OS
        if xcr0 & (3 << 17) != 3 << 17 {
            return false;
        }
        request_permission()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE; XCR0 (ecx = 0) always exists then.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes an integer argument and changes
    // only this process's permitted xsave features.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_permission() -> bool {
    // other systems either grant the state up front or not at all; be conservative
    false
}
