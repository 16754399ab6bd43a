// Unit tests of moving a connection between servers (core/transfer.cc): lazy and eager
// transfer, replay after import, fencing of the old owner, crashes, concurrent claims (I4).
// Everything runs through the in-memory harness (tests/engine_harness.h) with literal times.
#include <gtest/gtest.h>

#include "engine_harness.h"

namespace mtcp::test {
namespace {

#define EXPECT_NO_VIOLATIONS(h) EXPECT_TRUE((h).violations.empty()) << (h).violations.front()

// Eager, each push sent at once (the tests below count messages per step); batching has
// its own tests (EagerBatching).
Limits eager(bool ack_after_replication = false) {
  Limits l;
  l.transfer_mode = TransferMode::eager;
  l.ack_after_replication = ack_after_replication;
  l.replication_batch_ms = 0;
  return l;
}

size_t count_failures(const Harness& h, Error e) {
  return static_cast<size_t>(std::count_if(h.client_events.begin(), h.client_events.end(), [&](const ClientEvent& ev) {
    return ev.kind == ClientEvent::Kind::migration_failed && ev.error == e;
  }));
}

// ---- lazy transfer ------------------------------------------------------------------------

// Connects to S1 and exchanges 100 bytes both ways; returns the connection.
ConnId connect_with_input(Harness& h) {
  h.connect(1);
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  return h.conn();
}

TEST(LazyTransfer, MigrationMovesTheStateAndReplaysFromTheSnapshot) {
  Harness h(3);
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());  // snapshot at input 100 / output 100
  h.write_input(200);
  h.pump();
  EXPECT_EQ(h.read_all(), 300u);
  EXPECT_EQ(h.client().send_log().base(), 300u);

  h.advance_to(50);
  ASSERT_TRUE(h.migrate(2).ok());
  ClientEngine& c = h.client();
  EXPECT_EQ(c.state(), ClientState::established);
  EXPECT_FALSE(c.migrating());
  EXPECT_EQ(c.server(), 2u);
  EXPECT_EQ(c.epoch(), 2u);
  EXPECT_EQ(c.certificate().issuer_id, 2u);
  auto ev = h.last(ClientEvent::Kind::migrated);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->from, 1u);
  EXPECT_EQ(ev->to, 2u);
  EXPECT_EQ(ev->rcv_at, 300u);
  EXPECT_EQ(ev->snd_at, 300u);
  EXPECT_EQ(ev->started_ms, 50u);
  EXPECT_EQ(ev->done_ms, 50u);
  EXPECT_EQ(c.counters().migrations_started, 1u);
  EXPECT_EQ(c.counters().migrations_done, 1u);
  EXPECT_EQ(c.counters().migrations_failed, 0u);
  EXPECT_EQ(c.counters().duplicate_bytes_dropped, 0u);

  // S2 imported the snapshot, replayed the 200 input bytes logged after it and dropped the
  // 200 output bytes the client already had.
  EXPECT_EQ(h.count(2, ServerEvent::Kind::imported), 1u);
  auto i2 = h.info(2, id);
  ASSERT_TRUE(i2);
  EXPECT_EQ(i2->role, Role::owner);
  EXPECT_EQ(i2->epoch, 2u);
  EXPECT_EQ(i2->counter, 1u);
  EXPECT_TRUE(i2->attached);
  EXPECT_EQ(i2->snap_id, 1u);
  EXPECT_EQ(i2->in_end, 300u);
  EXPECT_EQ(i2->app_in, 300u);
  EXPECT_EQ(i2->out_end, 300u);
  const Counters& s2 = h.server(2).counters();
  EXPECT_EQ(s2.migrations_started, 1u);
  EXPECT_EQ(s2.migrations_done, 1u);
  EXPECT_EQ(s2.replayed_input_bytes, 200u);
  EXPECT_EQ(s2.suppressed_output_bytes, 200u);

