// Unit tests of the server engine (core/server.h): subflow setup, plain-TCP detection,
// certificates and proofs, limits and malformed input. Most tests speak the wire protocol by
// hand on "raw" subflows of the harness (tests/engine_harness.h); some run the real client.
#include <gtest/gtest.h>

#include <string>

#include "engine_harness.h"

namespace mtcp::test {
namespace {

cert::Key key_of(uint8_t v) {
  cert::Key k{};
  k.fill(v);
  return k;
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

size_t count_kind(const std::vector<ServerAction>& acts, ServerAction::Kind k) {
  return static_cast<size_t>(std::count_if(acts.begin(), acts.end(), [&](const auto& a) { return a.kind == k; }));
}

template <typename T>
const T* find_frame(const std::vector<wire::Frame>& frames) {
  for (const auto& f : frames) {
    if (auto* p = std::get_if<T>(&f)) return p;
  }
  return nullptr;
}

#define EXPECT_NO_VIOLATIONS(h) EXPECT_TRUE((h).violations.empty()) << (h).violations.front()

// ---- connection setup ---------------------------------------------------------------------

TEST(Server, FreshHelloGetsWelcomeWithAlternatesAndCertificate) {
  Harness h(3);
  h.advance_to(5000);
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  EXPECT_NE(w->conn_id, 0u);
  EXPECT_EQ(w->server_id, 1u);
  EXPECT_EQ(w->epoch, 1u);
  EXPECT_EQ(w->cert, (cert::Certificate{w->conn_id, 1, 5000, 5000 + 600000}));
  EXPECT_EQ(w->secret, cert::derive_secret(h.key(), w->cert));  // unwrapped by the raw client
  ASSERT_TRUE(h.last_wire_welcome);
  EXPECT_NE(h.last_wire_welcome->secret, w->secret);  // the wire never carries it in the clear
  EXPECT_NE(h.last_wire_welcome->key_share, cert::PublicKey{});
  EXPECT_EQ(w->alternates, (std::vector<wire::Alternate>{{2, "s2"}, {3, "s3"}}));
  h.pump();
  ServerEngine& s = h.server(1);
  EXPECT_EQ(s.counters().connections_opened, 1u);
  EXPECT_EQ(h.count(1, ServerEvent::Kind::opened), 1u);
  auto i = s.conn_info(w->conn_id);
  ASSERT_TRUE(i);
  EXPECT_EQ(i->role, Role::owner);
  EXPECT_EQ(i->epoch, 1u);
  EXPECT_EQ(i->counter, 0u);
  EXPECT_TRUE(i->attached);
  EXPECT_EQ(s.owned_connections(), (std::vector<ConnId>{w->conn_id}));
  // Lazy mode: nothing goes to the other members.
  EXPECT_TRUE(h.control_log.empty());
}

TEST(Server, DataBothWaysAndAcks) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  h.raw_send(raw, make_data(0, input_bytes(0, 10)));
  h.pump();
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(std::get<wire::Ack>(f[0]).dsn, 10u);
  EXPECT_EQ(std::get<wire::Data>(f[1]).dsn, 0u);
  EXPECT_EQ(data_bytes(std::get<wire::Data>(f[1])), output_bytes(0, 10));
  auto i = h.info(1, w->conn_id);
  EXPECT_EQ(i->in_end, 10u);
  EXPECT_EQ(i->app_in, 10u);
  EXPECT_EQ(i->out_end, 10u);
  EXPECT_EQ(i->out_acked, 0u);
  h.raw_send(raw, wire::Ack{10});
  EXPECT_EQ(h.info(1, w->conn_id)->out_acked, 10u);
  EXPECT_EQ(h.server(1).counters().frames_malformed, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

// Delayed acknowledgements (docs/PROTOCOL.md §4, ACK frame, "Delayed"): an ACK with no
// output to ride with waits up to ack_delay_ms; it goes at once with output, with
// ack_delay_bytes of input, or when delaying is off.

// A fresh connection on member 1 of h whose app reads and answers nothing.
struct SilentConn {
  SubflowId raw = 0;
  ConnId id = 0;
};
SilentConn silent_conn(Harness& h) {
  SilentConn c;
  c.raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(c.raw);
  EXPECT_TRUE(w);
  if (!w) return c;
  c.id = w->conn_id;
  h.pump();
  EXPECT_NE(h.app(1, c.id), nullptr);
  if (h.app(1, c.id) != nullptr) h.app(1, c.id)->paused = true;
  return c;
}

// The frames member 1 sent on `raw` are exactly one ACK of `dsn`.
void expect_only_ack(Harness& h, SubflowId raw, uint64_t dsn) {
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<wire::Ack>(f[0]));
  EXPECT_EQ(std::get<wire::Ack>(f[0]).dsn, dsn);
}

TEST(Server, AnAckWithNoOutputWaitsForAckDelayMs) {
  Harness h(3);
  SilentConn c = silent_conn(h);
  ASSERT_NE(c.id, 0u);
  h.raw_send(c.raw, make_data(0, input_bytes(0, 10)));
  h.pump();
  EXPECT_TRUE(h.raw_take(c.raw).empty());  // held back
  h.advance(Limits{}.ack_delay_ms);
  expect_only_ack(h, c.raw, 10);
  // The app answers later: the output goes alone (the input was acknowledged already).
  h.app(1, c.id)->paused = false;
  h.app(1, c.id)->step();
  h.pump();
  auto f = h.raw_take(c.raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Data>(f[0]).dsn, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, AnAckGoesAtOnceWithAckDelayBytesOfInput) {
  Harness h(3);
  SilentConn c = silent_conn(h);
  ASSERT_NE(c.id, 0u);
  const size_t n = Limits{}.ack_delay_bytes;
  h.raw_send(c.raw, make_data(0, input_bytes(0, n - 1)));
  h.pump();
  EXPECT_TRUE(h.raw_take(c.raw).empty());
  h.raw_send(c.raw, make_data(n - 1, input_bytes(n - 1, 1)));
  h.pump();
  expect_only_ack(h, c.raw, n);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, AckDelayZeroAcknowledgesAtOnce) {
  Limits l;
  l.ack_delay_ms = 0;
  Harness h(3, l);
  SilentConn c = silent_conn(h);
  ASSERT_NE(c.id, 0u);
  h.raw_send(c.raw, make_data(0, input_bytes(0, 10)));
  h.pump();
  expect_only_ack(h, c.raw, 10);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, DuplicateDataIsDroppedAndCounted) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  h.raw_send(raw, make_data(0, input_bytes(0, 10)));
  h.raw_send(raw, make_data(5, input_bytes(5, 10)));  // [5, 10) again, [10, 15) new
  EXPECT_EQ(h.server(1).counters().duplicate_bytes_dropped, 5u);
  EXPECT_EQ(h.info(1, w->conn_id)->in_end, 15u);
  h.raw_send(raw, make_data(0, input_bytes(0, 15)));  // all old
  EXPECT_EQ(h.server(1).counters().duplicate_bytes_dropped, 20u);
  h.pump();
  EXPECT_EQ(h.app(1, w->conn_id)->consumed(), 15u);
  EXPECT_EQ(h.server(1).counters().frames_malformed, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, UnsupportedVersionIsRefused) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, preface_and(wire::Hello{static_cast<uint8_t>(wire::kVersion + 1), wire::HelloKind::fresh, 0, raw_client_pub()}));
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::unsupported_version);
  h.pump();
  EXPECT_TRUE(h.raw_closed(raw));
  EXPECT_EQ(h.server(1).connection_count(), 0u);
  EXPECT_EQ(h.server(1).subflow_count(), 0u);
}

TEST(Server, HelloMustArriveWithinMigrateTimeout) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, Bytes(wire::kPreface.begin(), wire::kPreface.end()));
  EXPECT_EQ(h.server(1).next_deadline(), h.limits().migrate_timeout_ms);
  h.advance_to(h.limits().migrate_timeout_ms - 1);
  EXPECT_FALSE(h.raw_closed(raw));
  h.advance_to(h.limits().migrate_timeout_ms);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Reset>(f[0]).reason, Error::migration_timeout);
  EXPECT_TRUE(h.raw_closed(raw));
  EXPECT_EQ(h.server(1).counters().plain_tcp_subflows, 0u);
}

