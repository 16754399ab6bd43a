// Every cap and timeout of the protocol core, in one place (docs/PROTOCOL.md §8).
// Units are at the end of each name. Exceeding a cap is a clear Error, never a crash or a
// silent truncation.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mtcp {

// Hard wire-format caps: a decoder refuses anything above them whatever the config says.
inline constexpr size_t kFramePayloadBytesMax = 1u << 20;         // DATA payload per frame
inline constexpr size_t kFrameBodyBytesMax = kFramePayloadBytesMax + 64;
inline constexpr size_t kControlMessageBytesMax = 64u << 20;      // one server-to-server message
inline constexpr size_t kSnapshotBytesMax = 16u << 20;            // application snapshot
inline constexpr size_t kStateLogBytesMax = 16u << 20;            // each log inside a state
inline constexpr size_t kAlternatesMax = 16;                      // alternates in WELCOME
inline constexpr size_t kAddressBytesMax = 255;                   // one alternate address
inline constexpr size_t kReasonTextBytesMax = 255;                // REFUSE/DENY free text
inline constexpr size_t kPoolServersMax = 64;                     // members of one pool

enum class TransferMode : uint8_t { lazy = 0, eager = 1 };

// Per-node configuration. Defaults suit a LAN pool; every field has a unit.
struct Limits {
  size_t frame_payload_bytes_max = 256u << 10;  // largest DATA frame an engine emits
  size_t snapshot_bytes_max = 16u << 20;        // <= kSnapshotBytesMax
  size_t input_log_bytes_max = 8u << 20;        // client input retained since the last snapshot
  size_t send_log_bytes_max = 8u << 20;         // output written but not yet acknowledged
  size_t recv_buffer_bytes_max = 8u << 20;      // input received but not yet read by the app
  size_t connections_max = 65536;               // connection table (owned + replicas)
  size_t pending_migrations_max = 1024;         // migrations being verified or fetched at once
  size_t subflows_max = 65536;                  // subflows a server tracks at once
  // All connections' buffered bytes together (input logs, parked input, send logs, snapshots,
  // unparsed subflow input): at this, new connections, migrations and replicas are refused
  // (member_full), while existing connections go on within their own caps.
  size_t member_buffered_bytes_max = 512u << 20;

  uint64_t hello_timeout_ms = 2000;      // no preface within this: treat as plain TCP
  uint64_t cert_lifetime_ms = 600000;    // certificates expire after this
  uint64_t claim_timeout_ms = 300;       // wait for owner/votes before deciding
  // Lazy: how long a claim waits for the owner's GRANT before it is abandoned, doubled for each
  // recent claim of this member for the connection that timed out, and at most 3/4 of
  // migrate_timeout_ms (the client hears the refusal before its own attempt gives up). Longer
  // than claim_timeout_ms: a lazy claim has nobody but the owner to turn to, and an owner
  // starved of CPU needs time to export and sign a state of megabytes (docs/ARCHITECTURE.md
  // §14: at 5% of a core with 16 MB of logs the GRANT took 0.66-1.17 s; 300 ms lost every
  // claim, 1 s 6 runs of 10). With the default migrate_timeout_ms the cap is this value.
  uint64_t lazy_claim_timeout_ms = 1500;
  uint64_t migrate_timeout_ms = 2000;    // client: give up on one attempt after this
  uint64_t replication_retry_ms = 100;   // eager: resend unacknowledged pushes after this
  // Eager: new input and snapshots are pushed to the alternates at most this long after they
  // appear (0: at once), or as soon as this much new input waits: one push carries what a
  // request/response exchange produced (its input and the snapshot after the reply) instead
  // of one push each (docs/PROTOCOL.md §5.3 "Batching").
  uint64_t replication_batch_ms = 2;
  size_t replication_batch_bytes = 256u << 10;
  // Eager: input sent to an alternate and not confirmed by it at most this much; beyond it the
  // owner waits for the alternate's REPL_ACK (docs/PROTOCOL.md §5.3 "Window"). Unbounded, a
  // slower alternate's backlog on the control connection grew to tens of megabytes, and a
  // claim's GRANT queued behind it.
  size_t replication_window_bytes = 4u << 20;
  // An ACK with no output to ride with waits at most this long for some (0: at once), unless
  // this much input waits unacknowledged (docs/PROTOCOL.md §4, ACK frame, "Delayed").
  uint64_t ack_delay_ms = 2;
  size_t ack_delay_bytes = 16u << 10;
  uint64_t orphan_timeout_ms = 30000;    // owned connection without a subflow is freed after this
  uint64_t replica_timeout_ms = 600000;  // replica without news is freed after this
  uint32_t migrate_requests_per_s_max = 2000;  // token bucket on MIGRATE per server
  uint32_t migrate_attempts_max = 8;  // client: attempts in a row before the connection fails
  uint64_t retry_backoff_ms = 50;     // client: wait before the 2nd attempt in a row, doubling
  uint64_t retry_backoff_max_ms = 2000;  // client: longest wait between two attempts
  uint32_t claim_hops_max = 3;        // lazy: owner hints followed before giving up

  // The member runtime's sockets (runtime/server_node.cc; docs/security.md).
  uint64_t plain_idle_timeout_ms = 300000;    // plain TCP connection with nothing moving: closed
  size_t plain_connections_max = 16384;       // plain TCP connections served at once
  uint64_t control_hello_timeout_ms = 3000;   // inbound control connection: PEER_HELLO within this
  uint64_t control_idle_timeout_ms = 300000;  // inbound control connection without a message: closed
                                              // (a sender closes its own idle ones at half of it)

  TransferMode transfer_mode = TransferMode::lazy;
  bool ack_after_replication = false;  // eager only: ack client data once a quorum holds it
};

}  // namespace mtcp
