// Flash-style causal attention (top-left causal mask, torch's is_causal): tiles of K / V (or of
// Q / dO) staged in shared memory, an online softmax, and no (T, S) matrix ever stored. The
// forward keeps one fp32 log-sum-exp per query row; the backward recomputes the probabilities
// from it (FlashAttention-2's scheme, as three kernels so no atomics are needed):
//   prep:  D_i = rowsum(dO_i * O_i)
//   dq:    per query row, over key tiles:   dQ_i = scale * sum_j dS_ij K_j
//   dkdv:  per key row, over query tiles:   dV_j = sum_i P_ij dO_i,  dK_j = scale * sum_i dS_ij Q_i
// with P_ij = exp(scale q_i.k_j - L_i) for j <= i (else 0) and dS_ij = P_ij (dO_i.v_j - D_i).
// Layout: q, o, dO (BH, T, d); k, v (BH, S, d), all contiguous; d <= DMAX. One warp owns a few
// rows; in a tile, lane l takes key (or query) l for the dot products and output dims
// l, l + 32, ... for the accumulation. Tile rows are padded to DMAX + 1 floats: lanes reading
// the same column of different rows hit different banks.
#include "_common.cu"

namespace flash {

constexpr int WARPS = 4;
constexpr int TILE = 32;        // keys (or queries) per shared-memory tile: one per lane
constexpr int DMAX = 128;       // head dim limit
constexpr int PER_LANE = DMAX / 32;
constexpr int FWD_ROWS = 4;     // query rows per warp in the forward
constexpr int BWD_ROWS = 2;     // rows per warp in the backward kernels (more tiles in smem)

template <typename T>
__device__ __forceinline__ void load_rows(float* dst, int stride, const T* src, long long first,
                                          int count, int limit, int d) {
    // rows [first, first + count) of a (limit, d) matrix into dst (row stride `stride`), zeros
    // past `limit` and past d
    for (int e = threadIdx.x; e < count * DMAX; e += blockDim.x) {
        const int r = e / DMAX, c = e % DMAX;
        const long long row = first + r;
        dst[r * stride + c] = (row < limit && c < d) ? ember::to_f(src[row * d + c]) : 0.0f;
    }
}

__device__ __forceinline__ float dot(const float* a, const float* b, int d) {
    float acc = 0.0f;
    for (int c = 0; c < d; ++c) acc += a[c] * b[c];
    return acc;
}

}  // namespace flash

template <typename T>
__global__ void flash_attn_forward(const T* __restrict__ q, const T* __restrict__ k,
                                   const T* __restrict__ v, T* __restrict__ o,
                                   float* __restrict__ lse, int tgt, int src, int d,
                                   float scale) {
    using namespace flash;
    constexpr int BR = WARPS * FWD_ROWS;
    __shared__ float qs[BR * DMAX];
    __shared__ float ks[TILE * (DMAX + 1)];
    __shared__ float vs[TILE * (DMAX + 1)];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long bh = blockIdx.y;
    const int row0 = blockIdx.x * BR;
    const T* qb = q + bh * tgt * d;
    const T* kb = k + bh * src * d;
    const T* vb = v + bh * src * d;
    load_rows(qs, DMAX, qb, row0, BR, tgt, d);
    float acc[FWD_ROWS][PER_LANE], m[FWD_ROWS], l[FWD_ROWS];
#pragma unroll
    for (int t = 0; t < FWD_ROWS; ++t) {
        m[t] = ember::neg_inf();
        l[t] = 0.0f;
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) acc[t][c] = 0.0f;
    }
    const int kend = min(src, row0 + BR);  // no row of this block sees a key past its own index
    for (int kt = 0; kt < kend; kt += TILE) {
        __syncthreads();  // the previous tile (and the q rows, the first time) are ready / done
        load_rows(ks, DMAX + 1, kb, kt, TILE, src, d);
        load_rows(vs, DMAX + 1, vb, kt, TILE, src, d);
        __syncthreads();
#pragma unroll
        for (int t = 0; t < FWD_ROWS; ++t) {
            const int r = warp * FWD_ROWS + t, i = row0 + r;
            if (i >= tgt) continue;  // the whole warp skips together
            const int j = kt + lane;
            const bool valid = j <= i && j < src;
            const float sv = valid ? scale * dot(qs + r * DMAX, ks + lane * (DMAX + 1), d)
                                   : ember::neg_inf();
            const float new_m = fmaxf(m[t], ember::warp_max(sv));
            if (new_m == ember::neg_inf()) continue;  // nothing visible in this tile yet
            const float p = valid ? expf(sv - new_m) : 0.0f;
            const float corr = expf(m[t] - new_m);  // 0 on the first visible tile
            l[t] = l[t] * corr + ember::warp_sum(p);
#pragma unroll
            for (int c = 0; c < PER_LANE; ++c) acc[t][c] *= corr;
            for (int jj = 0; jj < TILE; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                if (pj == 0.0f) continue;  // masked (uniform: every lane has the same pj)
                const float* vrow = vs + jj * (DMAX + 1);
#pragma unroll
                for (int c = 0; c < PER_LANE; ++c) acc[t][c] += pj * vrow[lane + 32 * c];
            }
            m[t] = new_m;
        }
    }
