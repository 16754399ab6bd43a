#include "bank_snapshot.h"

#include "common/bytes.h"

namespace mtcp::bank {
namespace {

void put_string(Writer& w, const std::string& s) {
  w.u32(static_cast<uint32_t>(s.size()));
  w.bytes(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

bool get_string(Reader& r, std::string& s, size_t max) {
  uint32_t n = r.u32();
  if (!r.ok() || n > max) return false;
  auto b = r.bytes(n);
  if (!r.ok()) return false;
  s.assign(reinterpret_cast<const char*>(b.data()), b.size());
  return true;
}

}  // namespace

void encode_bank_snapshot(Bytes& b, uint64_t in, uint64_t out_pos, uint64_t last_seq, const svc::LineBuffer& lines,
                          const std::string& pending, bool in_tx, const std::string& doomed,
                          const std::vector<TxOp>& tx) {
  Writer w(b);
  w.u32(kSnapshotMagic);
  w.u64(in);
  w.u64(out_pos);
  w.u64(last_seq);
  lines.save(w);
  put_string(w, pending);
  w.u8(in_tx ? 1 : 0);
  put_string(w, doomed);
  w.u32(static_cast<uint32_t>(tx.size()));
  for (const TxOp& op : tx) {
    w.u64(op.rq.seq);
    w.u8(static_cast<uint8_t>(op.rq.cmd));
    w.u64(static_cast<uint64_t>(op.rq.a));
    w.u64(static_cast<uint64_t>(op.rq.b));
    w.u64(static_cast<uint64_t>(op.rq.amount));
    put_string(w, op.reply);
  }
}

bool decode_bank_snapshot(std::span<const uint8_t> bytes, BankSnapshot& s) {
  Reader r(bytes);
  uint32_t magic = r.u32();
  s.in = r.u64();
  s.out = r.u64();
  s.last_seq = r.u64();
  bool ok = magic == kSnapshotMagic && s.lines.load(r) && get_string(r, s.pending, kPendingReplyBytesMax);
  s.in_tx = r.u8() != 0;
  ok = ok && get_string(r, s.doomed, kReplyBytesMax);
  uint32_t n = r.u32();
  ok = ok && r.ok() && n <= kTxOpsMax;
  s.tx.clear();
  for (uint32_t i = 0; ok && i < n; ++i) {
    TxOp op;
    op.rq.seq = r.u64();
    uint8_t cmd = r.u8();
    op.rq.a = static_cast<int64_t>(r.u64());
    op.rq.b = static_cast<int64_t>(r.u64());
    op.rq.amount = static_cast<int64_t>(r.u64());
    op.rq.cmd = static_cast<Cmd>(cmd);
    ok = get_string(r, op.reply, kReplyBytesMax) && cmd <= static_cast<uint8_t>(Cmd::abort);
    s.tx.push_back(std::move(op));
  }
  return ok && r.done();
}

}  // namespace mtcp::bank
