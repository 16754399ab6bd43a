// Unit tests of the client engine (core/client.h), driven by hand: the test plays the server,
// feeding encoded frames with literal timestamps and decoding what the engine sends back.
// The last tests run the client against real server engines through the harness.
#include <gtest/gtest.h>

#include <memory>

#include "engine_harness.h"

namespace mtcp::test {
namespace {

using core::MemberBackoff;

constexpr ConnId kConn = 0x1122334455667788ull;
constexpr SubflowId kPrimary = 1;

class ClientTest : public ::testing::Test {
 protected:
  void make() { c = std::make_unique<ClientEngine>(limits, rng); }

  void feed(SubflowId sub, const wire::Frame& f) { c->on_subflow_data(sub, slice_of(encode_frame(f)), now); }

  // Everything the engine wants to send on sub, as frames (the preface, if expected, is
  // checked and stripped).
  std::vector<wire::Frame> sent(SubflowId sub, bool preface = false) {
    std::vector<Slice> out;
    for (int i = 0; i < 100 && c->wants_transmit(sub); ++i) {
      if (c->poll_transmit(sub, 1u << 20, out) == 0) break;
    }
    Bytes b = flatten(out);
    if (preface) {
      EXPECT_GE(b.size(), wire::kPreface.size());
      if (b.size() < wire::kPreface.size()) return {};
      EXPECT_TRUE(std::equal(wire::kPreface.begin(), wire::kPreface.end(), b.begin()));
      b.erase(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(wire::kPreface.size()));
    }
    bool ok = false;
    auto frames = decode_frames(b, &ok);
    EXPECT_TRUE(ok);
    for (const auto& f : frames) {  // the client's X25519 value, for welcome() to answer
      if (auto* h = std::get_if<wire::Hello>(&f); h && h->kind == wire::HelloKind::fresh) client_pub_ = h->key_share;
    }
    return frames;
  }

  static cert::Key key_of(uint8_t v) {
    cert::Key k{};
    k.fill(v);
    return k;
  }

  // The secret the fake server gives (welcome_secret()) and its WELCOME, which carries it
  // wrapped under the X25519 agreement with the client's HELLO, as a real member does.
  static cert::Key welcome_secret() { return key_of(0x11); }
  wire::Welcome welcome() const {
    wire::Welcome w;
    w.conn_id = kConn;
    w.server_id = 1;
    w.epoch = 1;
    w.cert = {kConn, 1, 1000, 1000 + 600000};
    cert::PrivateKey server_priv{};
    server_priv.fill(0x5E);
    w.key_share = cert::x25519_public(server_priv);
    auto shared = cert::x25519_shared(server_priv, client_pub_);
    EXPECT_TRUE(shared.ok()) << "welcome() before the client's HELLO was read";
    w.secret = cert::wrap_welcome_secret(welcome_secret(), shared.ok() ? *shared : cert::Key{}, client_pub_, w.key_share,
                                         w.cert);
    w.alternates = {{2, "s2"}, {3, "s3"}};
    return w;
  }

  // connect(1) and WELCOME; leaves no actions, events or bytes pending.
  void establish() {
    make();
    c->connect(1, now);
    (void)c->take_actions();
    (void)sent(kPrimary, true);
    feed(kPrimary, welcome());
    (void)c->take_events();
    ASSERT_EQ(c->state(), ClientState::established);
  }

  // migrate(target) and answer the HELLO with a CHALLENGE; returns the attempt subflow and
  // the MIGRATE the client sent.
  std::pair<SubflowId, wire::Migrate> start_migration(ServerId target, const cert::Challenge& nonce) {
    EXPECT_TRUE(c->migrate(target, now).ok());
    auto acts = c->take_actions();
    EXPECT_EQ(acts.size(), 1u);
    SubflowId sub = acts.empty() ? 0 : acts[0].subflow;
    auto hello = sent(sub, true);
    EXPECT_EQ(hello.size(), 1u);
    feed(sub, wire::ChallengeFrame{target, nonce});
    auto m = sent(sub);
    EXPECT_EQ(m.size(), 1u);
    wire::Migrate mig;
    if (!m.empty() && std::holds_alternative<wire::Migrate>(m[0])) mig = std::get<wire::Migrate>(m[0]);
    else ADD_FAILURE() << "no MIGRATE sent";
    return {sub, mig};
  }

