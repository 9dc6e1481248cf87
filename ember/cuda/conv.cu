// 2-D convolution's data movement around the cuBLAS GEMM (ember.nn.functional._im2col's
// layout): im2col writes cols (C, kh, kw, N, OH, OW) from x (N, C, H, W) with zero padding,
// stride and dilation; col2im is its adjoint, written as a gather (each input pixel sums the
// columns that read it), so it is deterministic and needs no atomics, and it writes the
// (N, C, H, W) gradient directly (no padded buffer, crop or transpose).
#include "_common.cu"

struct ConvGeo {
    int n, c, h, w;      // input
    int kh, kw;          // kernel
    int sh, sw;          // stride
    int ph, pw;          // padding before (top, left)
    int dh, dw;          // dilation
    int oh, ow;          // output
};

// The geometry travels as 13 plain ints (kernel arguments CuPy packs without a struct type).
#define CONV_GEO_PARAMS                                                                  \
    int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, \
        int oh, int ow
#define CONV_GEO ConvGeo{n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow}

template <typename T>
__global__ void im2col2d(const T* __restrict__ x, T* __restrict__ cols, CONV_GEO_PARAMS) {
    const ConvGeo g = CONV_GEO;
    const long long total = (long long)g.c * g.kh * g.kw * g.n * g.oh * g.ow;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        long long r = e;
        const int ox = r % g.ow; r /= g.ow;
        const int oy = r % g.oh; r /= g.oh;
        const int ni = r % g.n; r /= g.n;
        const int j = r % g.kw; r /= g.kw;
        const int i = r % g.kh; r /= g.kh;
        const int ci = (int)r;
        const int y = oy * g.sh - g.ph + i * g.dh;
        const int xx = ox * g.sw - g.pw + j * g.dw;
        T v = ember::from_f<T>(0.0f);
        if (y >= 0 && y < g.h && xx >= 0 && xx < g.w) {
            v = x[(((long long)ni * g.c + ci) * g.h + y) * g.w + xx];
        }
        cols[e] = v;
    }
}

template <typename T>
__global__ void col2im2d(const T* __restrict__ cols, T* __restrict__ gx, CONV_GEO_PARAMS) {
    const ConvGeo g = CONV_GEO;
    const long long total = (long long)g.n * g.c * g.h * g.w;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long plane = (long long)g.n * g.oh * g.ow;  // one (c, i, j) row of cols
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        long long r = e;
        const int xx = r % g.w; r /= g.w;
        const int y = r % g.h; r /= g.h;
        const int ci = r % g.c; r /= g.c;
        const int ni = (int)r;
        float acc = 0.0f;
        for (int i = 0; i < g.kh; ++i) {
            const int ty = y + g.ph - i * g.dh;  // = oy * sh
            if (ty < 0 || ty % g.sh != 0) continue;
            const int oy = ty / g.sh;
            if (oy >= g.oh) continue;
            for (int j = 0; j < g.kw; ++j) {
                const int tx = xx + g.pw - j * g.dw;
                if (tx < 0 || tx % g.sw != 0) continue;
                const int ox = tx / g.sw;
                if (ox >= g.ow) continue;
                const long long row = ((long long)ci * g.kh + i) * g.kw + j;
                acc += ember::to_f(cols[row * plane + ((long long)ni * g.oh + oy) * g.ow + ox]);
            }
        }
        gx[e] = ember::from_f<T>(acc);
    }
}
