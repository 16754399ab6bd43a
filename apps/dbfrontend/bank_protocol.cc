#include "bank_protocol.h"

#include <charconv>
#include <vector>

#include "bank_schema.h"

namespace mtcp::bank {
namespace {

constexpr int64_t kAccountMax = int64_t{1} << 62;

struct Cmdinfo {
  const char* name;
  Cmd cmd;
  int accounts;  // account arguments
  bool amount;   // an amount argument follows them
};
constexpr Cmdinfo kCmds[] = {
    {"OPEN", Cmd::open, 1, true},         {"DEPOSIT", Cmd::deposit, 1, true},
    {"WITHDRAW", Cmd::withdraw, 1, true}, {"TRANSFER", Cmd::transfer, 2, true},
    {"BALANCE", Cmd::balance, 1, false},  {"AUDIT", Cmd::audit, 0, false},
    {"BEGIN", Cmd::begin, 0, false},      {"COMMIT", Cmd::commit, 0, false},
    {"ABORT", Cmd::abort, 0, false},
};

bool number(std::string_view s, int64_t lo, int64_t hi, int64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

}  // namespace

Request parse_request(std::string_view line) {
  Request r;
  std::vector<std::string_view> w;
  size_t i = 0;
  while (i < line.size() && w.size() <= 5) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ') ++j;
    if (j > i) w.push_back(line.substr(i, j - i));
    i = j;
  }
  int64_t seq = 0;
  if (w.empty() || !number(w[0], 1, INT64_MAX, seq)) {
    r.error = "malformed request: a line starts with a sequence number from 1 to 9223372036854775807";
    return r;
  }
  r.seq = static_cast<uint64_t>(seq);
  if (w.size() < 2) {
    r.error = "malformed request: no command";
    return r;
  }
  const Cmdinfo* ci = nullptr;
  for (const auto& c : kCmds) {
    if (w[1] == c.name) ci = &c;
  }
  if (ci == nullptr) {
    r.error = "unknown command (OPEN DEPOSIT WITHDRAW TRANSFER BALANCE AUDIT BEGIN COMMIT ABORT)";
    return r;
  }
  r.cmd = ci->cmd;
  size_t want = 2 + static_cast<size_t>(ci->accounts) + (ci->amount ? 1 : 0);
  if (w.size() != want) {
    r.error = std::string("malformed request: ") + ci->name + " takes " + std::to_string(want - 2) + " argument(s)";
    return r;
  }
  if (ci->accounts >= 1 && !number(w[2], 1, kAccountMax, r.a)) {
    r.error = "bad account id (an integer from 1 to 4611686018427387904)";
    return r;
  }
  if (ci->accounts >= 2 && !number(w[3], 1, kAccountMax, r.b)) {
    r.error = "bad account id (an integer from 1 to 4611686018427387904)";
    return r;
  }
  if (ci->cmd == Cmd::transfer && r.a == r.b) {
    r.error = "transfer to the same account";
    return r;
  }
  int64_t lo = ci->cmd == Cmd::open ? 0 : 1;  // an account may open empty
  if (ci->amount && !number(w[want - 1], lo, kAmountMax, r.amount)) {
    r.error = "bad amount (an integer from " + std::to_string(lo) + " to " + std::to_string(kAmountMax) + ")";
    return r;
  }
  return r;
}

const char* op_name(Cmd c) {
  for (const auto& ci : kCmds) {
    if (ci.cmd == c) return ci.name;
  }
  return "?";
}

std::string canonical(const Request& r) {
  std::string s = op_name(r.cmd);
  if (r.cmd == Cmd::audit) return s;
  s += " " + std::to_string(r.a);
  if (r.cmd == Cmd::transfer) s += " " + std::to_string(r.b);
  if (r.cmd != Cmd::balance) s += " " + std::to_string(r.amount);
  return s;
}

}  // namespace mtcp::bank
