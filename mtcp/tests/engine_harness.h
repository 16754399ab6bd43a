// A tiny deterministic driver for the sans-IO engines, for unit tests: one ClientEngine, N
// ServerEngines sharing a pool key, an in-memory pipe per subflow and an in-memory control
// network. Nothing here reads a clock: time only moves when a test calls advance_to().
//
// Pipes deliver every byte at once unless a direction is held (hold_pipe); control messages
// are delivered at once unless the (from, to) pair is held (hold_control), and held messages
// can be released or dropped. A crash destroys a server's engine; a cut loses a subflow.
//
// The server application is EchoApp: output byte i is a pure function of input byte i
// (output_byte(input_byte(i))), so a stream is intact when the client has received exactly
// output_bytes(0, n) and every server instance read exactly input_bytes(0, n). Its snapshot is
// the count of bytes consumed. Tests snapshot by hand (app(...)->snapshot()) or set
// snapshot_every.
//
// "Raw" subflows let a test speak the wire protocol itself (a forger, a second client, a
// plain-TCP client): raw_send() hands the bytes to the server engine at once, raw_take()
// returns the frames the server sent back so far.
#pragma once
#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cert/cert.h"
#include "common/buffer.h"
#include "common/limits.h"
#include "core/client.h"
#include "core/server.h"
#include "sim/prng.h"
#include "wire/control.h"
#include "wire/frame.h"

namespace mtcp::test {

using core::ClientAction;
using core::ClientEngine;
using core::ClientEvent;
using core::ClientState;
using core::ConnId;
using core::ServerAction;
using core::ServerConfig;
using core::ServerEngine;
using core::ServerEvent;
using core::ServerId;
using core::SubflowId;
using core::TimeMs;
using Role = ServerEngine::ConnInfo::Role;

// ---- streams ------------------------------------------------------------------------------

// Client->server byte at stream offset i.
inline uint8_t input_byte(uint64_t i) { return static_cast<uint8_t>(i * 37 + (i >> 8) * 11 + 5); }
// What EchoApp answers to one input byte.
inline uint8_t output_byte(uint8_t in) { return static_cast<uint8_t>(in ^ 0x5A); }

inline Bytes input_bytes(uint64_t from, size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = input_byte(from + i);
  return b;
}
inline Bytes output_bytes(uint64_t from, size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = output_byte(input_byte(from + i));
  return b;
}

inline Bytes encode_frame(const wire::Frame& f) {
  Bytes b;
  wire::encode(f, b);
  return b;
}
inline Bytes preface_and(const wire::Frame& f) {
  Bytes b(wire::kPreface.begin(), wire::kPreface.end());
  wire::encode(f, b);
  return b;
}
inline Slice slice_of(Bytes b) { return Slice(make_block(std::move(b))); }
// Every complete frame in b; *ok is false if the bytes do not decode (trailing partial frames
// are not an error).
inline std::vector<wire::Frame> decode_frames(const Bytes& b, bool* ok = nullptr) {
  std::vector<wire::Frame> v;
  SliceQueue q;
  q.push(slice_of(b));
  wire::FrameDecoder dec(kFramePayloadBytesMax);
  if (ok) *ok = true;
  while (true) {
    auto f = dec.next(q);
    if (!f) {
      if (ok) *ok = false;
      break;
    }
    if (!f.value()) break;
    v.push_back(std::move(*f.value()));
  }
  return v;
}
inline Bytes flatten(const std::vector<Slice>& v) {
  Bytes out;
  for (const auto& s : v) out.insert(out.end(), s.span().begin(), s.span().end());
  return out;
}
inline Bytes data_bytes(const wire::Data& d) { return flatten(d.payload); }
inline wire::Data make_data(uint64_t dsn, Bytes payload) { return wire::Data{dsn, {slice_of(std::move(payload))}}; }

// A MIGRATE whose proof is computed from `secret` (tests that hold the pool key can derive any
// connection's secret with cert::derive_secret).
inline wire::Migrate make_migrate(const cert::Certificate& c, const cert::Key& secret, const wire::ChallengeFrame& ch,
                                  uint32_t counter, ServerId prev_owner, uint64_t rcv_nxt, uint64_t snd_una) {
  wire::Migrate m;
  m.cert = c;
  m.counter = counter;
  m.prev_owner = prev_owner;
  m.client_rcv_nxt = rcv_nxt;
  m.client_snd_una = snd_una;
  m.proof = cert::make_proof(secret, ch.nonce, ch.server_id, c.conn_id, counter);
  return m;
}

// ---- the test application -----------------------------------------------------------------

class EchoApp {
 public:
  EchoApp(ConnId conn, std::vector<std::string>* violations) : conn_(conn), violations_(violations) {}