// The member frees a finished connection only once the client acknowledged its CLOSE: until
// then the last frames (our ACK of all input, our CLOSE) may still be lost, and the client
// would have to take the connection elsewhere.
TEST(Server, FinishedConnectionWaitsForTheClientsAckOfTheClose) {
  Harness h(3);
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  SubflowId p = *h.client().primary();
  h.client().close();
  h.pump();
  h.hold_pipe(p, Harness::Dir::c2s);  // the client's ACK of our CLOSE does not arrive yet
  ASSERT_TRUE(h.server(1).conn_close(id).ok());
  h.pump();
  EXPECT_TRUE(h.client().finished());
  EXPECT_EQ(h.server(1).connection_count(), 1u);  // everything sent, but not known received
  EXPECT_EQ(h.count(1, ServerEvent::Kind::closed), 0u);
  h.release_pipe(p, Harness::Dir::c2s);
  h.pump();
  EXPECT_EQ(h.count(1, ServerEvent::Kind::closed), 1u);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, ApplicationCloseAfterTheClientsCloseFreesTheConnection) {
  Harness h(3);
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  h.client().close();
  h.pump();
  EXPECT_TRUE(h.server(1).conn_input_closed(id));
  // An event-driven application closes and then stops calling into the connection.
  h.app(1, id)->paused = true;
  ASSERT_TRUE(h.server(1).conn_close(id).ok());
  h.pump();
  h.client().on_timer(h.now());
  h.pump();
  EXPECT_EQ(h.count(ClientEvent::Kind::peer_closed), 1u);
  EXPECT_TRUE(h.client().peer_closed());
  // POSSIBLE ENGINE BUG (kept on purpose, see the report): both directions are closed and
  // every byte is acknowledged, but the server re-checks maybe_free() only from conn_read(),
  // an ACK, a CLOSE or conn_close(), never after poll_transmit() has sent its own CLOSE
  // (fin_sent). Unless the application keeps calling conn_read() after closing, the
  // connection stays in the table, attached, with no timeout. The opposite order (next test)
  // is freed.
  EXPECT_EQ(h.count(1, ServerEvent::Kind::closed), 1u);
  EXPECT_EQ(h.server(1).counters().connections_freed, 1u);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, ClientCloseAfterTheApplicationsCloseFreesTheConnection) {
  Harness h(3);
  h.connect(1);
  ConnId id = h.conn();
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 10u);
  ASSERT_TRUE(h.server(1).conn_close(id).ok());
  h.pump();
  EXPECT_EQ(h.server(1).conn_write_copy(id, output_bytes(10, 1)).error(), Error::closed);
  h.client().on_timer(h.now());
  EXPECT_TRUE(h.client().peer_closed());
  h.client().close();
  h.pump();
  ASSERT_EQ(h.count(1, ServerEvent::Kind::closed), 1u);
  EXPECT_EQ(h.server_events[1].back().error, Error::ok);
  EXPECT_EQ(h.server(1).counters().connections_freed, 1u);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, DetachedConnectionIsFreedAfterOrphanTimeout) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  h.advance_to(100);
  h.raw_close(raw);
  h.pump();
  auto i = h.info(1, w->conn_id);
  ASSERT_TRUE(i);
  EXPECT_FALSE(i->attached);
  EXPECT_EQ(h.server(1).next_deadline(), 100 + h.limits().orphan_timeout_ms);
  h.advance_to(100 + h.limits().orphan_timeout_ms - 1);
  EXPECT_TRUE(h.info(1, w->conn_id));
  h.advance_to(100 + h.limits().orphan_timeout_ms);
  EXPECT_FALSE(h.info(1, w->conn_id));
  ASSERT_EQ(h.count(1, ServerEvent::Kind::closed), 1u);
  EXPECT_EQ(h.server_events[1].back().error, Error::subflow_lost);
  EXPECT_EQ(h.server(1).counters().connections_freed, 1u);
}

