// Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11).
// Every random number is a pure function of (seed, row, offset), so results do not depend on
// thread count, on how rows are split between calls, or on the device.
#pragma once

#include <array>
#include <cstdint>

#include "host_device.h"

namespace vampnet {

using PhiloxBlock = std::array<uint32_t, 4>;

VAMPNET_HD inline PhiloxBlock philox4x32_10(PhiloxBlock counter, std::array<uint32_t, 2> key) {
  constexpr uint32_t kMul0 = 0xD2511F53u;
  constexpr uint32_t kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u;
  constexpr uint32_t kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * counter[0];
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * counter[2];
    counter = {static_cast<uint32_t>(p1 >> 32) ^ counter[1] ^ key[0], static_cast<uint32_t>(p1),
               static_cast<uint32_t>(p0 >> 32) ^ counter[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return counter;
}

// The block for one row of one call: key = seed, counter = (row, offset), both as 64-bit words.
VAMPNET_HD inline PhiloxBlock random_block(uint64_t seed, uint64_t row, uint64_t offset) {
  return philox4x32_10({static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32),
                        static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)},
                       {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
}

// A double in [0, 1) with 53 random bits, from two 32-bit words.
VAMPNET_HD inline double uniform53(uint32_t hi_word, uint32_t lo_word) {
  const uint64_t bits = (static_cast<uint64_t>(hi_word >> 5) << 26) | (lo_word >> 6);
  return static_cast<double>(bits) * 0x1.0p-53;
}

}  // namespace vampnet
