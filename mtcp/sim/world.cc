#include "sim/world.h"

#include <algorithm>
#include <cassert>
#include <sstream>

#include <nlohmann/json.hpp>

#include "host/engine_host.h"
#include "services/builtin.h"
#include "sim/nondet_app.h"
#include "wire/control.h"
#include "wire/frame.h"

namespace mtcp::sim {

using core::ClientAction;
using core::ClientEngine;
using core::ClientEvent;
using core::ServerAction;
using core::ServerEngine;
using core::ServerEvent;
using core::ServerId;
using core::SubflowId;
using core::TimeMs;

namespace {

constexpr size_t kWindowBytes = 96u << 10;   // bytes in flight per subflow direction
constexpr TimeMs kSimLimitMs = 600'000;      // a seed that has not finished by then is stuck
constexpr uint64_t kStepLimit = 20'000'000;  // events + services: guards against a livelock

template <typename T>
T pick(Prng& r, std::initializer_list<T> xs) {
  return *(xs.begin() + static_cast<std::ptrdiff_t>(r.range(0, xs.size() - 1)));
}

}  // namespace

namespace {
Scenario draw_scenario(Prng& r);
std::span<const uint8_t> scenario_tape(std::span<const uint8_t> t) { return t.first(std::min(t.size(), kScenarioTapeBytes)); }
std::span<const uint8_t> world_tape(std::span<const uint8_t> t) { return t.subspan(std::min(t.size(), kScenarioTapeBytes)); }
}  // namespace

Scenario make_scenario(uint64_t seed) {
  Prng r(seed * 0x9E3779B97F4A7C15ull + 17);
  return draw_scenario(r);
}

Scenario make_scenario(uint64_t seed, std::span<const uint8_t> tape) {
  if (tape.empty()) return make_scenario(seed);
  Prng r(seed * 0x9E3779B97F4A7C15ull + 17, scenario_tape(tape));
  return draw_scenario(r);
}

namespace {
Scenario draw_scenario(Prng& r) {
  Scenario s;
  s.servers = static_cast<uint32_t>(pick<uint64_t>(r, {3, 3, 3, 4, 5}));
  uint64_t m = r.range(0, 9);
  s.mode = m < 4 ? TransferMode::lazy : TransferMode::eager;
  s.ack_after_replication = m >= 7;
  s.seg_max = static_cast<uint32_t>(pick<uint64_t>(r, {29, 1460, 1460, 16384, 65536}));
  bool tiny = s.seg_max < 512;
  s.input_bytes = tiny ? r.range(1000, 12000) : r.range(4000, 160000);
  s.app.stream_seed = r.next();
  s.app.response_max = static_cast<uint32_t>(tiny ? pick<uint64_t>(r, {0, 32}) : pick<uint64_t>(r, {0, 32, 256, 2048}));
  s.app.snapshot_every = r.range(256, 32768);
  s.app.pad_bytes = static_cast<uint32_t>(pick<uint64_t>(r, {0, 1, 100, 4068, 4069, 30000}));
  s.seg_delay_max_ms = static_cast<uint32_t>(r.range(0, 4));
  s.ctl_delay_max_ms = static_cast<uint32_t>(r.range(0, 8));
  s.ctl_loss = r.chance(0.3) ? static_cast<double>(r.range(1, 5)) / 100.0 : 0.0;
  s.random_migrations = static_cast<uint32_t>(r.range(0, 10));
  s.pingpong = r.chance(0.25) ? static_cast<uint32_t>(r.range(20, 120)) : 0;
  s.cuts = static_cast<uint32_t>(r.range(0, 4));
  s.partitions = static_cast<uint32_t>(r.range(0, 2));
  s.ctl_spikes = r.chance(0.3) ? static_cast<uint32_t>(r.range(1, 2)) : 0;
  if (r.chance(0.35)) {
    s.crash = pick<Scenario::Crash>(r, {Scenario::Crash::at_time, Scenario::Crash::on_claim, Scenario::Crash::after_grant});
  }
  s.forged = static_cast<uint32_t>(r.range(0, 2));
  s.claim_timeout_ms = r.range(50, 400);
  s.migrate_timeout_ms = r.range(300, 2000);
  uint64_t svc = r.range(0, 9);
  s.service = svc < 6 ? Scenario::Service::ref : svc < 8 ? Scenario::Service::echo : Scenario::Service::source;
  if (s.service == Scenario::Service::source) {
    s.output_bytes = s.input_bytes;
    s.input_bytes = 0;
  }
  s.end_migration = r.chance(0.3);  // drawn last: the fields above stay what they were per seed
  // Drawn after everything else, for the same reason.
  s.stalls = r.chance(0.3) ? static_cast<uint32_t>(r.range(1, 2)) : 0;
  s.oneway_cuts = r.chance(0.3) ? static_cast<uint32_t>(r.range(1, 2)) : 0;
  s.repl_window_bytes = pick<uint64_t>(r, {0, 0, 256, 4096});
  return s;
}
}  // namespace

namespace {

struct Seg {
  TimeMs at = 0;
  Slice bytes;
};
struct Dir {
  std::deque<Seg> q;      // in flight, in order
  std::deque<Slice> ready;  // arrived, not yet taken by the receiver
  size_t in_flight = 0;
  TimeMs last_at = 0;
};
struct Link {
  uint64_t id = 0;
  ServerId server = 0;
  SubflowId csub = 0;
  bool client_open = true;
  bool server_open = false;
  bool server_arrived = false;
  bool broken = false;  // cut: nothing crosses any more, in either direction
  uint32_t gen = 0;
  Dir c2s, s2c;
  // A forging attacker instead of the client.
  bool attacker = false;
  int attack_variant = 0;
  bool attack_sent = false;
  bool attack_done = false;
  SliceQueue attack_in;
  wire::FrameDecoder attack_dec;
};

enum class EvKind { seg_c2s, seg_s2c, open_arrive, close_client, close_server, control, crash_now };
struct Ev {
  EvKind kind;
  uint64_t link = 0;
  uint32_t gen = 0;
  ServerId from = 0, to = 0;
  Bytes msg;
};

enum class TrigKind { migrate, pingpong, cut_primary, cut_attempt, partition, spike, crash, forge, stall, oneway };
struct Trigger {
  uint64_t at_bytes = 0;
  TrigKind kind;
};

class World;
// The simulated links and control network, as the engine host's transport for one member.
struct SimTransport final : host::Transport {
  SimTransport(World& w, ServerId member) : world(w), id(member) {}
  void send_control(ServerId to, Bytes msg) override;
  void close_subflow(SubflowId sub) override;
  void plain_tcp(SubflowId sub, Bytes head) override;
  bool subflow_ready(SubflowId sub) override;
  std::vector<SubflowId> subflows() const override;
  void post_service() override {}  // the simulated apps never wake from another thread
  World& world;
  ServerId id;
};

struct ServerNode {
  ServerId id = 0;
  std::unique_ptr<Prng> rng;
  std::unique_ptr<ServerEngine> engine;
  std::unique_ptr<SimTransport> transport;
  std::unique_ptr<host::EngineHost> host;  // drives the engine and the production service
  // Everything the host absorbed since the last check_touched().
  ServerEngine::Touched touched_acc;
  std::string last_log;          // the host's last line (names a violation)
  uint64_t violations_seen = 0;  // the host's violation count already reported
  // What the engine last answered, to check take_touched(): untouched means unchanged.
  std::map<SubflowId, std::pair<bool, bool>> sub_seen;
  std::map<core::ConnId, std::tuple<size_t, size_t, bool>> conn_seen;
};

// What the client checks the output against, for the service the members run.
class ClientModel {
 public:
  explicit ClientModel(const Scenario& sc) : sc_(sc), ref_(sc.app) {}
  bool check(std::span<const uint8_t> got, uint64_t written, std::string& why) {
    if (sc_.service == Scenario::Service::ref) return ref_.check(got, written, why);
    for (uint8_t b : got) {
      bool echo = sc_.service == Scenario::Service::echo;
      if (echo && received_ >= written) {
        why = "I1 server->client: echo byte " + std::to_string(received_) + " arrived before it was sent";
        return false;
      }
      uint8_t want = echo ? svc::input_byte(sc_.app.stream_seed, received_) : svc::source_byte(sc_.app.stream_seed, received_);
      if (b != want) {
        why = "I1 server->client: byte " + std::to_string(received_) + " differs";
        return false;
      }
      ++received_;
    }
    return true;
  }
  uint64_t received() const { return sc_.service == Scenario::Service::ref ? ref_.received() : received_; }
  uint64_t total_for(uint64_t input_total) {
    switch (sc_.service) {
      case Scenario::Service::ref: return ref_.total_for(input_total);
      case Scenario::Service::echo: return input_total;
      case Scenario::Service::source: return sc_.output_bytes;
    }
    return 0;
  }

