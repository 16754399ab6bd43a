#include "host/engine_host.h"

#include <algorithm>

#include <cassert>

namespace mtcp::host {

using core::ConnId;
using core::ServerEvent;

// The app's handle: the engine's conn_* calls for one connection, nothing else.
class EngineHost::EngineConn final : public sdk::Conn {
 public:
  EngineConn(EngineHost& host, ConnId id) : host_(host), eng_(host.engine_), id_(id) {}
  sdk::ConnId id() const override { return id_; }
  uint64_t epoch() const override { return epoch_; }
  bool plain() const override { return false; }
  bool replaying() const override {
    auto i = eng_.conn_info(id_);
    return i && (i->app_in < replay_in_until_ || out_pos_ < replay_out_until_);
  }
  uint64_t input_pos() const override {
    auto i = eng_.conn_info(id_);
    return i ? i->app_in : 0;
  }
  uint64_t output_pos() const override { return out_pos_; }
  uint64_t output_acked() const override {
    auto i = eng_.conn_info(id_);
    return i ? i->out_acked : 0;
  }
  sdk::ConnStats stats() const override {
    sdk::ConnStats s;
    auto i = eng_.conn_info(id_);
    if (!i) return s;
    s.migrations = i->counter;
    s.input_received = i->in_end;
    s.snapshot_input = i->snap_in_seq;
    s.snapshot_output = i->snap_out_seq;
    s.replay_input_until = replay_in_until_;
    s.replay_output_until = replay_out_until_;
    s.replay_verified = i->verify_replay;
    return s;
  }
  size_t readable() const override { return eng_.conn_readable(id_); }
  size_t read(std::span<uint8_t> dst) override { return eng_.conn_read(id_, dst); }
  size_t read_slices(size_t max_bytes, std::vector<Slice>& out) override {
    return eng_.conn_read_slices(id_, max_bytes, out);
  }
  bool input_closed() const override { return eng_.conn_input_closed(id_); }
  size_t write_space() const override { return eng_.conn_write_space(id_); }
  Result<size_t> write(Slice s) override {
    auto r = eng_.conn_write(id_, std::move(s));
    if (r) out_pos_ += *r;
    return r;
  }
  Result<size_t> write_copy(std::span<const uint8_t> bytes) override {
    auto r = eng_.conn_write_copy(id_, bytes);
    if (r) out_pos_ += *r;
    return r;
  }
  Status snapshot(Bytes state) override { return eng_.conn_snapshot(id_, std::move(state)); }
  Status close() override { return eng_.conn_close(id_); }
  void violation(const std::string& why) override {
    host_.count_violation();
    host_.log("connection " + std::to_string(id_) + ": " + why);
  }
  sdk::Waker waker() const override { return sdk::Waker(host_.wake_, id_); }

  void set_import(uint64_t epoch, uint64_t out_pos, uint64_t in_until, uint64_t out_until) {
    epoch_ = epoch;
    out_pos_ = out_pos;
    replay_in_until_ = in_until;
    replay_out_until_ = out_until;
  }

