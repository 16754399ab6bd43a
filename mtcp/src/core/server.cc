// Server engine, part 1: subflows, client frames and the application calls.
// Part 2 (transfer.cc): ownership claims, hand-off, eager replication.
#include <algorithm>
#include <cstring>

#include "core/receive.h"
#include "core/server.h"

namespace mtcp::core {

using wire::Frame;
using wire::FrameType;

Status validate(const ServerConfig& cfg) {
  if (cfg.self == 0 || cfg.pool.empty() || cfg.pool.size() > kPoolServersMax) return Error::bad_field;
  std::set<ServerId> ids;
  for (const auto& m : cfg.pool) {
    if (m.server_id == 0 || !ids.insert(m.server_id).second) return Error::bad_field;
    if (m.address.size() > kAddressBytesMax) return Error::bad_field;
  }
  if (!ids.contains(cfg.self)) return Error::bad_field;
  if (cfg.pool.size() - 1 > kAlternatesMax) return Error::alternates_too_many;
  const Limits& l = cfg.limits;
  // Logs must fit in a transferred state (kStateLogBytesMax), snapshots under the wire cap.
  if (l.snapshot_bytes_max > kSnapshotBytesMax || l.frame_payload_bytes_max > kFramePayloadBytesMax ||
      l.frame_payload_bytes_max == 0 || l.input_log_bytes_max > kStateLogBytesMax ||
      l.send_log_bytes_max == 0 || l.send_log_bytes_max > kStateLogBytesMax || l.recv_buffer_bytes_max == 0 ||
      l.cert_lifetime_ms < 2)
    return Error::bad_field;
  if (l.ack_after_replication && l.transfer_mode != TransferMode::eager) return Error::bad_field;
  return {};
}

ServerEngine::ServerEngine(ServerConfig cfg, Random& rng) : cfg_(std::move(cfg)), rng_(rng) {
  MTCP_ASSERT(validate(cfg_).ok(), "server: invalid configuration (call validate first)");
  tokens_ = cfg_.limits.migrate_requests_per_s_max;
}

ServerEngine::Conn* ServerEngine::find(ConnId id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : &it->second;
}
const ServerEngine::Conn* ServerEngine::find(ConnId id) const {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : &it->second;
}
ServerEngine::Conn* ServerEngine::owned(ConnId id) {
  Conn* c = find(id);
  return c && c->role == Role::owner ? c : nullptr;
}

// ---- invariants (common/assert.h) ----------------------------------------------------------

void ServerEngine::check_conn(const Conn& c) const {
  c.out.check();
  MTCP_ASSERT(c.out.bytes_max() == cfg_.limits.send_log_bytes_max, "conn: send log not bounded by send_log_bytes_max");
  MTCP_ASSERT(c.snap_in_seq <= c.app_in, "conn: app read position below its snapshot");
  MTCP_ASSERT(c.app_in <= c.in_end(), "conn: app read beyond the input log");
  MTCP_ASSERT(c.acked_in <= c.in_end(), "conn: acknowledged input the log does not hold");
  MTCP_ASSERT(c.app_out <= c.out.end(), "conn: app output position beyond the send log");
  MTCP_ASSERT(!c.client_fin || c.client_fin_at == c.in_end(), "conn: input beyond the client's CLOSE");
  MTCP_ASSERT(c.parked_bytes <= parked_max() + kFramePayloadBytesMax, "conn: parked DATA beyond parked_max");
  MTCP_ASSERT(c.parked.empty() == (c.parked_bytes == 0), "conn: parked byte count out of step");
  MTCP_ASSERT(c.role != Role::frozen || c.handed_to != 0, "conn: frozen without a successor");
  if (c.subflow) {
    MTCP_ASSERT(c.role == Role::owner, "conn: a subflow attached to a non-owner");
    auto it = subs_.find(*c.subflow);
    MTCP_ASSERT(it != subs_.end(), "conn: attached subflow does not exist");
    MTCP_ASSERT(it->second.phase == Phase::attached, "conn: attached subflow not in phase attached");
    MTCP_ASSERT(it->second.conn == c.id, "conn: attached subflow points at another connection");
  }
}

void ServerEngine::check_tables() const {
  MTCP_ASSERT(conns_.size() <= cfg_.limits.connections_max, "server: connection table beyond connections_max");
  MTCP_ASSERT(claims_.size() <= cfg_.limits.pending_migrations_max, "server: claims beyond pending_migrations_max");
  MTCP_ASSERT(subs_.size() <= cfg_.limits.subflows_max, "server: subflow table beyond subflows_max");
}

// Every subflow in phase attached is its connection's one subflow (so an owner has at most one).
void ServerEngine::check_all() const {
  check_tables();
  for (const auto& [id, c] : conns_) {
    MTCP_ASSERT(c.id == id, "conn: id differs from its table key");
    check_conn(c);
  }
  for (const auto& [id, s] : subs_) {
    if (s.phase != Phase::attached) continue;
    const Conn* c = find(s.conn);
    MTCP_ASSERT(c != nullptr, "subflow: attached to a connection that does not exist");
    MTCP_ASSERT(c->subflow == id, "subflow: attached, but its connection's record points elsewhere");
  }
}

void ServerEngine::record_vote(ConnId id, Vote v) {
  auto it = votes_.find(id);
  if (it != votes_.end()) {
    const Vote& old = it->second;
    MTCP_ASSERT(v.epoch >= old.epoch, "vote: epoch went back");
    // One claimer per epoch. The one exception: our own vote, once our claim for that epoch
    // is over (it can no longer count it), may go to the claimer that beat us.
    bool own_claim_pending = std::any_of(claims_.begin(), claims_.end(), [&](const auto& kv) { return kv.second.conn == id; });
    MTCP_ASSERT(v.epoch > old.epoch || v.claimer == old.claimer || (old.claimer == cfg_.self && !own_claim_pending),
                "vote: a second claimer in one epoch");
  }
  votes_[id] = v;
}

// Token bucket: at most migrate_requests_per_s_max proofs are checked per second, so a flood
// of bogus MIGRATE frames costs bounded CPU (TEST-MATRIX #10).
bool ServerEngine::take_token(TimeMs now) {
  double rate = cfg_.limits.migrate_requests_per_s_max;
  if (now > tokens_ms_) {
    tokens_ = std::min(rate, tokens_ + rate * static_cast<double>(now - tokens_ms_) / 1000.0);
    tokens_ms_ = now;
  }
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

// ---- subflows -----------------------------------------------------------------------------

void ServerEngine::on_subflow_open(SubflowId sub, TimeMs now) {
  now_ms_ = now;
  touch_sub(sub);
  if (subs_.size() >= cfg_.limits.subflows_max) {
    ++counters_.limit_refusals;
    actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
    return;
  }
  Sub s;
  s.opened_ms = now;
  s.decoder = wire::FrameDecoder(kFramePayloadBytesMax);
  subs_.emplace(sub, std::move(s));
  MTCP_ASSERT(subs_.size() <= cfg_.limits.subflows_max, "server: subflow table beyond subflows_max");
}

void ServerEngine::on_subflow_data(SubflowId sub, Slice bytes, TimeMs now) {
  now_ms_ = now;
  auto it = subs_.find(sub);
  if (it == subs_.end() || it->second.phase == Phase::closing) return;
  touch_sub(sub);
  if (it->second.conn) touch_conn(it->second.conn);
  it->second.in.push(std::move(bytes));
  pump(sub, now);
  if (auto after = subs_.find(sub); after != subs_.end() && after->second.conn) touch_conn(after->second.conn);
}

// Frames parsed from one input call add to the input log one after another; eager replication
// of what they added is sent once, when the outermost pump returns (one REPL_LOG per peer per
// read instead of one per DATA frame).
void ServerEngine::pump(SubflowId sub, TimeMs now) {
  ++pump_depth_;
  pump_frames(sub, now);
  if (--pump_depth_ > 0 || repl_dirty_.empty()) return;
  auto dirty = std::exchange(repl_dirty_, {});
  for (ConnId id : dirty) {
    if (Conn* c = find(id)) replicate(*c, now, false);
  }
}

void ServerEngine::pump_frames(SubflowId sub, TimeMs now) {
  while (true) {
    auto it = subs_.find(sub);
    if (it == subs_.end()) return;
    Sub& s = it->second;
    if (s.phase == Phase::closing) return;
    if (s.phase == Phase::preface) {
      auto check = wire::check_preface(s.in);
      if (check == wire::PrefaceCheck::need_more) return;
      if (check == wire::PrefaceCheck::plain) {
        // Not M-TCP: hand the subflow and what it sent to the plain-TCP service (§3.1).
        ++counters_.plain_tcp_subflows;
        Bytes head = s.in.flatten(0, s.in.size());
        subs_.erase(it);
        actions_.push_back({ServerAction::Kind::plain_tcp, sub, 0, std::move(head)});
        return;
      }
      s.in.drop_front(wire::kPreface.size());
      s.phase = Phase::hello;
      continue;
    }
    if (s.phase == Phase::claiming) return;  // nothing is read until the claim is decided
    if (s.phase == Phase::attached) {
      Conn* c = find(s.conn);
      if (c && !c->parked.empty()) unpark(*c);
      // Input log full and DATA parked up to the client's whole send window: stop parsing.
      if (c && c->parked_bytes >= parked_max()) return;
    }
    auto next = s.decoder.next(s.in);
    if (!next) {
      ++counters_.frames_malformed;
      kill_subflow(sub, next.error());
      return;
    }
    if (!next.value().has_value()) return;
    handle_frame(sub, std::move(*next.value()), now);
  }
}

bool ServerEngine::wants_read(SubflowId sub) const {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return false;
  const Sub& s = it->second;
  if (s.phase == Phase::closing || s.phase == Phase::claiming) return false;
  if (s.phase == Phase::attached) {
    const Conn* c = find(s.conn);
    if (c && c->parked_bytes >= parked_max()) return false;
  }
  // Bound what one subflow may queue before it is parsed.
  return s.in.size() < kFrameBodyBytesMax + wire::kFrameHeaderBytes;
}

void ServerEngine::on_subflow_closed(SubflowId sub, TimeMs now) {
  now_ms_ = now;
  auto it = subs_.find(sub);
  if (it == subs_.end()) return;
  ConnId cid = it->second.conn;
  Phase phase = it->second.phase;
  subs_.erase(it);
  touch_sub(sub);
  if (cid) touch_conn(cid);
  if (phase == Phase::attached) {
    if (Conn* c = find(cid); c && c->subflow == sub) {
      c->subflow.reset();
      c->news_ms = now;
    }
  }
  // A claim in progress carries on: if it wins, the state is installed and waits for the
  // client to come back (orphan timeout); the client retries with a new counter.
  for (auto& [rid, p] : claims_) {
    if (p.sub == sub) p.sub = 0;
  }
}

void ServerEngine::kill_subflow(SubflowId sub, Error e) {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return;
  Sub& s = it->second;
  if (s.phase == Phase::attached) {
    if (Conn* c = find(s.conn); c && c->subflow == sub) c->subflow.reset();
  }
  touch_sub(sub);
  if (s.conn) touch_conn(s.conn);
  s.tx.clear();
  s.tx.push(wire::Reset{e});
  s.phase = Phase::closing;
  actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
}

void ServerEngine::refuse(SubflowId sub, Error e, ServerId hint) {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return;
  touch_sub(sub);
  it->second.tx.push(wire::Refuse{e, hint, std::string(to_string(e))});
  it->second.phase = Phase::closing;
  actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
}

size_t ServerEngine::poll_transmit(SubflowId sub, size_t budget, std::vector<Slice>& out) {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return 0;
  Sub& s = it->second;
  touch_sub(sub);
  if (s.conn) touch_conn(s.conn);
  size_t used = s.tx.drain(budget, out);
  if (s.phase != Phase::attached) return used;
  Conn* c = find(s.conn);
  if (!c || c->role != Role::owner || c->subflow != sub) return used;
  uint64_t ack = ack_target(*c);
  if (ack > c->acked_in) {
    Bytes b;
    wire::encode(wire::Ack{ack}, b);
    used += b.size();
    out.emplace_back(make_block(std::move(b)));
    c->acked_in = ack;
    if (c->fin_sent) {  // the ACK that was missing before the connection could be freed
      maybe_free(*c);   // last use of c
      return used;
    }
  }
  std::vector<Slice> payload;
  while (c->out.has_unsent() && used + wire::kDataHeaderBytes < budget) {
    size_t room = std::min(budget - used - wire::kDataHeaderBytes, cfg_.limits.frame_payload_bytes_max);
    uint64_t dsn = c->out.take_unsent(room, payload);
    used += emit_data(dsn, payload, out);
  }
  if (c->app_closed && !c->fin_sent && !c->out.has_unsent()) {
    Bytes b;
    wire::encode(wire::Close{c->out.end()}, b);
    used += b.size();
    out.emplace_back(make_block(std::move(b)));
    c->fin_sent = true;
    maybe_free(*c);  // last use of c: it may be gone after this
  }
  return used;
}

bool ServerEngine::wants_transmit(SubflowId sub) const {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return false;
  const Sub& s = it->second;
  if (!s.tx.empty()) return true;
  if (s.phase != Phase::attached) return false;
  const Conn* c = find(s.conn);
  if (!c || c->role != Role::owner || c->subflow != sub) return false;
  return ack_target(*c) > c->acked_in || c->out.has_unsent() || (c->app_closed && !c->fin_sent);
}

// ---- frames -------------------------------------------------------------------------------

void ServerEngine::handle_frame(SubflowId sub, Frame&& f, TimeMs now) {
  Sub& s = subs_.at(sub);
  auto violation = [&] {
    ++counters_.frames_malformed;
    kill_subflow(sub, Error::protocol_violation);
  };
  switch (s.phase) {
    case Phase::hello:
      if (wire::type_of(f) != FrameType::hello) return violation();
      return on_hello(sub, std::get<wire::Hello>(f), now);
    case Phase::challenged:
      if (wire::type_of(f) != FrameType::migrate) return violation();
      return on_migrate(sub, std::get<wire::Migrate>(f), now);
    case Phase::attached:
      break;
    case Phase::preface:
    case Phase::claiming:
    case Phase::closing:
      return;
  }
  Conn* c = owned(s.conn);
  if (!c || c->subflow != sub) return violation();
  switch (wire::type_of(f)) {
    case FrameType::data:
      return on_data(sub, *c, std::move(std::get<wire::Data>(f)));
    case FrameType::ack: {
      uint64_t dsn = std::get<wire::Ack>(f).dsn;
      if (dsn > c->out.end()) {
        // After a migration the client may already hold output this server has not produced
        // again yet (it kept reading the old subflow after MIGRATE): the replay below dsn is
        // suppressed (docs/PROTOCOL.md §4.3).
        (void)resend_from(*c, dsn);
      } else {
        digest_acked(*c, dsn);
        if (!c->out.ack(dsn)) return violation();
      }
      maybe_free(*c);
      return;
    }
    case FrameType::close: {
      uint64_t at = std::get<wire::Close>(f).final_dsn;
      if (!c->parked.empty()) {  // behind parked DATA: applied when that is (unpark)
        if (at != c->parked_end) return violation();
        c->parked_fin = true;
        return;
      }
      if (at != c->in_end() || (c->client_fin && at != c->client_fin_at)) return violation();
      c->client_fin = true;
      c->client_fin_at = at;
      replicate(*c, now, true);
      maybe_free(*c);
      return;
    }
    case FrameType::reset:
      detach(*c);
      subs_.erase(sub);
      actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
      return;
    default:
      return violation();
  }
}

void ServerEngine::on_hello(SubflowId sub, const wire::Hello& h, TimeMs now) {
  Sub& s = subs_.at(sub);
  if (h.version != wire::kVersion) return refuse(sub, Error::unsupported_version);
  if (h.kind == wire::HelloKind::migrate) {
    s.conn = h.conn_id;
    rng_.fill(s.nonce);
    touch_sub(sub);
    s.tx.push(wire::ChallengeFrame{cfg_.self, s.nonce});
    s.phase = Phase::challenged;
    return;
  }
  if (conns_.size() >= cfg_.limits.connections_max) {
    ++counters_.limit_refusals;
    return refuse(sub, Error::conn_table_full);
  }
  ConnId id = 0;
  while (id == 0 || conns_.contains(id)) id = rng_.u64();
  auto [it, inserted] = conns_.emplace(id, Conn(cfg_.limits.send_log_bytes_max));
  MTCP_ASSERT(conns_.size() <= cfg_.limits.connections_max, "server: connection table beyond connections_max");
  touch_conn(id);
  Conn& c = it->second;
  c.id = id;
  c.epoch = 1;
  c.issuer = cfg_.self;
  c.news_ms = now;
  s.conn = id;
  wire::Welcome w;
  w.conn_id = id;
  w.server_id = cfg_.self;
  w.epoch = c.epoch;
  w.cert = {id, cfg_.self, now, now + cfg_.limits.cert_lifetime_ms};
  w.secret = cert::derive_secret(cfg_.pool_key, w.cert);
  for (const auto& m : cfg_.pool) {
    if (m.server_id != cfg_.self) w.alternates.push_back(m);
  }
  touch_sub(sub);
  s.tx.push(w);
  s.phase = Phase::attached;
  c.subflow = sub;
  c.cert_issued_ms = now;
  ++counters_.connections_opened;
  emit({ServerEvent::Kind::opened, id, Error::ok});
  check_conn(c);
  if (cfg_.limits.transfer_mode == TransferMode::eager) replicate(c, now, true);
}

void ServerEngine::on_migrate(SubflowId sub, const wire::Migrate& m, TimeMs now) {
  Sub& s = subs_.at(sub);
  if (!take_token(now)) {
    ++counters_.migrate_rate_limited;
    return refuse(sub, Error::rate_limited);
  }
  if (m.cert.conn_id != s.conn) return refuse(sub, Error::bad_field);
  // docs/PROTOCOL.md §6: verify the proof before anything else happens; a bad proof never
  // touches the connection or triggers a state transfer (TEST-MATRIX I3).
  Status v = cert::verify(cfg_.pool_key, m.cert, s.nonce, cfg_.self, m.counter, m.proof, now);
  if (!v) {
    if (v.error() == Error::bad_proof) ++counters_.proofs_bad;
    else ++counters_.certs_expired;
    return refuse(sub, v.error());
  }
  ++counters_.migrations_started;
  s.request = m;
  start_claim(sub, m, now);
}

void ServerEngine::on_data(SubflowId sub, Conn& c, wire::Data&& d) {
  uint64_t end = c.parked.empty() ? c.in_end() : c.parked_end;
  if (c.client_fin || c.parked_fin || d.dsn > end) {
    // A reliable subflow never skips bytes: a gap means a broken or hostile client.
    ++counters_.frames_malformed;
    kill_subflow(sub, Error::protocol_violation);
    return;
  }
  if (!c.parked.empty() || c.in_log.size() >= cfg_.limits.input_log_bytes_max) {
    // Input log full (the application has not snapshotted): hold the DATA aside, unacknowledged,
    // and keep parsing, so that the client's ACKs behind it still reach us. Otherwise an app
    // waiting for its output to be acknowledged before it snapshots would wait forever.
    if (d.dsn + d.size() <= end) {
      counters_.duplicate_bytes_dropped += d.size();
      return;
    }
    c.parked_end = d.dsn + d.size();
    c.parked_bytes += d.size();
    c.parked.push_back(std::move(d));
    return;
  }
  accept_data(c, d);
}

void ServerEngine::accept_data(Conn& c, const wire::Data& d) {
  MTCP_ASSERT(c.role == Role::owner, "input: DATA accepted by a non-owner");
  MTCP_ASSERT(c.in_log.size() < cfg_.limits.input_log_bytes_max, "input: DATA accepted into a full input log");
  uint64_t end = c.in_end();
  counters_.duplicate_bytes_dropped += append_new_bytes(d, end, c.in_log);
  // Room for one more frame was checked: the log passes its cap by at most that frame.
  MTCP_ASSERT(c.in_log.size() <= cfg_.limits.input_log_bytes_max + kFramePayloadBytesMax,
              "input: input log beyond input_log_bytes_max");
  check_conn(c);
  if (c.in_end() == end) return;
  if (pump_depth_ > 0) repl_dirty_.insert(c.id);
  else replicate(c, now_ms_, false);
}

// Parked DATA (and a CLOSE behind it) enters the input log as room appears.
void ServerEngine::unpark(Conn& c) {
  while (!c.parked.empty() && c.in_log.size() < cfg_.limits.input_log_bytes_max) {
    wire::Data d = std::move(c.parked.front());
    c.parked.pop_front();
    c.parked_bytes -= d.size();
    accept_data(c, d);
  }
  if (c.parked.empty() && c.parked_fin) {
    c.parked_fin = false;
    c.client_fin = true;
    c.client_fin_at = c.in_end();
    replicate(c, now_ms_, true);
  }
}

void ServerEngine::drop_parked(Conn& c) {
  c.parked.clear();
  c.parked_bytes = 0;
  c.parked_fin = false;
}

uint64_t ServerEngine::ack_target(const Conn& c) const {
  uint64_t end = c.in_end();
  if (!cfg_.limits.ack_after_replication) return end;
  // Ending: the client closed, the application read everything and closed too. The final ACK
  // goes out with our CLOSE, whatever the replicas hold; after it nobody takes over.
  if (c.client_fin && c.app_in == c.client_fin_at && c.app_closed) return end;
  // Acknowledge only what a majority of the pool holds (this owner plus majority()-1
  // alternates), so any majority of voters that elects a new owner includes a holder.
  std::vector<uint64_t> held;
  for (const auto& [id, p] : c.peers) held.push_back(p.acked.epoch == c.epoch ? p.acked.in_end : 0);
  size_t need = majority() - 1;
  if (need == 0) return end;
  if (held.size() < need) return std::min(c.acked_in, end);
  std::sort(held.begin(), held.end(), std::greater<>());
  uint64_t q = held[need - 1];
  return std::min(std::max(q, c.acked_in), end);
}

// ---- attach / detach ----------------------------------------------------------------------

void ServerEngine::detach(Conn& c) {
  drop_parked(c);  // never acknowledged: the client sends it again after ACCEPT
  if (!c.subflow) return;
  SubflowId sub = *c.subflow;
  c.subflow.reset();
  c.news_ms = now_ms_;
  auto it = subs_.find(sub);
  if (it != subs_.end() && it->second.phase != Phase::closing) {
    it->second.phase = Phase::closing;
    actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
  }
}

void ServerEngine::attach(Conn& c, SubflowId sub, TimeMs now) {
  detach(c);
  c.subflow = sub;
  c.news_ms = now;
  Sub& s = subs_.at(sub);
  s.phase = Phase::attached;
  s.conn = c.id;
  check_conn(c);
}

void ServerEngine::send_accept(Conn& c, SubflowId sub, TimeMs now) {
  wire::Accept a;
  a.epoch = c.epoch;
  a.server_rcv_nxt = c.in_end();
  a.cert = {c.id, cfg_.self, now, now + cfg_.limits.cert_lifetime_ms};
  a.secret = cert::derive_secret(cfg_.pool_key, a.cert);
  touch_sub(sub);
  subs_.at(sub).tx.push(a);
  c.cert_issued_ms = now;
  // ACCEPT is not an acknowledgement: ACK frames follow, from ack_target (which waits for
  // the replicas with ack-after-replication).
  c.acked_in = 0;
}

// A certificate at half its life is replaced, so a client that stays put for hours can
// still migrate (docs/PROTOCOL.md §6).
void ServerEngine::renew_cert(Conn& c, TimeMs now) {
  wire::Renew r;
  r.cert = {c.id, cfg_.self, now, now + cfg_.limits.cert_lifetime_ms};
  r.secret = cert::derive_secret(cfg_.pool_key, r.cert);
  touch_sub(*c.subflow);
  subs_.at(*c.subflow).tx.push(r);
  c.cert_issued_ms = now;
}

void ServerEngine::maybe_free(Conn& c) {
  if (c.role != Role::owner) return;
  // ... and the client has our ACK of all its input (it must not need to migrate for it).
  bool done = c.app_closed && c.fin_sent && c.out.base() == c.out.end() && c.client_fin &&
              c.app_in == c.client_fin_at && c.acked_in == c.in_end();
  if (done) free_conn(c.id, Error::ok);
}

void ServerEngine::free_conn(ConnId id, Error why) {
  Conn* c = find(id);
  if (!c) return;
  touch_conn(id);
  if (c->subflow) touch_sub(*c->subflow);
  bool was_owner = c->role == Role::owner;
  if (was_owner && cfg_.limits.transfer_mode == TransferMode::eager) {
    for (const auto& m : cfg_.pool) {
      if (m.server_id != cfg_.self) send_control(m.server_id, wire::Release{id, c->epoch});
    }
  }
  detach(*c);
  if (retired_.size() < cfg_.limits.connections_max || retired_.contains(id))
    retired_[id] = {std::max(c->epoch, c->handed_epoch), c->handed_to, now_ms_ + cfg_.limits.orphan_timeout_ms};
  conns_.erase(id);
  votes_.erase(id);
  ++counters_.connections_freed;
  if (was_owner) emit({ServerEvent::Kind::closed, id, why});
}

// ---- application calls --------------------------------------------------------------------

size_t ServerEngine::conn_readable(ConnId id) const {
  const Conn* c = find(id);
  if (!c || c->role != Role::owner) return 0;
  return static_cast<size_t>(c->in_end() - c->app_in);
}

size_t ServerEngine::conn_read(ConnId id, std::span<uint8_t> dst) {
  Conn* c = owned(id);
  if (!c) return 0;
  size_t n = c->in_log.copy_out(static_cast<size_t>(c->app_in - c->snap_in_seq), dst);
  if (n > 0) touch_conn(id);  // only a change counts: an app polling an idle connection must not keep it listed
  if (c->app_in < c->replay_until) counters_.replayed_input_bytes += std::min<uint64_t>(n, c->replay_until - c->app_in);
  c->app_in += n;
  check_conn(*c);
  maybe_free(*c);
  return n;
}

size_t ServerEngine::conn_read_slices(ConnId id, size_t max_bytes, std::vector<Slice>& out) {
  Conn* c = owned(id);
  if (!c) return 0;
  size_t n = static_cast<size_t>(std::min<uint64_t>(max_bytes, c->in_end() - c->app_in));
  if (n > 0) touch_conn(id);
  c->in_log.view(static_cast<size_t>(c->app_in - c->snap_in_seq), n, out);
  if (c->app_in < c->replay_until) counters_.replayed_input_bytes += std::min<uint64_t>(n, c->replay_until - c->app_in);
  c->app_in += n;
  check_conn(*c);
  maybe_free(*c);
  return n;
}

bool ServerEngine::conn_input_closed(ConnId id) const {
  const Conn* c = find(id);
  return c && c->client_fin && c->app_in == c->client_fin_at;
}

Result<size_t> ServerEngine::conn_write(ConnId id, Slice s) {
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  if (c->app_closed) return Error::closed;
  size_t accepted = 0;
  // Replayed output the client already has (or that is already in the log) is dropped
  // (paper §2; docs/ARCHITECTURE.md "application contract"), after it was checked against
  // what the old owner sent if the application asked for that (docs/PROTOCOL.md §4.3).
  if (c->app_out < c->out.end()) {
    size_t dup = static_cast<size_t>(std::min<uint64_t>(s.len, c->out.end() - c->app_out));
    if (c->verify) {
      auto bytes = s.span().first(dup);
      if (!check_replay(*c, c->app_out, bytes)) {
        ++counters_.replay_mismatches;
        if (c->subflow) {
          // After what is queued (an ACCEPT may still be), so the client hears it on its
          // primary and ends the connection rather than trying another member.
          SubflowId sub = *c->subflow;
          c->subflow.reset();
          touch_sub(sub);
          Sub& sf = subs_.at(sub);
          sf.tx.push(wire::Reset{Error::replay_mismatch});
          sf.phase = Phase::closing;
          actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}});
        }
        free_conn(id, Error::replay_mismatch);
        return Error::replay_mismatch;
      }
      digest_regenerated(*c, c->app_out, bytes);
    }
    counters_.suppressed_output_bytes += dup;
    accepted += dup;
    c->app_out += dup;
    s = s.sub(dup, s.len - dup);
  }
  size_t n = std::min(s.len, c->out.space());
  if (n > 0) {
    (void)c->out.append(s.sub(0, n));
    accepted += n;
    c->app_out += n;
  }
  check_conn(*c);
  if (accepted > 0) touch_conn(id);
  return accepted;
}

