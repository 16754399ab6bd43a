// Server engine: subflows (open, data, close, kill, refuse), parsing and handling the client's
// frames (HELLO, MIGRATE, DATA, ACK, CLOSE, RESET), the input log and parked DATA, attaching a
// connection to a subflow, and poll_transmit / wants_transmit / wants_read.
#include <algorithm>

#include "core/receive.h"
#include "core/server.h"

namespace mtcp::core {

using wire::Frame;
using wire::FrameType;

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
    actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
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
    if (Conn* c = find(id)) replicate_soon(*c, now);
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
        actions_.push_back({ServerAction::Kind::plain_tcp, sub, 0, std::move(head), nullptr});
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
  actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
}

void ServerEngine::refuse(SubflowId sub, Error e, ServerId hint) {
  auto it = subs_.find(sub);
  if (it == subs_.end()) return;
  touch_sub(sub);
  it->second.tx.push(wire::Refuse{e, hint, std::string(to_string(e))});
  it->second.phase = Phase::closing;
  actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
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
  if (ack_wanted(*c)) {
    uint64_t ack = ack_target(*c);
    c->ack_owed_ms = kNever;
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
  return ack_wanted(*c) || c->out.has_unsent() || (c->app_closed && !c->fin_sent);
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
      if (c->fin_sent && dsn == c->out.end() + 1) {
        // The client acknowledges our CLOSE (one past the last output byte, as a FIN takes a
        // sequence number in TCP): it has all our output, our CLOSE and, sent before it, our
        // ACK of its input. Only now may the connection be freed (docs/PROTOCOL.md §4.4).
        digest_acked(*c, c->out.end());
        if (!c->out.ack(c->out.end())) return violation();
        c->fin_acked = true;
        maybe_free(*c);
        return;
      }
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
      actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
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
  if (member_full(now)) return refuse(sub, Error::member_full);
  // Key agreement first (docs/PROTOCOL.md §6.2): a degenerate client value is refused before
  // anything is allocated for it.
  cert::PrivateKey priv{};
  rng_.fill(priv);
  const cert::PublicKey server_pub = cert::x25519_public(priv);
  auto shared = cert::x25519_shared(priv, h.key_share);
  priv.fill(0);
  if (!shared) return refuse(sub, Error::bad_field);
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
  w.key_share = server_pub;
  w.secret = cert::wrap_welcome_secret(cert::derive_secret(cfg_.pool_key, w.cert), *shared, h.key_share, server_pub, w.cert);
  c.client_cert = w.cert;
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
  if (m.cert.conn_id != s.conn) return refuse(sub, Error::bad_field);
  // docs/PROTOCOL.md §6: verify the proof before anything else happens; a bad proof never
  // touches the connection or triggers a state transfer (TEST-MATRIX I3).
  Status v = cert::verify(cfg_.pool_key, m.cert, s.nonce, cfg_.self, m.counter, m.proof, now);
  if (!v) {
    if (v.error() == Error::bad_proof) ++counters_.proofs_bad;
    else ++counters_.certs_expired;
    return refuse(sub, v.error());
  }
  // The rate limit bounds claims (control traffic, state transfers), the costly part, and only
  // verified requests spend its tokens: a flood of bogus MIGRATEs, each already paid for by
  // its own subflow, preface and CHALLENGE, no longer starves the legitimate ones (§6.4).
  if (!take_token(now)) {
    ++counters_.migrate_rate_limited;
    return refuse(sub, Error::rate_limited);
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
  note_ack_owed(c);
  if (pump_depth_ > 0) repl_dirty_.insert(c.id);
  else replicate_soon(c, now_ms_);
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
  // No exception at the end of the connection: an ACK of input no other member holds, sent
  // before the client has all our output and our CLOSE, loses that input if we crash then
  // (the client would recover with nothing to resend and no member holding it).
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

// An ACK alone costs the client a wake-up and us a write. For request/response traffic the
// reply follows the request within a millisecond or two, so the ACK waits for it (up to
// ack_delay_ms) and rides in the same write. It goes at once when ack_delay_bytes of input
// wait unacknowledged (bulk input: the client's send log must drain), when output or our CLOSE
// goes anyway, and after the client's CLOSE (the end of the connection waits for that ACK).
void ServerEngine::note_ack_owed(Conn& c) {
  if (cfg_.limits.ack_delay_ms == 0 || c.ack_owed_ms != kNever || ack_target(c) <= c.acked_in) return;
  c.ack_owed_ms = now_ms_;
  touch_conn(c.id);  // the deadline index learns the ACK's time
}

bool ServerEngine::ack_wanted(const Conn& c) const {
  uint64_t target = ack_target(c);
  if (target <= c.acked_in) return false;
  if (cfg_.limits.ack_delay_ms == 0 || c.ack_owed_ms == kNever) return true;
  if (target - c.acked_in >= cfg_.limits.ack_delay_bytes) return true;
  if (c.client_fin || c.out.has_unsent() || c.app_closed) return true;
  return now_ms_ >= c.ack_owed_ms + cfg_.limits.ack_delay_ms;
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
    actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
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

void ServerEngine::send_accept(Conn& c, SubflowId sub, const cert::Certificate& presented, TimeMs now) {
  wire::Accept a;
  a.epoch = c.epoch;
  a.server_rcv_nxt = c.in_end();
  a.cert = {c.id, cfg_.self, now, now + cfg_.limits.cert_lifetime_ms};
  // Wrapped with the secret of the certificate the client just proved it holds (§6.2).
  a.secret = cert::wrap_next_secret(cert::derive_secret(cfg_.pool_key, a.cert),
                                    cert::derive_secret(cfg_.pool_key, presented), a.cert);
  c.client_cert = a.cert;
  touch_sub(sub);
  subs_.at(sub).tx.push(a);
  c.cert_issued_ms = now;
  // ACCEPT is not an acknowledgement: ACK frames follow, from ack_target (which waits for
  // the replicas with ack-after-replication).
  c.acked_in = 0;
  c.ack_owed_ms = kNever;
}

// A certificate at half its life is replaced, so a client that stays put for hours can
// still migrate (docs/PROTOCOL.md §6).
void ServerEngine::renew_cert(Conn& c, TimeMs now) {
  wire::Renew r;
  r.cert = {c.id, cfg_.self, now, now + cfg_.limits.cert_lifetime_ms};
  r.secret = cert::wrap_next_secret(cert::derive_secret(cfg_.pool_key, r.cert),
                                    cert::derive_secret(cfg_.pool_key, c.client_cert), r.cert);
  c.client_cert = r.cert;
  touch_sub(*c.subflow);
  subs_.at(*c.subflow).tx.push(r);
  c.cert_issued_ms = now;
}

}  // namespace mtcp::core
