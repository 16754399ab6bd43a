// The bank service's per-connection snapshot (docs/dbfrontend.md "Snapshots and determinism"):
// what a new owner imports when a session moves. Big-endian:
//   magic u32 "BANK" | input position u64 | output position u64 | last seq u64 |
//   line buffer (services/line_buffer.h) | pending reply bytes (u32 length + bytes) |
//   in transaction u8 | doomed reason (u32 length + bytes) | operation count u32 |
//   per operation: seq u64, command u8, a u64, b u64, amount u64, reply (u32 length + bytes)
// Every length is bounded below; decode refuses anything else (fuzzed by fuzz_bank_snapshot).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bank_protocol.h"
#include "common/buffer.h"
#include "services/line_buffer.h"

namespace mtcp::bank {

inline constexpr uint32_t kSnapshotMagic = 0x42414E4Bu;  // "BANK"
inline constexpr size_t kLineBytesMax = 256;             // longest request line
inline constexpr size_t kTxOpsMax = 32;                  // operations in one interactive transaction
inline constexpr size_t kReadBytes = 4096;               // input read at once
inline constexpr size_t kReplyBytesMax = 256;            // longest reply body kept in the transaction log
inline constexpr size_t kPendingReplyBytesMax = kReadBytes + 64 * kLineBytesMax;  // reply bytes not yet taken

struct TxOp {
  Request rq;
  std::string reply;  // the reply body the client received
};

// The fields of a snapshot, for the import (decode fills them) and for tests.
struct BankSnapshot {
  uint64_t in = 0, out = 0;  // the connection's positions when it was taken
  uint64_t last_seq = 0;
  svc::LineBuffer lines{kLineBytesMax};
  std::string pending;  // reply bytes the connection had not taken
  bool in_tx = false;
  std::string doomed;
  std::vector<TxOp> tx;
};

void encode_bank_snapshot(Bytes& out, uint64_t in, uint64_t out_pos, uint64_t last_seq, const svc::LineBuffer& lines,
                          const std::string& pending, bool in_tx, const std::string& doomed,
                          const std::vector<TxOp>& tx);
// False if the bytes are not a bank snapshot within the bounds above (s is then unspecified).
bool decode_bank_snapshot(std::span<const uint8_t> bytes, BankSnapshot& s);

}  // namespace mtcp::bank