  cert::PublicKey client_pub_{};
  Limits limits;
  sim::Prng rng{7};
  std::unique_ptr<ClientEngine> c;
  TimeMs now = 1000;
};

// ---- connection setup ---------------------------------------------------------------------

TEST_F(ClientTest, ConnectOpensASubflowAndSendsPrefaceThenHello) {
  make();
  EXPECT_EQ(c->state(), ClientState::idle);
  c->connect(1, now);
  EXPECT_EQ(c->state(), ClientState::connecting);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts[0].subflow, kPrimary);
  EXPECT_EQ(acts[0].server, 1u);
  EXPECT_EQ(acts[0].address, "");
  auto frames = sent(kPrimary, true);
  ASSERT_EQ(frames.size(), 1u);
  auto& h = std::get<wire::Hello>(frames[0]);
  EXPECT_EQ(h.version, wire::kVersion);
  EXPECT_EQ(h.kind, wire::HelloKind::fresh);
  EXPECT_EQ(h.conn_id, 0u);
  EXPECT_EQ(c->next_deadline(), now + limits.migrate_timeout_ms);
  // Nothing else goes out before WELCOME, not even application data.
  EXPECT_EQ(c->write_copy(input_bytes(0, 10)), 10u);
  EXPECT_FALSE(c->wants_transmit(kPrimary));
}

TEST_F(ClientTest, WelcomeEstablishesWithConnIdAlternatesAndCertificate) {
  make();
  c->connect(1, now);
  (void)c->take_actions();
  (void)sent(kPrimary, true);
  feed(kPrimary, welcome());
  EXPECT_EQ(c->state(), ClientState::established);
  EXPECT_EQ(c->conn_id(), kConn);
  EXPECT_EQ(c->server(), 1u);
  EXPECT_EQ(c->epoch(), 1u);
  EXPECT_EQ(c->pool(), (std::vector<ServerId>{1, 2, 3}));
  EXPECT_EQ(c->certificate(), welcome().cert);
  EXPECT_EQ(c->primary(), std::optional<SubflowId>(kPrimary));
  EXPECT_EQ(c->next_deadline(), core::kNever);
  EXPECT_EQ(c->counters().connections_opened, 1u);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::connected);
  EXPECT_EQ(ev[0].to, 1u);
}

TEST_F(ClientTest, ConnectTimesOutWithoutWelcome) {
  make();
  c->connect(1, 1000);
  (void)c->take_actions();
  c->on_timer(1000 + limits.migrate_timeout_ms - 1);
  EXPECT_EQ(c->state(), ClientState::connecting);
  c->on_timer(1000 + limits.migrate_timeout_ms);
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::migration_timeout);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::failed);
  EXPECT_EQ(ev[0].error, Error::migration_timeout);
}

TEST_F(ClientTest, RefuseWhileConnectingFailsWithItsReason) {
  make();
  c->connect(1, now);
  (void)c->take_actions();
  feed(kPrimary, wire::Refuse{Error::conn_table_full, 0, "full"});
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::conn_table_full);
  EXPECT_EQ(c->write_copy(input_bytes(0, 10)), 0u);
  EXPECT_EQ(c->write(slice_of(input_bytes(0, 10))).error(), Error::closed);
}

TEST_F(ClientTest, SubflowLostWhileConnectingFails) {
  make();
  c->connect(1, now);
  (void)c->take_actions();
  c->on_subflow_closed(kPrimary, now);
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::subflow_lost);
}

// ---- data ---------------------------------------------------------------------------------

TEST_F(ClientTest, DataGoesOutFromTheSendLogAndCumulativeAckTrimsIt) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 100)), 100u);
  auto f = sent(kPrimary);
  ASSERT_EQ(f.size(), 1u);
  auto& d = std::get<wire::Data>(f[0]);
  EXPECT_EQ(d.dsn, 0u);
  EXPECT_EQ(data_bytes(d), input_bytes(0, 100));
  EXPECT_EQ(c->send_log().size(), 100u);
  EXPECT_EQ(c->send_log().sent(), 100u);
  feed(kPrimary, wire::Ack{60});
  EXPECT_EQ(c->send_log().base(), 60u);
  EXPECT_EQ(c->send_log().size(), 40u);
  EXPECT_EQ(c->write_space(), limits.send_log_bytes_max - 40);
  feed(kPrimary, wire::Ack{50});  // an old ack changes nothing
  EXPECT_EQ(c->send_log().base(), 60u);
  feed(kPrimary, wire::Ack{100});
  EXPECT_EQ(c->send_log().base(), 100u);
  EXPECT_EQ(c->send_log().size(), 0u);
  EXPECT_EQ(c->counters().frames_malformed, 0u);
}

TEST_F(ClientTest, LargeWritesAreSplitIntoFramesOfAtMostFramePayloadBytesMax) {
  limits.frame_payload_bytes_max = 100;
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 250)), 250u);
  auto f = sent(kPrimary);
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(std::get<wire::Data>(f[0]).dsn, 0u);
  EXPECT_EQ(std::get<wire::Data>(f[0]).size(), 100u);
  EXPECT_EQ(std::get<wire::Data>(f[1]).dsn, 100u);
  EXPECT_EQ(std::get<wire::Data>(f[2]).dsn, 200u);
  EXPECT_EQ(data_bytes(std::get<wire::Data>(f[2])), input_bytes(200, 50));
}

TEST_F(ClientTest, AckBeyondWhatWasWrittenIsAViolationAndTheClientRecovers) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 100)), 100u);
  (void)sent(kPrimary);
  feed(kPrimary, wire::Ack{101});
  EXPECT_EQ(c->counters().frames_malformed, 1u);
  EXPECT_EQ(c->send_log().base(), 0u);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 2u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, kPrimary);
  // Recovery through the next member of the pool, by its advertised address.
  EXPECT_EQ(acts[1].kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts[1].server, 2u);
  EXPECT_EQ(acts[1].address, "s2");
  EXPECT_EQ(c->counters().migrations_started, 1u);
  EXPECT_EQ(c->state(), ClientState::established);
}

