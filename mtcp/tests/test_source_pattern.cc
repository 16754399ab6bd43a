// The source stream's precomputed pattern (services/builtin.h): the bytes are a function of
// (seed, offset) whichever way they are produced (byte, fill, slice), a window is contiguous at
// every phase, shifted or altered streams are caught at the right byte, and the filler of
// snapshot states (seeded_fill) is not periodic.
#include <gtest/gtest.h>

#include "common/mix.h"
#include "services/builtin.h"

namespace {

using namespace mtcp;
using svc::kSourcePeriodBytes;
using svc::kSourceWindowBytes;

TEST(SourcePattern, ByteFillAndSliceAgreeAcrossThePeriod) {
  const uint64_t seed = 7;
  BlockPtr p = svc::source_pattern(seed);
  ASSERT_EQ(p->size(), kSourcePeriodBytes + kSourceWindowBytes);
  for (uint64_t at : {uint64_t{0}, uint64_t{5}, uint64_t{kSourcePeriodBytes - 100}, uint64_t{3 * kSourcePeriodBytes + 11}}) {
    Bytes filled(kSourceWindowBytes + 300);  // longer than a window: the fill wraps twice
    svc::source_fill(seed, at, filled);
    Slice s = svc::source_slice(p, at, kSourceWindowBytes);
    ASSERT_EQ(s.len, kSourceWindowBytes);
    for (size_t i = 0; i < filled.size(); ++i) {
      ASSERT_EQ(filled[i], svc::source_byte(seed, at + i)) << "offset " << at + i;
      if (i < s.len) {
        ASSERT_EQ(s.data()[i], filled[i]) << "offset " << at + i;
      }
    }
    EXPECT_EQ(svc::source_mismatch(p, at, filled), filled.size());
  }
  EXPECT_EQ(svc::source_byte(seed, 42), svc::source_byte(seed, 42 + kSourcePeriodBytes));
  EXPECT_EQ(svc::source_slice(p, 0, kSourceWindowBytes + 1).len, kSourceWindowBytes);  // capped
}

TEST(SourcePattern, MismatchNamesTheFirstDifferingByte) {
  const uint64_t seed = 3;
  BlockPtr p = svc::source_pattern(seed);
  Bytes b(600000);
  svc::source_fill(seed, 1000, b);
  b[555555] ^= 1;
  EXPECT_EQ(svc::source_mismatch(p, 1000, b), 555555u);
  Bytes shifted(4096);
  for (uint64_t shift : {1u, 8u, 64u}) {  // the period is odd: no shift by whole words matches
    svc::source_fill(seed, 1000 + shift, shifted);
    EXPECT_LT(svc::source_mismatch(p, 1000, shifted), shifted.size()) << "shift " << shift;
  }
  Bytes other(4096);
  svc::source_fill(seed + 1, 1000, other);
  EXPECT_LT(svc::source_mismatch(p, 1000, other), other.size());
}

TEST(SourcePattern, PatternsAreCachedPerSeedWithinTheLimit) {
  BlockPtr a = svc::source_pattern(100);
  EXPECT_EQ(svc::source_pattern(100).get(), a.get());
  for (uint64_t s = 200; s < 200 + svc::kSourcePatternsCached; ++s) (void)svc::source_pattern(s);
  BlockPtr again = svc::source_pattern(100);  // evicted meanwhile: generated again, same bytes
  EXPECT_EQ(*again, *a);
}

TEST(SourcePattern, SeededFillIsNotPeriodicAndFillsUnalignedRanges) {
  Bytes whole(kSourcePeriodBytes + 64);
  svc::seeded_fill(9, 0, whole);
  EXPECT_NE(0, std::memcmp(whole.data(), whole.data() + kSourcePeriodBytes, 64));
  Bytes part(77);
  svc::seeded_fill(9, 13, part);  // starts and ends inside a word
  EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + 13, part.size()));
}

// Whatever loop fills it (eight words at a time with AVX-512 where the CPU has it, one at a
// time otherwise), the stream is word_at's: splitmix64 of seed * golden ^ index * C2 ^ a
// constant, little-endian. Checked byte by byte against that formula written out here.
TEST(SourcePattern, SeededFillIsTheDocumentedFunction) {
  for (uint64_t offset : {0u, 5u, 4096u}) {
    Bytes got(70000 + 13);
    svc::seeded_fill(77, offset, got);
    for (size_t i = 0; i < got.size(); ++i) {
      uint64_t at = offset + i;
      uint64_t x = 77 * 0x9E3779B97F4A7C15ull ^ (at / 8) * 0xC2B2AE3D27D4EB4Full ^ 0x5EED5EED5EEDull;
      uint8_t want = static_cast<uint8_t>(splitmix64(x) >> (8 * (at % 8)));
      ASSERT_EQ(got[i], want) << "offset " << offset << " byte " << i;
    }
  }
}

// The one-pass check (seeded_mismatch) agrees with filling and comparing: a match, and the
// first differing byte wherever it lies (in the unaligned head, inside a block of words, in the
// partial last word), for ranges that start and end anywhere.
TEST(SourcePattern, SeededMismatchNamesTheFirstDifferingByte) {
  for (uint64_t offset : {0u, 1u, 7u, 8u, 13u, 4093u}) {
    for (size_t len : {0u, 1u, 5u, 8u, 9u, 4095u, 4096u, 4097u, 12345u, 70000u}) {
      Bytes got(len);
      svc::seeded_fill(42, offset, got);
      ASSERT_EQ(len, svc::seeded_mismatch(42, offset, got)) << offset << " " << len;
      if (len > 0) {
        EXPECT_NE(len, svc::seeded_mismatch(43, offset, got)) << "another seed matched";
      }
      for (size_t at : {size_t{0}, len / 3, len / 2 + 1, len - 1}) {
        if (at >= len) continue;
        Bytes bad = got;
        bad[at] ^= 0x40;
        if (at + 1 < len) bad[len - 1] ^= 0x01;  // a later difference must not be reported first
        ASSERT_EQ(at, svc::seeded_mismatch(42, offset, bad)) << offset << " " << len << " " << at;
      }
    }
  }
}

}  // namespace
