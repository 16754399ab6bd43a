// TEST-MATRIX #9: a migration request that was valid once is worthless when replayed, to the
// same server or another, because the proof binds that server's fresh challenge; and a request
// made with an expired certificate is refused. Nothing is fetched and the live connection is
// not disturbed (I3).
#include <gtest/gtest.h>

#include "engine_harness.h"

#define EXPECT_NO_VIOLATIONS(h) EXPECT_TRUE((h).violations.empty()) << ((h).violations.empty() ? std::string() : (h).violations.front())

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

// ---- replay verification (docs/PROTOCOL.md §4.3) ------------------------------------------
//
// Every scenario: S1 answers 100 bytes that the client reads and acknowledges (S1 drops them
// from its log, so only their digest travels), then 100 more that are still unacknowledged when
// the client moves to S2 (they travel as bytes). No snapshot, so S2's application replays all
// 200 input bytes and regenerates all 200 output bytes, which the client already has or S2's
// log already holds.

enum class Tail { on_the_way, received };

Limits eager_limits() {
  Limits l;
  l.transfer_mode = TransferMode::eager;
  return l;
}

void run_to_migration(Harness& h, Tail tail) {
  h.connect(1);
  h.write_input(100);
  h.pump();
  ASSERT_EQ(h.read_all(), 100u);
  SubflowId p1 = *h.client().primary();
  h.hold_pipe(p1, Harness::Dir::s2c);
  h.write_input(100);
  h.pump();
  if (tail == Tail::received) {
    // The client receives the tail but its ACK never reaches S1: its receive position is past
    // the acknowledged one.
    h.hold_pipe(p1, Harness::Dir::c2s);
    h.release_pipe(p1, Harness::Dir::s2c);
    h.pump();
    ASSERT_EQ(h.client().rcv_nxt(), 200u);
  }
  ASSERT_EQ(h.server(1).conn_info(h.conn())->out_acked, 100u);
  ASSERT_EQ(h.server(1).conn_info(h.conn())->out_end, 200u);
  ASSERT_TRUE(h.migrate(2).ok());
  h.pump();
}

bool closed_with(Harness& h, ServerId s, Error e) {
  for (const auto& ev : h.server_events[s]) {
    if (ev.kind == ServerEvent::Kind::closed && ev.error == e) return true;
  }
  return false;
}

void expect_verified(Harness& h) {
  ASSERT_EQ(h.client().server(), 2u);
  h.read_all();
  EXPECT_EQ(h.received(), 200u);
  const Counters& c2 = h.server(2).counters();
  EXPECT_EQ(c2.replay_mismatches, 0u);
  EXPECT_EQ(c2.replay_checked_bytes, 200u);  // 100 against the digest, 100 byte for byte
  EXPECT_EQ(c2.replay_unverified_bytes, 0u);
  EXPECT_EQ(c2.suppressed_output_bytes, 200u);
  EXPECT_EQ(h.server(1).counters().output_digest_bytes, 100u);  // what left S1's log
  // The stream goes on and S2 digests its own output for the next owner.
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_GT(h.server(2).counters().output_digest_bytes, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

void expect_caught(Harness& h) {
  EXPECT_EQ(h.server(2).counters().replay_mismatches, 1u);
  EXPECT_TRUE(closed_with(h, 2, Error::replay_mismatch));
  EXPECT_NE(std::find(h.write_errors.begin(), h.write_errors.end(), Error::replay_mismatch), h.write_errors.end());
  EXPECT_EQ(h.client().state(), ClientState::failed);
  EXPECT_EQ(h.client().failure(), Error::replay_mismatch);
  auto failed = h.last(ClientEvent::Kind::failed);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->error, Error::replay_mismatch);
  EXPECT_FALSE(h.server(2).conn_info(h.conn()));
  // Nothing wrong ever reached the client.
  h.read_all();
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ReplayCheck, LazyDeterministicReplayIsVerified) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  run_to_migration(h, Tail::on_the_way);
  expect_verified(h);
}

