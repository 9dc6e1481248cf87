// Embedding backward: dweight[idx[i], :] += dout[i, :] for every lookup i.
// Atomic: one block per lookup row (grid-stride), fp32 atomicAdd into a zeroed fp32 buffer;
// fast, but the summation order of repeated indices varies from run to run.
// Deterministic: the launcher sorts the lookups (stably) by index; one block per distinct index
// sums its rows in that fixed order and writes the weight row once, no atomics.
#include "_common.cu"

template <typename T>
__global__ void embedding_backward_atomic(const long long* __restrict__ idx,
                                          const T* __restrict__ g, float* __restrict__ out,
                                          long long lookups, int dim) {
    for (long long r = blockIdx.x; r < lookups; r += gridDim.x) {
        const T* gr = g + r * dim;
        float* orow = out + idx[r] * dim;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) atomicAdd(orow + d, ember::to_f(gr[d]));
    }
}

// order: lookup numbers sorted by index; starts: n_segments + 1 offsets into `order`, one
// segment per distinct index; rows: that index. out (fp32) rows not named stay untouched.
template <typename T>
__global__ void embedding_backward_sorted(const long long* __restrict__ order,
                                          const long long* __restrict__ starts,
                                          const long long* __restrict__ rows,
                                          const T* __restrict__ g, float* __restrict__ out,
                                          long long segments, int dim) {
    for (long long s = blockIdx.x; s < segments; s += gridDim.x) {
        const long long lo = starts[s], hi = starts[s + 1];
        float* orow = out + rows[s] * dim;
        for (int d = threadIdx.x; d < dim; d += blockDim.x) {
            float acc = 0.0f;
            for (long long k = lo; k < hi; ++k) acc += ember::to_f(g[order[k] * dim + d]);
            orow[d] = acc;
        }
    }
}