TEST_F(ClientTest, DuplicateDataIsDroppedAndCounted) {
  establish();
  feed(kPrimary, make_data(0, output_bytes(0, 100)));
  feed(kPrimary, make_data(50, output_bytes(50, 100)));  // 50 bytes already delivered
  EXPECT_EQ(c->counters().duplicate_bytes_dropped, 50u);
  EXPECT_EQ(c->rcv_nxt(), 150u);
  ASSERT_EQ(c->readable(), 150u);
  Bytes got(150);
  EXPECT_EQ(c->read(got), 150u);
  EXPECT_EQ(got, output_bytes(0, 150));
  feed(kPrimary, make_data(0, output_bytes(0, 150)));  // entirely old
  EXPECT_EQ(c->counters().duplicate_bytes_dropped, 200u);
  EXPECT_EQ(c->readable(), 0u);
  auto f = sent(kPrimary);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Ack>(f[0]).dsn, 150u);
}

TEST_F(ClientTest, DataWithAGapFailsTheConnection) {
  establish();
  feed(kPrimary, make_data(0, output_bytes(0, 10)));
  feed(kPrimary, make_data(20, output_bytes(20, 10)));
  EXPECT_EQ(c->counters().frames_malformed, 1u);
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::protocol_violation);
  EXPECT_EQ(c->rcv_nxt(), 10u);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::failed);
  EXPECT_EQ(ev[0].error, Error::protocol_violation);
}

TEST_F(ClientTest, WelcomeAfterEstablishmentIsAViolation) {
  establish();
  feed(kPrimary, welcome());
  EXPECT_EQ(c->counters().frames_malformed, 1u);
  auto acts = c->take_actions();
  ASSERT_GE(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
}

TEST_F(ClientTest, HintBecomesAnEvent) {
  establish();
  feed(kPrimary, wire::Hint{wire::HintReason::draining, 3});
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::hint);
  EXPECT_EQ(ev[0].hint, wire::HintReason::draining);
  EXPECT_EQ(ev[0].from, 1u);
  EXPECT_EQ(ev[0].to, 3u);
}

TEST_F(ClientTest, CloseSendsCloseAfterTheLastByte) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 10)), 10u);
  c->close();
  EXPECT_EQ(c->write(slice_of(input_bytes(10, 1))).error(), Error::closed);
  EXPECT_EQ(c->write_copy(input_bytes(10, 1)), 0u);
  auto f = sent(kPrimary);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(std::get<wire::Data>(f[0]).size(), 10u);
  EXPECT_EQ(std::get<wire::Close>(f[1]).final_dsn, 10u);
  EXPECT_TRUE(sent(kPrimary).empty());  // once
}

TEST_F(ClientTest, PeerCloseIsReportedWhenTheStreamEnds) {
  establish();
  feed(kPrimary, make_data(0, output_bytes(0, 20)));
  feed(kPrimary, wire::Close{20});
  EXPECT_FALSE(c->peer_closed());  // 20 bytes still unread
  c->on_timer(now);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::peer_closed);
  Bytes got(20);
  EXPECT_EQ(c->read(got), 20u);
  EXPECT_TRUE(c->peer_closed());
  c->on_timer(now + 1);
  EXPECT_TRUE(c->take_events().empty());  // reported once
}

// ---- limits -------------------------------------------------------------------------------

TEST_F(ClientTest, SendLogBytesMaxBoundsWrites) {
  limits.send_log_bytes_max = 1000;
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 1500)), 1000u);
  EXPECT_EQ(c->write_space(), 0u);
  EXPECT_EQ(c->write_copy(input_bytes(1000, 1)), 0u);
  EXPECT_EQ(c->write(slice_of(input_bytes(1000, 1))).error(), Error::send_log_full);
  (void)sent(kPrimary);
  feed(kPrimary, wire::Ack{400});
  EXPECT_EQ(c->write_space(), 400u);
  // write() takes whole slices only: one byte too many and nothing is taken.
  EXPECT_EQ(c->write(slice_of(input_bytes(1000, 401))).error(), Error::send_log_full);
  EXPECT_EQ(c->send_log().end(), 1000u);
  EXPECT_TRUE(c->write(slice_of(input_bytes(1000, 400))).ok());
  EXPECT_EQ(c->send_log().end(), 1400u);
  EXPECT_EQ(c->write_space(), 0u);
}

TEST_F(ClientTest, SliceLargerThanTheWholeLogIsRefused) {
  limits.send_log_bytes_max = 1000;
  establish();
  EXPECT_EQ(c->write(slice_of(input_bytes(0, 1001))).error(), Error::send_log_full);
  EXPECT_EQ(c->send_log().end(), 0u);
  EXPECT_EQ(c->write_space(), 1000u);
}

TEST_F(ClientTest, RecvBufferBytesMaxStopsReadingTheSubflow) {
  limits.recv_buffer_bytes_max = 300;
  establish();
  feed(kPrimary, make_data(0, output_bytes(0, 100)));
  feed(kPrimary, make_data(100, output_bytes(100, 100)));
  EXPECT_TRUE(c->wants_read(kPrimary));
  feed(kPrimary, make_data(200, output_bytes(200, 100)));
  EXPECT_EQ(c->readable(), 300u);
  EXPECT_FALSE(c->wants_read(kPrimary));
  // A driver that hands over more anyway: it stays queued in the subflow, unparsed.
  feed(kPrimary, make_data(300, output_bytes(300, 100)));
  EXPECT_EQ(c->readable(), 300u);
  EXPECT_EQ(c->rcv_nxt(), 300u);
  Bytes got(300);
  EXPECT_EQ(c->read(got), 300u);
  EXPECT_EQ(got, output_bytes(0, 300));
  EXPECT_TRUE(c->wants_read(kPrimary));
  // The next delivery parses the queued frame first.
  feed(kPrimary, make_data(400, output_bytes(400, 100)));
  EXPECT_EQ(c->readable(), 200u);
  EXPECT_EQ(c->rcv_nxt(), 500u);
  EXPECT_EQ(c->counters().frames_malformed, 0u);
}

