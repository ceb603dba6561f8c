# ONNX Runtime's C/C++ headers (the onnxruntime wheel ships none), shared by the op library's build
# and by examples/cpp. Sets VAMPNET_ORT_INCLUDE_DIR to the folder holding onnxruntime_cxx_api.h,
# looked up in this order:
# 1. ONNXRUNTIME_INCLUDE_DIR (CMake cache variable or environment variable; relative to the project
#    root if relative), e.g. the include/ folder of an official release archive
#    (cmake/fetch_ort_release_headers.sh),
# 2. a system install (/usr/include/onnxruntime, /usr/local/include/onnxruntime),
# 3. Debian trixie's libonnxruntime-dev, downloaded (not installed) into a cache folder.
include_guard(GLOBAL)

set(ONNXRUNTIME_INCLUDE_DIR "$ENV{ONNXRUNTIME_INCLUDE_DIR}" CACHE PATH
    "Folder holding onnxruntime_cxx_api.h (ORT API version >= 21)")
if(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(_vampnet_cache_root "$ENV{XDG_CACHE_HOME}")
elseif(WIN32 AND DEFINED ENV{LOCALAPPDATA})
  set(_vampnet_cache_root "$ENV{LOCALAPPDATA}")
else()
  set(_vampnet_cache_root "$ENV{HOME}/.cache")
endif()
set(VAMPNET_ORT_HEADER_CACHE "${_vampnet_cache_root}/vampnet-onnx/ort-headers" CACHE PATH
    "Where the downloaded ONNX Runtime headers are kept")
option(VAMPNET_FETCH_ORT_HEADERS "Download the ONNX Runtime headers when none are found" ON)

# A relative ONNXRUNTIME_INCLUDE_DIR is taken from the project root (the folder of pyproject.toml),
# whatever folder CMake runs in: cibuildwheel's environment gives one (pyproject.toml).
set(_vampnet_given_include_dir "${ONNXRUNTIME_INCLUDE_DIR}")
if(NOT _vampnet_given_include_dir STREQUAL "" AND NOT IS_ABSOLUTE "${_vampnet_given_include_dir}")
  get_filename_component(_vampnet_given_include_dir "${_vampnet_given_include_dir}" ABSOLUTE
                         BASE_DIR "${CMAKE_CURRENT_LIST_DIR}/..")
endif()

set(VAMPNET_ORT_INCLUDE_DIR "")
foreach(_candidate "${_vampnet_given_include_dir}" /usr/include/onnxruntime
        /usr/local/include/onnxruntime "${VAMPNET_ORT_HEADER_CACHE}/root/usr/include/onnxruntime")
  if(NOT "${_candidate}" STREQUAL "" AND EXISTS "${_candidate}/onnxruntime_cxx_api.h")
    set(VAMPNET_ORT_INCLUDE_DIR "${_candidate}")
    break()
  endif()
endforeach()
# The download needs bash, apt-get and dpkg-deb: Debian and Ubuntu. Elsewhere (macOS, Windows,
# other Linux distributions) the headers come from 1. or 2. (docs/building.md).
find_program(VAMPNET_APT_GET apt-get)
find_program(VAMPNET_BASH bash)
if(VAMPNET_ORT_INCLUDE_DIR STREQUAL "" AND VAMPNET_FETCH_ORT_HEADERS AND VAMPNET_APT_GET
   AND VAMPNET_BASH)
  execute_process(
    COMMAND "${VAMPNET_BASH}" "${CMAKE_CURRENT_LIST_DIR}/fetch_ort_headers.sh" "${VAMPNET_ORT_HEADER_CACHE}"
    OUTPUT_VARIABLE _fetched OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _fetch_result)
  if(_fetch_result EQUAL 0 AND EXISTS "${_fetched}/onnxruntime_cxx_api.h")
    set(VAMPNET_ORT_INCLUDE_DIR "${_fetched}")
  endif()
endif()
if(VAMPNET_ORT_INCLUDE_DIR STREQUAL "")
  message(FATAL_ERROR
    "vampnet_onnx: ONNX Runtime C/C++ headers (onnxruntime_cxx_api.h, API version >= 21) not found.\n"
    "Provide them in one of these ways:\n"
    "  1. set ONNXRUNTIME_INCLUDE_DIR to the folder holding onnxruntime_cxx_api.h, as an environment\n"
    "     variable or with -DONNXRUNTIME_INCLUDE_DIR=... (pip: --config-settings=cmake.define.ONNXRUNTIME_INCLUDE_DIR=...);\n"
    "  2. install them system-wide under /usr/include/onnxruntime or /usr/local/include/onnxruntime\n"
    "     (e.g. Debian 13's libonnxruntime-dev, or the include/ folder of an official ONNX Runtime release archive);\n"
    "  3. on Debian/Ubuntu with apt, let the build download Debian trixie's libonnxruntime-dev into\n"
    "     ${VAMPNET_ORT_HEADER_CACHE} (VAMPNET_FETCH_ORT_HEADERS=ON, the default; it failed or was disabled here:\n"
    "     run cmake/fetch_ort_headers.sh CACHE_DIR by hand to see why).\n"
    "See docs/building.md (offline builds, macOS, Windows).")
endif()
message(STATUS "vampnet_onnx: ONNX Runtime headers from ${VAMPNET_ORT_INCLUDE_DIR}")
