// Receive blocks of the runtime (runtime/read_block.h): small reads are copied out, large reads
// hand the block over, and blocks come back for reuse when their last slice goes, up to a cap.
#include <gtest/gtest.h>

#include <cstring>

#include "runtime/read_block.h"

namespace mtcp::rt {
namespace {

Slice fill_and_take(ReadBlock& rb, size_t n, uint8_t byte) {
  auto buf = rb.buffer();
  EXPECT_EQ(buf.size(), ReadBlock::kBytes);
  std::memset(buf.data(), byte, n);
  return rb.take(n);
}

TEST(ReadBlock, SmallReadsAreCopiedAndTheBlockStays) {
  ReadBlock rb;
  const uint8_t* first = rb.buffer().data();
  Slice s = fill_and_take(rb, 100, 7);
  EXPECT_EQ(s.len, 100u);
  EXPECT_NE(s.data(), first);             // a copy of its own
  EXPECT_EQ(s.block->size(), 100u);       // sized to the read, not 256 KiB
  EXPECT_EQ(rb.buffer().data(), first);   // the large block is read into again
  EXPECT_EQ(s.data()[99], 7);
}

TEST(ReadBlock, LargeReadsHandTheBlockOverAndItComesBack) {
  ReadBlock rb;
  const uint8_t* first = rb.buffer().data();
  Slice s = fill_and_take(rb, ReadBlock::kBytes, 9);
  EXPECT_EQ(s.data(), first);  // no copy
  EXPECT_EQ(rb.spare_blocks(), 0u);
  Slice tail(s.block, 1000, 10);
  s = Slice{};
  EXPECT_EQ(rb.spare_blocks(), 0u);  // a slice still holds it
  EXPECT_EQ(tail.data()[0], 9);
  tail = Slice{};
  EXPECT_EQ(rb.spare_blocks(), 1u);
  EXPECT_EQ(rb.buffer().data(), first);  // reused, not allocated and zero-filled again
  EXPECT_EQ(rb.spare_blocks(), 0u);
}

TEST(ReadBlock, SparesAreCapped) {
  ReadBlock rb;
  std::vector<Slice> held;
  for (size_t i = 0; i < ReadBlock::kSpareMax + 5; ++i) held.push_back(fill_and_take(rb, ReadBlock::kCopyBelow, 1));
  held.clear();
  EXPECT_EQ(rb.spare_blocks(), ReadBlock::kSpareMax);
}

TEST(ReadBlock, SlicesMayOutliveTheReadBlock) {
  Slice s;
  {
    ReadBlock rb;
    s = fill_and_take(rb, ReadBlock::kBytes / 2, 3);
  }
  EXPECT_EQ(s.data()[0], 3);
  s = Slice{};  // the deleter runs after its ReadBlock is gone (checked under ASan)
}

}  // namespace
}  // namespace mtcp::rt
