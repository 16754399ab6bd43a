// Frame and control-message codecs (mtcp/src/wire): DATA encode (generic and the engines'
// zero-copy emit_data), DATA decode through the streaming FrameDecoder fed in read-sized
// chunks, small client/server frames, and authenticated server-to-server messages.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "bench_util.h"
#include "cert/cert.h"
#include "core/types.h"
#include "wire/control.h"
#include "wire/frame.h"

namespace mtcp::bench {
namespace {

// What the runtime hands the engine per socket read at most (rt::ReadBlock::kBytes).
constexpr size_t kReadChunk = 256u << 10;

void data_sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {int64_t{64}, kKiB, 16 * kKiB, 256 * kKiB}) b->Arg(n);
}

// ---- DATA ---------------------------------------------------------------------------------

// The timed loop of the encode benchmarks: `f` encoded into `out` again and again.
void time_encode(benchmark::State& state, const wire::Frame& f, Bytes& out) {
  for (auto _ : state) {
    out.clear();
    wire::encode(f, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
}

// wire::encode of a whole DATA frame: copies the payload into the output buffer (the generic
// path; the engines use emit_data instead, below).
void BM_FrameEncodeData(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  wire::Frame f = wire::Data{1000, {Slice(make_block(pattern_bytes(n)))}};
  Bytes out;
  wire::encode(f, out);
  auto back = wire::decode_one(out);
  if (!back || !std::holds_alternative<wire::Data>(*back) || std::get<wire::Data>(*back).size() != n) {
    state.SkipWithError("DATA frame does not round-trip");
    return;
  }
  time_encode(state, f, out);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FrameEncodeData)->Apply(data_sizes);

// core::emit_data, what poll_transmit does per DATA frame: a 16-byte header block and the
// payload slices, ready for writev. Cost does not depend on the payload size (no copy).
void BM_FrameEmitData(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Slice payload_slice(make_block(pattern_bytes(n)));
  std::vector<Slice> payload;
  std::vector<Slice> out;
  payload.push_back(payload_slice);
  if (core::emit_data(7, payload, out) != n + wire::kDataHeaderBytes || out.size() != 2 ||
      out[1].block != payload_slice.block) {
    state.SkipWithError("emit_data did not produce header + the same payload block");
    return;
  }
  uint64_t dsn = 0;
  for (auto _ : state) {
    out.clear();
    payload.push_back(payload_slice);
    size_t used = core::emit_data(dsn, payload, out);
    benchmark::DoNotOptimize(used);
    benchmark::DoNotOptimize(out.data());
    dsn += n;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_FrameEmitData)->Apply(data_sizes);

// FrameDecoder::next over a stream of DATA frames (about 1 MiB per iteration), fed in
// 256 KiB reads as the runtime does; frames straddle reads. Payload is taken as slices.
void BM_FrameDecodeData(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const size_t frames = std::max<size_t>(1, (1u << 20) / n);
  Bytes stream;
  {
    Bytes payload = pattern_bytes(n, 3);
    for (size_t i = 0; i < frames; ++i) {
      uint8_t hdr[wire::kDataHeaderBytes];
      wire::encode_data_header(i * n, static_cast<uint32_t>(n), hdr);
      stream.insert(stream.end(), hdr, hdr + wire::kDataHeaderBytes);
      stream.insert(stream.end(), payload.begin(), payload.end());
    }
  }
  const BlockPtr block = make_block(std::move(stream));
  const Bytes expected = pattern_bytes(n, 3);

  SliceQueue q;
  wire::FrameDecoder dec;
  // Feeds the whole stream; calls on_frame for each DATA frame. Returns false on any error.
  auto run = [&](auto&& on_frame) {
    for (size_t off = 0; off < block->size(); off += kReadChunk) {
      q.push(Slice(block, off, std::min(kReadChunk, block->size() - off)));
      while (true) {
        auto r = dec.next(q);
        if (!r) return false;
        if (!r.value()) break;
        auto* d = std::get_if<wire::Data>(&*r.value());
        if (d == nullptr || !on_frame(*d)) return false;
      }
    }
    return q.empty();
  };

  // Correctness once: every frame, its DSN and every payload byte.
  size_t seen = 0;
  bool ok = run([&](const wire::Data& d) {
    Bytes got;
    for (const auto& s : d.payload) got.insert(got.end(), s.span().begin(), s.span().end());
    return d.dsn == seen++ * n && got == expected;
  });
  if (!ok || seen != frames) {
    state.SkipWithError("DATA stream does not decode to what was encoded");
    return;
  }

  for (auto _ : state) {
    size_t count = 0;
    bool good = run([&](const wire::Data& d) {
      benchmark::DoNotOptimize(d.payload.data());
      ++count;
      return d.size() == n;
    });
    if (!good || count != frames) {
      state.SkipWithError("decode failed inside the timed loop");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(frames * n));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(frames));
  state.counters["frames_per_iter"] = static_cast<double>(frames);
}
BENCHMARK(BM_FrameDecodeData)->Apply(data_sizes);

// ---- small frames -------------------------------------------------------------------------

cert::Certificate sample_cert() { return {0x1122334455667788ull, 1, 1000, 601000}; }

wire::Frame ack_frame() { return wire::Ack{123456789}; }
wire::Frame migrate_frame() {
  wire::Migrate m;
  m.cert = sample_cert();
  m.counter = 3;
  m.prev_owner = 1;
  m.client_rcv_nxt = 1u << 30;
  m.client_snd_una = 1u << 29;
  m.proof.fill(0xAB);
  return m;
}
wire::Frame welcome_frame() {
  wire::Welcome w;
  w.conn_id = sample_cert().conn_id;
  w.server_id = 1;
  w.epoch = 1;
  w.cert = sample_cert();
  w.secret.fill(0x5C);
  w.alternates = {{2, "10.0.0.2:7000"}, {3, "10.0.0.3:7000"}};
  return w;
}

void BM_FrameEncode(benchmark::State& state, wire::Frame f) {
  Bytes out;
  wire::encode(f, out);
  auto back = wire::decode_one(out);
  Bytes again;
  if (back) wire::encode(*back, again);
  if (!back || again != out) {
    state.SkipWithError("frame does not round-trip");
    return;
  }
  time_encode(state, f, out);
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(out.size()));
}
BENCHMARK_CAPTURE(BM_FrameEncode, ACK, ack_frame());
BENCHMARK_CAPTURE(BM_FrameEncode, MIGRATE, migrate_frame());
BENCHMARK_CAPTURE(BM_FrameEncode, WELCOME, welcome_frame());

// Streaming decode of one frame per received read, as a subflow sees them.
void BM_FrameDecode(benchmark::State& state, wire::Frame f) {
  Bytes enc;
  wire::encode(f, enc);
  const BlockPtr block = make_block(enc);
  const auto type = wire::type_of(f);
  SliceQueue q;
  wire::FrameDecoder dec;
  {
    q.push(Slice(block));
    auto r = dec.next(q);
    Bytes again;
    if (r && r.value()) wire::encode(*r.value(), again);
    if (!r || !r.value() || again != enc || !q.empty()) {
      state.SkipWithError("frame does not decode to what was encoded");
      return;
    }
  }
  for (auto _ : state) {
    q.push(Slice(block));
    auto r = dec.next(q);
    if (!r || !r.value() || wire::type_of(*r.value()) != type) {
      state.SkipWithError("decode failed inside the timed loop");
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(enc.size()));
}
BENCHMARK_CAPTURE(BM_FrameDecode, ACK, ack_frame());
BENCHMARK_CAPTURE(BM_FrameDecode, MIGRATE, migrate_frame());
BENCHMARK_CAPTURE(BM_FrameDecode, WELCOME, welcome_frame());

// ---- server-to-server control messages (HMAC-SHA256 over each message) ----------------------

wire::ControlMessage claim_message() {
  wire::Claim c;
  c.conn_id = sample_cert().conn_id;
  c.epoch = 4;
  c.request_id = 17;
  c.counter = 3;
  c.have = {3, 2, 1u << 20};
  return {2, 1, c};
}
wire::ControlMessage grant_message(size_t state_bytes) {
  wire::Grant g;
  g.conn_id = sample_cert().conn_id;
  g.epoch = 4;
  g.request_id = 17;
  g.from_owner = true;
  g.pos = {3, 2, 1u << 20};
  g.state = pattern_bytes(state_bytes, 9);  // an opaque blob to this codec
  wire::ControlMessage m{1, 2, std::move(g)};
  // A body over one chunk is chunked and needs a salt (docs/PROTOCOL.md §5). Encoding the same
  // message again with it is fine for timing; a member never reuses one.
  for (size_t i = 0; i < m.salt.size(); ++i) m.salt[i] = static_cast<uint8_t>(0x5A + i);
  return m;
}

void control_encode(benchmark::State& state, const wire::ControlMessage& m) {
  const cert::Key key = bench_pool_key();
  auto first = wire::encode_control(key, m);
  if (!first || !wire::decode_control(key, *first)) {
    state.SkipWithError("control message does not round-trip");
    return;
  }
  for (auto _ : state) {
    auto r = wire::encode_control(key, m);
    if (!r) {
      state.SkipWithError("encode_control failed inside the timed loop");
      break;
    }
    benchmark::DoNotOptimize(r.value().data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(first->size()));
}

void control_decode(benchmark::State& state, const wire::ControlMessage& m) {
  const cert::Key key = bench_pool_key();
  auto enc = wire::encode_control(key, m);
  if (!enc) {
    state.SkipWithError("encode_control failed");
    return;
  }
  const auto type = wire::type_of(m.body);
  {
    auto d = wire::decode_control(key, *enc);
    Bytes flipped = *enc;
    flipped[flipped.size() / 2] ^= 1;
    auto bad = wire::decode_control(key, flipped);
    if (!d || wire::type_of(d->body) != type || d->from != m.from || d->to != m.to || bad ||
        bad.error() != Error::bad_mac) {
      state.SkipWithError("control message does not decode, or a flipped bit is accepted");
      return;
    }
  }
  for (auto _ : state) {
    auto d = wire::decode_control(key, *enc);
    if (!d) {
      state.SkipWithError("decode_control failed inside the timed loop");
      break;
    }
    benchmark::DoNotOptimize(d);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(enc->size()));
}

void BM_ControlEncodeClaim(benchmark::State& state) { control_encode(state, claim_message()); }
void BM_ControlDecodeClaim(benchmark::State& state) { control_decode(state, claim_message()); }
void BM_ControlEncodeGrant(benchmark::State& state) {
  control_encode(state, grant_message(static_cast<size_t>(state.range(0))));
}
void BM_ControlDecodeGrant(benchmark::State& state) {
  control_decode(state, grant_message(static_cast<size_t>(state.range(0))));
}
BENCHMARK(BM_ControlEncodeClaim);
BENCHMARK(BM_ControlDecodeClaim);
BENCHMARK(BM_ControlEncodeGrant)->Arg(kKiB)->Arg(kMiB)->Arg(16 * kMiB);
BENCHMARK(BM_ControlDecodeGrant)->Arg(kKiB)->Arg(kMiB)->Arg(16 * kMiB);

}  // namespace
}  // namespace mtcp::bench
