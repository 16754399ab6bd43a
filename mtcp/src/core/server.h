// Server-side engine (sans-IO): one pool member. It owns the connections whose client is
// attached here, holds replicas of others (eager mode), answers ownership claims from other
// members and makes its own when a client migrates in (docs/PROTOCOL.md §4, §5).
//
// The driver feeds subflow bytes and control messages in, pulls subflow bytes out with
// poll_transmit(), performs take_actions() (close a subflow, send a control message, hand a
// plain-TCP subflow to the plain service), and calls on_timer() at next_deadline(). The
// application reads, writes, snapshots and imports through the conn_* calls.
#pragma once
#include <array>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cert/cert.h"
#include "common/assert.h"
#include "common/counters.h"
#include "common/digest.h"
#include "common/limits.h"
#include "core/send_log.h"
#include "core/types.h"
#include "wire/control.h"
#include "wire/frame.h"
#include "wire/state.h"

namespace mtcp::core {

struct ServerConfig {
  ServerId self = 0;
  std::vector<wire::Alternate> pool;  // every member, self included; ids unique and non-zero
  cert::Key pool_key{};
  Limits limits;
  // The transport writes a chunked control message while it is being encoded: send_control
  // actions then carry a wire::ControlEncoder (`stream`) instead of bytes. The member runtime
  // does; the simulator and the tests take whole messages.
  bool stream_control = false;
};
// Checks a configuration: self in pool, ids unique and non-zero, caps within the wire caps.
Status validate(const ServerConfig& cfg);

struct ServerAction {
  enum class Kind { close_subflow, send_control, plain_tcp } kind;
  SubflowId subflow = 0;
  ServerId peer = 0;
  Bytes bytes;  // control message, or bytes already read from a plain-TCP subflow
  std::shared_ptr<wire::ControlEncoder> stream;  // instead of bytes: a chunked message (stream_control)
};

struct ServerEvent {
  enum class Kind {
    opened,    // new connection: the app starts a fresh instance
    imported,  // connection migrated in: the app imports snapshot() and reads on (replay first)
    resumed,   // same server, same app instance, new subflow
    fenced,    // ownership left this server: the app instance must stop (writes now fail)
    closed,    // connection finished or freed; `error` says why if not a clean close
  } kind;
  ConnId conn = 0;
  Error error = Error::ok;
};

class ServerEngine {
 public:
  ServerEngine(ServerConfig cfg, Random& rng);

  // Subflows (accepted TCP connections on the data port).
  void on_subflow_open(SubflowId sub, TimeMs now);
  void on_subflow_data(SubflowId sub, Slice bytes, TimeMs now);
  void on_subflow_closed(SubflowId sub, TimeMs now);
  size_t poll_transmit(SubflowId sub, size_t budget, std::vector<Slice>& out);
  bool wants_transmit(SubflowId sub) const;
  bool wants_read(SubflowId sub) const;

  // Control channel: one complete message from a peer member, as it came from the wire.
  void on_control(ServerId from, std::span<const uint8_t> message, TimeMs now);
  // The same message already decoded and authenticated by the transport's wire::ControlReader
  // (a chunked message is checked as it arrives; the engine then need not hold the bytes twice).
  void on_control_message(ServerId from, wire::ControlMessage&& m, TimeMs now);

  void on_timer(TimeMs now);
  // From an index kept up to date for what changed, so it does not grow with idle connections.
  TimeMs next_deadline() const;
  TimeMs next_deadline_scan() const;  // the same by scanning everything (tests compare the two)
  std::vector<ServerAction> take_actions() { return std::exchange(actions_, {}); }
  std::vector<ServerEvent> take_events() { return std::exchange(events_, {}); }

  // What may have changed since the last call: subflows whose wants_transmit()/wants_read()
  // may answer differently, connections whose conn_* answers may (input, acknowledgements,
  // events, the application's own calls). Anything not listed is unchanged, so a driver with
  // thousands of idle connections looks only at these (`all`: look at everything).
  // Listed ids may be gone already.
  struct Touched {
    bool all = false;
    std::vector<SubflowId> subflows;
    std::vector<ConnId> conns;
  };
  Touched take_touched();