TEST(Server, HintReachesTheClient) {
  Harness h(3);
  h.connect(1);
  ASSERT_TRUE(h.server(1).conn_hint(h.conn(), wire::HintReason::overload, 3).ok());
  h.pump();
  auto e = h.last(ClientEvent::Kind::hint);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->hint, wire::HintReason::overload);
  EXPECT_EQ(e->to, 3u);
  EXPECT_EQ(h.server(2).conn_hint(h.conn(), wire::HintReason::overload, 3).error(), Error::not_owner);
}

// ---- plain TCP ----------------------------------------------------------------------------

TEST(Server, HttpRequestIsHandedToThePlainService) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  Bytes req = text("GET / HTTP/1.1\r\nHost: example\r\n\r\n");
  h.raw_send(raw, req);
  auto acts = h.server(1).take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ServerAction::Kind::plain_tcp);
  EXPECT_EQ(acts[0].subflow, raw);
  EXPECT_EQ(acts[0].bytes, req);
  EXPECT_EQ(h.server(1).counters().plain_tcp_subflows, 1u);
  EXPECT_EQ(h.server(1).subflow_count(), 0u);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
  EXPECT_EQ(h.server(1).counters().frames_malformed, 0u);
}

TEST(Server, SilentSubflowBecomesPlainAfterHelloTimeout) {
  Harness h(3);
  h.advance_to(1000);
  SubflowId raw = h.open_raw(1);
  ServerEngine& s = h.server(1);
  EXPECT_EQ(s.next_deadline(), 1000 + h.limits().hello_timeout_ms);
  s.on_timer(2999);
  EXPECT_TRUE(s.take_actions().empty());
  s.on_timer(3000);
  auto acts = s.take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ServerAction::Kind::plain_tcp);
  EXPECT_EQ(acts[0].subflow, raw);
  EXPECT_TRUE(acts[0].bytes.empty());
  EXPECT_EQ(s.counters().plain_tcp_subflows, 1u);
  EXPECT_EQ(s.subflow_count(), 0u);
}

TEST(Server, PartialPrefaceWaitsForTheRest) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  Bytes pre(wire::kPreface.begin(), wire::kPreface.end());
  h.raw_send(raw, Bytes(pre.begin(), pre.begin() + 5));
  EXPECT_TRUE(h.server(1).take_actions().empty());
  EXPECT_TRUE(h.server(1).wants_read(raw));
  h.server(1).on_timer(h.limits().hello_timeout_ms - 1);
  EXPECT_TRUE(h.server(1).take_actions().empty());
  Bytes rest(pre.begin() + 5, pre.end());
  Bytes hello = encode_frame(fresh_hello());
  rest.insert(rest.end(), hello.begin(), hello.end());
  h.raw_send(raw, rest);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<wire::Welcome>(f[0]));
  EXPECT_EQ(h.server(1).counters().plain_tcp_subflows, 0u);
}

TEST(Server, PrefixOfThePrefaceThatThenDiffersIsPlain) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, Bytes{0x89, 'M', 'T'});
  EXPECT_TRUE(h.server(1).take_actions().empty());
  h.raw_send(raw, Bytes{'X'});
  auto acts = h.server(1).take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ServerAction::Kind::plain_tcp);
  EXPECT_EQ(acts[0].bytes, (Bytes{0x89, 'M', 'T', 'X'}));
  EXPECT_EQ(h.server(1).counters().plain_tcp_subflows, 1u);
}

// ---- malformed frames ---------------------------------------------------------------------