 private:
  EngineHost& host_;
  core::ServerEngine& eng_;
  ConnId id_;
  uint64_t epoch_ = 0;
  uint64_t out_pos_ = 0;
  uint64_t replay_in_until_ = 0;
  uint64_t replay_out_until_ = 0;
};

struct EngineHost::Rec {
  Rec(EngineHost& h, ConnId id) : conn(h, id) {}
  EngineConn conn;
  std::unique_ptr<sdk::ConnApp> app;
  size_t last_space = 0;  // write space after the last dispatch (on_writable when it grows)
  uint64_t last_acked = 0;
  bool eof_told = false;
  bool woken = false;
};

namespace {
void notify_transport(void* ctx) { static_cast<Transport*>(ctx)->post_service(); }
}  // namespace

EngineHost::EngineHost(core::ServerEngine& engine, sdk::AppFactory& factory, Transport& transport, Log log)
    : engine_(engine), factory_(factory), transport_(transport), log_(std::move(log)) {
  wake_->set_notify(&notify_transport, &transport_);
}

EngineHost::~EngineHost() { wake_->close(); }

void EngineHost::drop_apps() { conns_.clear(); }

void EngineHost::absorb(const core::ServerEngine::Touched& t) {
  if (on_touched) on_touched(t);
  if (t.all) {
    all_subs_ = all_conns_ = true;
    return;
  }
  ready_subs_.insert(t.subflows.begin(), t.subflows.end());
  ready_conns_.insert(t.conns.begin(), t.conns.end());
}

void EngineHost::absorb_engine() { absorb(engine_.take_touched()); }

bool EngineHost::service(int rounds) {
  assert(rounds > 0);
  if (in_service_) {
    again_ = true;
    return false;
  }
  in_service_ = true;
  bool busy = false;
  // A few rounds per pass, then the caller yields to its event loop: a busy application must
  // not keep a CLAIM or an ACK waiting on another socket (fairness between connections).
  for (int i = 0; i < rounds; ++i) {
    again_ = false;
    bool moved = round();
    busy = i == rounds - 1 && (moved || again_);
    if (!moved && !again_) break;
  }
  in_service_ = false;
  return busy;
}

bool EngineHost::round() {
  bool moved = false;
  for (auto& a : engine_.take_actions()) {
    moved = true;
    switch (a.kind) {
      case core::ServerAction::Kind::send_control:
        if (a.stream) transport_.send_control_stream(a.peer, std::move(a.stream));
        else transport_.send_control(a.peer, std::move(a.bytes));
        break;
      case core::ServerAction::Kind::close_subflow: transport_.close_subflow(a.subflow); break;
      case core::ServerAction::Kind::plain_tcp: transport_.plain_tcp(a.subflow, std::move(a.bytes)); break;
    }
  }
  auto events = engine_.take_events();
  for (size_t i = 0; i < events.size(); ++i) {
    const ServerEvent& e = events[i];
    moved = true;
    transport_.saw_event(e);
    // An instance opened for an import that a later event of this batch already ended (the
    // member took the connection back, handed it on and took it back again within one batch,
    // docs/PROTOCOL.md §5.2 "Abandoned claims") would start from the engine's state as it is
    // now, not as it was then, and read on from where it stands: open only the last one.
    bool superseded = (e.kind == ServerEvent::Kind::opened || e.kind == ServerEvent::Kind::imported) &&
                      std::any_of(events.begin() + static_cast<std::ptrdiff_t>(i) + 1, events.end(), [&](const ServerEvent& later) {
                        return later.conn == e.conn &&
                               (later.kind == ServerEvent::Kind::fenced || later.kind == ServerEvent::Kind::closed);
                      });
    if (!superseded) on_event(e);
  }
  for (ConnId id : wake_->take()) {
    if (auto it = conns_.find(id); it != conns_.end()) {
      it->second->woken = true;
      ready_conns_.insert(id);
      moved = true;
    }
  }
  absorb_engine();
  std::vector<ConnId> look;
  if (std::exchange(all_conns_, false)) {
    for (const auto& [id, r] : conns_) look.push_back(id);
  } else {
    look.assign(ready_conns_.begin(), ready_conns_.end());
  }
  ready_conns_.clear();
  for (ConnId id : look) {
    if (auto it = conns_.find(id); it != conns_.end()) dispatch(id, *it->second);
  }
  absorb_engine();  // what the apps' calls changed
  if (!ready_conns_.empty() || all_conns_) moved = true;
  std::vector<core::SubflowId> subs;
  if (std::exchange(all_subs_, false)) subs = transport_.subflows();
  else subs.assign(ready_subs_.begin(), ready_subs_.end());
  ready_subs_.clear();
  for (core::SubflowId s : subs) moved |= transport_.subflow_ready(s);
  return moved;
}

void EngineHost::on_event(const ServerEvent& ev) {
  switch (ev.kind) {
    case ServerEvent::Kind::opened:
    case ServerEvent::Kind::imported:
      open(ev.conn, ev.kind == ServerEvent::Kind::imported);
      break;
    case ServerEvent::Kind::resumed:
      break;
    case ServerEvent::Kind::fenced:
    case ServerEvent::Kind::closed: {
      auto it = conns_.find(ev.conn);
      if (it == conns_.end()) break;
      std::unique_ptr<Rec> r = std::move(it->second);
      conns_.erase(it);
      bool fenced = ev.kind == ServerEvent::Kind::fenced;
      if (fenced) r->app->on_fenced(ev.error == Error::ok ? Error::not_owner : ev.error);
      else r->app->on_closed(ev.error);
      log_("connection " + std::to_string(ev.conn) +
           (fenced ? " moved away"
                   : " closed" + (ev.error == Error::ok ? std::string() : ": " + std::string(to_string(ev.error)))));
      break;
    }
  }
}

void EngineHost::open(ConnId id, bool migrated) {
  auto view = engine_.conn_snapshot_view(id);
  auto info = engine_.conn_info(id);
  if (!view || !info) return;  // gone again already (its closed event follows)
  auto rec = std::make_unique<Rec>(*this, id);
  sdk::Import imp;
  imp.migrated = migrated;
  imp.epoch = info->epoch;
  imp.snap_id = view->snap_id;
  imp.snapshot = view->bytes;
  imp.snap_in = view->in_seq;
  imp.snap_out = view->out_seq;
  imp.replay_in_until = info->replay_in_until;
  imp.replay_out_until = info->replay_out_until;
  rec->conn.set_import(info->epoch, view->out_seq, imp.replay_in_until, imp.replay_out_until);
  // Before the app writes anything: the owner digests its output from here on, and regenerated
  // output is checked against what a former owner sent (docs/PROTOCOL.md §4.3).
  if (factory_.verify_replay()) (void)engine_.conn_verify_replay(id, true);
  rec->app = factory_.make(id);
  std::string why;
  if (!rec->app || !rec->app->on_open(rec->conn, imp, why)) {
    ++violations_;
    log_("connection " + std::to_string(id) + ": import refused: " + (why.empty() ? "no app instance" : why) + "; closing it");
    (void)engine_.conn_close(id);
    return;
  }
  log_("connection " + std::to_string(id) + (migrated ? " migrated in" : " opened"));
  Rec& r = *rec;
  conns_[id] = std::move(rec);
  dispatch(id, r);  // room to write from the start (last_space is 0)
}

// Tells the app what changed since it was last told; its calls touch the connection again
// (take_touched), so it is looked at in the next round while it makes progress.
void EngineHost::dispatch(ConnId id, Rec& r) {
  sdk::ConnApp& app = *r.app;
  if (std::exchange(r.woken, false)) app.on_wake(r.conn);
  if (auto info = engine_.conn_info(id); info && info->out_acked > r.last_acked) {
    r.last_acked = info->out_acked;
    app.on_output_acked(r.conn, r.last_acked);
  }
  bool eof = engine_.conn_input_closed(id);
  if (engine_.conn_readable(id) > 0 || (eof && !r.eof_told)) {
    r.eof_told = r.eof_told || eof;
    app.on_readable(r.conn);
  }
  if (size_t space = engine_.conn_write_space(id); space > r.last_space) app.on_writable(r.conn);
  r.last_space = engine_.conn_write_space(id);
}

}  // namespace mtcp::host
