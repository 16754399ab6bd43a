// MPEG transport stream (ISO/IEC 13818-1) in 188-byte packets: just enough to pace a file by its
// own clock (the PCR) and to check continuity on the client (the 4-bit continuity counters).
// Parsed by hand, not with GStreamer: a few lines, deterministic, and the server then needs no
// GStreamer at all (docs/streaming.md "Pacing").
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace mtcp::stream {

inline constexpr size_t kTsPacketBytes = 188;
inline constexpr uint8_t kTsSync = 0x47;
inline constexpr uint16_t kTsNullPid = 0x1FFF;
inline constexpr uint64_t kPcrHz = 27'000'000;  // the PCR counts a 27 MHz clock

struct TsPacket {
  uint16_t pid = 0;
  uint8_t cc = 0;               // continuity counter
  bool payload = false;         // has a payload (the counter counts these)
  bool discontinuity = false;   // adaptation field's discontinuity indicator
  std::optional<uint64_t> pcr;  // in 27 MHz ticks (base x 300 + extension), if carried
};

// Parses one packet (exactly 188 bytes, sync byte first). False if the sync byte is missing or
// the adaptation field does not fit.
bool parse_ts_packet(std::span<const uint8_t> p, TsPacket& out);

// The stream time of every packet of a file, in microseconds from the first PCR, linearly
// interpolated between the PCRs of the first PID that carries one (the standard's model: bytes
// arrive at a constant rate between two PCRs). Packets before the first PCR are at 0, after the
// last one at the last PCR's time.
struct TsIndex {
  std::vector<int64_t> packet_us;  // one per packet, never decreasing
  uint16_t pcr_pid = 0;
  size_t pcr_count = 0;
  int64_t duration_us() const { return packet_us.empty() ? 0 : packet_us.back(); }
};

// Builds the index of a whole file. False with `why` naming the problem and the byte offset:
// empty, size not a multiple of 188, a missing sync byte, no PCR, a PCR going backwards or
// jumping by more than kPcrJumpMaxUs (timestamp discontinuities are not supported).
inline constexpr int64_t kPcrJumpMaxUs = 10'000'000;
bool index_ts(std::span<const uint8_t> file, TsIndex& out, std::string& why);

// Continuity of a received transport stream, fed in arbitrary pieces (the client's check that
// no packet was lost or repeated across a migration).
class TsContinuity {
 public:
  void feed(std::span<const uint8_t> bytes);
  uint64_t packets() const { return packets_; }
  uint64_t sync_errors() const { return sync_errors_; }  // packets without their sync byte
  uint64_t cc_errors() const { return cc_errors_; }      // a counter that skipped or repeated
  uint64_t pcr_count() const { return pcrs_; }
  std::optional<uint64_t> last_pcr() const { return last_pcr_; }  // 27 MHz ticks

 private:
  void packet(std::span<const uint8_t> p);
  std::array<uint8_t, kTsPacketBytes> part_{};
  size_t part_len_ = 0;
  std::array<int16_t, 8192> last_cc_ = [] {
    std::array<int16_t, 8192> a{};
    a.fill(-1);
    return a;
  }();
  uint64_t packets_ = 0, sync_errors_ = 0, cc_errors_ = 0, pcrs_ = 0;
  std::optional<uint64_t> last_pcr_;
};

}  // namespace mtcp::stream
