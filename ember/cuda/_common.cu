// Shared device helpers for Ember's kernels: dtype conversion (fp32 accumulation for
// __half / __nv_bfloat16 storage), warp and block reductions, 128-bit packed loads.
// compile.py inlines this file into every kernel source (so CuPy's cache key covers it).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace ember {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) {
    return __float2half_rn(x);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 floats of shared memory; the leading __syncthreads makes it safe
// to call the reduction twice in a row with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : neg_inf();
    return warp_max(v);
}

// Fold one value into a thread's running (max, sum of exp(x - max)). -inf is skipped (it adds
// exp(-inf) = 0; folding it naively would give exp(-inf + inf) = NaN); NaN propagates.
__device__ __forceinline__ void online_add(float v, float& m, float& s) {
    if (v > m) {
        s = s * expf(m - v) + 1.0f;
        m = v;
    } else if (v != neg_inf()) {  // NaN != -inf: it propagates
        s += expf(v - m);
    }
}

// 16 bytes of T: one 128-bit load or store.
template <typename T> struct alignas(16) Pack {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

template <typename T> __device__ __forceinline__ bool aligned16(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull;
}

// A row of `n` elements can be read in Packs when its start is 16-byte aligned and n is a
// multiple of the pack width (then every row of a contiguous matrix is aligned too).
template <typename T> __device__ __forceinline__ bool packable(const T* row, long long n) {
    return aligned16(row) && (n % Pack<T>::N) == 0;
}

}  // namespace ember
