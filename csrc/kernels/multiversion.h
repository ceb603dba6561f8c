// VAMPNET_MULTIVERSION: a hot loop compiled for AVX-512, AVX2 and the x86-64 baseline, the
// variant picked at load time (GCC's target_clones; elsewhere one baseline build). The vector
// code performs the same IEEE operations as the scalar code (no FMA contraction:
// -ffp-contract=off), so every variant gives the same bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VAMPNET_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VAMPNET_MULTIVERSION
#endif
