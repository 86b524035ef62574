// The tensor-core pieces of mma.cuh and the fp16 conversions of common.cuh, for cuda_emulation.h's
// fibers: fp16 through _Float16 (round to nearest even, as cvt.rn), and the warp-wide mma.sync
// and ldmatrix as collectives: every lane posts its operands, the warp meets, each lane computes
// its own results from everyone's operands, the warp meets again. Fragment layouts are the PTX
// ISA's, written here from the spec independently of mma.cuh's index arithmetic.
#pragma once
#define CUDA_ON_CPU
#include "cuda_emulation.h"

inline float half_to_float(unsigned short h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
inline unsigned short float_to_half(float x) { _Float16 f = (_Float16)x; unsigned short h; std::memcpy(&h, &f, 2); return h; }
inline unsigned pack_half2(float lo, float hi) { return float_to_half(lo) | ((unsigned)float_to_half(hi) << 16); }
inline float half_of(unsigned pair, int which) { return half_to_float((unsigned short)(pair >> (16 * which))); }

inline struct { unsigned a[32][4], b[32][2]; const unsigned short* rows[32]; } warp_post[32];

// A[r][k] of the 16 x 16 fragment: lane 4 (r % 8) + (k % 8) / 2, register (r >= 8) + 2 (k >= 8).
// B[k][n] of the 16 x 8 fragment: lane 4 n + (k % 8) / 2, register k >= 8. Low half: even k.
// C[r][n]: lane 4 (r % 8) + n / 2, register 2 (r >= 8) + n % 2.
inline void mma_16x8x16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto& post = warp_post[warp];
    for (int i = 0; i < 4; ++i) post.a[lane][i] = a[i];
    post.b[lane][0] = b0; post.b[lane][1] = b1;
    warp_sync();
    for (int i = 0; i < 4; ++i) {
        const int r = lane / 4 + 8 * (i / 2), n = 2 * (lane % 4) + i % 2;
        float sum = 0.0f;
        for (int k = 0; k < 16; ++k)
            sum += half_of(post.a[4 * (r % 8) + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2)
                 * half_of(post.b[4 * n + (k % 8) / 2][k >= 8], k % 2);
        c[i] += sum;
    }
    warp_sync();
}

// Matrix m's rows come from lanes 8m..8m+7. Plain: lane l gets row l / 4, columns 2 (l % 4)..+1;
// transposed: rows 2 (l % 4)..+1 of column l / 4.
inline void ldmatrix_rows(unsigned* r, const unsigned short* row, bool trans) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto& post = warp_post[warp];
    post.rows[lane] = row;
    warp_sync();
    for (int m = 0; m < 4; ++m) {
        unsigned short lo, hi;
        if (trans) { lo = post.rows[8 * m + 2 * (lane % 4)][lane / 4]; hi = post.rows[8 * m + 2 * (lane % 4) + 1][lane / 4]; }
        else { lo = post.rows[8 * m + lane / 4][2 * (lane % 4)]; hi = post.rows[8 * m + lane / 4][2 * (lane % 4) + 1]; }
        r[m] = lo | ((unsigned)hi << 16);
    }
    warp_sync();
}
inline void ldmatrix_x4(unsigned* r, const unsigned short* row) { ldmatrix_rows(r, row, false); }
inline void ldmatrix_x4_trans(unsigned* r, const unsigned short* row) { ldmatrix_rows(r, row, true); }
