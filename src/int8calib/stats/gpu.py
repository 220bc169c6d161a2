"""The histogram kernels on an NVIDIA GPU (CuPy), for activations that live there.

The same counts as the CPU kernels (:mod:`.kernels`), bit for bit: the bit-pattern key is
integer arithmetic, min and max use the same order-preserving integer, and TensorRT's linear
bin is the float64 product rounded to float32 that the CPU kernel computes (IEEE-exact on
both). Counts are integer sums, so the order in which GPU threads add them changes nothing.
Arrays come as CuPy arrays or anything DLPack hands over (a torch CUDA tensor, an ONNX
Runtime CUDA output); numpy arrays are copied to the GPU first. CuPy is imported on first use
only: the core runs without it (docs/performance.md: what ran on a GPU).
"""

from __future__ import annotations

import functools

import numpy as np

from .kernels import _decode_min_max, _TINY

_SOURCE = r"""
__device__ __forceinline__ int ordered(int b) { return b ^ ((b >> 31) & 0x7FFFFFFF); }

// Warp-aggregated increment: lanes with the same key add once (Relu zeros all share one).
__device__ __forceinline__ void add_one(unsigned long long* counts, unsigned int key) {
    unsigned int peers = __match_any_sync(__activemask(), key);
    if ((__ffs(peers) - 1) == (threadIdx.x & 31)) atomicAdd(counts + key, (unsigned long long)__popc(peers));
}

extern "C" __global__ void bit_pattern(const int* x, long long n, unsigned long long* counts,
                                       unsigned int mask, unsigned int shift, int* lohi) {
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int b = x[i];
        add_one(counts, ((unsigned int)b & mask) >> shift);
        int o = ordered(b);
        lo = min(lo, o);
        hi = max(hi, o);
    }
    lo = __reduce_min_sync(0xFFFFFFFF, lo);
    hi = __reduce_max_sync(0xFFFFFFFF, hi);
    if ((threadIdx.x & 31) == 0) { atomicMin(lohi, lo); atomicMax(lohi + 1, hi); }
}

// The same counts with most increments in shared memory: a tensor's keys fill a window of
// WINDOW keys below its largest |x| (about 24 binades at 8 mantissa bits) on each sign; zeros are
// counted by warp ballot, and keys outside the windows (tiny values) go to global memory.
#define WINDOW 6136  // 2 x 6136 counts + 2 zero counts: 49,096 bytes, under the 48 KiB of static shared memory
extern "C" __global__ void bit_pattern_window(const int* x, long long n, unsigned long long* counts,
                                              unsigned int mask, unsigned int shift, unsigned int base,
                                              unsigned int half) {
    __shared__ unsigned int local[2 * WINDOW];
    __shared__ unsigned int zeros[2];
    for (int k = threadIdx.x; k < 2 * WINDOW; k += blockDim.x) local[k] = 0;
    if (threadIdx.x < 2) zeros[threadIdx.x] = 0;
    __syncthreads();
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned int key = ((unsigned int)x[i] & mask) >> shift;
        unsigned int side = key >= half;  // the sign's half of signed counts (always 0 for |x|)
        unsigned int magnitude = key - side * half;
        unsigned int active = __activemask();
        unsigned int zero = __ballot_sync(active, magnitude == 0 && side == 0);
        unsigned int negzero = __ballot_sync(active, magnitude == 0 && side == 1);
        unsigned int lane = threadIdx.x & 31;
        if (lane == __ffs(active) - 1) {
            if (zero) atomicAdd(zeros, (unsigned int)__popc(zero));
            if (negzero) atomicAdd(zeros + 1, (unsigned int)__popc(negzero));
        }
        if (magnitude == 0) continue;
        unsigned int rel = magnitude - base;
        if (magnitude >= base && rel < WINDOW) atomicAdd(local + side * WINDOW + rel, 1u);
        else atomicAdd(counts + key, 1ull);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < 2 * WINDOW; k += blockDim.x)
        if (local[k]) atomicAdd(counts + (k / WINDOW) * half + base + (k % WINDOW), (unsigned long long)local[k]);
    if (threadIdx.x < 2 && zeros[threadIdx.x]) atomicAdd(counts + threadIdx.x * half, (unsigned long long)zeros[threadIdx.x]);
}

extern "C" __global__ void min_max(const int* x, long long n, int* lohi) {
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        int o = ordered(x[i]);
        lo = min(lo, o);
        hi = max(hi, o);
    }
    lo = __reduce_min_sync(0xFFFFFFFF, lo);
    hi = __reduce_max_sync(0xFFFFFFFF, hi);
    if ((threadIdx.x & 31) == 0) { atomicMin(lohi, lo); atomicMax(lohi + 1, hi); }
}

// TensorRT's bin floor(|x| / w) (clipped: of min(max(x, 0), clip)), as the CPU kernel computes
// it; 2049 counts per block in shared memory, bin 2048 holding the values at the upper edge.
extern "C" __global__ void linear(const float* x, long long n, unsigned long long* counts,
                                  double inv, float clip, int clipped) {
    __shared__ unsigned int local[2049];
    for (int k = threadIdx.x; k < 2049; k += blockDim.x) local[k] = 0;
    __syncthreads();
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = clipped ? fminf(fmaxf(x[i], 0.0f), clip) : fabsf(x[i]);
        int bin = min((int)__double2float_rn((double)v * inv), 2048);
        unsigned int peers = __match_any_sync(__activemask(), bin);
        if ((__ffs(peers) - 1) == (threadIdx.x & 31)) atomicAdd(local + bin, (unsigned int)__popc(peers));
    }
    __syncthreads();
    for (int k = threadIdx.x; k < 2049; k += blockDim.x)
        if (local[k]) atomicAdd(counts + k, (unsigned long long)local[k]);
}
"""

