// discard: the sink of one-way transfers (mtcp-perf -c --app discard, like iperf3's server).
// Input is read as slices and dropped; when the client closes its side, the service closes
// its own, so the client knows every byte was read. Nothing is written back.
// With `check`, the input must be the source stream of `seed` (what mtcp-perf sends), compared
// with memcmp against the precomputed pattern (builtin.h): a byte lost, duplicated or altered
// is a violation, and the service closes at once (the client sees an early close). The snapshot holds the position only.
#include "services/builtin.h"
#include "services/pending_output.h"
#include "services/snapshot_codec.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x44524F50u;  // "DROP"
constexpr size_t kReadBytes = 4u << 20;   // input taken per read (as slices)
constexpr int kRounds = 64;

struct DiscardOptions {
  uint64_t seed = 1;
  bool check = false;
  uint64_t snapshot_every = 256u << 10;
  uint64_t state_bytes = 0;
};

class DiscardApp final : public sdk::ConnApp {
 public:
  explicit DiscardApp(const DiscardOptions& o) : o_(o) {
    if (o_.check) pattern_ = source_pattern(o_.seed);
  }

  bool on_open(sdk::Conn&, const sdk::Import& imp, std::string& why) override {
    if (!import_positions(imp, kMagic, static_cast<uint32_t>(o_.state_bytes), pos_, why)) return false;
    last_snapshot_ = pos_.in;
    return true;
  }
  // Nothing is written, so on_writable has nothing to do; after our close, input is left unread.
  void on_readable(sdk::Conn& c) override {
    if (!closed_) pump(c);
  }

 private:
  void pump(sdk::Conn& c) {
    for (int round = 0; round < kRounds; ++round) {
      if (pos_.in >= last_snapshot_ + o_.snapshot_every) {
        take_snapshot(c, encode_positions(kMagic, pos_, static_cast<uint32_t>(o_.state_bytes)));
        last_snapshot_ = pos_.in;
      }
      got_.clear();
      size_t n = c.read_slices(kReadBytes, got_);
      for (const auto& s : got_) {
        if (pattern_) {
          size_t bad = source_mismatch(pattern_, pos_.in, s.span());
          if (bad != s.len) {
            c.violation("discard: input byte " + std::to_string(pos_.in + bad) + " is not the source stream");
            closed_ = true;  // closing before the client did tells it the transfer failed
            (void)c.close();
            return;
          }
        }
        pos_.in += s.len;
      }
      if (n == 0) {
        if (!closed_ && c.input_closed()) {
          closed_ = true;  // every byte the client sent has been read: close our side
          (void)c.close();
        }
        return;
      }
    }
  }

  const DiscardOptions o_;
  BlockPtr pattern_;
  Positions pos_;
  uint64_t last_snapshot_ = 0;
  bool closed_ = false;
  std::vector<Slice> got_;
};

class DiscardService final : public PositionsService<DiscardApp, DiscardOptions> {
 public:
  DiscardService()
      : PositionsService("discard", "input read and dropped (one-way sink); closes when the client does",
                         "Input bytes between snapshots") {
    opt("seed", &o_.seed, "Stream seed of the input, for check (the clients' must match)");
    opt("check", &o_.check, "Compare the input with the source stream of seed (memcmp; mtcp-perf --app discard sends it)");
  }
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_discard_service() { return std::make_unique<DiscardService>(); }

}  // namespace mtcp::svc
