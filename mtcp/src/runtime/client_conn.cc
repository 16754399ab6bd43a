#include "runtime/client_conn.h"

#include "runtime/address.h"

namespace mtcp::rt {

using asio::ip::tcp;

namespace {
constexpr int kFlushPollsMax = 1000;  // flush_and_close gives up after about a second
}  // namespace

ClientConn::ClientConn(asio::io_context& io, const PoolConfig& pool)
    : io_(io), pool_(pool), engine_(pool.limits, rng_), timer_(io), flush_timer_(io) {}

ClientConn::~ClientConn() {
  close_all();
  *alive_ = false;  // handlers still queued in the io_context must not touch this object
}

void ClientConn::close_all() {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  flush_timer_.cancel();
  asio::error_code ec;
  for (auto& [id, s] : subs_) s->sock.close(ec);
  subs_.clear();
}

void ClientConn::flush_and_close(std::function<void()> done) {
  if (closed_) return done();
  service();
  bool busy = false;
  for (auto& [id, s] : subs_) busy |= s->writing || (s->connected && engine_.wants_transmit(id));
  if (!busy || ++flush_polls_ > kFlushPollsMax) {
    close_all();
    return done();
  }
  flush_timer_.expires_after(std::chrono::milliseconds(1));
  flush_timer_.async_wait([this, alive = alive_, done = std::move(done)](asio::error_code) mutable {
    if (*alive) flush_and_close(std::move(done));
  });
}

void ClientConn::connect(core::ServerId first) {
  engine_.connect(first, now_ms());
  service();
}

void ClientConn::open(core::SubflowId id, core::ServerId server, const std::string& address) {
  std::string addr = address;
  if (addr.empty()) {
    if (const Member* m = pool_.find(server)) addr = m->data;
  }
  auto sub = std::make_shared<SubflowSocket>(io_);
  SubflowSocket& s = *sub;
  subs_.emplace(id, sub);
  tcp::endpoint ep;
  std::string why;
  if (!parse_endpoint(addr, ep, why)) {
    asio::post(io_, [this, alive = alive_, id] {
      if (*alive) lost(id);
    });
    return;
  }
  s.sock.async_connect(ep, [this, alive = alive_, id, sub](asio::error_code ec) {
    if (!*alive) return;
    if (closed_) return;
    auto it = subs_.find(id);
    if (it == subs_.end() || it->second != sub) return;
    if (ec) {
      lost(id);
      return;
    }
    it->second->ready();
    service();
  });
}

void ClientConn::lost(core::SubflowId id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  asio::error_code ignore;
  it->second->sock.close(ignore);
  subs_.erase(it);
  engine_.on_subflow_closed(id, now_ms());
  service();
}

void ClientConn::read_sub(core::SubflowId id) {
  auto sp = subs_.at(id);
  sp->start_read(alive_, [this, id, sp](asio::error_code ec, Slice data) {
    if (closed_) return;
    auto it = subs_.find(id);
    if (it == subs_.end() || it->second != sp) return;
    if (ec) return lost(id);
    engine_.on_subflow_data(id, std::move(data), now_ms());
    service();
  });
}

void ClientConn::write_sub(core::SubflowId id) {
  auto sp = subs_.at(id);
  auto poll = [this, id](size_t budget, std::vector<Slice>& out) { engine_.poll_transmit(id, budget, out); };
  sp->start_write(poll, alive_, [this, id, sp](asio::error_code ec) {
    if (closed_) return;
    auto it = subs_.find(id);
    if (it == subs_.end() || it->second != sp) return;
    if (ec) return lost(id);
    service();
  });
}

void ClientConn::arm_timer() {
  if (closed_) return;
  timer_.arm(engine_.next_deadline(), alive_, [this] {
    if (closed_) return;
    engine_.on_timer(now_ms());
    service();
  });
}

void ClientConn::service() {
  if (closed_) return;
  if (in_service_) {
    again_ = true;
    return;
  }
  in_service_ = true;
  for (int round = 0; round < 64; ++round) {
    again_ = false;
    bool moved = false;
    for (auto& a : engine_.take_actions()) {
      moved = true;
      if (a.kind == core::ClientAction::Kind::open_subflow) {
        open(a.subflow, a.server, a.address);
      } else if (auto it = subs_.find(a.subflow); it != subs_.end()) {
        asio::error_code ignore;
        it->second->sock.shutdown(tcp::socket::shutdown_both, ignore);
        it->second->sock.close(ignore);
        subs_.erase(it);
      }
    }
    auto events = engine_.take_events();
    if (on_change) on_change(events);
    if (!events.empty()) moved = true;
    for (auto& [id, s] : subs_) {
      if (!s->connected) continue;
      if (!s->writing && engine_.wants_transmit(id)) {
        write_sub(id);
        moved = true;
      }
      if (!s->reading && engine_.wants_read(id)) read_sub(id);
    }
    if (!moved && !again_) break;
  }
  in_service_ = false;
  arm_timer();
}

}  // namespace mtcp::rt