Result<size_t> ServerEngine::conn_write_copy(ConnId id, std::span<const uint8_t> bytes) {
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  // Copy only what can be accepted now.
  size_t dup = c->app_out < c->out.end() ? static_cast<size_t>(std::min<uint64_t>(bytes.size(), c->out.end() - c->app_out)) : 0;
  size_t n = dup + std::min(bytes.size() - dup, c->out.space());
  if (n == 0) return size_t{0};
  return conn_write(id, Slice::copy_of(bytes.first(n)));
}

size_t ServerEngine::conn_write_space(ConnId id) const {
  const Conn* c = find(id);
  if (!c || c->role != Role::owner) return 0;
  return c->out.space();
}

Status ServerEngine::conn_snapshot(ConnId id, Bytes snapshot) {
  touch_conn(id);
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  if (snapshot.size() > cfg_.limits.snapshot_bytes_max) {
    ++counters_.limit_refusals;
    return Error::snapshot_too_large;
  }
  c->in_log.drop_front(static_cast<size_t>(c->app_in - c->snap_in_seq));
  c->snap_in_seq = c->app_in;
  c->snap_out_seq = c->app_out;
  c->snapshot = std::move(snapshot);
  ++c->snap_id;
  if (c->verify) restart_digest(*c);
  check_conn(*c);
  if (cfg_.limits.transfer_mode == TransferMode::eager) replicate(*c, now_ms_, true);
  // Room in the input log again: parse what the subflow queued meanwhile.
  if (c->subflow) pump(*c->subflow, now_ms_);
  return {};
}