  // Start from the engine's snapshot (fresh if there is none).
  bool import(const ServerEngine& e) {
    auto v = e.conn_snapshot_view(conn_);
    if (!v) return fail("import: no snapshot view");
    consumed_ = written_ = 0;
    if (v->snap_id != 0) {
      if (v->bytes == nullptr || v->bytes->size() != 8) return fail("import: snapshot is not 8 bytes");
      uint64_t count = 0;
      for (uint8_t b : *v->bytes) count = (count << 8) | b;
      if (count != v->in_seq || count != v->out_seq) return fail("import: snapshot positions disagree");
      consumed_ = written_ = count;
    }
    last_snap_ = consumed_;
    pending_.clear();
    return true;
  }

  // Read, answer and (every snapshot_every bytes) snapshot as far as the engine lets us.
  bool step(ServerEngine& e, uint64_t snapshot_every) {
    if (paused) return false;
    bool moved = false;
    for (int round = 0; round < 256; ++round) {
      if (!pending_.empty()) {
        auto w = e.conn_write_copy(conn_, pending_);
        if (!w) {
          last_error = w.error();
          if (write_errors != nullptr) write_errors->push_back(w.error());
          return moved;
        }
        if (*w > 0) {
          moved = true;
          written_ += *w;
          pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(*w));
        }
        if (!pending_.empty()) return moved;
      }
      if (snapshot_every != 0 && consumed_ >= last_snap_ + snapshot_every) {
        (void)snapshot(e);
        moved = true;
      }
      uint8_t buf[4096];
      size_t n = e.conn_read(conn_, buf);
      if (n == 0) return moved;
      moved = true;
      for (size_t i = 0; i < n; ++i) {
        if (buf[i] != input_byte(consumed_)) {
          fail("app: input byte " + std::to_string(consumed_) + " differs");
          return moved;
        }
        uint8_t out = output_byte(buf[i]);
        // A non-deterministic instance: one output byte differs from what the stream had.
        if (written_ + pending_.size() == corrupt_at) out = static_cast<uint8_t>(out ^ 0xFF);
        pending_.push_back(out);
        ++consumed_;
      }
    }
    return moved;
  }

  // Snapshot at a consistent point (everything answered has been written).
  Status snapshot(ServerEngine& e) {
    if (!pending_.empty()) return Error::send_log_full;
    Bytes s(8);
    for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<uint8_t>(consumed_ >> (56 - 8 * i));
    Status st = e.conn_snapshot(conn_, std::move(s));
    if (st) last_snap_ = consumed_;
    return st;
  }

  uint64_t consumed() const { return consumed_; }
  uint64_t written() const { return written_; }
  size_t pending() const { return pending_.size(); }
  bool paused = false;
  Error last_error = Error::ok;
  uint64_t corrupt_at = UINT64_MAX;          // output position written wrong (tests of the replay check)
  std::vector<Error>* write_errors = nullptr;  // conn_write failures are recorded here

 private:
  bool fail(const std::string& why) {
    violations_->push_back("conn " + std::to_string(conn_) + ": " + why);
    return false;
  }
  ConnId conn_;
  std::vector<std::string>* violations_;
  uint64_t consumed_ = 0;
  uint64_t written_ = 0;
  uint64_t last_snap_ = 0;
  Bytes pending_;
};

// ---- the harness --------------------------------------------------------------------------

class Harness {
 public:
  static constexpr SubflowId kRawBase = 1'000'000;
  static constexpr size_t kBudget = 1u << 20;  // bytes one poll_transmit may return
  enum class Dir { c2s, s2c };

