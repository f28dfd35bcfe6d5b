// JPEG decoding through libjpeg-turbo's libjpeg API (the library Pillow
// decodes JPEG with, at the same defaults: accurate integer IDCT, fancy chroma
// upsampling), statically linked from Debian's libturbojpeg0-dev. The libjpeg
// API rather than TurboJPEG's, for one reason: a progress monitor, through
// which a decode stops at a scan limit or a deadline instead of running for
// minutes on a hostile progressive file.
#include "jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
	struct jpeg_error_mgr pub; // first: libjpeg hands back a pointer to it
	struct jpeg_progress_mgr progress;
	jmp_buf jump;
	ef_jpeg_result *res;
	int max_scans;
	long long deadline_ns; // CLOCK_MONOTONIC; 0: none
} ef_ctx;

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fail(ef_ctx *x, int code) {
	x->res->code = code;
	longjmp(x->jump, 1);
}

static void on_error(j_common_ptr c) {
	ef_ctx *x = (ef_ctx *)c->err;
	(*c->err->format_message)(c, x->res->msg);
	fail(x, EF_JPEG_FATAL);
}

// Warnings after which libjpeg decodes the whole image, as Pillow does; any
// other (a file that ends early above all) fails the decode. Every warning is
// looked at, not only the first, so a recoverable one cannot hide a later
// premature end.
static int recoverable(int code) {
	switch (code) {
	case JWRN_ADOBE_XFORM:
	case JWRN_BOGUS_PROGRESSION:
	case JWRN_EXTRANEOUS_DATA:
	case JWRN_HIT_MARKER:
	case JWRN_HUFF_BAD_CODE:
	case JWRN_JFIF_MAJOR:
	case JWRN_MUST_RESYNC:
	case JWRN_NOT_SEQUENTIAL:
	case JWRN_TOO_MUCH_DATA:
	case JWRN_ARITH_BAD_CODE:
	case JWRN_BOGUS_ICC:
		return 1;
	}
	return 0;
}

static void on_message(j_common_ptr c, int level) {
	ef_ctx *x = (ef_ctx *)c->err;
	if (level >= 0) return; // trace messages
	c->err->num_warnings++;
	if (!recoverable(c->err->msg_code)) {
		(*c->err->format_message)(c, x->res->msg);
		x->res->code = EF_JPEG_FATAL;
		// Go on: libjpeg inserts a fake end after a premature end, so the
		// decode finishes and the caller sees the failure.
	}
}

static void on_progress(j_common_ptr c) {
	ef_ctx *x = (ef_ctx *)c->err;
	j_decompress_ptr d = (j_decompress_ptr)c;
	if (x->max_scans > 0 && d->input_scan_number > x->max_scans) {
		snprintf(x->res->msg, EF_JPEG_MSG_LEN, "more than %d scans", x->max_scans);
		fail(x, EF_JPEG_SCANS);
	}
	if (x->deadline_ns > 0 && now_ns() > x->deadline_ns) {
		snprintf(x->res->msg, EF_JPEG_MSG_LEN, "decode deadline passed");
		fail(x, EF_JPEG_DEADLINE);
	}
}

static void setup(struct jpeg_decompress_struct *d, ef_ctx *x, ef_jpeg_result *res) {
	memset(res, 0, sizeof *res);
	x->res = res;
	d->err = jpeg_std_error(&x->pub);
	x->pub.error_exit = on_error;
	x->pub.emit_message = on_message;
	jpeg_create_decompress(d);
}

void ef_jpeg_header(const unsigned char *src, unsigned long n, ef_jpeg_result *res) {
	struct jpeg_decompress_struct d;
	ef_ctx x;
	memset(&x, 0, sizeof x);
	setup(&d, &x, res);
	if (setjmp(x.jump) == 0) {
		jpeg_mem_src(&d, src, n);
		jpeg_read_header(&d, TRUE);
		res->width = (int)d.image_width;
		res->height = (int)d.image_height;
		res->components = d.num_components;
		res->cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
		res->progressive = d.progressive_mode;
	}
	jpeg_destroy_decompress(&d);
}

void ef_jpeg_decode(const unsigned char *src, unsigned long n, unsigned char *dst, int w, int h,
		int cmyk, int scale_denom, int max_scans, long long timeout_ns, ef_jpeg_result *res) {
	struct jpeg_decompress_struct d;
	ef_ctx x;
	memset(&x, 0, sizeof x);
	setup(&d, &x, res);
	x.max_scans = max_scans;
	if (timeout_ns > 0) x.deadline_ns = now_ns() + timeout_ns;
	x.progress.progress_monitor = on_progress;
	if (setjmp(x.jump) == 0) {
		jpeg_mem_src(&d, src, n);
		jpeg_read_header(&d, TRUE);
		d.progress = &x.progress;
		d.out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGB;
		d.scale_num = 1;
		d.scale_denom = scale_denom > 0 ? scale_denom : 1;
		jpeg_start_decompress(&d);
		if ((int)d.output_width != w || (int)d.output_height != h) {
			snprintf(res->msg, EF_JPEG_MSG_LEN, "output is %ux%u, want %dx%d", d.output_width, d.output_height, w, h);
			fail(&x, EF_JPEG_FATAL);
		}
		int pitch = w * d.output_components;
		while (d.output_scanline < d.output_height) {
			JSAMPROW row = dst + (size_t)d.output_scanline * pitch;
			jpeg_read_scanlines(&d, &row, 1);
		}
		jpeg_finish_decompress(&d);
		res->scans = d.input_scan_number;
	}
	jpeg_destroy_decompress(&d);
}