Status ServerEngine::conn_close(ConnId id) {
  touch_conn(id);
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  c->app_closed = true;
  maybe_free(*c);
  return {};
}

std::optional<ServerEngine::SnapshotView> ServerEngine::conn_snapshot_view(ConnId id) const {
  const Conn* c = find(id);
  if (!c || c->role != Role::owner) return std::nullopt;
  return SnapshotView{c->snap_id, c->snap_in_seq, c->snap_out_seq, &c->snapshot};
}

Status ServerEngine::conn_verify_replay(ConnId id, bool on) {
  touch_conn(id);
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  if (c->verify == on) return {};
  c->verify = on;
  if (!on) {
    c->dig.reset();
    c->dig_ok = false;
    c->chk.reset();
    return {};
  }
  restart_digest(*c);
  // Output [snap_out_seq, base) left the log already: only a replay still to come brings it back.
  if (c->snap_out_seq < c->out.base() && c->app_out != c->snap_out_seq) c->dig_ok = false;
  // The check of the replay against the imported record starts where the replay starts.
  c->chk_ok = c->has_rec && c->app_out == c->rec.from;
  if (c->chk_ok && c->rec.has_digest) {
    c->chk = std::make_unique<StreamDigest>();
    c->chk_pos = c->rec.from;
  }
  return {};
}