  explicit Harness(uint32_t servers = 3, const Limits& limits = Limits{}, uint64_t seed = 1)
      : limits_(limits), seed_rng_(seed) {
    seed_rng_.fill(key_);
    for (ServerId i = 1; i <= servers; ++i) pool_.push_back({i, "s" + std::to_string(i)});
    for (ServerId i = 1; i <= servers; ++i) {
      Node& n = servers_[i];
      n.rng = std::make_unique<sim::Prng>(seed_rng_.next());
      n.engine = std::make_unique<ServerEngine>(config(i), *n.rng);
    }
    client_rng_ = std::make_unique<sim::Prng>(seed_rng_.next());
    client_ = std::make_unique<ClientEngine>(limits_, *client_rng_);
  }

  // ---- access ----
  ClientEngine& client() { return *client_; }
  ServerEngine& server(ServerId s) { return *servers_.at(s).engine; }
  bool alive(ServerId s) const {
    auto it = servers_.find(s);
    return it != servers_.end() && it->second.engine != nullptr;
  }
  EchoApp* app(ServerId s, ConnId c) {
    auto& apps = servers_.at(s).apps;
    auto it = apps.find(c);
    return it == apps.end() ? nullptr : it->second.get();
  }
  ServerConfig config(ServerId s) const { return ServerConfig{s, pool_, key_, limits_}; }
  const cert::Key& key() const { return key_; }
  const Limits& limits() const { return limits_; }
  TimeMs now() const { return now_; }
  ConnId conn() const { return client_->conn_id(); }
  std::optional<ServerEngine::ConnInfo> info(ServerId s, ConnId c) const {
    const Node& n = servers_.at(s);
    if (!n.engine) return std::nullopt;
    return n.engine->conn_info(c);
  }
  // Members that own connection c right now (I4: at most one).
  std::vector<ServerId> owners(ConnId c) const {
    std::vector<ServerId> v;
    for (const auto& [id, n] : servers_) {
      if (!n.engine) continue;
      auto i = n.engine->conn_info(c);
      if (i && i->role == Role::owner) v.push_back(id);
    }
    return v;
  }
  uint64_t snapshot_every = 0;  // EchoApp snapshots after this many input bytes (0: by hand)
  std::set<ServerId> verify_replay;  // members whose apps call conn_verify_replay(on) at start
  std::map<ServerId, uint64_t> corrupt_imported_at;  // an imported app there writes this byte wrong
  std::vector<Error> write_errors;   // conn_write failures of any app

  // ---- driving ----
  void connect(ServerId s = 1) {
    client_->connect(s, now_);
    pump();
  }
  Status migrate(ServerId to) {
    Status st = client_->migrate(to, now_);
    pump();
    return st;
  }

  // Run every node and deliver every deliverable byte and message until nothing moves.
  void pump() {
    for (int round = 0; round < 100000; ++round) {
      bool moved = service_client();
      for (auto& [id, n] : servers_) moved |= service_server(id);
      moved |= deliver_pipes();
      moved |= deliver_control();
      if (!moved) return;
    }
    violations.push_back("pump did not settle");
  }

  TimeMs next_deadline() const {
    TimeMs t = client_->next_deadline();
    for (const auto& [id, n] : servers_) {
      if (n.engine) t = std::min(t, n.engine->next_deadline());
    }
    return t;
  }

  // Move time to t, firing every deadline on the way in order (pumping after each).
  void advance_to(TimeMs t) {
    pump();
    for (int guard = 0; guard < 100000; ++guard) {
      TimeMs d = next_deadline();
      if (d > t) break;
      now_ = std::max(now_, d);
      if (client_->next_deadline() <= now_) client_->on_timer(now_);
      for (auto& [id, n] : servers_) {
        if (n.engine && n.engine->next_deadline() <= now_) n.engine->on_timer(now_);
      }
      pump();
      if (guard == 99999) violations.push_back("advance_to: deadlines do not move");
    }
    now_ = std::max(now_, t);
    pump();
  }
  void advance(TimeMs dt) { advance_to(now_ + dt); }

