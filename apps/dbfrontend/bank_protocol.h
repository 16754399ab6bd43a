// The banking line protocol (docs/dbfrontend.md "Protocol"). Every request is one line
//   <seq> <COMMAND> [args]
// with a client sequence number seq (1 .. 2^63-1, growing on each connection), answered by
//   <seq> OK ... | <seq> ERR <reason> | <seq> ABORTED <reason>
// Account ids are integers 1 .. 2^62, amounts 1 .. kAmountMax.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mtcp::bank {

enum class Cmd { open, deposit, withdraw, transfer, balance, audit, begin, commit, abort };

struct Request {
  uint64_t seq = 0;  // 0: the line had no sequence number
  Cmd cmd = Cmd::audit;
  int64_t a = 0, b = 0, amount = 0;
  std::string error;  // non-empty: the line is malformed (the reason)
};

Request parse_request(std::string_view line);
// The function name bank_op() takes ("OPEN", "TRANSFER", ...).
const char* op_name(Cmd c);
// A request's operation written back canonically (the transaction log of an interactive
// transaction keeps this): "TRANSFER 1 2 50".
std::string canonical(const Request& r);

}  // namespace mtcp::bank