  // S1 was fenced, handed the state over and dropped it on RELEASE.
  EXPECT_EQ(h.count(1, ServerEvent::Kind::fenced), 1u);
  EXPECT_EQ(h.count_control(2, wire::ControlType::claim), 1u);
  EXPECT_EQ(h.count_control(1, wire::ControlType::grant), 1u);
  EXPECT_EQ(h.count_control(2, wire::ControlType::release), 1u);
  EXPECT_EQ(h.server(1).counters().claims_granted, 1u);
  EXPECT_EQ(h.server(1).counters().connections_freed, 1u);
  EXPECT_FALSE(h.info(1, id));
  EXPECT_EQ(h.server(1).conn_write_copy(id, output_bytes(300, 1)).error(), Error::not_owner);
  EXPECT_EQ(h.server(1).conn_snapshot(id, Bytes(8)).error(), Error::not_owner);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));

  // The stream goes on, intact.
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_EQ(h.received(), 350u);
  EXPECT_EQ(h.app(2, id)->consumed(), 350u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(LazyTransfer, FencedOwnerCannotWriteWhileTheHandOffIsInFlight) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  h.hold_control(1, 2);  // the GRANT
  ASSERT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.held_control(1, 2), 1u);
  ServerEngine& s1 = h.server(1);
  auto i1 = s1.conn_info(id);
  ASSERT_TRUE(i1);
  EXPECT_EQ(i1->role, Role::frozen);
  EXPECT_FALSE(i1->attached);
  EXPECT_EQ(h.count(1, ServerEvent::Kind::fenced), 1u);
  EXPECT_EQ(s1.conn_write_copy(id, output_bytes(100, 1)).error(), Error::not_owner);
  EXPECT_EQ(s1.conn_write(id, slice_of(output_bytes(100, 1))).error(), Error::not_owner);
  EXPECT_EQ(s1.conn_snapshot(id, Bytes(8)).error(), Error::not_owner);
  EXPECT_EQ(s1.conn_close(id).error(), Error::not_owner);
  EXPECT_EQ(s1.conn_readable(id), 0u);
  EXPECT_TRUE(s1.owned_connections().empty());
  EXPECT_TRUE(h.owners(id).empty());  // between hand-off and take-over nobody serves
  EXPECT_TRUE(h.client().migrating());
  EXPECT_FALSE(h.client().primary());  // S1 closed its subflow
  // The client keeps writing; the bytes wait for the new owner.
  EXPECT_EQ(h.write_input(20), 20u);
  h.pump();
  h.release_control(1, 2);
  h.pump();
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_EQ(h.read_all(), 20u);
  EXPECT_EQ(h.client().send_log().base(), 120u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(LazyTransfer, ReplayedOutputTheClientAlreadyHasIsDroppedAsDuplicate) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  SubflowId p1 = *h.client().primary();
  // S1 answers 100 more bytes, but they are still on the way when the client migrates.
  h.hold_pipe(p1, Harness::Dir::s2c);
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.client().rcv_nxt(), 100u);
  h.hold_control(2, 1);
  ASSERT_TRUE(h.migrate(2).ok());  // MIGRATE says: client has 100 bytes of output
  EXPECT_TRUE(h.client().migrating());
  // Now S1's answer arrives on the old subflow.
  h.release_pipe(p1, Harness::Dir::s2c);
  h.pump();
  EXPECT_EQ(h.client().rcv_nxt(), 200u);
  h.release_control(2, 1);
  h.pump();
  ASSERT_EQ(h.client().server(), 2u);
  // S2 replays everything (no snapshot). The state carried S1's unacknowledged output after
  // the snapshot, [100, 200), so S2's log holds it from the MIGRATE's position on and the
  // whole replay is suppressed; the client's ACK(200) after ACCEPT trims it before it is
  // resent, so the client sees no duplicate.
  EXPECT_EQ(h.server(2).counters().replayed_input_bytes, 200u);
  EXPECT_EQ(h.server(2).counters().suppressed_output_bytes, 200u);
  EXPECT_EQ(h.client().counters().duplicate_bytes_dropped, 0u);
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_EQ(h.received(), 200u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.app(2, id)->consumed(), 210u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(LazyTransfer, CutPrimaryIsRecoveredThroughAnAlternate) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  h.cut(*h.client().primary());
  h.pump();
  EXPECT_EQ(h.client().server(), 2u);
  auto ev = h.last(ClientEvent::Kind::migrated);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->from, 1u);
  EXPECT_EQ(ev->to, 2u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(LazyTransfer, OwnerCrashEndsInAnExplicitFailure) {
  Harness h(3);
  h.connect(1);
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  h.advance_to(1000);
  h.crash(1);
  h.advance_to(60000);
  EXPECT_EQ(h.client().state(), ClientState::failed);
  EXPECT_EQ(h.client().failure(), Error::no_alternate);
  EXPECT_EQ(h.count(ClientEvent::Kind::migrated), 0u);
  EXPECT_GE(count_failures(h, Error::owner_unreachable), 1u);
  EXPECT_EQ(h.client().counters().migrations_failed, h.limits().migrate_attempts_max);
  auto f = h.last(ClientEvent::Kind::failed);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error, Error::no_alternate);
  EXPECT_TRUE(h.owners(h.conn()).empty());
  EXPECT_EQ(h.received(), 100u);
  EXPECT_NO_VIOLATIONS(h);
}

// Issue 14, slow owner: S1 reads S2's CLAIM only after S2's claim has timed out. S2 abandoned
// it (ABANDON, right behind the CLAIM): S1 freezes for the CLAIM, then serves again on the
// ABANDON; S2 never installs the late GRANT; the client carries on.
TEST(LazyTransfer, AClaimThatTimedOutIsNeverHonouredAndTheSlowOwnerServesAgain) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  h.hold_control(2, 1);  // the owner is slow: S2's messages wait
  ASSERT_TRUE(h.migrate(2).ok());
  h.advance(h.limits().lazy_claim_timeout_ms + 1);
  EXPECT_EQ(count_failures(h, Error::owner_unreachable), 1u);
  EXPECT_EQ(h.server(2).counters().claims_abandoned, 1u);
  EXPECT_EQ(h.held_control(2, 1), 2u);  // the CLAIM and the ABANDON behind it
  EXPECT_EQ(h.client().server(), 1u);   // the primary is still there
  h.release_control(2, 1);              // the owner catches up
  h.pump();
  // It froze for the CLAIM and took the connection back on the ABANDON. (The freeze closed the
  // client's subflow: the client's recovery may already have moved it on, which fences S1 again.)
  EXPECT_GE(h.count(1, ServerEvent::Kind::fenced), 1u);
  EXPECT_EQ(h.server(1).counters().handoffs_cancelled, 1u);
  EXPECT_EQ(h.count(2, ServerEvent::Kind::imported), 0u);  // the late GRANT was not installed
  EXPECT_EQ(h.count_control(2, wire::ControlType::abandon), 2u);  // again, answering that GRANT
  EXPECT_EQ(h.owners(id).size(), 1u);
  // The client recovered and the stream goes on.
  h.advance(10000);
  EXPECT_EQ(h.client().state(), ClientState::established);
  h.write_input(100);
  h.advance(1000);
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_EQ(h.received(), 200u);
  EXPECT_EQ(h.owners(id).size(), 1u);
  EXPECT_NO_VIOLATIONS(h);
}

// A starved owner answers after claim_timeout_ms (the eager wait for votes) but within the
// lazy claim's own wait, lazy_claim_timeout_ms: the first claim wins, nothing is abandoned.
TEST(LazyTransfer, AnOwnerSlowerThanClaimTimeoutStillHandsOverWithinTheLazyWait) {
  Harness h(3);
  ASSERT_GT(h.limits().lazy_claim_timeout_ms, h.limits().claim_timeout_ms + 100);
  ConnId id = connect_with_input(h);
  h.hold_control(2, 1);  // S1 reads S2's CLAIM only after claim_timeout_ms + 100
  ASSERT_TRUE(h.migrate(2).ok());
  h.advance(h.limits().claim_timeout_ms + 100);
  EXPECT_EQ(h.count(ClientEvent::Kind::migration_failed), 0u);
  h.release_control(2, 1);
  h.advance(100);
  EXPECT_EQ(h.count(ClientEvent::Kind::migrated), 1u);
  EXPECT_EQ(h.server(2).counters().claims_abandoned, 0u);
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  h.write_input(100);
  h.advance(1000);
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_NO_VIOLATIONS(h);
}