  // Client application: write the next n input bytes (as many as fit); returns bytes taken.
  size_t write_input(size_t n) {
    Bytes b = input_bytes(written_, n);
    size_t k = client_->write_copy(b);
    written_ += k;
    return k;
  }
  // Client application: read everything readable and check it; returns bytes read.
  size_t read_all() {
    size_t total = 0;
    uint8_t buf[4096];
    while (size_t n = client_->read(buf)) {
      for (size_t i = 0; i < n; ++i) {
        if (received_ >= written_) {
          violations.push_back("client: output byte " + std::to_string(received_) + " before its input");
        } else if (buf[i] != output_byte(input_byte(received_))) {
          violations.push_back("client: output byte " + std::to_string(received_) + " differs");
        }
        ++received_;
      }
      total += n;
    }
    return total;
  }
  uint64_t written() const { return written_; }
  uint64_t received() const { return received_; }

  // ---- faults ----
  void hold_pipe(SubflowId sub, Dir d) { (d == Dir::c2s ? pipes_.at(sub).hold_c2s : pipes_.at(sub).hold_s2c) = true; }
  void release_pipe(SubflowId sub, Dir d) { (d == Dir::c2s ? pipes_.at(sub).hold_c2s : pipes_.at(sub).hold_s2c) = false; }
  bool has_pipe(SubflowId sub) const { return pipes_.contains(sub); }

  // The server process dies: its engine and apps are gone, its subflows are reset, messages
  // to and from it are lost.
  void crash(ServerId s) {
    Node& n = servers_.at(s);
    n.engine.reset();
    n.apps.clear();
    for (auto& [id, p] : pipes_) {
      if (p.server != s) continue;
      p.server_open = false;
      p.c2s.clear();
      p.s2c.clear();
      if (p.client_open) p.s2c.push_back({Slice{}, true});
    }
    std::erase_if(ctl_, [&](const Msg& m) { return m.from == s || m.to == s; });
    for (auto& [pair, q] : held_) {
      if (pair.first == s || pair.second == s) q.clear();
    }
  }

  // The subflow breaks: bytes in flight are lost, both ends learn of it now.
  void cut(SubflowId sub) {
    Pipe& p = pipes_.at(sub);
    p.c2s.clear();
    p.s2c.clear();
    if (p.server_open) {
      p.server_open = false;
      if (alive(p.server)) server(p.server).on_subflow_closed(sub, now_);
    }
    if (p.client_open) {
      p.client_open = false;
      if (p.raw) p.raw_closed = true;
      else client_->on_subflow_closed(sub, now_);
    }
  }

  // ---- control network ----
  void hold_control(ServerId from, ServerId to) { hold_.insert({from, to}); }
  void hold_all_control() {
    for (const auto& a : pool_) {
      for (const auto& b : pool_) {
        if (a.server_id != b.server_id) hold_.insert({a.server_id, b.server_id});
      }
    }
  }
  // Held messages of the pair go out (in order) at the next pump; the pair is no longer held.
  void release_control(ServerId from, ServerId to) {
    hold_.erase({from, to});
    auto& q = held_[{from, to}];
    for (auto& m : q) ctl_.push_back(std::move(m));
    q.clear();
  }
  void release_all_control() {
    auto pairs = hold_;
    for (const auto& [from, to] : pairs) release_control(from, to);
  }
  void drop_held_control(ServerId from, ServerId to) { held_[{from, to}].clear(); }
  size_t held_control(ServerId from, ServerId to) const {
    auto it = held_.find({from, to});
    return it == held_.end() ? 0 : it->second.size();
  }

