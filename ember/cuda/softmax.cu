// Row-wise softmax / log_softmax over the last axis of a C-contiguous (rows, cols) matrix.
// One block per row (grid-stride over rows), an online max/sum in one read of the row
// (rescaling the running sum whenever the max grows), warp shuffles then one shared-memory
// step per reduction, fp32 accumulation for __half / __nv_bfloat16, 128-bit loads when the row
// is 16-byte aligned and its length a multiple of the pack width.
#include "_common.cu"

namespace {

// Combine every thread's (m, s) into the row's (max, sum) on all threads.
__device__ __forceinline__ void row_stats(float m, float s, float* scratch, float& row_max,
                                          float& row_sum) {
    row_max = ember::block_max(m, scratch);
    // a thread that saw nothing but -inf (s = 0) adds 0, even when the row max is -inf too (the
    // guard avoids 0 * exp(NaN)); a NaN it folded in (s = NaN) propagates to the whole row
    const float mine = (s == 0.0f) ? 0.0f : s * expf(m - row_max);
    row_sum = ember::block_sum(mine, scratch);
}

}  // namespace

template <typename T, bool LOG>
__global__ void softmax_forward(const T* __restrict__ x, T* __restrict__ y, int rows, int cols) {
    __shared__ float scratch[32];
    using P = ember::Pack<T>;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (long long)row * cols;
        T* yr = y + (long long)row * cols;
        const bool vec = ember::packable(xr, cols) && ember::aligned16(yr);
        float m = ember::neg_inf(), s = 0.0f;
        if (vec) {
            for (int i = threadIdx.x * P::N; i < cols; i += blockDim.x * P::N) {
                const P p = *reinterpret_cast<const P*>(xr + i);
#pragma unroll
                for (int k = 0; k < P::N; ++k) ember::online_add(ember::to_f(p.v[k]), m, s);
            }
        } else {
            for (int i = threadIdx.x; i < cols; i += blockDim.x) ember::online_add(ember::to_f(xr[i]), m, s);
        }
        float row_max, row_sum;
        row_stats(m, s, scratch, row_max, row_sum);
        // softmax: exp(x - max) / sum; log_softmax: x - max - log(sum)
        const float shift = LOG ? row_max + logf(row_sum) : row_max;
        const float inv = 1.0f / row_sum;
        if (vec) {
            for (int i = threadIdx.x * P::N; i < cols; i += blockDim.x * P::N) {
                const P p = *reinterpret_cast<const P*>(xr + i);
                P o;
#pragma unroll
                for (int k = 0; k < P::N; ++k) {
                    const float v = ember::to_f(p.v[k]) - shift;
                    o.v[k] = ember::from_f<T>(LOG ? v : expf(v) * inv);
                }
                *reinterpret_cast<P*>(yr + i) = o;
            }
        } else {
            for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                const float v = ember::to_f(xr[i]) - shift;
                yr[i] = ember::from_f<T>(LOG ? v : expf(v) * inv);
            }
        }
    }
}

// softmax:     dx = y * (g - sum(g * y))
// log_softmax: dx = g - exp(y) * sum(g)
template <typename T, bool LOG>
__global__ void softmax_backward(const T* __restrict__ y, const T* __restrict__ g,
                                 T* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * cols;
        const T* yr = y + base;
        const T* gr = g + base;
        T* dr = dx + base;
        float acc = 0.0f;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            const float gv = ember::to_f(gr[i]);
            acc += LOG ? gv : gv * ember::to_f(yr[i]);
        }
        const float total = ember::block_sum(acc, scratch);
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            const float yv = ember::to_f(yr[i]), gv = ember::to_f(gr[i]);
            dr[i] = ember::from_f<T>(LOG ? gv - expf(yv) * total : yv * (gv - total));
        }
    }
}