// The lazy wait never outlasts the client's attempt: with lazy_claim_timeout_ms above
// migrate_timeout_ms, the claim is abandoned at 3/4 of migrate_timeout_ms and the client hears
// "owner unreachable" from the claimer, not its own "migration timeout".
TEST(LazyTransfer, TheLazyClaimWaitEndsBeforeTheClientsAttemptDoes) {
  Limits l;
  l.lazy_claim_timeout_ms = 5000;
  l.migrate_timeout_ms = 2000;
  Harness h(3, l);
  connect_with_input(h);
  h.hold_control(2, 1);  // the owner never answers S2
  ASSERT_TRUE(h.migrate(2).ok());
  h.advance(1499);
  EXPECT_EQ(h.server(2).counters().claims_abandoned, 0u);
  h.advance(2);
  EXPECT_EQ(h.server(2).counters().claims_abandoned, 1u);
  EXPECT_EQ(count_failures(h, Error::owner_unreachable), 1u);
  EXPECT_EQ(count_failures(h, Error::migration_timeout), 0u);
  EXPECT_EQ(h.client().server(), 1u);
  EXPECT_NO_VIOLATIONS(h);
}

// Issue 14, one-way control cut: S1 receives claims but nothing it sends arrives. Every claim
// times out and is abandoned, S1 serves again each time, and the client ends up back on S1
// (alive) instead of failing with no_alternate.
TEST(LazyTransfer, AOneWayControlCutIsRoutedAroundToTheLiveOwner) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  h.hold_control(1, 2);
  h.hold_control(1, 3);
  ASSERT_TRUE(h.migrate(2).ok());
  for (int i = 0; i < 40; ++i) {  // everything S1 sends is lost
    h.advance(250);
    h.drop_held_control(1, 2);
    h.drop_held_control(1, 3);
  }
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.client().server(), 1u);
  EXPECT_GE(h.server(1).counters().handoffs_cancelled, 1u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{1}));
  h.write_input(100);
  h.advance(1000);
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_EQ(h.received(), 200u);
  EXPECT_NO_VIOLATIONS(h);
}

// A claim whose counter an ABANDON already covered is refused before the owner freezes.
TEST(LazyTransfer, AClaimAtOrBelowAnAbandonedCounterIsDeniedWithoutFreezing) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  // S3 abandons a claim of counter 5 it never got to send (as if its CLAIM were still on its way).
  h.inject_control(3, 1, wire::Abandon{id, 77, 5});
  h.pump();
  EXPECT_EQ(h.server(1).counters().handoffs_cancelled, 0u);  // not frozen: nothing to take back
  wire::Claim late;
  late.conn_id = id;
  late.request_id = 77;
  late.mode = TransferMode::lazy;
  late.counter = 5;
  h.inject_control(3, 1, late);
  h.pump();
  EXPECT_EQ(h.count(1, ServerEvent::Kind::fenced), 0u);
  EXPECT_EQ(h.server(1).counters().claims_denied, 1u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{1}));
  EXPECT_TRUE(h.info(1, id)->attached);
  EXPECT_NO_VIOLATIONS(h);
}

