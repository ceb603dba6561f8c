// Linked into the op library when zig builds it (cmake/zig-toolchain.cmake). A C++ library
// registers its static objects' destructors with __cxa_atexit under its own __dso_handle, and
// GCC's crtbeginS.o calls __cxa_finalize(__dso_handle) when the library is unloaded, so they run
// then. zig links no crtbeginS.o: onnxruntime unloads the library with the last session options
// that registered it, and at exit glibc called destructors whose code was gone (a segmentation
// fault). This destructor, run at unload, does what crtbeginS.o would.
extern "C" {
extern void* __dso_handle;
void __cxa_finalize(void* dso);
}

namespace {
__attribute__((destructor)) void finalize_at_unload() { __cxa_finalize(&__dso_handle); }
}  // namespace
