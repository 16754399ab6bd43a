#include "runtime/server_node.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "runtime/address.h"
#include "runtime/plain_conn.h"
#include "runtime/read_block.h"
#include "wire/control.h"

namespace mtcp::rt {

using asio::ip::tcp;

namespace {
constexpr size_t kPeerQueueBytesMax = 64u << 20; // control messages waiting for one peer
constexpr int kRoundsPerPass = 4;                 // service rounds before yielding to the loop
constexpr int kLingerMs = 2000;                   // wait this long for a closed subflow's FIN
constexpr size_t kPeerBatchMessages = 256;        // control messages gathered into one writev
constexpr size_t kPeerBatchBytes = 4u << 20;      // ... and at most this many bytes
constexpr size_t kPeerStreamPieceBytes = 1u << 20;  // a chunked message is written this much at a time
constexpr size_t kInboundReadBytes = 256u << 10;  // a control connection reads at most this much at once
// Inside a chunked message's state, one read (readv) puts up to this much straight into place.
constexpr size_t kInboundDirectReadBytes = 1u << 20;
constexpr size_t kInboundDirectMinBytes = 64u << 10;  // less waiting in the socket: read through `buf`
// A control connection whose sent data stays unacknowledged this long is dropped by the kernel
// (TCP_USER_TIMEOUT), so a member cut off and back reconnects at once instead of waiting for
// TCP's retransmission back-off (which reaches minutes).
constexpr unsigned kControlUserTimeoutMs = 1500;
// Reconnecting to a peer that keeps failing (down, or refusing our PEER_HELLO: another pool
// key) backs off: the first retry goes at once, then 10 ms doubling up to kPeerBackoffMaxMs. A
// connection counts as failed if it breaks within kPeerQuickDropMs of its hello.
constexpr core::TimeMs kPeerBackoffFirstMs = 10;
constexpr core::TimeMs kPeerBackoffMaxMs = 250;
constexpr core::TimeMs kPeerQuickDropMs = 1000;
using UserTimeout = asio::detail::socket_option::integer<IPPROTO_TCP, TCP_USER_TIMEOUT>;
constexpr int kAcceptNoFdBackoffMs = 100;    // out of descriptors: accept again after this
constexpr int kAcceptErrorBackoffMs = 10;    // any other accept failure
constexpr int kHousekeepingMs = 1000;        // idle and handshake checks, the security log
constexpr uint64_t kSecurityLogEveryMs = 5000;  // at most one security line this often
// Inbound control connections not yet verified, per remote address and in all; verified ones
// are one per peer (a newer one replaces an older).
constexpr size_t kUnverifiedPerAddressMax = 8;
constexpr size_t kUnverifiedMax = 64;
constexpr core::TimeMs kTrimEveryMs = 10000;     // trim_heap at most this often
constexpr size_t kTrimMinConnections = 64;       // ... after at least this many connections
}  // namespace

// A subflow being closed: its last frames, then a lingering read until the client's FIN.
struct ServerNode::Closing {
  Closing(asio::io_context& io, std::shared_ptr<SubflowSocket> s, std::vector<Slice> r) : sub(std::move(s)), rest(std::move(r)), timer(io) {}
  std::shared_ptr<SubflowSocket> sub;
  std::vector<Slice> rest;
  asio::steady_timer timer;
  std::array<uint8_t, 16u << 10> sink{};
};

struct ServerNode::Peer {
  explicit Peer(asio::io_context& io) : sock(io), retry(io), backoff(io) {}
  tcp::socket sock;
  asio::steady_timer retry;    // the handshake's deadline
  asio::steady_timer backoff;  // the next connection attempt, while backing off
  bool backing_off = false;
  uint32_t failures = 0;          // connections in a row that failed or broke quickly
  core::TimeMs connect_after = 0;  // no attempt before this
  core::TimeMs connected_at = 0;
  bool connected = false;    // PEER_HELLO sent: messages may follow
  bool connecting = false;   // connecting, or waiting for the receiver's challenge
  bool writing = false;
  bool flush_due = false;  // listed in peers_to_flush_
  // A message, or a chunked one still being encoded (written a piece at a time, the receiver
  // checking each piece while the next is tagged).
  struct Out {
    Bytes bytes;
    std::shared_ptr<wire::ControlEncoder> stream;
    size_t size() const { return stream ? stream->size() : bytes.size(); }
  };
  std::deque<Out> queue;
  size_t queued = 0;  // bytes of the queue not written yet
  std::array<uint8_t, wire::kChallengeBytes> challenge{};
  core::TimeMs last_write = 0;
};

// A control connection from a peer. Reads of up to kInboundReadBytes go to `buf` and through
// the reader, which keeps what a message needs; inside a chunked message's state the reads go
// straight to where the decoded message keeps it (ControlReader::direct). Until its PEER_HELLO verified, the reader takes messages
// of at most kControlUnverifiedBytesMax and nothing from the connection reaches the engine.
struct ServerNode::Inbound {
  Inbound(tcp::socket s, const cert::Key& pool_key)
      : sock(std::move(s)), reader(pool_key, wire::kControlUnverifiedBytesMax) {}
  tcp::socket sock;
  // Frames, authenticates and decodes; a chunked message is checked chunk by chunk as it
  // arrives (docs/PROTOCOL.md §5 "Chunked messages"). At most kControlUnverifiedBytesMax per
  // message until the PEER_HELLO is verified.
  wire::ControlReader reader;
  std::unique_ptr<uint8_t[]> buf;  // one read; not value-initialised: reads overwrite it
  uint64_t key = 0;
  std::string addr;                // the remote address, for the per-address cap
  wire::ChallengeNonce nonce{};
  std::array<uint8_t, wire::kChallengeBytes> challenge{};
  bool verified = false;
  bool closed = false;
  core::ServerId peer = 0;         // once verified
  core::TimeMs opened = 0;
  core::TimeMs last = 0;           // last complete message
};

ServerNode::ServerNode(asio::io_context& io, const PoolConfig& pool, core::ServerId self, sdk::AppFactory& factory, Log log)
    : io_(io), pool_(pool), self_(self), factory_(factory), log_(std::move(log)), data_acceptor_(io), control_acceptor_(io),
      data_backoff_(io), control_backoff_(io), housekeeping_(io), timer_(io) {
  plain_.idle_timeout_ms = pool.limits.plain_idle_timeout_ms;
  core::ServerConfig cfg;
  cfg.self = self;
  cfg.pool_key = pool.pool_key;
  cfg.stream_control = true;  // chunked messages are written while they are tagged (queue_control)
  cfg.limits = pool.limits;
  for (const auto& m : pool.members) cfg.pool.push_back({m.id, m.data});
  engine_ = std::make_unique<core::ServerEngine>(cfg, rng_);
  host_ = std::make_unique<host::EngineHost>(*engine_, factory_, static_cast<host::Transport&>(*this), log_);
}

ServerNode::~ServerNode() {
  stop();
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
  host_.reset();  // first: no Waker can reach post_service() once it is gone
  *alive_ = false;
}

bool ServerNode::start(std::string& why) {
  const Member* me = pool_.find(self_);
  if (!me) {
    why = "server id " + std::to_string(self_) + " is not a member of the pool";
    return false;
  }
  core::ServerConfig check = engine_->config();
  if (Status st = core::validate(check); !st) {
    why = "pool configuration refused: " + std::string(to_string(st.error()));
    return false;
  }
  for (auto [acceptor, text, what] : {std::tuple{&data_acceptor_, me->data, "data"}, std::tuple{&control_acceptor_, me->control, "control"}}) {
    tcp::endpoint ep;
    if (!parse_endpoint(text, ep, why)) return false;
    asio::error_code ec;
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) acceptor->non_blocking(true, ec);  // shed_one() accepts directly, never blocking
    if (ec) {
      why = std::string("cannot listen on ") + what + " address " + text + ": " + ec.message();
      return false;
    }
  }
  for (const auto& m : pool_.members) {
    if (m.id != self_) peers_.emplace(m.id, std::make_unique<Peer>(io_));
  }
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  accept_data();
  accept_control();
  arm_timer();
  housekeeping();
  return true;
}

