// In-register decoders of GGUF quantized blocks (M0-W-1201: weights stay quantized in VRAM and
// are decoded inside the kernels). Block layouts follow ggml (ggml-common.h) and gguf-py's
// quants.py; the NumPy twins are reference_worker/quant.py. Every type is addressed the same
// way: a row of n values holds n/32 "units" of 32 values (a block, or an eighth of a K-quant
// super-block), and decode4(row, u, s) returns values 4s..4s+3 of unit u. Eight lanes of a
// warp decode one unit, so a warp's loads of weights and of the activations it multiplies
// are contiguous across lanes (coalesced), which is what makes the mat-vec memory-bound.
#pragma once
#include "common.cuh"

// ggml type ids (gguf GGMLQuantizationType).
#define QT_F32 0
#define QT_F16 1
#define QT_Q4_0 2
#define QT_Q5_0 6
#define QT_Q8_0 8
#define QT_Q4_K 12
#define QT_Q6_K 14
#define QT_MXFP4 39
#define QT_BF16 30

// Layouts (bytes per block / values per block):
//   F32 4/1, F16 2/1, BF16 2/1 (decoded 32 at a time)
//   Q4_0  18/32:  d:f16, qs[16]              Q5_0 22/32: d:f16, qh[4], qs[16]
//   Q8_0  34/32:  d:f16, qs[32] int8         MXFP4 17/32: e:E8M0, qs[16]
//   Q4_K 144/256: d, dmin:f16, scales[12], qs[128]
//   Q6_K 210/256: ql[128], qh[64], scales[16] int8, d:f16

// Two little-endian u16 loads as one u32 (blocks of 2-byte alignment only).
__device__ __forceinline__ u32 load_u32_2aligned(const u8* p) {
    const u16* h = reinterpret_cast<const u16*>(p);
    return (u32)h[0] | ((u32)h[1] << 16);
}

__device__ __forceinline__ u32 load_u32_unaligned(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

__device__ __forceinline__ u32 byte_of(u32 word, int i) { return (word >> (8 * i)) & 0xFF; }

template <int QT> __device__ __forceinline__ float4 decode4(const u8* row, int u, int s);

// Four decoded weights times four activations.
__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

template <> __device__ __forceinline__ float4 decode4<QT_F32>(const u8* row, int u, int s) {
    return *reinterpret_cast<const float4*>(row + u * 128 + 16 * s);
}

template <> __device__ __forceinline__ float4 decode4<QT_F16>(const u8* row, int u, int s) {
    const uint2 v = *reinterpret_cast<const uint2*>(row + u * 64 + 8 * s);
    return make_float4(half_to_float(v.x & 0xFFFF), half_to_float(v.x >> 16),
                       half_to_float(v.y & 0xFFFF), half_to_float(v.y >> 16));
}

template <> __device__ __forceinline__ float4 decode4<QT_BF16>(const u8* row, int u, int s) {
    const uint2 v = *reinterpret_cast<const uint2*>(row + u * 64 + 8 * s);
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xFFFF0000u),
                       __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xFFFF0000u));
}

// Q4_0 and Q5_0 values 0..15 are the low nibbles of qs[0..15], values 16..31 the high ones.
template <> __device__ __forceinline__ float4 decode4<QT_Q4_0>(const u8* row, int u, int s) {
    const u8* b = row + u * 18;
    const float d = load_half(b);
    const u32 q = load_u32_2aligned(b + 2 + 4 * (s & 3)) >> (4 * (s >> 2));
    return make_float4(d * (float)((int)(q & 0xF) - 8), d * (float)((int)((q >> 8) & 0xF) - 8),
                       d * (float)((int)((q >> 16) & 0xF) - 8), d * (float)((int)((q >> 24) & 0xF) - 8));
}

