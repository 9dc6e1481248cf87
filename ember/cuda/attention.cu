// Causal attention's fused scale + mask + softmax over raw scores (batch, T, S) = q @ k^T:
//   y[b, i, j] = softmax_j(scale * s[b, i, j]) over the visible keys j <= i (torch's is_causal,
//   the top-left aligned lower triangle), and exactly 0 for the masked keys.
// One block per query row; only the visible prefix of the row is read, online max / sum.
// Backward: dS = scale * y * (g - sum_j(g * y)); masked entries get 0.
#include "_common.cu"

template <typename T>
__global__ void causal_softmax_forward(const T* __restrict__ x, T* __restrict__ y, int rows,
                                       int tgt, int src, float scale) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * src;
        const int visible = min(row % tgt + 1, src);
        float m = ember::neg_inf(), s = 0.0f;
        for (int j = threadIdx.x; j < visible; j += blockDim.x) {
            ember::online_add(scale * ember::to_f(x[base + j]), m, s);
        }
        const float row_max = ember::block_max(m, scratch);
        const float mine = (s == 0.0f) ? 0.0f : s * expf(m - row_max);
        const float inv = 1.0f / ember::block_sum(mine, scratch);
        for (int j = threadIdx.x; j < src; j += blockDim.x) {
            const float p = j < visible ? expf(scale * ember::to_f(x[base + j]) - row_max) * inv
                                        : 0.0f;
            y[base + j] = ember::from_f<T>(p);
        }
    }
}

template <typename T>
__global__ void causal_softmax_backward(const T* __restrict__ y, const T* __restrict__ g,
                                        T* __restrict__ dx, int rows, int tgt, int src,
                                        float scale) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long base = (long long)row * src;
        const int visible = min(row % tgt + 1, src);
        float acc = 0.0f;
        for (int j = threadIdx.x; j < visible; j += blockDim.x) {
            acc += ember::to_f(g[base + j]) * ember::to_f(y[base + j]);
        }
        const float total = ember::block_sum(acc, scratch);
        for (int j = threadIdx.x; j < src; j += blockDim.x) {
            float d = 0.0f;
            if (j < visible) {
                const float yv = ember::to_f(y[base + j]);
                d = scale * yv * (ember::to_f(g[base + j]) - total);
            }
            dx[base + j] = ember::from_f<T>(d);
        }
    }
}