 private:
  const Scenario& sc_;
  svc::OutputModel ref_;
  uint64_t received_ = 0;
};

const char* service_name(Scenario::Service s) {
  switch (s) {
    case Scenario::Service::ref: return "ref";
    case Scenario::Service::echo: return "echo";
    case Scenario::Service::source: return "source";
  }
  return "?";
}

class World {
 public:
  World(uint64_t seed, int verbosity, std::string* log, const RunOptions& opt)
      : opt_(opt), sc_(make_scenario(seed, opt.tape)), rng_(seed, world_tape(opt.tape)), verbosity_(verbosity), log_(log), model_(sc_) {
    out_.seed = seed;
    out_.scenario = sc_;
    limits_.frame_payload_bytes_max = 16u << 10;
    limits_.send_log_bytes_max = 256u << 10;
    limits_.recv_buffer_bytes_max = 256u << 10;
    limits_.input_log_bytes_max = 256u << 10;
    limits_.snapshot_bytes_max = 64u << 10;
    limits_.claim_timeout_ms = sc_.claim_timeout_ms;
    // The same drawn wait for lazy claims (their default is longer): a slow owner then still
    // answers after the claim timed out in most seeds (the abandoned-claim paths stay covered).
    limits_.lazy_claim_timeout_ms = sc_.claim_timeout_ms;
    limits_.migrate_timeout_ms = sc_.migrate_timeout_ms;
    limits_.transfer_mode = sc_.mode;
    limits_.ack_after_replication = sc_.ack_after_replication;
    if (sc_.repl_window_bytes != 0) limits_.replication_window_bytes = sc_.repl_window_bytes;
    limits_.migrate_attempts_max = 12;
    std::vector<wire::Alternate> pool;
    for (ServerId i = 1; i <= sc_.servers; ++i) pool.push_back({i, "sim:" + std::to_string(i)});
    cert::Key& key = key_;
    rng_.fill(key);
    start_service();
    for (ServerId i = 1; i <= sc_.servers; ++i) {
      ServerNode n;
      n.id = i;
      n.rng = std::make_unique<Prng>(rng_.next());
      core::ServerConfig cfg{i, pool, key, limits_};
      n.engine = std::make_unique<ServerEngine>(cfg, *n.rng);
      n.transport = std::make_unique<SimTransport>(*this, i);
      auto [it, fresh] = servers_.emplace(i, std::move(n));
      ServerNode& node = it->second;
      node.host = std::make_unique<host::EngineHost>(*node.engine, *factory_, *node.transport, [this, &node](const std::string& line) {
        node.last_log = line;
        if (verbosity_ >= 2) say("  S" + std::to_string(node.id) + " " + line);
      });
      node.host->on_touched = [&node](const ServerEngine::Touched& t) {
        auto& acc = node.touched_acc;
        acc.all = acc.all || t.all;
        acc.subflows.insert(acc.subflows.end(), t.subflows.begin(), t.subflows.end());
        acc.conns.insert(acc.conns.end(), t.conns.begin(), t.conns.end());
      };
      (void)fresh;
    }
    client_rng_ = std::make_unique<Prng>(rng_.next());
    client_ = std::make_unique<ClientEngine>(limits_, *client_rng_);
    expected_out_ = model_.total_for(sc_.input_bytes);
    plan_triggers();
  }