  // Application contract (paper §2; docs/ARCHITECTURE.md "application contract").
  size_t conn_readable(ConnId c) const;
  size_t conn_read(ConnId c, std::span<uint8_t> dst);
  // Zero-copy read: slices of the received blocks (the input log keeps them for replay too).
  size_t conn_read_slices(ConnId c, size_t max_bytes, std::vector<Slice>& out);
  bool conn_input_closed(ConnId c) const;  // client closed and everything was read
  // Writes at the app's output position. Bytes the client already has (replay after import)
  // are counted as written and dropped. Returns bytes accepted (may be fewer: send log full).
  Result<size_t> conn_write(ConnId c, Slice s);
  Result<size_t> conn_write_copy(ConnId c, std::span<const uint8_t> bytes);
  size_t conn_write_space(ConnId c) const;
  // Record a snapshot at the app's current input/output positions.
  Status conn_snapshot(ConnId c, Bytes snapshot);
  Status conn_close(ConnId c);
  // For `imported`: the snapshot to import (empty and id 0: start fresh) and its positions.
  struct SnapshotView {
    uint64_t snap_id = 0;
    uint64_t in_seq = 0;
    uint64_t out_seq = 0;
    std::span<const uint8_t> bytes;
  };
  std::optional<SnapshotView> conn_snapshot_view(ConnId c) const;
  // Replay verification (docs/PROTOCOL.md §4.3), per connection, off by default. The host calls
  // it right after `opened` / `imported`. On: the owner digests its output after each snapshot
  // (so a successor can check its replay), and after an import the output the application
  // regenerates below the log's end is compared with what the old owner sent; a mismatch ends
  // the connection (RESET replay_mismatch, conn_write fails, event `closed` replay_mismatch).
  // Off: no hashing, no check.
  Status conn_verify_replay(ConnId c, bool on);
  // Ask the client to migrate away (drain, overload).
  Status conn_hint(ConnId c, wire::HintReason reason, ServerId target);

  // Introspection.
  struct ConnInfo {
    ConnId conn = 0;
    enum class Role { owner, frozen, replica } role = Role::owner;
    uint64_t epoch = 0;
    uint32_t counter = 0;
    bool attached = false;
    uint64_t in_end = 0;     // client bytes held
    uint64_t app_in = 0;     // client bytes read by the app
    uint64_t out_end = 0;    // output bytes written
    uint64_t out_acked = 0;  // output bytes acknowledged by the client
    uint64_t snap_id = 0;
    uint64_t snap_in_seq = 0;       // input position of the last snapshot
    uint64_t snap_out_seq = 0;      // output position of the last snapshot
    uint64_t replay_in_until = 0;   // input below this is a replay (logged before the import)
    uint64_t replay_out_until = 0;  // output below this the client has or the log held at import
    bool verify_replay = false;
  };
  std::optional<ConnInfo> conn_info(ConnId c) const;
  std::vector<ConnId> owned_connections() const;
  size_t connection_count() const { return conns_.size(); }
  // Every connection's and subflow's buffered bytes (member_buffered_bytes_max), recounted
  // at most every kBufferedRecountMs when new work asks (the sum is O(connections)).
  size_t buffered_bytes() const { return buffered_; }
  static constexpr TimeMs kBufferedRecountMs = 100;
  size_t subflow_count() const { return subs_.size(); }
  const Counters& counters() const { return counters_; }
  ServerId self() const { return cfg_.self; }
  const ServerConfig& config() const { return cfg_; }