// ---- replay verification (docs/PROTOCOL.md §4.3) -------------------------------------------

// The owner's digest covers [snap_out_seq, dig_end) from now on.
void ServerEngine::restart_digest(Conn& c) {
  if (!c.dig) c.dig = std::make_unique<StreamDigest>();
  else c.dig->reset();
  c.dig_end = c.snap_out_seq;
  c.dig_ok = true;
}

// Output below dsn leaves the send log: what the digest does not cover yet goes into it. If
// the digest stops below the log's base, the bytes in between are regenerated by a replay
// still to come, and digest_regenerated feeds them (and then these).
void ServerEngine::digest_acked(Conn& c, uint64_t dsn) {
  if (!c.dig || !c.dig_ok || c.dig_end < c.out.base()) return;
  uint64_t to = std::min(dsn, c.out.end());
  if (to <= c.dig_end) return;
  std::vector<Slice> v;
  c.out.view(c.dig_end, to, v);
  for (const Slice& sl : v) c.dig->update(sl.span());
  counters_.output_digest_bytes += to - c.dig_end;
  c.dig_end = to;
}

// Replayed output at `at` that is not in the send log (below its base) extends the digest.
void ServerEngine::digest_regenerated(Conn& c, uint64_t at, std::span<const uint8_t> bytes) {
  if (!c.dig || !c.dig_ok) return;
  uint64_t end = at + bytes.size();
  uint64_t to = std::min(end, c.out.base());
  if (to <= c.dig_end) return;  // already covered, or in the log (digested when acknowledged)
  if (at > c.dig_end) {         // a gap (cannot happen while replay runs in order)
    c.dig_ok = false;
    return;
  }
  c.dig->update(bytes.subspan(static_cast<size_t>(c.dig_end - at), static_cast<size_t>(to - c.dig_end)));
  counters_.output_digest_bytes += to - c.dig_end;
  c.dig_end = to;
}

