#include "services/ref_model.h"

#include <algorithm>

#include "common/bytes.h"
#include "common/mix.h"

namespace mtcp::svc {
namespace {
inline uint64_t mix(uint64_t h, uint8_t b) {
  h ^= b;
  h *= 0x100000001B3ull;
  h ^= h >> 29;
  return h;
}
constexpr uint32_t kRecordBytes = 64;
constexpr size_t kSnapshotHeader = 8 + 8 + 8 + 4;

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
  Writer w(out);
  for (int i = 0; i < 2; ++i) w.u64(splitmix64(x));
  uint64_t n = p_.response_max ? hash_ % p_.response_max : 0;
  for (uint64_t i = 0; i < n; ++i) out.push_back(pad_byte(hash_ ^ 0xABCDEF, static_cast<size_t>(i)));
}

Bytes RefMachine::encode_snapshot(uint64_t out_written) const {
  Bytes b;
  b.reserve(kSnapshotHeader + p_.pad_bytes);
  Writer w(b);
  w.u64(consumed_);
  w.u64(hash_);
  w.u64(out_written);
  w.u32(p_.pad_bytes);
  for (size_t i = 0; i < p_.pad_bytes; ++i) b.push_back(pad_byte(hash_, i));
  return b;
}

bool RefMachine::decode_snapshot(const Bytes& b, uint64_t& out_written, std::string& why) {
  if (b.size() < kSnapshotHeader) {
    why = "snapshot shorter than its header";
    return false;
  }
  Reader r(b);
  uint64_t consumed = r.u64();
  uint64_t hash = r.u64();
  out_written = r.u64();
  uint32_t pad = r.u32();
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

}  // namespace mtcp::svc