  // The members run the production service through the registry, as mtcpd does.
  void start_service() {
    svc::register_builtin_services(registry_);
    sdk::ServiceDef* def = registry_.find(service_name(sc_.service));
    assert(def);
    nlohmann::json opts = {{"snapshot_every", sc_.app.snapshot_every}, {"state_bytes", sc_.app.pad_bytes}};
    if (sc_.service != Scenario::Service::echo) opts["seed"] = sc_.app.stream_seed;
    if (sc_.service == Scenario::Service::ref) opts["response_max"] = sc_.app.response_max;
    if (sc_.service == Scenario::Service::source) opts["source_bytes"] = sc_.output_bytes;
    std::string why;
    bool ok = def->configure_json(opts.dump(), why);
    sdk::ServiceEnv env{nullptr, [](const std::string&) {}};
    if (ok) factory_ = def->start(env, why);
    if (!ok || !factory_) {
      violation("service " + std::string(def->name()) + " did not start: " + why);
      factory_ = nullptr;
    }
    assert(factory_);
    if (opt_.nondeterministic) factory_ = std::make_unique<NondetFactory>(std::move(factory_));
  }

 public:
  // The transport side of the members (SimTransport forwards here).
  void sim_send_control(ServerId from, ServerId to, Bytes bytes) {
    wire::ControlType t = ctl_type(bytes);
    if (t == wire::ControlType::deny) note_deny(bytes);
    if (rng_.chance(sc_.ctl_loss) || partitioned(from, to) || now_ < muted_until(from)) return;
    TimeMs at = now_ + rng_.range(0, sc_.ctl_delay_max_ms);
    if (now_ < spike_until_) at += rng_.range(50, 1200);
    schedule(at, Ev{EvKind::control, 0, 0, from, to, std::move(bytes)});
    if (t == wire::ControlType::grant && crash_armed_ && sc_.crash == Scenario::Crash::after_grant) {
      crash_armed_ = false;
      say("S" + std::to_string(from) + " crashes right after sending a GRANT");
      schedule(now_, Ev{EvKind::crash_now, 0, 0, 0, from, {}});
    }
  }
  void sim_close_subflow(ServerId id, SubflowId sub) {
    auto it = links_.find(sub);
    if (it == links_.end()) return;
    Link& l = it->second;
    ServerEngine& eng = *servers_.at(id).engine;
    // Flush what the engine still queued (REFUSE, RESET), then close.
    std::vector<Slice> out;
    while (eng.poll_transmit(l.id, SIZE_MAX, out) > 0) {}
    if (!l.server_open) return;
    if (verbosity_ >= 2) say("  S" + std::to_string(id) + " closes subflow " + std::to_string(l.id));
    if (l.client_open) send_bytes(l, false, out);
    l.server_open = false;
    l.c2s = Dir{};
    eng.on_subflow_closed(l.id, now_);
    if (l.client_open) close_client_side(l, now_ + rng_.range(0, 3));
  }
  void sim_plain_tcp(SubflowId sub) { violation("subflow " + std::to_string(sub) + " treated as plain TCP"); }
  bool sim_subflow_ready(ServerId id, SubflowId sub) {
    auto it = links_.find(sub);
    if (it == links_.end() || !it->second.server_open) return false;
    Link& l = it->second;
    ServerEngine& eng = *servers_.at(id).engine;
    bool moved = false;
    while (eng.wants_transmit(l.id) && l.s2c.in_flight < kWindowBytes) {
      std::vector<Slice> out;
      size_t k = eng.poll_transmit(l.id, kWindowBytes - l.s2c.in_flight, out);
      if (k == 0) break;
      if (l.client_open) send_bytes(l, false, out);
      moved = true;
    }
    return moved;
  }
  std::vector<SubflowId> sim_subflows(ServerId id) const {
    std::vector<SubflowId> v;
    for (const auto& [lid, l] : links_) {
      if (l.server == id) v.push_back(lid);
    }
    return v;
  }

  Outcome run() {
    client_->connect(1, now_);
    uint64_t steps = 0;
    while (true) {
      service();
      if (finished()) break;
      TimeMs t = next_time();
      if (t == core::kNever) {
        violation("stuck: nothing scheduled and the transfer is not finished");
        break;
      }
      now_ = std::max(now_, t);
      if (now_ > kSimLimitMs) {
        violation("stuck: simulated time limit reached before the transfer finished");
        break;
      }
      while (!events_.empty() && events_.begin()->first.first <= now_) {
        auto node = events_.extract(events_.begin());
        handle(std::move(node.mapped()));
        if (++steps > kStepLimit) break;
      }
      if (client_->next_deadline() <= now_) client_->on_timer(now_);
      for (auto& [id, n] : servers_) {
        if (n.engine && !stalled(id) && n.engine->next_deadline() <= now_) n.engine->on_timer(now_);
      }
      for (auto& [id, n] : servers_) {
        if (n.engine) check_touched(n);
      }
      if (++steps > kStepLimit) {
        violation("runaway: step limit reached");
        break;
      }
    }
    finish();
    return out_;
  }

 private:
  // ---- scenario ----
  void plan_triggers() {
    // Faults fire at points of progress (input acknowledged + output received), spread over
    // the whole transfer in both directions.
    uint64_t total = sc_.input_bytes + expected_out_;
    auto at = [&] { return rng_.range(0, std::max<uint64_t>(1, total - 1)); };
    for (uint32_t i = 0; i < sc_.random_migrations; ++i) triggers_.push_back({at(), TrigKind::migrate});
    if (sc_.pingpong) triggers_.push_back({at(), TrigKind::pingpong});
    for (uint32_t i = 0; i < sc_.cuts; ++i) triggers_.push_back({at(), rng_.chance(0.5) ? TrigKind::cut_primary : TrigKind::cut_attempt});
    for (uint32_t i = 0; i < sc_.partitions; ++i) triggers_.push_back({at(), TrigKind::partition});
    for (uint32_t i = 0; i < sc_.ctl_spikes; ++i) triggers_.push_back({at(), TrigKind::spike});
    for (uint32_t i = 0; i < sc_.forged; ++i) triggers_.push_back({at(), TrigKind::forge});
    if (sc_.crash != Scenario::Crash::none) triggers_.push_back({at(), TrigKind::crash});
    for (uint32_t i = 0; i < sc_.stalls; ++i) triggers_.push_back({at(), TrigKind::stall});
    for (uint32_t i = 0; i < sc_.oneway_cuts; ++i) triggers_.push_back({at(), TrigKind::oneway});
    std::stable_sort(triggers_.begin(), triggers_.end(), [](auto& a, auto& b) { return a.at_bytes < b.at_bytes; });
  }

