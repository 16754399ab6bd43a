// A lean in-memory driver for the sans-IO engines, for the benchmarks: one ClientEngine, N
// ServerEngines sharing a pool key, one pipe per subflow and a control network, all delivering
// at once. Modelled on mtcp/tests/engine_harness.h, without its checking application, logs
// and fault injection, so that what is measured is the engines.
//
// Time is a field the benchmark sets (the core is sans-IO: it never reads a clock).
//
// Each server's engine and application instances are driven by a host::EngineHost (the one
// loop the runtime and the simulator use too) through a MemNet Transport; the application is
// the AppFactory the benchmark passes, or EchoSlices (reads slices and writes them back).
//
// Pipes move the slices poll_transmit returns, like a socket pair: a sender stops polling while
// kPipeBytes are queued in its direction, and a receiver is handed at most kReadBytes per
// direction per round (one read), so the applications run between reads as they would under
// an event loop. By default the slices themselves are handed over (zero copy end to end: only
// the engines are measured). With copy_reads, everything one poll_transmit returned is first
// copied into one fresh block, as writev + read through a socket would, and handed over as one
// read.
#pragma once
#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "core/client.h"
#include "core/server.h"
#include "host/engine_host.h"
#include "sdk/app.h"

namespace mtcp::bench {

using core::ClientAction;
using core::ClientEngine;
using core::ClientEvent;
using core::ConnId;
using core::ServerAction;
using core::ServerEngine;
using core::ServerEvent;
using core::ServerId;
using core::SubflowId;
using core::TimeMs;

// The default application: every input slice written back as it is (zero copy); accepts any
// snapshot (it keeps no state), so migrations with arbitrary snapshots import.
class EchoSlices final : public sdk::ConnApp {
 public:
  bool on_open(sdk::Conn&, const sdk::Import&, std::string&) override { return true; }
  void on_readable(sdk::Conn& c) override { serve(c); }
  void on_writable(sdk::Conn& c) override { serve(c); }

 private:
  void serve(sdk::Conn& c) {
    for (;;) {
      while (!pending_.empty()) {
        auto w = c.write(pending_.front());
        if (!w || *w == 0) return;
        if (*w < pending_.front().len) {
          pending_.front() = pending_.front().sub(*w, pending_.front().len - *w);
          return;
        }
        pending_.pop_front();
      }
      got_.clear();
      if (c.read_slices(std::max<size_t>(c.write_space(), 64u << 10), got_) == 0) return;
      pending_.insert(pending_.end(), got_.begin(), got_.end());
    }
  }
  std::deque<Slice> pending_;
  std::vector<Slice> got_;
};
class EchoSlicesFactory final : public sdk::AppFactory {
 public:
  std::unique_ptr<sdk::ConnApp> make(ConnId) override { return std::make_unique<EchoSlices>(); }
  bool verify_replay() const override { return false; }
};

class MemNet {
 public:
  static constexpr size_t kBudget = 256u << 10;     // bytes one poll_transmit may return
  static constexpr size_t kPipeBytes = 1u << 20;    // queued per direction before the sender waits
  static constexpr size_t kReadBytes = 256u << 10;  // delivered per direction per round

  // `factory` (kept by the caller, outliving the MemNet) makes the server applications;
  // nullptr: EchoSlices.
  MemNet(uint32_t servers, const Limits& limits, bool copy_reads = false, sdk::AppFactory* factory = nullptr)
      : limits_(limits), copy_reads_(copy_reads), key_(bench_pool_key()), client_rng_(1),
        factory_(factory != nullptr ? *factory : echo_factory_) {
    for (ServerId i = 1; i <= servers; ++i) pool_.push_back({i, "s" + std::to_string(i)});
    for (ServerId i = 1; i <= servers; ++i) {
      Node& n = servers_[i];
      n.rng = std::make_unique<BenchRandom>(100 + i);
      n.engine = std::make_unique<ServerEngine>(core::ServerConfig{i, pool_, key_, limits_}, *n.rng);
      n.transport = std::make_unique<NodeTransport>(*this, i);
      n.host = std::make_unique<host::EngineHost>(*n.engine, factory_, *n.transport, [](const std::string&) {});
    }
    client_ = std::make_unique<ClientEngine>(limits_, client_rng_);
  }