// I4, lazy: the same certificate presented to S2 (the client) and S3 (a second holder of the
// secret) at once: both claim from the owner, exactly one gets the connection.
TEST(LazyTransfer, TwoClaimsToTheOwnerExactlyOneWins) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  cert::Certificate c = h.client().certificate();
  h.hold_control(2, 1);
  h.hold_control(3, 1);
  h.hold_control(1, 2);
  ASSERT_TRUE(h.migrate(2).ok());
  SubflowId raw = h.open_raw(3);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c, cert::derive_secret(h.key(), c), *ch, 1, 1, 100, 100));
  h.pump();
  EXPECT_EQ(h.held_control(2, 1), 1u);
  EXPECT_EQ(h.held_control(3, 1), 1u);
  // S2's claim reaches the owner first: S1 freezes and grants it.
  h.release_control(2, 1);
  h.pump();
  EXPECT_EQ(h.held_control(1, 2), 1u);
  // S3's claim is denied; S3 follows the hint to S2, which is taking the connection on.
  h.release_control(3, 1);
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::already_claimed);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).hint_server, 2u);
  h.release_control(1, 2);
  h.pump();
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_FALSE(h.info(3, id));
  EXPECT_FALSE(h.info(1, id));
  EXPECT_EQ(h.server(1).counters().claims_granted, 1u);
  EXPECT_EQ(h.server(1).counters().claims_denied, 1u);
  EXPECT_EQ(h.server(2).counters().claims_denied, 1u);
  EXPECT_EQ(h.server(2).counters().migrations_done, 1u);
  EXPECT_EQ(h.server(3).counters().migrations_done, 0u);
  EXPECT_EQ(h.server(3).counters().migrations_failed, 1u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

// Regression: a MIGRATE with a valid proof but a stale counter sent to a member that does not
// hold the connection (lazy). The owner refuses it before freezing (on_claim), and claim_won
// checks the counter before it creates or changes anything (once it installed the state with
// role owner first, leaving a connection nobody served). A refused attempt must not disturb
// the live connection.
TEST(LazyTransfer, StaleCounterAtANonOwnerLeavesTheConnectionServed) {
  Harness h(3);
  ConnId id = connect_with_input(h);
  ASSERT_TRUE(h.migrate(2).ok());  // counter 1 used
  ASSERT_EQ(h.client().server(), 2u);
  cert::Certificate c2 = h.client().certificate();
  SubflowId raw = h.open_raw(3);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c2, cert::derive_secret(h.key(), c2), *ch, 1, 2, 100, 100));
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::stale_counter);
  h.advance(5000);
  h.write_input(10);
  h.advance(5000);
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.received(), 110u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(LazyTransfer, PingPongKeepsTheStreamIntact) {
  Harness h(3);
  h.snapshot_every = 64;
  h.connect(1);
  ConnId id = h.conn();
  uint64_t epoch = 1;
  for (ServerId to : {2u, 1u, 3u, 1u, 2u, 3u}) {
    h.write_input(150);
    h.pump();
    ASSERT_TRUE(h.migrate(to).ok());
    ASSERT_EQ(h.client().server(), to);
    EXPECT_EQ(h.info(to, id)->epoch, ++epoch);
    EXPECT_EQ(h.owners(id), (std::vector<ServerId>{to}));
  }
  h.write_input(150);
  h.pump();
  EXPECT_EQ(h.read_all(), 7u * 150);
  EXPECT_EQ(h.client().counters().migrations_done, 6u);
  EXPECT_EQ(h.client().counters().migrations_failed, 0u);
  EXPECT_EQ(h.client().counters().duplicate_bytes_dropped, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

// ---- eager batching (replication_batch_ms / replication_batch_bytes) ----------------------

// These tests read the client's send log right after the replicas confirm: the ACK must not
// wait for output to ride with (ack_delay_ms, tested in test_server.cc).
Limits no_ack_delay(Limits l) {
  l.ack_delay_ms = 0;
  return l;
}

Limits batched(uint64_t ms, size_t bytes, bool ack_after_replication = false) {
  Limits l = eager(ack_after_replication);
  l.replication_batch_ms = ms;
  l.replication_batch_bytes = bytes;
  return l;
}

TEST(EagerBatching, InputAndTheSnapshotAfterItGoInOnePush) {
  Harness h(3, batched(5, 1 << 20));
  h.connect(1);
  ConnId id = h.conn();
  size_t msgs0 = h.server(1).counters().replication_msgs_sent;
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  // Nothing pushed yet: the push waits for replication_batch_ms.
  EXPECT_EQ(h.server(1).counters().replication_msgs_sent, msgs0);
  EXPECT_EQ(h.info(2, id)->in_end, 0u);
  EXPECT_LE(h.server(1).next_deadline(), h.now() + 5);
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.pump();
  EXPECT_EQ(h.server(1).counters().replication_msgs_sent, msgs0);
  h.advance(5);
  // One REPL_STATE per alternate (the snapshot, with nothing after it), no REPL_LOG.
  EXPECT_EQ(h.server(1).counters().replication_msgs_sent, msgs0 + 2);
  for (ServerId s : {2u, 3u}) {
    EXPECT_EQ(h.info(s, id)->snap_id, 1u);
    EXPECT_EQ(h.info(s, id)->in_end, 100u);
  }
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerBatching, EnoughWaitingInputIsPushedAtOnce) {
  Harness h(3, batched(1000, 64));
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);  // above replication_batch_bytes: no waiting
  h.pump();
  EXPECT_EQ(h.info(2, id)->in_end, 100u);
  EXPECT_EQ(h.info(3, id)->in_end, 100u);
  h.write_input(10);  // below: waits
  h.pump();
  EXPECT_EQ(h.info(2, id)->in_end, 100u);
  h.advance(1000);
  EXPECT_EQ(h.info(2, id)->in_end, 110u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerBatching, AckAfterReplicationWaitsForTheBatchAndSurvivesACrash) {
  Harness h(3, no_ack_delay(batched(5, 1 << 20, true)));
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.client().send_log().base(), 0u);  // not acknowledged: no alternate holds it yet
  h.advance(5);
  EXPECT_EQ(h.client().send_log().base(), 100u);
  EXPECT_EQ(h.read_all(), 100u);
  h.write_input(40);
  h.pump();
  EXPECT_EQ(h.client().send_log().base(), 100u);
  TimeMs t = h.now();
  h.crash(1);  // the 40 bytes were never pushed nor acknowledged: the client still holds them
  h.pump();
  h.advance_to(t + h.limits().claim_timeout_ms);  // the claim waits for the dead owner
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.owners(id).size(), 1u);
  h.pump();
  EXPECT_EQ(h.read_all(), 40u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerBatching, StatesCarryOnlyTheOutputTheAlternateLacks) {
  // Snapshots faster than confirmations, output the client has not acknowledged: each
  // alternate's confirmations arrive one exchange late. Each output and input byte should
  // reach each alternate about once: one state in flight per alternate, a confirmation of
  // any state sent moves the output mark, the next state carries only the output after it.
  // Before, every snapshot sent the whole unacknowledged output and input logs (under bulk
  // eager echo 30 to 58 bytes of replication per byte of input).
  Harness h(3, eager());
  h.connect(1);
  ConnId id = h.conn();
  h.hold_pipe(*h.client().primary(), Harness::Dir::s2c);  // the output stays unacknowledged
  h.hold_control(2, 1);
  h.hold_control(3, 1);
  uint64_t before = h.server(1).counters().replication_bytes_sent;
  constexpr int kRounds = 40;
  constexpr size_t kBytes = 1000;
  for (int k = 0; k < kRounds; ++k) {
    h.write_input(kBytes);
    h.pump();
    ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
    h.pump();
    h.release_control_but_newest(2, 1, 1);  // all but the newest confirmation arrive now
    h.release_control_but_newest(3, 1, 1);
    h.pump();
  }
  uint64_t sent = h.server(1).counters().replication_bytes_sent - before;
  // Two alternates, input and output once each: 4 bytes per input byte, plus headers.
  EXPECT_LE(sent, 6 * kRounds * kBytes) << "states carry the whole unacknowledged logs again";
  h.release_all_control();
  h.release_pipe(*h.client().primary(), Harness::Dir::s2c);
  h.pump();
  EXPECT_EQ(h.read_all(), kRounds * kBytes);
  for (ServerId s : {2u, 3u}) EXPECT_EQ(h.info(s, id)->snap_id, h.info(1, id)->snap_id);
  EXPECT_NO_VIOLATIONS(h);
}

// ---- eager transfer -----------------------------------------------------------------------

TEST(EagerTransfer, ReplicasFollowTheOwnerAndTakeOver) {
  Harness h(3, eager());
  h.connect(1);
  ConnId id = h.conn();
  for (ServerId s : {2u, 3u}) {
    auto i = h.info(s, id);
    ASSERT_TRUE(i) << "no replica on S" << s;
    EXPECT_EQ(i->role, Role::replica);
    EXPECT_EQ(i->epoch, 1u);
    EXPECT_EQ(i->in_end, 0u);
  }
  EXPECT_EQ(h.count_control(1, wire::ControlType::repl_state), 2u);
  EXPECT_TRUE(h.server(2).owned_connections().empty());

  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_EQ(h.info(2, id)->in_end, 100u);
  EXPECT_EQ(h.info(3, id)->in_end, 100u);
  EXPECT_EQ(h.count_control(1, wire::ControlType::repl_log), 2u);
  EXPECT_EQ(h.server(1).counters().replication_msgs_sent, 4u);
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.pump();
  EXPECT_EQ(h.info(2, id)->snap_id, 1u);
  EXPECT_EQ(h.info(3, id)->snap_id, 1u);
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_EQ(h.info(2, id)->in_end, 150u);

  ASSERT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_EQ(h.info(2, id)->epoch, 2u);
  EXPECT_EQ(h.info(1, id)->role, Role::replica);  // the old owner is now a replica
  EXPECT_EQ(h.info(1, id)->epoch, 2u);
  EXPECT_EQ(h.info(3, id)->role, Role::replica);
  EXPECT_EQ(h.info(3, id)->epoch, 2u);
  EXPECT_EQ(h.count(1, ServerEvent::Kind::fenced), 1u);
  EXPECT_EQ(h.count(2, ServerEvent::Kind::imported), 1u);
  EXPECT_EQ(h.server(1).counters().claims_granted, 1u);
  EXPECT_EQ(h.server(2).counters().replayed_input_bytes, 50u);
  EXPECT_EQ(h.server(2).counters().suppressed_output_bytes, 50u);
  EXPECT_EQ(h.server(1).conn_write_copy(id, output_bytes(150, 1)).error(), Error::not_owner);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.info(3, id)->in_end, 160u);
  EXPECT_NO_VIOLATIONS(h);
}