TEST(Server, DataWithAGapResetsOnlyThatSubflow) {
  Harness h(3);
  h.connect(1);
  EXPECT_EQ(h.write_input(100), 100u);
  h.pump();
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  h.raw_send(raw, make_data(0, input_bytes(0, 10)));
  h.pump();
  (void)h.raw_take(raw);
  h.raw_send(raw, make_data(50, input_bytes(50, 10)));  // bytes [10, 50) never sent
  EXPECT_EQ(h.server(1).counters().frames_malformed, 1u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Reset>(f[0]).reason, Error::protocol_violation);
  h.pump();
  EXPECT_TRUE(h.raw_closed(raw));
  auto bi = h.info(1, w->conn_id);
  ASSERT_TRUE(bi);
  EXPECT_FALSE(bi->attached);
  EXPECT_EQ(bi->in_end, 10u);
  // The other connection on the same server carries on.
  EXPECT_EQ(h.write_input(50), 50u);
  h.pump();
  EXPECT_EQ(h.read_all(), 150u);
  auto ai = h.info(1, h.conn());
  EXPECT_TRUE(ai->attached);
  EXPECT_EQ(ai->in_end, 150u);
  EXPECT_EQ(h.client().counters().frames_malformed, 0u);
  EXPECT_EQ(h.client().state(), ClientState::established);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, UnknownFrameTypeResetsTheSubflow) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  ASSERT_TRUE(h.raw_hello_fresh(raw));
  h.raw_send(raw, Bytes{0x7F, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_EQ(h.server(1).counters().frames_malformed, 1u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Reset>(f[0]).reason, Error::unknown_type);
}

TEST(Server, FirstFrameMustBeHello) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, preface_and(make_data(0, input_bytes(0, 4))));
  EXPECT_EQ(h.server(1).counters().frames_malformed, 1u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Reset>(f[0]).reason, Error::protocol_violation);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
}

// ---- certificates and proofs (TEST-MATRIX I3) ---------------------------------------------

TEST(Server, WrongProofIsRefusedBeforeAnyoneIsContacted) {
  Harness h(3);
  h.connect(1);
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn());
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->server_id, 2u);
  EXPECT_TRUE(h.server(2).take_actions().empty());
  h.raw_send(raw, make_migrate(h.client().certificate(), key_of(0x42), *ch, 1, 1, 100, 100));
  auto acts = h.server(2).take_actions();
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::send_control), 0u);
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::close_subflow), 1u);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 1u);
  EXPECT_EQ(h.server(2).counters().migrations_started, 0u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_proof);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).hint_server, 0u);
  h.perform(2, std::move(acts));
  h.pump();
  EXPECT_TRUE(h.raw_closed(raw));
  EXPECT_TRUE(h.control_log.empty());
  EXPECT_FALSE(h.info(2, h.conn()));
  // The live connection is untouched.
  EXPECT_EQ(h.owners(h.conn()), (std::vector<ServerId>{1}));
  EXPECT_EQ(h.info(1, h.conn())->epoch, 1u);
  EXPECT_TRUE(h.info(1, h.conn())->attached);
  h.write_input(50);
  h.pump();
  EXPECT_EQ(h.read_all(), 50u);
  EXPECT_EQ(h.client().server(), 1u);
  EXPECT_NO_VIOLATIONS(h);
}

// A third party that recorded a connection's setup (HELLO and WELCOME) cannot migrate it:
// WELCOME carries the secret wrapped under the X25519 agreement (wire version 3, §6.2).
TEST(Server, PassiveObserverOfTheSetupCannotMigrateTheConnection) {
  Harness h(3);
  SubflowId victim = h.open_raw(1);
  auto w = h.raw_hello_fresh(victim);
  ASSERT_TRUE(w && h.last_wire_welcome);
  const wire::Welcome seen = *h.last_wire_welcome;
  // With what it saw, the observer's proof fails.
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, seen.conn_id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(seen.cert, seen.secret, *ch, 1, 1, 0, 0));
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_proof);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 1u);
  EXPECT_EQ(h.server(2).counters().migrations_started, 0u);
  // Nor does any other value visible on the wire serve as the secret.
  for (const cert::Key& guess : {cert::Key(seen.key_share), cert::Key(raw_client_pub())}) {
    SubflowId r = h.open_raw(2);
    auto c = h.raw_hello_migrate(r, seen.conn_id);
    ASSERT_TRUE(c);
    h.raw_send(r, make_migrate(seen.cert, guess, *c, 1, 1, 0, 0));
  }
  EXPECT_EQ(h.server(2).counters().proofs_bad, 3u);
  // The client, which unwrapped the secret with its own private value, proves it.
  SubflowId raw3 = h.open_raw(3);
  auto ch3 = h.raw_hello_migrate(raw3, seen.conn_id);
  ASSERT_TRUE(ch3);
  h.raw_send(raw3, make_migrate(w->cert, w->secret, *ch3, 1, 1, 0, 0));
  EXPECT_EQ(h.server(3).counters().proofs_bad, 0u);
  EXPECT_EQ(h.server(3).counters().migrations_started, 1u);
}