template <> __device__ __forceinline__ float4 decode4<QT_Q5_0>(const u8* row, int u, int s) {
    const u8* b = row + u * 22;
    const float d = load_half(b);
    const u32 qh = load_u32_2aligned(b + 2) >> (4 * s);  // bit j is the 5th bit of value j
    const u32 q = load_u32_2aligned(b + 6 + 4 * (s & 3)) >> (4 * (s >> 2));
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = d * (float)((int)(((q >> (8 * i)) & 0xF) | (((qh >> i) & 1) << 4)) - 16);
    return make_float4(v[0], v[1], v[2], v[3]);
}

template <> __device__ __forceinline__ float4 decode4<QT_Q8_0>(const u8* row, int u, int s) {
    const u8* b = row + u * 34;
    const float d = load_half(b);
    const u32 q = load_u32_2aligned(b + 2 + 4 * s);
    return make_float4(d * (float)(signed char)byte_of(q, 0), d * (float)(signed char)byte_of(q, 1),
                       d * (float)(signed char)byte_of(q, 2), d * (float)(signed char)byte_of(q, 3));
}

// decode_pair(row, u, g) (g in 0..7): groups g and g ^ 4 of unit u, that is decode4(row, u, g)
// and decode4(row, u, g ^ 4) (bit for bit but for the sign of a zero: scaled_bytes), for the types where the two share most of their
// decode (PAIRS): a mat-vec then gives each unit four lanes of eight values, not eight of four.
struct Float4Pair {
    float4 a, b;
};
template <int QT> __device__ __forceinline__ Float4Pair decode_pair(const u8* row, int u, int g);
template <int QT> constexpr bool PAIRS = QT == QT_Q5_0 || QT == QT_Q8_0;

// d * (b - offset) for each of the four bytes b of w (offset a whole number, 0..255), as decode4's
// d * (float)(b - offset) but that a zero is +0 (decode4's is -0 where d < 0), and with no
// int-to-float conversion (I2F issues at an eighth of the FMA rate on Hopper): a byte permute
// makes the float 2^15 + b (b in mantissa bits 8..15), and one FMA takes d (2^15 + offset) off
// d (2^15 + b). d (2^15 + offset) is exact in fp32 (at most 11 + 12 significant bits), and so is
// d (b - offset) (at most 11 + 8), so the FMA's one rounding changes nothing.
__device__ __forceinline__ float byte_as_float(u32 w, u32 selector) {
    return __uint_as_float(__byte_perm(w, 0x47000000u, selector));  // bytes 0, w's byte, 0, 0x47
}

__device__ __forceinline__ float4 scaled_bytes(float d, u32 w, float offset) {
    const float c = -d * (32768.0f + offset);
    return make_float4(fmaf(d, byte_as_float(w, 0x7404), c), fmaf(d, byte_as_float(w, 0x7414), c),
                       fmaf(d, byte_as_float(w, 0x7424), c), fmaf(d, byte_as_float(w, 0x7434), c));
}

// Q5_0 group g of a block from its scale d, high-bit word qh and the qs word of g % 4: the
// nibbles of g / 2 (low or high) with bits 4g..4g+3 of qh moved to bit 4 of each byte (the
// multiply puts bit i at 8i + 4; its four shifted copies do not overlap, so nothing carries).
__device__ __forceinline__ float4 q5_0_group(float d, u32 qh, u32 qs, int g) {
    const u32 high = (((qh >> (4 * g)) & 0xFu) * 0x02040810u) & 0x10101010u;
    return scaled_bytes(d, ((qs >> (4 * (g >> 2))) & 0x0F0F0F0Fu) | high, 16.0f);
}

template <> __device__ __forceinline__ Float4Pair decode_pair<QT_Q5_0>(const u8* row, int u, int g) {
    const u8* b = row + u * 22;
    const float d = load_half(b);
    const u32 qh = load_u32_2aligned(b + 2), qs = load_u32_2aligned(b + 6 + 4 * (g & 3));
    return {q5_0_group(d, qh, qs, g), q5_0_group(d, qh, qs, g ^ 4)};
}