// Under bulk traffic the owner's logs are megabytes the claimer already holds. The owner's
// GRANT leaves out the output before the state the claimer confirmed and the input since the
// snapshot (pushed as REPL_LOG just before the GRANT); the claimer puts its copies back, and
// the stream continues exactly.
// replication_window_bytes: an alternate that does not confirm is sent no more than the window
// of input beyond what it confirmed; its acknowledgements let the rest go, and a claim by it
// still gets everything (docs/PROTOCOL.md §5.3 "Window").
TEST(EagerTransfer, AnAlternateIsSentNoMoreThanTheWindowBeyondWhatItConfirmed) {
  Limits l = batched(0, 1);
  l.replication_window_bytes = 4096;
  Harness h(3, l);
  h.connect(1);
  ConnId id = h.conn();
  h.hold_control(2, 1);  // member 2's REPL_ACKs do not reach the owner
  for (int i = 0; i < 10; ++i) {
    h.write_input(2000);
    h.pump();
  }
  EXPECT_EQ(h.read_all(), 20000u);
  EXPECT_EQ(h.info(3, id)->in_end, 20000u);  // member 3 confirms: it is sent everything
  EXPECT_LE(h.info(2, id)->in_end, 4096u);
  EXPECT_GT(h.info(2, id)->in_end, 0u);
  EXPECT_GE(h.server(1).counters().replication_window_waits, 1u);
  h.release_control(2, 1);
  h.pump();
  EXPECT_EQ(h.info(2, id)->in_end, 20000u);  // each confirmation let the next window go
  h.hold_control(2, 1);
  h.write_input(10000);
  h.pump();
  EXPECT_EQ(h.read_all(), 10000u);
  h.release_control(2, 1);
  ASSERT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerTransfer, TheOwnersGrantLeavesOutWhatTheClaimerHolds) {
  Harness h(3, batched(100000, 1 << 20));  // input is pushed only by the claim (or a snapshot)
  h.connect(1);
  ConnId id = h.conn();
  h.hold_pipe(*h.client().primary(), Harness::Dir::s2c);  // output stays unacknowledged
  constexpr size_t kBefore = 20000, kAfter = 30000;
  h.write_input(kBefore);
  h.pump();
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.advance(h.limits().replication_batch_ms);  // the snapshot's state goes out and is confirmed
  ASSERT_EQ(h.info(2, id)->snap_id, 1u);
  ASSERT_EQ(h.info(2, id)->in_end, kBefore);
  h.write_input(kAfter);  // consumed by the owner, waiting for the batch: not on member 2 yet
  h.pump();
  ASSERT_EQ(h.info(2, id)->in_end, kBefore);
  size_t logs = h.count_control(1, wire::ControlType::repl_log);
  ASSERT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.count_control(1, wire::ControlType::repl_log), logs + 1);  // the input, ahead of the GRANT
  size_t grant = 0;
  for (const auto& r : h.control_log)
    if (r.from == 1 && r.to == 2 && r.type == wire::ControlType::grant) grant = r.bytes;
  // The output after the snapshot (kAfter, unacknowledged) is still carried: it checks the
  // replay. The output before it and the input (kBefore + kAfter more) are not.
  EXPECT_GT(grant, kAfter);
  EXPECT_LT(grant, kAfter + 1000);
  EXPECT_EQ(h.server(2).counters().control_malformed, 0u);
  EXPECT_EQ(h.server(2).counters().replayed_input_bytes, kAfter);
  EXPECT_EQ(h.read_all(), kBefore + kAfter);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

