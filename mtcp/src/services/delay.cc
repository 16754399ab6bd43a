// delay: an asynchronous app. `WAIT <ms> <tag>\n` is answered `DONE <tag>\n` once <ms>
// milliseconds have passed; a bad line is answered `ERR <reason>\n`. Replies come in request
// order and their bytes never depend on timing, so a new owner that replays a request from the
// snapshot regenerates exactly what the former owner sent (or would have sent).
//
// The waiting happens off the app's callbacks: an asio::steady_timer on the member's event loop
// (ServiceEnv::io), or with `thread-wake 1` a std::thread per request that sleeps and then calls
// the connection's Waker from its own thread. Either way the app only learns of it in on_wake.
// At most kPendingMax requests wait at once: while full, no input is read (back-pressure).
// Snapshots are taken only when nothing is pending, so a snapshot never holds a started wait.
#include <asio/steady_timer.hpp>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <thread>

#include "services/builtin.h"
#include "services/line_buffer.h"
#include "services/pending_output.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x444C4159u;  // "DLAY"
constexpr size_t kLineBytesMax = 128;
constexpr size_t kPendingMax = 8;          // requests waiting at once
constexpr uint64_t kWaitMsMax = 60000;     // longest WAIT
constexpr size_t kReadBytes = 256;         // small reads: a full queue stops reading soon

struct DelayOptions {
  uint64_t thread_wake = 0;
  asio::io_context* io = nullptr;
};

// What a timer handler or a sleeping thread shares with the app: it outlives neither's need.
// A handler holds it weakly (the timer path) or strongly (the thread path, joined before the app
// is gone); it never touches the app itself.
struct Waits {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;  // the app is fenced, closed or gone: sleeping threads return at once
};

struct Request {
  std::string reply;                                        // DONE <tag> or ERR ...
  std::shared_ptr<std::atomic<bool>> fired = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<asio::steady_timer> timer;  // the timer path
  std::thread thread;                          // the thread-wake path
};

class DelayApp final : public sdk::ConnApp {
 public:
  explicit DelayApp(const DelayOptions& o) : o_(o) {}
  ~DelayApp() override {
    stop();
    for (auto& rq : pending_) {
      if (rq.thread.joinable()) rq.thread.join();  // told to stop: returns at once
    }
  }

  bool on_open(sdk::Conn& c, const sdk::Import& imp, std::string& why) override {
    waker_ = c.waker();
    if (imp.snap_id == 0) return true;
    Reader r(imp.snapshot);
    uint32_t magic = r.u32();
    uint64_t in = r.u64(), out = r.u64();
    if (magic != kMagic || !lines_.load(r) || !r.done()) {
      why = "not a delay snapshot";
      return false;
    }
    if (in != imp.snap_in || out != imp.snap_out) {
      why = "snapshot positions disagree with the protocol's record";
      return false;
    }
    return true;
  }
  void on_readable(sdk::Conn& c) override { pump(c); }
  void on_writable(sdk::Conn& c) override { pump(c); }
  void on_wake(sdk::Conn& c) override { pump(c); }
  void on_fenced(Error) override { stop(); }
  void on_closed(Error) override { stop(); }

