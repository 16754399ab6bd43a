// echo: every input byte back, in order. Zero copy: the slices read from the engine's input
// log are written back as they are. Snapshots are taken when nothing is pending, so they hold
// equal input and output positions.
#include <deque>

#include "services/services.h"
#include "services/snapshot_codec.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x4543484Fu;  // "ECHO"
constexpr size_t kReadMin = 64u << 10;   // read at least this much when the send log is full
constexpr int kRounds = 64;

class EchoService final : public ConnService {
 public:
  EchoService(const Params& p, core::ConnId conn) : p_(p), conn_(conn) {}

  bool import(const core::ServerEngine& engine, std::string& why) override {
    if (!import_positions(engine, conn_, kMagic, p_.state_bytes, pos_, why)) return false;
    last_snapshot_ = pos_.in;
    return true;
  }

  bool step(core::ServerEngine& engine, bool& ok, std::string& why) override {
    bool moved = false;
    for (int round = 0; round < kRounds; ++round) {
      while (!pending_.empty()) {
        auto w = engine.conn_write(conn_, pending_.front());
        if (!w) {
          ok = false;
          why = "write refused: " + std::string(to_string(w.error()));
          return moved;
        }
        size_t n = *w;
        if (n == 0) return moved;
        moved = true;
        pos_.out += n;
        Slice& front = pending_.front();
        if (n < front.len) {
          front = front.sub(n, front.len - n);
          return moved;  // the send log is full
        }
        pending_.pop_front();
      }
      // Consistent point: everything read has been written back.
      if (pos_.in >= last_snapshot_ + p_.snapshot_every) {
        if (Status st = engine.conn_snapshot(conn_, encode_positions(kMagic, pos_, p_.state_bytes)); !st) {
          ok = false;
          why = "snapshot refused: " + std::string(to_string(st.error()));
        }
        last_snapshot_ = pos_.in;
        moved = true;
      }
      if (!closed_ && engine.conn_input_closed(conn_)) {
        closed_ = true;  // the client closed its side and has every byte back: close ours
        (void)engine.conn_close(conn_);
        return true;
      }
      got_.clear();
      size_t n = engine.conn_read_slices(conn_, std::max(engine.conn_write_space(conn_), kReadMin), got_);
      if (n == 0) return moved;
      moved = true;
      pos_.in += n;
      for (auto& s : got_) pending_.push_back(std::move(s));
    }
    return moved;
  }

 private:
  Params p_;
  core::ConnId conn_;
  Positions pos_;
  uint64_t last_snapshot_ = 0;
  bool closed_ = false;
  std::deque<Slice> pending_;
  std::vector<Slice> got_;
};

}  // namespace

std::unique_ptr<ConnService> make_echo(const Params& p, core::ConnId conn) {
  return std::make_unique<EchoService>(p, conn);
}

}  // namespace mtcp::svc