 private:
  using Role = ConnInfo::Role;
  struct Peer {  // eager replication towards one alternate
    wire::ReplicaPos acked;
    uint64_t sent_snap = 0;
    uint64_t sent_in_end = 0;
    uint64_t sent_epoch = 0;
    uint64_t sent_snap_out = 0;  // snap_out_seq of the last state sent
    // The alternate confirmed a state of this epoch: it holds the output log up to out_have,
    // so the next REPL_STATE carries only what follows (0: send it whole).
    uint64_t out_have = 0;
    uint64_t out_have_epoch = 0;
    TimeMs last_send_ms = 0;
    // States sent and not confirmed yet, oldest first: a confirmation of any of them (not only
    // of the last one sent) says how much output the alternate holds. Under bulk traffic the
    // next snapshot is often sent before the last one is confirmed; matching only the last
    // one made out_have stand still and every REPL_STATE carry the whole output log.
    struct Sent {
      uint64_t epoch = 0, snap_id = 0, snap_out = 0, snap_in = 0;
    };
    std::deque<Sent> unconfirmed;  // at most kUnconfirmedStatesMax
    TimeMs last_state_ms = 0;      // the last REPL_STATE went then
    bool window_full = false;      // input held back for replication_window_bytes: an ack resumes
  };
  static constexpr size_t kUnconfirmedStatesMax = 32;
  // A REPL_STATE not confirmed is waited for this many replication_retry_ms before it is sent
  // again (replication.cc, "one state in flight").
  static constexpr uint64_t kStateWaitRetries = 10;
  // Output after a snapshot as a transferred state described it (docs/PROTOCOL.md §7): a
  // digest of [from, digest_end) and the bytes [tail_start, end()).
  struct OutRecord {
    uint64_t from = 0;  // snap_out_seq of that state
    bool has_digest = false;
    uint64_t digest_end = 0;
    Digest128 digest{};
    uint64_t tail_start = 0;
    Slice tail;
    uint64_t end() const { return tail_start + tail.len; }
  };
  struct Conn {
    ConnId id = 0;
    Role role = Role::owner;
    uint64_t epoch = 0;
    uint32_t counter = 0;
    ServerId issuer = 0;
    std::optional<SubflowId> subflow;
    TimeMs news_ms = 0;  // last attach/detach or replica update: drives the timeouts
    uint64_t snap_id = 0, snap_in_seq = 0, snap_out_seq = 0;
    Slice snapshot;  // shared, never changed in place: a new snapshot replaces it
    SliceQueue in_log;  // [snap_in_seq, in_end)
    uint64_t app_in = 0;
    uint64_t replay_until = 0;
    bool client_fin = false;
    uint64_t client_fin_at = 0;
    // DATA received while the input log was full, not acknowledged (bounded by parked_max()).
    std::deque<wire::Data> parked;
    size_t parked_bytes = 0;
    uint64_t parked_end = 0;
    bool parked_fin = false;  // the client's CLOSE arrived behind parked DATA
    SendLog out;
    uint64_t app_out = 0;
    uint64_t replay_out_until = 0;
    // Replay verification. verify: the application asked for it. Owner: `dig` is the running
    // digest of output [snap_out_seq, dig_end), fed as output leaves the send log (ack) or is
    // regenerated below its base; dig_ok false: it has a gap and is not exported.
    bool verify = false;
    std::unique_ptr<StreamDigest> dig;
    uint64_t dig_end = 0;
    bool dig_ok = false;
    // The record of the last installed state (a new owner checks its replay against it; a
    // replica or frozen copy exports it again), or captured from the owner's log at freeze.
    bool has_rec = false;
    OutRecord rec;
    // New owner: digest of the regenerated output [rec.from, chk_pos) (chk_ok: no gap).
    std::unique_ptr<StreamDigest> chk;
    uint64_t chk_pos = 0;
    bool chk_ok = false;
    uint64_t acked_in = 0;  // last cumulative ack sent to the client
    // Since when an ACK is owed and held back for output to ride with (ack_delay_ms); kNever:
    // none held (an owed ACK nobody noted goes at once).
    TimeMs ack_owed_ms = kNever;
    bool app_closed = false;
    bool fin_sent = false;
    bool fin_acked = false;  // the client acknowledged our CLOSE (ACK at its position + 1)
    std::map<ServerId, Peer> peers;
    TimeMs cert_issued_ms = 0;  // the client's current certificate was issued then
    cert::Certificate client_cert;  // ... and it is this one (a RENEW wraps with its secret)
    ServerId handed_to = 0;  // frozen: who received the hand-off
    uint64_t handed_epoch = 0;
    // Eager, owner: a push is due by repl_due_ms (kNever: none waits); repl_base_in is the
    // input end at the last push (replication_batch_bytes counts from there).
    TimeMs repl_due_ms = kNever;
    uint64_t repl_base_in = 0;
    // Lazy frozen: the claims (request ids) of handed_to our GRANTs answered and that it has not
    // abandoned yet. The owner serves again only once every one is abandoned (a GRANT still
    // valid may be on its way). More than kHandedRequestsMax: never serves again by ABANDON.
    std::vector<uint32_t> handed_requests;
    bool handed_untracked = false;
    // Lazy owner: the highest counter of a claim whose claimer abandoned it (ABANDON): a claim
    // with a counter not above it is stale, from an attempt the client has given up.
    uint32_t abandoned_counter = 0;
    explicit Conn(size_t out_max) : out(out_max) {}
    uint64_t in_end() const { return snap_in_seq + in_log.size(); }
    wire::ReplicaPos pos() const { return {epoch, snap_id, in_end()}; }
  };
  enum class Phase { preface, hello, challenged, claiming, attached, closing };
  struct Sub {
    Phase phase = Phase::preface;
    SliceQueue in;
    wire::FrameDecoder decoder;
    TxQueue tx;
    TimeMs opened_ms = 0;
    ConnId conn = 0;
    cert::Challenge nonce{};
    wire::Migrate request;
  };
  struct PendingClaim {
    ConnId conn = 0;
    SubflowId sub = 0;
    wire::Migrate request;
    uint64_t epoch = 0;
    TransferMode mode = TransferMode::lazy;
    ServerId asked = 0;  // lazy: the member asked
    bool adopt_only = false;  // lazy: no client waiting; take over only what was handed to us
    uint32_t hops = 0;
    TimeMs deadline_ms = 0;
    std::set<ServerId> granted;
    bool owner_answered = false;
    std::optional<wire::ConnState> best;  // freshest remote state received
    bool best_from_owner = false;  // it came from the owner (freshest output record on a tie)
    wire::ReplicaPos best_pos;
    ServerId deny_hint = 0;
    Error deny_reason = Error::ok;
  };
  struct Vote {
    uint64_t epoch = 0;
    ServerId claimer = 0;
  };