// The claimer's copy lacks the part the GRANT left out (here: the input sent ahead of it): the claim
// fails cleanly, and the retry gets the whole state from the former owner.
TEST(EagerTransfer, AGrantTheClaimerCannotCompleteFailsTheClaimAndTheRetryMoves) {
  Harness h(3, batched(100000, 1 << 20));
  h.connect(1);
  ConnId id = h.conn();
  h.hold_pipe(*h.client().primary(), Harness::Dir::s2c);
  h.write_input(5000);
  h.pump();
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.advance(h.limits().replication_batch_ms);
  h.write_input(3000);
  h.pump();
  // The REPL_LOG that precedes the GRANT is lost on the way: member 2's input stops short.
  h.hold_control(1, 2);
  ASSERT_TRUE(h.client().migrate(2, h.now()).ok());
  h.pump();
  ASSERT_EQ(h.held_control(1, 2), 2u);  // REPL_LOG, GRANT
  h.drop_held_control_but_newest(1, 2, 1);  // keep only the GRANT
  h.release_control(1, 2);
  h.pump();
  EXPECT_EQ(h.server(2).counters().control_malformed, 1u);
  auto failed = h.last(ClientEvent::Kind::migration_failed);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->error, Error::state_gap);
  // The former owner froze for the claim and closed the client's subflow (held until now):
  // the client recovers by itself, and the former owner, now a replica, grants whole states.
  h.release_pipe(*h.client().primary(), Harness::Dir::s2c);
  h.pump();
  h.advance(h.limits().migrate_timeout_ms);
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.read_all(), 8000u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.owners(id).size(), 1u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerTransfer, AckAfterReplicationSurvivesAnOwnerCrash) {
  Harness h(3, no_ack_delay(eager(true)));
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_EQ(h.client().send_log().base(), 150u);
  EXPECT_EQ(h.info(2, id)->in_end, 150u);
  EXPECT_EQ(h.info(3, id)->in_end, 150u);

  h.advance_to(1000);
  h.crash(1);
  h.pump();
  // The client recovers by itself through the next member; S2's claim has S3's vote but
  // waits claim_timeout_ms for the dead owner.
  EXPECT_TRUE(h.client().migrating());
  EXPECT_EQ(h.client().migration_target(), std::optional<ServerId>(2));
  h.advance_to(1000 + h.limits().claim_timeout_ms);
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.client().server(), 2u);
  auto ev = h.last(ClientEvent::Kind::migrated);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->from, 1u);
  EXPECT_EQ(ev->to, 2u);
  EXPECT_EQ(ev->snd_at, 150u);
  EXPECT_EQ(ev->started_ms, 1000u);
  EXPECT_EQ(ev->done_ms, 1000 + h.limits().claim_timeout_ms);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_EQ(h.info(2, id)->epoch, 2u);
  EXPECT_EQ(h.info(3, id)->role, Role::replica);
  EXPECT_EQ(h.info(3, id)->epoch, 2u);
  EXPECT_EQ(h.server(3).counters().claims_granted, 1u);
  EXPECT_EQ(h.server(2).counters().replayed_input_bytes, 50u);
  EXPECT_EQ(h.server(2).counters().suppressed_output_bytes, 50u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.received(), 160u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerTransfer, AckAfterReplicationRecoversThroughTheThirdMember) {
  Harness h(3, eager(true));
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  ASSERT_TRUE(h.app(1, id)->snapshot(h.server(1)).ok());
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 150u);
  h.advance_to(1000);
  h.crash(1);
  h.pump();
  ASSERT_EQ(h.client().migration_target(), std::optional<ServerId>(2));
  h.cut(*h.client().attempt_subflow());  // the way to S2 breaks too
  h.advance_to(5000);
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_EQ(h.client().server(), 3u);
  EXPECT_EQ(count_failures(h, Error::subflow_lost), 1u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{3}));
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_EQ(h.received(), 160u);
  EXPECT_EQ(h.app(3, id)->consumed(), 160u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerTransfer, StaleReplicasWithoutAckAfterReplicationFailExplicitly) {
  Harness h(3, eager(false));
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  EXPECT_EQ(h.info(2, id)->in_end, 100u);
  // The pushes of the next 50 bytes never leave S1, but S1 acknowledges them at once.
  h.hold_control(1, 2);
  h.hold_control(1, 3);
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_EQ(h.client().send_log().base(), 150u);
  EXPECT_EQ(h.info(2, id)->in_end, 100u);
  EXPECT_EQ(h.info(3, id)->in_end, 100u);
  h.advance_to(1000);
  h.crash(1);
  h.advance_to(60000);
  // No member can continue the stream: the client is told so, nobody takes over with a gap.
  EXPECT_EQ(h.client().state(), ClientState::failed);
  EXPECT_EQ(h.client().failure(), Error::no_alternate);
  EXPECT_EQ(h.count(ClientEvent::Kind::migrated), 0u);
  EXPECT_GE(count_failures(h, Error::owner_unreachable), 1u);
  auto f = h.last(ClientEvent::Kind::failed);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error, Error::no_alternate);
  EXPECT_TRUE(h.owners(id).empty());
  EXPECT_EQ(h.server(2).counters().migrations_done + h.server(3).counters().migrations_done, 0u);
  EXPECT_GE(h.server(2).counters().migrations_failed, 1u);
  EXPECT_EQ(h.received(), 150u);
  EXPECT_NO_VIOLATIONS(h);
}

