// libFuzzer harness for the bank service's snapshot (apps/dbfrontend/bank_snapshot.h), the
// bytes a new owner imports when a banking session moves to it.
//
// Checked: no crash, nothing beyond the bounds (every string and the operation count are
// capped); what decodes re-encodes to bytes that decode to the same fields, and that encoding
// is a fixed point.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "bank_snapshot.h"

namespace {
namespace bk = mtcp::bank;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_bank_snapshot: check failed: %s\n", what);
    std::abort();
  }
}
mtcp::Bytes encode(const bk::BankSnapshot& s) {
  mtcp::Bytes b;
  bk::encode_bank_snapshot(b, s.in, s.out, s.last_seq, s.lines, s.pending, s.in_tx, s.doomed, s.tx);
  return b;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bk::BankSnapshot s;
  if (!bk::decode_bank_snapshot(std::span<const uint8_t>(data, size), s)) return 0;
  check(s.pending.size() <= bk::kPendingReplyBytesMax && s.doomed.size() <= bk::kReplyBytesMax, "strings bounded");
  check(s.tx.size() <= bk::kTxOpsMax, "operation count bounded");
  for (const auto& op : s.tx) check(op.reply.size() <= bk::kReplyBytesMax, "replies bounded");
  const mtcp::Bytes e1 = encode(s);
  bk::BankSnapshot s2;
  check(bk::decode_bank_snapshot(e1, s2), "a re-encoded snapshot decodes");
  check(s2.in == s.in && s2.out == s.out && s2.last_seq == s.last_seq && s2.pending == s.pending &&
            s2.in_tx == s.in_tx && s2.doomed == s.doomed && s2.tx.size() == s.tx.size(),
        "the same fields after a round trip");
  for (size_t i = 0; i < s.tx.size(); ++i) {
    const auto &a = s.tx[i].rq, &b = s2.tx[i].rq;
    check(a.seq == b.seq && a.cmd == b.cmd && a.a == b.a && a.b == b.b && a.amount == b.amount &&
              s.tx[i].reply == s2.tx[i].reply,
          "the same operations after a round trip");
  }
  check(encode(s2) == e1, "the encoding is a fixed point");
  return 0;
}