  void fire_triggers() {
    uint64_t progress = client_->send_log().base() + model_.received();
    while (next_trigger_ < triggers_.size() && triggers_[next_trigger_].at_bytes <= progress) {
      if (client_->state() != core::ClientState::established) return;
      Trigger t = triggers_[next_trigger_++];
      switch (t.kind) {
        case TrigKind::migrate:
          if (!client_->migrating()) start_migration(random_other(client_->server()));
          break;
        case TrigKind::pingpong:
          pp_left_ = sc_.pingpong;
          pp_a_ = client_->server();
          pp_b_ = random_other(pp_a_);
          say("ping-pong burst of " + std::to_string(pp_left_) + " between S" + std::to_string(pp_a_) + " and S" + std::to_string(pp_b_));
          break;
        case TrigKind::cut_primary:
        case TrigKind::cut_attempt: {
          std::optional<SubflowId> sub = t.kind == TrigKind::cut_attempt ? client_->attempt_subflow() : std::nullopt;
          if (!sub) sub = client_->primary();
          if (sub) {
            if (auto it = by_csub_.find(*sub); it != by_csub_.end()) {
              say("cut subflow " + std::to_string(it->second) + " to S" + std::to_string(links_.at(it->second).server));
              cut(it->second);
              ++out_.cuts_done;
            }
          }
          break;
        }
        case TrigKind::partition: {
          ServerId a = static_cast<ServerId>(rng_.range(1, sc_.servers));
          ServerId b = random_other(a);
          TimeMs until = now_ + rng_.range(20, 900);
          partitions_.push_back({std::min(a, b), std::max(a, b), until});
          say("partition S" + std::to_string(a) + "-S" + std::to_string(b) + " until " + std::to_string(until) + "ms");
          break;
        }
        case TrigKind::spike:
          spike_until_ = now_ + rng_.range(100, 1500);
          say("control delay spike until " + std::to_string(spike_until_) + "ms");
          break;
        case TrigKind::crash:
          if (sc_.crash == Scenario::Crash::at_time) crash(client_->server());
          else crash_armed_ = true;
          break;
        case TrigKind::forge:
          forge();
          break;
        case TrigKind::stall: {
          // The owner answers (if at all) after the claim has timed out at the claimer.
          ServerId s = client_->server();
          TimeMs until = now_ + rng_.range(sc_.claim_timeout_ms + 1, sc_.mode == TransferMode::lazy ? 8000 : 3000);
          stalled_[s] = std::max(stalled_[s], until);
          ++out_.stalls_done;
          say("S" + std::to_string(s) + " stalls (slow owner) until " + std::to_string(until) + "ms");
          if (!client_->migrating()) start_migration(random_other(s));
          break;
        }
        case TrigKind::oneway: {
          ServerId s = client_->server();
          // Up to 20 s for lazy transfer (longer than the client's attempts take to run out);
          // up to 2 s for eager, which cannot take over from a muted owner with stale copies
          // (docs/SIMULATOR.md §3).
          TimeMs until = now_ + rng_.range(100, sc_.mode == TransferMode::lazy ? 20000 : 2000);
          muted_[s] = std::max(muted_[s], until);
          ++out_.oneway_cuts_done;
          say("S" + std::to_string(s) + " cannot send control messages (one-way cut) until " + std::to_string(until) + "ms");
          if (!client_->migrating()) start_migration(random_other(s));
          break;
        }
      }
    }
  }

  ServerId random_other(ServerId s) {
    ServerId o = s;
    while (o == s) o = static_cast<ServerId>(rng_.range(1, sc_.servers));
    return o;
  }

  void start_migration(ServerId target) {
    Status st = client_->migrate(target, now_);
    if (st) say("migrate S" + std::to_string(client_->server()) + " -> S" + std::to_string(target));
  }

  // ---- events ----
  void schedule(TimeMs at, Ev ev) { events_.emplace(std::make_pair(at, ++seq_), std::move(ev)); }

  TimeMs next_time() const {
    TimeMs t = events_.empty() ? core::kNever : events_.begin()->first.first;
    t = std::min(t, client_->next_deadline());
    for (const auto& [id, n] : servers_) {
      if (n.engine) t = std::min(t, std::max(n.engine->next_deadline(), stalled_until(id)));
    }
    return t;
  }

