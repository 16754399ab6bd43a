// Client-side connection engine (sans-IO). One M-TCP connection, carried by one subflow at a
// time; a migration opens a second subflow to an alternate, proves the certificate there, and
// switches over when the new server accepts (docs/PROTOCOL.md §4.2).
//
// The driver (runtime or simulator) opens and closes subflows when take_actions() says so,
// feeds received bytes to on_subflow_data(), pulls bytes to send with poll_transmit(), and
// calls on_timer() at next_deadline().
#pragma once
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cert/cert.h"
#include "common/counters.h"
#include "common/limits.h"
#include "core/backoff.h"
#include "core/send_log.h"
#include "core/types.h"
#include "wire/frame.h"

namespace mtcp::core {

enum class ClientState { idle, connecting, established, failed };

struct ClientAction {
  enum class Kind { open_subflow, close_subflow } kind;
  SubflowId subflow = 0;
  ServerId server = 0;
  std::string address;  // from WELCOME's alternates (empty for the first server)
};

struct ClientEvent {
  enum class Kind { connected, migrated, migration_failed, failed, hint, peer_closed } kind;
  ServerId from = 0;
  ServerId to = 0;
  Error error = Error::ok;
  uint64_t rcv_at = 0;    // server->client bytes received when the switch happened
  uint64_t snd_at = 0;    // client->server bytes the new server held
  TimeMs started_ms = 0;  // when the attempt began
  TimeMs done_ms = 0;
  wire::HintReason hint = wire::HintReason::overload;
  Error last_attempt = Error::ok;  // failed: why the last migration attempt failed
  // failed: every reason the attempts since the last success failed for, with counts, in the
  // order each reason first occurred (at most one entry per Error value: bounded).
  std::vector<std::pair<Error, uint32_t>> attempt_errors;
};

// " (last attempt: subflow lost; since the last success: owner unreachable x2, subflow lost x1)",
// or "" when no attempt failed. Shared by every tool that reports a failed connection.
std::string describe_attempts(Error last, const std::vector<std::pair<Error, uint32_t>>& errors);

class ClientEngine {
 public:
  ClientEngine(const Limits& limits, Random& rng);

  // Connection control.
  void connect(ServerId server, TimeMs now);
  // Start a migration to target. Errors: closed (not established), pending_table_full (an
  // attempt is already running, or the engine is recovering a lost subflow by itself),
  // bad_field (unknown server).
  Status migrate(ServerId target, TimeMs now);
  // Half-close: a CLOSE frame follows the last written byte.
  void close();

  // Application data. write() takes ownership of the slice: no copy (send_log_full if it
  // does not fit). write_copy() copies as much as fits and returns the count.
  Status write(Slice s);
  size_t write_copy(std::span<const uint8_t> bytes);
  size_t write_space() const { return send_.space(); }
  size_t readable() const { return recv_.size(); }
  size_t read(std::span<uint8_t> dst);
  void read_slices(size_t max_bytes, std::vector<Slice>& out);
  bool peer_closed() const { return peer_fin_ && recv_.empty() && rcv_nxt_ == peer_fin_at_; }
  // Both directions closed, every byte acknowledged by the server and received from it.
  // Both sides closed and every byte delivered both ways: the app closed its side and all its
  // input is acknowledged, and the server's CLOSE came after all its output. (Our own CLOSE may
  // not have been sent again to a member we just migrated to: the state it imported says so.)
  bool finished() const { return fin_ && send_.base() == send_.end() && peer_fin_ && rcv_nxt_ == peer_fin_at_; }

  // Subflow I/O.
  void on_subflow_data(SubflowId sub, Slice bytes, TimeMs now);
  void on_subflow_closed(SubflowId sub, TimeMs now);
  size_t poll_transmit(SubflowId sub, size_t budget, std::vector<Slice>& out);
  bool wants_transmit(SubflowId sub) const;
  bool wants_read(SubflowId sub) const;

  void on_timer(TimeMs now);
  TimeMs next_deadline() const;
  std::vector<ClientAction> take_actions() { return std::exchange(actions_, {}); }
  std::vector<ClientEvent> take_events() { return std::exchange(events_, {}); }

