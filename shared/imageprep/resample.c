// The two passes of Pillow-compatible resampling on 8-bit RGB, with 22-bit
// fixed-point weights. Go computes the weights and checks every index
// (resize.go); these loops only run them.
#include "resample.h"

static inline unsigned char clip8(int v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : (v > 255 ? 255 : (unsigned char)v);
}

typedef int v4si __attribute__((vector_size(16)));

// The horizontal pass widens each source row once into 32-bit RGBX lanes
// (row4, 4*src_w ints of scratch), so that each tap is one 4-lane
// multiply-add, which the compiler emits as SIMD.
__attribute__((target_clones("avx2", "sse4.1", "default")))
void ef_resample_h(const unsigned char *src, int src_w, int rows, int n,
                   const int *start, const int *count, const int *k, int ksize,
                   unsigned char *dst, void *row4v) {
    v4si *row4 = row4v;
    for (int y = 0; y < rows; y++) {
        const unsigned char *row = src + (long)y * src_w * 3;
        for (int x = 0; x < src_w; x++) {
            v4si v = {row[3 * x], row[3 * x + 1], row[3 * x + 2], 0};
            row4[x] = v;
        }
        unsigned char *out = dst + (long)y * n * 3;
        for (int i = 0; i < n; i++) {
            const v4si *p = row4 + start[i];
            const int *kk = k + (long)i * ksize;
            const int half = 1 << (PRECISION_BITS - 1);
            v4si s = {half, half, half, half};
            for (int j = 0; j < count[i]; j++) s += p[j] * kk[j];
            out[3 * i] = clip8(s[0]);
            out[3 * i + 1] = clip8(s[1]);
            out[3 * i + 2] = clip8(s[2]);
        }
    }
}

__attribute__((target_clones("avx2", "sse4.1", "default")))
void ef_resample_v(const unsigned char *src, int width, int r0, int n,
                   const int *start, const int *count, const int *k, int ksize,
                   unsigned char *dst, int dst_stride, int *acc) {
    int stride = width * 3;
    for (int i = 0; i < n; i++) {
        const unsigned char *base = src + (long)(start[i] - r0) * stride;
        const int *kk = k + (long)i * ksize;
        for (int x = 0; x < stride; x++) acc[x] = 1 << (PRECISION_BITS - 1);
        for (int j = 0; j < count[i]; j++) {
            const unsigned char *row = base + (long)j * stride;
            int w = kk[j];
            for (int x = 0; x < stride; x++) acc[x] += row[x] * w;
        }
        unsigned char *out = dst + (long)i * dst_stride;
        for (int x = 0; x < stride; x++) out[x] = clip8(acc[x]);
    }
}
