#ifndef EMBEDFLEET_RESAMPLE_H
#define EMBEDFLEET_RESAMPLE_H
#define PRECISION_BITS 22
void ef_resample_h(const unsigned char *src, int src_w, int rows, int n,
                   const int *start, const int *count, const int *k, int ksize,
                   unsigned char *dst, void *row4);
void ef_resample_v(const unsigned char *src, int width, int r0, int n,
                   const int *start, const int *count, const int *k, int ksize,
                   unsigned char *dst, int dst_stride, int *acc);
#endif