// At member_buffered_bytes_max, new connections are refused (member_full) while the existing
// one goes on; below it again (after the recount interval), they are accepted.
TEST(Server, MemberWideBufferCapRefusesNewWorkOnly) {
  Limits l;
  l.member_buffered_bytes_max = 4000;
  Harness h(2, l);
  h.connect(1);
  h.write_input(6000);  // held in the owner's input log (no snapshot yet)
  h.pump();
  EXPECT_EQ(h.read_all(), 6000u);
  h.advance_to(ServerEngine::kBufferedRecountMs);  // the total is recounted at most this often
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, preface_and(fresh_hello()));
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::member_full);
  EXPECT_GE(h.server(1).buffered_bytes(), 6000u);
  EXPECT_EQ(h.server(1).counters().connections_opened, 1u);
  // The live connection is served on.
  h.write_input(100);
  h.pump();
  EXPECT_EQ(h.read_all(), 100u);
  // Another member, with nothing buffered, takes new connections.
  SubflowId raw2 = h.open_raw(2);
  EXPECT_TRUE(h.raw_hello_fresh(raw2));
  EXPECT_NO_VIOLATIONS(h);
}

// A HELLO whose key share is a degenerate X25519 value is refused before a connection exists.
TEST(Server, DegenerateKeyShareIsRefused) {
  Harness h(1);
  SubflowId raw = h.open_raw(1);
  h.raw_send(raw, preface_and(wire::Hello{wire::kVersion, wire::HelloKind::fresh, 0, cert::PublicKey{}}));
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_field);
  EXPECT_EQ(h.server(1).counters().connections_opened, 0u);
  EXPECT_EQ(h.server(1).connection_count(), 0u);
}

TEST(Server, TamperedCertificateIsRefusedWithBadProof) {
  Harness h(3);
  h.connect(1);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn());
  ASSERT_TRUE(ch);
  cert::Certificate real = h.client().certificate();
  cert::Certificate longer = real;
  longer.expires_at_ms += 1000000;
  // The proof uses the real secret, but the secret follows from the certificate shown.
  h.raw_send(raw, make_migrate(longer, cert::derive_secret(h.key(), real), *ch, 1, 1, 0, 0));
  auto acts = h.server(2).take_actions();
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::send_control), 0u);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 1u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_proof);
}

TEST(Server, ExpiredCertificateIsRefused) {
  Limits l;
  l.cert_lifetime_ms = 10000;
  Harness h(3, l);
  h.connect(1);
  cert::Certificate first = h.client().certificate();  // valid in [0, 10000)
  EXPECT_EQ(first.expires_at_ms, 10000u);
  h.write_input(10);
  h.advance_to(10000);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn());
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(first, cert::derive_secret(h.key(), first), *ch, 1, 1, 0, 0));
  auto acts = h.server(2).take_actions();
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::send_control), 0u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::cert_expired);
  EXPECT_EQ(h.server(2).counters().certs_expired, 1u);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 0u);
  EXPECT_EQ(h.server(2).counters().migrations_started, 0u);
  h.perform(2, std::move(acts));
  h.pump();
  EXPECT_EQ(h.count_control(2, wire::ControlType::claim), 0u);
  EXPECT_EQ(h.owners(h.conn()), (std::vector<ServerId>{1}));
  EXPECT_EQ(h.client().state(), ClientState::established);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 20u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, CertificateIsRenewedAtHalfLife) {
  Limits l;
  l.cert_lifetime_ms = 10000;
  Harness h(3, l);
  h.connect(1);
  EXPECT_EQ(h.server(1).next_deadline(), 5000u);
  h.advance_to(4999);
  EXPECT_EQ(h.client().certificate().issued_at_ms, 0u);
  h.advance_to(5000);
  EXPECT_EQ(h.client().certificate(), (cert::Certificate{h.conn(), 1, 5000, 15000}));
  // Long after the first certificate expired, the client still migrates.
  h.advance_to(12000);
  ASSERT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.server(2).counters().certs_expired, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, CertificateNotYetValidIsRefused) {
  Harness h(3);
  h.connect(1);
  h.advance_to(1000);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn());
  ASSERT_TRUE(ch);
  cert::Certificate future = h.client().certificate();
  future.issued_at_ms = 1001;
  h.raw_send(raw, make_migrate(future, cert::derive_secret(h.key(), future), *ch, 1, 1, 0, 0));
  EXPECT_EQ(count_kind(h.server(2).take_actions(), ServerAction::Kind::send_control), 0u);
  EXPECT_EQ(h.server(2).counters().certs_expired, 1u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::cert_not_yet_valid);
}

