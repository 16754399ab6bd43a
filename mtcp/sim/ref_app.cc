#include "sim/ref_app.h"

#include <algorithm>

#include "sim/prng.h"

namespace mtcp::sim {
namespace {
inline uint64_t mix(uint64_t h, uint8_t b) {
  h ^= b;
  h *= 0x100000001B3ull;
  h ^= h >> 29;
  return h;
}
constexpr uint32_t kRecordBytes = 64;
constexpr size_t kSnapshotHeader = 8 + 8 + 8 + 4;

void put64(Bytes& b, uint64_t v) {
  for (int i = 7; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get64(const Bytes& b, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | b[at + i];
  return v;
}
uint8_t pad_byte(uint64_t hash, size_t i) {
  uint64_t x = hash + i / 8;
  return static_cast<uint8_t>(splitmix64(x) >> (8 * (i % 8)));
}
}  // namespace

uint8_t input_byte(uint64_t stream_seed, uint64_t offset) {
  uint64_t x = stream_seed ^ (offset / 8) * 0xD6E8FEB86659FD93ull;
  return static_cast<uint8_t>(splitmix64(x) >> (8 * (offset % 8)));
}

void input_fill(uint64_t stream_seed, uint64_t offset, std::span<uint8_t> dst) {
  size_t i = 0;
  while (i < dst.size()) {
    uint64_t at = offset + i;
    uint64_t x = stream_seed ^ (at / 8) * 0xD6E8FEB86659FD93ull;
    uint64_t w = splitmix64(x);
    for (unsigned k = static_cast<unsigned>(at % 8); k < 8 && i < dst.size(); ++k, ++i)
      dst[i] = static_cast<uint8_t>(w >> (8 * k));
  }
}

void RefMachine::consume(uint8_t b, Bytes& out) {
  hash_ = mix(hash_, b);
  ++consumed_;
  if (consumed_ % kRecordBytes != 0) return;
  uint64_t x = hash_;
  for (int i = 0; i < 2; ++i) put64(out, splitmix64(x));
  uint64_t n = p_.response_max ? hash_ % p_.response_max : 0;
  for (uint64_t i = 0; i < n; ++i) out.push_back(pad_byte(hash_ ^ 0xABCDEF, static_cast<size_t>(i)));
}

Bytes RefMachine::encode_snapshot(uint64_t out_written) const {
  Bytes b;
  b.reserve(kSnapshotHeader + p_.pad_bytes);
  put64(b, consumed_);
  put64(b, hash_);
  put64(b, out_written);
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(p_.pad_bytes >> (8 * i)));
  for (size_t i = 0; i < p_.pad_bytes; ++i) b.push_back(pad_byte(hash_, i));
  return b;
}

bool RefMachine::decode_snapshot(const Bytes& b, uint64_t& out_written, std::string& why) {
  if (b.size() < kSnapshotHeader) {
    why = "snapshot shorter than its header";
    return false;
  }
  uint64_t consumed = get64(b, 0);
  uint64_t hash = get64(b, 8);
  out_written = get64(b, 16);
  uint32_t pad = (uint32_t{b[24]} << 24) | (uint32_t{b[25]} << 16) | (uint32_t{b[26]} << 8) | b[27];
  if (pad != p_.pad_bytes || b.size() != kSnapshotHeader + pad) {
    why = "snapshot length does not match its padding";
    return false;
  }
  for (size_t i = 0; i < pad; ++i) {
    if (b[kSnapshotHeader + i] != pad_byte(hash, i)) {
      why = "snapshot padding corrupted at byte " + std::to_string(i);
      return false;
    }
  }
  consumed_ = consumed;
  hash_ = hash;
  return true;
}

bool ServerApp::import(const core::ServerEngine& engine) {
  auto view = engine.conn_snapshot_view(conn_);
  if (!view) return false;
  machine_ = RefMachine(p_);
  pending_.clear();
  out_written_ = 0;
  if (view->snap_id != 0) {
    std::string why;
    uint64_t out = 0;
    if (!machine_.decode_snapshot(*view->bytes, out, why)) {
      violation_("import: " + why);
      return false;
    }
    // The protocol recorded the positions with the snapshot; they must agree with the app's.
    if (machine_.consumed() != view->in_seq || out != view->out_seq) {
      violation_("import: snapshot positions disagree with the protocol's record");
      return false;
    }
    out_written_ = out;
  }
  last_snapshot_ = machine_.consumed();
  return true;
}

bool ServerApp::step(core::ServerEngine& engine) {
  bool moved = false;
  Bytes buf(4096);
  for (int rounds = 0; rounds < 64; ++rounds) {
    if (!pending_.empty()) {
      auto w = engine.conn_write_copy(conn_, pending_);
      if (!w) return moved;
      if (*w > 0) {
        moved = true;
        out_written_ += *w;
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(*w));
      }
      if (!pending_.empty()) return moved;
    }
    // A consistent point: everything produced for the consumed input is written.
    if (machine_.consumed() >= last_snapshot_ + p_.snapshot_every) {
      Status st = engine.conn_snapshot(conn_, machine_.encode_snapshot(out_written_));
      if (!st) violation_(std::string("snapshot refused: ") + std::string(to_string(st.error())));
      last_snapshot_ = machine_.consumed();
      moved = true;
    }
    size_t n = engine.conn_read(conn_, buf);
    if (n == 0) return moved;
    moved = true;
    for (size_t i = 0; i < n; ++i) {
      uint64_t at = machine_.consumed();
      uint8_t want = input_byte(p_.stream_seed, at);
      if (buf[i] != want) {
        violation_("I1 client->server: byte " + std::to_string(at) + " differs");
        return moved;
      }
      machine_.consume(buf[i], pending_);
    }
  }
  return moved;
}

bool OutputModel::check(std::span<const uint8_t> got, uint64_t input_available, std::string& why) {
  for (uint8_t b : got) {
    while (expected_.empty()) {
      if (machine_.consumed() >= input_available) {
        why = "I1 server->client: byte " + std::to_string(received_) + " arrived before the input producing it was written";
        return false;
      }
      Bytes out;
      machine_.consume(input_byte(p_.stream_seed, machine_.consumed()), out);
      produced_ += out.size();
      expected_.insert(expected_.end(), out.begin(), out.end());
    }
    if (expected_.front() != b) {
      why = "I1 server->client: byte " + std::to_string(received_) + " differs";
      return false;
    }
    expected_.pop_front();
    ++received_;
  }
  return true;
}

uint64_t OutputModel::total_after(uint64_t input_total) {
  Bytes out;
  while (machine_.consumed() < input_total) {
    out.clear();
    machine_.consume(input_byte(p_.stream_seed, machine_.consumed()), out);
    produced_ += out.size();
    expected_.insert(expected_.end(), out.begin(), out.end());
  }
  return produced_;
}

uint64_t OutputModel::total_for(uint64_t input_total) {
  RefMachine m(p_);
  uint64_t total = 0;
  Bytes out;
  for (uint64_t i = 0; i < input_total; ++i) {
    out.clear();
    m.consume(input_byte(p_.stream_seed, i), out);
    total += out.size();
  }
  return total;
}

}  // namespace mtcp::sim