// POSSIBLE ENGINE BUG (kept on purpose, see the report): frames that reached the engine while
// the receive buffer was full (one socket read usually carries many frames) are parsed only
// when on_subflow_data() is called again. read()/read_slices() free room but do not resume
// parsing, so if the server has nothing more to send (it waits for the client's next request,
// which waits for this response) the connection stalls with the response inside the engine.
// The server engine resumes in conn_snapshot() for the analogous input-log case.
TEST_F(ClientTest, FramesQueuedDuringBackPressureAreDeliveredAfterTheAppReads) {
  limits.recv_buffer_bytes_max = 300;
  establish();
  // One read from the socket: five DATA frames of 100 bytes.
  Bytes chunk;
  for (uint64_t i = 0; i < 5; ++i) {
    Bytes f = encode_frame(make_data(i * 100, output_bytes(i * 100, 100)));
    chunk.insert(chunk.end(), f.begin(), f.end());
  }
  c->on_subflow_data(kPrimary, slice_of(chunk), now);
  EXPECT_EQ(c->readable(), 300u);
  EXPECT_FALSE(c->wants_read(kPrimary));
  Bytes got(300);
  EXPECT_EQ(c->read(got), 300u);
  // No further bytes arrive: the 200 bytes the engine already holds must become readable.
  EXPECT_EQ(c->readable(), 200u);
  EXPECT_EQ(c->rcv_nxt(), 500u);
}

// ---- migration ----------------------------------------------------------------------------

TEST_F(ClientTest, MigrationHandshakeProvesTheSecretAndSwitchesOnAccept) {
  establish();
  feed(kPrimary, make_data(0, output_bytes(0, 50)));
  EXPECT_EQ(c->write_copy(input_bytes(0, 80)), 80u);
  (void)sent(kPrimary);  // ACK 50 + DATA [0, 80)
  feed(kPrimary, wire::Ack{30});

  ASSERT_TRUE(c->migrate(2, now).ok());
  EXPECT_TRUE(c->migrating());
  EXPECT_EQ(c->migration_target(), std::optional<ServerId>(2));
  EXPECT_EQ(c->counters().migrations_started, 1u);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts[0].server, 2u);
  EXPECT_EQ(acts[0].address, "s2");
  SubflowId sub = acts[0].subflow;
  EXPECT_EQ(c->attempt_subflow(), std::optional<SubflowId>(sub));
  auto hello = sent(sub, true);
  ASSERT_EQ(hello.size(), 1u);
  EXPECT_EQ(std::get<wire::Hello>(hello[0]).kind, wire::HelloKind::migrate);
  EXPECT_EQ(std::get<wire::Hello>(hello[0]).conn_id, kConn);

  cert::Challenge nonce{};
  nonce.fill(0xC3);
  feed(sub, wire::ChallengeFrame{2, nonce});
  auto mf = sent(sub);
  ASSERT_EQ(mf.size(), 1u);
  auto& m = std::get<wire::Migrate>(mf[0]);
  EXPECT_EQ(m.cert, welcome().cert);
  EXPECT_EQ(m.counter, 1u);
  EXPECT_EQ(m.prev_owner, 1u);
  EXPECT_EQ(m.client_rcv_nxt, 50u);
  EXPECT_EQ(m.client_snd_una, 30u);
  EXPECT_EQ(m.proof, cert::make_proof(welcome_secret(), nonce, 2, kConn, 1));
  // What crossed the wire in WELCOME does not make that proof (wire version 3, §6.2).
  EXPECT_NE(m.proof, cert::make_proof(welcome().secret, nonce, 2, kConn, 1));

  // While the attempt runs: new data waits, the old server's acks are held back.
  EXPECT_EQ(c->write_copy(input_bytes(80, 20)), 20u);
  EXPECT_FALSE(c->wants_transmit(kPrimary));
  feed(kPrimary, wire::Ack{80});
  EXPECT_EQ(c->send_log().base(), 30u);
  feed(kPrimary, make_data(50, output_bytes(50, 10)));  // the old server keeps sending

  wire::Accept a;
  a.epoch = 2;
  a.server_rcv_nxt = 60;
  a.cert = {kConn, 2, now, now + 600000};
  const cert::Key next_secret = key_of(0x22);
  a.secret = cert::wrap_next_secret(next_secret, welcome_secret(), a.cert);  // wrapped with the secret proved
  now = 1040;
  feed(sub, a);
  EXPECT_FALSE(c->migrating());
  EXPECT_EQ(c->server(), 2u);
  EXPECT_EQ(c->epoch(), 2u);
  EXPECT_EQ(c->certificate(), a.cert);
  EXPECT_EQ(c->primary(), std::optional<SubflowId>(sub));
  // ACCEPT says where to resend from; it acknowledges nothing (the old server's held ack of
  // 80 is forgotten: the new one holds only 60).
  EXPECT_EQ(c->send_log().base(), 30u);
  EXPECT_EQ(c->send_log().sent(), 60u);
  EXPECT_EQ(c->counters().migrations_done, 1u);
  acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, kPrimary);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migrated);
  EXPECT_EQ(ev[0].from, 1u);
  EXPECT_EQ(ev[0].to, 2u);
  EXPECT_EQ(ev[0].rcv_at, 60u);
  EXPECT_EQ(ev[0].snd_at, 60u);
  EXPECT_EQ(ev[0].started_ms, 1000u);
  EXPECT_EQ(ev[0].done_ms, 1040u);
  // To the new server: our receive position at once, then the input it lacks.
  auto f = sent(sub);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(std::get<wire::Ack>(f[0]).dsn, 60u);
  EXPECT_EQ(std::get<wire::Data>(f[1]).dsn, 60u);
  EXPECT_EQ(data_bytes(std::get<wire::Data>(f[1])), input_bytes(60, 40));
  feed(sub, wire::Ack{60});
  EXPECT_EQ(c->send_log().base(), 60u);

  // The next migration uses the renewed secret and the next counter.
  cert::Challenge nonce2{};
  nonce2.fill(0x3C);
  auto [sub3, m3] = start_migration(3, nonce2);
  EXPECT_EQ(m3.counter, 2u);
  EXPECT_EQ(m3.prev_owner, 2u);
  EXPECT_EQ(m3.cert, a.cert);
  EXPECT_EQ(m3.proof, cert::make_proof(next_secret, nonce2, 3, kConn, 2));
}