TEST(Server, StaleMigrationCounterIsRefused) {
  Harness h(3);
  h.connect(1);
  h.write_input(100);
  h.pump();
  ConnId id = h.conn();
  // Counter 0 is never valid: the decoder refuses the frame.
  cert::Certificate c1 = h.client().certificate();
  SubflowId raw = h.open_raw(1);
  auto ch = h.raw_hello_migrate(raw, id);
  ASSERT_TRUE(ch);
  h.raw_send(raw, make_migrate(c1, cert::derive_secret(h.key(), c1), *ch, 0, 1, 100, 100));
  auto acts = h.server(1).take_actions();
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::send_control), 0u);
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Reset>(f[0]).reason, Error::bad_field);
  EXPECT_EQ(h.server(1).counters().frames_malformed, 1u);
  h.perform(1, std::move(acts));
  h.pump();
  EXPECT_EQ(h.info(1, id)->epoch, 1u);
  EXPECT_TRUE(h.info(1, id)->attached);

  // After a real migration (counter 1) to S2, counter 1 is stale at the owner S2.
  ASSERT_TRUE(h.migrate(2).ok());
  ASSERT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.info(2, id)->counter, 1u);
  cert::Certificate c2 = h.client().certificate();
  SubflowId raw2 = h.open_raw(2);
  auto ch2 = h.raw_hello_migrate(raw2, id);
  ASSERT_TRUE(ch2);
  h.raw_send(raw2, make_migrate(c2, cert::derive_secret(h.key(), c2), *ch2, 1, 2, 100, 100));
  acts = h.server(2).take_actions();
  EXPECT_EQ(count_kind(acts, ServerAction::Kind::send_control), 0u);
  f = h.raw_take(raw2);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::stale_counter);
  h.perform(2, std::move(acts));
  h.pump();
  EXPECT_EQ(h.owners(id), (std::vector<ServerId>{2}));
  EXPECT_EQ(h.info(2, id)->epoch, 2u);
  EXPECT_TRUE(h.info(2, id)->attached);
  h.write_input(10);
  h.pump();
  EXPECT_EQ(h.read_all(), 110u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(Server, CertificateOfAnotherConnectionIsRefused) {
  Harness h(3);
  h.connect(1);
  SubflowId raw = h.open_raw(2);
  auto ch = h.raw_hello_migrate(raw, h.conn() + 1);
  ASSERT_TRUE(ch);
  cert::Certificate c = h.client().certificate();
  h.raw_send(raw, make_migrate(c, cert::derive_secret(h.key(), c), *ch, 1, 1, 0, 0));
  auto f = h.raw_take(raw);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Refuse>(f[0]).reason, Error::bad_field);
  EXPECT_EQ(count_kind(h.server(2).take_actions(), ServerAction::Kind::send_control), 0u);
}

TEST(Server, ConnectionReturningToItsOwnerResumes) {
  Harness h(3);
  SubflowId raw = h.open_raw(1);
  auto w = h.raw_hello_fresh(raw);
  ASSERT_TRUE(w);
  h.raw_send(raw, make_data(0, input_bytes(0, 10)));
  h.pump();
  (void)h.raw_take(raw);
  SubflowId raw2 = h.open_raw(1);
  auto ch = h.raw_hello_migrate(raw2, w->conn_id);
  ASSERT_TRUE(ch);
  h.raw_send(raw2, make_migrate(w->cert, w->secret, *ch, 1, 1, 4, 10));
  h.pump();
  auto f = h.raw_take(raw2);
  auto* a = find_frame<wire::Accept>(f);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->epoch, 2u);
  EXPECT_EQ(a->server_rcv_nxt, 10u);
  EXPECT_EQ(a->cert.issuer_id, 1u);
  // Wrapped with the secret of the certificate the MIGRATE showed (§6.2).
  EXPECT_EQ(cert::wrap_next_secret(a->secret, w->secret, a->cert), cert::derive_secret(h.key(), a->cert));
  // Output is resent from what the client said it has.
  auto* d = find_frame<wire::Data>(f);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->dsn, 4u);
  EXPECT_EQ(data_bytes(*d), output_bytes(4, 6));
  EXPECT_EQ(h.count(1, ServerEvent::Kind::resumed), 1u);
  EXPECT_EQ(h.count(1, ServerEvent::Kind::imported), 0u);
  EXPECT_TRUE(h.raw_closed(raw));  // the old subflow is closed
  EXPECT_TRUE(h.control_log.empty());
  auto i = h.info(1, w->conn_id);
  EXPECT_EQ(i->epoch, 2u);
  EXPECT_EQ(i->counter, 1u);
  EXPECT_EQ(h.server(1).counters().migrations_started, 1u);
  EXPECT_EQ(h.server(1).counters().migrations_done, 1u);
  EXPECT_NO_VIOLATIONS(h);
}

// ---- limits -------------------------------------------------------------------------------

TEST(ServerLimits, SnapshotBytesMax) {
  Limits l;
  l.snapshot_bytes_max = 64;
  Harness h(3, l);
  h.connect(1);
  ServerEngine& s = h.server(1);
  EXPECT_EQ(s.conn_snapshot(h.conn(), Bytes(65, 0xAB)).error(), Error::snapshot_too_large);
  EXPECT_EQ(s.counters().limit_refusals, 1u);
  EXPECT_EQ(s.conn_snapshot_view(h.conn())->snap_id, 0u);
  EXPECT_TRUE(s.conn_snapshot(h.conn(), Bytes(64, 0xAB)).ok());
  EXPECT_EQ(s.conn_snapshot_view(h.conn())->snap_id, 1u);
  EXPECT_EQ(s.conn_snapshot_view(h.conn())->bytes.size(), 64u);
  EXPECT_EQ(s.counters().limit_refusals, 1u);
}

TEST(ServerLimits, ConnectionsMaxRefusesNewConnections) {
  Limits l;
  l.connections_max = 1;
  Harness h(3, l);
  SubflowId raw = h.open_raw(1);
  ASSERT_TRUE(h.raw_hello_fresh(raw));
  h.connect(1);
  EXPECT_EQ(h.client().state(), ClientState::failed);
  EXPECT_EQ(h.client().failure(), Error::conn_table_full);
  EXPECT_EQ(h.server(1).counters().limit_refusals, 1u);
  EXPECT_EQ(h.server(1).counters().connections_opened, 1u);
  EXPECT_EQ(h.server(1).connection_count(), 1u);
}