  // ---- raw subflows ----
  SubflowId open_raw(ServerId s) {
    SubflowId id = next_raw_++;
    Pipe& p = pipes_[id];
    p.server = s;
    p.raw = true;
    p.raw_dec = wire::FrameDecoder(kFramePayloadBytesMax);
    if (alive(s)) {
      server(s).on_subflow_open(id, now_);
    } else {
      p.server_open = false;
      p.s2c.push_back({Slice{}, true});
    }
    return id;
  }
  // Hands the bytes to the server engine at once (its actions wait for the next pump, or for
  // the test to take them).
  void raw_send(SubflowId id, std::span<const uint8_t> bytes) {
    Pipe& p = pipes_.at(id);
    if (!p.client_open) return;
    p.c2s.push_back({Slice::copy_of(bytes), false});
    deliver_c2s(id, p);
  }
  void raw_send(SubflowId id, const wire::Frame& f) { raw_send(id, encode_frame(f)); }
  // Frames the server has sent on this subflow since the last call.
  std::vector<wire::Frame> raw_take(SubflowId id) {
    Pipe& p = pipes_.at(id);
    transmit_server_pipe(id, p);
    deliver_s2c(id, p);
    return std::exchange(p.raw_frames, {});
  }
  bool raw_closed(SubflowId id) const { return pipes_.at(id).raw_closed; }
  // The raw peer closes its end.
  void raw_close(SubflowId id) {
    Pipe& p = pipes_.at(id);
    if (!p.client_open) return;
    p.client_open = false;
    p.s2c.clear();
    if (p.server_open) p.c2s.push_back({Slice{}, true});
  }
  // Preface + HELLO(fresh); returns the WELCOME.
  std::optional<wire::Welcome> raw_hello_fresh(SubflowId id) {
    raw_send(id, preface_and(wire::Hello{wire::kVersion, wire::HelloKind::fresh, 0}));
    for (auto& f : raw_take(id)) {
      if (auto* w = std::get_if<wire::Welcome>(&f)) return *w;
    }
    return std::nullopt;
  }
  // Preface + HELLO(migrate, conn); returns the CHALLENGE.
  std::optional<wire::ChallengeFrame> raw_hello_migrate(SubflowId id, ConnId c) {
    raw_send(id, preface_and(wire::Hello{wire::kVersion, wire::HelloKind::migrate, c}));
    for (auto& f : raw_take(id)) {
      if (auto* ch = std::get_if<wire::ChallengeFrame>(&f)) return *ch;
    }
    return std::nullopt;
  }

  // Carry out actions a test took from a server engine itself.
  void perform(ServerId s, std::vector<ServerAction> actions) {
    for (auto& a : actions) {
      switch (a.kind) {
        case ServerAction::Kind::send_control: {
          ControlRecord r{s, a.peer, wire::ControlType::claim};
          if (auto m = wire::decode_control(key_, a.bytes)) r.type = wire::type_of(m->body);
          else violations.push_back("S" + std::to_string(s) + " sent an undecodable control message");
          control_log.push_back(r);
          if (!alive(a.peer)) break;
          Msg msg{s, a.peer, std::move(a.bytes)};
          if (hold_.contains({s, a.peer})) held_[{s, a.peer}].push_back(std::move(msg));
          else ctl_.push_back(std::move(msg));
          break;
        }
        case ServerAction::Kind::close_subflow: {
          auto it = pipes_.find(a.subflow);
          if (it == pipes_.end() || !it->second.server_open || !alive(s)) break;
          Pipe& p = it->second;
          // What the engine still queued (REFUSE, RESET) goes out before the FIN.
          std::vector<Slice> out;
          while (server(s).poll_transmit(a.subflow, kBudget, out) > 0) {}
          if (p.client_open) {
            for (auto& sl : out) p.s2c.push_back({std::move(sl), false});
            p.s2c.push_back({Slice{}, true});
          }
          p.server_open = false;
          p.c2s.clear();
          server(s).on_subflow_closed(a.subflow, now_);
          break;
        }
        case ServerAction::Kind::plain_tcp: {
          plain_tcp.push_back({s, a.subflow, std::move(a.bytes)});
          if (auto it = pipes_.find(a.subflow); it != pipes_.end()) it->second.server_open = false;
          break;
        }
      }
    }
  }

  // ---- logs ----
  struct ControlRecord {
    ServerId from = 0;
    ServerId to = 0;
    wire::ControlType type = wire::ControlType::claim;
  };
  struct PlainRecord {
    ServerId server = 0;
    SubflowId subflow = 0;
    Bytes head;
  };
  std::vector<ClientAction> client_actions;
  std::vector<ClientEvent> client_events;
  std::map<ServerId, std::vector<ServerEvent>> server_events;
  std::vector<ControlRecord> control_log;
  std::vector<PlainRecord> plain_tcp;
  std::vector<std::string> violations;