#pragma unroll
    for (int t = 0; t < FWD_ROWS; ++t) {
        const int i = row0 + warp * FWD_ROWS + t;
        if (i >= tgt) continue;
        const float inv = 1.0f / l[t];
        T* orow = o + (bh * tgt + i) * d;
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) {
            const int col = lane + 32 * c;
            if (col < d) orow[col] = ember::from_f<T>(acc[t][c] * inv);
        }
        if (lane == 0) lse[bh * tgt + i] = m[t] + logf(l[t]);
    }
}

// D_i = rowsum(dO_i * O_i), one warp per row (rows = BH * T).
template <typename T>
__global__ void flash_attn_backward_prep(const T* __restrict__ o, const T* __restrict__ dout,
                                         float* __restrict__ dsum, long long rows, int d) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        float acc = 0.0f;
        for (int c = lane; c < d; c += 32) {
            acc += ember::to_f(o[r * d + c]) * ember::to_f(dout[r * d + c]);
        }
        acc = ember::warp_sum(acc);
        if (lane == 0) dsum[r] = acc;
    }
}

template <typename T>
__global__ void flash_attn_backward_dq(const T* __restrict__ q, const T* __restrict__ k,
                                       const T* __restrict__ v, const T* __restrict__ dout,
                                       const float* __restrict__ lse,
                                       const float* __restrict__ dsum, T* __restrict__ dq,
                                       int tgt, int src, int d, float scale) {
    using namespace flash;
    constexpr int BR = WARPS * BWD_ROWS;
    __shared__ float qs[BR * DMAX];
    __shared__ float dos[BR * DMAX];
    __shared__ float ks[TILE * (DMAX + 1)];
    __shared__ float vs[TILE * (DMAX + 1)];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long bh = blockIdx.y;
    const int row0 = blockIdx.x * BR;
    load_rows(qs, DMAX, q + bh * tgt * d, row0, BR, tgt, d);
    load_rows(dos, DMAX, dout + bh * tgt * d, row0, BR, tgt, d);
    float acc[BWD_ROWS][PER_LANE];
#pragma unroll
    for (int t = 0; t < BWD_ROWS; ++t) {
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) acc[t][c] = 0.0f;
    }
    const int kend = min(src, row0 + BR);
    for (int kt = 0; kt < kend; kt += TILE) {
        __syncthreads();
        load_rows(ks, DMAX + 1, k + bh * src * d, kt, TILE, src, d);
        load_rows(vs, DMAX + 1, v + bh * src * d, kt, TILE, src, d);
        __syncthreads();
#pragma unroll
        for (int t = 0; t < BWD_ROWS; ++t) {
            const int r = warp * BWD_ROWS + t, i = row0 + r;
            if (i >= tgt) continue;
            const int j = kt + lane;
            float ds = 0.0f;
            if (j <= i && j < src) {
                const float p = expf(scale * dot(qs + r * DMAX, ks + lane * (DMAX + 1), d) -
                                     lse[bh * tgt + i]);
                const float dp = dot(dos + r * DMAX, vs + lane * (DMAX + 1), d);
                ds = p * (dp - dsum[bh * tgt + i]);
            }
            for (int jj = 0; jj < TILE; ++jj) {
                const float dsj = __shfl_sync(0xffffffffu, ds, jj);
                if (dsj == 0.0f) continue;
                const float* krow = ks + jj * (DMAX + 1);
#pragma unroll
                for (int c = 0; c < PER_LANE; ++c) acc[t][c] += dsj * krow[lane + 32 * c];
            }
        }
    }
