#include "runtime/plain_conn.h"

#include <deque>
#include <memory>

#include "runtime/read_block.h"

namespace mtcp::rt {
namespace {

using asio::ip::tcp;
constexpr size_t kWriteBatchBytes = 1u << 20;  // bytes handed to one writev

class PlainConn final : public sdk::Conn, public std::enable_shared_from_this<PlainConn> {
 public:
  PlainConn(tcp::socket s, uint64_t id, std::function<void(const std::string&)> log, const PlainEnv& env)
      : sock_(std::move(s)), id_(id), log_(std::move(log)), env_(env), idle_(sock_.get_executor()) {
    asio::error_code ignore;
    sock_.non_blocking(true, ignore);
    ++env_.stats->live;
  }
  ~PlainConn() override {
    --env_.stats->live;
    env_.stats->buffered -= counted_;
    wake_->close();
    if (app_ && !told_closed_) app_->on_closed(Error::closed);
  }

  void start(std::unique_ptr<sdk::ConnApp> app, Bytes head) {
    app_ = std::move(app);
    wake_->set_notify(&PlainConn::notify, this);
    if (!head.empty()) in_.push(Slice(make_block(std::move(head))));
    sdk::Import imp;
    imp.plain = true;
    std::string why;
    if (!app_->on_open(*this, imp, why)) {
      violation("refused by the service: " + why);
      end(Error::closed);
      return;
    }
    arm_idle();
    dispatch();
  }

  // ---- sdk::Conn ----
  sdk::ConnId id() const override { return id_; }
  uint64_t epoch() const override { return 0; }
  bool plain() const override { return true; }
  bool replaying() const override { return false; }
  uint64_t input_pos() const override { return in_pos_; }
  uint64_t output_pos() const override { return out_pos_; }
  uint64_t output_acked() const override { return out_done_; }
  sdk::ConnStats stats() const override {
    sdk::ConnStats s;
    s.input_received = in_pos_ + in_.size();
    return s;
  }
  size_t readable() const override { return in_.size(); }
  size_t read(std::span<uint8_t> dst) override {
    size_t n = in_.copy_out(0, dst);
    in_.drop_front(n);
    in_pos_ += n;
    return n;
  }
  size_t read_slices(size_t max_bytes, std::vector<Slice>& out) override {
    size_t n = std::min(max_bytes, in_.size());
    in_.take_front(n, out);
    in_pos_ += n;
    return n;
  }
  bool input_closed() const override { return eof_ && in_.empty(); }
  size_t write_space() const override { return closing_ || ended_ ? 0 : kPlainOutputBytesMax - out_.size(); }
  Result<size_t> write(Slice s) override {
    if (ended_) return Error::subflow_lost;
    if (closing_) return Error::closed;
    size_t n = std::min(s.len, write_space());
    if (n > 0) out_.push(s.sub(0, n));
    out_pos_ += n;
    return n;
  }
  Result<size_t> write_copy(std::span<const uint8_t> bytes) override {
    size_t n = std::min(bytes.size(), write_space());
    if (n == 0) return write(Slice());
    return write(Slice::copy_of(bytes.first(n)));
  }
  Status snapshot(Bytes) override { return {}; }  // nothing to migrate
  Status close() override {
    closing_ = true;
    return {};
  }
  void violation(const std::string& why) override { log_("plain connection " + std::to_string(id_) + ": " + why); }
  sdk::Waker waker() const override { return sdk::Waker(wake_, id_); }

 private:
  static void notify(void* ctx) {
    auto* self = static_cast<PlainConn*>(ctx);
    asio::post(self->sock_.get_executor(), [w = self->weak_from_this()] {
      if (auto s = w.lock()) s->on_woken();
    });
  }
  // Closes the connection once nothing was read or written for the idle timeout (a client that
  // holds a socket open and silent would otherwise hold a descriptor and an app forever). One
  // timer per connection, re-armed for the remaining time rather than on every byte.
  void arm_idle() {
    idle_.expires_at(last_activity_ + std::chrono::milliseconds(env_.idle_timeout_ms));
    idle_.async_wait([w = weak_from_this()](asio::error_code ec) {
      auto self = w.lock();
      if (ec || !self || self->ended_) return;
      auto idle_for = std::chrono::steady_clock::now() - self->last_activity_;
      if (idle_for < std::chrono::milliseconds(self->env_.idle_timeout_ms)) return self->arm_idle();
      ++self->env_.stats->idle_closed;
      self->log_("plain connection " + std::to_string(self->id_) + ": idle for " +
                 std::to_string(self->env_.idle_timeout_ms) + " ms, closed");
      self->end(Error::idle_timeout);
    });
  }
  void touch() { last_activity_ = std::chrono::steady_clock::now(); }

