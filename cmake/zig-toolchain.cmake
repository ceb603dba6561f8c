# The wheel's libraries for older Linux: zig's clang (PyPI's `ziglang`) compiles against the
# symbols of glibc $VAMPNET_GLIBC (default 2.28) and links its own libc++ statically, so the op
# library and the kernels module need no libstdc++ and only old glibc symbols, and auditwheel
# tags the wheel manylinux_2_17 (docs/building.md). Only the compiler changes: the project's
# flags (no FMA contraction, no fast math) apply as with GCC. ZIG names the zig binary:
#
#   pip install ziglang
#   export ZIG=$(python -c "import ziglang, pathlib; print(pathlib.Path(ziglang.__file__).with_name('zig'))")
#   python -m build -C cmake.define.CMAKE_TOOLCHAIN_FILE=$PWD/cmake/zig-toolchain.cmake .
if(NOT DEFINED ENV{ZIG} OR NOT EXISTS "$ENV{ZIG}")
  message(FATAL_ERROR "zig-toolchain.cmake: ZIG must name the zig binary (pip install ziglang; "
                      "docs/building.md), got '$ENV{ZIG}'")
endif()
set(CMAKE_C_COMPILER "${CMAKE_CURRENT_LIST_DIR}/zig/cc")
set(CMAKE_CXX_COMPILER "${CMAKE_CURRENT_LIST_DIR}/zig/c++")
set(CMAKE_AR "${CMAKE_CURRENT_LIST_DIR}/zig/ar" CACHE FILEPATH "zig ar")
set(CMAKE_RANLIB "${CMAKE_CURRENT_LIST_DIR}/zig/ranlib" CACHE FILEPATH "zig ranlib")
# CMakeLists.txt then links cmake/zig/finalize.cc into the op library.
set(VAMPNET_ZIG ON CACHE BOOL "built with cmake/zig-toolchain.cmake" FORCE)
