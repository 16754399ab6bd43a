// counter: the worked example of docs/API.md. A line protocol with one counter per connection:
//   ADD <n>\n   (n a signed decimal)   ->  OK <total>\n
//   GET\n                              ->  <total>\n
//   anything else                      ->  ERR <reason>\n
// A line longer than kLineBytesMax is answered "ERR line too long" once and skipped to its end.
// The state (total, requests answered, the unfinished next line) is snapshotted every
// `snapshot-every` requests once their replies are all written, so another member resumes it
// exactly; between snapshots the replies are a pure function of the state and the input.
#include <charconv>

#include "services/builtin.h"
#include "services/line_buffer.h"
#include "services/pending_output.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x434E5452u;  // "CNTR"
constexpr size_t kLineBytesMax = 256;     // a request line, without its newline
constexpr size_t kReadBytes = 4096;       // input read per round

struct CounterOptions {
  uint64_t snapshot_every = 1;  // requests between snapshots
};

class CounterApp final : public sdk::ConnApp {
 public:
  explicit CounterApp(const CounterOptions& o) : o_(o) {}

  bool on_open(sdk::Conn&, const sdk::Import& imp, std::string& why) override {
    if (imp.snap_id == 0) return true;  // a new connection (or a plain one): total 0
    Reader r(imp.snapshot);
    uint32_t magic = r.u32();
    uint64_t in = r.u64(), out = r.u64();
    total_ = static_cast<int64_t>(r.u64());
    requests_ = r.u64();
    if (magic != kMagic || !lines_.load(r) || !r.done()) {
      why = "not a counter snapshot";
      return false;
    }
    if (in != imp.snap_in || out != imp.snap_out) {
      why = "snapshot positions disagree with the protocol's record";
      return false;
    }
    last_snapshot_ = requests_;
    return true;
  }
  void on_readable(sdk::Conn& c) override { pump(c); }
  void on_writable(sdk::Conn& c) override { pump(c); }

 private:
  void pump(sdk::Conn& c) {
    for (;;) {
      if (!out_.flush(c)) return;  // back-pressure: read nothing more until on_writable
      // Every reply written: a consistent point (the unfinished line is part of the state).
      if (requests_ >= last_snapshot_ + o_.snapshot_every) {
        Bytes b;
        Writer w(b);
        w.u32(kMagic);
        w.u64(c.input_pos());
        w.u64(c.output_pos());
        w.u64(static_cast<uint64_t>(total_));
        w.u64(requests_);
        lines_.save(w);
        take_snapshot(c, std::move(b));
        last_snapshot_ = requests_;
      }
      if (c.input_closed()) {
        if (!std::exchange(closed_, true)) (void)c.close();
        return;
      }
      size_t n = c.read(buf_);
      if (n == 0) return;
      lines_.feed(std::span(buf_.data(), n));
      std::string line, reply;
      for (LineBuffer::Got g; (g = lines_.next(line)) != LineBuffer::Got::none;) {
        reply += g == LineBuffer::Got::too_long ? "ERR line too long\n" : answer(line);
        ++requests_;
      }
      out_.push(Slice::copy_of(std::span(reinterpret_cast<const uint8_t*>(reply.data()), reply.size())));
    }
  }

  std::string answer(std::string_view line) {
    if (line == "GET") return std::to_string(total_) + "\n";
    if (!line.starts_with("ADD ")) return line.empty() ? "ERR empty line\n" : "ERR unknown command\n";
    std::string_view num = line.substr(4);
    int64_t n = 0;
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
    if (num.empty() || ec != std::errc() || end != num.data() + num.size()) return "ERR bad number\n";
    int64_t sum = 0;
    if (__builtin_add_overflow(total_, n, &sum)) return "ERR overflow\n";  // the total is kept
    total_ = sum;
    return "OK " + std::to_string(total_) + "\n";
  }

  const CounterOptions o_;
  int64_t total_ = 0;
  uint64_t requests_ = 0;
  uint64_t last_snapshot_ = 0;
  bool closed_ = false;
  LineBuffer lines_{kLineBytesMax};
  PendingOutput out_;
  std::array<uint8_t, kReadBytes> buf_{};
};

class CounterService final : public sdk::ServiceDef {
 public:
  CounterService() : ServiceDef("counter", "the example line protocol: ADD n, GET (a counter per connection)") {
    opt("snapshot-every", &o_.snapshot_every, "Requests between snapshots (1: after every request)", 1, UINT64_MAX);
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv&, std::string&) override {
    return std::make_unique<sdk::OptionsFactory<CounterApp, CounterOptions>>(o_);
  }

 private:
  CounterOptions o_;
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_counter_service() { return std::make_unique<CounterService>(); }

}  // namespace mtcp::svc