#pragma unroll
    for (int t = 0; t < BWD_ROWS; ++t) {
        const int i = row0 + warp * BWD_ROWS + t;
        if (i >= tgt) continue;
        T* row = dq + (bh * tgt + i) * d;
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) {
            const int col = lane + 32 * c;
            if (col < d) row[col] = ember::from_f<T>(scale * acc[t][c]);
        }
    }
}

template <typename T>
__global__ void flash_attn_backward_dkdv(const T* __restrict__ q, const T* __restrict__ k,
                                         const T* __restrict__ v, const T* __restrict__ dout,
                                         const float* __restrict__ lse,
                                         const float* __restrict__ dsum, T* __restrict__ dk,
                                         T* __restrict__ dv, int tgt, int src, int d,
                                         float scale) {
    using namespace flash;
    constexpr int BC = WARPS * BWD_ROWS;
    __shared__ float ks[BC * DMAX];
    __shared__ float vs[BC * DMAX];
    __shared__ float qs[TILE * (DMAX + 1)];
    __shared__ float dos[TILE * (DMAX + 1)];
    __shared__ float ls[TILE];
    __shared__ float ds_sum[TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long long bh = blockIdx.y;
    const int col0 = blockIdx.x * BC;
    load_rows(ks, DMAX, k + bh * src * d, col0, BC, src, d);
    load_rows(vs, DMAX, v + bh * src * d, col0, BC, src, d);
    float gk[BWD_ROWS][PER_LANE], gv[BWD_ROWS][PER_LANE];
#pragma unroll
    for (int t = 0; t < BWD_ROWS; ++t) {
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) gk[t][c] = gv[t][c] = 0.0f;
    }
    // query i sees key j only when i >= j: start at the tile holding query col0
    for (int qt = (col0 / TILE) * TILE; qt < tgt; qt += TILE) {
        __syncthreads();
        load_rows(qs, DMAX + 1, q + bh * tgt * d, qt, TILE, tgt, d);
        load_rows(dos, DMAX + 1, dout + bh * tgt * d, qt, TILE, tgt, d);
        for (int e = threadIdx.x; e < TILE; e += blockDim.x) {
            const int i = qt + e;
            ls[e] = i < tgt ? lse[bh * tgt + i] : 0.0f;
            ds_sum[e] = i < tgt ? dsum[bh * tgt + i] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < BWD_ROWS; ++t) {
            const int r = warp * BWD_ROWS + t, j = col0 + r;
            if (j >= src) continue;
            const int i = qt + lane;
            float p = 0.0f, ds = 0.0f;
            if (i >= j && i < tgt) {
                p = expf(scale * dot(ks + r * DMAX, qs + lane * (DMAX + 1), d) - ls[lane]);
                const float dp = dot(vs + r * DMAX, dos + lane * (DMAX + 1), d);
                ds = p * (dp - ds_sum[lane]);
            }
            for (int ii = 0; ii < TILE; ++ii) {
                const float pi = __shfl_sync(0xffffffffu, p, ii);
                const float dsi = __shfl_sync(0xffffffffu, ds, ii);
                if (pi == 0.0f && dsi == 0.0f) continue;
                const float* qrow = qs + ii * (DMAX + 1);
                const float* drow = dos + ii * (DMAX + 1);
#pragma unroll
                for (int c = 0; c < PER_LANE; ++c) {
                    gv[t][c] += pi * drow[lane + 32 * c];
                    gk[t][c] += dsi * qrow[lane + 32 * c];
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < BWD_ROWS; ++t) {
        const int j = col0 + warp * BWD_ROWS + t;
        if (j >= src) continue;
        T* krow = dk + (bh * src + j) * d;
        T* vrow = dv + (bh * src + j) * d;
#pragma unroll
        for (int c = 0; c < PER_LANE; ++c) {
            const int col = lane + 32 * c;
            if (col < d) {
                krow[col] = ember::from_f<T>(scale * gk[t][c]);
                vrow[col] = ember::from_f<T>(gv[t][c]);
            }
        }
    }
}
