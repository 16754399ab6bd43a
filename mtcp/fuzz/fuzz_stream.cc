// libFuzzer harness for the streaming app's parsers (apps/streaming/src): the degradation
// profile (profile.h, from --profile or a profile file) and the MPEG-TS packet parser and file
// index (ts.h, the media file a member serves).
//
// Input: byte 0 selects (mod 4): 0 the rest is a profile's text; 1 the rest is a media file,
// indexed whole; 2 the rest is fed to the continuity checker in pieces whose sizes byte 1 gives;
// 3 the rest is a stream snapshot (snapshot.h), which must re-encode to the same bytes.
// Checked: no crash; a refusal says why; an accepted profile has strictly growing times, rates
// within bounds and at most kProfileEntriesMax entries; an index has one never-decreasing time
// per packet; every packet of an indexed file parses; the continuity checker counts every
// whole packet once and gives the same counts however the stream is cut.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "profile.h"
#include "snapshot.h"
#include "ts.h"

namespace {
namespace st = mtcp::stream;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_stream: check failed: %s\n", what);
    std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  std::string why;
  switch (data[0] % 4) {
    case 0: {
      st::Profile p;
      if (!st::parse_profile(std::string(rest.begin(), rest.end()), p, why)) {
        check(!why.empty(), "a refused profile says why");
        return 0;
      }
      check(p.entries.size() <= st::kProfileEntriesMax, "entry count within the limit");
      for (size_t i = 0; i < p.entries.size(); ++i) {
        if (i > 0) check(p.entries[i].at_us > p.entries[i - 1].at_us, "times grow strictly");
        if (p.entries[i].kbit) check(*p.entries[i].kbit <= st::kProfileKbitMax, "rate within bounds");
        (void)p.kbit_at(p.entries[i].at_us);
        check(p.next_change_after(p.entries[i].at_us) > p.entries[i].at_us, "the next change is later");
      }
      (void)p.describe();
      return 0;
    }
    case 1: {
      st::TsIndex idx;
      if (!st::index_ts(rest, idx, why)) {
        check(!why.empty(), "a refused media file says why");
        return 0;
      }
      check(rest.size() % st::kTsPacketBytes == 0, "an indexed file is whole packets");
      check(idx.packet_us.size() == rest.size() / st::kTsPacketBytes, "one time per packet");
      check(idx.pcr_count >= 1, "an indexed file has a PCR");
      for (size_t i = 0; i < idx.packet_us.size(); ++i) {
        if (i > 0) check(idx.packet_us[i] >= idx.packet_us[i - 1], "times never decrease");
        st::TsPacket pkt;
        check(st::parse_ts_packet(rest.subspan(i * st::kTsPacketBytes, st::kTsPacketBytes), pkt), "every packet parses");
      }
      return 0;
    }
    case 3: {
      st::StreamSnapshot snap;
      if (!st::decode_stream_snapshot(rest, snap)) return 0;
      const mtcp::Bytes again = st::encode_stream_snapshot(snap);
      check(again.size() == rest.size() && std::equal(again.begin(), again.end(), rest.begin()),
            "a stream snapshot re-encodes to the same bytes");
      return 0;
    }
    default: {
      if (rest.empty()) return 0;
      const size_t piece = 1 + rest[0] % 200;
      std::span<const uint8_t> stream = rest.subspan(1);
      st::TsContinuity c;
      for (size_t at = 0; at < stream.size(); at += piece) c.feed(stream.subspan(at, std::min(piece, stream.size() - at)));
      check(c.packets() == stream.size() / st::kTsPacketBytes, "whole packets counted, once each");
      check(c.sync_errors() <= c.packets() && c.cc_errors() <= c.packets(), "errors bounded by packets");
      st::TsContinuity whole;
      whole.feed(stream);
      check(whole.packets() == c.packets() && whole.sync_errors() == c.sync_errors() &&
                whole.cc_errors() == c.cc_errors() && whole.pcr_count() == c.pcr_count(),
            "the same counts whatever the pieces");
      return 0;
    }
  }
}
