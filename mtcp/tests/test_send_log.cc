// Unit tests for the retained send log (core/send_log.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/buffer.h"
#include "common/errors.h"
#include "core/send_log.h"

namespace mtcp::core {
namespace {

Bytes pattern_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + 3 * i);
  return b;
}

Bytes flat(const std::vector<Slice>& v) {
  Bytes out;
  for (const auto& s : v) out.insert(out.end(), s.span().begin(), s.span().end());
  return out;
}

Bytes concat(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

void expect_positions(const SendLog& log, uint64_t base, uint64_t sent, uint64_t end) {
  EXPECT_EQ(log.base(), base);
  EXPECT_EQ(log.sent(), sent);
  EXPECT_EQ(log.end(), end);
  EXPECT_EQ(log.size(), end - base);
  EXPECT_EQ(log.has_unsent(), sent < end);
}

// A log at DSN 1000 holding two blocks: [1000, 1010) and [1010, 1030).
class SendLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log.reset(1000);
    ASSERT_TRUE(log.append(Slice(a)).ok());
    ASSERT_TRUE(log.append(Slice(b)).ok());
  }
  SendLog log{100};
  BlockPtr a = make_block(pattern_bytes(10, 1));
  BlockPtr b = make_block(pattern_bytes(20, 2));
  Bytes all = concat(*a, *b);
};

TEST(SendLogBasics, FreshLog) {
  SendLog log(64);
  expect_positions(log, 0, 0, 0);
  EXPECT_EQ(log.space(), 64u);
  EXPECT_EQ(log.bytes_max(), 64u);
  log.reset(1u << 20);
  expect_positions(log, 1u << 20, 1u << 20, 1u << 20);
}

TEST_F(SendLogTest, AppendAdvancesEnd) {
  expect_positions(log, 1000, 1000, 1030);
  EXPECT_EQ(log.space(), 70u);
  EXPECT_EQ(log.copy(1000, 1030), all);
}

TEST(SendLogAppend, FullAtTheCapAppendsNothing) {
  SendLog log(10);
  log.reset(5);
  ASSERT_TRUE(log.append(Slice(make_block(pattern_bytes(6, 1)))).ok());
  Status st = log.append(Slice(make_block(pattern_bytes(5, 2))));
  EXPECT_EQ(st.error(), Error::send_log_full);
  expect_positions(log, 5, 5, 11);
  EXPECT_EQ(log.copy(5, 11), pattern_bytes(6, 1));
  // Exactly filling the log works; then even one byte is refused, and an empty slice is fine.
  ASSERT_TRUE(log.append(Slice(make_block(pattern_bytes(4, 3)))).ok());
  EXPECT_EQ(log.space(), 0u);
  EXPECT_EQ(log.append(Slice(make_block(pattern_bytes(1, 4)))).error(), Error::send_log_full);
  EXPECT_TRUE(log.append(Slice(make_block(Bytes{}))).ok());
  expect_positions(log, 5, 5, 15);
  // Acknowledging frees room again.
  ASSERT_TRUE(log.ack(8).ok());
  EXPECT_EQ(log.space(), 3u);
  EXPECT_TRUE(log.append(Slice(make_block(pattern_bytes(3, 5)))).ok());
  expect_positions(log, 8, 8, 18);
}

TEST(SendLogAppend, SliceLargerThanTheWholeLog) {
  SendLog log(10);
  EXPECT_EQ(log.append(Slice(make_block(pattern_bytes(11, 1)))).error(), Error::send_log_full);
  expect_positions(log, 0, 0, 0);
}

TEST_F(SendLogTest, AckBeyondEndIsAProtocolViolation) {
  EXPECT_EQ(log.ack(1031).error(), Error::protocol_violation);
  EXPECT_EQ(log.ack(UINT64_MAX).error(), Error::protocol_violation);
  expect_positions(log, 1000, 1000, 1030);
  EXPECT_EQ(log.copy(1000, 1030), all);
}

TEST_F(SendLogTest, AckDropsAcknowledgedBytes) {
  std::vector<Slice> sent;
  ASSERT_EQ(log.take_unsent(30, sent), 1000u);
  ASSERT_TRUE(log.ack(1015).ok());
  expect_positions(log, 1015, 1030, 1030);
  EXPECT_EQ(log.space(), 85u);
  EXPECT_EQ(log.copy(1015, 1030), Bytes(all.begin() + 15, all.end()));
  ASSERT_TRUE(log.ack(1030).ok());
  expect_positions(log, 1030, 1030, 1030);
  EXPECT_EQ(log.space(), 100u);
}

