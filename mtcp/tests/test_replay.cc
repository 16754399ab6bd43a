// TEST-MATRIX #9: a migration request that was valid once is worthless when replayed, to the
// same server or another, because the proof binds that server's fresh challenge; and a request
// made with an expired certificate is refused. Nothing is fetched and the live connection is
// not disturbed (I3).
#include <gtest/gtest.h>

#include "engine_harness.h"

namespace mtcp::test {
namespace {

size_t sends_control(const std::vector<ServerAction>& acts) {
  return static_cast<size_t>(std::count_if(acts.begin(), acts.end(), [](const ServerAction& a) {
    return a.kind == ServerAction::Kind::send_control;
  }));
}

// A genuine MIGRATE for server `s` (made with the real secret), answered to challenge `ch`.
wire::Migrate genuine(Harness& h, const wire::ChallengeFrame& ch, uint32_t counter) {
  cert::Certificate c = h.client().certificate();
  return make_migrate(c, cert::derive_secret(h.key(), c), ch, counter, h.client().server(), 0, 0);
}

TEST(Replay, CapturedMigrateIsRefusedOnANewSubflowToTheSameServer) {
  Harness h(3);
  h.connect(1);
  h.write_input(64);
  h.pump();
  ASSERT_EQ(h.read_all(), 64u);
  // The attacker saw a genuine MIGRATE for S2 go by (here: we make one for a challenge S2
  // issued on another subflow, which the attacker then abandons).
  SubflowId seen = h.open_raw(2);
  auto ch1 = h.raw_hello_migrate(seen, h.conn());
  ASSERT_TRUE(ch1);
  Bytes captured = encode_frame(genuine(h, *ch1, 7));
  h.raw_close(seen);
  h.pump();
  // Replayed on a fresh subflow: S2 issues a new challenge, the captured proof does not fit.
  SubflowId replay = h.open_raw(2);
  auto ch2 = h.raw_hello_migrate(replay, h.conn());
  ASSERT_TRUE(ch2);
  EXPECT_NE(ch1->nonce, ch2->nonce);
  h.raw_send(replay, captured);
  EXPECT_EQ(sends_control(h.server(2).take_actions()), 0u);
  auto f = h.raw_take(replay);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_proof);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 1u);
  EXPECT_EQ(h.server(2).counters().migrations_started, 0u);
  // The live connection is where it was and still works.
  h.pump();
  EXPECT_EQ(h.owners(h.conn()), (std::vector<ServerId>{1}));
  h.write_input(64);
  h.pump();
  EXPECT_EQ(h.read_all(), 64u);
}

TEST(Replay, MigrateForOneServerIsRefusedByAnother) {
  Harness h(3);
  h.connect(1);
  SubflowId to2 = h.open_raw(2);
  auto ch2 = h.raw_hello_migrate(to2, h.conn());
  ASSERT_TRUE(ch2);
  Bytes for_s2 = encode_frame(genuine(h, *ch2, 3));
  // Presented to S3 (even after S3's challenge): the proof names S2 and S2's nonce.
  SubflowId to3 = h.open_raw(3);
  auto ch3 = h.raw_hello_migrate(to3, h.conn());
  ASSERT_TRUE(ch3);
  h.raw_send(to3, for_s2);
  EXPECT_EQ(sends_control(h.server(3).take_actions()), 0u);
  auto f = h.raw_take(to3);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_proof);
  EXPECT_EQ(h.server(3).counters().proofs_bad, 1u);
  EXPECT_EQ(h.owners(h.conn()), (std::vector<ServerId>{1}));
}

TEST(Replay, GenuineMigrateAfterExpiryIsRefused) {
  Harness h(3);
  h.connect(1);
  cert::Certificate c = h.client().certificate();
  // Past expiry, but before any renewal reached the client: the old certificate is refused.
  h.advance_to(c.expires_at_ms);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn());
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c, cert::derive_secret(h.key(), c), *ch, 5, 1, 0, 0));
  EXPECT_EQ(sends_control(h.server(2).take_actions()), 0u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::cert_expired);
  EXPECT_EQ(h.server(2).counters().certs_expired, 1u);
}

}  // namespace
}  // namespace mtcp::test
