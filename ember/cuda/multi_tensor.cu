// Multi-tensor optimizer steps and the fused GradScaler unscale + inf check.
// The optimizer kernels run over flat buffers (every parameter of a group in one array, as
// ember.optim's FlatBucket lays them out): one launch per step for all parameters.
//   TP: parameter / master-weight storage (the optimizer state m, v, buf shares it)
//   TG: gradient storage
//   TM: the model-weight copy written after the update (`model`, nullable): fp32 master
//       weights stepping while the model keeps bf16 / fp16 weights.
// inv_scale (nullable): a device scalar the gradient is multiplied by first (a GradScaler
// that skipped the separate unscale). All math is fp32.
#include "_common.cu"

template <typename TP, typename TG, typename TM>
__global__ void adam_step(TP* __restrict__ p, const TG* __restrict__ grad, TP* __restrict__ m,
                          TP* __restrict__ v, TP* __restrict__ vmax,  // nullable: amsgrad
                          TM* __restrict__ model,                     // nullable
                          const float* __restrict__ inv_scale,        // nullable
                          long long n, float lr, float beta1, float beta2, float eps,
                          float weight_decay, int decoupled, int maximize, float step_size,
                          float bias_correction2_sqrt) {
    const float gscale = inv_scale ? *inv_scale : 1.0f;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float w = ember::to_f(p[i]);
        float g = ember::to_f(grad[i]) * gscale;
        if (maximize) g = -g;
        if (decoupled) {
            w *= 1.0f - lr * weight_decay;
        } else if (weight_decay != 0.0f) {
            g += weight_decay * w;
        }
        float mi = ember::to_f(m[i]);
        mi += (1.0f - beta1) * (g - mi);
        float vi = beta2 * ember::to_f(v[i]) + (1.0f - beta2) * g * g;
        m[i] = ember::from_f<TP>(mi);
        v[i] = ember::from_f<TP>(vi);
        if (vmax) {
            vi = fmaxf(ember::to_f(vmax[i]), vi);
            vmax[i] = ember::from_f<TP>(vi);
        }
        const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        w -= step_size * mi / denom;
        p[i] = ember::from_f<TP>(w);
        if (model) model[i] = ember::from_f<TM>(w);
    }
}

// SGD with momentum / dampening / nesterov / weight decay, torch's formulas. `first`: the
// momentum buffer is set to the gradient (torch clones it on the first step).
template <typename TP, typename TG, typename TM>
__global__ void sgd_step(TP* __restrict__ p, const TG* __restrict__ grad,
                         TP* __restrict__ buf,                 // nullable: no momentum
                         TM* __restrict__ model,               // nullable
                         const float* __restrict__ inv_scale,  // nullable
                         long long n, float lr, float momentum, float dampening,
                         float weight_decay, int nesterov, int maximize, int first) {
    const float gscale = inv_scale ? *inv_scale : 1.0f;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float w = ember::to_f(p[i]);
        float g = ember::to_f(grad[i]) * gscale;
        if (maximize) g = -g;
        if (weight_decay != 0.0f) g += weight_decay * w;
        if (buf) {
            float b = first ? g : momentum * ember::to_f(buf[i]) + (1.0f - dampening) * g;
            buf[i] = ember::from_f<TP>(b);
            g = nesterov ? g + momentum * b : b;
        }
        w -= lr * g;
        p[i] = ember::from_f<TP>(w);
        if (model) model[i] = ember::from_f<TM>(w);
    }
}

// Multiply every gradient (a list of arrays, given as a device table of pointers and the
// prefix sums of their sizes) by inv_scale in place, and set *found_inf = 1 when any value
// (before scaling) is inf or NaN. Grid-stride over the virtual concatenation; each thread finds
// its tensor by binary search once, then walks forward (its indices only grow).
template <typename T>
__global__ void unscale_and_check(const unsigned long long* __restrict__ ptrs,
                                  const long long* __restrict__ offsets, int tensors,
                                  const float* __restrict__ inv_scale,
                                  float* __restrict__ found_inf) {
    const long long total = offsets[tensors];
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int lo = 0, hi = tensors - 1;  // the last t with offsets[t] <= i
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
    }
    int t = lo;
    const float s = *inv_scale;
    bool bad = false;
    for (; i < total; i += stride) {
        while (offsets[t + 1] <= i) ++t;  // skips empty tensors too
        T* g = reinterpret_cast<T*>(ptrs[t]);
        const long long k = i - offsets[t];
        const float v = ember::to_f(g[k]);
        bad |= !isfinite(v);
        g[k] = ember::from_f<T>(v * s);
    }
    if (bad) *found_inf = 1.0f;  // every writer stores the same value: a benign race
}