  // What changed, for take_touched() and the deadline index.
  void touch_sub(SubflowId id) {
    touched_subs_.insert(id);
    dl_subs_.insert(id);
  }
  void touch_conn(ConnId id) {
    touched_conns_.insert(id);
    dl_conns_.insert(id);
  }
  void touch_all() { touched_all_ = dl_all_ = true; }
  void emit(ServerEvent ev) {
    touch_conn(ev.conn);
    events_.push_back(ev);
  }
  // server.cc: invariants (MTCP_ASSERT): one connection's positions, logs and subflow link, and the
  // tables' bounds; check_all() walks every connection and subflow (from on_timer, which
  // visits them all anyway).
  void check_conn(const Conn& c) const;
  void check_tables() const;
  void check_all() const;
  // transfer.cc: record a vote (or, from a DENY, the newer epoch another member knows): never
  // older than the one recorded, and one claimer per epoch.
  void record_vote(ConnId id, Vote v);
  TimeMs conn_deadline(const Conn& c) const;
  TimeMs sub_deadline(const Sub& s) const;
  void refresh_deadlines() const;

  // server_subflows.cc: subflows, client frames, the input log, attach / detach.
  void pump(SubflowId sub, TimeMs now);
  void pump_frames(SubflowId sub, TimeMs now);
  void handle_frame(SubflowId sub, wire::Frame&& f, TimeMs now);
  void on_hello(SubflowId sub, const wire::Hello& h, TimeMs now);
  void on_migrate(SubflowId sub, const wire::Migrate& m, TimeMs now);
  void on_data(SubflowId sub, Conn& c, wire::Data&& d);
  void accept_data(Conn& c, const wire::Data& d);
  void unpark(Conn& c);
  void drop_parked(Conn& c);
  // The client never has more than its send log unacknowledged: parked DATA stays below that.
  size_t parked_max() const { return cfg_.limits.send_log_bytes_max + cfg_.limits.frame_payload_bytes_max; }
  void refuse(SubflowId sub, Error e, ServerId hint = 0);
  void kill_subflow(SubflowId sub, Error e);
  void detach(Conn& c);
  void attach(Conn& c, SubflowId sub, TimeMs now);
  void send_accept(Conn& c, SubflowId sub, const cert::Certificate& presented, TimeMs now);
  void renew_cert(Conn& c, TimeMs now);
  uint64_t ack_target(const Conn& c) const;
  // Delayed ACK (docs/PROTOCOL.md §4, ACK frame, "Delayed"): note_ack_owed starts the
  // wait when input becomes acknowledgeable; ack_wanted says whether an ACK goes now.
  void note_ack_owed(Conn& c);
  bool ack_wanted(const Conn& c) const;
  bool take_token(TimeMs now);
  // server.cc: freeing; lookups.
  void maybe_free(Conn& c);
  void free_conn(ConnId id, Error why);
  Conn* find(ConnId id);
  const Conn* find(ConnId id) const;
  Conn* owned(ConnId id);
  // server_app.cc: replay verification of the application's output.
  void digest_acked(Conn& c, uint64_t dsn);
  void digest_regenerated(Conn& c, uint64_t at, std::span<const uint8_t> bytes);
  Status check_replay(Conn& c, uint64_t at, std::span<const uint8_t> bytes);
  void restart_digest(Conn& c);

