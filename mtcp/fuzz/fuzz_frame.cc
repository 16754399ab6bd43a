// libFuzzer harness for the frame decoder (wire/frame.h).
//
// Input: byte 0 = options (bit 0: DATA payload cap of 64 bytes instead of the default),
// byte 1 = n (mod 16) chunk-size bytes that follow, then the subflow byte stream. The stream is
// fed to a FrameDecoder in chunks of those sizes (each + 1, cycled; all at once if n == 0), each
// chunk pushed as its own block, draining the decoder after every chunk.
//
// Checked: no crash; each frame consumes exactly its encoding, which is canonical
// (encode(f) == the consumed bytes, and decode_one(encode(f)) re-encodes to the same bytes);
// DATA payload equals the bytes it covers; on error nothing is consumed and the error repeats.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <variant>
#include <vector>

#include "common/buffer.h"
#include "wire/frame.h"

namespace {

using mtcp::Bytes;
using mtcp::Slice;
using mtcp::SliceQueue;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_frame: check failed: %s\n", what);
    std::abort();
  }
}

void check_frame(const mtcp::wire::Frame& f, std::span<const uint8_t> consumed, size_t payload_max) {
  namespace wire = mtcp::wire;
  check(consumed.size() >= wire::kFrameHeaderBytes, "frame shorter than a header");
  if (const auto* d = std::get_if<wire::Data>(&f)) {
    check(consumed.size() == wire::kDataHeaderBytes + d->size(), "DATA size");
    check(d->size() <= payload_max, "DATA payload over the cap");
    Bytes payload;
    for (const auto& s : d->payload) payload.insert(payload.end(), s.span().begin(), s.span().end());
    check(Bytes(consumed.begin() + wire::kDataHeaderBytes, consumed.end()) == payload, "DATA payload bytes");
    uint8_t hdr[wire::kDataHeaderBytes];
    wire::encode_data_header(d->dsn, static_cast<uint32_t>(d->size()), hdr);
    check(Bytes(hdr, hdr + wire::kDataHeaderBytes) == Bytes(consumed.begin(), consumed.begin() + wire::kDataHeaderBytes),
          "DATA header re-encoding");
  }
  Bytes e1;
  wire::encode(f, e1);
  check(e1 == Bytes(consumed.begin(), consumed.end()), "encoding is not canonical");
  auto again = wire::decode_one(e1);
  check(again.ok(), "decode(encode(f)) failed");
  check(wire::type_of(again.value()) == wire::type_of(f), "decode(encode(f)) changed the type");
  Bytes e2;
  wire::encode(again.value(), e2);
  check(e2 == e1, "decode(encode(f)) re-encodes differently");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace wire = mtcp::wire;
  if (size < 2) return 0;
  const size_t payload_max = (data[0] & 1) != 0 ? 64 : mtcp::kFramePayloadBytesMax;
  size_t n_sizes = data[1] % 16;
  if (size < 2 + n_sizes) return 0;
  std::span<const uint8_t> sizes(data + 2, n_sizes);
  std::span<const uint8_t> stream(data + 2 + n_sizes, size - 2 - n_sizes);

  // Preface detection on the stream, compared with a direct reading of the definition.
  {
    SliceQueue q;
    q.push(Slice::copy_of(stream));
    auto got = wire::check_preface(q);
    size_t k = 0;
    while (k < stream.size() && k < wire::kPreface.size() && stream[k] == wire::kPreface[k]) ++k;
    auto want = k < stream.size() && k < wire::kPreface.size() ? wire::PrefaceCheck::plain
                : k == wire::kPreface.size()                   ? wire::PrefaceCheck::mtcp
                                                               : wire::PrefaceCheck::need_more;
    check(got == want, "check_preface");
  }

  wire::FrameDecoder dec(payload_max);
  SliceQueue q;
  size_t fed = 0;
  size_t chunk_no = 0;
  while (fed < stream.size()) {
    size_t n = sizes.empty() ? stream.size() : static_cast<size_t>(sizes[chunk_no++ % sizes.size()]) + 1;
    n = std::min(n, stream.size() - fed);
    q.push(Slice::copy_of(stream.subspan(fed, n)));
    fed += n;
    for (;;) {
      const size_t before = q.size();
      const size_t consumed_before = fed - before;
      auto r = dec.next(q);
      if (!r.ok()) {
        check(q.size() == before, "an error consumed bytes");
        auto again = dec.next(q);
        check(!again.ok() && again.error() == r.error(), "error did not repeat");
        return 0;
      }
      if (!r.value().has_value()) {
        check(q.size() == before, "need-more consumed bytes");
        break;
      }
      check(q.size() < before, "a frame consumed nothing");
      check_frame(*r.value(), stream.subspan(consumed_before, before - q.size()), payload_max);
    }
  }
  return 0;
}