 private:
  void pump(sdk::Conn& c) {
    for (;;) {
      while (!pending_.empty() && pending_.front().fired->load()) {  // answers in order
        std::string& s = pending_.front().reply;
        out_.push(Slice::copy_of(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size())));
        if (pending_.front().thread.joinable()) pending_.front().thread.join();  // it has fired: returning
        pending_.pop_front();
        answered_ = true;
      }
      if (!out_.flush(c)) return;
      if (pending_.empty() && std::exchange(answered_, false)) snapshot(c);
      while (pending_.size() < kPendingMax && lines_.has_next()) start_next();
      if (pending_.size() >= kPendingMax) return;  // full: read nothing until one is answered
      if (!pending_.empty() && pending_.front().fired->load()) continue;  // an ERR is ready
      if (c.input_closed()) {
        if (pending_.empty() && !std::exchange(closed_, true)) (void)c.close();
        return;
      }
      size_t n = c.read(buf_);
      if (n == 0) return;
      lines_.feed(std::span(buf_.data(), n));
    }
  }

  void start_next() {
    std::string line;
    LineBuffer::Got got = lines_.next(line);
    if (got == LineBuffer::Got::none) return;  // only the end of an over-long line was skipped
    Request& rq = pending_.emplace_back();
    if (got == LineBuffer::Got::too_long) return fail(rq, "line too long");
    // WAIT <ms> <tag>
    if (!line.starts_with("WAIT ")) return fail(rq, "unknown command");
    std::string_view rest = std::string_view(line).substr(5);
    uint64_t ms = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), ms);
    if (ec != std::errc() || end == rest.data() || ms > kWaitMsMax) return fail(rq, "bad milliseconds");
    std::string_view tag = rest.substr(static_cast<size_t>(end - rest.data()));
    if (tag.size() < 2 || tag[0] != ' ') return fail(rq, "missing tag");
    rq.reply = "DONE " + std::string(tag.substr(1)) + "\n";
    if (o_.thread_wake) {
      rq.thread = std::thread([w = waits_, fired = rq.fired, waker = waker_, ms] {
        std::unique_lock lk(w->mu);
        if (w->cv.wait_for(lk, std::chrono::milliseconds(ms), [&] { return w->stop; })) return;
        fired->store(true);
        waker.wake();  // from this thread: the app's on_wake runs on the member's loop
      });
      return;
    }
    rq.timer = std::make_unique<asio::steady_timer>(*o_.io, std::chrono::milliseconds(ms));
    rq.timer->async_wait([alive = std::weak_ptr<Waits>(waits_), fired = rq.fired, waker = waker_](asio::error_code err) {
      if (err || alive.expired()) return;  // cancelled, or the app is gone
      fired->store(true);
      waker.wake();
    });
  }
  void fail(Request& rq, const char* why) {
    rq.reply = std::string("ERR ") + why + "\n";
    rq.fired->store(true);
  }

  void snapshot(sdk::Conn& c) {
    Bytes b;
    Writer w(b);
    w.u32(kMagic);
    w.u64(c.input_pos());
    w.u64(c.output_pos());
    lines_.save(w);
    take_snapshot(c, std::move(b));
  }

  // No wait may complete into this app any more: timers cancelled, threads told to return.
  void stop() {
    {
      std::lock_guard lk(waits_->mu);
      waits_->stop = true;
    }
    waits_->cv.notify_all();
    for (auto& rq : pending_) {
      if (rq.timer) rq.timer->cancel();
    }
  }

  const DelayOptions o_;
  std::shared_ptr<Waits> waits_ = std::make_shared<Waits>();
  sdk::Waker waker_;
  std::deque<Request> pending_;
  bool answered_ = false;
  bool closed_ = false;
  LineBuffer lines_{kLineBytesMax};
  PendingOutput out_;
  std::array<uint8_t, kReadBytes> buf_{};
};

class DelayService final : public sdk::ServiceDef {
 public:
  DelayService() : ServiceDef("delay", "WAIT ms tag -> DONE tag after ms milliseconds (an asynchronous app)") {
    opt("thread-wake", &o_.thread_wake, "1: a thread per request sleeps and wakes the app (0: an Asio timer)", 1);
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv& env, std::string& why) override {
    if (env.io == nullptr) {
      why = "delay needs the member's event loop (ServiceEnv::io) for its timers; there is none here";
      return nullptr;
    }
    DelayOptions o = o_;
    o.io = env.io;
    return std::make_unique<sdk::OptionsFactory<DelayApp, DelayOptions>>(o);
  }

 private:
  DelayOptions o_;
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_delay_service() { return std::make_unique<DelayService>(); }

}  // namespace mtcp::svc
