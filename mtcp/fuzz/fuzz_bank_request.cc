// libFuzzer harness for the banking request line (apps/dbfrontend/bank_protocol.h), the text a
// client sends the bank service, one request per line.
//
// Checked: no crash; a line is either refused with a reason or parsed into a request whose
// fields are in range (seq 1 .. 2^63-1; account ids 1 .. 2^62 where the command has them;
// amounts positive where it has one, OPEN's may be 0); an operation's canonical form (what an interactive
// transaction's log keeps) parses back to the same request.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bank_protocol.h"

namespace {
using mtcp::bank::Cmd;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_bank_request: check failed: %s\n", what);
    std::abort();
  }
}
bool is_operation(Cmd c) {
  return c == Cmd::open || c == Cmd::deposit || c == Cmd::withdraw || c == Cmd::transfer || c == Cmd::balance ||
         c == Cmd::audit;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  const auto r = mtcp::bank::parse_request(line);
  if (!r.error.empty()) return 0;
  check(r.seq >= 1 && r.seq <= (uint64_t{1} << 63) - 1, "sequence number in range");
  if (!is_operation(r.cmd)) return 0;
  if (r.cmd != Cmd::audit) check(r.a >= 1 && r.a <= (int64_t{1} << 62), "account id in range");
  if (r.cmd == Cmd::transfer) check(r.b >= 1 && r.b <= (int64_t{1} << 62), "second account id in range");
  if (r.cmd != Cmd::audit && r.cmd != Cmd::balance) check(r.amount >= (r.cmd == Cmd::open ? 0 : 1), "amount in range");
  const std::string again = std::to_string(r.seq) + " " + mtcp::bank::canonical(r);
  const auto r2 = mtcp::bank::parse_request(again);
  check(r2.error.empty(), "the canonical form parses");
  check(r2.seq == r.seq && r2.cmd == r.cmd && r2.a == r.a && r2.b == r.b && r2.amount == r.amount,
        "the canonical form parses back to the same request");
  return 0;
}