  void handle(Ev ev) {
    switch (ev.kind) {
      case EvKind::seg_c2s:
      case EvKind::seg_s2c: {
        auto it = links_.find(ev.link);
        if (it == links_.end() || it->second.gen != ev.gen) return;
        Dir& d = ev.kind == EvKind::seg_c2s ? it->second.c2s : it->second.s2c;
        if (d.q.empty()) return;  // the direction was reset by a close: a stale event
        d.ready.push_back(std::move(d.q.front().bytes));
        d.q.pop_front();
        return;
      }
      case EvKind::open_arrive: {
        auto it = links_.find(ev.link);
        if (it == links_.end() || it->second.gen != ev.gen || !it->second.client_open) return;
        Link& l = it->second;
        ServerNode& n = servers_.at(l.server);
        if (!n.engine) {
          close_client_side(l, now_ + rng_.range(1, 20));
          return;
        }
        if (stalled(l.server)) return schedule(stalled_until(l.server), std::move(ev));  // in the backlog
        l.server_arrived = true;
        l.server_open = true;
        n.engine->on_subflow_open(l.id, now_);
        return;
      }
      case EvKind::close_client: {
        auto it = links_.find(ev.link);
        if (it == links_.end() || !it->second.client_open) return;
        deliver_link(it->second);  // bytes that arrived before the close are read first
        it->second.client_open = false;
        if (!it->second.attacker) client_->on_subflow_closed(it->second.csub, now_);
        return;
      }
      case EvKind::close_server: {
        auto it = links_.find(ev.link);
        if (it == links_.end() || !it->second.server_open) return;
        if (stalled(it->second.server)) return schedule(stalled_until(it->second.server), std::move(ev));
        deliver_link(it->second);
        it->second.server_open = false;
        ServerNode& n = servers_.at(it->second.server);
        if (n.engine) n.engine->on_subflow_closed(it->second.id, now_);
        return;
      }
      case EvKind::control: {
        ServerNode& n = servers_.at(ev.to);
        if (!n.engine || partitioned(ev.from, ev.to)) return;
        // A stopped member reads its control connections only when it runs again, in order.
        if (stalled(ev.to)) return schedule(stalled_until(ev.to), std::move(ev));
        if (crash_armed_ && sc_.crash == Scenario::Crash::on_claim && ctl_type(ev.msg) == wire::ControlType::claim &&
            ev.to == client_->server()) {
          say("S" + std::to_string(ev.to) + " crashes on receiving a CLAIM");
          crash_armed_ = false;
          crash(ev.to);
          return;
        }
        if (verbosity_ >= 2) trace_control(ev);
        n.engine->on_control(ev.from, ev.msg, now_);
        return;
      }
      case EvKind::crash_now:
        crash(ev.to);
        return;
    }
  }

  void trace_control(const Ev& ev) {
    auto m = wire::decode_control(key_, ev.msg);
    if (!m) return;
    std::string line = "  ctl S" + std::to_string(ev.from) + "->S" + std::to_string(ev.to) + " " +
                       std::string(wire::to_string(wire::type_of(m->body)));
    std::visit(
        [&](const auto& b) {
          using T = std::decay_t<decltype(b)>;
          if constexpr (std::is_same_v<T, wire::PeerHello>) return;  // transport only, never simulated
          else if constexpr (std::is_same_v<T, wire::Abandon>) line += " request " + std::to_string(b.request_id) + " counter " + std::to_string(b.counter);
          else line += " epoch " + std::to_string(b.epoch);
          if constexpr (std::is_same_v<T, wire::Grant>) {
            line += b.from_owner ? " from-owner" : "";
            if (!b.state.empty()) {
              if (auto st = wire::decode_state(b.state)) {
                line += " state(snap " + std::to_string(st->snap_id) + ", in " + std::to_string(st->snap_in_seq) + ".." +
                        std::to_string(st->in_end()) + ")";
              }
            }
          }
          if constexpr (std::is_same_v<T, wire::Deny>) {
            line += " " + std::string(to_string(b.reason)) + " owner S" + std::to_string(b.owner_id);
          }
          if constexpr (std::is_same_v<T, wire::ReplAck>) line += " in_end " + std::to_string(b.pos.in_end);
        },
        m->body);
    say(line);
  }

  static wire::ControlType ctl_type(const Bytes& m) { return static_cast<wire::ControlType>(m.size() > 5 ? m[5] : 0); }

  // Slow owner and one-way cut (Scenario::stalls, oneway_cuts).
  TimeMs stalled_until(ServerId s) const {
    auto it = stalled_.find(s);
    return it == stalled_.end() ? 0 : it->second;
  }
  bool stalled(ServerId s) const { return now_ < stalled_until(s); }
  TimeMs muted_until(ServerId s) const {
    auto it = muted_.find(s);
    return it == muted_.end() ? 0 : it->second;
  }

  bool partitioned(ServerId a, ServerId b) const {
    ServerId lo = std::min(a, b), hi = std::max(a, b);
    for (const auto& p : partitions_) {
      if (p.a == lo && p.b == hi && now_ < p.until) return true;
    }
    return false;
  }

  // ---- links ----
  Link& new_link(ServerId server, SubflowId csub) {
    uint64_t id = ++next_link_;
    Link& l = links_[id];
    l.id = id;
    l.server = server;
    l.csub = csub;
    TimeMs arrive = now_ + rng_.range(0, 3);
    l.c2s.last_at = arrive;
    schedule(arrive, Ev{EvKind::open_arrive, id, l.gen, 0, 0, {}});
    return l;
  }

  void send_bytes(Link& l, bool c2s, std::vector<Slice>& slices) {
    if (l.broken) {
      slices.clear();
      return;
    }
    Dir& d = c2s ? l.c2s : l.s2c;
    for (auto& s : slices) {
      size_t off = 0;
      while (off < s.len) {
        size_t n = std::min<size_t>(s.len - off, rng_.range(1, sc_.seg_max));
        TimeMs at = std::max(d.last_at, now_ + rng_.range(0, sc_.seg_delay_max_ms));
        d.last_at = at;
        d.q.push_back({at, s.sub(off, n)});
        d.in_flight += n;
        schedule(at, Ev{c2s ? EvKind::seg_c2s : EvKind::seg_s2c, l.id, l.gen, 0, 0, {}});
        off += n;
      }
    }
    slices.clear();
  }

  void close_client_side(Link& l, TimeMs at) { schedule(std::max(at, l.s2c.last_at), Ev{EvKind::close_client, l.id, l.gen, 0, 0, {}}); }
  void close_server_side(Link& l, TimeMs at) { schedule(std::max(at, l.c2s.last_at), Ev{EvKind::close_server, l.id, l.gen, 0, 0, {}}); }

  // A cut: in-flight bytes are lost, each side learns of it a little later.
  void cut(uint64_t id) {
    Link& l = links_.at(id);
    ++l.gen;
    l.broken = true;
    l.c2s = Dir{};
    l.s2c = Dir{};
    if (l.client_open) schedule(now_ + rng_.range(0, 30), Ev{EvKind::close_client, l.id, l.gen, 0, 0, {}});
    if (l.server_open || !l.server_arrived) {
      l.server_arrived = true;  // an open that was in flight is lost too
      if (l.server_open) schedule(now_ + rng_.range(0, 30), Ev{EvKind::close_server, l.id, l.gen, 0, 0, {}});
    }
  }