TEST_F(ClientTest, AcceptBelowWhatWasAcknowledgedFailsWithStateGap) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 100)), 100u);
  (void)sent(kPrimary);
  feed(kPrimary, wire::Ack{100});
  cert::Challenge nonce{};
  auto [sub, m] = start_migration(2, nonce);
  EXPECT_EQ(m.client_snd_una, 100u);
  wire::Accept a;
  a.epoch = 2;
  a.server_rcv_nxt = 40;  // the new server lacks 60 acknowledged bytes
  feed(sub, a);
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::state_gap);
  EXPECT_EQ(c->counters().migrations_failed, 1u);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migration_failed);
  EXPECT_EQ(ev[0].error, Error::state_gap);
  EXPECT_EQ(ev[0].snd_at, 40u);
  EXPECT_EQ(ev[1].kind, ClientEvent::Kind::failed);
  EXPECT_EQ(ev[1].error, Error::state_gap);
}

TEST_F(ClientTest, AcceptAboveWhatWasWrittenIsAViolation) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 10)), 10u);
  cert::Challenge nonce{};
  auto [sub, m] = start_migration(2, nonce);
  wire::Accept a;
  a.epoch = 2;
  a.server_rcv_nxt = 11;
  feed(sub, a);
  EXPECT_EQ(c->counters().frames_malformed, 1u);
  EXPECT_EQ(c->state(), ClientState::established);
  EXPECT_EQ(c->server(), 1u);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migration_failed);
  EXPECT_EQ(ev[0].error, Error::protocol_violation);
}

TEST_F(ClientTest, ChallengeNamingAnotherServerIsNotAnswered) {
  establish();
  ASSERT_TRUE(c->migrate(2, now).ok());
  SubflowId sub = c->take_actions().at(0).subflow;
  (void)sent(sub, true);
  feed(sub, wire::ChallengeFrame{3, cert::Challenge{}});
  // No proof for the wrong target: the attempt ends at once, the connection stays put.
  EXPECT_FALSE(c->migrating());
  EXPECT_TRUE(sent(sub).empty());
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, sub);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migration_failed);
  EXPECT_EQ(ev[0].error, Error::bad_field);
  EXPECT_EQ(c->server(), 1u);
  EXPECT_EQ(c->primary(), std::optional<SubflowId>(kPrimary));
}

TEST_F(ClientTest, AttemptTimeoutKeepsThePrimaryAndAppliesHeldAcks) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 100)), 100u);
  (void)sent(kPrimary);
  ASSERT_TRUE(c->migrate(2, 1000).ok());
  SubflowId sub = c->take_actions().at(0).subflow;
  EXPECT_EQ(c->next_deadline(), 1000 + limits.migrate_timeout_ms);
  feed(kPrimary, wire::Ack{100});
  EXPECT_EQ(c->send_log().base(), 0u);  // held back during the attempt
  c->on_timer(1000 + limits.migrate_timeout_ms - 1);
  EXPECT_TRUE(c->migrating());
  c->on_timer(1000 + limits.migrate_timeout_ms);
  EXPECT_FALSE(c->migrating());
  EXPECT_EQ(c->state(), ClientState::established);
  EXPECT_EQ(c->server(), 1u);
  EXPECT_EQ(c->primary(), std::optional<SubflowId>(kPrimary));
  EXPECT_EQ(c->send_log().base(), 100u);
  EXPECT_EQ(c->counters().migrations_failed, 1u);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, sub);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migration_failed);
  EXPECT_EQ(ev[0].error, Error::migration_timeout);
  EXPECT_EQ(ev[0].started_ms, 1000u);
  EXPECT_EQ(ev[0].done_ms, 1000 + limits.migrate_timeout_ms);
  // A failed policy attempt does not use up the recovery budget: data flows again.
  EXPECT_EQ(c->write_copy(input_bytes(100, 5)), 5u);
  auto f = sent(kPrimary);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(std::get<wire::Data>(f[0]).dsn, 100u);
}