  ClientEngine& client() { return *client_; }
  ServerEngine& server(ServerId s) { return *servers_.at(s).engine; }
  const cert::Key& key() const { return key_; }

  TimeMs now = 0;
  // Everything the engines reported since the benchmark last cleared these.
  std::vector<ClientEvent> client_events;
  std::vector<std::pair<ServerId, ServerEvent>> server_events;

  // One pass over every node: actions, events, transmit, deliver. True if anything moved.
  bool round() {
    bool moved = service_client();
    for (auto& [id, n] : servers_) moved |= n.host->service(1);
    moved |= deliver_pipes();
    moved |= deliver_control();
    std::erase_if(pipes_, [](const auto& kv) { return !kv.second.client_open && !kv.second.server_open; });
    return moved;
  }
  // Rounds until nothing moves; false if it did not settle.
  bool settle(int max_rounds = 100000) {
    for (int i = 0; i < max_rounds; ++i) {
      if (!round()) return true;
    }
    return false;
  }
  // Fire the timers that are due at `now`.
  void fire_timers() {
    if (client_->next_deadline() <= now) client_->on_timer(now);
    for (auto& [id, n] : servers_) {
      if (n.engine->next_deadline() <= now) n.engine->on_timer(now);
    }
  }
  size_t pipe_count() const { return pipes_.size(); }

 private:
  struct Item {
    Slice bytes;
    bool fin = false;
  };
  struct Pipe {
    ServerId server = 0;
    bool client_open = true;
    bool server_open = true;
    std::deque<Item> c2s, s2c;
    size_t c2s_bytes = 0, s2c_bytes = 0;
  };
  // A server's side of the network, as its host sees it.
  class NodeTransport final : public host::Transport {
   public:
    NodeTransport(MemNet& net, ServerId s) : net_(net), s_(s) {}
    void send_control(ServerId to, Bytes msg) override { net_.ctl_.push_back({s_, to, std::move(msg)}); }
    void close_subflow(SubflowId sub) override { net_.close_subflow(s_, sub); }
    void plain_tcp(SubflowId sub, Bytes) override {
      if (auto it = net_.pipes_.find(sub); it != net_.pipes_.end()) it->second.server_open = false;
    }
    bool subflow_ready(SubflowId sub) override { return net_.transmit_server(s_, sub); }
    std::vector<SubflowId> subflows() const override {
      std::vector<SubflowId> v;
      for (const auto& [id, p] : net_.pipes_) {
        if (p.server == s_) v.push_back(id);
      }
      return v;
    }
    void post_service() override {}  // every round services every host
    void saw_event(const ServerEvent& e) override { net_.server_events.emplace_back(s_, e); }

   private:
    MemNet& net_;
    ServerId s_;
  };
  // Destroyed bottom up: the host (and its apps) before the engine.
  struct Node {
    std::unique_ptr<BenchRandom> rng;
    std::unique_ptr<ServerEngine> engine;
    std::unique_ptr<NodeTransport> transport;
    std::unique_ptr<host::EngineHost> host;
  };
  struct Msg {
    ServerId from = 0;
    ServerId to = 0;
    Bytes bytes;
  };

  // Appends what one poll_transmit returned to a pipe direction.
  void push_out(std::vector<Slice>& out, std::deque<Item>& q, size_t& queued) {
    if (out.empty()) return;
    size_t total = 0;
    for (const auto& s : out) total += s.len;
    queued += total;
    if (!copy_reads_) {
      for (auto& s : out) q.push_back({std::move(s), false});
      return;
    }
    Bytes b;
    b.reserve(total);
    for (const auto& s : out) b.insert(b.end(), s.data(), s.data() + s.len);
    q.push_back({Slice(make_block(std::move(b))), false});
  }