  void crash(ServerId s) {
    ServerNode& n = servers_.at(s);
    if (!n.engine) return;
    say("CRASH S" + std::to_string(s));
    n.host.reset();
    n.engine.reset();
    out_.crashed = true;
    crashed_.insert(s);
    for (auto& [id, l] : links_) {
      if (l.server != s) continue;
      l.server_open = false;
      if (l.client_open) {
        ++l.gen;
        l.c2s = Dir{};
        l.s2c = Dir{};
        schedule(now_ + rng_.range(1, 50), Ev{EvKind::close_client, l.id, l.gen, 0, 0, {}});
      }
    }
  }

  // ---- forged migrations (TEST-MATRIX I3) ----
  void forge() {
    if (client_->conn_id() == 0) return;
    ServerId target = static_cast<ServerId>(rng_.range(1, sc_.servers));
    if (!servers_.at(target).engine) return;
    Link& l = new_link(target, 0);
    l.attacker = true;
    l.attack_variant = static_cast<int>(rng_.range(0, 2));
    say("forged MIGRATE (variant " + std::to_string(l.attack_variant) + ") to S" + std::to_string(target));
    Bytes b(wire::kPreface.begin(), wire::kPreface.end());
    wire::encode(wire::Hello{wire::kVersion, wire::HelloKind::migrate, client_->conn_id()}, b);
    std::vector<Slice> v{Slice(make_block(std::move(b)))};
    send_bytes(l, true, v);
  }

  void attacker_read(Link& l, Slice s) {
    l.attack_in.push(std::move(s));
    while (!l.attack_done) {
      auto f = l.attack_dec.next(l.attack_in);
      if (!f || !f.value()) return;
      wire::Frame fr = std::move(*f.value());
      if (auto* ch = std::get_if<wire::ChallengeFrame>(&fr); ch && !l.attack_sent) {
        wire::Migrate m;
        m.cert = client_->certificate();
        m.counter = static_cast<uint32_t>(rng_.range(1, 1000));
        m.prev_owner = client_->server();
        rng_.fill(m.proof);
        if (l.attack_variant == 1) m.cert.expires_at_ms += 1000000;  // tampered certificate
        if (l.attack_variant == 2) m.proof = cert::make_proof(cert::Key{}, ch->nonce, l.server, m.cert.conn_id, m.counter);
        Bytes b;
        wire::encode(m, b);
        std::vector<Slice> v{Slice(make_block(std::move(b)))};
        send_bytes(l, true, v);
        l.attack_sent = true;
      } else if (auto* rf = std::get_if<wire::Refuse>(&fr)) {
        l.attack_done = true;
        say("forged MIGRATE refused by S" + std::to_string(l.server) + ": " + std::string(to_string(rf->reason)));
        if (rf->reason == Error::bad_proof || rf->reason == Error::cert_expired || rf->reason == Error::rate_limited) ++out_.forged_refused;
        else violation("I3: forged MIGRATE refused with an unexpected reason: " + std::string(to_string(rf->reason)));
      } else if (std::holds_alternative<wire::Accept>(fr)) {
        l.attack_done = true;
        violation("I3: forged MIGRATE accepted by S" + std::to_string(l.server));
      }
    }
  }

  // ---- the per-step work of every node ----
  void service() {
    for (int round = 0; round < 1000; ++round) {
      bool moved = false;
      moved |= service_client();
      for (auto& [id, n] : servers_) moved |= service_server(n);
      moved |= deliver_ready();
      check_owners();
      if (!moved) return;
    }
  }

  bool service_client() {
    bool moved = false;
    for (auto& a : client_->take_actions()) {
      moved = true;
      if (a.kind == ClientAction::Kind::open_subflow) {
        Link& l = new_link(a.server, a.subflow);
        by_csub_[a.subflow] = l.id;
      } else {
        auto it = by_csub_.find(a.subflow);
        if (it == by_csub_.end()) continue;
        Link& l = links_.at(it->second);
        by_csub_.erase(it);
        if (!l.client_open) continue;
        l.client_open = false;
        l.s2c = Dir{};
        if (l.server_open || !l.server_arrived) close_server_side(l, now_ + rng_.range(0, 3));
      }
    }
    for (auto& e : client_->take_events()) {
      moved = true;
      on_client_event(e);
    }
    if (client_->state() == core::ClientState::established) {
      fire_triggers();
      if (pp_left_ > 0 && !client_->migrating()) {
        --pp_left_;
        start_migration(client_->server() == pp_a_ ? pp_b_ : pp_a_);
      }
      // At the end, a migration that races the member's final frames.
      if (sc_.end_migration && !end_migration_done_ && client_closed_ && model_.received() == expected_out_ &&
          !client_->migrating()) {
        end_migration_done_ = true;
        say("end migration: all output received, our CLOSE sent");
        start_migration(random_other(client_->server()));
      }
      // Application: write the input stream (zero-copy slices), read and check the output.
      while (written_ < sc_.input_bytes && client_->write_space() > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>({sc_.input_bytes - written_, client_->write_space(), rng_.range(1, 40000)}));
        Bytes b(n);
        svc::input_fill(sc_.app.stream_seed, written_, b);
        if (!client_->write(Slice(make_block(std::move(b))))) break;
        written_ += n;
        moved = true;
      }
      // All input written and every planned fault and ping-pong migration done (or all output
      // here): close our side (the services close theirs once they read it all).
      bool faults_done = pp_left_ == 0 && (next_trigger_ == triggers_.size() || model_.received() == expected_out_);
      if (written_ == sc_.input_bytes && faults_done && !client_closed_) {
        client_->close();
        client_closed_ = true;
        moved = true;
      }
      std::vector<Slice> got;
      client_->read_slices(SIZE_MAX, got);
      for (const auto& s : got) {
        std::string why;
        if (!model_.check(s.span(), written_, why)) {
          violation(why);
          break;
        }
        moved = true;
      }
    }
    for (auto& [csub, id] : by_csub_) {
      Link& l = links_.at(id);
      if (!l.client_open) continue;
      while (client_->wants_transmit(csub) && l.c2s.in_flight < kWindowBytes) {
        std::vector<Slice> out;
        size_t n = client_->poll_transmit(csub, kWindowBytes - l.c2s.in_flight, out);
        if (n == 0) break;
        send_bytes(l, true, out);
        moved = true;
      }
    }
    return moved;
  }

