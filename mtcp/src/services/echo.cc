// echo: every input byte back, in order. Zero copy: the slices read from the connection are
// written back as they are. Snapshots are taken when nothing is pending, so they hold equal
// input and output positions.
#include "services/builtin.h"
#include "services/pending_output.h"
#include "services/snapshot_codec.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x4543484Fu;  // "ECHO"
constexpr size_t kReadMin = 64u << 10;   // read at least this much when the send log is full
constexpr int kRounds = 64;

struct EchoOptions {
  uint64_t snapshot_every = 256u << 10;
  uint64_t state_bytes = 0;
};

class EchoApp final : public sdk::ConnApp {
 public:
  explicit EchoApp(const EchoOptions& o) : o_(o) {}

  bool on_open(sdk::Conn&, const sdk::Import& imp, std::string& why) override {
    if (!import_positions(imp, kMagic, static_cast<uint32_t>(o_.state_bytes), pos_, why)) return false;
    last_snapshot_ = pos_.in;
    return true;
  }
  void on_readable(sdk::Conn& c) override { pump(c); }
  void on_writable(sdk::Conn& c) override { pump(c); }

 private:
  void pump(sdk::Conn& c) {
    for (int round = 0; round < kRounds; ++round) {
      if (!out_.flush(c)) return;  // full (on_writable comes) or refused
      pos_.out = pos_.in;          // everything read has been written back: a consistent point
      if (pos_.in >= last_snapshot_ + o_.snapshot_every) {
        take_snapshot(c, encode_positions(kMagic, pos_, static_cast<uint32_t>(o_.state_bytes)));
        last_snapshot_ = pos_.in;
      }
      if (!closed_ && c.input_closed()) {
        closed_ = true;  // the client closed its side and has every byte back: close ours
        (void)c.close();
        return;
      }
      got_.clear();
      size_t n = c.read_slices(std::max(c.write_space(), kReadMin), got_);
      if (n == 0) return;
      pos_.in += n;
      for (auto& s : got_) out_.push(std::move(s));
    }
  }

  const EchoOptions o_;
  Positions pos_;
  uint64_t last_snapshot_ = 0;
  bool closed_ = false;
  PendingOutput out_;
  std::vector<Slice> got_;
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_echo_service() {
  return std::make_unique<PositionsService<EchoApp, EchoOptions>>("echo", "every input byte back, in order",
                                                                  "Input bytes between snapshots");
}

}  // namespace mtcp::svc