// Q8_0's int8 q as the byte q + 128 (q ^ 0x80), for scaled_bytes.
template <> __device__ __forceinline__ Float4Pair decode_pair<QT_Q8_0>(const u8* row, int u, int g) {
    const u8* b = row + u * 34;
    const float d = load_half(b);
    return {scaled_bytes(d, load_u32_2aligned(b + 2 + 4 * g) ^ 0x80808080u, 128.0f),
            scaled_bytes(d, load_u32_2aligned(b + 2 + 4 * (g ^ 4)) ^ 0x80808080u, 128.0f)};
}

// E8M0 scale halved, as ggml_e8m0_to_fp32_half: the fp4 table below is doubled.
__device__ __forceinline__ float e8m0_half(u32 e) {
    return __uint_as_float(e < 2 ? (0x00200000u << e) : ((e - 1) << 23));
}

// fp4 (e2m1) magnitudes doubled, {0, 1, 2, 3, 4, 6, 8, 12}, one nibble each; bit 3 is the sign.
__device__ __forceinline__ float fp4_doubled(u32 k) {
    const float mag = (float)((0xC8643210u >> (4 * (k & 7))) & 0xF);
    return (k & 8) ? -mag : mag;
}

template <> __device__ __forceinline__ float4 decode4<QT_MXFP4>(const u8* row, int u, int s) {
    const u8* b = row + u * 17;  // 17-byte blocks: no alignment to rely on
    const float d = e8m0_half(b[0]);
    const u32 q = load_u32_unaligned(b + 1 + 4 * (s & 3)) >> (4 * (s >> 2));
    return make_float4(d * fp4_doubled(q & 0xF), d * fp4_doubled((q >> 8) & 0xF),
                       d * fp4_doubled((q >> 16) & 0xF), d * fp4_doubled((q >> 24) & 0xF));
}

// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes (get_scale_min_k4);
// qs holds four runs of 32 bytes, run g giving sub-block 2g (low nibbles) and 2g + 1 (high).
template <> __device__ __forceinline__ float4 decode4<QT_Q4_K>(const u8* row, int u, int s) {
    const u8* b = row + (u >> 3) * 144;
    const int sub = u & 7;
    const float d = load_half(b), dmin = load_half(b + 2);
    const u8* sc = b + 4;
    int scale, mn;
    if (sub < 4) {
        scale = sc[sub] & 63;
        mn = sc[sub + 4] & 63;
    } else {
        scale = (sc[sub + 4] & 0xF) | ((sc[sub - 4] >> 6) << 4);
        mn = (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4);
    }
    const float ds = d * (float)scale, dm = dmin * (float)mn;
    const u32 q = *reinterpret_cast<const u32*>(b + 16 + 32 * (sub >> 1) + 4 * s) >> (4 * (sub & 1));
    return make_float4(ds * (float)(q & 0xF) - dm, ds * (float)((q >> 8) & 0xF) - dm,
                       ds * (float)((q >> 16) & 0xF) - dm, ds * (float)((q >> 24) & 0xF) - dm);
}

// Q6_K: each half of 128 values has 64 ql bytes (low 4 bits), 32 qh bytes (2 high bits each)
// and 8 int8 scales of 16 values; sub-block j of a half reads ql[(j & 1) * 32 + l] (nibble
// j >> 1) and bits 2j..2j+1 of qh[l].
template <> __device__ __forceinline__ float4 decode4<QT_Q6_K>(const u8* row, int u, int s) {
    const u8* b = row + (u >> 3) * 210;
    const int sub = u & 7, half = sub >> 2, j = sub & 3;
    const u32 ql = load_u32_2aligned(b + 64 * half + 32 * (j & 1) + 4 * s) >> (4 * (j >> 1));
    const u32 qh = load_u32_2aligned(b + 128 + 32 * half + 4 * s) >> (2 * j);
    const float d = load_half(b + 208) * (float)reinterpret_cast<const signed char*>(b + 192)[8 * half + 2 * j + (s >> 2)];
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = d * (float)((int)(((ql >> (8 * i)) & 0xF) | (((qh >> (8 * i)) & 3) << 4)) - 32);
    return make_float4(v[0], v[1], v[2], v[3]);
}