// The old server finishes the connection while a migration is under way (seen in e2e_netns:
// eager, a migration every 50 ms). It acknowledges all input, sends all output and its CLOSE,
// then frees the connection and closes the subflow. The attempt must not go on to recover a
// connection the pool has freed: the connection ends here, complete.
TEST_F(ClientTest, ServerFinishingDuringAnAttemptEndsTheConnectionInsteadOfRecovering) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 100)), 100u);
  c->close();
  (void)sent(kPrimary);  // DATA and CLOSE
  ASSERT_TRUE(c->migrate(2, now).ok());
  SubflowId sub = c->take_actions().at(0).subflow;
  feed(kPrimary, make_data(0, output_bytes(0, 20)));
  feed(kPrimary, wire::Ack{100});
  EXPECT_TRUE(c->migrating());  // the CLOSE is still missing: the attempt goes on
  EXPECT_EQ(c->send_log().base(), 0u);
  feed(kPrimary, wire::Close{20});
  EXPECT_FALSE(c->migrating());
  EXPECT_TRUE(c->finished());
  EXPECT_EQ(c->send_log().base(), 100u);
  EXPECT_EQ(c->counters().migrations_abandoned, 1u);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[0].subflow, sub);
  c->on_subflow_closed(kPrimary, now + 1);
  c->on_timer(now + 10000);
  EXPECT_TRUE(c->take_actions().empty());  // no recovery attempt
  EXPECT_EQ(c->state(), ClientState::established);
  for (const auto& ev : c->take_events()) EXPECT_NE(ev.kind, ClientEvent::Kind::failed);
}

// Same, but the final ACK came before the attempt began and only the CLOSE and the end of the
// subflow arrive during it.
TEST_F(ClientTest, PrimaryClosingAfterEverythingDuringAnAttemptEndsTheConnection) {
  establish();
  EXPECT_EQ(c->write_copy(input_bytes(0, 50)), 50u);
  c->close();
  (void)sent(kPrimary);
  feed(kPrimary, wire::Ack{50});
  ASSERT_TRUE(c->migrate(3, now).ok());
  (void)c->take_actions();
  feed(kPrimary, wire::Close{0});
  EXPECT_FALSE(c->migrating());
  c->on_subflow_closed(kPrimary, now + 1);
  c->on_timer(now + 10000);
  EXPECT_TRUE(c->finished());
  for (const auto& a : c->take_actions()) EXPECT_NE(a.kind, ClientAction::Kind::open_subflow);
  EXPECT_NE(c->state(), ClientState::failed);
}

TEST_F(ClientTest, RefusedAttemptReportsTheReason) {
  establish();
  cert::Challenge nonce{};
  auto [sub, m] = start_migration(2, nonce);
  feed(sub, wire::Refuse{Error::rate_limited, 0, "slow down"});
  EXPECT_FALSE(c->migrating());
  EXPECT_EQ(c->server(), 1u);
  auto ev = c->take_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, ClientEvent::Kind::migration_failed);
  EXPECT_EQ(ev[0].error, Error::rate_limited);
  EXPECT_EQ(ev[0].to, 2u);
}

TEST_F(ClientTest, MigrateRejectsBadRequests) {
  make();
  EXPECT_EQ(c->migrate(2, now).error(), Error::closed);
  establish();
  EXPECT_EQ(c->migrate(9, now).error(), Error::bad_field);
  EXPECT_TRUE(c->migrate(2, now).ok());
  EXPECT_EQ(c->migrate(3, now).error(), Error::pending_table_full);
  EXPECT_EQ(c->counters().migrations_started, 1u);
}

TEST_F(ClientTest, LostPrimaryIsRecoveredWithBackoffUntilAttemptsMax) {
  limits.migrate_attempts_max = 3;
  limits.retry_backoff_ms = 40;
  establish();
  c->on_subflow_closed(kPrimary, 1000);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].server, 2u);  // first recovery attempt at once, to the next member
  EXPECT_EQ(c->migrate(3, 1000).error(), Error::pending_table_full);
  c->on_subflow_closed(acts[0].subflow, 1010);  // attempt 1 lost
  EXPECT_FALSE(c->migrating());
  EXPECT_EQ(c->migrate(3, 1010).error(), Error::pending_table_full);  // recovering by itself
  // Back-off retry_backoff_ms plus up to 25% jitter.
  TimeMs retry = c->next_deadline();
  EXPECT_GE(retry, 1010u + 40);
  EXPECT_LT(retry, 1010u + 40 + 10);
  c->on_timer(retry - 1);
  EXPECT_TRUE(c->take_actions().empty());
  c->on_timer(retry);
  acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].server, 3u);
  now = retry;
  feed(acts[0].subflow, wire::Refuse{Error::owner_unreachable, 0, ""});  // attempt 2 refused
  TimeMs retry2 = c->next_deadline();  // the back-off doubles
  EXPECT_GE(retry2, retry + 80);
  EXPECT_LT(retry2, retry + 80 + 20);
  c->on_timer(retry2);
  acts = c->take_actions();
  ASSERT_EQ(acts.size(), 2u);  // closes attempt 2's subflow, opens attempt 3
  EXPECT_EQ(acts[0].kind, ClientAction::Kind::close_subflow);
  EXPECT_EQ(acts[1].kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts[1].server, 1u);
  c->on_subflow_closed(acts[1].subflow, retry2 + 10);  // attempt 3 lost: budget used up
  EXPECT_EQ(c->state(), ClientState::failed);
  EXPECT_EQ(c->failure(), Error::no_alternate);
  EXPECT_EQ(c->counters().migrations_started, 3u);
  EXPECT_EQ(c->counters().migrations_failed, 3u);
  auto ev = c->take_events();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().kind, ClientEvent::Kind::failed);
  EXPECT_EQ(ev.back().error, Error::no_alternate);
  // The failure names every reason, not only the last one: a refusal in the middle is kept.
  EXPECT_EQ(ev.back().last_attempt, Error::subflow_lost);
  using Counts = std::vector<std::pair<Error, uint32_t>>;
  EXPECT_EQ(ev.back().attempt_errors, (Counts{{Error::subflow_lost, 2}, {Error::owner_unreachable, 1}}));
  EXPECT_EQ(core::describe_attempts(ev.back().last_attempt, ev.back().attempt_errors),
            " (last attempt: subflow lost; since the last success: subflow lost x2, owner unreachable x1)");
}

