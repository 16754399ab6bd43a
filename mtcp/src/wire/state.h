// The transferred connection state (docs/PROTOCOL.md §7): what a new owner needs to continue a
// connection exactly where the client is. Paper §2: "M-TCP logs and transfers from S1 data
// received and acknowledged since the last snapshot. It also transfers unacknowledged data sent
// before the last snapshot, for retransmission."
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/buffer.h"
#include "common/limits.h"
#include "common/result.h"

namespace mtcp::wire {

struct ConnState {
  uint64_t conn_id = 0;
  uint64_t epoch = 0;        // ownership epoch this state belongs to
  uint32_t migrations = 0;   // highest migration counter accepted; a MIGRATE must carry more
  uint32_t issuer_id = 0;    // server that created the connection
  // Snapshot taken by the application at a consistent point.
  uint64_t snap_id = 0;      // 0: no snapshot yet, the application starts fresh
  uint64_t snap_in_seq = 0;  // input bytes consumed when the snapshot was taken
  uint64_t snap_out_seq = 0; // output bytes written when the snapshot was taken
  bool snapshot_elided = false;  // snapshot bytes omitted: the receiver holds snap_id already
  Bytes snapshot;
  // decode_state(BlockPtr) only: a large snapshot as a view of the encoding it came in (no
  // copy); `snapshot` is then empty. snapshot_bytes() is the snapshot either way.
  Slice snapshot_shared;
  std::span<const uint8_t> snapshot_bytes() const {
    return snapshot_shared.empty() ? std::span<const uint8_t>(snapshot) : snapshot_shared.span();
  }
  // Output written before the snapshot and not yet acknowledged: [out_log_start, snap_out_seq).
  uint64_t out_log_start = 0;
  Bytes out_log;
  // Eager REPL_STATE only: out_log continues the output log of the state the alternate
  // confirmed last; out_log_start is where that one ended, not the owner's unacknowledged start.
  bool out_log_tail = false;
  // Eager REPL_STATE only: in_log is empty here; the alternate already holds the input from
  // snap_in_seq on (sent as REPL_LOG increments) and keeps its own copy.
  bool in_log_kept = false;
  // Input received since the snapshot: [snap_in_seq, snap_in_seq + in_log.size()).
  Bytes in_log;
  bool client_fin = false;   // the client closed its direction at in_end()
  // Version 2: output written after the snapshot, for the new owner's replay check
  // (docs/PROTOCOL.md §4.3, §7). out_tail is output [tail_start, tail_start + out_tail.size())
  // still in the owner's send log (not acknowledged); tail_start >= snap_out_seq. With
  // out_digest, `digest` is XXH3-128 of output [snap_out_seq, digest_end), digest_end <=
  // tail_start: bytes the client acknowledged, which the owner no longer holds. Output in
  // [digest_end, tail_start) (or [snap_out_seq, tail_start) without a digest) cannot be checked.
  // The encoder writes tail_start / digest_end as at least snap_out_seq.
  uint64_t tail_start = 0;
  Bytes out_tail;
  bool out_digest = false;
  uint64_t digest_end = 0;
  std::array<uint8_t, 16> digest{};

  uint64_t in_end() const { return snap_in_seq + in_log.size(); }
};

// Encodes; fails with snapshot_too_large / state_too_large if a cap would be exceeded.
Result<Bytes> encode_state(const ConnState& s, size_t snapshot_bytes_max = kSnapshotBytesMax);
// The same with the snapshot's bytes taken from `snapshot` instead of s.snapshot (which must be
// empty): the engine encodes its own copy of a megabytes snapshot without making another.
Result<Bytes> encode_state(const ConnState& s, std::span<const uint8_t> snapshot, size_t snapshot_bytes_max);
// The bulky byte fields given as pieces (views of the sender's own buffers): each byte is
// copied once, straight into the encoding. s's own snapshot and log fields must be empty.
struct StatePieces {
  std::span<const uint8_t> snapshot;
  std::vector<std::span<const uint8_t>> out_log, in_log, out_tail;
};
Result<Bytes> encode_state(const ConnState& s, const StatePieces& pieces, size_t snapshot_bytes_max);
// The same cut around the snapshot: the encoding is before || pieces.snapshot || after, and
// the snapshot's bytes are not copied (a sender writes them from where they lie).
struct StateAround {
  Bytes before, after;
};
Result<StateAround> encode_state_around(const ConnState& s, const StatePieces& pieces, size_t snapshot_bytes_max);
// Decodes and validates every length and sequence relation.
Result<ConnState> decode_state(std::span<const uint8_t> bytes,
                               size_t snapshot_bytes_max = kSnapshotBytesMax);
// The same from an encoding held in a shared block: a snapshot of at least kSnapshotShareBytes
// that is at least half of the encoding is left where it is (snapshot_shared), so a 16 MiB
// state is not copied again on arrival. The half bound keeps the logs' bytes, which are
// copied out, from being held with it for long.
inline constexpr size_t kSnapshotShareBytes = 64u << 10;
Result<ConnState> decode_state(const BlockPtr& bytes, size_t snapshot_bytes_max = kSnapshotBytesMax);

}  // namespace mtcp::wire