// I4, eager: two claimers of the same epoch; each member votes once, exactly one wins.
TEST(EagerTransfer, TwoClaimersOfOneEpochExactlyOneWins) {
  Harness h(3, eager());
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  cert::Certificate c = h.client().certificate();
  h.hold_all_control();
  ASSERT_TRUE(h.migrate(2).ok());
  SubflowId raw = h.open_raw(3);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c, cert::derive_secret(h.key(), c), *ch, 1, 1, 100, 100));
  h.pump();
  EXPECT_EQ(h.held_control(2, 1), 1u);  // CLAIM epoch 2 from S2
  EXPECT_EQ(h.held_control(3, 1), 1u);  // CLAIM epoch 2 from S3
  h.release_control(2, 1);  // S1 votes for S2 and hands over
  h.pump();
  EXPECT_EQ(h.info(1, id)->role, Role::replica);
  h.release_control(3, 1);  // S1 already voted: S3 is denied
  h.pump();
  h.release_control(1, 2);  // S2 has a majority (itself + S1) and the owner's answer
  h.pump();
  EXPECT_EQ(h.client().server(), 2u);
  h.release_control(1, 3);
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::already_claimed);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).hint_server, 2u);
  h.release_all_control();
  h.pump();
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_EQ(h.info(2, id)->epoch, 2u);
  EXPECT_EQ(h.info(1, id)->role, Role::replica);
  EXPECT_EQ(h.info(3, id)->role, Role::replica);
  EXPECT_EQ(h.info(3, id)->epoch, 2u);
  EXPECT_EQ(h.server(2).counters().migrations_done, 1u);
  EXPECT_EQ(h.server(3).counters().migrations_done, 0u);
  EXPECT_EQ(h.server(3).counters().migrations_failed, 1u);
  EXPECT_EQ(h.server(1).counters().claims_granted, 1u);
  EXPECT_EQ(h.server(1).counters().claims_denied, 1u);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(EagerTransfer, PingPongKeepsTheStreamIntact) {
  Harness h(3, eager(true));
  h.snapshot_every = 64;
  h.connect(1);
  ConnId id = h.conn();
  for (ServerId to : {2u, 1u, 3u, 1u, 2u, 3u}) {
    h.write_input(150);
    h.pump();
    ASSERT_TRUE(h.migrate(to).ok());
    ASSERT_EQ(h.client().server(), to);
    EXPECT_EQ(h.owners(id), (std::vector<ServerId>{to}));
  }
  h.write_input(150);
  h.pump();
  EXPECT_EQ(h.read_all(), 7u * 150);
  EXPECT_EQ(h.client().counters().migrations_done, 6u);
  EXPECT_EQ(h.client().counters().migrations_failed, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

// ---- a refused claim changes nothing (core/transfer.cc: claim_won, start_claim) ----------
//
// The harness gives every member the same limits, so a state always fits the claimer's send
// log. These tests drive two bare engines by hand instead: S1 with the default send log, S2
// with a send log too small for S1's unacknowledged output, so S2's claim_won must refuse the
// state it won. Frames and control messages are carried by the helpers below.

struct BareNode {
  std::unique_ptr<sim::Prng> rng;
  std::unique_ptr<ServerEngine> engine;
};

class BarePool {
 public:
  BarePool(TransferMode mode, size_t s2_send_log_bytes_max) {
    sim::Prng seed(7);
    seed.fill(key_);
    std::vector<wire::Alternate> pool{{1, "s1"}, {2, "s2"}};
    for (ServerId i : {1u, 2u}) {
      Limits l;
      l.transfer_mode = mode;
      if (i == 2) l.send_log_bytes_max = s2_send_log_bytes_max;
      nodes_[i].rng = std::make_unique<sim::Prng>(seed.next());
      ServerConfig cfg{i, pool, key_, l};
      EXPECT_TRUE(core::validate(cfg).ok());
      nodes_[i].engine = std::make_unique<ServerEngine>(cfg, *nodes_[i].rng);
    }
  }
  ServerEngine& server(ServerId s) { return *nodes_.at(s).engine; }
  const cert::Key& key() const { return key_; }

  // Delivers control messages between the members until none is left; other actions
  // (subflow closes) are dropped: the tests read the subflows' frames themselves.
  void settle() {
    for (int round = 0; round < 100; ++round) {
      bool moved = false;
      for (ServerId from : {1u, 2u}) {
        for (auto& a : server(from).take_actions()) {
          if (a.kind != ServerAction::Kind::send_control) continue;
          moved = true;
          server(a.peer).on_control(from, a.bytes, now);
        }
      }
      if (!moved) return;
    }
    ADD_FAILURE() << "control messages do not settle";
  }
  std::vector<wire::Frame> frames(ServerId s, SubflowId sub) {
    std::vector<Slice> out;
    while (server(s).poll_transmit(sub, 1u << 20, out) > 0) {}
    bool ok = false;
    auto f = decode_frames(flatten(out), &ok);
    EXPECT_TRUE(ok);
    return f;
  }
  // A client's fresh connection on S1 (subflow 1); returns its WELCOME.
  wire::Welcome open_on_s1() {
    server(1).on_subflow_open(1, now);
    server(1).on_subflow_data(1, slice_of(preface_and(fresh_hello())), now);
    settle();
    for (auto& f : frames(1, 1)) {
      if (auto* w = std::get_if<wire::Welcome>(&f)) return unwrap_welcome(*w);
    }
    ADD_FAILURE() << "no WELCOME";
    return {};
  }
  // The client migrates to S2 on subflow 2 with `counter`, holding no output (rcv_nxt 0) and
  // with none of its input acknowledged; returns the frames S2 answered after the claim.
  std::vector<wire::Frame> migrate_to_s2(const wire::Welcome& w, uint32_t counter) {
    server(2).on_subflow_open(2, now);
    server(2).on_subflow_data(2, slice_of(preface_and(wire::Hello{wire::kVersion, wire::HelloKind::migrate, w.conn_id})), now);
    std::optional<wire::ChallengeFrame> ch;
    for (auto& f : frames(2, 2)) {
      if (auto* c = std::get_if<wire::ChallengeFrame>(&f)) ch = *c;
    }
    EXPECT_TRUE(ch);
    if (!ch) return {};
    server(2).on_subflow_data(2, slice_of(encode_frame(make_migrate(w.cert, w.secret, *ch, counter, 1, 0, 0))), now);
    settle();
    return frames(2, 2);
  }
  TimeMs now = 1000;

 private:
  cert::Key key_{};
  std::map<ServerId, BareNode> nodes_;
};

std::optional<Error> refusal(const std::vector<wire::Frame>& frames) {
  for (const auto& f : frames) {
    if (const auto* r = std::get_if<wire::Refuse>(&f)) return r->reason;
  }
  return std::nullopt;
}
bool accepted(const std::vector<wire::Frame>& frames) {
  return std::any_of(frames.begin(), frames.end(), [](const auto& f) { return std::holds_alternative<wire::Accept>(f); });
}

TEST(ClaimRefusal, LazyStateTooLargeForTheClaimerCreatesNoEntry) {
  BarePool pool(TransferMode::lazy, 1024);
  wire::Welcome w = pool.open_on_s1();
  ConnId id = w.conn_id;
  // 4 KiB of output the client has not acknowledged: more than S2's send log holds.
  ASSERT_EQ(pool.server(1).conn_write_copy(id, output_bytes(0, 4096)).value(), 4096u);
  auto f = pool.migrate_to_s2(w, 1);
  EXPECT_EQ(refusal(f), Error::send_log_full);
  EXPECT_FALSE(accepted(f));
  EXPECT_FALSE(pool.server(2).conn_info(id));
  EXPECT_EQ(pool.server(2).connection_count(), 0u);
  EXPECT_EQ(pool.server(2).counters().migrations_done, 0u);
  EXPECT_EQ(pool.server(2).counters().migrations_failed, 1u);
  EXPECT_TRUE(pool.server(2).take_events().empty());  // no `imported`: no application instance
}

TEST(ClaimRefusal, EagerStateTooLargeForTheClaimerLeavesItsReplicaUntouched) {
  BarePool pool(TransferMode::eager, 1024);
  wire::Welcome w = pool.open_on_s1();
  ConnId id = w.conn_id;
  auto before = pool.server(2).conn_info(id);  // the replica S1 pushed when the connection opened
  ASSERT_TRUE(before);
  ASSERT_EQ(before->role, Role::replica);
  ASSERT_EQ(pool.server(1).conn_write_copy(id, output_bytes(0, 4096)).value(), 4096u);
  (void)pool.server(2).take_events();
  auto f = pool.migrate_to_s2(w, 1);
  EXPECT_EQ(refusal(f), Error::send_log_full);
  EXPECT_FALSE(accepted(f));
  // S2 won the vote but cannot hold the state: its copy is as it was (the old code made it the
  // owner at the new epoch, with a half-installed send log, and no application instance).
  auto after = pool.server(2).conn_info(id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->role, Role::replica);
  EXPECT_EQ(after->epoch, before->epoch);
  EXPECT_EQ(after->counter, before->counter);
  EXPECT_EQ(after->in_end, before->in_end);
  EXPECT_EQ(after->out_end, before->out_end);
  EXPECT_EQ(after->out_acked, before->out_acked);
  EXPECT_EQ(after->snap_id, before->snap_id);
  EXPECT_FALSE(after->attached);
  EXPECT_EQ(pool.server(2).owned_connections(), std::vector<ConnId>{});
  EXPECT_EQ(pool.server(2).counters().migrations_failed, 1u);
  for (const auto& e : pool.server(2).take_events()) EXPECT_NE(e.kind, ServerEvent::Kind::imported);
}

// The client comes back to its own eager owner with a counter the connection has seen (a
// replayed MIGRATE): refused before the owner votes for itself or freezes.
TEST(ClaimRefusal, EagerStaleCounterAtTheOwnerLeavesItServing) {
  Harness h(3, eager());
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  ASSERT_TRUE(h.migrate(2).ok());  // counter 1 used; S2 owns epoch 2
  ASSERT_EQ(h.client().server(), 2u);
  auto before = h.info(2, id);
  ASSERT_TRUE(before);
  size_t claims_sent = h.count_control(2, wire::ControlType::claim);
  cert::Certificate c2 = h.client().certificate();
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c2, cert::derive_secret(h.key(), c2), *ch, 1, 2, 100, 100));
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::stale_counter);
  EXPECT_EQ(h.count_control(2, wire::ControlType::claim), claims_sent);  // no CLAIM went out
  auto after = h.info(2, id);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->role, Role::owner);
  EXPECT_TRUE(after->attached);
  EXPECT_EQ(after->epoch, before->epoch);
  EXPECT_EQ(after->counter, before->counter);
  EXPECT_EQ(h.count(2, ServerEvent::Kind::fenced), 0u);
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