TEST(DescribeAttempts, NothingWhenNoAttemptFailedAndNoRepeatForASingleReason) {
  EXPECT_EQ(core::describe_attempts(Error::ok, {}), "");
  EXPECT_EQ(core::describe_attempts(Error::bad_proof, {{Error::bad_proof, 1}}), " (last attempt: bad proof)");
  EXPECT_EQ(core::describe_attempts(Error::bad_proof, {{Error::bad_proof, 3}}),
            " (last attempt: bad proof; since the last success: bad proof x3)");
}

TEST_F(ClientTest, ASuccessfulMigrationForgetsTheReasonsOfEarlierFailedAttempts) {
  limits.migrate_attempts_max = 1;
  establish();
  auto [lost, mig] = start_migration(2, cert::Challenge{});
  (void)mig;
  c->on_subflow_closed(lost, now);  // failed attempt: subflow lost
  (void)c->take_actions();
  auto [sub, mig3] = start_migration(3, cert::Challenge{});
  wire::Accept a;
  a.epoch = 2;
  a.server_rcv_nxt = 0;
  a.cert = {kConn, 3, now, now + 600000};
  a.secret = cert::wrap_next_secret(key_of(0x33), welcome_secret(), a.cert);
  feed(sub, a);
  ASSERT_EQ(c->server(), 3u);
  (void)c->take_actions();
  (void)c->take_events();
  c->on_subflow_closed(sub, now + 1);  // the primary is lost; one recovery attempt
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  feed(acts[0].subflow, wire::Refuse{Error::owner_unreachable, 0, ""});
  c->on_timer(c->next_deadline());
  ASSERT_EQ(c->state(), ClientState::failed);
  auto ev = c->take_events();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().kind, ClientEvent::Kind::failed);
  EXPECT_EQ(ev.back().last_attempt, Error::owner_unreachable);
  using Counts = std::vector<std::pair<Error, uint32_t>>;
  EXPECT_EQ(ev.back().attempt_errors, (Counts{{Error::owner_unreachable, 1}}));
}

TEST_F(ClientTest, RecoveryFollowsTheHintOfARefusal) {
  establish();
  c->on_subflow_closed(kPrimary, 1000);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].server, 2u);
  feed(acts[0].subflow, wire::Refuse{Error::already_claimed, 3, ""});
  c->on_timer(c->next_deadline());
  acts = c->take_actions();
  ASSERT_FALSE(acts.empty());
  EXPECT_EQ(acts.back().kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts.back().server, 3u);
}

TEST_F(ClientTest, RecoverySkipsAMemberThatJustFailedEvenWhenAHintNamesIt) {
  limits.migrate_timeout_ms = 100;  // a failed target is backed off 100 ms, then 200 ms
  establish();
  c->on_subflow_closed(kPrimary, 1000);
  auto acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].server, 2u);
  c->on_subflow_closed(acts[0].subflow, 1010);  // member 2 is down
  EXPECT_TRUE(c->member_backoff().backed_off(2, 1010));
  EXPECT_EQ(c->member_backoff().until(2), 1110u);
  c->on_timer(c->next_deadline());
  acts = c->take_actions();
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].server, 3u);
  // Member 3 refuses and hints at 2, which just failed: the next attempt goes to 1 instead.
  now = 1070;
  feed(acts[0].subflow, wire::Refuse{Error::already_claimed, 2, ""});
  EXPECT_FALSE(c->member_backoff().backed_off(3, now));  // a refusal about the claim, not 3
  c->on_timer(c->next_deadline());
  acts = c->take_actions();
  ASSERT_FALSE(acts.empty());
  EXPECT_EQ(acts.back().kind, ClientAction::Kind::open_subflow);
  EXPECT_EQ(acts.back().server, 1u);
}

TEST_F(ClientTest, PickAlternateSkipsBackedOffMembersAndAnAcceptClearsThem) {
  limits.migrate_timeout_ms = 100;
  establish();
  EXPECT_EQ(c->pick_alternate(now), 2u);
  auto [sub, mig] = start_migration(2, cert::Challenge{});
  (void)mig;
  c->on_subflow_closed(sub, now);  // the attempt to 2 is lost: 2 is backed off
  EXPECT_EQ(c->pick_alternate(now), 3u);
  EXPECT_EQ(c->pick_alternate(now + 100), 2u);  // its back-off is over
  (void)c->take_actions();
  (void)c->take_events();
  auto [sub3, mig3] = start_migration(3, cert::Challenge{});
  (void)mig3;
  now += 10;
  c->on_timer(now + limits.migrate_timeout_ms);  // no answer: 3 times out
  EXPECT_TRUE(c->member_backoff().backed_off(3, now + limits.migrate_timeout_ms));
  (void)sub3;
}

