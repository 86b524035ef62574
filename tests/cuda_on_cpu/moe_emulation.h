// What moe.cu needs beyond cuda_emulation.h's fibers: the vector types quant.cuh and moe.cu
// build, the warp's __syncwarp and __match_any_sync as collectives (every lane posts its value,
// the warp meets, each lane reads everyone's, the warp meets again), and 2-D grids.
#pragma once
#include "cuda_emulation.h"

#define __align__(n) __attribute__((aligned(n)))
struct uint2 { unsigned x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline void __syncwarp() { warp_sync(); }

// The lanes of the warp whose v equals this lane's.
template <class T> unsigned __match_any_sync(unsigned, T v) {
    unsigned same = 0;
    for (int src = 0; src < 32; ++src) same |= (unsigned)(shfl_from(v, src) == v) << src;
    return same;
}

// A grid of (x, y) blocks, one after another as cuda_emulation.h's launch runs them.
template <class F> void launch2(dim3 grid, int block, F kernel) {
    for (unsigned y = grid.y; y-- > 0;) {
        gridDim.y = grid.y;
        blockIdx.y = y;
        launch(grid.x, block, kernel);
    }
}