  size_t count(ClientEvent::Kind k) const {
    return static_cast<size_t>(std::count_if(client_events.begin(), client_events.end(), [&](const auto& e) { return e.kind == k; }));
  }
  size_t count(ServerId s, ServerEvent::Kind k) const {
    auto it = server_events.find(s);
    if (it == server_events.end()) return 0;
    return static_cast<size_t>(std::count_if(it->second.begin(), it->second.end(), [&](const auto& e) { return e.kind == k; }));
  }
  size_t count_control(ServerId from, wire::ControlType t) const {
    return static_cast<size_t>(
        std::count_if(control_log.begin(), control_log.end(), [&](const auto& r) { return r.from == from && r.type == t; }));
  }
  std::optional<ClientEvent> last(ClientEvent::Kind k) const {
    for (auto it = client_events.rbegin(); it != client_events.rend(); ++it) {
      if (it->kind == k) return *it;
    }
    return std::nullopt;
  }

 private:
  struct Item {
    Slice bytes;
    bool fin = false;
  };
  struct Pipe {
    ServerId server = 0;
    bool raw = false;
    bool client_open = true;
    bool server_open = true;
    bool hold_c2s = false;
    bool hold_s2c = false;
    std::deque<Item> c2s, s2c;
    SliceQueue raw_in;
    wire::FrameDecoder raw_dec;
    std::vector<wire::Frame> raw_frames;
    bool raw_closed = false;
  };
  struct Msg {
    ServerId from = 0;
    ServerId to = 0;
    Bytes bytes;
  };
  struct Node {
    std::unique_ptr<sim::Prng> rng;
    std::unique_ptr<ServerEngine> engine;
    std::map<ConnId, std::unique_ptr<EchoApp>> apps;
  };

  bool service_client() {
    bool moved = false;
    for (auto& a : client_->take_actions()) {
      moved = true;
      client_actions.push_back(a);
      if (a.kind == ClientAction::Kind::open_subflow) {
        Pipe& p = pipes_[a.subflow];
        p.server = a.server;
        if (alive(a.server)) {
          server(a.server).on_subflow_open(a.subflow, now_);
        } else {  // connection refused
          p.server_open = false;
          p.s2c.push_back({Slice{}, true});
        }
      } else {
        auto it = pipes_.find(a.subflow);
        if (it == pipes_.end() || !it->second.client_open) continue;
        Pipe& p = it->second;
        p.client_open = false;
        p.s2c.clear();
        if (p.server_open) p.c2s.push_back({Slice{}, true});
      }
    }
    for (auto& e : client_->take_events()) {
      moved = true;
      client_events.push_back(e);
    }
    for (auto& [id, p] : pipes_) {
      if (p.raw || !p.client_open) continue;
      for (int guard = 0; guard < 1000 && client_->wants_transmit(id); ++guard) {
        std::vector<Slice> out;
        if (client_->poll_transmit(id, kBudget, out) == 0) break;
        moved = true;
        if (p.server_open) {
          for (auto& s : out) p.c2s.push_back({std::move(s), false});
        }
      }
    }
    return moved;
  }

  bool service_server(ServerId s) {
    Node& n = servers_.at(s);
    if (!n.engine) return false;
    ServerEngine& eng = *n.engine;
    bool moved = false;
    auto actions = eng.take_actions();
    if (!actions.empty()) moved = true;
    perform(s, std::move(actions));
    for (auto& e : eng.take_events()) {
      moved = true;
      server_events[s].push_back(e);
      switch (e.kind) {
        case ServerEvent::Kind::opened:
        case ServerEvent::Kind::imported: {
          auto app = std::make_unique<EchoApp>(e.conn, &violations);
          app->import(eng);
          app->write_errors = &write_errors;
          if (verify_replay.contains(s)) (void)eng.conn_verify_replay(e.conn, true);
          if (auto c = corrupt_imported_at.find(s); c != corrupt_imported_at.end() && e.kind == ServerEvent::Kind::imported)
            app->corrupt_at = c->second;
          n.apps[e.conn] = std::move(app);
          break;
        }
        case ServerEvent::Kind::resumed:
          if (!n.apps.contains(e.conn))
            violations.push_back("S" + std::to_string(s) + " resumed conn " + std::to_string(e.conn) + " without an app instance");
          break;
        case ServerEvent::Kind::fenced:
        case ServerEvent::Kind::closed:
          n.apps.erase(e.conn);
          break;
      }
    }
    for (auto& [c, app] : n.apps) moved |= app->step(eng, snapshot_every);
    for (auto& [id, p] : pipes_) {
      if (p.server == s) moved |= transmit_server_pipe(id, p);
    }
    return moved;
  }