// Regenerated output [at, at + n) that the client has or the log holds, against the imported
// record: digest part, byte part, and what neither covers (counted, not checked).
Status ServerEngine::check_replay(Conn& c, uint64_t at, std::span<const uint8_t> bytes) {
  uint64_t end = at + bytes.size();
  uint64_t unverified = bytes.size();
  if (c.has_rec) {
    const OutRecord& r = c.rec;
    auto overlap = [&](uint64_t lo, uint64_t hi) -> std::pair<uint64_t, uint64_t> {
      lo = std::max(lo, at);
      hi = std::min(hi, end);
      return {lo, std::max(lo, hi)};
    };
    if (r.has_digest) {
      auto [lo, hi] = overlap(r.from, r.digest_end);
      if (hi > lo && c.chk && c.chk_ok) {
        if (lo != c.chk_pos) {
          c.chk_ok = false;
        } else {
          c.chk->update(bytes.subspan(static_cast<size_t>(lo - at), static_cast<size_t>(hi - lo)));
          c.chk_pos = hi;
          unverified -= hi - lo;
          if (c.chk_pos == r.digest_end) {
            if (c.chk->value() != r.digest) return Error::replay_mismatch;
            counters_.replay_checked_bytes += r.digest_end - r.from;
            c.chk.reset();
          }
        }
      }
    }
    auto [lo, hi] = overlap(r.tail_start, r.end());
    if (hi > lo) {
      const uint8_t* mine = bytes.data() + (lo - at);
      const uint8_t* theirs = r.tail.data() + (lo - r.tail_start);
      if (std::memcmp(mine, theirs, static_cast<size_t>(hi - lo)) != 0) return Error::replay_mismatch;
      counters_.replay_checked_bytes += hi - lo;
      unverified -= hi - lo;
    }
    // Past the record (and the digest done): nothing left to check it against.
    if (end >= r.end() && !c.chk) {
      c.has_rec = false;
      c.rec = OutRecord{};
    }
  }
  counters_.replay_unverified_bytes += unverified;
  return {};
}

