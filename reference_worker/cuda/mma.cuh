// Tensor-core building blocks (sm_80 and later) as inline PTX, NVRTC having no cuda_fp16.h:
// fp16 packing, the m16n8k16 mma with fp32 accumulation, and ldmatrix from shared memory.
// Fragment layouts are the PTX ISA's ("Matrix fragments for mma.m16n8k16"): in a warp, lane l
// is in group g = l / 4 with index t = l % 4 in it; a 16 x 16 A fragment holds rows g and g + 8,
// columns 2t..2t+1 and 2t+8..2t+9; a 16 x 8 B fragment column g, rows 2t..2t+1 and 2t+8..2t+9;
// the 16 x 8 fp32 accumulator rows g and g + 8, columns 2t..2t+1.
// tests/cuda_on_cpu has CPU versions of the PTX ones, which run these kernels' logic there.
#pragma once
#include "common.cuh"

#ifndef CUDA_ON_CPU
// Two floats as an fp16 pair, lo in the low half (the lower k of an mma fragment).
__device__ __forceinline__ u32 pack_half2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// c (16 x 8, fp32) += a (16 x 16, row-major fp16) * b (16 x 8, column-major fp16).
__device__ __forceinline__ void mma_16x8x16(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 shared_address(const u16* p) {
    u32 at;
    asm("{ .reg .u64 p; cvta.to.shared.u64 p, %1; cvt.u32.u64 %0, p; }" : "=r"(at) : "l"(p));
    return at;
}

// Four 8 x 8 fp16 matrices from shared memory, lane l giving the address of row l % 8 of matrix
// l / 8; register m of lane l gets row l / 4, columns 2 (l % 4)..+1 of matrix m (an mma fragment).
__device__ __forceinline__ void ldmatrix_x4(u32* r, const u16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");  // reads what the block's plain stores wrote before the barrier
}

// As ldmatrix_x4, each matrix transposed: register m of lane l gets rows 2 (l % 4)..+1 of column
// l / 4 of matrix m (a B fragment from a k-major tile: V's positions x dimensions).
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, const u16* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row))
                 : "memory");
}
#endif

__device__ __forceinline__ uint2 pack_half4(float4 v) { return make_uint2(pack_half2(v.x, v.y), pack_half2(v.z, v.w)); }