  void on_client_event(const ClientEvent& e) {
    switch (e.kind) {
      case ClientEvent::Kind::connected:
        say("connected to S" + std::to_string(e.to) + " conn " + std::to_string(client_->conn_id()));
        break;
      case ClientEvent::Kind::migrated:
        ++out_.migrations_done;
        say("migrated S" + std::to_string(e.from) + " -> S" + std::to_string(e.to) + " in " +
            std::to_string(e.done_ms - e.started_ms) + "ms (client had " + std::to_string(e.rcv_at) +
            " B of output, server held " + std::to_string(e.snd_at) + " B of input)");
        break;
      case ClientEvent::Kind::migration_failed:
        ++out_.migrations_failed;
        if (e.error == Error::ok) violation("migration failed without a reason");
        say("migration S" + std::to_string(e.from) + " -> S" + std::to_string(e.to) + " failed: " + std::string(to_string(e.error)) +
            (e.error == Error::state_gap ? " (server holds " + std::to_string(e.snd_at) + " B, client acked " + std::to_string(client_->send_log().base()) + " B)" : ""));
        break;
      case ClientEvent::Kind::failed:
        if (e.error == Error::ok) violation("connection failed without a reason");
        say("connection FAILED: " + std::string(to_string(e.error)));
        break;
      case ClientEvent::Kind::hint:
      case ClientEvent::Kind::peer_closed:
        break;
    }
  }

  bool service_server(ServerNode& n) {
    if (!n.engine || stalled(n.id)) return false;
    bool moved = n.host->service(1);
    // An app's own check failed (a stream byte, a refused import or snapshot): a violation here.
    if (n.host && n.host->violations() > n.violations_seen) {
      n.violations_seen = n.host->violations();
      violation("S" + std::to_string(n.id) + ": " + n.last_log);
    }
    return moved;
  }

  bool deliver_ready() {
    bool moved = false;
    for (auto& [id, l] : links_) moved |= deliver_link(l);
    return moved;
  }

  bool deliver_link(Link& l) {
    bool moved = false;
    {
      while (!l.c2s.ready.empty() && l.server_open && !stalled(l.server)) {
        ServerNode& n = servers_.at(l.server);
        if (!n.engine || !n.engine->wants_read(l.id)) break;
        Slice s = std::move(l.c2s.ready.front());
        l.c2s.ready.pop_front();
        l.c2s.in_flight -= s.len;
        n.engine->on_subflow_data(l.id, std::move(s), now_);
        moved = true;
      }
      while (!l.s2c.ready.empty() && l.client_open) {
        if (l.attacker) {
          Slice s = std::move(l.s2c.ready.front());
          l.s2c.ready.pop_front();
          l.s2c.in_flight -= s.len;
          attacker_read(l, std::move(s));
          moved = true;
          continue;
        }
        if (!client_->wants_read(l.csub)) break;
        Slice s = std::move(l.s2c.ready.front());
        l.s2c.ready.pop_front();
        l.s2c.in_flight -= s.len;
        client_->on_subflow_data(l.csub, std::move(s), now_);
        if (ServerNode& n = servers_.at(l.server); n.host) n.host->mark_subflow(l.id);  // window room again
        moved = true;
      }
    }
    return moved;
  }

  // I4: at most one server owns any epoch of the connection, ever.
  void check_owners() {
    for (auto& [id, n] : servers_) {
      if (!n.engine) continue;
      for (core::ConnId c : n.engine->owned_connections()) {
        auto info = n.engine->conn_info(c);
        auto [it, fresh] = owner_of_epoch_.emplace(info->epoch, id);
        if (!fresh && it->second != id && i4_reported_.insert(info->epoch).second) {
          violation("I4: epoch " + std::to_string(info->epoch) + " owned by S" + std::to_string(it->second) + " and S" + std::to_string(id));
          it->second = id;
        }
      }
    }
  }

  // A claim refused because another member claimed the same migration first (TEST-MATRIX #7).
  void note_deny(const Bytes& msg) {
    auto m = wire::decode_control(key_, msg);
    if (!m) return;
    if (auto* d = std::get_if<wire::Deny>(&m->body); d && d->reason == Error::already_claimed) ++out_.concurrent_claims;
  }

  bool finished() {
    if (!out_.violations.empty() && out_.violations.size() > 20) return true;
    if (client_->state() == core::ClientState::failed) return true;
    // Complete: every byte both ways, both sides closed, nothing under way (a ping-pong burst
    // still running ends there: a closed connection does not migrate).
    bool done = written_ == sc_.input_bytes && model_.received() == expected_out_ &&
                client_->send_log().base() == sc_.input_bytes && !client_->migrating() && client_->finished();
    if (done) out_.completed = true;
    return done;
  }

