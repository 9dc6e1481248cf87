// Fused classifier loss (llm.c's fused classifier, written for Ember): cross-entropy of
// class-index targets with log-softmax over the vocabulary. The forward keeps only the row's
// log-sum-exp (fp32); the backward re-reads the logits and writes
//   dlogits = dloss * rowscale * (softmax - (1 - eps) * onehot(y) - eps / C)
// straight into the gradient, so the (rows, C) probability matrix never exists.
// Targets are already checked on the host and ignored rows have rowscale 0 (their target
// replaced by a valid class), so no index here is out of range.
#include "_common.cu"

// loss[row] = rowscale * ((1 - eps) * (lse - x[y]) + eps * (lse - mean(x))); lse[row] saved.
template <typename T>
__global__ void cross_entropy_forward(const T* __restrict__ logits,
                                      const long long* __restrict__ target,
                                      const float* __restrict__ rowscale,  // nullable
                                      float* __restrict__ loss, float* __restrict__ lse_out,
                                      int rows, int cols, float eps) {
    __shared__ float scratch[32];
    using P = ember::Pack<T>;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = logits + (long long)row * cols;
        float m = ember::neg_inf(), s = 0.0f, total = 0.0f;
        if (ember::packable(xr, cols)) {
            for (int i = threadIdx.x * P::N; i < cols; i += blockDim.x * P::N) {
                const P p = *reinterpret_cast<const P*>(xr + i);
#pragma unroll
                for (int k = 0; k < P::N; ++k) {
                    const float v = ember::to_f(p.v[k]);
                    ember::online_add(v, m, s);
                    total += v;
                }
            }
        } else {
            for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                const float v = ember::to_f(xr[i]);
                ember::online_add(v, m, s);
                total += v;
            }
        }
        const float row_max = ember::block_max(m, scratch);
        const float mine = (s == 0.0f) ? 0.0f : s * expf(m - row_max);
        const float row_sum = ember::block_sum(mine, scratch);
        const float eps_part = eps != 0.0f ? ember::block_sum(total, scratch) : 0.0f;
        if (threadIdx.x == 0) {
            const float lse = row_max + logf(row_sum);
            const float picked = ember::to_f(xr[target[row]]);
            float l = (1.0f - eps) * (lse - picked);
            if (eps != 0.0f) l += eps * (lse - eps_part / (float)cols);
            const float scale = rowscale ? rowscale[row] : 1.0f;
            // an ignored row (scale 0) gives exactly 0, even when its logits are not finite
            loss[row] = scale == 0.0f ? 0.0f : scale * l;
            lse_out[row] = lse;
        }
    }
}

// dloss: one float per row (stride 1, reduction 'none') or one for all rows (stride 0), already
// divided by the mean's denominator on the host side (it stays a device array: no sync).
template <typename T>
__global__ void cross_entropy_backward(const T* __restrict__ logits,
                                       const long long* __restrict__ target,
                                       const float* __restrict__ rowscale,  // nullable
                                       const float* __restrict__ lse,
                                       const float* __restrict__ dloss, int dloss_stride,
                                       T* __restrict__ dlogits, int rows, int cols, float eps) {
    using P = ember::Pack<T>;
    const float smooth = eps / (float)cols;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * cols;
        const T* xr = logits + base;
        T* dr = dlogits + base;
        const float scale =
            dloss[(long long)row * dloss_stride] * (rowscale ? rowscale[row] : 1.0f);
        const float l = lse[row];
        const long long y = target[row];
        if (scale == 0.0f) {  // ignored row (or zero upstream gradient): exact zeros
            for (int i = threadIdx.x; i < cols; i += blockDim.x) dr[i] = ember::from_f<T>(0.0f);
            continue;
        }
        if (ember::packable(xr, cols) && ember::aligned16(dr)) {
            for (int i = threadIdx.x * P::N; i < cols; i += blockDim.x * P::N) {
                const P p = *reinterpret_cast<const P*>(xr + i);
                P o;
#pragma unroll
                for (int k = 0; k < P::N; ++k) {
                    const float prob = expf(ember::to_f(p.v[k]) - l);
                    const float hit = (i + k == y) ? 1.0f - eps : 0.0f;
                    o.v[k] = ember::from_f<T>(scale * (prob - hit - smooth));
                }
                *reinterpret_cast<P*>(dr + i) = o;
            }
        } else {
            for (int i = threadIdx.x; i < cols; i += blockDim.x) {
                const float prob = expf(ember::to_f(xr[i]) - l);
                const float hit = (i == y) ? 1.0f - eps : 0.0f;
                dr[i] = ember::from_f<T>(scale * (prob - hit - smooth));
            }
        }
    }
}