Status ServerEngine::conn_hint(ConnId id, wire::HintReason reason, ServerId target) {
  touch_conn(id);
  Conn* c = owned(id);
  if (!c) return Error::not_owner;
  if (!c->subflow) return Error::closed;
  touch_sub(*c->subflow);
  subs_.at(*c->subflow).tx.push(wire::Hint{reason, target});
  return {};
}

std::optional<ServerEngine::ConnInfo> ServerEngine::conn_info(ConnId id) const {
  const Conn* c = find(id);
  if (!c) return std::nullopt;
  ConnInfo i;
  i.conn = c->id;
  i.role = c->role;
  i.epoch = c->epoch;
  i.counter = c->counter;
  i.attached = c->subflow.has_value();
  i.in_end = c->in_end();
  i.app_in = c->app_in;
  i.out_end = c->out.end();
  i.out_acked = c->out.base();
  i.snap_id = c->snap_id;
  i.snap_in_seq = c->snap_in_seq;
  i.snap_out_seq = c->snap_out_seq;
  i.replay_in_until = c->replay_until;
  i.replay_out_until = c->replay_out_until;
  i.verify_replay = c->verify;
  return i;
}

std::vector<ConnId> ServerEngine::owned_connections() const {
  std::vector<ConnId> v;
  for (const auto& [id, c] : conns_) {
    if (c.role == Role::owner) v.push_back(id);
  }
  return v;
}