  void finish() {
    if (verbosity_ >= 2) {
      say("end: client state " + std::to_string(static_cast<int>(client_->state())) + " on S" + std::to_string(client_->server()) +
          ", input written " + std::to_string(written_) + "/" + std::to_string(sc_.input_bytes) + ", acked " +
          std::to_string(client_->send_log().base()) + ", sent " + std::to_string(client_->send_log().sent()) + ", output " +
          std::to_string(model_.received()) + "/" + std::to_string(expected_out_) + (client_->migrating() ? ", migrating" : ""));
      for (auto& [id, n] : servers_) {
        if (!n.engine) continue;
        if (auto info = n.engine->conn_info(client_->conn_id())) {
          say("end: S" + std::to_string(id) + " role " + std::to_string(static_cast<int>(info->role)) + " epoch " + std::to_string(info->epoch) +
              (info->attached ? " attached" : " detached") + " in_end " + std::to_string(info->in_end) + " app_in " +
              std::to_string(info->app_in) + " out " + std::to_string(info->out_acked) + ".." + std::to_string(info->out_end));
        }
      }
    }
    out_.sim_ms = now_;
    for (auto& [id, n] : servers_) {
      if (n.engine) out_.window_waits += n.engine->counters().replication_window_waits;
    }
    out_.bytes_in = written_;
    out_.bytes_out = model_.received();
    if (client_->state() == core::ClientState::failed) {
      out_.failed_explicitly = true;
      out_.failure = client_->failure();
      // Failure is an allowed outcome only where the scenario makes survival impossible:
      // lazy transfer or eager without ack-after-replication, after a crash.
      bool excusable = out_.crashed && !(sc_.mode == TransferMode::eager && sc_.ack_after_replication);
      // A crash and a muted member together can leave no reachable majority (eager + ack).
      if (out_.crashed && out_.oneway_cuts_done > 0) excusable = true;
      // The non-deterministic app is stopped by replay verification: the connection fails
      // explicitly (replay_mismatch, or no alternate left after attempts that all mismatched);
      // what must never happen is an altered byte reaching the client (an I1 violation).
      if (opt_.nondeterministic) excusable = true;
      if (!excusable) violation("connection failed (" + std::string(to_string(out_.failure)) + ") where it had to survive");
    }
    if (model_.received() > expected_out_) violation("I1: more output than the input produces");
  }

  // The runtime looks only at what take_touched() lists and trusts next_deadline()'s index:
  // anything not listed must answer as before, and the index must agree with a full scan.
  void check_touched(ServerNode& n) {
    ServerEngine& e = *n.engine;
    if (e.next_deadline() != e.next_deadline_scan())
      violation("engine S" + std::to_string(n.id) + ": indexed deadline " + std::to_string(e.next_deadline()) +
                " differs from a full scan " + std::to_string(e.next_deadline_scan()));
    n.host->absorb(e.take_touched());  // the host still acts on them; on_touched adds them to touched_acc
    ServerEngine::Touched t = std::exchange(n.touched_acc, {});
    std::set<SubflowId> subs(t.subflows.begin(), t.subflows.end());
    std::set<core::ConnId> conns(t.conns.begin(), t.conns.end());
    for (const auto& [lid, l] : links_) {
      if (l.server != n.id) continue;
      std::pair<bool, bool> now{e.wants_transmit(lid), e.wants_read(lid)};
      auto it = n.sub_seen.find(lid);
      if (!t.all && !subs.contains(lid) && it != n.sub_seen.end() && it->second != now)
        violation("engine S" + std::to_string(n.id) + ": subflow " + std::to_string(lid) + " changed untouched");
      n.sub_seen[lid] = now;
    }
    for (core::ConnId c : e.owned_connections()) {
      std::tuple<size_t, size_t, bool> now{e.conn_readable(c), e.conn_write_space(c), e.conn_input_closed(c)};
      auto it = n.conn_seen.find(c);
      if (!t.all && !conns.contains(c) && it != n.conn_seen.end() && it->second != now)
        violation("engine S" + std::to_string(n.id) + ": connection " + std::to_string(c) + " changed untouched");
      n.conn_seen[c] = now;
    }
  }

  void violation(const std::string& what) {
    say("VIOLATION: " + what);
    out_.violations.push_back(what);
  }
  void say(const std::string& line) {
    if (verbosity_ >= 1 && log_) *log_ += "[t=" + std::to_string(now_) + "ms] " + line + "\n";
  }

  struct Partition {
    ServerId a, b;
    TimeMs until;
  };

  RunOptions opt_;
  Scenario sc_;
  Prng rng_;
  int verbosity_;  // 1: migrations and faults; 2: also control messages and server events
  std::string* log_;
  Outcome out_;
  Limits limits_;
  cert::Key key_{};
  TimeMs now_ = 0;
  uint64_t seq_ = 0;
  std::map<std::pair<TimeMs, uint64_t>, Ev> events_;
  sdk::Registry registry_;
  std::unique_ptr<sdk::AppFactory> factory_;
  std::map<ServerId, ServerNode> servers_;
  std::unique_ptr<Prng> client_rng_;
  std::unique_ptr<ClientEngine> client_;
  std::map<uint64_t, Link> links_;
  std::map<SubflowId, uint64_t> by_csub_;
  uint64_t next_link_ = 0;
  ClientModel model_;
  uint64_t expected_out_ = 0;
  uint64_t written_ = 0;
  bool client_closed_ = false;
  bool end_migration_done_ = false;
  std::vector<Trigger> triggers_;
  size_t next_trigger_ = 0;
  uint32_t pp_left_ = 0;
  ServerId pp_a_ = 0, pp_b_ = 0;
  std::vector<Partition> partitions_;
  TimeMs spike_until_ = 0;
  std::map<ServerId, TimeMs> stalled_;  // a stopped member runs again then
  std::map<ServerId, TimeMs> muted_;    // a member's control messages are lost until then
  bool crash_armed_ = false;
  std::set<ServerId> crashed_;
  std::map<uint64_t, ServerId> owner_of_epoch_;
  std::set<uint64_t> i4_reported_;
};

void SimTransport::send_control(ServerId to, Bytes msg) { world.sim_send_control(id, to, std::move(msg)); }
void SimTransport::close_subflow(SubflowId sub) { world.sim_close_subflow(id, sub); }
void SimTransport::plain_tcp(SubflowId sub, Bytes) { world.sim_plain_tcp(sub); }
bool SimTransport::subflow_ready(SubflowId sub) { return world.sim_subflow_ready(id, sub); }
std::vector<SubflowId> SimTransport::subflows() const { return world.sim_subflows(id); }

}  // namespace

Outcome run_seed(uint64_t seed, int verbosity, std::string* log, const RunOptions& opt) {
  World w(seed, verbosity, log, opt);
  return w.run();
}

}  // namespace mtcp::sim
