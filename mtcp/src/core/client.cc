#include "core/client.h"

#include "core/receive.h"

#include <algorithm>

#include "common/assert.h"

namespace mtcp::core {

using wire::Frame;

ClientEngine::ClientEngine(const Limits& limits, Random& rng)
    : limits_(limits),
      rng_(rng),
      // A failed target is avoided for one migrate timeout, doubling up to eight.
      backoff_(limits.migrate_timeout_ms, limits.migrate_timeout_ms * 8),
      send_(limits.send_log_bytes_max) {}

void ClientEngine::check() const {
  send_.check();
  MTCP_ASSERT(send_.bytes_max() == limits_.send_log_bytes_max, "client: send log not bounded by send_log_bytes_max");
  MTCP_ASSERT(held_ack_ <= send_.end(), "client: held ack beyond the send log");
  MTCP_ASSERT(acked_rcv_ <= rcv_nxt_, "client: acknowledged output not received");
  MTCP_ASSERT(recv_.size() <= rcv_nxt_, "client: receive buffer holds more than was received");
  MTCP_ASSERT(!fin_sent_ || fin_, "client: CLOSE sent without close()");
  MTCP_ASSERT(!primary_ || subflows_.contains(*primary_), "client: primary subflow does not exist");
  if (attempt_) {
    MTCP_ASSERT(subflows_.contains(attempt_->subflow), "client: attempt subflow does not exist");
    MTCP_ASSERT(primary_ != attempt_->subflow, "client: attempt subflow is the primary");
    MTCP_ASSERT(attempt_->counter <= counter_, "client: attempt counter above the highest used");
  }
  MTCP_ASSERT(state_ != ClientState::established || conn_id_ != 0, "client: established without a connection id");
}

// ---- connection control -------------------------------------------------------------------

void ClientEngine::connect(ServerId server, TimeMs now) {
  MTCP_ASSERT(state_ == ClientState::idle, "client: connect() called twice");
  state_ = ClientState::connecting;
  server_ = server;
  SubflowId sub = open_subflow(server);
  primary_ = sub;
  auto& sf = subflows_.at(sub);
  sf.tx.push_raw(wire::kPreface);
  rng_.fill(key_priv_);
  key_pub_ = cert::x25519_public(key_priv_);
  sf.tx.push(wire::Hello{wire::kVersion, wire::HelloKind::fresh, 0, key_pub_});
  connect_deadline_ms_ = now + limits_.migrate_timeout_ms;
}

Status ClientEngine::migrate(ServerId target, TimeMs now) {
  if (state_ != ClientState::established) return Error::closed;
  if (attempt_) return Error::pending_table_full;
  if (std::find(pool_.begin(), pool_.end(), target) == pool_.end()) return Error::bad_field;
  // Without a subflow the engine is already recovering (with back-off and the servers'
  // hints); a policy cannot start another attempt then.
  if (!primary_) return Error::pending_table_full;
  start_attempt(target, false, now);
  return {};
}

void ClientEngine::close() { fin_ = true; }

void ClientEngine::start_attempt(ServerId target, bool recovery, TimeMs now) {
  Attempt a;
  a.target = target;
  a.from = server_;
  a.counter = ++counter_;
  a.started_ms = now;
  // Each attempt in a row waits twice as long (up to 8x): a pool whose control network is
  // slower than migrate_timeout_ms still gets to finish a claim.
  a.deadline_ms = now + (limits_.migrate_timeout_ms << std::min<uint32_t>(attempts_in_row_, 3));
  a.recovery = recovery;
  a.subflow = open_subflow(target);
  auto& sf = subflows_.at(a.subflow);
  sf.tx.push_raw(wire::kPreface);
  sf.tx.push(wire::Hello{wire::kVersion, wire::HelloKind::migrate, conn_id_, {}});
  attempt_ = a;
  last_target_ = target;
  ++attempts_in_row_;
  ++counters_.migrations_started;
}

// The primary subflow is gone or an attempt failed without one: try the next candidate, or
// fail the connection once migrate_attempts_max attempts in a row have failed.
void ClientEngine::recover(ServerId preferred, TimeMs now) {
  if (state_ != ClientState::established || attempt_ || retry_at_ms_ != kNever) return;
  if (attempts_in_row_ >= limits_.migrate_attempts_max) {
    fail(Error::no_alternate);
    return;
  }
  // The refusal's hint first, unless that member itself just failed; then the next member
  // that is not backed off (the current one included: a cut subflow may simply reopen).
  ServerId target = preferred != 0 && !backoff_.backed_off(preferred, now)
                        ? preferred
                        : backoff_.next(pool_, last_target_ ? last_target_ : server_, 0, now);
  if (target == 0) target = next_candidate(last_target_ ? last_target_ : server_);
  if (attempts_in_row_ == 0) {
    start_attempt(target, true, now);
    return;
  }
  // Back off exponentially: a control network that is slow for a moment must not use up
  // every attempt in a burst.
  uint64_t shift = std::min<uint64_t>(attempts_in_row_ - 1, 20);
  TimeMs wait = std::min<TimeMs>(limits_.retry_backoff_max_ms, limits_.retry_backoff_ms << shift);
  // Up to 25% jitter, so clients cut off together do not all come back at the same instant.
  if (wait >= 4) wait += rng_.u64() % (wait / 4);
  retry_at_ms_ = now + wait;
  retry_target_ = target;
}

// Errors that say the target member itself is down, unreachable or refusing work (not that the
// owner it asked was, or that the attempt was stale).
static bool target_at_fault(Error e) {
  switch (e) {
    case Error::subflow_lost:
    case Error::migration_timeout:
    case Error::bad_field:
    case Error::protocol_violation:
    case Error::member_full:
    case Error::pending_table_full:
    case Error::conn_table_full:
    case Error::rate_limited:
    case Error::draining:
      return true;
    default:
      return false;
  }
}

ServerId ClientEngine::pick_alternate(TimeMs now) const { return backoff_.next(pool_, server_, server_, now); }

ServerId ClientEngine::next_candidate(ServerId after) const {
  auto it = std::find(pool_.begin(), pool_.end(), after);
  if (it == pool_.end() || ++it == pool_.end()) return pool_.front();
  return *it;
}

std::string ClientEngine::address_of(ServerId s) const {
  for (const auto& a : alternates_) {
    if (a.server_id == s) return a.address;
  }
  return {};
}

std::string describe_attempts(Error last, const std::vector<std::pair<Error, uint32_t>>& errors) {
  if (last == Error::ok) return {};
  std::string s = " (last attempt: " + std::string(to_string(last));
  // One reason only, seen once: the last attempt says it all.
  if (!(errors.size() == 1 && errors.front().second == 1) && !errors.empty()) {
    s += "; since the last success:";
    for (size_t i = 0; i < errors.size(); ++i) {
      s += (i ? ", " : " ") + std::string(to_string(errors[i].first)) + " x" + std::to_string(errors[i].second);
    }
  }
  return s + ")";
}

void ClientEngine::fail(Error e) {
  if (state_ == ClientState::failed) return;
  state_ = ClientState::failed;
  failure_ = e;
  ClientEvent ev{};
  ev.kind = ClientEvent::Kind::failed;
  ev.error = e;
  ev.last_attempt = last_attempt_error_;
  ev.attempt_errors = attempt_errors_;
  ev.from = server_;
  events_.push_back(ev);
  std::vector<SubflowId> subs;
  for (auto& [id, sf] : subflows_) subs.push_back(id);
  for (SubflowId id : subs) close_subflow(id);
  attempt_.reset();
  primary_.reset();
}

// ---- subflows -----------------------------------------------------------------------------

SubflowId ClientEngine::open_subflow(ServerId server) {
  SubflowId id = next_subflow_++;
  Subflow sf;
  sf.server = server;
  sf.decoder = wire::FrameDecoder(kFramePayloadBytesMax);
  subflows_.emplace(id, std::move(sf));
  actions_.push_back({ClientAction::Kind::open_subflow, id, server, address_of(server)});
  return id;
}

void ClientEngine::close_subflow(SubflowId sub) {
  if (subflows_.erase(sub) == 0) return;
  actions_.push_back({ClientAction::Kind::close_subflow, sub, 0, {}});
  if (primary_ == sub) primary_.reset();
}

void ClientEngine::reset_subflow(SubflowId sub, Error e) {
  auto it = subflows_.find(sub);
  if (it == subflows_.end()) return;
  it->second.tx.clear();
  it->second.tx.push(wire::Reset{e});
  // The driver flushes what it can and then closes: a reset subflow never carries data again.
  it->second.open = false;
}

void ClientEngine::on_subflow_closed(SubflowId sub, TimeMs now) {
  if (subflows_.erase(sub) == 0) return;
  if (attempt_ && attempt_->subflow == sub) {
    attempt_failed(Error::subflow_lost, 0, now);
    return;
  }
  if (primary_ == sub) {
    primary_.reset();
    if (state_ == ClientState::connecting) {
      fail(Error::subflow_lost);
      return;
    }
    // Both directions closed and acknowledged: the connection is over, the member may close.
    if (end_during_attempt() || finished()) return;
    // Lost the server mid-session: recover through an alternate (or the same server).
    if (!attempt_) recover(0, now);
    else attempt_->recovery = true;
  }
  check();
}

// A migration was under way when the old server finished the connection: it acknowledged all
// our input (held back while the attempt runs, see the ACK case), and sent all its output and
// its CLOSE. Nothing is left to move, and the pool frees the connection now, so the attempt
// would only fail and then recover a connection nobody holds: drop it, take the acknowledgement
// and let the connection end here. True when it did.
bool ClientEngine::end_during_attempt() {
  uint64_t acked = std::max(held_ack_, send_.base());
  if (!attempt_ || !fin_ || !peer_fin_ || rcv_nxt_ != peer_fin_at_ || acked != send_.end()) return false;
  (void)send_.ack(acked);
  held_ack_ = 0;
  SubflowId sub = attempt_->subflow;
  attempt_.reset();
  close_subflow(sub);
  attempts_in_row_ = 0;
  ++counters_.migrations_abandoned;
  return true;
}

void ClientEngine::on_subflow_data(SubflowId sub, Slice bytes, TimeMs now) {
  now_ms_ = now;
  auto it = subflows_.find(sub);
  if (it == subflows_.end() || !it->second.open) return;
  it->second.in.push(std::move(bytes));
  pump(sub, now);
  check();
}

// Parse and handle the frames queued on one subflow, as far as the receive buffer allows.
void ClientEngine::pump(SubflowId sub, TimeMs now) {
  while (true) {
    auto it = subflows_.find(sub);
    if (it == subflows_.end() || !it->second.open) return;
    Subflow& sf = it->second;
    // Back-pressure: leave DATA in the primary's queue while the app's buffer is full. Not on
    // a migration attempt: its CHALLENGE and ACCEPT must not wait for a slow reader.
    if (sub == primary_ && recv_.size() >= limits_.recv_buffer_bytes_max) return;
    auto next = sf.decoder.next(sf.in);
    if (!next) {
      ++counters_.frames_malformed;
      if (attempt_ && attempt_->subflow == sub) {
        reset_subflow(sub, next.error());
        attempt_failed(next.error(), 0, now);
      } else {
        reset_subflow(sub, next.error());
        close_subflow(sub);
        if (state_ == ClientState::connecting) fail(next.error());
        else recover(0, now);
      }
      return;
    }
    if (!next.value().has_value()) return;
    handle_frame(sub, std::move(*next.value()), now);
  }
}

bool ClientEngine::wants_read(SubflowId sub) const {
  auto it = subflows_.find(sub);
  return it != subflows_.end() && it->second.open && (sub != primary_ || recv_.size() < limits_.recv_buffer_bytes_max);
}

void ClientEngine::handle_frame(SubflowId sub, Frame&& f, TimeMs now) {
  bool is_attempt = attempt_ && attempt_->subflow == sub;
  bool is_primary = primary_ == sub;
  auto violation = [&] {
    ++counters_.frames_malformed;
    reset_subflow(sub, Error::protocol_violation);
    if (is_attempt) {
      attempt_failed(Error::protocol_violation, 0, now);
    } else {
      close_subflow(sub);
      if (state_ == ClientState::connecting) fail(Error::protocol_violation);
      else recover(0, now);
    }
  };
  switch (wire::type_of(f)) {
    case wire::FrameType::welcome:
      if (!is_primary || state_ != ClientState::connecting) return violation();
      return on_welcome(sub, std::get<wire::Welcome>(f), now);
    case wire::FrameType::challenge:
      if (!is_attempt) return violation();
      return on_challenge(sub, std::get<wire::ChallengeFrame>(f));
    case wire::FrameType::accept:
      if (!is_attempt) return violation();
      return on_accept(sub, std::get<wire::Accept>(f), now);
    case wire::FrameType::refuse: {
      auto& r = std::get<wire::Refuse>(f);
      if (is_attempt) return attempt_failed(r.reason, r.hint_server, now);
      if (state_ == ClientState::connecting) return fail(r.reason);
      return violation();
    }
    case wire::FrameType::data:
      if (state_ != ClientState::established) return violation();
      return on_data(sub, std::move(std::get<wire::Data>(f)));
    case wire::FrameType::ack: {
      if (state_ != ClientState::established || !(is_primary || is_attempt)) return violation();
      // An ack on the attempt subflow before ACCEPT is a violation: the server must accept first.
      if (is_attempt) return violation();
      uint64_t dsn = std::get<wire::Ack>(f).dsn;
      if (dsn > send_.end()) return violation();
      // While a migration is under way the old server's acks are held back: the log keeps
      // what the new server may lack, so a stale replica means a resend, not a gap.
      if (attempt_) {
        held_ack_ = std::max(held_ack_, dsn);
        (void)end_during_attempt();
      } else {
        (void)send_.ack(dsn);
      }
      return;
    }
    case wire::FrameType::hint: {
      auto& h = std::get<wire::Hint>(f);
      ClientEvent ev{};
      ev.kind = ClientEvent::Kind::hint;
      ev.from = server_;
      ev.to = h.server_id;
      ev.hint = h.reason;
      events_.push_back(ev);
      return;
    }
    case wire::FrameType::renew: {
      if (!is_primary || state_ != ClientState::established) return violation();
      auto& r = std::get<wire::Renew>(f);
      if (r.cert.conn_id != conn_id_) return violation();
      secret_ = cert::wrap_next_secret(r.secret, secret_, r.cert);  // unwrap with the secret it replaces
      cert_ = r.cert;
      return;
    }
    case wire::FrameType::close: {
      if (state_ != ClientState::established) return violation();
      uint64_t at = std::get<wire::Close>(f).final_dsn;
      if (at < rcv_nxt_ || (peer_fin_ && at != peer_fin_at_)) return violation();
      peer_fin_ = true;
      peer_fin_at_ = at;
      report_peer_closed();
      if (is_primary) (void)end_during_attempt();
      return;
    }
    case wire::FrameType::reset: {
      Error e = std::get<wire::Reset>(f).reason;
      close_subflow(sub);
      // The server's replay produced other output than the stream so far: no member can
      // continue it (docs/PROTOCOL.md §4.3). Not a subflow problem: the connection is over.
      if (e == Error::replay_mismatch && !is_attempt) return fail(e);
      if (is_attempt) return attempt_failed(e, 0, now);
      if (state_ == ClientState::connecting) return fail(e);
      if (!attempt_) recover(0, now);
      return;
    }
    case wire::FrameType::hello:
    case wire::FrameType::migrate:
      return violation();  // client-to-server frames
  }
}

void ClientEngine::on_welcome(SubflowId sub, const wire::Welcome& w, TimeMs now) {
  (void)sub;
  (void)now;
  // The secret comes wrapped under our X25519 agreement with this server (§6.2); a degenerate
  // server value means nothing was agreed and the connection cannot be trusted.
  auto shared = cert::x25519_shared(key_priv_, w.key_share);
  key_priv_.fill(0);
  if (!shared) return fail(Error::bad_field);
  conn_id_ = w.conn_id;
  server_ = w.server_id;
  epoch_ = w.epoch;
  cert_ = w.cert;
  secret_ = cert::wrap_welcome_secret(w.secret, *shared, key_pub_, w.key_share, w.cert);
  alternates_ = w.alternates;
  pool_.clear();
  pool_.push_back(w.server_id);
  for (const auto& a : w.alternates) pool_.push_back(a.server_id);
  state_ = ClientState::established;
  connect_deadline_ms_ = kNever;
  ++counters_.connections_opened;
  ClientEvent ev{};
  ev.kind = ClientEvent::Kind::connected;
  ev.to = server_;
  events_.push_back(ev);
}

void ClientEngine::on_challenge(SubflowId sub, const wire::ChallengeFrame& c) {
  auto& sf = subflows_.at(sub);
  wire::Migrate m;
  m.cert = cert_;
  m.counter = attempt_->counter;
  m.prev_owner = server_;
  m.client_rcv_nxt = rcv_nxt_;
  m.client_snd_una = send_.base();
  // docs/PROTOCOL.md §6: the proof binds the server's fresh challenge, the target (the server id
  // it announced must be the one we dialled), the connection and this attempt's counter.
  if (c.server_id != attempt_->target) {
    reset_subflow(sub, Error::bad_field);
    attempt_failed(Error::bad_field, 0, now_ms_);
    return;
  }
  m.proof = cert::make_proof(secret_, c.nonce, attempt_->target, conn_id_, attempt_->counter);
  attempt_->presented_secret = secret_;
  sf.tx.push(m);
}

void ClientEngine::on_accept(SubflowId sub, const wire::Accept& a, TimeMs now) {
  // The new server holds our stream up to server_rcv_nxt: everything below is acknowledged,
  // everything above is resent. If it holds less than what an old owner already acknowledged,
  // bytes are missing and the stream cannot continue (docs/PROTOCOL.md §4.2).
  if (a.server_rcv_nxt > send_.end()) {
    ++counters_.frames_malformed;
    reset_subflow(sub, Error::protocol_violation);
    attempt_failed(Error::protocol_violation, 0, now);
    return;
  }
  if (a.server_rcv_nxt < send_.base()) {
    reset_subflow(sub, Error::state_gap);
    Attempt at = *attempt_;
    attempt_.reset();
    ++counters_.migrations_failed;
    ClientEvent ev{};
    ev.kind = ClientEvent::Kind::migration_failed;
    ev.from = at.from;
    ev.to = at.target;
    ev.error = Error::state_gap;
    ev.snd_at = a.server_rcv_nxt;  // what the new server holds, below what was acknowledged
    ev.started_ms = at.started_ms;
    ev.done_ms = now;
    events_.push_back(ev);
    fail(Error::state_gap);
    return;
  }
  Attempt at = *attempt_;
  attempt_.reset();
  if (primary_) close_subflow(*primary_);
  primary_ = sub;
  ServerId from = server_;
  server_ = at.target;
  epoch_ = a.epoch;
  cert_ = a.cert;
  secret_ = cert::wrap_next_secret(a.secret, at.presented_secret, a.cert);
  // ACCEPT says where to resend from; it acknowledges nothing (ACK frames follow).
  (void)send_.rewind(a.server_rcv_nxt);
  held_ack_ = 0;
  // Tell the new server at once how much output we hold: it may be more than MIGRATE said.
  acked_rcv_ = 0;
  ack_pending_ = true;
  fin_sent_ = false;
  fin_acked_sent_ = false;
  attempts_in_row_ = 0;
  attempt_errors_.clear();
  backoff_.succeeded(server_);
  ++counters_.migrations_done;
  ClientEvent ev{};
  ev.kind = ClientEvent::Kind::migrated;
  ev.from = from;
  ev.to = server_;
  ev.rcv_at = rcv_nxt_;
  ev.snd_at = a.server_rcv_nxt;
  ev.started_ms = at.started_ms;
  ev.done_ms = now;
  events_.push_back(ev);
}

void ClientEngine::attempt_failed(Error e, ServerId hint, TimeMs now) {
  if (!attempt_) return;
  Attempt at = *attempt_;
  attempt_.reset();
  last_attempt_error_ = e;
  auto seen = std::find_if(attempt_errors_.begin(), attempt_errors_.end(), [e](const auto& p) { return p.first == e; });
  if (seen == attempt_errors_.end()) {
    attempt_errors_.emplace_back(e, 1);
  } else {
    ++seen->second;
  }
  if (target_at_fault(e)) backoff_.failed(at.target, now);
  close_subflow(at.subflow);
  if (held_ack_ > send_.base() && primary_) (void)send_.ack(held_ack_);
  held_ack_ = 0;
  // Only recovery attempts (no subflow left) count towards migrate_attempts_max: a policy
  // that tries and fails while the connection is healthy does not use up the budget.
  if (primary_) attempts_in_row_ = 0;
  ++counters_.migrations_failed;
  ClientEvent ev{};
  ev.kind = ClientEvent::Kind::migration_failed;
  ev.from = at.from;
  ev.to = at.target;
  ev.error = e;
  ev.started_ms = at.started_ms;
  ev.done_ms = now;
  events_.push_back(ev);
  if (!primary_ && !finished()) {
    // No subflow left: keep trying, following the refusal's hint first.
    ServerId next = 0;
    if (hint != 0 && std::find(pool_.begin(), pool_.end(), hint) != pool_.end()) next = hint;
    recover(next, now);
  }
}

void ClientEngine::on_data(SubflowId sub, wire::Data&& d) {
  (void)sub;
  uint64_t len = d.size();
  if (d.dsn > rcv_nxt_) {
    // A gap on a reliable subflow: the server broke the contract.
    ++counters_.frames_malformed;
    fail(Error::protocol_violation);
    return;
  }
  uint64_t dup = append_new_bytes(d, rcv_nxt_, recv_);
  counters_.duplicate_bytes_dropped += dup;
  MTCP_ASSERT(dup <= len, "client: more duplicate bytes than the frame carried");
  rcv_nxt_ += len - dup;
  if (rcv_nxt_ != acked_rcv_) ack_pending_ = true;
  report_peer_closed();
}

void ClientEngine::report_peer_closed() {
  if (peer_fin_ && !peer_closed_reported_ && rcv_nxt_ == peer_fin_at_) {
    peer_closed_reported_ = true;
    ClientEvent ev{};
    ev.kind = ClientEvent::Kind::peer_closed;
    ev.from = server_;
    events_.push_back(ev);
  }
}

// ---- application data ---------------------------------------------------------------------

Status ClientEngine::write(Slice s) {
  if (state_ == ClientState::failed) return Error::closed;
  if (fin_) return Error::closed;
  return send_.append(std::move(s));
}

size_t ClientEngine::write_copy(std::span<const uint8_t> bytes) {
  if (state_ == ClientState::failed || fin_) return 0;
  size_t n = std::min(bytes.size(), send_.space());
  if (n == 0) return 0;
  (void)send_.append(Slice::copy_of(bytes.first(n)));
  return n;
}

size_t ClientEngine::read(std::span<uint8_t> dst) {
  size_t n = recv_.copy_out(0, dst);
  recv_.drop_front(n);
  if (n > 0) resume_parsing();
  return n;
}

void ClientEngine::read_slices(size_t max_bytes, std::vector<Slice>& out) {
  size_t before = recv_.size();
  recv_.take_front(max_bytes, out);
  if (recv_.size() != before) resume_parsing();
}

// Room in the receive buffer again: frames left queued by back-pressure are parsed now, not
// only when the next bytes arrive (which may never happen).
void ClientEngine::resume_parsing() {
  std::vector<SubflowId> queued;
  for (const auto& [id, sf] : subflows_) {
    if (!sf.in.empty()) queued.push_back(id);
  }
  for (SubflowId id : queued) pump(id, now_ms_);
}

// ---- transmit -----------------------------------------------------------------------------

bool ClientEngine::wants_transmit(SubflowId sub) const {
  auto it = subflows_.find(sub);
  if (it == subflows_.end()) return false;
  if (!it->second.tx.empty()) return true;
  if (primary_ != sub || state_ != ClientState::established) return false;
  if (ack_pending_) return true;
  if (attempt_) return false;  // paused while migrating
  return send_.has_unsent() || (fin_ && !fin_sent_) || (fin_sent_ && finished() && !fin_acked_sent_);
}

size_t ClientEngine::poll_transmit(SubflowId sub, size_t budget, std::vector<Slice>& out) {
  auto it = subflows_.find(sub);
  if (it == subflows_.end()) return 0;
  Subflow& sf = it->second;
  size_t used = sf.tx.drain(budget, out);
  if (!sf.open) return used;
  if (primary_ != sub || state_ != ClientState::established) return used;
  if (ack_pending_) {
    Bytes b;
    wire::encode(wire::Ack{rcv_nxt_}, b);
    used += b.size();
    out.emplace_back(make_block(std::move(b)));
    acked_rcv_ = rcv_nxt_;
    ack_pending_ = false;
  }
  if (attempt_) return used;  // new data waits for the migration to finish
  std::vector<Slice> payload;
  while (send_.has_unsent() && used + wire::kDataHeaderBytes < budget) {
    size_t room = std::min(budget - used - wire::kDataHeaderBytes, limits_.frame_payload_bytes_max);
    uint64_t dsn = send_.take_unsent(room, payload);
    used += emit_data(dsn, payload, out);
  }
  if (fin_ && !fin_sent_ && !send_.has_unsent()) {
    Bytes b;
    wire::encode(wire::Close{send_.end()}, b);
    used += b.size();
    out.emplace_back(make_block(std::move(b)));
    fin_sent_ = true;
  }
  // Everything both ways and the server's CLOSE: acknowledge the CLOSE (its position + 1), so
  // the member knows we need nothing more and may free the connection.
  if (fin_sent_ && finished() && !fin_acked_sent_) {
    Bytes b;
    wire::encode(wire::Ack{peer_fin_at_ + 1}, b);
    used += b.size();
    out.emplace_back(make_block(std::move(b)));
    fin_acked_sent_ = true;
  }
  check();
  return used;
}

// ---- timers -------------------------------------------------------------------------------

void ClientEngine::on_timer(TimeMs now) {
  now_ms_ = now;
  if (state_ == ClientState::connecting && now >= connect_deadline_ms_) {
    fail(Error::migration_timeout);
    return;
  }
  if (attempt_ && now >= attempt_->deadline_ms) attempt_failed(Error::migration_timeout, 0, now);
  if (!attempt_ && retry_at_ms_ != kNever && now >= retry_at_ms_) {
    retry_at_ms_ = kNever;
    if (state_ == ClientState::established && !primary_) start_attempt(retry_target_, true, now);
  }
  check();
}

TimeMs ClientEngine::next_deadline() const {
  TimeMs t = kNever;
  if (state_ == ClientState::connecting) t = connect_deadline_ms_;
  if (attempt_) t = std::min(t, attempt_->deadline_ms);
  t = std::min(t, retry_at_ms_);
  return t;
}

}  // namespace mtcp::core
