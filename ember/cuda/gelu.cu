// GELU, tanh approximation (GPT-2's): gelu(x) = 0.5 x (1 + tanh(k0 (x + 0.044715 x^3))),
// forward and backward, plus bias + GELU (y = gelu(x + bias[col]) over rows of `cols`).
// Elementwise, grid-stride, 128-bit loads when the arrays are 16-byte aligned; the bias index
// is taken per element, so any cols works.
#include "_common.cu"

namespace {

constexpr float K0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float K1 = 0.044715f;

__device__ __forceinline__ float gelu_f(float x) {
    const float t = tanhf(K0 * (x + K1 * x * x * x));
    return 0.5f * x * (1.0f + t);
}

__device__ __forceinline__ float gelu_grad_f(float x) {
    const float t = tanhf(K0 * (x + K1 * x * x * x));
    const float dt = K0 * (1.0f + 3.0f * K1 * x * x) * (1.0f - t * t);
    return 0.5f * (1.0f + t) + 0.5f * x * dt;
}

}  // namespace

template <typename T>
__global__ void gelu_forward(const T* __restrict__ x, const T* __restrict__ bias,
                             T* __restrict__ y, long long n, int cols) {
    using P = ember::Pack<T>;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = ember::aligned16(x) && ember::aligned16(y);
    long long done = 0;
    if (vec) {
        const long long packs = n / P::N;
        for (long long p = tid; p < packs; p += stride) {
            const P in = reinterpret_cast<const P*>(x)[p];
            P out;
            const long long i0 = p * P::N;
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                float v = ember::to_f(in.v[k]);
                if (bias) v += ember::to_f(bias[(i0 + k) % cols]);
                out.v[k] = ember::from_f<T>(gelu_f(v));
            }
            reinterpret_cast<P*>(y)[p] = out;
        }
        done = packs * P::N;
    }
    for (long long i = done + tid; i < n; i += stride) {
        float v = ember::to_f(x[i]);
        if (bias) v += ember::to_f(bias[i % cols]);
        y[i] = ember::from_f<T>(gelu_f(v));
    }
}

// dx = g * gelu'(x + bias). The bias gradient is dx summed over rows (done by the launcher).
template <typename T>
__global__ void gelu_backward(const T* __restrict__ x, const T* __restrict__ bias,
                              const T* __restrict__ g, T* __restrict__ dx, long long n,
                              int cols) {
    using P = ember::Pack<T>;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = ember::aligned16(x) && ember::aligned16(g) && ember::aligned16(dx);
    long long done = 0;
    if (vec) {
        const long long packs = n / P::N;
        for (long long p = tid; p < packs; p += stride) {
            const P in = reinterpret_cast<const P*>(x)[p];
            const P gin = reinterpret_cast<const P*>(g)[p];
            P out;
            const long long i0 = p * P::N;
#pragma unroll
            for (int k = 0; k < P::N; ++k) {
                float v = ember::to_f(in.v[k]);
                if (bias) v += ember::to_f(bias[(i0 + k) % cols]);
                out.v[k] = ember::from_f<T>(ember::to_f(gin.v[k]) * gelu_grad_f(v));
            }
            reinterpret_cast<P*>(dx)[p] = out;
        }
        done = packs * P::N;
    }
    for (long long i = done + tid; i < n; i += stride) {
        float v = ember::to_f(x[i]);
        if (bias) v += ember::to_f(bias[i % cols]);
        dx[i] = ember::from_f<T>(ember::to_f(g[i]) * gelu_grad_f(v));
    }
}