void ServerNode::stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  data_acceptor_.close(ec);
  control_acceptor_.close(ec);
  timer_.cancel();
  data_backoff_.cancel();
  control_backoff_.cancel();
  housekeeping_.cancel();
  for (auto& [key, in] : inbound_) in->sock.close(ec);
  for (auto& [id, s] : subs_) s->sock.close(ec);
  for (auto& [id, p] : peers_) {
    p->sock.close(ec);
    p->retry.cancel();
    p->backoff.cancel();
  }
}

// ---- data subflows ------------------------------------------------------------------------

void ServerNode::accept_data() {
  data_acceptor_.async_accept([this, alive = alive_](asio::error_code ec, tcp::socket sock) {
    if (!*alive) return;  // the node is gone (the io_context outlived it)
    if (stopped_) return;
    if (ec) return accept_failed(data_acceptor_, data_backoff_, ec, &ServerNode::accept_data);
    {
      core::SubflowId id = next_sub_++;
      auto sub = std::make_shared<SubflowSocket>(std::move(sock));
      sub->ready();
      subs_.emplace(id, std::move(sub));
      engine_->on_subflow_open(id, now_ms());
      service();
    }
    accept_data();
  });
}

void ServerNode::accept_failed(tcp::acceptor& a, asio::steady_timer& t, const asio::error_code& ec,
                               void (ServerNode::*again)()) {
  if (ec == asio::error::operation_aborted) return;
  int delay = kAcceptErrorBackoffMs;
  if (ec == asio::error::no_descriptors || ec == std::errc::too_many_files_open_in_system ||
      ec == asio::error::no_buffer_space || ec == asio::error::no_memory) {
    ++rc_.accept_fd_exhausted;
    shed_one(a);
    delay = kAcceptNoFdBackoffMs;
  } else {
    ++rc_.accept_errors;
  }
  t.expires_after(std::chrono::milliseconds(delay));
  t.async_wait([this, alive = alive_, again](asio::error_code wec) {
    if (!*alive || stopped_ || wec) return;
    (this->*again)();
  });
}

