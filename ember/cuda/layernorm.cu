// Layer norm over the last axis of a C-contiguous (rows, cols) matrix, fp32 statistics.
// Forward: one block per row, two passes over the row (mean, then the centred variance: no
// E[x^2] - E[x]^2 cancellation), then y = (x - mean) * rstd * w + b. The residual variant first
// writes s = a + r (llm.c's fused residual + layer norm) and normalises s.
// Backward: one block per group of rows (grid-stride); dx per row, and the weight / bias
// gradients accumulated per block in shared memory (each thread owns the same columns in every
// row, so no shared atomics), then added once per block into fp32 global buffers.
#include "_common.cu"

namespace {

template <typename T, bool RESIDUAL>
__device__ __forceinline__ void ln_row(const T* __restrict__ xr, const T* __restrict__ rr,
                                       T* __restrict__ sr, const T* __restrict__ w,
                                       const T* __restrict__ b, T* __restrict__ yr, int cols,
                                       float eps, float* scratch, float& mean_out,
                                       float& rstd_out) {
    float acc = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = ember::to_f(xr[i]);
        if (RESIDUAL) {
            const T s = ember::from_f<T>(v + ember::to_f(rr[i]));
            sr[i] = s;
            v = ember::to_f(s);  // normalise exactly what is stored (as the composite does)
        }
        acc += v;
    }
    const float mean = ember::block_sum(acc, scratch) / (float)cols;
    // RESIDUAL: re-read the sum this block wrote (each thread reads only its own elements)
    const T* src = RESIDUAL ? sr : xr;
    acc = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float d = ember::to_f(src[i]) - mean;
        acc += d * d;
    }
    const float rstd = rsqrtf(ember::block_sum(acc, scratch) / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = (ember::to_f(src[i]) - mean) * rstd;
        if (w) v *= ember::to_f(w[i]);
        if (b) v += ember::to_f(b[i]);
        yr[i] = ember::from_f<T>(v);
    }
    mean_out = mean;
    rstd_out = rstd;
}

}  // namespace

template <typename T>
__global__ void layernorm_forward(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ b, T* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd, int rows,
                                  int cols, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * cols;
        float mu, rs;
        ln_row<T, false>(x + base, nullptr, nullptr, w, b, y + base, cols, eps, scratch, mu, rs);
        if (threadIdx.x == 0) {
            mean[row] = mu;
            rstd[row] = rs;
        }
    }
}

template <typename T>
__global__ void residual_layernorm_forward(const T* __restrict__ a, const T* __restrict__ r,
                                           T* __restrict__ s, const T* __restrict__ w,
                                           const T* __restrict__ b, T* __restrict__ y,
                                           float* __restrict__ mean, float* __restrict__ rstd,
                                           int rows, int cols, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * cols;
        float mu, rs;
        ln_row<T, true>(a + base, r + base, s + base, w, b, y + base, cols, eps, scratch, mu,
                        rs);
        if (threadIdx.x == 0) {
            mean[row] = mu;
            rstd[row] = rs;
        }
    }
}

// dxhat = g * w;  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// dw += g * xhat;  db += g   (dw, db: fp32, zeroed by the launcher; either may be null)
// Dynamic shared memory: 2 * cols floats when dw or db is wanted.
template <typename T>
__global__ void layernorm_backward(const T* __restrict__ g, const T* __restrict__ x,
                                   const T* __restrict__ w, const float* __restrict__ mean,
                                   const float* __restrict__ rstd, T* __restrict__ dx,
                                   float* __restrict__ dw, float* __restrict__ db, int rows,
                                   int cols) {
    __shared__ float scratch[32];
    extern __shared__ float partial[];  // [0, cols): dw, [cols, 2 cols): db
    const bool params = dw != nullptr || db != nullptr;
    if (params) {
        for (int i = threadIdx.x; i < 2 * cols; i += blockDim.x) partial[i] = 0.0f;
    }
    __syncthreads();  // partial[cols + i] may have been zeroed by another thread
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * cols;
        const T* gr = g + base;
        const T* xr = x + base;
        const float mu = mean[row], rs = rstd[row];
        float s1 = 0.0f, s2 = 0.0f;
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            const float gv = ember::to_f(gr[i]);
            const float xhat = (ember::to_f(xr[i]) - mu) * rs;
            const float dxhat = w ? gv * ember::to_f(w[i]) : gv;
            s1 += dxhat;
            s2 += dxhat * xhat;
            if (params) {
                partial[i] += gv * xhat;
                partial[cols + i] += gv;
            }
        }
        if (dx) {
            const float m1 = ember::block_sum(s1, scratch) / (float)cols;
            const float m2 = ember::block_sum(s2, scratch) / (float)cols;
            T* dr = dx + base;
            for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                const float gv = ember::to_f(gr[i]);
                const float xhat = (ember::to_f(xr[i]) - mu) * rs;
                const float dxhat = w ? gv * ember::to_f(w[i]) : gv;
                dr[i] = ember::from_f<T>(rs * (dxhat - m1 - xhat * m2));
            }
        }
    }
    if (params) {
        // each thread added only into its own columns: no barrier needed before reading them
        for (int i = threadIdx.x; i < cols; i += blockDim.x) {
            if (dw) atomicAdd(dw + i, partial[i]);
            if (db) atomicAdd(db + i, partial[cols + i]);
        }
    }
}
