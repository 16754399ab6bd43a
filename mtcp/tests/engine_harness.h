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
// Each server's engine and apps are driven by a host::EngineHost (the loop the runtime and the
// simulator use), through the harness Transport below: an app runs only when its host
// dispatches it (what the engine reported as touched, or a wake), never every round.
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
#include "host/engine_host.h"
#include "sdk/app.h"
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

// A raw client's fixed X25519 key pair: tests that speak the protocol by hand send
// fresh_hello() and read WELCOME through unwrap_welcome() (docs/PROTOCOL.md §6.2).
inline cert::PrivateKey raw_client_priv() {
  cert::PrivateKey k{};
  k.fill(0x33);
  return k;
}
inline cert::PublicKey raw_client_pub() { return cert::x25519_public(raw_client_priv()); }
inline wire::Hello fresh_hello() { return wire::Hello{wire::kVersion, wire::HelloKind::fresh, 0, raw_client_pub()}; }
// WELCOME as the raw client understands it: the secret unwrapped.
inline wire::Welcome unwrap_welcome(wire::Welcome w) {
  auto shared = cert::x25519_shared(raw_client_priv(), w.key_share);
  if (!shared) return w;
  w.secret = cert::wrap_welcome_secret(w.secret, *shared, raw_client_pub(), w.key_share, w.cert);
  return w;
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

class EchoApp;

// What the apps of one server share with the harness.
struct AppEnv {
  ServerId server = 0;
  std::vector<std::string>* violations = nullptr;
  std::vector<Error>* write_errors = nullptr;     // conn_write failures are recorded here
  const uint64_t* snapshot_every = nullptr;       // see Harness::snapshot_every
  const std::map<ServerId, uint64_t>* corrupt_imported_at = nullptr;
  std::map<ConnId, EchoApp*>* apps = nullptr;     // the live instances (Harness::app)
};

// An sdk::ConnApp driven by the server's host::EngineHost: it reads, answers and snapshots
// whenever the host tells it something changed (readable, writable, acked, woken).
class EchoApp final : public sdk::ConnApp {
 public:
  EchoApp(ConnId conn, const AppEnv* env) : conn_id_(conn), env_(env) {
    (*env_->apps)[conn_id_] = this;
    write_errors = env_->write_errors;
  }
  ~EchoApp() override {
    auto it = env_->apps->find(conn_id_);
    if (it != env_->apps->end() && it->second == this) env_->apps->erase(it);
  }
  EchoApp(const EchoApp&) = delete;
  EchoApp& operator=(const EchoApp&) = delete;

  // Start from the engine's snapshot (fresh if there is none).
  bool on_open(sdk::Conn& c, const sdk::Import& imp, std::string& why) override {
    conn_ = &c;
    consumed_ = written_ = 0;
    if (imp.snap_id != 0) {
      if (imp.snapshot.size() != 8) return refuse("import: snapshot is not 8 bytes", why);
      uint64_t count = 0;
      for (uint8_t b : imp.snapshot) count = (count << 8) | b;
      if (count != imp.snap_in || count != imp.snap_out) return refuse("import: snapshot positions disagree", why);
      consumed_ = written_ = count;
    }
    last_snap_ = consumed_;
    pending_.clear();
    if (imp.migrated) {
      if (auto it = env_->corrupt_imported_at->find(env_->server); it != env_->corrupt_imported_at->end())
        corrupt_at = it->second;
    }
    return true;
  }
  void on_readable(sdk::Conn&) override { step(); }
  void on_writable(sdk::Conn&) override { step(); }
  void on_output_acked(sdk::Conn&, uint64_t) override { step(); }
  void on_wake(sdk::Conn&) override { step(); }

  // Read, answer and (every snapshot_every bytes) snapshot as far as the engine lets us.
  bool step() {
    if (paused || conn_ == nullptr) return false;
    const uint64_t snapshot_every = *env_->snapshot_every;
    bool moved = false;
    for (int round = 0; round < 256; ++round) {
      if (!pending_.empty()) {
        auto w = conn_->write_copy(pending_);
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
        (void)snapshot();
        moved = true;
      }
      uint8_t buf[4096];
      size_t n = conn_->read(buf);
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
  Status snapshot() {
    if (!pending_.empty()) return Error::send_log_full;
    Bytes s(8);
    for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<uint8_t>(consumed_ >> (56 - 8 * i));
    Status st = conn_->snapshot(std::move(s));
    if (st) last_snap_ = consumed_;
    return st;
  }
  // The tests' form: the engine is the one this app's connection lives on (the call goes
  // through the app's sdk::Conn handle).
  Status snapshot(ServerEngine& e) {
    (void)e;
    return snapshot();
  }

  uint64_t consumed() const { return consumed_; }
  uint64_t written() const { return written_; }
  size_t pending() const { return pending_.size(); }
  sdk::Conn* conn() const { return conn_; }
  bool paused = false;  // no reads or writes; after unpausing, conn()->wake() (or new input)
  Error last_error = Error::ok;
  uint64_t corrupt_at = UINT64_MAX;          // output position written wrong (tests of the replay check)
  std::vector<Error>* write_errors = nullptr;  // conn_write failures are recorded here

 private:
  bool fail(const std::string& why) {
    env_->violations->push_back("conn " + std::to_string(conn_id_) + ": " + why);
    return false;
  }
  bool refuse(const std::string& what, std::string& why) {
    why = what;
    return fail(what);
  }
  ConnId conn_id_;
  const AppEnv* env_;
  sdk::Conn* conn_ = nullptr;
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
      start_host(i, n);
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
    return it == apps.end() ? nullptr : it->second;
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
  std::set<ServerId> verify_replay;  // members whose app factory asks for replay verification
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
  void release_pipe(SubflowId sub, Dir d) {
    Pipe& p = pipes_.at(sub);
    (d == Dir::c2s ? p.hold_c2s : p.hold_s2c) = false;
    // Bytes may move on this subflow again: the host looks at it in its next pass.
    if (alive(p.server)) servers_.at(p.server).host->mark_subflow(sub);
  }
  bool has_pipe(SubflowId sub) const { return pipes_.contains(sub); }

  // The server process dies: its engine and apps are gone, its subflows are reset, messages
  // to and from it are lost.
  void crash(ServerId s) {
    Node& n = servers_.at(s);
    n.host.reset();  // drops the app instances (they unregister from n.apps), then the engine
    n.engine.reset();
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
  // The held messages of the pair but the newest `keep` go out at the next pump; the pair
  // stays held (messages that always arrive one exchange late).
  void release_control_but_newest(ServerId from, ServerId to, size_t keep) {
    auto& q = held_[{from, to}];
    while (q.size() > keep) {
      ctl_.push_back(std::move(q.front()));
      q.pop_front();
    }
  }
  void drop_held_control(ServerId from, ServerId to) { held_[{from, to}].clear(); }
  // Drops the held messages of the pair but the newest `keep`.
  void drop_held_control_but_newest(ServerId from, ServerId to, size_t keep) {
    auto& q = held_[{from, to}];
    while (q.size() > keep) q.pop_front();
  }
  // A control message as member `from` would send it (signed with the pool key), queued for
  // `to` like any other (held if that pair is held).
  void inject_control(ServerId from, ServerId to, wire::ControlBody body) {
    auto bytes = wire::encode_control(key_, wire::ControlMessage{from, to, std::move(body)});
    if (!bytes) {
      violations.push_back("inject_control: message not encodable");
      return;
    }
    send_control(from, to, std::move(bytes.value()));
  }
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
  // Preface + HELLO(fresh); returns the WELCOME with its secret unwrapped (the frame as it
  // crossed the wire stays in last_wire_welcome, for a passive observer).
  std::optional<wire::Welcome> raw_hello_fresh(SubflowId id) {
    raw_send(id, preface_and(fresh_hello()));
    for (auto& f : raw_take(id)) {
      if (auto* w = std::get_if<wire::Welcome>(&f)) {
        last_wire_welcome = *w;
        return unwrap_welcome(*w);
      }
    }
    return std::nullopt;
  }
  std::optional<wire::Welcome> last_wire_welcome;
  // Preface + HELLO(migrate, conn); returns the CHALLENGE.
  std::optional<wire::ChallengeFrame> raw_hello_migrate(SubflowId id, ConnId c) {
    raw_send(id, preface_and(wire::Hello{wire::kVersion, wire::HelloKind::migrate, c, {}}));
    for (auto& f : raw_take(id)) {
      if (auto* ch = std::get_if<wire::ChallengeFrame>(&f)) return *ch;
    }
    return std::nullopt;
  }

  // Carry out actions a test took from a server engine itself (the host does the same with
  // the actions it takes, through the node's Transport).
  void perform(ServerId s, std::vector<ServerAction> actions) {
    for (auto& a : actions) {
      switch (a.kind) {
        case ServerAction::Kind::send_control: send_control(s, a.peer, std::move(a.bytes)); break;
        case ServerAction::Kind::close_subflow: close_subflow(s, a.subflow); break;
        case ServerAction::Kind::plain_tcp: plain_tcp_handoff(s, a.subflow, std::move(a.bytes)); break;
      }
    }
  }

  // ---- logs ----
  struct ControlRecord {
    ServerId from = 0;
    ServerId to = 0;
    wire::ControlType type = wire::ControlType::claim;
    size_t bytes = 0;  // the whole message as sent
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
  // A server's side of the harness, as its host sees it.
  class NodeTransport final : public host::Transport {
   public:
    NodeTransport(Harness& h, ServerId s) : h_(h), s_(s) {}
    void send_control(ServerId to, Bytes msg) override { h_.send_control(s_, to, std::move(msg)); }
    void close_subflow(SubflowId sub) override { h_.close_subflow(s_, sub); }
    void plain_tcp(SubflowId sub, Bytes head) override { h_.plain_tcp_handoff(s_, sub, std::move(head)); }
    bool subflow_ready(SubflowId sub) override {
      auto it = h_.pipes_.find(sub);
      return it != h_.pipes_.end() && it->second.server == s_ && h_.transmit_server_pipe(sub, it->second);
    }
    std::vector<SubflowId> subflows() const override {
      std::vector<SubflowId> v;
      for (const auto& [id, p] : h_.pipes_) {
        if (p.server == s_) v.push_back(id);
      }
      return v;
    }
    void post_service() override {}  // every pump services every host
    void saw_event(const ServerEvent& e) override { h_.record_event(s_, e); }

   private:
    Harness& h_;
    ServerId s_;
  };
  class NodeFactory final : public sdk::AppFactory {
   public:
    NodeFactory(Harness& h, const AppEnv& env) : h_(h), env_(env) {}
    std::unique_ptr<sdk::ConnApp> make(ConnId conn) override { return std::make_unique<EchoApp>(conn, &env_); }
    bool verify_replay() const override { return h_.verify_replay.contains(env_.server); }

   private:
    Harness& h_;
    const AppEnv& env_;
  };
  // Destroyed bottom up: the host (and its apps) first, then what they use.
  struct Node {
    std::unique_ptr<sim::Prng> rng;
    std::unique_ptr<ServerEngine> engine;
    std::map<ConnId, EchoApp*> apps;  // owned by the host
    AppEnv env;
    std::unique_ptr<NodeFactory> factory;
    std::unique_ptr<NodeTransport> transport;
    std::unique_ptr<host::EngineHost> host;
    uint64_t host_violations_seen = 0;
    std::string host_last_log;
  };

  void start_host(ServerId s, Node& n) {
    n.env = AppEnv{s, &violations, &write_errors, &snapshot_every, &corrupt_imported_at, &n.apps};
    n.factory = std::make_unique<NodeFactory>(*this, n.env);
    n.transport = std::make_unique<NodeTransport>(*this, s);
    n.host = std::make_unique<host::EngineHost>(*n.engine, *n.factory, *n.transport,
                                                [&n](const std::string& line) { n.host_last_log = line; });
  }

  void record_event(ServerId s, const ServerEvent& e) {
    server_events[s].push_back(e);
    if (e.kind == ServerEvent::Kind::resumed && !servers_.at(s).apps.contains(e.conn))
      violations.push_back("S" + std::to_string(s) + " resumed conn " + std::to_string(e.conn) + " without an app instance");
  }

  void send_control(ServerId s, ServerId to, Bytes bytes) {
    ControlRecord r{s, to, wire::ControlType::claim, bytes.size()};
    if (auto m = wire::decode_control(key_, bytes)) r.type = wire::type_of(m->body);
    else violations.push_back("S" + std::to_string(s) + " sent an undecodable control message");
    control_log.push_back(r);
    if (!alive(to)) return;
    Msg msg{s, to, std::move(bytes)};
    if (hold_.contains({s, to})) held_[{s, to}].push_back(std::move(msg));
    else ctl_.push_back(std::move(msg));
  }

  void close_subflow(ServerId s, SubflowId sub) {
    auto it = pipes_.find(sub);
    if (it == pipes_.end() || !it->second.server_open || !alive(s)) return;
    Pipe& p = it->second;
    // What the engine still queued (REFUSE, RESET) goes out before the FIN.
    std::vector<Slice> out;
    while (server(s).poll_transmit(sub, kBudget, out) > 0) {}
    if (p.client_open) {
      for (auto& sl : out) p.s2c.push_back({std::move(sl), false});
      p.s2c.push_back({Slice{}, true});
    }
    p.server_open = false;
    p.c2s.clear();
    server(s).on_subflow_closed(sub, now_);
  }

  void plain_tcp_handoff(ServerId s, SubflowId sub, Bytes head) {
    plain_tcp.push_back({s, sub, std::move(head)});
    if (auto it = pipes_.find(sub); it != pipes_.end()) it->second.server_open = false;
  }

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

  // The host does one round: actions, events, the apps and subflows that changed.
  bool service_server(ServerId s) {
    Node& n = servers_.at(s);
    if (!n.engine) return false;
    bool moved = n.host->service(1);
    // The host refused an import or an app reported a violation of its own.
    if (n.host->violations() > n.host_violations_seen) {
      n.host_violations_seen = n.host->violations();
      violations.push_back("S" + std::to_string(s) + " host: " + n.host_last_log);
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