TEST(ReplayCheck, LazyDeterministicReplayIsVerifiedWhenTheClientHasTheTail) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  run_to_migration(h, Tail::received);
  expect_verified(h);
}

TEST(ReplayCheck, EagerDeterministicReplayIsVerified) {
  Harness h(3, eager_limits());
  h.verify_replay = {1, 2, 3};
  run_to_migration(h, Tail::on_the_way);
  expect_verified(h);
}

TEST(ReplayCheck, EagerWithSnapshotsReplaysWithoutMismatchTwice) {
  Harness h(3, eager_limits());
  h.verify_replay = {1, 2, 3};
  h.snapshot_every = 150;  // snapshots at 200 and 400
  h.connect(1);
  for (int i = 0; i < 5; ++i) {
    h.write_input(100);
    h.pump();
    h.read_all();
  }
  SubflowId p1 = *h.client().primary();
  h.hold_pipe(p1, Harness::Dir::s2c);
  h.write_input(30);
  h.pump();
  ASSERT_EQ(h.server(1).conn_info(h.conn())->snap_out_seq, 400u);
  ASSERT_TRUE(h.migrate(2).ok());
  h.pump();
  ASSERT_EQ(h.client().server(), 2u);
  h.read_all();
  // [400, 500) against S1's digest, [500, 530) against its tail.
  EXPECT_EQ(h.server(2).counters().replay_checked_bytes, 130u);
  // S2 has not snapshotted since: its own digest of [400, 530) travels to S3.
  ASSERT_TRUE(h.migrate(3).ok());
  h.pump();
  ASSERT_EQ(h.client().server(), 3u);
  EXPECT_EQ(h.server(3).counters().replay_checked_bytes, 130u);
  h.write_input(100);
  h.pump();
  h.read_all();
  EXPECT_EQ(h.received(), 630u);
  for (ServerId s : {1u, 2u, 3u}) {
    EXPECT_EQ(h.server(s).counters().replay_mismatches, 0u) << s;
    EXPECT_EQ(h.server(s).counters().replay_unverified_bytes, 0u) << s;
  }
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ReplayCheck, LazyMismatchInTheLoggedOutputIsCaught) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  h.corrupt_imported_at[2] = 150;  // in the tail S2 received as bytes
  run_to_migration(h, Tail::on_the_way);
  expect_caught(h);
}

TEST(ReplayCheck, LazyMismatchInTheDigestOnlyOutputIsCaught) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  h.corrupt_imported_at[2] = 50;  // acknowledged to S1: only its digest travelled
  run_to_migration(h, Tail::on_the_way);
  expect_caught(h);
  EXPECT_EQ(h.server(2).counters().replay_checked_bytes, 0u);
}

TEST(ReplayCheck, MismatchIsCaughtWhenTheClientAlreadyHasTheTail) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  h.corrupt_imported_at[2] = 199;
  run_to_migration(h, Tail::received);
  expect_caught(h);
}

TEST(ReplayCheck, EagerMismatchIsCaught) {
  for (uint64_t at : {uint64_t{10}, uint64_t{120}}) {
    Harness h(3, eager_limits());
    h.verify_replay = {1, 2, 3};
    h.corrupt_imported_at[2] = at;
    run_to_migration(h, Tail::on_the_way);
    expect_caught(h);
  }
}

