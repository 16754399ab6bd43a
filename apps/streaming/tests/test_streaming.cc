// Unit tests of the streaming app's pieces without processes: degradation profiles and their
// token bucket, the MPEG-TS PCR index, and the client's continuity check.
#include <gtest/gtest.h>

#include "profile.h"
#include "ts.h"

namespace mtcp::stream {
namespace {

// One 188-byte packet: PID, continuity counter, payload, and optionally a PCR (27 MHz ticks).
std::vector<uint8_t> packet(uint16_t pid, uint8_t cc, std::optional<uint64_t> pcr = std::nullopt) {
  std::vector<uint8_t> p(kTsPacketBytes, 0xFF);
  p[0] = kTsSync;
  p[1] = static_cast<uint8_t>((pid >> 8) & 0x1F);
  p[2] = static_cast<uint8_t>(pid & 0xFF);
  p[3] = static_cast<uint8_t>((pcr ? 0x30 : 0x10) | (cc & 0x0F));
  if (pcr) {
    uint64_t base = *pcr / 300, ext = *pcr % 300;
    p[4] = 7;
    p[5] = 0x10;
    p[6] = static_cast<uint8_t>(base >> 25);
    p[7] = static_cast<uint8_t>(base >> 17);
    p[8] = static_cast<uint8_t>(base >> 9);
    p[9] = static_cast<uint8_t>(base >> 1);
    p[10] = static_cast<uint8_t>(((base & 1) << 7) | 0x7E | (ext >> 8));
    p[11] = static_cast<uint8_t>(ext & 0xFF);
  }
  return p;
}

std::vector<uint8_t> stream_of(int packets, int pcr_every, uint64_t pcr_step_ticks) {
  std::vector<uint8_t> out;
  for (int i = 0; i < packets; ++i) {
    std::optional<uint64_t> pcr;
    if (i % pcr_every == 0) pcr = 1000000 + static_cast<uint64_t>(i / pcr_every) * pcr_step_ticks;
    auto p = packet(0x100, static_cast<uint8_t>(i), pcr);
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

TEST(Profile, ParsesEntriesCommentsAndSeparators) {
  Profile p;
  std::string why;
  ASSERT_TRUE(parse_profile("0:max, 10:400\n# a comment: 99:1\n25.5:max\t30:0", p, why)) << why;
  ASSERT_EQ(p.entries.size(), 4u);
  EXPECT_FALSE(p.kbit_at(5'000'000));
  EXPECT_EQ(p.kbit_at(10'000'000), 400u);
  EXPECT_EQ(p.kbit_at(25'499'999), 400u);
  EXPECT_FALSE(p.kbit_at(25'500'000));
  EXPECT_EQ(p.kbit_at(40'000'000), 0u);
  EXPECT_EQ(p.next_change_after(10'000'000), 25'500'000);
  EXPECT_EQ(p.next_change_after(30'000'000), INT64_MAX);
}

TEST(Profile, RefusesBadEntriesNamingThem) {
  Profile p;
  std::string why;
  EXPECT_FALSE(parse_profile("", p, why));
  EXPECT_NE(why.find("no entry"), std::string::npos);
  EXPECT_FALSE(parse_profile("0:max 10", p, why));
  EXPECT_NE(why.find("'10'"), std::string::npos);
  EXPECT_FALSE(parse_profile("x:100", p, why));
  EXPECT_NE(why.find("number of seconds"), std::string::npos);
  EXPECT_FALSE(parse_profile("1:-5", p, why));
  EXPECT_NE(why.find("the rate must be"), std::string::npos);
  EXPECT_FALSE(parse_profile("5:100 5:200", p, why));
  EXPECT_NE(why.find("times must grow"), std::string::npos);
  std::string many;
  for (size_t i = 0; i <= kProfileEntriesMax; ++i) many += std::to_string(i) + ":max ";
  EXPECT_FALSE(parse_profile(many, p, why));
  EXPECT_NE(why.find("more than"), std::string::npos);
  EXPECT_FALSE(load_profile_file("/nonexistent/profile", p, why));
  EXPECT_NE(why.find("cannot read"), std::string::npos);
}

TEST(RateBudget, CapsTheRateAndCarriesNoDebtFromUncappedTime) {
  Profile p;
  std::string why;
  ASSERT_TRUE(parse_profile("0:max 10:800", p, why));
  RateBudget b(p);
  // Uncapped: everything is allowed, and sending a lot leaves no debt for later.
  for (int64_t t = 0; t < 10'000'000; t += 1000) {
    uint64_t n = b.allow(1 << 20, t);
    EXPECT_EQ(n, 1u << 20);
    b.spend(n);
  }
  // Capped at 800 kbit/s = 100 kB/s: one second of 1 ms steps sends about 100 kB.
  uint64_t sent = 0;
  for (int64_t t = 10'000'000; t <= 11'000'000; t += 1000) {
    uint64_t n = b.allow(1 << 20, t);
    b.spend(n);
    sent += n;
  }
  EXPECT_GE(sent, 95'000u);
  EXPECT_LE(sent, 100'000u + RateBudget::kBucketMinBytes);
  // Empty bucket: the next packet is allowed within a few ms.
  int64_t at = b.when(kTsPacketBytes, 11'000'000);
  EXPECT_GE(at, 11'000'000);
  EXPECT_LE(at, 11'000'000 + 3000);
}

TEST(RateBudget, ZeroRateWaitsForTheNextChange) {
  Profile p;
  std::string why;
  ASSERT_TRUE(parse_profile("0:0 5:max", p, why));
  RateBudget b(p);
  EXPECT_EQ(b.allow(1000, 1'000'000), 0u);
  EXPECT_EQ(b.when(kTsPacketBytes, 1'000'000), 5'000'000);
  EXPECT_EQ(b.allow(1000, 5'000'000), 1000u);
}

TEST(TsIndex, InterpolatesBetweenPcrs) {
  // A PCR every 10 packets, 100 ms (2.7 M ticks) apart.
  auto s = stream_of(101, 10, 2'700'000);
  TsIndex idx;
  std::string why;
  ASSERT_TRUE(index_ts(s, idx, why)) << why;
  ASSERT_EQ(idx.packet_us.size(), 101u);
  EXPECT_EQ(idx.pcr_count, 11u);
  EXPECT_EQ(idx.pcr_pid, 0x100);
  EXPECT_EQ(idx.packet_us[0], 0);
  EXPECT_EQ(idx.packet_us[5], 50'000);
  EXPECT_EQ(idx.packet_us[10], 100'000);
  EXPECT_EQ(idx.packet_us[100], 1'000'000);
  EXPECT_EQ(idx.duration_us(), 1'000'000);
  for (size_t i = 1; i < idx.packet_us.size(); ++i)
    EXPECT_LE(idx.packet_us[i - 1], idx.packet_us[i]);
}

TEST(TsIndex, RefusesWhatIsNotAPaceableTransportStream) {
  TsIndex idx;
  std::string why;
  EXPECT_FALSE(index_ts({}, idx, why));
  EXPECT_NE(why.find("empty"), std::string::npos);
  auto s = stream_of(20, 5, 2'700'000);
  EXPECT_FALSE(index_ts(std::span(s).first(s.size() - 1), idx, why));
  EXPECT_NE(why.find("not a multiple of 188"), std::string::npos);
  auto bad = s;
  bad[188 * 3] = 0x00;
  EXPECT_FALSE(index_ts(bad, idx, why));
  EXPECT_NE(why.find("at byte 564"), std::string::npos);
  auto one_pcr = stream_of(20, 100, 2'700'000);
  EXPECT_FALSE(index_ts(one_pcr, idx, why));
  EXPECT_NE(why.find("fewer than two PCRs"), std::string::npos);
  // The second PCR is earlier than the first (and not a wrap of the counter).
  std::vector<uint8_t> back;
  for (auto pcr : {uint64_t{27'000'000}, uint64_t{26'000'000}}) {
    auto p = packet(0x100, 0, pcr);
    back.insert(back.end(), p.begin(), p.end());
  }
  EXPECT_FALSE(index_ts(back, idx, why));
  EXPECT_NE(why.find("PCR jumps"), std::string::npos);
}

TEST(TsContinuity, SameVerdictWhateverThePieces) {
  auto s = stream_of(200, 10, 2'700'000);
  for (size_t piece : {size_t{1}, size_t{7}, size_t{188}, size_t{1000}, s.size()}) {
    TsContinuity c;
    for (size_t off = 0; off < s.size(); off += piece)
      c.feed(std::span(s).subspan(off, std::min(piece, s.size() - off)));
    EXPECT_EQ(c.packets(), 200u) << piece;
    EXPECT_EQ(c.cc_errors(), 0u) << piece;
    EXPECT_EQ(c.sync_errors(), 0u) << piece;
    EXPECT_EQ(c.pcr_count(), 20u) << piece;
  }
}

TEST(TsContinuity, CountsAMissingARepeatedAndAGarbledPacket) {
  auto s = stream_of(50, 10, 2'700'000);
  std::vector<uint8_t> missing(s.begin(), s.begin() + 188 * 20);
  missing.insert(missing.end(), s.begin() + 188 * 21, s.end());
  TsContinuity a;
  a.feed(missing);
  EXPECT_EQ(a.cc_errors(), 1u);
  std::vector<uint8_t> repeated(s.begin(), s.begin() + 188 * 21);
  repeated.insert(repeated.end(), s.begin() + 188 * 20, s.end());
  TsContinuity b;
  b.feed(repeated);
  EXPECT_GE(b.cc_errors(), 1u);
  auto garbled = s;
  garbled[188 * 30] = 0x12;
  TsContinuity c;
  c.feed(garbled);
  EXPECT_EQ(c.sync_errors(), 1u);
}

}  // namespace
}  // namespace mtcp::stream
