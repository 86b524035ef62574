// The mixture-of-experts feed-forward of gpt-oss (llama.cpp build_moe_ffn with
// LLM_FFN_SWIGLU_OAI_MOE and softmax-weight gating), for decode and prefill alike:
//   moe_topk        the router's k largest logits per token and a softmax over them
//   moe_gate_up_*   act[t, j] = swiglu_oai(Wg[e] x[t] + bg[e], Wu[e] x[t] + bu[e]), e = ids[t, j]
//   moe_down_*      y[t] = residual[t] + sum_j w[t, j] (Wd[e] act[t, j] + bd[e])
// The expert ids stay on the device (a decode step is one CUDA graph: no host sync), and each
// token reads only its routed experts' rows of the (E, rows, cols) stacks, decoded in registers
// from their file encoding (quant.cuh; MXFP4 for GPT-OSS, M0-W-1435). The row dot products
// follow matmul.cu's mat-vec: a warp per row, eight lanes per 32-value unit, fp32 sums.
// NumPy twins: ops_numpy.route and ops_numpy.expert_ffn.
#include "quant.cuh"

#define MOE_WARPS 4
#define MAX_EXPERTS 256  // gpt_oss.MAX_EXPERTS
#define SWIGLU_OAI_ALPHA 1.702f
#define SWIGLU_OAI_LIMIT 7.0f

// Row `row` of a quantized matrix times x (n_in values), summed over the warp; every lane gets it.
template <int QT>
__device__ __forceinline__ float row_dot(const u8* wrow, const float* x, int n_in) {
    const int lane = threadIdx.x & 31, sub = lane & 7;
    float acc = 0.0f;
#pragma unroll 4
    for (int u = lane >> 3; u < (n_in >> 5); u += 4)
        acc += dot4(decode4<QT>(wrow, u, sub), *reinterpret_cast<const float4*>(x + u * 32 + 4 * sub));
    return warp_sum(acc);
}

// One thread per token: the k largest of its n_expert logits (ties to the lower id, as a stable
// descending sort), then weights = softmax of those k logits.
extern "C" __global__ void moe_topk(const float* __restrict__ logits, int* __restrict__ ids,
                                    float* __restrict__ weights, int n_tok, int n_expert, int k) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_tok) return;
    const float* row = logits + (long long)t * n_expert;
    unsigned taken[MAX_EXPERTS / 32] = {0};
    float chosen[MAX_EXPERTS];
    for (int j = 0; j < k; ++j) {
        int best = -1;
        float best_v = NEG_INF;
        for (int e = 0; e < n_expert; ++e) {
            const bool free = !((taken[e >> 5] >> (e & 31)) & 1u);
            if (free && (best < 0 || row[e] > best_v)) { best = e; best_v = row[e]; }
        }
        taken[best >> 5] |= 1u << (best & 31);
        ids[t * k + j] = best;
        chosen[j] = best_v;
    }
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += __expf(chosen[j] - chosen[0]);
    for (int j = 0; j < k; ++j) weights[t * k + j] = __expf(chosen[j] - chosen[0]) / sum;
}

// Grid (rows / MOE_WARPS, n_tok * k): warp w of block (b, tj) computes row b * MOE_WARPS + w of
// slot j of token t through expert ids[t, j], gate and up in one pass over x[t].
template <int QT>
__device__ void moe_gate_up_impl(const u8* __restrict__ Wg, const u8* __restrict__ Wu,
                                 const float* __restrict__ bg, const float* __restrict__ bu,
                                 const float* __restrict__ x, const int* __restrict__ ids,
                                 float* __restrict__ act, int n_in, int n_ff, int k, long long row_bytes) {
    const int lane = threadIdx.x & 31, sub = lane & 7, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * MOE_WARPS + warp, tj = blockIdx.y, t = tj / k;
    if (row >= n_ff) return;  // a whole warp leaves together: row is uniform across it
    const int e = ids[tj];
    const long long at = ((long long)e * n_ff + row) * row_bytes;
    const float* xt = x + (long long)t * n_in;
    float g = 0.0f, u = 0.0f;
#pragma unroll 4
    for (int q = lane >> 3; q < (n_in >> 5); q += 4) {
        const float4 xv = *reinterpret_cast<const float4*>(xt + q * 32 + 4 * sub);
        g += dot4(decode4<QT>(Wg + at, q, sub), xv);
        u += dot4(decode4<QT>(Wu + at, q, sub), xv);
    }
    g = warp_sum(g);
    u = warp_sum(u);
    if (lane == 0) {
        const float gate = fminf(g + bg[e * n_ff + row], SWIGLU_OAI_LIMIT);
        const float up = fminf(fmaxf(u + bu[e * n_ff + row], -SWIGLU_OAI_LIMIT), SWIGLU_OAI_LIMIT);
        act[(long long)tj * n_ff + row] = gate / (1.0f + __expf(-SWIGLU_OAI_ALPHA * gate)) * (up + 1.0f);
    }
}

// Grid (n_out / MOE_WARPS, n_tok): warp w of block (b, t) computes output row b * MOE_WARPS + w
// of token t, summing its k experts' down projections in slot order.
template <int QT>
__device__ void moe_down_impl(const u8* __restrict__ Wd, const float* __restrict__ bd,
                              const float* __restrict__ act, const int* __restrict__ ids,
                              const float* __restrict__ weights, const float* __restrict__ residual,
                              float* __restrict__ y, int n_ff, int n_out, int k, long long row_bytes) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * MOE_WARPS + warp, t = blockIdx.y;
    if (row >= n_out) return;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
        const int e = ids[t * k + j];
        const float s = row_dot<QT>(Wd + ((long long)e * n_out + row) * row_bytes, act + ((long long)t * k + j) * n_ff,
                                    n_ff);
        sum += weights[t * k + j] * (s + bd[e * n_out + row]);
    }
    if (lane == 0) y[(long long)t * n_out + row] = residual[(long long)t * n_out + row] + sum;
}

#define MOE(NAME, QT)                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * MOE_WARPS)                                  \
    moe_gate_up_##NAME(const u8* Wg, const u8* Wu, const float* bg, const float* bu,              \
                       const float* x, const int* ids, float* act, int n_in, int n_ff, int k,     \
                       long long row_bytes) {                                                     \
        moe_gate_up_impl<QT>(Wg, Wu, bg, bu, x, ids, act, n_in, n_ff, k, row_bytes);              \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * MOE_WARPS)                                  \
    moe_down_##NAME(const u8* Wd, const float* bd, const float* act, const int* ids,              \
                    const float* weights, const float* residual, float* y, int n_ff, int n_out,   \
                    int k, long long row_bytes) {                                                 \
        moe_down_impl<QT>(Wd, bd, act, ids, weights, residual, y, n_ff, n_out, k, row_bytes);     \
    }

MOE(f32, QT_F32)
MOE(f16, QT_F16)
MOE(bf16, QT_BF16)
MOE(q4_0, QT_Q4_0)
MOE(q5_0, QT_Q5_0)
MOE(q8_0, QT_Q8_0)
MOE(mxfp4, QT_MXFP4)
MOE(q4_k, QT_Q4_K)
MOE(q6_k, QT_Q6_K)
