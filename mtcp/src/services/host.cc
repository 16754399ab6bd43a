#include <array>

#include "services/services.h"

namespace mtcp::svc {

using asio::ip::tcp;

ServiceHost::ServiceHost(Kind kind, const Params& p, Log log) : kind_(kind), p_(p), log_(std::move(log)) {}

void ServiceHost::on_event(core::ServerEngine& engine, const core::ServerEvent& ev) {
  using K = core::ServerEvent::Kind;
  switch (ev.kind) {
    case K::opened:
    case K::imported: {
      auto s = make_conn_service(kind_, p_, ev.conn);
      std::string why;
      if (!s->import(engine, why)) {
        ++violations_;
        log_("connection " + std::to_string(ev.conn) + ": import refused: " + why + "; closing it");
        (void)engine.conn_close(ev.conn);
        return;
      }
      conns_[ev.conn] = std::move(s);
      log_("connection " + std::to_string(ev.conn) + (ev.kind == K::opened ? " opened" : " migrated in"));
      break;
    }
    case K::resumed:
      break;
    case K::fenced:
      if (conns_.erase(ev.conn)) log_("connection " + std::to_string(ev.conn) + " moved away");
      break;
    case K::closed:
      if (conns_.erase(ev.conn))
        log_("connection " + std::to_string(ev.conn) + " closed" +
             (ev.error == Error::ok ? "" : std::string(": ") + std::string(to_string(ev.error))));
      break;
  }
}

bool ServiceHost::step(core::ServerEngine& engine, const core::ServerEngine::Touched& ready) {
  bool moved = false;
  auto step_one = [&](core::ConnId conn, ConnService& s) {
    bool ok = true;
    std::string why;
    moved |= s.step(engine, ok, why);
    if (!ok) {
      ++violations_;
      log_("connection " + std::to_string(conn) + ": " + why);
    }
  };
  if (ready.all) {
    for (auto& [conn, s] : conns_) step_one(conn, *s);
  } else {
    for (core::ConnId conn : ready.conns) {
      if (auto it = conns_.find(conn); it != conns_.end()) step_one(conn, *it->second);
    }
  }
  return moved;
}

// ---- plain TCP: the same service, without snapshots or migration ---------------------------

namespace {

// Like the M-TCP subflows (runtime/read_block.h), a plain connection holds no receive buffer
// while it waits: it reads into one buffer per thread when the socket is readable, so the
// plain baseline's memory per idle connection is comparable (docs/performance.md).
struct Plain : std::enable_shared_from_this<Plain> {
  static constexpr size_t kChunk = 64u << 10;
  Plain(tcp::socket s, Kind k, const Params& p) : sock(std::move(s)), kind(k), params(p) {
    asio::error_code ignore;
    sock.non_blocking(true, ignore);
  }
  tcp::socket sock;
  Kind kind;
  Params params;
  Bytes out;                 // echo: bytes to send back
  uint64_t sent = 0;         // source: stream offset
  bool client_done = false;  // source: the client closed its side (endless stream: stop)

  void start(Bytes head) {
    if (kind == Kind::source) {
      read_discard();
      write_source();
    } else {
      out = std::move(head);
      echo();
    }
  }
  // Reads what is there now, else waits for readability (queued in the handler that saw
  // EAGAIN, so no edge is missed) and tries again; then done(error, bytes read).
  template <class Done>
  void read_now(Done done) {
    static thread_local std::array<uint8_t, kChunk> buf;
    asio::error_code ec;
    size_t n = sock.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      sock.async_wait(tcp::socket::wait_read, [self = shared_from_this(), done](asio::error_code wec) mutable {
        if (wec) return done(wec, std::span<const uint8_t>{});
        self->read_now(std::move(done));
      });
      return;
    }
    done(ec, std::span<const uint8_t>(buf.data(), ec ? 0 : n));
  }
  void echo() {
    auto self = shared_from_this();
    if (out.empty()) {
      read_now([self](asio::error_code ec, std::span<const uint8_t> got) {
        if (ec) {
          asio::error_code ignore;
          self->sock.shutdown(tcp::socket::shutdown_send, ignore);  // half-close like the peer
          return;
        }
        self->out.assign(got.begin(), got.end());
        self->echo();
      });
      return;
    }
    asio::async_write(sock, asio::buffer(out), [self](asio::error_code ec, size_t) {
      if (ec) return;
      Bytes().swap(self->out);  // nothing kept while idle
      self->echo();
    });
  }
  void read_discard() {
    read_now([self = shared_from_this()](asio::error_code ec, std::span<const uint8_t>) {
      if (!ec) return self->read_discard();
      if (self->params.source_bytes == 0) self->client_done = true;  // as over M-TCP
    });
  }
  void write_source() {
    uint64_t left = params.source_bytes ? params.source_bytes - sent : UINT64_MAX;
    if (left == 0 || client_done) {
      asio::error_code ignore;
      sock.shutdown(tcp::socket::shutdown_send, ignore);
      return;
    }
    out.resize(static_cast<size_t>(std::min<uint64_t>(kChunk, left)));
    source_fill(params.seed, sent, out);
    auto self = shared_from_this();
    asio::async_write(sock, asio::buffer(out), [self](asio::error_code ec, size_t n) {
      if (ec) return;
      self->sent += n;
      self->write_source();
    });
  }
};

}  // namespace

void ServiceHost::on_plain(tcp::socket sock, Bytes head) {
  log_(std::string("plain TCP client served by ") + (kind_ == Kind::source ? "source" : "echo"));
  std::make_shared<Plain>(std::move(sock), kind_, p_)->start(std::move(head));
}

}  // namespace mtcp::svc
