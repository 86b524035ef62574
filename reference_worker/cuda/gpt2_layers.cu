// The GPT-2 family's own layer kernels (M0-W-1432/1433/1434): LayerNorm with weight and bias,
// GELU (tanh approximation) and the learned position embedding add. Positions come from a
// device int (`pos0`), as in layers.cu, so that a captured decode graph replays at the next
// position. NumPy twins: ops_numpy.layernorm, gelu, add_positions.
#include "quant.cuh"

// out[t, :] = (x[t, :] - mean) / sqrt(var + eps) * w + b; one block per row, two reductions
// (mean, then the variance of the centred values: no cancellation for rows far from zero).
extern "C" __global__ void layernorm(const float* __restrict__ x, const float* __restrict__ w,
                                     const float* __restrict__ b, float* __restrict__ out, int n, float eps) {
    launch_dependents();
    wait_for_prerequisites();
    const float* xr = x + (long long)blockIdx.x * n;
    float* orow = out + (long long)blockIdx.x * n;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += xr[i];
    const float mean = block_sum(sum) / (float)n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float c = xr[i] - mean;
        ss += c * c;
    }
    const float inv = rsqrtf(block_sum(ss) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = (xr[i] - mean) * inv * w[i] + b[i];
}

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as M0-W-1433 writes it.
extern "C" __global__ void gelu(const float* __restrict__ x, float* __restrict__ out, long long n) {
    launch_dependents();
    wait_for_prerequisites();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}

// out[t, :] = x[t, :] + row pos0[0] + t of the position table P (in its file encoding, decoded
// four values per thread as embed_* in matmul.cu). out may be x. Rows past the table are
// clamped: the launcher's callers keep positions inside the context.
template <int QT>
__device__ void add_positions_impl(const u8* __restrict__ P, const float* x, float* out, int n_embd, int n_tok,
                                   int n_rows, long long row_bytes, const int* __restrict__ pos0) {
    const int t = blockIdx.y;
    const int q = blockIdx.x * blockDim.x + threadIdx.x;  // which group of four values
    if (t >= n_tok || q >= (n_embd >> 2)) return;
    const int row = min(pos0[0] + t, n_rows - 1);
    const float4 p = decode4<QT>(P + row * row_bytes, q >> 3, q & 7);
    const float4 v = reinterpret_cast<const float4*>(x + (long long)t * n_embd)[q];
    reinterpret_cast<float4*>(out + (long long)t * n_embd)[q] = make_float4(v.x + p.x, v.y + p.y, v.z + p.z, v.w + p.w);
}

#define ADD_POSITIONS(NAME, QT)                                                                          \
    extern "C" __global__ void add_positions_##NAME(const u8* P, const float* x, float* out, int n_embd, \
                                                    int n_tok, int n_rows, long long row_bytes,          \
                                                    const int* pos0) {                                   \
        launch_dependents();                                                                             \
        wait_for_prerequisites();                                                                        \
        add_positions_impl<QT>(P, x, out, n_embd, n_tok, n_rows, row_bytes, pos0);                       \
    }

ADD_POSITIONS(f32, QT_F32)
ADD_POSITIONS(f16, QT_F16)
ADD_POSITIONS(bf16, QT_BF16)
ADD_POSITIONS(q4_0, QT_Q4_0)
ADD_POSITIONS(q5_0, QT_Q5_0)
ADD_POSITIONS(q8_0, QT_Q8_0)
ADD_POSITIONS(mxfp4, QT_MXFP4)
ADD_POSITIONS(q4_k, QT_Q4_K)
ADD_POSITIONS(q6_k, QT_Q6_K)