_THREADS = 256


@functools.lru_cache(maxsize=1)
def _module():
    import cupy

    return cupy, cupy.RawModule(code=_SOURCE, options=("-std=c++17",))


def available() -> bool:
    """Whether CuPy loads and sees a GPU."""
    try:
        cupy, _ = _module()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: the CPU kernels serve
        return False


def _flat(values):
    cupy, _ = _module()
    array = values if isinstance(values, cupy.ndarray) else (
        cupy.asarray(values) if isinstance(values, np.ndarray) else cupy.from_dlpack(values)
    )
    return cupy.ascontiguousarray(array, dtype=cupy.float32).reshape(-1)


@functools.lru_cache(maxsize=8)
def _multiprocessors(device: int) -> int:
    cupy, _ = _module()
    return cupy.cuda.Device(device).attributes["MultiProcessorCount"]


def _blocks(n: int) -> int:
    """Enough blocks to fill the GPU (8 per multiprocessor), no more than the values need."""
    cupy, _ = _module()
    return max(1, min(_multiprocessors(cupy.cuda.Device().id) * 8, -(-n // _THREADS)))


def _lohi():
    cupy, _ = _module()
    return cupy.array([0x7FFFFFFF, -0x7FFFFFFF - 1], cupy.int32)


_WINDOW = 6136


def accumulate_windowed(values, counts, mantissa_bits: int, signed: bool) -> tuple[float, float, bool]:
    """:func:`accumulate_checked` with most increments in a shared-memory window: min and max
    come first (one small copy to the host) and place the window below the largest |x|."""
    cupy, module = _module()
    flat = _flat(values)
    lo, hi, finite = min_max_checked(flat)
    if flat.size == 0 or not finite:
        return lo, hi, finite
    shift = 23 - mantissa_bits
    top = int(np.array(max(abs(lo), abs(hi)), np.float32).view(np.uint32)) >> shift
    half = 256 << mantissa_bits
    module.get_function("bit_pattern_window")(
        (_blocks(flat.size),), (_THREADS,),
        (flat.view(cupy.int32), np.int64(flat.size), counts, np.uint32(0xFFFFFFFF if signed else 0x7FFFFFFF),
         np.uint32(shift), np.uint32(max(1, top - _WINDOW + 1)), np.uint32(half if signed else 1 << 31)),
    )
    return lo, hi, finite


def accumulate_checked(values, counts, mantissa_bits: int, signed: bool) -> tuple[float, float, bool]:
    """:func:`kernels.accumulate_checked` on the GPU, one pass, every increment in global memory
    (warp-aggregated); ``counts`` is a CuPy uint64 array (copy it to the host with ``.get()``:
    the CPU kernel's int64 counts)."""
    cupy, module = _module()
    flat = _flat(values)
    if flat.size == 0:
        return float("inf"), float("-inf"), True
    lohi = _lohi()
    mask = np.uint32(0xFFFFFFFF if signed else 0x7FFFFFFF)
    module.get_function("bit_pattern")(
        (_blocks(flat.size),), (_THREADS,),
        (flat.view(cupy.int32), np.int64(flat.size), counts, mask, np.uint32(23 - mantissa_bits), lohi),
    )
    lo, hi = (int(v) for v in lohi.get())
    return _decode_min_max(flat, lo, hi)


def bin_linear(values, counts, width: float, clip_hi: float | None = None) -> None:
    """:func:`kernels.bin_linear` on the GPU into ``counts``, a CuPy uint64 array of 2049
    whose last count holds the values at the upper edge (see :func:`linear_counts`)."""
    cupy, module = _module()
    flat = _flat(values)
    if flat.size == 0:
        return
    inverse = 1.0 / max(float(np.float32(width)), _TINY)
    module.get_function("linear")(
        (_blocks(flat.size),), (_THREADS,),
        (flat, np.int64(flat.size), counts, np.float64(inverse), np.float32(np.inf if clip_hi is None else clip_hi),
         np.int32(clip_hi is not None)),
    )


def linear_counts(counts) -> tuple[np.ndarray, int]:
    """(TensorRT's 2048 counts as the CPU kernel leaves them, values at the upper edge)."""
    host = counts.get().astype(np.int64)
    out = host[:2048].copy()
    out[2047] += host[2048]
    return out, int(host[2048])


def min_max_checked(values) -> tuple[float, float, bool]:
    """(min, max, whether every value was finite) of GPU values, as :func:`kernels.accumulate_checked` gives them."""
    cupy, module = _module()
    flat = _flat(values)
    if flat.size == 0:
        return float("inf"), float("-inf"), True
    lohi = _lohi()
    module.get_function("min_max")((_blocks(flat.size),), (_THREADS,), (flat.view(cupy.int32), np.int64(flat.size), lohi))
    lo, hi = (int(v) for v in lohi.get())
    return _decode_min_max(flat, lo, hi)