// The same replayed counter sent to a replica: it refuses at once, and the owner is untouched.
TEST(ClaimRefusal, EagerStaleCounterAtAReplicaLeavesTheOwnerServing) {
  Harness h(3, eager());
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  ASSERT_TRUE(h.migrate(2).ok());
  ASSERT_EQ(h.client().server(), 2u);
  auto owner_before = h.info(2, id);
  auto replica_before = h.info(3, id);
  ASSERT_TRUE(owner_before && replica_before);
  cert::Certificate c2 = h.client().certificate();
  SubflowId raw = h.open_raw(3);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c2, cert::derive_secret(h.key(), c2), *ch, 1, 2, 100, 100));
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::stale_counter);
  EXPECT_EQ(h.count_control(3, wire::ControlType::claim), 0u);
  auto owner_after = h.info(2, id);
  auto replica_after = h.info(3, id);
  ASSERT_TRUE(owner_after && replica_after);
  EXPECT_EQ(owner_after->role, Role::owner);
  EXPECT_TRUE(owner_after->attached);
  EXPECT_EQ(owner_after->epoch, owner_before->epoch);
  EXPECT_EQ(replica_after->role, Role::replica);
  EXPECT_EQ(replica_after->epoch, replica_before->epoch);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  EXPECT_NO_VIOLATIONS(h);
}

}  // namespace
}  // namespace mtcp::test
