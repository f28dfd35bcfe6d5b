// Package embed owns the ONNX Runtime side of embedfleet: loading the shared
// library once per process and running image encoders.
//
// ONNX Runtime is a C library loaded at run time. [Init] loads it from the
// path that [LibraryPath] chooses (an explicit path, EMBEDFLEET_ORT_LIB as
// filled in by cmd/embedfleet, or the place `make deps` installs it) and
// returns the runtime's version:
//
//	version, err := embed.Init(embed.LibraryPath(flagValue))
//
// Init is safe to call from several goroutines; the library is loaded once
// and later calls return the version it reported.
package embed
