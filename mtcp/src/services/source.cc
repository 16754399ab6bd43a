// source: a generated stream, byte `o` = source_byte(seed, o), written as fast as the send log
// takes it; `source_bytes` long (then the service closes), or endless until the client closes
// its side. Input is read and discarded. The stream is a function of the offset, so the
// snapshot only needs the positions; a generated block the engine did not take yet is kept
// and offered again, never regenerated.
#include "services/services.h"
#include "services/snapshot_codec.h"

namespace mtcp::svc {
namespace {

constexpr uint32_t kMagic = 0x53524345u;  // "SRCE"
constexpr size_t kBlockBytes = 64u << 10;
constexpr int kRounds = 64;

class SourceService final : public ConnService {
 public:
  SourceService(const Params& p, core::ConnId conn) : p_(p), conn_(conn) {}

  bool import(const core::ServerEngine& engine, std::string& why) override {
    if (!import_positions(engine, conn_, kMagic, p_.state_bytes, pos_, why)) return false;
    last_snapshot_ = pos_.out;
    pending_ = {};
    return true;
  }

  bool step(core::ServerEngine& engine, bool& ok, std::string& why) override {
    bool moved = false;
    for (int round = 0; round < kRounds; ++round) {
      got_.clear();
      if (size_t n = engine.conn_read_slices(conn_, SIZE_MAX, got_); n > 0) {
        pos_.in += n;
        moved = true;
      }
      if (pos_.out >= last_snapshot_ + p_.snapshot_every) {
        if (Status st = engine.conn_snapshot(conn_, encode_positions(kMagic, pos_, p_.state_bytes)); !st) {
          ok = false;
          why = "snapshot refused: " + std::string(to_string(st.error()));
        }
        last_snapshot_ = pos_.out;
        moved = true;
      }
      bool finished = p_.source_bytes != 0 && pos_.out >= p_.source_bytes;
      if (finished || (p_.source_bytes == 0 && engine.conn_input_closed(conn_))) {
        if (!closed_) {
          closed_ = true;
          (void)engine.conn_close(conn_);
          moved = true;
        }
        return moved;
      }
      if (pending_.empty()) {
        uint64_t left = p_.source_bytes ? p_.source_bytes - pos_.out : UINT64_MAX;
        Bytes b(static_cast<size_t>(std::min<uint64_t>(kBlockBytes, left)));
        source_fill(p_.seed, pos_.out, b);
        pending_ = Slice(make_block(std::move(b)));
      }
      auto w = engine.conn_write(conn_, pending_);
      if (!w) {
        ok = false;
        why = "write refused: " + std::string(to_string(w.error()));
        return moved;
      }
      if (*w == 0) return moved;  // the send log is full
      moved = true;
      pos_.out += *w;
      pending_ = *w < pending_.len ? pending_.sub(*w, pending_.len - *w) : Slice();
    }
    return moved;
  }

 private:
  Params p_;
  core::ConnId conn_;
  Positions pos_;
  uint64_t last_snapshot_ = 0;
  bool closed_ = false;
  Slice pending_;
  std::vector<Slice> got_;
};

}  // namespace

std::unique_ptr<ConnService> make_source(const Params& p, core::ConnId conn) {
  return std::make_unique<SourceService>(p, conn);
}

}  // namespace mtcp::svc