TEST(ServerLimits, SubflowsMaxClosesExtraSubflows) {
  Limits l;
  l.subflows_max = 1;
  Harness h(3, l);
  SubflowId a = h.open_raw(1);
  SubflowId b = h.open_raw(1);
  auto acts = h.server(1).take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ServerAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, b);
  EXPECT_EQ(h.server(1).counters().limit_refusals, 1u);
  EXPECT_EQ(h.server(1).subflow_count(), 1u);
  EXPECT_TRUE(h.raw_hello_fresh(a));
}

TEST(ServerLimits, PendingMigrationsMax) {
  Limits l;
  l.pending_migrations_max = 1;
  Harness h(3, l);
  h.connect(1);
  // A second connection on S1, moved to S2 by hand; its claim waits on the control network.
  SubflowId rb = h.open_raw(1);
  auto wb = h.raw_hello_fresh(rb);
  ASSERT_TRUE(wb);
  h.hold_control(2, 1);
  SubflowId rb2 = h.open_raw(2);
  auto ch = h.raw_hello_migrate(rb2, wb->conn_id);
  ASSERT_TRUE(ch);
  h.raw_send(rb2, make_migrate(wb->cert, wb->secret, *ch, 1, 1, 0, 0));
  h.pump();
  EXPECT_EQ(h.held_control(2, 1), 1u);
  // The client's migration to S2 finds the pending table full.
  EXPECT_TRUE(h.migrate(2).ok());
  auto e = h.last(ClientEvent::Kind::migration_failed);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, Error::pending_table_full);
  EXPECT_EQ(h.server(2).counters().limit_refusals, 1u);
  EXPECT_EQ(h.client().server(), 1u);
  EXPECT_EQ(h.held_control(2, 1), 1u);  // no claim for the refused one
  // The pending one completes once its claim gets through.
  h.release_control(2, 1);
  h.pump();
  auto frames = h.raw_take(rb2);
  auto* a = find_frame<wire::Accept>(frames);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->epoch, 2u);
  EXPECT_EQ(h.owners(wb->conn_id), (std::vector<ServerId>{2}));
  // And the table has room again.
  EXPECT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ServerLimits, MigrateRequestsPerSecondMax) {
  Limits l;
  l.migrate_requests_per_s_max = 2;
  Harness h(3, l);
  h.connect(1);
  auto forged = [&] {
    SubflowId raw = h.open_raw(2);
    auto ch = h.raw_hello_migrate(raw, h.conn());
    EXPECT_TRUE(ch);
    if (!ch) return Error::ok;
    h.raw_send(raw, make_migrate(h.client().certificate(), key_of(0x42), *ch, 1, 1, 0, 0));
    auto f = h.raw_take(raw);
    return f.size() == 1 && std::holds_alternative<wire::Refuse>(f[0]) ? std::get<wire::Refuse>(f[0]).reason : Error::ok;
  };
  // Bogus MIGRATEs cost a proof check each but spend no token: they cannot starve the real
  // client (a flood of them used to make every legitimate migration "rate limited").
  for (int i = 0; i < 10; ++i) EXPECT_EQ(forged(), Error::bad_proof);
  EXPECT_EQ(h.server(2).counters().proofs_bad, 10u);
  EXPECT_EQ(h.server(2).counters().migrate_rate_limited, 0u);
  // Verified requests spend them: at t=0 member 2 has a full bucket of 2.
  for (int round = 0; round < 2; ++round) {
    EXPECT_TRUE(h.migrate(2).ok());
    EXPECT_EQ(h.client().server(), 2u);
    EXPECT_TRUE(h.migrate(1).ok());
    EXPECT_EQ(h.client().server(), 1u);
  }
  EXPECT_TRUE(h.migrate(2).ok());
  auto e = h.last(ClientEvent::Kind::migration_failed);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, Error::rate_limited);
  EXPECT_EQ(h.server(2).counters().migrate_rate_limited, 1u);
  EXPECT_EQ(h.client().server(), 1u);
  // 500 ms later one token is back.
  h.advance_to(500);
  EXPECT_TRUE(h.migrate(2).ok());
  EXPECT_EQ(h.client().server(), 2u);
  EXPECT_EQ(h.server(2).counters().migrate_rate_limited, 1u);
  EXPECT_NO_VIOLATIONS(h);
}