  // transfer.cc: claims, votes, hand-off, state export and install.
  void start_claim(SubflowId sub, const wire::Migrate& m, TimeMs now);
  void send_claim(PendingClaim& p, uint32_t request_id, ServerId to);
  ServerId successor_of(ConnId id) const;
  uint64_t retired_epoch(ConnId id) const;  // last epoch of a connection freed here (0: none)  // from retired_, 0 if unknown
  void on_claim(ServerId from, const wire::Claim& m, TimeMs now);
  void on_grant(ServerId from, wire::Grant&& m, TimeMs now);
  void adopt_late_grant(ServerId from, wire::Grant&& g, TimeMs now);
  void on_deny(ServerId from, const wire::Deny& m, TimeMs now);
  void on_release(ServerId from, const wire::Release& m, TimeMs now);
  void on_abandon(ServerId from, const wire::Abandon& m, TimeMs now);
  void abandon_claim(uint32_t request_id, const PendingClaim& p, TimeMs now);
  TimeMs lazy_claim_wait(ConnId id) const;
  TimeMs abandon_resend_deadline() const;
  void check_claim(uint32_t request_id, TimeMs now, bool deadline);
  void claim_won(uint32_t request_id, TimeMs now);
  void take_over(PendingClaim p, TimeMs now);
  void claim_failed(uint32_t request_id, Error e, ServerId hint);
  void freeze(Conn& c, ServerId to, uint64_t epoch);
  // with_tail false: r.tail is left empty (export_views takes the bytes from the log).
  OutRecord owner_record(const Conn& c, bool with_tail = true) const;
  // out_from > the log's start: only output from there (an out_log_tail state, for eager).
  // The snapshot is shared with c (snapshot_shared), the logs are copied.
  wire::ConnState export_state(const Conn& c, bool elide_snapshot, uint64_t out_from = 0) const;
  // A state to encode: its fields (byte fields empty) and its logs as views of the
  // connection's own buffers; the snapshot is c's own. encode_export copies each byte once,
  // straight into the encoding (an eager owner under bulk echo spent 6 % of its time copying
  // logs out for export_state, then again into the encoding).
  struct Export {
    wire::ConnState st;
    std::vector<Slice> out_log, in_log, out_tail;
  };
  Export export_views(const Conn& c, bool elide_snapshot, uint64_t out_from) const;
  // Encoded as pieces: the fields and logs before and after the snapshot, and c's snapshot
  // block itself between them (send_control_state writes it from there).
  Result<std::vector<Slice>> encode_export(const Conn& c, const Export& e) const;
  // A state whose out_log holds only the output after a position the receiver confirmed
  // (out_log_tail): put the receiver's own copy of the part before in front. False when our
  // copy cannot (another epoch, or a gap); st is then unchanged.
  bool fill_out_prefix(const Conn& c, wire::ConnState& st) const;
  bool complete_grant(const Conn& local, const wire::ReplicaPos& g_pos, wire::ConnState& st) const;
  Status check_install(const wire::ConnState& s, uint64_t client_rcv_nxt) const;
  Status install_state(Conn& c, wire::ConnState&& s, uint64_t client_rcv_nxt);
  Status resend_from(Conn& c, uint64_t client_rcv_nxt);
  void send_control(ServerId to, wire::ControlBody body);
  // A GRANT or REPL_STATE whose state (empty in body) is given as pieces: a chunked message is
  // streamed from them (ServerConfig::stream_control), anything else is joined and sent.
  void send_control_state(ServerId to, wire::ControlBody body, std::vector<Slice> state);
  void draw_salt(wire::ControlMessage& m);
  size_t majority() const { return cfg_.pool.size() / 2 + 1; }
  // replication.cc: eager replication.
  void on_repl_state(ServerId from, wire::ReplState&& m, TimeMs now);
  void on_repl_log(ServerId from, wire::ReplLog&& m, TimeMs now);
  void on_repl_ack(ServerId from, const wire::ReplAck& m, TimeMs now);
  void replicate(Conn& c, TimeMs now, bool force_state);
  // New input or a new snapshot to push: now if batching is off or replication_batch_bytes of
  // input wait, else by now + replication_batch_ms (on_timer pushes it).
  void replicate_soon(Conn& c, TimeMs now);
  bool state_in_flight(const Conn& c, const Peer& p, TimeMs now) const;
  TimeMs state_wait_until(const Peer& p) const;
  void send_repl_state(Conn& c, ServerId to, Peer& p, TimeMs now);
  // REPL_LOG increments for the input [from, end) (chunked).
  void send_repl_input(Conn& c, ServerId to, Peer& p, uint64_t from, uint64_t end, TimeMs now);
  // Where the input the alternate may be sent now ends: what it confirmed holding in this
  // epoch (else the oldest state of this epoch sent to it) plus replication_window_bytes.
  uint64_t repl_window_end(const Conn& c, const Peer& p) const;