  bool service_client() {
    bool moved = false;
    for (auto& a : client_->take_actions()) {
      moved = true;
      if (a.kind == ClientAction::Kind::open_subflow) {
        Pipe& p = pipes_[a.subflow];
        p.server = a.server;
        server(a.server).on_subflow_open(a.subflow, now);
      } else {
        auto it = pipes_.find(a.subflow);
        if (it == pipes_.end() || !it->second.client_open) continue;
        Pipe& p = it->second;
        p.client_open = false;
        p.s2c.clear();
        p.s2c_bytes = 0;
        if (p.server_open) p.c2s.push_back({Slice{}, true});
      }
    }
    for (auto& e : client_->take_events()) {
      moved = true;
      client_events.push_back(e);
    }
    for (auto& [id, p] : pipes_) {
      if (!p.client_open) continue;
      while (p.c2s_bytes < kPipeBytes && client_->wants_transmit(id)) {
        out_.clear();
        if (client_->poll_transmit(id, kBudget, out_) == 0) break;
        moved = true;
        if (p.server_open) push_out(out_, p.c2s, p.c2s_bytes);
      }
    }
    return moved;
  }

  void close_subflow(ServerId s, SubflowId sub) {
    auto it = pipes_.find(sub);
    if (it == pipes_.end() || !it->second.server_open) return;
    ServerEngine& eng = server(s);
    Pipe& p = it->second;
    // What the engine still queued (REFUSE, RESET) goes out before the FIN.
    out_.clear();
    while (eng.poll_transmit(sub, kBudget, out_) > 0) {}
    if (p.client_open) {
      push_out(out_, p.s2c, p.s2c_bytes);
      p.s2c.push_back({Slice{}, true});
    }
    p.server_open = false;
    p.c2s.clear();
    p.c2s_bytes = 0;
    eng.on_subflow_closed(sub, now);
  }

  // The host's subflow_ready: transmit while the pipe has room.
  bool transmit_server(ServerId s, SubflowId id) {
    auto it = pipes_.find(id);
    if (it == pipes_.end() || it->second.server != s || !it->second.server_open) return false;
    Pipe& p = it->second;
    ServerEngine& eng = server(s);
    bool moved = false;
    while (p.s2c_bytes < kPipeBytes && eng.wants_transmit(id)) {
      out_.clear();
      if (eng.poll_transmit(id, kBudget, out_) == 0) break;
      moved = true;
      if (p.client_open) push_out(out_, p.s2c, p.s2c_bytes);
    }
    return moved;
  }

  bool deliver_pipes() {
    bool moved = false;
    for (auto& [id, p] : pipes_) {
      // client -> server
      size_t read = 0;
      while (!p.c2s.empty() && p.server_open && read < kReadBytes) {
        ServerEngine& eng = server(p.server);
        if (p.c2s.front().fin) {
          p.c2s.clear();
          p.c2s_bytes = 0;
          p.server_open = false;
          eng.on_subflow_closed(id, now);
          moved = true;
          break;
        }
        if (!eng.wants_read(id)) break;
        Slice s = std::move(p.c2s.front().bytes);
        p.c2s.pop_front();
        p.c2s_bytes -= s.len;
        read += s.len;
        eng.on_subflow_data(id, std::move(s), now);
        moved = true;
      }
      // server -> client
      read = 0;
      while (!p.s2c.empty() && p.client_open && read < kReadBytes) {
        if (p.s2c.front().fin) {
          p.s2c.clear();
          p.s2c_bytes = 0;
          p.client_open = false;
          client_->on_subflow_closed(id, now);
          moved = true;
          break;
        }
        if (!client_->wants_read(id)) break;
        Slice s = std::move(p.s2c.front().bytes);
        p.s2c.pop_front();
        p.s2c_bytes -= s.len;
        read += s.len;
        client_->on_subflow_data(id, std::move(s), now);
        moved = true;
      }
      // Room in the pipe again: the server's host looks at the subflow in its next pass.
      if (read > 0 && p.server_open) servers_.at(p.server).host->mark_subflow(id);
    }
    return moved;
  }

  bool deliver_control() {
    if (ctl_.empty()) return false;
    auto batch = std::exchange(ctl_, {});
    for (auto& m : batch) server(m.to).on_control(m.from, m.bytes, now);
    return true;
  }

  Limits limits_;
  bool copy_reads_;
  cert::Key key_;
  BenchRandom client_rng_;
  std::vector<wire::Alternate> pool_;
  std::map<ServerId, Node> servers_;
  std::unique_ptr<ClientEngine> client_;
  std::map<SubflowId, Pipe> pipes_;
  std::deque<Msg> ctl_;
  std::vector<Slice> out_;
  EchoSlicesFactory echo_factory_;
  sdk::AppFactory& factory_;
};

}  // namespace mtcp::bench