  bool transmit_server_pipe(SubflowId id, Pipe& p) {
    if (!p.server_open || !alive(p.server)) return false;
    ServerEngine& eng = server(p.server);
    bool moved = false;
    for (int guard = 0; guard < 1000 && eng.wants_transmit(id); ++guard) {
      std::vector<Slice> out;
      if (eng.poll_transmit(id, kBudget, out) == 0) break;
      moved = true;
      if (p.client_open) {
        for (auto& s : out) p.s2c.push_back({std::move(s), false});
      }
    }
    return moved;
  }

  bool deliver_pipes() {
    bool moved = false;
    for (auto& [id, p] : pipes_) {
      moved |= deliver_c2s(id, p);
      moved |= deliver_s2c(id, p);
    }
    return moved;
  }

  bool deliver_c2s(SubflowId id, Pipe& p) {
    bool moved = false;
    while (!p.c2s.empty() && !p.hold_c2s) {
      if (!p.server_open || !alive(p.server)) {
        p.c2s.clear();
        break;
      }
      ServerEngine& eng = server(p.server);
      if (p.c2s.front().fin) {
        p.c2s.pop_front();
        p.server_open = false;
        eng.on_subflow_closed(id, now_);
        return true;
      }
      if (!eng.wants_read(id)) break;
      Slice s = std::move(p.c2s.front().bytes);
      p.c2s.pop_front();
      eng.on_subflow_data(id, std::move(s), now_);
      moved = true;
    }
    return moved;
  }

  bool deliver_s2c(SubflowId id, Pipe& p) {
    bool moved = false;
    while (!p.s2c.empty() && !p.hold_s2c && p.client_open) {
      Item& it = p.s2c.front();
      if (p.raw) {
        if (it.fin) {
          p.client_open = false;
          p.raw_closed = true;
          p.s2c.clear();
          return true;
        }
        p.raw_in.push(std::move(it.bytes));
        p.s2c.pop_front();
        moved = true;
        while (true) {
          auto f = p.raw_dec.next(p.raw_in);
          if (!f) {
            violations.push_back("raw subflow " + std::to_string(id) + ": undecodable bytes from the server");
            p.raw_in.clear();
            break;
          }
          if (!f.value()) break;
          p.raw_frames.push_back(std::move(*f.value()));
        }
        continue;
      }
      if (it.fin) {
        p.s2c.clear();
        p.client_open = false;
        client_->on_subflow_closed(id, now_);
        return true;
      }
      if (!client_->wants_read(id)) break;
      Slice s = std::move(it.bytes);
      p.s2c.pop_front();
      client_->on_subflow_data(id, std::move(s), now_);
      moved = true;
    }
    return moved;
  }

  bool deliver_control() {
    if (ctl_.empty()) return false;
    auto batch = std::exchange(ctl_, {});
    for (auto& m : batch) {
      if (alive(m.to)) server(m.to).on_control(m.from, m.bytes, now_);
    }
    return true;
  }

  Limits limits_;
  sim::Prng seed_rng_;
  cert::Key key_{};
  std::vector<wire::Alternate> pool_;
  std::map<ServerId, Node> servers_;
  std::unique_ptr<sim::Prng> client_rng_;
  std::unique_ptr<ClientEngine> client_;
  std::map<SubflowId, Pipe> pipes_;
  SubflowId next_raw_ = kRawBase;
  std::deque<Msg> ctl_;
  std::set<std::pair<ServerId, ServerId>> hold_;
  std::map<std::pair<ServerId, ServerId>, std::deque<Msg>> held_;
  TimeMs now_ = 0;
  uint64_t written_ = 0;
  uint64_t received_ = 0;
};

}  // namespace mtcp::test