// Out of descriptors: free the reserve, take the connection at the head of the backlog and
// close it at once (its client learns now instead of waiting in the backlog), then take the
// reserve back. Idle connections are closed by their timeouts meanwhile.
void ServerNode::shed_one(tcp::acceptor& a) {
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
  int fd = ::accept4(a.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) {
    ::close(fd);
    ++rc_.accept_shed;
  }
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void ServerNode::read_sub(core::SubflowId id) {
  auto sp = subs_.at(id);
  // Each read lands in a large block that the engine keeps as slices (small reads are copied);
  // no block is held while the subflow is idle.
  sp->start_read(alive_, [this, id, sp](asio::error_code ec, Slice data) {
    auto it = subs_.find(id);
    if (stopped_ || it == subs_.end() || it->second != sp) return;
    host_->mark_subflow(id);
    if (ec) {
      if (!sp->closing) lost(id);
    } else {
      engine_->on_subflow_data(id, std::move(data), now_ms());
    }
    service();
  });
}

void ServerNode::write_sub(core::SubflowId id) {
  auto sp = subs_.at(id);
  auto poll = [this, id](size_t budget, std::vector<Slice>& out) { engine_->poll_transmit(id, budget, out); };
  sp->start_write(poll, alive_, [this, id, sp](asio::error_code ec) {
    auto it = subs_.find(id);
    if (stopped_ || it == subs_.end() || it->second != sp) return;
    host_->mark_subflow(id);
    if (ec) lost(id);
    service();
  });
}

void ServerNode::lost(core::SubflowId id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  it->second->close();
  subs_.erase(it);
  engine_->on_subflow_closed(id, now_ms());
}

// The engine asked to close: send what it still queued (a REFUSE, a RESET), then close.
void ServerNode::close_sub(core::SubflowId id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return;
  SubflowSocket& s = *it->second;
  s.closing = true;
  if (s.writing) return;  // finished in service() once the write completes
  std::vector<Slice> rest;
  engine_->poll_transmit(id, SIZE_MAX, rest);
  engine_->on_subflow_closed(id, now_ms());
  auto holder = std::make_shared<Closing>(io_, std::move(it->second), std::move(rest));
  subs_.erase(it);
  std::vector<asio::const_buffer> bufs;
  for (const auto& sl : holder->rest) bufs.emplace_back(sl.data(), sl.len);
  asio::async_write(holder->sub->sock, bufs, [holder](asio::error_code ec, size_t) {
    asio::error_code ignore;
    if (ec) return holder->sub->sock.close(ignore);
    // Lingering close: send our FIN, then read (and drop) until the client's FIN. Closing with
    // unread bytes would send a reset, and a reset can destroy the last frames (CLOSE, a
    // REFUSE) before the client has read them.
    holder->sub->sock.shutdown(tcp::socket::shutdown_send, ignore);
    holder->timer.expires_after(std::chrono::milliseconds(kLingerMs));
    holder->timer.async_wait([holder](asio::error_code) {
      asio::error_code ig;
      holder->sub->sock.close(ig);
    });
    drain_until_eof(holder);
  });
}

void ServerNode::drain_until_eof(std::shared_ptr<Closing> c) {
  c->sub->sock.async_read_some(asio::buffer(c->sink), [c](asio::error_code ec, size_t) {
    if (!ec) return drain_until_eof(c);
    c->timer.cancel();
    asio::error_code ignore;
    c->sub->sock.close(ignore);
  });
}

// ---- control channel ----------------------------------------------------------------------

void ServerNode::send_control(core::ServerId to, Bytes msg) { queue_control(to, std::move(msg), nullptr); }

void ServerNode::send_control_stream(core::ServerId to, std::shared_ptr<wire::ControlEncoder> m) {
  queue_control(to, {}, std::move(m));
}

void ServerNode::queue_control(core::ServerId to, Bytes msg, std::shared_ptr<wire::ControlEncoder> stream) {
  auto it = peers_.find(to);
  if (it == peers_.end()) return;
  Peer& p = *it->second;
  Peer::Out out{std::move(msg), std::move(stream)};
  // The engine retries what matters; a peer that does not keep up loses messages, not memory.
  if (p.queued + out.size() > kPeerQueueBytesMax) return;
  p.queued += out.size();
  p.queue.push_back(std::move(out));
  if (!p.connected) return connect_peer(to);
  if (!in_service_) return write_peer(to);
  // Written at the end of the service pass (flush_peers), all of a pass's messages to this
  // peer in one writev: under load a pass sends one member several connections' replication
  // and acknowledgements, and a write each woke the receiver once per message.
  if (!p.flush_due) {
    p.flush_due = true;
    peers_to_flush_.push_back(to);
  }
}

void ServerNode::flush_peers() {
  for (core::ServerId to : std::exchange(peers_to_flush_, {})) {
    auto it = peers_.find(to);
    if (it == peers_.end()) continue;
    it->second->flush_due = false;
    write_peer(to);
  }
}

void ServerNode::peer_failed(Peer& p) {
  ++p.failures;
  const core::TimeMs delay =
      p.failures <= 1 ? 0 : std::min<core::TimeMs>(kPeerBackoffMaxMs, kPeerBackoffFirstMs << std::min<uint32_t>(p.failures - 2, 16));
  p.connect_after = now_ms() + delay;
}

void ServerNode::connect_peer(core::ServerId to) {
  Peer& p = *peers_.at(to);
  if (p.connecting || p.connected || p.backing_off) return;
  const core::TimeMs now = now_ms();
  if (now < p.connect_after) {
    p.backing_off = true;
    p.backoff.expires_after(std::chrono::milliseconds(p.connect_after - now));
    p.backoff.async_wait([this, alive = alive_, to](asio::error_code ec) {
      if (!*alive || stopped_ || ec) return;
      Peer& peer = *peers_.at(to);
      peer.backing_off = false;
      if (!peer.queue.empty()) connect_peer(to);
    });
    return;
  }
  tcp::endpoint ep;
  std::string why;
  if (!parse_endpoint(pool_.find(to)->control, ep, why)) return;
  p.connecting = true;
  p.sock = tcp::socket(io_);
  p.sock.async_connect(ep, [this, alive = alive_, to](asio::error_code ec) {
    if (!*alive) return;  // the node is gone (the io_context outlived it)
    if (stopped_) return;
    Peer& peer = *peers_.at(to);
    if (ec) {
      // Down or unreachable: drop what was queued (the engine resends), retry later.
      peer.connecting = false;
      peer.queue.clear();
      peer.queued = 0;
      peer_failed(peer);
      return;
    }
    // Still `connecting` until our PEER_HELLO is out (peer_handshake).
    asio::error_code ignore;
    peer.sock.set_option(tcp::no_delay(true), ignore);
    peer.sock.set_option(UserTimeout(kControlUserTimeoutMs), ignore);
    peer_handshake(to);
  });
}

// The receiver speaks first (its challenge); our PEER_HELLO answers it and goes out ahead of
// everything queued meanwhile.
void ServerNode::peer_handshake(core::ServerId to) {
  Peer& p = *peers_.at(to);
  p.retry.expires_after(std::chrono::milliseconds(pool_.limits.control_hello_timeout_ms));
  p.retry.async_wait([this, alive = alive_, to](asio::error_code ec) {
    if (!*alive || stopped_ || ec) return;
    Peer& peer = *peers_.at(to);
    if (peer.connecting) {
      asio::error_code ignore;
      peer.sock.close(ignore);  // the read below completes with an error and drops the peer
    }
  });
  asio::async_read(p.sock, asio::buffer(p.challenge), [this, alive = alive_, to](asio::error_code ec, size_t) {
    if (!*alive || stopped_) return;
    Peer& peer = *peers_.at(to);
    peer.retry.cancel();
    auto nonce = ec ? Result<wire::ChallengeNonce>(Error::truncated) : wire::decode_challenge(peer.challenge);
    Result<Bytes> hello = Error::bad_field;
    if (nonce) hello = wire::encode_control(pool_.pool_key, {self_, to, wire::PeerHello{*nonce}});
    if (!hello) {
      ++rc_.control_connect_failed;
      return drop_peer(to);
    }
    peer.connecting = false;
    peer.connected = true;
    peer.last_write = now_ms();
    peer.connected_at = peer.last_write;
    peer.queued += hello->size();
    peer.queue.push_front({std::move(*hello), nullptr});
    write_peer(to);
  });
}

void ServerNode::drop_peer(core::ServerId to) {
  Peer& p = *peers_.at(to);
  if (!p.connected || now_ms() - p.connected_at < kPeerQuickDropMs) {
    peer_failed(p);
  } else {
    p.failures = 0;
    p.connect_after = 0;
  }
  asio::error_code ignore;
  p.sock.close(ignore);
  p.retry.cancel();
  p.connected = false;
  p.connecting = false;
  p.queue.clear();  // the engine resends what matters
  p.queued = 0;
}

// Everything queued for the peer goes out in one gathered write (many small REPL_LOG messages
// would otherwise cost one system call and one event-loop round each, and a GRANT would wait
// behind them).
void ServerNode::write_peer(core::ServerId to) {
  Peer& p = *peers_.at(to);
  if (p.writing || p.queue.empty() || !p.connected) return;
  p.writing = true;
  auto batch = std::make_shared<std::vector<Bytes>>();
  size_t bytes = 0;
  std::vector<asio::const_buffer> bufs;
  std::shared_ptr<wire::ControlEncoder> enc;  // kept until the write ends: the views point into it
  if (p.queue.front().stream) {
    // The next piece of a chunked message, written from the message's own bytes (no copy);
    // the next one is tagged when this one is written, while the receiver checks this one.
    enc = p.queue.front().stream;
    std::vector<std::span<const uint8_t>> views;
    enc->next_views(views, kPeerStreamPieceBytes);
    for (auto v : views) {
      bufs.emplace_back(asio::buffer(v.data(), v.size()));
      bytes += v.size();
    }
    if (enc->done()) p.queue.pop_front();
  }
  while (!p.queue.empty() && !p.queue.front().stream && batch->size() < kPeerBatchMessages &&
         (bytes == 0 || bytes + p.queue.front().size() <= kPeerBatchBytes)) {
    bytes += p.queue.front().size();
    batch->push_back(std::move(p.queue.front().bytes));
    p.queue.pop_front();
  }
  p.queued -= bytes;
  for (const auto& m : *batch) bufs.emplace_back(asio::buffer(m));
  asio::async_write(p.sock, bufs, [this, alive = alive_, to, batch, enc](asio::error_code ec, size_t) {
    if (!*alive) return;  // the node is gone (the io_context outlived it)
    if (stopped_) return;
    Peer& peer = *peers_.at(to);
    peer.writing = false;
    if (ec) return drop_peer(to);
    peer.last_write = now_ms();
    write_peer(to);
  });
}

void ServerNode::accept_control() {
  control_acceptor_.async_accept([this, alive = alive_](asio::error_code ec, tcp::socket sock) {
    if (!*alive) return;  // the node is gone (the io_context outlived it)
    if (stopped_) return;
    if (ec) return accept_failed(control_acceptor_, control_backoff_, ec, &ServerNode::accept_control);
    open_inbound(std::move(sock));
    accept_control();
  });
}

void ServerNode::open_inbound(tcp::socket sock) {
  asio::error_code ec;
  auto remote = sock.remote_endpoint(ec);
  if (ec) return;  // already gone
  std::string addr = remote.address().to_string();
  size_t unverified = 0, same_addr = 0;
  for (const auto& [key, in] : inbound_) {
    if (in->verified) continue;
    ++unverified;
    same_addr += in->addr == addr;
  }
  if (unverified >= kUnverifiedMax || same_addr >= kUnverifiedPerAddressMax) {
    ++rc_.control_refused;
    sock.close(ec);
    return;
  }
  auto in = std::make_shared<Inbound>(std::move(sock), pool_.pool_key);
  in->key = next_inbound_++;
  in->addr = std::move(addr);
  in->opened = in->last = now_ms();
  rng_.fill(in->nonce);
  in->challenge = wire::encode_challenge(in->nonce);
  inbound_.emplace(in->key, in);
  asio::async_write(in->sock, asio::buffer(in->challenge), [this, alive = alive_, in](asio::error_code wec, size_t) {
    if (!*alive || stopped_) return;
    if (wec) close_inbound(in);
  });
  read_inbound(in);
}

void ServerNode::close_inbound(const std::shared_ptr<Inbound>& in) {
  if (std::exchange(in->closed, true)) return;
  asio::error_code ignore;
  in->sock.close(ignore);
  inbound_.erase(in->key);
  if (auto it = inbound_by_peer_.find(in->peer); in->verified && it != inbound_by_peer_.end() && it->second == in->key)
    inbound_by_peer_.erase(it);
}

// The first message of an inbound connection: a PEER_HELLO from a member, to us, carrying our
// nonce. False (and the connection is dropped) otherwise.
bool ServerNode::on_peer_hello(const std::shared_ptr<Inbound>& in, const wire::ControlMessage& m) {
  const auto* hello = std::get_if<wire::PeerHello>(&m.body);
  if (!hello || hello->nonce != in->nonce || m.to != self_ || m.from == self_ || !pool_.find(m.from)) {
    ++rc_.control_handshake_failed;
    return false;
  }
  in->verified = true;
  in->peer = m.from;
  in->reader.set_message_max(kControlMessageBytesMax);
  // One connection per peer: the newer replaces the older, which its sender has given up on.
  if (auto it = inbound_by_peer_.find(in->peer); it != inbound_by_peer_.end()) {
    if (auto old = inbound_.find(it->second); old != inbound_.end()) {
      auto keep = old->second;
      close_inbound(keep);
    }
  }
  inbound_by_peer_[in->peer] = in->key;
  return true;
}

void ServerNode::read_inbound(std::shared_ptr<Inbound> in) {
  if (in->closed) return;
  // Inside a chunked message's state (a GRANT or REPL_STATE of megabytes): read its chunks
  // straight to where the decoded message keeps them and their tags beside, with one readv,
  // instead of through `buf` and a copy.
  // Only for bytes already there (FIONREAD): direct() grows the message's buffer to what it
  // offers, and offering a megabyte to a peer that trickles (a CPU-starved owner) made the
  // claimer clear a megabyte for every few kilobytes read.
  asio::error_code avail_ec;
  const size_t avail = in->sock.available(avail_ec);
  std::vector<std::span<uint8_t>> direct;
  if (!avail_ec && avail >= kInboundDirectMinBytes) direct = in->reader.direct(std::min(avail, kInboundDirectReadBytes));
  if (!direct.empty()) {
    std::vector<asio::mutable_buffer> bufs;
    bufs.reserve(direct.size());
    for (auto b : direct) bufs.emplace_back(b.data(), b.size());
    in->sock.async_read_some(bufs, [this, alive = alive_, in](asio::error_code ec, size_t n) {
      if (!*alive) return;  // the node is gone (the io_context outlived it)
      if (stopped_ || in->closed) return;
      if (ec) return close_inbound(in);
      auto m = in->reader.commit(n);
      if (!take_inbound(in, m)) return;
      service();
      read_inbound(in);
    });
    return;
  }
  if (!in->buf) in->buf.reset(new uint8_t[kInboundReadBytes]);
  in->sock.async_read_some(asio::buffer(in->buf.get(), kInboundReadBytes), [this, alive = alive_, in](asio::error_code ec, size_t n) {
    if (!*alive) return;  // the node is gone (the io_context outlived it)
    if (stopped_ || in->closed) return;
    if (ec) return close_inbound(in);
    std::span<const uint8_t> got(in->buf.get(), n);
    while (!got.empty()) {
      auto m = in->reader.next(got);
      if (!take_inbound(in, m)) return;
      if (!m->has_value()) break;
    }
    service();
    read_inbound(in);
  });
}

bool ServerNode::take_inbound(const std::shared_ptr<Inbound>& in, Result<std::optional<wire::ControlMessage>>& m) {
  if (!m) {
    // Not our protocol or version, over the size allowed, or a tag or body that fails its
    // check: the stream cannot be trusted past it. Drop the connection (the sender reconnects,
    // and the engine resends what matters).
    Error e = m.error();
    if (!in->verified) ++rc_.control_handshake_failed;
    else if (e == Error::bad_mac || e == Error::bad_length || e == Error::bad_field) ++rc_.control_bad_message;
    else ++rc_.control_bad_header;
    close_inbound(in);
    return false;
  }
  if (!m->has_value()) return true;
  wire::ControlMessage& msg = **m;
  in->last = now_ms();
  if (!in->verified) {
    if (!on_peer_hello(in, msg)) {
      close_inbound(in);
      return false;
    }
  } else if (msg.from != in->peer) {
    ++rc_.control_peer_mismatch;
    close_inbound(in);
    return false;
  } else {
    core::ServerId from = msg.from;
    engine_->on_control_message(from, std::move(msg), now_ms());  // m stays engaged: there was one
  }
  return true;
}

// ---- housekeeping ---------------------------------------------------------------------------

RuntimeCounters ServerNode::runtime_counters() const {
  RuntimeCounters c = rc_;
  c.plain_idle_closed = plain_.stats->idle_closed;
  return c;
}

// Once a second: control connections that never said hello or went idle are closed (an idle
// outbound one at half the receiver's timeout, so a sender never writes into a connection the
// receiver has just dropped), and the security counters are logged if they moved.
void ServerNode::housekeeping() {
  if (stopped_) return;
  const core::TimeMs now = now_ms();
  std::vector<std::shared_ptr<Inbound>> drop;
  for (const auto& [key, in] : inbound_) {
    if (!in->verified && now - in->opened >= pool_.limits.control_hello_timeout_ms) {
      ++rc_.control_handshake_failed;
      drop.push_back(in);
    } else if (in->verified && now - in->last >= pool_.limits.control_idle_timeout_ms) {
      ++rc_.control_idle_closed;
      drop.push_back(in);
    }
  }
  for (auto& in : drop) close_inbound(in);
  for (auto& [id, p] : peers_) {
    if (p->connected && !p->writing && p->queue.empty() && now - p->last_write >= pool_.limits.control_idle_timeout_ms / 2) {
      ++rc_.control_idle_closed;
      drop_peer(id);
    }
  }
  log_security();
  trim_heap(now);
  housekeeping_.expires_after(std::chrono::milliseconds(kHousekeepingMs));
  housekeeping_.async_wait([this, alive = alive_](asio::error_code ec) {
    if (!*alive || stopped_ || ec) return;
    housekeeping();
  });
}

// The allocator keeps freed memory up to a 128 MiB trim threshold (tune_allocator_for_states),
// so a member that served a burst of large connections would keep hundreds of MiB after they
// left. When at least half of the connections seen since the last trim are gone (and at least
// 64 of them), the heap is trimmed, at most every 10 s.
void ServerNode::trim_heap(core::TimeMs now) {
  const size_t conns = engine_->connection_count() + plain_.stats->live;
  trim_peak_ = std::max(trim_peak_, conns);
  if (now - trimmed_at_ < kTrimEveryMs || trim_peak_ < kTrimMinConnections || conns > trim_peak_ / 2) return;
  ::malloc_trim(0);
  trimmed_at_ = now;
  trim_peak_ = conns;
}

// What an operator must see when the member is probed or attacked: one line per
// kSecurityLogEveryMs at most, with how much each counter grew since the last line.
void ServerNode::log_security() {
  const core::TimeMs now = now_ms();
  if (logged_at_ != 0 && now - logged_at_ < kSecurityLogEveryMs) return;
  const Counters& e = engine_->counters();
  const RuntimeCounters r = runtime_counters();
  std::string line;
  auto add = [&](const char* name, uint64_t now_v, uint64_t then_v) {
    if (now_v > then_v) line += std::string(line.empty() ? "" : ", ") + std::to_string(now_v - then_v) + " " + name;
  };
  add("frames_malformed", e.frames_malformed, logged_engine_.frames_malformed);
  add("control_malformed", e.control_malformed, logged_engine_.control_malformed);
  add("proofs_bad", e.proofs_bad, logged_engine_.proofs_bad);
  add("certs_expired", e.certs_expired, logged_engine_.certs_expired);
  add("migrate_rate_limited", e.migrate_rate_limited, logged_engine_.migrate_rate_limited);
  add("limit_refusals", e.limit_refusals, logged_engine_.limit_refusals);
  add("replay_mismatches", e.replay_mismatches, logged_engine_.replay_mismatches);
  r.for_each([&](const char* name, uint64_t v) {
    uint64_t then = 0;
    logged_rt_.for_each([&](const char* n2, uint64_t v2) {
      if (std::strcmp(name, n2) == 0) then = v2;
    });
    add(name, v, then);
  });
  if (line.empty()) return;
  log_("security: since " + (logged_at_ == 0 ? std::string("start") : std::to_string(now - logged_at_) + " ms ago") + ": " + line +
       " (mtcpctl status shows the totals)");
  logged_engine_ = e;
  logged_rt_ = r;
  logged_at_ = now;
}

// ---- the loop -----------------------------------------------------------------------------

void ServerNode::arm_timer() {
  if (stopped_) return;
  timer_.arm(engine_->next_deadline(), alive_, [this] {
    if (stopped_) return;
    engine_->on_timer(now_ms());
    service();
  });
}

// ---- the host's transport ----------------------------------------------------------------

void ServerNode::plain_tcp(core::SubflowId sub, Bytes head) {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return;
  // Take the descriptor out (release() cancels a pending read, whose handler finds the subflow
  // gone) and serve a fresh socket on it with the same service, through the plain adapter.
  asio::error_code ec;
  auto& old = it->second->sock;
  auto proto = old.local_endpoint(ec).protocol();
  auto fd = ec ? -1 : old.release(ec);
  subs_.erase(it);
  if (ec || fd < 0) return;
  tcp::socket sock(io_);
  sock.assign(proto, fd, ec);
  if (ec) return;
  if (plain_.stats->live >= pool_.limits.plain_connections_max ||
      plain_.stats->buffered >= pool_.limits.member_buffered_bytes_max) {
    ++rc_.plain_refused;
    sock.close(ec);
    return;
  }
  log_("plain TCP client on subflow " + std::to_string(sub));
  serve_plain(std::move(sock), std::move(head), factory_, sub, log_, plain_);
}

bool ServerNode::subflow_ready(core::SubflowId id) {
  auto it = subs_.find(id);
  if (it == subs_.end()) return false;
  auto s = it->second;  // write_sub/read_sub keep it alive
  bool moved = false;
  if (!s->closing && !s->writing && engine_->wants_transmit(id)) {
    write_sub(id);
    moved = true;
  }
  if (!s->reading && !s->closing && engine_->wants_read(id)) read_sub(id);
  if (s->closing && !s->writing) {
    close_sub(id);  // its last write finished: flush the rest and close
    moved = true;
  }
  return moved;
}

std::vector<core::SubflowId> ServerNode::subflows() const {
  std::vector<core::SubflowId> v;
  v.reserve(subs_.size());
  for (const auto& [id, s] : subs_) v.push_back(id);
  return v;
}

// Any thread (an app's Waker): the pass runs on the io_context's thread.
void ServerNode::post_service() {
  asio::post(io_, [alive = alive_, this] {
    if (*alive && !stopped_) service();
  });
}

void ServerNode::service() {
  bool outer = !std::exchange(in_service_, true);
  bool busy = host_->service(kRoundsPerPass);
  if (outer) {
    in_service_ = false;
    flush_peers();
  }
  if (busy && !service_posted_) {
    service_posted_ = true;
    asio::post(io_, [this, alive = alive_] {
      if (!*alive) return;
      service_posted_ = false;
      if (!stopped_) service();
    });
  }
  arm_timer();
}

}  // namespace mtcp::rt