  void on_woken() {
    if (ended_) return;
    (void)wake_->take();
    woken_ = true;
    dispatch();
  }

  // Tells the app what changed, then moves bytes: the same order of callbacks as the engine
  // host (host/engine_host.cc) gives connections over M-TCP.
  void dispatch() {
    for (int round = 0; round < 64 && !ended_; ++round) {
      uint64_t before_in = in_pos_, before_out = out_pos_;
      if (std::exchange(woken_, false)) app_->on_wake(*this);
      if (out_done_ > told_acked_) {
        told_acked_ = out_done_;
        app_->on_output_acked(*this, told_acked_);
      }
      if (!in_.empty() || (eof_ && !eof_told_)) {
        eof_told_ = eof_told_ || eof_;
        app_->on_readable(*this);
      }
      if (write_space() > last_space_) app_->on_writable(*this);
      last_space_ = write_space();
      if (in_pos_ == before_in && out_pos_ == before_out) break;
    }
    pump();
  }

  // Keeps this connection's share of PlainStats::buffered current (the member-wide cap).
  void recount() {
    const size_t now_bytes = ended_ ? 0 : in_.size() + out_.size();
    env_.stats->buffered = env_.stats->buffered - counted_ + now_bytes;
    counted_ = now_bytes;
  }

  void pump() {
    struct Recount {
      PlainConn* c;
      ~Recount() { c->recount(); }
    } recount_on_exit{this};
    if (ended_) return;
    if (!writing_ && !out_.empty()) write_some();
    if (!writing_ && out_.empty() && closing_ && !shut_) {
      shut_ = true;
      asio::error_code ignore;
      sock_.shutdown(tcp::socket::shutdown_send, ignore);
    }
    if (!reading_ && !eof_ && in_.size() < kPlainInputBytesMax) read_some();
    if (shut_ && eof_) end(Error::ok);
  }

  void read_some() {
    reading_ = true;
    async_read_slice(sock_, [self = shared_from_this()](asio::error_code ec, Slice data) {
      self->reading_ = false;
      if (self->ended_) return;
      self->touch();
      if (ec) {
        self->eof_ = true;
        if (ec != asio::error::eof) return self->end(Error::peer_reset);
      } else {
        self->in_.push(std::move(data));
      }
      self->dispatch();
    });
  }

  void write_some() {
    batch_.clear();
    out_.take_front(std::min(out_.size(), kWriteBatchBytes), batch_);
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(batch_.size());
    for (const auto& s : batch_) bufs.emplace_back(s.data(), s.len);
    writing_ = true;
    asio::async_write(sock_, bufs, [self = shared_from_this()](asio::error_code ec, size_t n) {
      self->writing_ = false;
      self->batch_.clear();
      if (self->ended_) return;
      self->touch();
      if (ec) return self->end(Error::peer_reset);
      self->out_done_ += n;
      self->dispatch();
    });
  }

  void end(Error why) {
    if (std::exchange(ended_, true)) return;
    asio::error_code ignore;
    idle_.cancel();
    sock_.close(ignore);
    told_closed_ = true;
    recount();
    app_->on_closed(why);
  }

  tcp::socket sock_;
  uint64_t id_;
  std::function<void(const std::string&)> log_;
  PlainEnv env_;
  asio::steady_timer idle_;
  std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();
  std::shared_ptr<sdk::WakeQueue> wake_ = std::make_shared<sdk::WakeQueue>();
  std::unique_ptr<sdk::ConnApp> app_;
  SliceQueue in_;
  SliceQueue out_;
  std::vector<Slice> batch_;  // being written
  uint64_t in_pos_ = 0, out_pos_ = 0, out_done_ = 0, told_acked_ = 0;
  size_t last_space_ = 0;
  size_t counted_ = 0;  // bytes of ours in env_.stats->buffered
  bool reading_ = false, writing_ = false, eof_ = false, eof_told_ = false, woken_ = false;
  bool closing_ = false, shut_ = false, ended_ = false, told_closed_ = false;
};

}  // namespace

void serve_plain(tcp::socket sock, Bytes head, sdk::AppFactory& factory, uint64_t id,
                 std::function<void(const std::string&)> log, const PlainEnv& env) {
  auto app = factory.make(id);
  auto conn = std::make_shared<PlainConn>(std::move(sock), id, std::move(log), env);
  conn->start(std::move(app), std::move(head));
}

}  // namespace mtcp::rt
