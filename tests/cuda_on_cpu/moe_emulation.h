// What moe.cu needs beyond cuda_emulation.h's fibers and vector types: the warp's __syncwarp,
// __match_any_sync and bf16 mma.sync as collectives (every lane posts its operands, the warp
// meets, each lane computes its own results from everyone's, the warp meets again), the mma's fragment layouts written from the PTX ISA ("Matrix fragments for
// mma.m16n8k16") independently of moe.cu's index arithmetic.
#pragma once
#define MOE_ON_CPU
#include "cuda_emulation.h"

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline void __syncwarp() { warp_sync(); }

// The lanes of the warp whose v equals this lane's.
template <class T> unsigned __match_any_sync(unsigned, T v) {
    unsigned same = 0;
    for (int src = 0; src < 32; ++src) same |= (unsigned)(shfl_from(v, src) == v) << src;
    return same;
}

inline struct { unsigned a[32][4], b[32][2]; } mma_post[32];
inline float bf16_of(unsigned pair, int which) { return __uint_as_float((pair >> (16 * which)) << 16); }

// A[r][k] of the 16 x 16 fragment: lane 4 (r % 8) + (k % 8) / 2, register (r >= 8) + 2 (k >= 8).
// B[k][n] of the 16 x 8 fragment: lane 4 n + (k % 8) / 2, register k >= 8. Low half: even k.
// C[r][n]: lane 4 (r % 8) + n / 2, register 2 (r >= 8) + n % 2.
inline void mma_bf16_16x8x16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto& post = mma_post[warp];
    for (int i = 0; i < 4; ++i) post.a[lane][i] = a[i];
    post.b[lane][0] = b0;
    post.b[lane][1] = b1;
    warp_sync();
    for (int i = 0; i < 4; ++i) {
        const int r = lane / 4 + 8 * (i / 2), n = 2 * (lane % 4) + i % 2;
        float sum = 0.0f;
        for (int k = 0; k < 16; ++k)
            sum += bf16_of(post.a[4 * (r % 8) + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2) *
                   bf16_of(post.b[4 * n + (k % 8) / 2][k >= 8], k % 2);
        c[i] += sum;
    }
    warp_sync();
}
