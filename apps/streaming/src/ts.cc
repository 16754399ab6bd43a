#include "ts.h"

#include <algorithm>

namespace mtcp::stream {

bool parse_ts_packet(std::span<const uint8_t> p, TsPacket& out) {
  if (p.size() != kTsPacketBytes || p[0] != kTsSync) return false;
  out = TsPacket{};
  out.pid = static_cast<uint16_t>(((p[1] & 0x1F) << 8) | p[2]);
  uint8_t afc = (p[3] >> 4) & 0x3;
  out.cc = p[3] & 0x0F;
  out.payload = (afc & 0x1) != 0;
  if (afc & 0x2) {
    size_t len = p[4];
    if (5 + len > kTsPacketBytes) return false;
    if (len > 0) {
      uint8_t flags = p[5];
      out.discontinuity = (flags & 0x80) != 0;
      if ((flags & 0x10) && len >= 7) {
        uint64_t base = (uint64_t{p[6]} << 25) | (uint64_t{p[7]} << 17) | (uint64_t{p[8]} << 9) |
                        (uint64_t{p[9]} << 1) | (uint64_t{p[10]} >> 7);
        uint64_t ext = (uint64_t{p[10] & 0x1u} << 8) | p[11];
        out.pcr = base * 300 + ext;
      }
    }
  }
  return true;
}

bool index_ts(std::span<const uint8_t> file, TsIndex& out, std::string& why) {
  out = TsIndex{};
  if (file.empty()) {
    why = "the file is empty";
    return false;
  }
  if (file.size() % kTsPacketBytes != 0) {
    why = "not an MPEG transport stream: its size (" + std::to_string(file.size()) +
          " bytes) is not a multiple of 188";
    return false;
  }
  const size_t n = file.size() / kTsPacketBytes;
  struct Mark {
    size_t packet;
    int64_t us;
  };
  std::vector<Mark> marks;
  constexpr uint64_t kWrap = (uint64_t{1} << 33) * 300;  // the PCR base is 33 bits
  std::optional<uint64_t> first, prev;
  uint64_t unwrap = 0;
  bool have_pid = false;
  for (size_t i = 0; i < n; ++i) {
    TsPacket pk;
    if (!parse_ts_packet(file.subspan(i * kTsPacketBytes, kTsPacketBytes), pk)) {
      why = "not an MPEG transport stream: no sync byte (0x47) or a bad adaptation field at byte " +
            std::to_string(i * kTsPacketBytes);
      return false;
    }
    if (!pk.pcr) continue;
    if (!have_pid) {
      out.pcr_pid = pk.pid;
      have_pid = true;
    }
    if (pk.pid != out.pcr_pid) continue;
    uint64_t v = *pk.pcr;
    if (prev && v<*prev&& * prev - v> kWrap / 2) unwrap += kWrap;  // the counter wrapped
    uint64_t abs = v + unwrap;
    if (!first) first = abs;
    int64_t us = static_cast<int64_t>((abs - *first) / 27);
    if (!marks.empty()) {
      int64_t d = us - marks.back().us;
      if (d < 0 || d > kPcrJumpMaxUs) {
        why = "the PCR jumps by " + std::to_string(d / 1000) + " ms at byte " +
              std::to_string(i * kTsPacketBytes) + " (timestamp discontinuities are not supported)";
        return false;
      }
    }
    prev = v;
    marks.push_back({i, us});
  }
  if (marks.size() < 2) {
    why = "the transport stream carries fewer than two PCRs: nothing to pace it by";
    return false;
  }
  out.pcr_count = marks.size();
  out.packet_us.resize(n);
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    while (k + 1 < marks.size() && marks[k + 1].packet <= i) ++k;
    const Mark& a = marks[k];
    if (i <= a.packet || k + 1 == marks.size()) {
      out.packet_us[i] = i < marks.front().packet ? 0 : a.us;
      continue;
    }
    const Mark& b = marks[k + 1];
    out.packet_us[i] = a.us + (b.us - a.us) * static_cast<int64_t>(i - a.packet) /
                                  static_cast<int64_t>(b.packet - a.packet);
  }
  return true;
}

void TsContinuity::feed(std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    if (part_len_ == 0 && bytes.size() >= kTsPacketBytes) {
      packet(bytes.first(kTsPacketBytes));
      bytes = bytes.subspan(kTsPacketBytes);
      continue;
    }
    size_t take = std::min(kTsPacketBytes - part_len_, bytes.size());
    std::copy_n(bytes.begin(), take, part_.begin() + static_cast<std::ptrdiff_t>(part_len_));
    part_len_ += take;
    bytes = bytes.subspan(take);
    if (part_len_ == kTsPacketBytes) {
      packet(part_);
      part_len_ = 0;
    }
  }
}

void TsContinuity::packet(std::span<const uint8_t> p) {
  ++packets_;
  TsPacket pk;
  if (!parse_ts_packet(p, pk)) {
    ++sync_errors_;
    return;
  }
  if (pk.pcr) {
    ++pcrs_;
    last_pcr_ = pk.pcr;
  }
  if (pk.pid == kTsNullPid) return;
  int16_t& last = last_cc_[pk.pid];
  if (pk.discontinuity || last < 0) {
    last = pk.cc;
    return;
  }
  // A packet with a payload advances the counter by one; one without keeps it.
  uint8_t want = pk.payload ? static_cast<uint8_t>((last + 1) & 0x0F) : static_cast<uint8_t>(last);
  if (pk.cc != want) ++cc_errors_;
  last = pk.cc;
}

}  // namespace mtcp::stream