// A full input log parks further DATA unacknowledged but keeps parsing: the client's ACKs
// behind that DATA still arrive (an application that waits for its output to be acknowledged
// before it snapshots would otherwise never free the log: a deadlock).
TEST(ServerLimits, InputLogBytesMaxParksDataButStillReadsAcks) {
  Limits l;
  l.input_log_bytes_max = 300;
  l.frame_payload_bytes_max = 100;
  Harness h(3, l);
  h.connect(1);
  ConnId id = h.conn();
  SubflowId sub = *h.client().primary();
  EXPECT_EQ(h.write_input(1000), 1000u);
  h.pump();
  ServerEngine& s = h.server(1);
  EXPECT_EQ(h.info(1, id)->in_end, 300u);
  EXPECT_EQ(h.info(1, id)->app_in, 300u);
  EXPECT_TRUE(s.wants_read(sub));                 // parsing goes on
  EXPECT_EQ(h.client().send_log().base(), 300u);  // parked bytes are not acknowledged
  EXPECT_EQ(h.read_all(), 300u);                   // the echo of the first 300
  h.pump();
  EXPECT_EQ(h.info(1, id)->out_acked, 300u);       // the client's ACK got through
  EXPECT_EQ(h.info(1, id)->in_end, 300u);
  for (uint64_t end : {600u, 900u, 1000u}) {
    ASSERT_TRUE(h.app(1, id)->snapshot(s).ok());
    h.pump();
    EXPECT_EQ(h.info(1, id)->in_end, end);
    EXPECT_EQ(h.info(1, id)->app_in, end);
    EXPECT_EQ(h.client().send_log().base(), end);
  }
  EXPECT_TRUE(s.wants_read(sub));
  EXPECT_EQ(h.read_all(), 700u);
  EXPECT_EQ(s.counters().frames_malformed, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

// Parked DATA is bounded by what a client may leave unacknowledged (its send log).
TEST(ServerLimits, ParkedDataStopsAtTheClientsWindow) {
  Limits l;
  l.input_log_bytes_max = 300;
  l.frame_payload_bytes_max = 100;
  l.send_log_bytes_max = 500;
  Harness h(3, l);
  h.connect(1);
  ConnId id = h.conn();
  uint64_t written = 0;
  for (int i = 0; i < 4; ++i) {  // the client writes whenever its send log has room
    written += h.write_input(2000);
    h.pump();
  }
  EXPECT_EQ(written, 800u);  // 300 acknowledged into the input log, then 500 outstanding
  EXPECT_EQ(h.info(1, id)->in_end, 300u);
  EXPECT_EQ(h.client().send_log().base(), 300u);
  EXPECT_EQ(h.client().send_log().end(), 800u);
  EXPECT_EQ(h.server(1).counters().frames_malformed, 0u);
  EXPECT_NO_VIOLATIONS(h);
}

TEST(ServerLimits, ValidateRejectsBadConfigs) {
  std::vector<wire::Alternate> pool{{1, "a"}, {2, "b"}, {3, "c"}};
  cert::Key key{};
  Limits ok_limits;
  EXPECT_TRUE(core::validate(ServerConfig{1, pool, key, ok_limits}).ok());
  // Duplicate member ids.
  EXPECT_EQ(core::validate(ServerConfig{1, {{1, "a"}, {2, "b"}, {2, "c"}}, key, ok_limits}).error(), Error::bad_field);
  // Self not in the pool.
  EXPECT_EQ(core::validate(ServerConfig{4, pool, key, ok_limits}).error(), Error::bad_field);
  // Ids 0 are reserved.
  EXPECT_EQ(core::validate(ServerConfig{0, pool, key, ok_limits}).error(), Error::bad_field);
  EXPECT_EQ(core::validate(ServerConfig{1, {{1, "a"}, {0, "b"}}, key, ok_limits}).error(), Error::bad_field);
  // Empty pool.
  EXPECT_EQ(core::validate(ServerConfig{1, {}, key, ok_limits}).error(), Error::bad_field);
  // Ack-after-replication needs eager transfer.
  Limits aar = ok_limits;
  aar.ack_after_replication = true;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, aar}).error(), Error::bad_field);
  aar.transfer_mode = TransferMode::eager;
  EXPECT_TRUE(core::validate(ServerConfig{1, pool, key, aar}).ok());
  // Caps above the wire caps, or zero where zero cannot work.
  Limits big = ok_limits;
  big.snapshot_bytes_max = kSnapshotBytesMax + 1;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, big}).error(), Error::bad_field);
  Limits frame = ok_limits;
  frame.frame_payload_bytes_max = kFramePayloadBytesMax + 1;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, frame}).error(), Error::bad_field);
  frame.frame_payload_bytes_max = 0;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, frame}).error(), Error::bad_field);
  Limits log = ok_limits;
  log.input_log_bytes_max = kStateLogBytesMax + 1;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, log}).error(), Error::bad_field);
  Limits zero = ok_limits;
  zero.send_log_bytes_max = 0;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, zero}).error(), Error::bad_field);
  zero.send_log_bytes_max = kStateLogBytesMax + 1;  // could not be transferred
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, zero}).error(), Error::bad_field);
  zero = ok_limits;
  zero.recv_buffer_bytes_max = 0;
  EXPECT_EQ(core::validate(ServerConfig{1, pool, key, zero}).error(), Error::bad_field);
  // More alternates than a WELCOME can carry.
  std::vector<wire::Alternate> huge;
  for (uint32_t i = 1; i <= kAlternatesMax + 2; ++i) huge.push_back({i, "x"});
  EXPECT_EQ(core::validate(ServerConfig{1, huge, key, ok_limits}).error(), Error::alternates_too_many);
  // An address longer than the wire allows.
  EXPECT_EQ(core::validate(ServerConfig{1, {{1, std::string(kAddressBytesMax + 1, 'a')}}, key, ok_limits}).error(),
            Error::bad_field);
}

}  // namespace
}  // namespace mtcp::test
