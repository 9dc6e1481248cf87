// 2-D max and average pooling over (planes, H, W) (planes = batch * channels), forward and
// backward, matching ember.nn.functional._pooling: the max's index is the winning offset
// inside the window (i * kw + j; a later value wins when greater or NaN, positions outside the
// input count as -inf); average divisors follow torch (count_include_pad, divisor_override).
// Both backward kernels gather (each input pixel sums the windows that hold it): deterministic.
#include "_common.cu"

struct PoolGeo {
    int planes, h, w;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int oh, ow;
};

// The geometry travels as 13 plain ints (kernel arguments CuPy packs without a struct type).
#define POOL_GEO_PARAMS                                                                    \
    int planes, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, \
        int oh, int ow
#define POOL_GEO PoolGeo{planes, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow}

template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   int* __restrict__ idx, POOL_GEO_PARAMS) {
    const PoolGeo g = POOL_GEO;
    const long long total = (long long)g.planes * g.oh * g.ow;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int ox = e % g.ow;
        const int oy = (e / g.ow) % g.oh;
        const long long p = e / ((long long)g.ow * g.oh);
        const T* xp = x + p * g.h * g.w;
        float best = ember::neg_inf();
        int arg = 0;
        for (int i = 0; i < g.kh; ++i) {
            const int yy = oy * g.sh - g.ph + i * g.dh;
            for (int j = 0; j < g.kw; ++j) {
                const int xx = ox * g.sw - g.pw + j * g.dw;
                const bool in = yy >= 0 && yy < g.h && xx >= 0 && xx < g.w;
                const float v = in ? ember::to_f(xp[yy * g.w + xx]) : ember::neg_inf();
                const int k = i * g.kw + j;
                if (k == 0 || v > best || v != v) {
                    best = v;
                    arg = k;
                }
            }
        }
        y[e] = ember::from_f<T>(best);
        idx[e] = arg;
    }
}

template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ gy, const int* __restrict__ idx,
                                    T* __restrict__ gx, POOL_GEO_PARAMS) {
    const PoolGeo g = POOL_GEO;
    const long long total = (long long)g.planes * g.h * g.w;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int xx = e % g.w;
        const int yy = (e / g.w) % g.h;
        const long long p = e / ((long long)g.w * g.h);
        const long long base = p * g.oh * g.ow;
        float acc = 0.0f;
        for (int i = 0; i < g.kh; ++i) {
            const int ty = yy + g.ph - i * g.dh;
            if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
            for (int j = 0; j < g.kw; ++j) {
                const int tx = xx + g.pw - j * g.dw;
                if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
                const long long o = base + (long long)(ty / g.sh) * g.ow + tx / g.sw;
                if (idx[o] == i * g.kw + j) acc += ember::to_f(gy[o]);
            }
        }
        gx[e] = ember::from_f<T>(acc);
    }
}

// mode 0: count_include_pad (the window clipped to the padded input), 1: only real pixels,
// 2: divide by `override`. Average pooling has no dilation.
__device__ __forceinline__ float avg_divisor(const PoolGeo& g, int oy, int ox, int mode,
                                             float override_div) {
    if (mode == 2) return override_div;
    int y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
    int y1 = min(y0 + g.kh, g.h + g.ph), x1 = min(x0 + g.kw, g.w + g.pw);
    if (mode == 1) {
        y0 = max(y0, 0);
        x0 = max(x0, 0);
        y1 = min(y1, g.h);
        x1 = min(x1, g.w);
    }
    return (float)((y1 - y0) * (x1 - x0));
}

template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, int mode,
                                   float override_div, POOL_GEO_PARAMS) {
    const PoolGeo g = POOL_GEO;
    const long long total = (long long)g.planes * g.oh * g.ow;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int ox = e % g.ow;
        const int oy = (e / g.ow) % g.oh;
        const long long p = e / ((long long)g.ow * g.oh);
        const T* xp = x + p * g.h * g.w;
        float acc = 0.0f;
        for (int i = 0; i < g.kh; ++i) {
            const int yy = oy * g.sh - g.ph + i;
            if (yy < 0 || yy >= g.h) continue;
            for (int j = 0; j < g.kw; ++j) {
                const int xx = ox * g.sw - g.pw + j;
                if (xx >= 0 && xx < g.w) acc += ember::to_f(xp[yy * g.w + xx]);
            }
        }
        y[e] = ember::from_f<T>(acc / avg_divisor(g, oy, ox, mode, override_div));
    }
}

template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ gy, T* __restrict__ gx, int mode,
                                    float override_div, POOL_GEO_PARAMS) {
    const PoolGeo g = POOL_GEO;
    const long long total = (long long)g.planes * g.h * g.w;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        const int xx = e % g.w;
        const int yy = (e / g.w) % g.h;
        const long long p = e / ((long long)g.w * g.h);
        const long long base = p * g.oh * g.ow;
        float acc = 0.0f;
        for (int i = 0; i < g.kh; ++i) {
            const int ty = yy + g.ph - i;
            if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= g.oh) continue;
            const int oy = ty / g.sh;
            for (int j = 0; j < g.kw; ++j) {
                const int tx = xx + g.pw - j;
                if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= g.ow) continue;
                const int ox = tx / g.sw;
                acc += ember::to_f(gy[base + (long long)oy * g.ow + ox]) /
                       avg_divisor(g, oy, ox, mode, override_div);
            }
        }
        gx[e] = ember::from_f<T>(acc);
    }
}
