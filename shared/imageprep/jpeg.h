#ifndef EF_JPEG_H
#define EF_JPEG_H

enum { EF_JPEG_MSG_LEN = 256 };

// Outcome codes of ef_jpeg_header and ef_jpeg_decode.
enum { EF_JPEG_OK = 0, EF_JPEG_FATAL = 1, EF_JPEG_SCANS = 2, EF_JPEG_DEADLINE = 3 };

typedef struct {
	int code;
	char msg[EF_JPEG_MSG_LEN];
	int width, height, components, cmyk, progressive, scans;
} ef_jpeg_result;

// ef_jpeg_header reads the frame header of the JPEG in src.
void ef_jpeg_header(const unsigned char *src, unsigned long n, ef_jpeg_result *res);

// ef_jpeg_decode decodes src into dst (w*h*3 bytes of RGB, or w*h*4 of CMYK as
// stored when cmyk), at 1/scale_denom of its size; w and h are the scaled
// size. It stops past max_scans scans (0: no limit) or timeout_ns (0: none).
void ef_jpeg_decode(const unsigned char *src, unsigned long n, unsigned char *dst, int w, int h,
		int cmyk, int scale_denom, int max_scans, long long timeout_ns, ef_jpeg_result *res);

#endif