TEST(ReplayCheck, VerificationOffDoesNoDigestWorkAndNoCheck) {
  Harness h(3);
  h.corrupt_imported_at[2] = 50;  // goes unnoticed: the bytes are suppressed unchecked
  run_to_migration(h, Tail::on_the_way);
  ASSERT_EQ(h.client().server(), 2u);
  for (ServerId s : {1u, 2u}) {
    const Counters& c = h.server(s).counters();
    EXPECT_EQ(c.output_digest_bytes, 0u) << s;
    EXPECT_EQ(c.replay_checked_bytes, 0u) << s;
    EXPECT_EQ(c.replay_unverified_bytes, 0u) << s;
    EXPECT_EQ(c.replay_mismatches, 0u) << s;
  }
  EXPECT_EQ(h.server(2).counters().suppressed_output_bytes, 200u);
  EXPECT_FALSE(h.server(2).conn_info(h.conn())->verify_replay);
  h.read_all();
  EXPECT_EQ(h.received(), 200u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ReplayCheck, OldOwnerWithoutDigestLeavesTheAcknowledgedPartUnverified) {
  Harness h(3);
  h.verify_replay = {2};  // S1 keeps no digest; S2 checks what it can
  run_to_migration(h, Tail::on_the_way);
  ASSERT_EQ(h.client().server(), 2u);
  const Counters& c2 = h.server(2).counters();
  EXPECT_EQ(h.server(1).counters().output_digest_bytes, 0u);
  EXPECT_EQ(c2.replay_unverified_bytes, 100u);  // [0, 100): acknowledged, no digest
  EXPECT_EQ(c2.replay_checked_bytes, 100u);     // [100, 200): compared with the tail
  EXPECT_EQ(c2.replay_mismatches, 0u);
  h.read_all();
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ReplayCheck, OldOwnerWithoutDigestStillCatchesAMismatchInTheTail) {
  Harness h(3);
  h.verify_replay = {2};
  h.corrupt_imported_at[2] = 100;
  run_to_migration(h, Tail::on_the_way);
  expect_caught(h);
}

TEST(ReplayCheck, ConnInfoReportsReplayPositions) {
  Harness h(3);
  h.verify_replay = {1, 2, 3};
  h.connect(1);
  h.write_input(100);
  h.pump();
  h.read_all();
  ConnId id = h.conn();
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  auto i1 = h.server(1).conn_info(id);
  EXPECT_EQ(i1->snap_in_seq, 100u);
  EXPECT_EQ(i1->snap_out_seq, 100u);
  EXPECT_TRUE(i1->verify_replay);
  h.write_input(40);
  h.pump();
  h.read_all();
  // Pause S2's application so the positions at import are visible.
  h.corrupt_imported_at.clear();
  SubflowId p1 = *h.client().primary();
  h.hold_pipe(p1, Harness::Dir::s2c);
  h.write_input(10);
  h.pump();
  ASSERT_TRUE(h.migrate(2).ok());
  h.pump();
  auto i2 = h.server(2).conn_info(id);
  ASSERT_TRUE(i2);
  EXPECT_EQ(i2->snap_in_seq, 100u);
  EXPECT_EQ(i2->snap_out_seq, 100u);
  EXPECT_EQ(i2->replay_in_until, 150u);   // input logged since the snapshot
  EXPECT_EQ(i2->replay_out_until, 150u);  // S1's output: the client had 140, the log the rest
  // The app sees the same through its handle.
  sdk::ConnStats st = h.app(2, id)->conn()->stats();
  EXPECT_EQ(st.migrations, 1u);
  EXPECT_EQ(st.input_received, 150u);
  EXPECT_EQ(st.snapshot_input, 100u);
  EXPECT_EQ(st.snapshot_output, 100u);
  EXPECT_EQ(st.replay_input_until, 150u);
  EXPECT_EQ(st.replay_output_until, 150u);
  EXPECT_TRUE(st.replay_verified);
  EXPECT_EQ(h.server(2).counters().replay_checked_bytes, 50u);
  EXPECT_EQ(h.server(2).counters().replay_mismatches, 0u);
  h.read_all();
  EXPECT_EQ(h.received(), 150u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ReplayCheck, VerifyReplayNeedsOwnership) {
  Harness h(3);
  h.connect(1);
  EXPECT_EQ(h.server(2).conn_verify_replay(h.conn(), true).error(), Error::not_owner);
  EXPECT_TRUE(h.server(1).conn_verify_replay(h.conn(), true).ok());
  EXPECT_TRUE(h.server(1).conn_info(h.conn())->verify_replay);
  EXPECT_TRUE(h.server(1).conn_verify_replay(h.conn(), false).ok());
  EXPECT_FALSE(h.server(1).conn_info(h.conn())->verify_replay);
}

}  // namespace
}  // namespace mtcp::test