  ServerConfig cfg_;
  Random& rng_;
  // Salts of chunked control messages: 8 random bytes drawn at the first one, then a counter.
  std::array<uint8_t, 8> salt_prefix_{};
  bool salt_drawn_ = false;
  uint64_t salts_used_ = 0;
  Counters counters_;
  std::map<SubflowId, Sub> subs_;
  std::map<ConnId, Conn> conns_;
  std::map<ConnId, Vote> votes_;
  // Connections freed here, with the last epoch we knew: a very late GRANT for an older epoch
  // must not bring them back (kept orphan_timeout_ms, at most connections_max entries).
  struct Retired {
    uint64_t epoch = 0;
    ServerId successor = 0;  // who took it over from us, if anyone
    TimeMs until_ms = 0;
  };
  std::map<ConnId, Retired> retired_;
  std::map<uint32_t, PendingClaim> claims_;
  // Lazy claims of ours that timed out and were abandoned (ABANDON sent): a late GRANT of one
  // is answered with ABANDON again instead of being adopted. Kept orphan_timeout_ms, at most
  // kAbandonedClaimsMax entries (when full a new one is not recorded: its late GRANT is then
  // adopted as before, which is safe too, docs/PROTOCOL.md §5.2).
  struct AbandonedClaim {
    ConnId conn = 0;
    ServerId asked = 0;
    uint32_t counter = 0;
    TimeMs until_ms = 0;
    // ABANDON is sent again (it may be lost, and an owner whose own messages are lost cannot
    // send the late GRANT that would prompt a resend) kAbandonResends times, after
    // claim_timeout_ms, doubling.
    TimeMs resend_ms = 0;
    uint32_t resends = 0;
  };
  static constexpr size_t kAbandonedClaimsMax = 1024;
  static constexpr uint32_t kAbandonResends = 4;
  static constexpr size_t kHandedRequestsMax = 8;
  void note_handed_request(Conn& c, uint32_t request_id);
  std::map<uint32_t, AbandonedClaim> abandoned_;
  size_t buffered_ = 0;
  TimeMs buffered_at_ = 0;
  bool buffered_counted_ = false;
  // True (and counted in limit_refusals) when the member is at member_buffered_bytes_max.
  bool member_full(TimeMs now);
  int pump_depth_ = 0;
  std::set<ConnId> repl_dirty_;  // input added during the current pump, replicated at its end
  uint32_t next_request_ = 1;
  double tokens_ = 0;
  TimeMs tokens_ms_ = 0;
  TimeMs now_ms_ = 0;
  std::vector<ServerAction> actions_;
  std::vector<ServerEvent> events_;
  std::unordered_set<SubflowId> touched_subs_;
  std::unordered_set<ConnId> touched_conns_;
  bool touched_all_ = true;
  // Deadline index: per connection and per handshaking subflow, refreshed for what changed.
  mutable std::unordered_set<SubflowId> dl_subs_;
  mutable std::unordered_set<ConnId> dl_conns_;
  mutable bool dl_all_ = true;
  mutable std::set<std::pair<TimeMs, ConnId>> conn_dl_;
  mutable std::unordered_map<ConnId, TimeMs> conn_dl_of_;
  mutable std::set<std::pair<TimeMs, SubflowId>> sub_dl_;
  mutable std::unordered_map<SubflowId, TimeMs> sub_dl_of_;
};

}  // namespace mtcp::core