TEST_F(SendLogTest, AckOfUnsentBytesMovesSent) {
  // After a migration the peer may already hold bytes this subflow never sent.
  ASSERT_TRUE(log.ack(1012).ok());
  expect_positions(log, 1012, 1012, 1030);
  std::vector<Slice> out;
  EXPECT_EQ(log.take_unsent(100, out), 1012u);
  EXPECT_EQ(flat(out), Bytes(all.begin() + 12, all.end()));
}

TEST_F(SendLogTest, DuplicateAndOldAcksAreNoOps) {
  ASSERT_TRUE(log.ack(1010).ok());
  std::vector<Slice> out;
  log.take_unsent(5, out);
  expect_positions(log, 1010, 1015, 1030);
  for (uint64_t dsn : {uint64_t{1010}, uint64_t{1005}, uint64_t{0}}) {
    EXPECT_TRUE(log.ack(dsn).ok()) << dsn;
    expect_positions(log, 1010, 1015, 1030);
  }
  EXPECT_EQ(log.copy(1010, 1030), Bytes(all.begin() + 10, all.end()));
}

TEST_F(SendLogTest, RewindBounds) {
  ASSERT_TRUE(log.ack(1005).ok());
  EXPECT_EQ(log.rewind(1004).error(), Error::state_gap);
  EXPECT_EQ(log.rewind(0).error(), Error::state_gap);
  EXPECT_EQ(log.rewind(1031).error(), Error::protocol_violation);
  expect_positions(log, 1005, 1005, 1030);
  EXPECT_TRUE(log.rewind(1030).ok());
  expect_positions(log, 1005, 1030, 1030);
  EXPECT_TRUE(log.rewind(1005).ok());
  expect_positions(log, 1005, 1005, 1030);
}

TEST_F(SendLogTest, RewindResendsTheSameBytes) {
  std::vector<Slice> first;
  EXPECT_EQ(log.take_unsent(100, first), 1000u);
  EXPECT_FALSE(log.has_unsent());
  ASSERT_TRUE(log.rewind(1007).ok());
  std::vector<Slice> again;
  EXPECT_EQ(log.take_unsent(100, again), 1007u);
  EXPECT_EQ(flat(again), Bytes(all.begin() + 7, all.end()));
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].block.get(), a.get());
  EXPECT_EQ(again[0].off, 7u);
  EXPECT_EQ(again[1].block.get(), b.get());
}

TEST_F(SendLogTest, TakeUnsentReturnsTheVeryBlocks) {
  std::vector<Slice> out;
  EXPECT_EQ(log.take_unsent(100, out), 1000u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].block.get(), a.get());
  EXPECT_EQ(out[0].off, 0u);
  EXPECT_EQ(out[0].len, 10u);
  EXPECT_EQ(out[1].block.get(), b.get());
  EXPECT_EQ(out[1].off, 0u);
  EXPECT_EQ(out[1].len, 20u);
  expect_positions(log, 1000, 1030, 1030);
  // Nothing left: an empty take at end().
  std::vector<Slice> none;
  EXPECT_EQ(log.take_unsent(100, none), 1030u);
  EXPECT_TRUE(none.empty());
}

TEST_F(SendLogTest, TakeUnsentInPiecesSplitsBlocksWithoutCopying) {
  std::vector<Slice> p1, p2, p3;
  EXPECT_EQ(log.take_unsent(4, p1), 1000u);
  EXPECT_EQ(log.take_unsent(16, p2), 1004u);
  EXPECT_EQ(log.take_unsent(1000, p3), 1020u);
  ASSERT_EQ(p1.size(), 1u);
  EXPECT_EQ(p1[0].block.get(), a.get());
  EXPECT_EQ(p1[0].len, 4u);
  ASSERT_EQ(p2.size(), 2u);
  EXPECT_EQ(p2[0].block.get(), a.get());
  EXPECT_EQ(p2[0].off, 4u);
  EXPECT_EQ(p2[0].len, 6u);
  EXPECT_EQ(p2[1].block.get(), b.get());
  EXPECT_EQ(p2[1].off, 0u);
  EXPECT_EQ(p2[1].len, 10u);
  ASSERT_EQ(p3.size(), 1u);
  EXPECT_EQ(p3[0].block.get(), b.get());
  EXPECT_EQ(p3[0].off, 10u);
  EXPECT_EQ(p3[0].len, 10u);
  EXPECT_EQ(concat(concat(flat(p1), flat(p2)), flat(p3)), all);
  std::vector<Slice> zero;
  ASSERT_TRUE(log.rewind(1000).ok());
  EXPECT_EQ(log.take_unsent(0, zero), 1000u);
  EXPECT_TRUE(zero.empty());
  EXPECT_EQ(log.sent(), 1000u);
}

