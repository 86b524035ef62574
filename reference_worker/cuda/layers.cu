// Element-wise and per-row layer kernels: RMSNorm, RoPE, SwiGLU,
// and the KV-cache store. Positions come from a device int (`pos0`) so that a captured
// CUDA graph replays the decode step at a new position without new kernel arguments.
#include "common.cuh"

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w; one block per row.
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const float* __restrict__ w,
                                   float* __restrict__ out, int n, float eps) {
    launch_dependents();
    wait_for_prerequisites();
    const float* xr = x + (long long)blockIdx.x * n;
    float* orow = out + (long long)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    const float inv = rsqrtf(block_sum(ss) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) orow[i] = xr[i] * inv * w[i];
}

// q [n_tok, n_q, head_dim] and k [n_tok, n_k, head_dim] rotated for positions pos0[0] + t, in
// one launch (n_k may be 0; outputs may be the inputs), a thread per pair (common.cuh's
// rope_pair; freqs null, or a YaRN table of head_dim/2). Decode does without it:
// attention_split rotates as it reads.
extern "C" __global__ void rope(const float* q, const float* k, float* q_out, float* k_out, int n_tok, int n_q,
                                int n_k, int head_dim, const int* __restrict__ pos0, float freq_base, int neox,
                                const float* __restrict__ freqs, float magnitude) {
    launch_dependents();
    wait_for_prerequisites();
    const int half = head_dim >> 1, heads = n_q + n_k;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n_tok * heads * half) return;
    const int i = idx % half;
    const long long token_head = idx / half;  // q's heads of a token, then k's
    const int t = token_head / heads, h = token_head % heads;
    const bool is_q = h < n_q;
    const long long row = is_q ? (long long)t * n_q + h : (long long)t * n_k + (h - n_q);
    const float* x = (is_q ? q : k) + row * head_dim;
    float* o = (is_q ? q_out : k_out) + row * head_dim;
    const RopePair r = rope_pair(x, i, head_dim, pos0[0] + t, freq_base, neox, freqs, magnitude);
    o[r.a] = r.va;
    o[r.b] = r.vb;
}

// out = silu(gate) * up, the SwiGLU feed-forward gate.
extern "C" __global__ void swiglu(const float* __restrict__ gate, const float* __restrict__ up,
                                  float* __restrict__ out, long long n) {
    launch_dependents();
    wait_for_prerequisites();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        out[i] = g / (1.0f + __expf(-g)) * up[i];
    }
}

// Store k, v [n_tok, n_kv, head_dim] (fp32) as fp16 into caches [n_kv, ctx, head_dim] at
// positions pos0[0] + t, position p in slot p % ctx (a sliding-window layer's cache is a ring).
extern "C" __global__ void kv_store(const float* __restrict__ k, const float* __restrict__ v,
                                    u16* __restrict__ k_cache, u16* __restrict__ v_cache,
                                    int n_tok, int n_kv, int head_dim, int ctx, const int* __restrict__ pos0) {
    launch_dependents();
    wait_for_prerequisites();
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n_tok * n_kv * head_dim) return;
    const int d = idx % head_dim;
    const int h = (idx / head_dim) % n_kv;
    const int t = idx / ((long long)head_dim * n_kv);
    const long long dst = ((long long)h * ctx + ring_slot(pos0[0] + t, ctx)) * head_dim + d;
    k_cache[dst] = float_to_half(k[idx]);
    v_cache[dst] = float_to_half(v[idx]);
}
