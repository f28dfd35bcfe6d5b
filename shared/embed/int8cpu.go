package embed

import (
	"runtime"

	"golang.org/x/sys/cpu"
)

// x64QuantPrecision is ONNX Runtime's session setting that makes its int8
// matrix products on x86-64 without VNNI exact instead of fast.
const x64QuantPrecision = "session.x64quantprecision"

// int8Saturates says whether ONNX Runtime's default int8 matrix kernel can
// saturate on this CPU. Without VNNI it multiplies unsigned by signed bytes
// with VPMADDUBSW, whose 16-bit sums of pairs clip, and activations and
// weights quantised to their full 8-bit range reach that limit: the int8
// test fixture's embeddings fell to a cosine of 0.975 to fp32 on an AMD EPYC
// with AVX2 alone, against 0.999 on a Xeon with AVX-512 VNNI, whose kernel
// sums in 32 bits.
func int8Saturates() bool {
	return runtime.GOARCH == "amd64" && !cpu.X86.HasAVX512VNNI && !cpu.X86.HasAVXVNNI
}