TEST_F(SendLogTest, ViewAndCopy) {
  std::vector<Slice> v;
  log.view(1003, 1025, v);
  EXPECT_EQ(flat(v), Bytes(all.begin() + 3, all.begin() + 25));
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].block.get(), a.get());
  EXPECT_EQ(v[1].block.get(), b.get());
  std::vector<Slice> empty;
  log.view(1010, 1010, empty);
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(log.copy(1029, 1030), Bytes{all.back()});
  // view and copy do not move anything.
  expect_positions(log, 1000, 1000, 1030);
  // After an ack, views are relative to the new base.
  ASSERT_TRUE(log.ack(1012).ok());
  std::vector<Slice> after;
  log.view(1012, 1030, after);
  EXPECT_EQ(flat(after), Bytes(all.begin() + 12, all.end()));
}

TEST_F(SendLogTest, TruncateKeepsBytesBelow) {
  std::vector<Slice> out;
  log.take_unsent(25, out);
  log.truncate(1015);
  expect_positions(log, 1000, 1015, 1015);
  EXPECT_EQ(log.copy(1000, 1015), Bytes(all.begin(), all.begin() + 15));
  std::vector<Slice> v;
  log.view(1000, 1015, v);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].block.get(), a.get());
  EXPECT_EQ(v[1].block.get(), b.get());
  EXPECT_EQ(log.space(), 85u);
  // Appending continues at the new end.
  BlockPtr c = make_block(pattern_bytes(5, 9));
  ASSERT_TRUE(log.append(Slice(c)).ok());
  expect_positions(log, 1000, 1015, 1020);
  EXPECT_EQ(log.copy(1015, 1020), *c);
}

TEST_F(SendLogTest, TruncateAtOrAboveEndIsANoOp) {
  log.truncate(1030);
  expect_positions(log, 1000, 1000, 1030);
  log.truncate(UINT64_MAX);
  expect_positions(log, 1000, 1000, 1030);
  EXPECT_EQ(log.copy(1000, 1030), all);
}

TEST_F(SendLogTest, TruncateBelowBaseEmptiesAtBase) {
  ASSERT_TRUE(log.ack(1012).ok());
  log.truncate(900);
  expect_positions(log, 1012, 1012, 1012);
  EXPECT_EQ(log.space(), 100u);
  EXPECT_EQ(log.rewind(1011).error(), Error::state_gap);
  EXPECT_EQ(log.ack(1013).error(), Error::protocol_violation);
  ASSERT_TRUE(log.append(Slice(make_block(pattern_bytes(3, 1)))).ok());
  expect_positions(log, 1012, 1012, 1015);
}

TEST_F(SendLogTest, ResetForgetsEverything) {
  log.reset(5000);
  expect_positions(log, 5000, 5000, 5000);
  EXPECT_EQ(log.space(), 100u);
  std::vector<Slice> out;
  EXPECT_EQ(log.take_unsent(10, out), 5000u);
  EXPECT_TRUE(out.empty());
}

TEST(SendLogLarge, DsnNearTheTopOfTheSpace) {
  SendLog log(1000);
  const uint64_t start = UINT64_MAX - 500;
  log.reset(start);
  ASSERT_TRUE(log.append(Slice(make_block(pattern_bytes(400, 1)))).ok());
  EXPECT_EQ(log.end(), start + 400);
  std::vector<Slice> out;
  EXPECT_EQ(log.take_unsent(1000, out), start);
  ASSERT_TRUE(log.ack(start + 400).ok());
  expect_positions(log, start + 400, start + 400, start + 400);
}

// MTCP_ASSERT is compiled in (MTCP_INVARIANTS, on by default in every build type): a view
// outside [base, end) is an invariant failure that prints where and why, then aborts.
TEST(SendLogDeathTest, ViewOutsideTheLogIsAnInvariantFailure) {
#if MTCP_INVARIANTS
  SendLog log(16);
  ASSERT_TRUE(log.append(Slice::copy_of(pattern_bytes(8, 1))).ok());
  std::vector<Slice> out;
  EXPECT_DEATH(log.view(0, 9, out), "send_log.cc:[0-9]+: invariant failed: .*send log: view outside");
#else
  GTEST_SKIP() << "MTCP_INVARIANTS is off";
#endif
}

}  // namespace
}  // namespace mtcp::core