TEST(MemberBackoff, DoublesPerFailureUpToTheCapAndSuccessClears) {
  MemberBackoff b(100, 400);
  b.failed(2, 1000);
  EXPECT_TRUE(b.backed_off(2, 1099));
  EXPECT_FALSE(b.backed_off(2, 1100));
  b.failed(2, 1100);
  EXPECT_EQ(b.until(2), 1300u);
  b.failed(2, 1300);
  EXPECT_EQ(b.until(2), 1700u);
  b.failed(2, 1700);
  EXPECT_EQ(b.until(2), 2100u);  // capped at 400
  EXPECT_EQ(b.failures(2), 4u);
  b.succeeded(2);
  EXPECT_FALSE(b.backed_off(2, 1700));
  EXPECT_EQ(b.failures(2), 0u);
}

TEST(MemberBackoff, NextSkipsBackedOffMembersOrTakesTheOneFreeSoonest) {
  MemberBackoff b(100, 1000);
  std::vector<ServerId> pool{1, 2, 3};
  EXPECT_EQ(b.next(pool, 1, 1, 0), 2u);
  b.failed(2, 0);
  EXPECT_EQ(b.next(pool, 1, 1, 0), 3u);
  EXPECT_EQ(b.next(pool, 1, 0, 0), 3u);
  b.failed(3, 0);
  b.failed(3, 100);  // 3 free at 300, 2 at 100
  EXPECT_EQ(b.next(pool, 1, 1, 50), 2u);  // both backed off: 2 is free soonest
  EXPECT_EQ(b.next(pool, 1, 0, 50), 1u);  // 1 itself is a candidate when not skipped
  EXPECT_EQ(b.next(pool, 9, 0, 50), 1u);  // an unknown member: from the start
  EXPECT_EQ(b.next({1}, 1, 1, 0), 1u);    // the skipped member when it is all there is
  EXPECT_EQ(b.next({}, 1, 0, 0), 0u);
}

// ---- against real server engines ----------------------------------------------------------

TEST(ClientWithServers, ConnectAndExchangeExactBytes) {
  Harness h(3);
  h.connect(1);
  ClientEngine& c = h.client();
  ASSERT_EQ(c.state(), ClientState::established);
  ASSERT_EQ(h.count(ClientEvent::Kind::connected), 1u);
  auto owned = h.server(1).owned_connections();
  ASSERT_EQ(owned.size(), 1u);
  EXPECT_EQ(c.conn_id(), owned[0]);
  EXPECT_EQ(c.pool(), (std::vector<ServerId>{1, 2, 3}));
  EXPECT_EQ(c.certificate().conn_id, owned[0]);
  EXPECT_EQ(c.certificate().issuer_id, 1u);
  EXPECT_EQ(c.certificate().expires_at_ms, h.limits().cert_lifetime_ms);
  EXPECT_EQ(h.count(1, ServerEvent::Kind::opened), 1u);

  EXPECT_EQ(h.write_input(1000), 1000u);
  h.pump();
  EXPECT_EQ(h.read_all(), 1000u);
  EXPECT_EQ(c.send_log().base(), 1000u);  // acknowledged: trimmed
  EXPECT_EQ(c.send_log().size(), 0u);
  EXPECT_EQ(c.rcv_nxt(), 1000u);
  auto i = h.info(1, c.conn_id());
  ASSERT_TRUE(i);
  EXPECT_EQ(i->in_end, 1000u);
  EXPECT_EQ(i->app_in, 1000u);
  EXPECT_EQ(i->out_end, 1000u);
  EXPECT_EQ(i->out_acked, 1000u);
  EXPECT_EQ(c.counters().duplicate_bytes_dropped, 0u);
  EXPECT_EQ(h.server(1).counters().duplicate_bytes_dropped, 0u);
  EXPECT_EQ(h.server(1).counters().connections_opened, 1u);
  EXPECT_EQ(c.counters().connections_opened, 1u);
  EXPECT_TRUE(h.violations.empty()) << h.violations.front();
}

TEST(ClientWithServers, RecvBufferBackPressureHoldsTheServerBack) {
  Limits l;
  l.recv_buffer_bytes_max = 500;
  l.frame_payload_bytes_max = 100;
  Harness h(3, l);
  h.connect(1);
  EXPECT_EQ(h.write_input(1200), 1200u);
  h.pump();
  ClientEngine& c = h.client();
  EXPECT_EQ(c.readable(), 500u);
  EXPECT_FALSE(c.wants_read(*c.primary()));
  EXPECT_EQ(c.rcv_nxt(), 500u);
  auto i = h.info(1, c.conn_id());
  EXPECT_EQ(i->out_end, 1200u);
  EXPECT_EQ(i->out_acked, 500u);
  // The app reads: the rest flows.
  EXPECT_EQ(h.read_all(), 500u);
  h.pump();
  EXPECT_EQ(h.read_all(), 500u);
  h.pump();
  EXPECT_EQ(h.read_all(), 200u);
  h.pump();
  EXPECT_EQ(h.received(), 1200u);
  EXPECT_EQ(h.info(1, c.conn_id())->out_acked, 1200u);
  EXPECT_TRUE(h.violations.empty()) << h.violations.front();
}

}  // namespace
}  // namespace mtcp::test