// ---- timers -------------------------------------------------------------------------------

void ServerEngine::on_timer(TimeMs now) {
  now_ms_ = now;
  touch_all();  // any connection may have timed out or been renewed
  // Silent subflows: a client that never sends the preface is a plain TCP client (§3.1).
  std::vector<SubflowId> plain;
  for (auto& [id, s] : subs_) {
    if (s.phase == Phase::preface && now >= s.opened_ms + cfg_.limits.hello_timeout_ms) plain.push_back(id);
    else if ((s.phase == Phase::hello || s.phase == Phase::challenged) &&
             now >= s.opened_ms + cfg_.limits.migrate_timeout_ms) {
      kill_subflow(id, Error::migration_timeout);
    }
  }
  for (SubflowId id : plain) {
    Sub& s = subs_.at(id);
    ++counters_.plain_tcp_subflows;
    Bytes head = s.in.flatten(0, s.in.size());
    subs_.erase(id);
    actions_.push_back({ServerAction::Kind::plain_tcp, id, 0, std::move(head)});
  }
  std::vector<uint32_t> due;
  for (auto& [rid, p] : claims_) {
    if (now >= p.deadline_ms) due.push_back(rid);
  }
  for (uint32_t rid : due) check_claim(rid, now, true);
  std::vector<std::pair<ConnId, Error>> expired;
  for (auto& [id, c] : conns_) {
    if (c.role == Role::owner) {
      if (!c.subflow && now >= c.news_ms + cfg_.limits.orphan_timeout_ms) expired.emplace_back(id, Error::subflow_lost);
      else if (cfg_.limits.transfer_mode == TransferMode::eager) replicate(c, now, false);
      if (c.subflow && now >= c.cert_issued_ms + cfg_.limits.cert_lifetime_ms / 2) renew_cert(c, now);
    } else if (c.role == Role::frozen) {
      if (now >= c.news_ms + cfg_.limits.orphan_timeout_ms) expired.emplace_back(id, Error::ok);
    } else if (now >= c.news_ms + cfg_.limits.replica_timeout_ms) {
      expired.emplace_back(id, Error::ok);
    }
  }
  for (auto& [id, e] : expired) free_conn(id, e);
  std::erase_if(retired_, [&](const auto& kv) { return now >= kv.second.until_ms; });
  MTCP_ASSERT(retired_.size() <= cfg_.limits.connections_max, "server: retired table beyond connections_max");
  check_all();
}

