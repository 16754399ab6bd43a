#include "services/services.h"

#include <array>
#include <cstring>

#include "services/snapshot_codec.h"
#include "sim/prng.h"
#include "sim/ref_app.h"

namespace mtcp::svc {

bool parse_kind(const std::string& text, Kind& out) {
  if (text == "ref") out = Kind::ref;
  else if (text == "echo") out = Kind::echo;
  else if (text == "source") out = Kind::source;
  else return false;
  return true;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::ref: return "ref";
    case Kind::echo: return "echo";
    case Kind::source: return "source";
  }
  return "?";
}

namespace {
uint64_t word_at(uint64_t seed, uint64_t index) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ index * 0xC2B2AE3D27D4EB4Full ^ 0x5EED5EED5EEDull;
  return sim::splitmix64(x);
}

void put32(Bytes& b, uint32_t v) {
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put64(Bytes& b, uint64_t v) {
  for (int i = 7; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get(const Bytes& b, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | b[at + i];
  return v;
}
// The state bytes of a snapshot are a stream seeded by its positions (so a stale or misplaced
// snapshot fails the check), generated and checked a word at a time: byte by byte, a 16 MiB
// state took about 80 ms to write and again to check on import (docs/profiling.md).
uint64_t state_seed(Positions pos) { return pos.in ^ (pos.out << 1); }
constexpr size_t kHeader = 4 + 8 + 8 + 4;

// The reference application as a service (its own checks report violations).
class RefService final : public ConnService {
 public:
  RefService(const Params& p, core::ConnId conn)
      : app_(to_app(p), conn, [this](const std::string& why) { violation_ = why; }) {}
  bool import(const core::ServerEngine& engine, std::string& why) override {
    if (app_.import(engine)) return true;
    why = violation_.empty() ? "no snapshot view" : violation_;
    return false;
  }
  bool step(core::ServerEngine& engine, bool& ok, std::string& why) override {
    bool moved = app_.step(engine);
    if (!violation_.empty()) {
      ok = false;
      why = std::exchange(violation_, {});
    }
    return moved;
  }

 private:
  static sim::AppParams to_app(const Params& p) {
    sim::AppParams a;
    a.stream_seed = p.seed;
    a.response_max = p.response_max;
    a.snapshot_every = p.snapshot_every;
    a.pad_bytes = p.state_bytes;
    return a;
  }
  std::string violation_;
  sim::ServerApp app_;
};
}  // namespace

uint8_t source_byte(uint64_t seed, uint64_t offset) {
  return static_cast<uint8_t>(word_at(seed, offset / 8) >> (8 * (offset % 8)));
}

void source_fill(uint64_t seed, uint64_t offset, std::span<uint8_t> dst) {
  size_t i = 0;
  while (i < dst.size()) {
    uint64_t at = offset + i;
    uint64_t w = word_at(seed, at / 8);
    for (unsigned k = static_cast<unsigned>(at % 8); k < 8 && i < dst.size(); ++k, ++i)
      dst[i] = static_cast<uint8_t>(w >> (8 * k));
  }
}

Bytes encode_positions(uint32_t magic, Positions pos, uint32_t state_bytes) {
  Bytes b;
  b.reserve(kHeader + state_bytes);
  put32(b, magic);
  put64(b, pos.in);
  put64(b, pos.out);
  put32(b, state_bytes);
  b.resize(kHeader + state_bytes);
  source_fill(state_seed(pos), 0, std::span<uint8_t>(b).subspan(kHeader));
  return b;
}

bool decode_positions(uint32_t magic, const Bytes& b, uint32_t state_bytes, Positions& pos, std::string& why) {
  if (b.size() < kHeader) {
    why = "snapshot shorter than its header";
    return false;
  }
  if (get(b, 0, 4) != magic) {
    why = "snapshot written by another service";
    return false;
  }
  Positions p{get(b, 4, 8), get(b, 12, 8)};
  uint64_t len = get(b, 20, 4);
  if (len != state_bytes || b.size() != kHeader + len) {
    why = "snapshot state length " + std::to_string(len) + " does not match this member's " + std::to_string(state_bytes);
    return false;
  }
  std::array<uint8_t, 64u << 10> want;
  for (size_t at = 0; at < len; at += want.size()) {
    size_t n = std::min<size_t>(want.size(), len - at);
    source_fill(state_seed(p), at, std::span<uint8_t>(want.data(), n));
    const uint8_t* got = b.data() + kHeader + at;
    if (std::memcmp(got, want.data(), n) != 0) {
      size_t i = 0;
      while (got[i] == want[i]) ++i;
      why = "snapshot state corrupted at byte " + std::to_string(at + i);
      return false;
    }
  }
  pos = p;
  return true;
}

bool import_positions(const core::ServerEngine& engine, core::ConnId conn, uint32_t magic, uint32_t state_bytes,
                      Positions& pos, std::string& why) {
  auto view = engine.conn_snapshot_view(conn);
  if (!view) {
    why = "the engine has no snapshot view for this connection";
    return false;
  }
  pos = {};
  if (view->snap_id == 0) return true;
  if (!decode_positions(magic, *view->bytes, state_bytes, pos, why)) return false;
  if (pos.in != view->in_seq || pos.out != view->out_seq) {
    why = "snapshot positions disagree with the protocol's record";
    return false;
  }
  return true;
}

std::unique_ptr<ConnService> make_echo(const Params& p, core::ConnId conn);
std::unique_ptr<ConnService> make_source(const Params& p, core::ConnId conn);

std::unique_ptr<ConnService> make_conn_service(Kind kind, const Params& p, core::ConnId conn) {
  switch (kind) {
    case Kind::ref: return std::make_unique<RefService>(p, conn);
    case Kind::echo: return make_echo(p, conn);
    case Kind::source: return make_source(p, conn);
  }
  return nullptr;
}

}  // namespace mtcp::svc