  // Introspection.
  ClientState state() const { return state_; }
  Error failure() const { return failure_; }
  ServerId server() const { return server_; }
  ConnId conn_id() const { return conn_id_; }
  uint64_t epoch() const { return epoch_; }
  uint64_t rcv_nxt() const { return rcv_nxt_; }
  const SendLog& send_log() const { return send_; }
  bool migrating() const { return attempt_.has_value(); }
  std::optional<ServerId> migration_target() const {
    return attempt_ ? std::optional<ServerId>(attempt_->target) : std::nullopt;
  }
  const std::vector<ServerId>& pool() const { return pool_; }
  // Members that just failed as a migration target (down, unreachable, refusing work) are backed
  // off: recovery skips them, and a policy can ask for the best alternate to the current member
  // (the next one in pool order that is not backed off; if all are, the one free soonest).
  const MemberBackoff& member_backoff() const { return backoff_; }
  ServerId pick_alternate(TimeMs now) const;
  const Counters& counters() const { return counters_; }
  std::optional<SubflowId> primary() const { return primary_; }
  const cert::Certificate& certificate() const { return cert_; }
  std::optional<SubflowId> attempt_subflow() const {
    return attempt_ ? std::optional<SubflowId>(attempt_->subflow) : std::nullopt;
  }

 private:
  struct Subflow {
    ServerId server = 0;
    SliceQueue in;
    wire::FrameDecoder decoder;
    TxQueue tx;
    bool open = true;
  };
  struct Attempt {
    SubflowId subflow = 0;
    ServerId target = 0;
    ServerId from = 0;
    uint32_t counter = 0;
    TimeMs started_ms = 0;
    TimeMs deadline_ms = 0;
    bool recovery = false;  // the primary subflow is gone: this attempt must succeed or retry
    cert::Key presented_secret{};  // the secret of the certificate in our MIGRATE: ACCEPT's wrap
  };

  SubflowId open_subflow(ServerId server);
  void close_subflow(SubflowId sub);
  void handle_frame(SubflowId sub, wire::Frame&& f, TimeMs now);
  void on_welcome(SubflowId sub, const wire::Welcome& w, TimeMs now);
  void on_challenge(SubflowId sub, const wire::ChallengeFrame& c);
  void on_accept(SubflowId sub, const wire::Accept& a, TimeMs now);
  void on_data(SubflowId sub, wire::Data&& d);
  void attempt_failed(Error e, ServerId hint, TimeMs now);
  bool end_during_attempt();
  void start_attempt(ServerId target, bool recovery, TimeMs now);
  void recover(ServerId preferred, TimeMs now);
  void fail(Error e);
  void report_peer_closed();
  void pump(SubflowId sub, TimeMs now);
  void resume_parsing();
  void reset_subflow(SubflowId sub, Error e);
  ServerId next_candidate(ServerId after) const;
  std::string address_of(ServerId s) const;
  // Invariants (MTCP_ASSERT): send log positions, what was received and acknowledged, and the
  // primary and attempt subflows. Called at the end of each input the driver feeds in.
  void check() const;

  Limits limits_;
  Random& rng_;
  MemberBackoff backoff_;
  TimeMs now_ms_ = 0;  // time of the input being handled
  Counters counters_;
  ClientState state_ = ClientState::idle;
  Error failure_ = Error::ok;

  std::map<SubflowId, Subflow> subflows_;
  SubflowId next_subflow_ = 1;
  std::optional<SubflowId> primary_;
  std::optional<Attempt> attempt_;
  uint32_t attempts_in_row_ = 0;
  Error last_attempt_error_ = Error::ok;
  std::vector<std::pair<Error, uint32_t>> attempt_errors_;  // since the last success
  ServerId last_target_ = 0;
  TimeMs retry_at_ms_ = kNever;  // a recovery attempt waits for its back-off
  ServerId retry_target_ = 0;

  ConnId conn_id_ = 0;
  ServerId server_ = 0;
  uint64_t epoch_ = 0;
  uint32_t counter_ = 0;  // highest migration counter used
  cert::Certificate cert_;
  cert::Key secret_{};
  // Fresh connection: our X25519 key pair until WELCOME (docs/PROTOCOL.md §6.2).
  cert::PrivateKey key_priv_{};
  cert::PublicKey key_pub_{};
  std::vector<ServerId> pool_;  // first server then alternates, in WELCOME order
  std::vector<wire::Alternate> alternates_;
  TimeMs connect_deadline_ms_ = kNever;

  SendLog send_;
  SliceQueue recv_;
  uint64_t rcv_nxt_ = 0;
  uint64_t acked_rcv_ = 0;  // last rcv_nxt we acknowledged
  uint64_t held_ack_ = 0;   // ack from the old server received while migrating, applied later
  bool ack_pending_ = false;
  bool fin_ = false;       // we closed: CLOSE after send_.end()
  bool fin_sent_ = false;
  bool fin_acked_sent_ = false;  // our ACK of the server's CLOSE went out on the primary
  bool peer_fin_ = false;
  uint64_t peer_fin_at_ = 0;
  bool peer_closed_reported_ = false;

  std::vector<ClientAction> actions_;
  std::vector<ClientEvent> events_;
};

}  // namespace mtcp::core