TimeMs ServerEngine::sub_deadline(const Sub& s) const {
  if (s.phase == Phase::preface) return s.opened_ms + cfg_.limits.hello_timeout_ms;
  if (s.phase == Phase::hello || s.phase == Phase::challenged) return s.opened_ms + cfg_.limits.migrate_timeout_ms;
  return kNever;
}

TimeMs ServerEngine::conn_deadline(const Conn& c) const {
  TimeMs t = kNever;
  if (c.role == Role::owner) {
    if (!c.subflow) t = std::min(t, c.news_ms + cfg_.limits.orphan_timeout_ms);
    else t = std::min(t, c.cert_issued_ms + cfg_.limits.cert_lifetime_ms / 2);
    if (cfg_.limits.transfer_mode == TransferMode::eager) {
      for (const auto& [pid, p] : c.peers) {
        if (p.acked < wire::ReplicaPos{c.epoch, c.snap_id, c.in_end()})
          t = std::min(t, p.last_send_ms + cfg_.limits.replication_retry_ms);
        t = std::min(t, p.last_send_ms + cfg_.limits.replica_timeout_ms / 2);
      }
    }
  } else if (c.role == Role::frozen) {
    t = std::min(t, c.news_ms + cfg_.limits.orphan_timeout_ms);
  } else {
    t = std::min(t, c.news_ms + cfg_.limits.replica_timeout_ms);
  }
  return t;
}

// Re-indexes the connections and subflows touched since the last call (all of them after a
// timer or a control message), so next_deadline() costs O(changes), not O(connections).
void ServerEngine::refresh_deadlines() const {
  auto update = [](auto& index, auto& of, auto id, TimeMs t) {
    if (auto it = of.find(id); it != of.end()) {
      index.erase({it->second, id});
      of.erase(it);
    }
    if (t != kNever) {
      index.insert({t, id});
      of.emplace(id, t);
    }
  };
  if (dl_all_) {
    conn_dl_.clear();
    conn_dl_of_.clear();
    sub_dl_.clear();
    sub_dl_of_.clear();
    for (const auto& [id, c] : conns_) update(conn_dl_, conn_dl_of_, id, conn_deadline(c));
    for (const auto& [id, sub] : subs_) update(sub_dl_, sub_dl_of_, id, sub_deadline(sub));
  } else {
    for (ConnId id : dl_conns_) {
      const Conn* c = find(id);
      update(conn_dl_, conn_dl_of_, id, c ? conn_deadline(*c) : kNever);
    }
    for (SubflowId id : dl_subs_) {
      auto it = subs_.find(id);
      update(sub_dl_, sub_dl_of_, id, it != subs_.end() ? sub_deadline(it->second) : kNever);
    }
  }
  dl_all_ = false;
  dl_conns_.clear();
  dl_subs_.clear();
}

TimeMs ServerEngine::next_deadline() const {
  refresh_deadlines();
  TimeMs t = kNever;
  if (!conn_dl_.empty()) t = std::min(t, conn_dl_.begin()->first);
  if (!sub_dl_.empty()) t = std::min(t, sub_dl_.begin()->first);
  for (const auto& [rid, p] : claims_) t = std::min(t, p.deadline_ms);  // at most pending_migrations_max
  return t;
}

TimeMs ServerEngine::next_deadline_scan() const {
  TimeMs t = kNever;
  for (const auto& [id, s] : subs_) t = std::min(t, sub_deadline(s));
  for (const auto& [rid, p] : claims_) t = std::min(t, p.deadline_ms);
  for (const auto& [id, c] : conns_) t = std::min(t, conn_deadline(c));
  return t;
}

ServerEngine::Touched ServerEngine::take_touched() {
  Touched t;
  t.all = std::exchange(touched_all_, false);
  if (!t.all) {
    for (ConnId id : touched_conns_) {
      if (const Conn* c = find(id); c && c->subflow) touched_subs_.insert(*c->subflow);
    }
    t.subflows.assign(touched_subs_.begin(), touched_subs_.end());
    t.conns.assign(touched_conns_.begin(), touched_conns_.end());
  }
  touched_subs_.clear();
  touched_conns_.clear();
  return t;
}

}  // namespace mtcp::core
