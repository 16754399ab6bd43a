// The data path copies no payload inside the core: the blocks the application hands to
// write() are the blocks poll_transmit() returns for writev, and received blocks are the
// blocks the application reads back (docs/ARCHITECTURE.md "zero-copy data path").
#include <gtest/gtest.h>

#include "core/client.h"
#include "core/server.h"
#include "sim/prng.h"

namespace mtcp {
namespace {

using core::ClientEngine;
using core::ServerEngine;

constexpr core::SubflowId kServerSub = 100;

struct Pair {
  sim::Prng crng{1};
  sim::Prng srng{2};
  Limits limits;
  ClientEngine client{limits, crng};
  std::unique_ptr<ServerEngine> server;
  core::SubflowId csub = 0;
  core::ConnId conn = 0;

  Pair() {
    core::ServerConfig cfg;
    cfg.self = 1;
    cfg.pool = {{1, "a"}, {2, "b"}};
    cfg.limits = limits;
    server = std::make_unique<ServerEngine>(cfg, srng);
    client.connect(1, 0);
    auto acts = client.take_actions();
    csub = acts.at(0).subflow;
    server->on_subflow_open(kServerSub, 0);
    pump();
    auto evs = server->take_events();
    conn = evs.at(0).conn;
  }
  // Moves bytes both ways until nothing is left; returns the slices the client sent.
  std::vector<Slice> pump() {
    std::vector<Slice> sent_by_client;
    for (int i = 0; i < 100; ++i) {
      std::vector<Slice> c2s, s2c;
      client.poll_transmit(csub, 1 << 20, c2s);
      server->poll_transmit(kServerSub, 1 << 20, s2c);
      if (c2s.empty() && s2c.empty()) break;
      for (auto& s : c2s) {
        sent_by_client.push_back(s);
        server->on_subflow_data(kServerSub, s, 0);
      }
      for (auto& s : s2c) client.on_subflow_data(csub, s, 0);
    }
    return sent_by_client;
  }
};

TEST(ZeroCopy, ClientWriteIsTransmittedFromTheSameBlock) {
  Pair p;
  auto block = make_block(Bytes(5000, 0x5A));
  ASSERT_TRUE(p.client.write(Slice(block)).ok());
  std::vector<Slice> out;
  p.client.poll_transmit(p.csub, 1 << 20, out);
  bool found = false;
  for (const auto& s : out) found |= s.block == block;
  EXPECT_TRUE(found) << "the payload must be sent from the application's own block";
  // Header block + payload slice: 16 bytes of framing for 5000 bytes.
  size_t total = 0;
  for (const auto& s : out) total += s.len;
  EXPECT_EQ(total, 5000u + wire::kDataHeaderBytes);
}

TEST(ZeroCopy, ServerWriteIsTransmittedFromTheSameBlock) {
  Pair p;
  auto block = make_block(Bytes(3000, 0x33));
  auto w = p.server->conn_write(p.conn, Slice(block));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, 3000u);
  std::vector<Slice> out;
  p.server->poll_transmit(kServerSub, 1 << 20, out);
  bool found = false;
  for (const auto& s : out) found |= s.block == block;
  EXPECT_TRUE(found);
}

TEST(ZeroCopy, ServerReadsSlicesOfTheReceivedBlocks) {
  Pair p;
  ASSERT_TRUE(p.client.write(Slice(make_block(Bytes(4000, 0x44)))).ok());
  // Deliver what the client sends as one received block, as a runtime read() would.
  std::vector<Slice> c2s;
  p.client.poll_transmit(p.csub, 1 << 20, c2s);
  Bytes wire_bytes;
  for (const auto& s : c2s) wire_bytes.insert(wire_bytes.end(), s.data(), s.data() + s.len);
  auto received = make_block(std::move(wire_bytes));
  p.server->on_subflow_data(kServerSub, Slice(received), 0);
  std::vector<Slice> got;
  EXPECT_EQ(p.server->conn_read_slices(p.conn, 1 << 20, got), 4000u);
  ASSERT_FALSE(got.empty());
  for (const auto& s : got) EXPECT_EQ(s.block, received) << "payload must be a view of the received block";
}

TEST(ZeroCopy, ClientReadsSlicesOfTheReceivedBlocks) {
  Pair p;
  ASSERT_TRUE(p.server->conn_write(p.conn, Slice(make_block(Bytes(2500, 0x25)))).ok());
  std::vector<Slice> s2c;
  p.server->poll_transmit(kServerSub, 1 << 20, s2c);
  Bytes wire_bytes;
  for (const auto& s : s2c) wire_bytes.insert(wire_bytes.end(), s.data(), s.data() + s.len);
  auto received = make_block(std::move(wire_bytes));
  p.client.on_subflow_data(p.csub, Slice(received), 0);
  std::vector<Slice> got;
  p.client.read_slices(1 << 20, got);
  size_t n = 0;
  for (const auto& s : got) {
    EXPECT_EQ(s.block, received);
    n += s.len;
  }
  EXPECT_EQ(n, 2500u);
}

}  // namespace
}  // namespace mtcp
