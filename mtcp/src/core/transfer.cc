// Server engine: moving a connection between members (docs/PROTOCOL.md §5): the control
// channel's dispatch, claims (claimer side), votes and grants (voter / owner side), freezing,
// exporting and installing a connection's state. Eager replication is in replication.cc.
//
// Theory of operation.
//  * Every connection has an ownership epoch. Exactly one member may serve a given epoch.
//  * A member that verified a client's MIGRATE claims the next epoch:
//      lazy  - it asks the owner (the client names it); the owner freezes the connection, closes
//              its subflow and answers GRANT with the whole state. The owner's grant is the
//              hand-off; a second claim for the same connection is denied (already_claimed,
//              with a hint to the new owner, which the claimer may follow).
//      eager - it asks every member. Each member votes at most once per epoch (first claim
//              wins), the owner also freezes and hands over its latest state, replicas send
//              theirs if fresher than the claimer's. The claim wins with a majority of votes
//              (self included) once the owner has answered, or at claim_timeout_ms without the
//              owner (it is presumed dead). Two claimers of one epoch cannot both reach a
//              majority (TEST-MATRIX #7).
//  * With ack_after_replication the owner acknowledges client input only once a majority of
//    the pool holds it, so any majority that elects a new owner includes a member holding
//    every acknowledged byte: S2 can take over after S1 crashed (TEST-MATRIX #4).
#include <algorithm>

#include "core/server.h"

namespace mtcp::core {

// A salt never used before under this pool key: a random prefix for this engine's life and a
// counter (docs/PROTOCOL.md §5 "Chunked messages").
void ServerEngine::draw_salt(wire::ControlMessage& m) {
  if (!std::exchange(salt_drawn_, true)) rng_.fill(salt_prefix_);
  std::copy(salt_prefix_.begin(), salt_prefix_.end(), m.salt.begin());
  uint64_t n = ++salts_used_;
  for (size_t i = 0; i < 8; ++i) m.salt[8 + i] = static_cast<uint8_t>(n >> (56 - 8 * i));
}

void ServerEngine::send_control(ServerId to, wire::ControlBody body) {
  wire::ControlMessage m{cfg_.self, to, std::move(body)};
  if (wire::control_body_size(m.body) > wire::kControlChunkBytes) {
    draw_salt(m);
    if (cfg_.stream_control) {
      auto enc = wire::ControlEncoder::make(cfg_.pool_key, std::move(m));
      if (!enc) {
        ++counters_.limit_refusals;
        return;
      }
      actions_.push_back({ServerAction::Kind::send_control, 0, to, {}, std::move(enc.value())});
      return;
    }
  }
  auto bytes = wire::encode_control(cfg_.pool_key, m);
  if (!bytes) {
    ++counters_.limit_refusals;
    return;
  }
  actions_.push_back({ServerAction::Kind::send_control, 0, to, std::move(bytes.value()), nullptr});
}

void ServerEngine::send_control_state(ServerId to, wire::ControlBody body, std::vector<Slice> state) {
  size_t n = 0;
  for (const Slice& s : state) n += s.size();
  if (cfg_.stream_control && n != 0 && wire::control_body_size(body) + n > wire::kControlChunkBytes) {
    wire::ControlMessage m{cfg_.self, to, std::move(body)};
    draw_salt(m);
    auto enc = wire::ControlEncoder::make(cfg_.pool_key, std::move(m), std::move(state));
    if (!enc) {
      ++counters_.limit_refusals;
      return;
    }
    actions_.push_back({ServerAction::Kind::send_control, 0, to, {}, std::move(enc.value())});
    return;
  }
  Bytes joined = join(state);
  if (auto* g = std::get_if<wire::Grant>(&body)) {
    g->state = std::move(joined);
  } else {
    auto* r = std::get_if<wire::ReplState>(&body);
    MTCP_ASSERT(r != nullptr, "send_control_state: not a GRANT or REPL_STATE");
    r->state = std::move(joined);
  }
  send_control(to, std::move(body));
}

void ServerEngine::on_control(ServerId from, std::span<const uint8_t> message, TimeMs now) {
  auto m = wire::decode_control(cfg_.pool_key, message);
  if (!m) {
    now_ms_ = now;
    ++counters_.control_malformed;
    return;
  }
  on_control_message(from, std::move(m.value()), now);
}

void ServerEngine::on_control_message(ServerId from, wire::ControlMessage&& msg, TimeMs now) {
  now_ms_ = now;
  touch_all();  // claims, grants and replication may change any connection
  const wire::ControlMessage* m = &msg;
  if (m->to != cfg_.self || m->from != from || from == cfg_.self) {
    ++counters_.control_malformed;
    return;
  }
  bool member = std::any_of(cfg_.pool.begin(), cfg_.pool.end(), [&](const auto& a) { return a.server_id == from; });
  if (!member) {
    ++counters_.control_malformed;
    return;
  }
  std::visit(
      [&](auto&& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, wire::Claim>) on_claim(from, body, now);
        else if constexpr (std::is_same_v<T, wire::Grant>) on_grant(from, std::move(body), now);
        else if constexpr (std::is_same_v<T, wire::Deny>) on_deny(from, body, now);
        else if constexpr (std::is_same_v<T, wire::ReplState>) on_repl_state(from, std::move(body), now);
        else if constexpr (std::is_same_v<T, wire::ReplLog>) on_repl_log(from, std::move(body), now);
        else if constexpr (std::is_same_v<T, wire::ReplAck>) on_repl_ack(from, body, now);
        else if constexpr (std::is_same_v<T, wire::Release>) on_release(from, body, now);
        else if constexpr (std::is_same_v<T, wire::Abandon>) on_abandon(from, body, now);
        else ++counters_.control_malformed;  // PEER_HELLO belongs to the transport (runtime), never the engine
      },
      std::move(msg.body));
}

// ---- claimer side -------------------------------------------------------------------------

void ServerEngine::start_claim(SubflowId sub, const wire::Migrate& m, TimeMs now) {
  ConnId id = m.cert.conn_id;
  for (const auto& [rid, p] : claims_) {
    if (p.conn == id) return refuse(sub, Error::already_claimed);
  }
  if (claims_.size() >= cfg_.limits.pending_migrations_max) {
    ++counters_.limit_refusals;
    return refuse(sub, Error::pending_table_full);
  }
  if (member_full(now)) return refuse(sub, Error::member_full);
  Conn* local = find(id);
  bool eager = cfg_.limits.transfer_mode == TransferMode::eager;
  if (!eager && local && local->role == Role::owner) {
    // Lazy, and the client comes back to its owner (a cut subflow): resume locally.
    if (m.counter <= local->counter) return refuse(sub, Error::stale_counter);
    // Same application instance: only the output is resent from what the client has.
    Status st = resend_from(*local, m.client_rcv_nxt);
    if (!st) return refuse(sub, st.error());
    local->counter = m.counter;
    ++local->epoch;
    local->acked_in = 0;
    local->ack_owed_ms = kNever;
    local->fin_sent = false;
    local->fin_acked = false;
    attach(*local, sub, now);
    send_accept(*local, sub, m.cert, now);
    ++counters_.migrations_done;
    emit({ServerEvent::Kind::resumed, id, Error::ok});
    return;
  }
  PendingClaim p;
  p.conn = id;
  p.sub = sub;
  p.request = m;
  p.mode = cfg_.limits.transfer_mode;
  p.deadline_ms = now + cfg_.limits.claim_timeout_ms;
  uint32_t rid = next_request_++;
  if (rid == 0) rid = next_request_++;
  if (!eager) {
    ServerId ask = m.prev_owner;
    if (local && local->role == Role::frozen) {
      // We handed it on: ask our successor, telling it which hand-off we mean.
      ask = local->handed_to;
      p.epoch = local->handed_epoch;
    }
    // The client names us, but we handed it on and released it: ask our successor.
    if (ask == cfg_.self && !local) ask = successor_of(id);
    if (ask == cfg_.self || ask == 0 ||
        std::none_of(cfg_.pool.begin(), cfg_.pool.end(), [&](const auto& a) { return a.server_id == ask; }))
      return refuse(sub, Error::unknown_connection);
    p.asked = ask;
    p.deadline_ms = now + lazy_claim_wait(id);
    subs_.at(sub).phase = Phase::claiming;
    auto [it, ok] = claims_.emplace(rid, std::move(p));
    MTCP_ASSERT(ok && claims_.size() <= cfg_.limits.pending_migrations_max, "claim: beyond pending_migrations_max");
    send_claim(it->second, rid, ask);
    return;
  }
  // Eager. A counter our own copy has already seen is refused here, before we vote or freeze
  // anything (I3: a rejected attempt never disturbs the live connection, least of all when we
  // are its owner and would otherwise freeze it for a claim that claim_won refuses).
  if (local && m.counter <= local->counter) return refuse(sub, Error::stale_counter);
  // Propose the epoch after the highest this member knows of, vote for ourselves. Voting and
  // (if we own it) freezing before the claim is decided is the protocol, not a refusal path
  // that changes state early (docs/PROTOCOL.md §5.3 "Claiming"): our vote for this epoch must be
  // taken before any CLAIM leaves, or we could vote for a second claimer of the same epoch
  // while our own claim counts us; and as owner our frozen state is the owner's answer, which
  // must stop serving before the hand-off (§5.2), as a remote owner does in on_claim. Every check
  // that needs no vote has run above. A connection freed here (closed, or released by its
  // owner) still counts: its last epoch must not be won a second time (I4).
  uint64_t known = retired_epoch(id);
  if (local) known = std::max(known, local->epoch);
  if (auto v = votes_.find(id); v != votes_.end()) known = std::max(known, v->second.epoch);
  p.epoch = std::max<uint64_t>(known, 1) + 1;  // a connection starts at epoch 1
  record_vote(id, {p.epoch, cfg_.self});
  if (local && local->role == Role::owner) {
    p.owner_answered = true;  // we are the owner: our own state is the hand-off
    freeze(*local, cfg_.self, p.epoch);
  }
  subs_.at(sub).phase = Phase::claiming;
  auto [it, ok] = claims_.emplace(rid, std::move(p));
  MTCP_ASSERT(ok && claims_.size() <= cfg_.limits.pending_migrations_max, "claim: beyond pending_migrations_max");
  for (const auto& mem : cfg_.pool) {
    if (mem.server_id != cfg_.self) send_claim(it->second, rid, mem.server_id);
  }
  check_claim(rid, now, false);
}

// Lazy: lazy_claim_timeout_ms, doubled for each claim of ours for this connection that timed
// out recently (at most 8x): an owner that answered too late once is likely slow, not dead.
// At most 3/4 of migrate_timeout_ms: a wait the client outlasts only turns the claimer's clean
// refusal into the client's "migration timeout" (seen with a starved owner, 1% of a core).
TimeMs ServerEngine::lazy_claim_wait(ConnId id) const {
  size_t timed_out = static_cast<size_t>(
      std::count_if(abandoned_.begin(), abandoned_.end(), [&](const auto& kv) { return kv.second.conn == id; }));
  TimeMs wait = cfg_.limits.lazy_claim_timeout_ms << std::min<size_t>(timed_out, 3);
  TimeMs cap = cfg_.limits.migrate_timeout_ms / 4 * 3;
  return std::max<TimeMs>(1, std::min(wait, cap));
}

uint64_t ServerEngine::retired_epoch(ConnId id) const {
  auto r = retired_.find(id);
  return r == retired_.end() ? 0 : r->second.epoch;
}

ServerId ServerEngine::successor_of(ConnId id) const {
  auto r = retired_.find(id);
  return r == retired_.end() ? 0 : r->second.successor;
}

void ServerEngine::send_claim(PendingClaim& p, uint32_t request_id, ServerId to) {
  wire::Claim c;
  c.conn_id = p.conn;
  c.epoch = p.epoch;
  c.request_id = request_id;
  c.mode = p.mode;
  c.adopt_only = p.adopt_only;
  c.counter = p.request.counter;
  if (const Conn* local = find(p.conn)) c.have = local->pos();
  send_control(to, c);
}

void ServerEngine::on_grant(ServerId from, wire::Grant&& g, TimeMs now) {
  auto it = claims_.find(g.request_id);
  if (it == claims_.end() || it->second.conn != g.conn_id) {
    ++counters_.stale_messages;
    if (!g.from_owner || cfg_.limits.transfer_mode != TransferMode::lazy) return;
    // The grant of a claim we abandoned: we never install it; tell the granter again (our
    // first ABANDON may have been lost) so it serves the connection once more.
    if (auto a = abandoned_.find(g.request_id); a != abandoned_.end() && a->second.conn == g.conn_id && a->second.asked == from)
      return send_control(from, wire::Abandon{g.conn_id, g.request_id, a->second.counter});
    adopt_late_grant(from, std::move(g), now);
    return;
  }
  PendingClaim& p = it->second;
  if (p.mode == TransferMode::lazy) {
    if (from != p.asked || !g.from_owner || g.state.empty()) {
      ++counters_.control_malformed;
      return;
    }
    auto st = wire::decode_state(make_block(std::move(g.state)), cfg_.limits.snapshot_bytes_max);  // a large snapshot stays where it arrived
    // A lazy GRANT carries the whole state: elided parts are an eager owner's (§5.3).
    if (!st || st->conn_id != p.conn || st->epoch != g.epoch || st->in_log_kept || st->out_log_tail) {
      ++counters_.control_malformed;
      return claim_failed(g.request_id, st ? Error::bad_field : st.error(), 0);
    }
    if (auto r = retired_.find(p.conn); r != retired_.end() && r->second.epoch >= g.epoch) {
      // We held a newer epoch of this connection ourselves: this owner's copy is stale.
      return claim_failed(g.request_id, Error::stale_epoch, 0);
    }
    p.epoch = g.epoch;
    // The owner's state, at the epoch it hands over: fresher than any copy of ours (a frozen
    // member asking its successor holds an older epoch), so claim_won continues from it.
    p.best_pos = {st->epoch, st->snap_id, st->in_end()};
    p.best_from_owner = true;
    p.best = std::move(st.value());
    p.owner_answered = true;
    p.granted.insert(from);
    return claim_won(g.request_id, now);
  }
  if (g.epoch != p.epoch) {
    ++counters_.stale_messages;
    return;
  }
  p.granted.insert(from);
  if (g.from_owner) p.owner_answered = true;
  if (!g.state.empty()) {
    auto st = wire::decode_state(make_block(std::move(g.state)), cfg_.limits.snapshot_bytes_max);  // a large snapshot stays where it arrived
    if (!st || st->conn_id != p.conn) {
      ++counters_.control_malformed;
    } else {
      const Conn* local = find(p.conn);
      if ((st->in_log_kept || st->out_log_tail) && !(g.from_owner && local && complete_grant(*local, g.pos, *st))) {
        // Input or output elided against a copy we no longer hold whole: this grant cannot be
        // used. Continuing from an older copy after its owner froze would do no harm (the
        // replay checks), but the owner's state is the one to continue from: let the client
        // retry; the former owner (now a replica, without its per-alternate record) then
        // sends the whole state.
        ++counters_.control_malformed;
        return claim_failed(g.request_id, Error::state_gap, 0);
      }
      wire::ReplicaPos pos{st->epoch, st->snap_id, st->in_end()};
      if (st->snapshot_elided && (!local || local->snap_id != st->snap_id || local->epoch != st->epoch)) {
        ++counters_.control_malformed;  // elided against a snapshot we do not hold
      } else if (!p.best || pos > p.best_pos || (pos == p.best_pos && g.from_owner)) {
        if (st->snapshot_elided) {
          st->snapshot_shared = local->snapshot;
          st->snapshot_elided = false;
        }
        p.best_pos = pos;
        p.best_from_owner = g.from_owner;
        p.best = std::move(st.value());
      }
    }
  }
  check_claim(g.request_id, now, false);
}

// An eager owner's GRANT left out what we hold (§5.3): the input since its snapshot, which
// it sent as REPL_LOG ahead of the GRANT (g_pos.in_end says where it ends), and the output
// before the position we confirmed. Put our copies back; false if our copy lacks them.
bool ServerEngine::complete_grant(const Conn& local, const wire::ReplicaPos& g_pos, wire::ConnState& st) const {
  if (st.in_log_kept) {
    bool have = !st.client_fin && local.epoch == st.epoch && g_pos.epoch == st.epoch && g_pos.snap_id == st.snap_id &&
                g_pos.in_end >= st.snap_in_seq && local.snap_in_seq <= st.snap_in_seq && local.in_end() >= g_pos.in_end;
    if (!have) return false;
    size_t at = static_cast<size_t>(st.snap_in_seq - local.snap_in_seq);
    st.in_log = local.in_log.flatten(at, static_cast<size_t>(g_pos.in_end - st.snap_in_seq));
    st.in_log_kept = false;
  }
  return !st.out_log_tail || fill_out_prefix(local, st);
}

// Lazy: an owner answered a claim of ours after it had timed out. The owner may be frozen,
// pointing clients at us, with nobody holding the connection. A late GRANT is not installed as
// it is (it may be very old); instead we claim again with adopt_only: the member grants only if
// it is still frozen and handed to us, so taking over never fences a live owner.
void ServerEngine::adopt_late_grant(ServerId from, wire::Grant&& g, TimeMs now) {
  if (find(g.conn_id)) return;
  if (auto r = retired_.find(g.conn_id); r != retired_.end() && r->second.epoch >= g.epoch) return;
  for (const auto& [rid, p] : claims_) {
    if (p.conn == g.conn_id) return;  // a claim of ours is under way already
  }
  if (claims_.size() >= cfg_.limits.pending_migrations_max) return;
  PendingClaim p;
  p.conn = g.conn_id;
  p.mode = TransferMode::lazy;
  p.asked = from;
  p.adopt_only = true;
  p.deadline_ms = now + cfg_.limits.claim_timeout_ms;
  uint32_t rid = next_request_++;
  if (rid == 0) rid = next_request_++;
  auto [it, ok] = claims_.emplace(rid, std::move(p));
  MTCP_ASSERT(ok && claims_.size() <= cfg_.limits.pending_migrations_max, "claim: beyond pending_migrations_max");
  send_claim(it->second, rid, from);
}

void ServerEngine::on_deny(ServerId from, const wire::Deny& d, TimeMs now) {
  auto it = claims_.find(d.request_id);
  if (it == claims_.end() || it->second.conn != d.conn_id) {
    ++counters_.stale_messages;
    return;
  }
  PendingClaim& p = it->second;
  if (p.mode == TransferMode::lazy) {
    if (from != p.asked) return;
    ServerId next = d.owner_id;
    // A hint pointing back at us: we passed the connection on since; follow our own record.
    if (next == cfg_.self) next = successor_of(p.conn);
    // We froze and handed the connection to `from`, which says it never took it and is not
    // about to: the hand-off failed, so we own it again, at a new epoch (docs/PROTOCOL.md §5.2).
    if (Conn* local = find(p.conn); local && local->role == Role::frozen && local->handed_to == from &&
                                    d.reason == Error::unknown_connection && p.epoch == local->handed_epoch && p.epoch != 0) {
      p.epoch = local->handed_epoch + 1;
      return claim_won(d.request_id, now);
    }
    // Follow the hint to the member that holds the connection now (bounded hops).
    bool followable = !p.adopt_only && (d.reason == Error::not_owner || d.reason == Error::already_claimed) && next != 0 &&
                      next != cfg_.self && next != from;
    if (followable && p.hops < cfg_.limits.claim_hops_max) {
      ++p.hops;
      p.asked = next;
      p.deadline_ms = now + lazy_claim_wait(p.conn);
      return send_claim(p, d.request_id, next);
    }
    // Point the client at the last member named as holder (its grant may have been lost).
    ServerId hint = next != 0 ? next : (p.hops > 0 ? p.asked : 0);
    return claim_failed(d.request_id, d.reason, hint);
  }
  if (d.epoch != p.epoch) return;
  // Eager: someone voted for another claimer of this epoch or knows a newer one; our claim
  // cannot reach a majority that includes that voter, so give up now rather than at timeout.
  p.deny_reason = d.reason;
  p.deny_hint = d.owner_id;
  bool lost = d.reason == Error::stale_epoch || d.reason == Error::already_claimed;
  if (lost) claim_failed(d.request_id, Error::already_claimed, d.owner_id);
  else if (d.reason == Error::stale_counter) claim_failed(d.request_id, Error::stale_counter, 0);
  // Remember the newer epoch so the next claim for this connection proposes above it. Not in
  // place of a vote for another claimer of that very epoch (we would then grant both), and our
  // own vote for it only once our claim is over (done just above when the DENY ends it).
  auto v = votes_.find(d.conn_id);
  bool own_claim_pending = claims_.contains(d.request_id);
  if (d.owner_epoch != 0 && (v == votes_.end() || d.owner_epoch > v->second.epoch ||
                             (d.owner_epoch == v->second.epoch && v->second.claimer == cfg_.self && !own_claim_pending)))
    record_vote(d.conn_id, {d.owner_epoch, d.owner_id});
  if (own_claim_pending) check_claim(d.request_id, now, false);
}

void ServerEngine::check_claim(uint32_t request_id, TimeMs now, bool deadline) {
  auto it = claims_.find(request_id);
  if (it == claims_.end()) return;
  PendingClaim& p = it->second;
  if (p.mode == TransferMode::lazy) {
    if (!deadline) return;
    if (p.adopt_only) return claim_failed(request_id, Error::owner_unreachable, 0);
    // The owner may be alive but slow, or its answers lost (a one-way cut): abandon the claim
    // so that an owner which froze for it serves again, and send the client back to it.
    ServerId asked = p.asked;
    abandon_claim(request_id, p, now);
    return claim_failed(request_id, Error::owner_unreachable, asked);
  }
  // Eager: the client that asked is gone, so nobody would use the new epoch; winning it could
  // only fence an owner that is merely cut off from the pool. Give up.
  if (p.sub == 0) return claim_failed(request_id, Error::migration_timeout, 0);
  size_t votes = p.granted.size() + 1;
  if (votes >= majority() && (p.owner_answered || deadline)) return claim_won(request_id, now);
  if (deadline) claim_failed(request_id, p.granted.empty() ? Error::owner_unreachable : Error::claim_lost, p.deny_hint);
}

// A lazy claim timed out: from now on this member never installs its GRANT (the claim leaves
// claims_, and a late GRANT of it is answered with ABANDON, never adopted while recorded).
void ServerEngine::abandon_claim(uint32_t request_id, const PendingClaim& p, TimeMs now) {
  ++counters_.claims_abandoned;
  if (abandoned_.size() < kAbandonedClaimsMax)
    abandoned_[request_id] = {p.conn, p.asked, p.request.counter, now + cfg_.limits.orphan_timeout_ms,
                              now + cfg_.limits.claim_timeout_ms, 0};
  send_control(p.asked, wire::Abandon{p.conn, request_id, p.request.counter});
}

void ServerEngine::claim_failed(uint32_t request_id, Error e, ServerId hint) {
  auto it = claims_.find(request_id);
  if (it == claims_.end()) return;
  SubflowId sub = it->second.sub;
  claims_.erase(it);
  ++counters_.migrations_failed;
  if (sub != 0) refuse(sub, e, hint);
}

// Every check that can refuse the claim runs first, on the candidate state and what this member
// holds: a refused claim leaves conns_, votes_ and the local copy (role, epoch, counter, logs)
// as they were. Only then is the connection created or taken over and the state installed.
void ServerEngine::claim_won(uint32_t request_id, TimeMs now) {
  auto it = claims_.find(request_id);
  MTCP_ASSERT(it != claims_.end(), "claim_won: no such claim");
  PendingClaim p = std::move(it->second);
  claims_.erase(it);
  take_over(std::move(p), now);
}

// claim_won's body, also used by a frozen owner that serves again after its claimer abandoned
// the claim (on_abandon: no claim entry, nobody asked, p.asked 0).
void ServerEngine::take_over(PendingClaim p, TimeMs now) {
  Conn* local = find(p.conn);
  auto give_up = [&](Error e) {
    ++counters_.migrations_failed;
    if (p.sub) refuse(p.sub, e);
  };
  // The state to continue from: the freshest of ours and what the grants carried.
  bool from_remote = false;
  wire::ConnState st;
  // On a tie the owner's state wins: same snapshot and input, but its output record is live.
  if (p.best && (!local || p.best_pos > local->pos() || (p.best_from_owner && p.best_pos == local->pos()))) {
    st = std::move(*p.best);
    from_remote = true;
  } else if (local) {
    st = export_state(*local, false);
  } else if (p.mode == TransferMode::eager && p.sub && p.request.client_snd_una == 0) {
    // No member holds a copy (the owner died before its first push arrived) but the client
    // still holds its whole input: the initial state (no snapshot, empty logs) continues the
    // stream exactly, by replay from the start.
    st.conn_id = p.conn;
    st.epoch = 1;
    st.issuer_id = p.request.cert.issuer_id;
    from_remote = true;
  } else {
    return give_up(Error::unknown_connection);
  }
  // The epoch we won must be newer than the state we continue from: a copy of that epoch or
  // a newer one arrived while we were collecting votes, so another member owns it (I4).
  if (p.mode == TransferMode::eager && st.epoch >= p.epoch) return give_up(Error::claim_lost);
  // Never take over with less input than the client saw acknowledged: without the owner's
  // answer that means our copies are stale (eager without ack-after-replication, or a
  // partition); give up the claim and let the client retry rather than fence a live owner
  // with a state that cannot continue the stream.
  if (p.sub && st.in_end() < p.request.client_snd_una)
    return give_up(p.owner_answered ? Error::state_gap : Error::owner_unreachable);
  // A counter the state (or our copy) has already seen.
  if (p.sub && p.request.counter <= std::max(st.migrations, local ? local->counter : 0))
    return give_up(Error::stale_counter);
  // Room for a new entry.
  if (!local && conns_.size() >= cfg_.limits.connections_max) {
    ++counters_.limit_refusals;
    return give_up(Error::conn_table_full);
  }
  // The state must fit this member's send log and continue this client's output stream (should
  // not fail with honest peers): checked on the state alone, before the copy is touched.
  st.epoch = p.epoch;
  uint64_t rcv = p.sub ? p.request.client_rcv_nxt : st.out_log_start;
  if (Status fits = check_install(st, rcv); !fits) return give_up(fits.error());
  MTCP_ASSERT(!local || local->epoch <= p.epoch, "claim_won: the epoch won is older than our copy's");

  // Decided: take the connection over.
  bool was_owner_instance = local && !from_remote && local->handed_to == cfg_.self && local->role != Role::replica;
  if (!local) {
    auto [cit, ok] = conns_.emplace(p.conn, Conn(cfg_.limits.send_log_bytes_max));
    MTCP_ASSERT(conns_.size() <= cfg_.limits.connections_max, "server: connection table beyond connections_max");
    touch_conn(p.conn);
    local = &cit->second;
    local->id = p.conn;
  }
  Conn& c = *local;
  c.role = Role::owner;
  c.handed_to = 0;
  c.handed_requests.clear();
  c.handed_untracked = false;
  c.peers.clear();
  Status ok = install_state(c, std::move(st), rcv);
  MTCP_ASSERT(ok.ok(), "claim_won: install_state failed after check_install passed");
  MTCP_ASSERT(c.epoch == p.epoch, "claim_won: installed another epoch than the one won");
  MTCP_ASSERT(!p.sub || p.request.counter > c.counter, "claim_won: stale counter installed");
  // We own it now: the old owner's frozen copy can go, whatever happens to this client.
  if (p.mode == TransferMode::lazy && p.asked != 0) send_control(p.asked, wire::Release{c.id, c.epoch});
  c.counter = std::max(c.counter, p.request.counter);
  ++counters_.migrations_done;
  c.news_ms = now;
  if (p.sub && subs_.contains(p.sub)) {
    attach(c, p.sub, now);
    send_accept(c, p.sub, p.request.cert, now);
  }
  if (!was_owner_instance) {  // a new application instance: it asks for verification again
    c.verify = false;
    c.dig.reset();
    c.dig_ok = false;
  }
  check_conn(c);
  emit({was_owner_instance ? ServerEvent::Kind::resumed : ServerEvent::Kind::imported, c.id, Error::ok});
  if (cfg_.limits.transfer_mode == TransferMode::eager) replicate(c, now, true);
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

// ---- voter / owner side -------------------------------------------------------------------

void ServerEngine::on_claim(ServerId from, const wire::Claim& m, TimeMs now) {
  Conn* c = find(m.conn_id);
  auto deny = [&](Error e, ServerId owner, uint64_t epoch) {
    ++counters_.claims_denied;
    send_control(from, wire::Deny{m.conn_id, m.epoch, m.request_id, e, owner, epoch});
  };
  if (m.mode != cfg_.limits.transfer_mode) return deny(Error::bad_field, 0, 0);
  if (m.mode == TransferMode::lazy) {
    if (!c) {
      // A claim of ours is under way: we may be about to own it.
      for (const auto& [rid, p] : claims_) {
        if (p.conn == m.conn_id) return deny(Error::already_claimed, 0, 0);
      }
      // Handed on and released: point the claimer at the successor (unless the claimer
      // handed us a newer epoch than the one we passed on).
      if (auto r = retired_.find(m.conn_id); r != retired_.end() && r->second.successor != 0 && !m.adopt_only &&
                                              (m.epoch == 0 || r->second.epoch >= m.epoch))
        return deny(Error::not_owner, r->second.successor, r->second.epoch);
      return deny(Error::unknown_connection, 0, 0);
    }
    if (c->role == Role::frozen) {
      // Repeated claim from the member we handed to (our GRANT was lost): grant again.
      if (c->handed_to == from) {
        // A claim its claimer already abandoned (the ABANDON overtook this copy): granting it
        // again would keep us frozen for a request nobody will ever install.
        if (m.counter != 0 && m.counter <= c->abandoned_counter) return deny(Error::stale_counter, 0, 0);
        ++counters_.claims_granted;
        note_handed_request(*c, m.request_id);  // one more GRANT that may be installed
        Export ex = export_views(*c, false, 0);
        ex.st.epoch = c->handed_epoch;
        auto pieces = encode_export(*c, ex);
        if (!pieces) return deny(pieces.error(), 0, 0);
        return send_control_state(from, wire::Grant{c->id, c->handed_epoch, m.request_id, true, c->pos(), {}},
                                  std::move(pieces.value()));
      }
      return deny(Error::already_claimed, c->handed_to, c->handed_epoch);
    }
    if (c->role != Role::owner || m.adopt_only) return deny(Error::not_owner, 0, 0);
    // A counter the connection has already seen: refuse before freezing anything (I3: a
    // rejected attempt never disturbs the live connection).
    if (m.counter <= c->counter) return deny(Error::stale_counter, 0, 0);
    // An attempt whose claim was abandoned already (its ABANDON overtook it), or an older one.
    if (m.counter <= c->abandoned_counter) return deny(Error::stale_counter, 0, 0);
    // docs/PROTOCOL.md §5.2: the owner freezes, stops serving and hands the state over.
    uint64_t next = c->epoch + 1;
    Export ex = export_views(*c, false, 0);
    ex.st.epoch = next;
    auto pieces = encode_export(*c, ex);
    if (!pieces) return deny(pieces.error(), 0, 0);
    freeze(*c, from, next);
    c->handed_requests.clear();
    c->handed_untracked = false;
    note_handed_request(*c, m.request_id);
    c->news_ms = now;
    ++counters_.claims_granted;
    return send_control_state(from, wire::Grant{c->id, next, m.request_id, true, c->pos(), {}}, std::move(pieces.value()));
  }
  // Eager: one vote per epoch, first claim wins; repeated claims by the same claimer are
  // answered again (its earlier GRANT may have been lost).
  if (c && m.counter <= c->counter) return deny(Error::stale_counter, 0, 0);
  Vote v;
  if (auto it = votes_.find(m.conn_id); it != votes_.end()) v = it->second;
  uint64_t known = std::max({v.epoch, c ? c->epoch : 0, retired_epoch(m.conn_id)});
  bool repeat = v.epoch == m.epoch && v.claimer == from;
  if (!repeat && m.epoch <= known) {
    bool claimed = v.epoch >= m.epoch && v.claimer != 0;
    return deny(claimed ? Error::already_claimed : Error::stale_epoch, claimed ? v.claimer : 0, known);
  }
  if (!repeat && !votes_.contains(m.conn_id) && votes_.size() >= cfg_.limits.connections_max) {
    ++counters_.limit_refusals;
    return deny(Error::conn_table_full, 0, 0);
  }
  record_vote(m.conn_id, {m.epoch, from});
  ++counters_.claims_granted;
  wire::Grant g;
  g.conn_id = m.conn_id;
  g.epoch = m.epoch;
  g.request_id = m.request_id;
  if (!c) return send_control(from, std::move(g));
  g.from_owner = c->role == Role::owner || (c->role == Role::replica && c->handed_to == from && c->handed_epoch == m.epoch);
  // The output the claimer confirmed holding (a state of this epoch it installed, §5.3): the
  // owner's GRANT carries only the output after it. Under bulk traffic the unacknowledged
  // output log is megabytes the claimer already has, and sending it again made an eager
  // migration tens of times slower than the state it had to move. Known only to the owner
  // (its per-alternate record), and read before freezing clears it.
  // Likewise the input since the snapshot: the claimer was sent the newest snapshot and the
  // increments after it; the rest goes now as REPL_LOG, ahead of the GRANT on the same control
  // connection, and the GRANT's state leaves the input log out (in_log_kept; g.pos says where
  // it ends). Not once the client closed (as in send_repl_state).
  uint64_t out_from = 0;
  bool keep_in = false;
  if (c->role == Role::owner) {
    if (auto pit = c->peers.find(from); pit != c->peers.end() && m.have.epoch == c->epoch) {
      Peer& pe = pit->second;
      if (pe.out_have_epoch == c->epoch) out_from = pe.out_have;
      keep_in = !c->client_fin && pe.sent_epoch == c->epoch && pe.sent_snap == c->snap_id &&
                pe.sent_in_end >= c->snap_in_seq;
      if (keep_in) send_repl_input(*c, from, pe, pe.sent_in_end, c->in_end(), now);
    }
    freeze(*c, from, m.epoch);
  }
  g.pos = c->pos();
  if (g.pos > m.have || g.from_owner) {
    // Elide the snapshot only when the claimer holds this very one: same snapshot id within
    // the same epoch (two owners of different epochs may both have made a snapshot N).
    bool elide = m.have.snap_id == c->snap_id && m.have.epoch == c->epoch && c->snap_id != 0;
    Export ex = export_views(*c, elide, out_from);
    if (keep_in) {
      ex.st.in_log_kept = true;
      ex.in_log.clear();
    }
    auto pieces = encode_export(*c, ex);
    if (pieces) return send_control_state(from, std::move(g), std::move(pieces.value()));
  }
  send_control(from, std::move(g));
}

// Stop serving: close the client's subflow, fence the app, keep what a successor needs.
void ServerEngine::freeze(Conn& c, ServerId to, uint64_t epoch) {
  bool was_owner = c.role == Role::owner;
  detach(c);
  c.ack_owed_ms = kNever;
  c.handed_to = to;
  c.handed_epoch = epoch;
  c.role = cfg_.limits.transfer_mode == TransferMode::eager ? Role::replica : Role::frozen;
  // Output after the snapshot is regenerated by replay; only output before it is kept.
  // What the successor needs to check its replay: captured before the log is cut.
  if (was_owner) {
    c.rec = owner_record(c);
    c.has_rec = true;
  }
  c.verify = false;
  c.dig.reset();
  c.dig_ok = false;
  c.chk.reset();
  c.out.truncate(c.snap_out_seq);
  c.app_in = c.snap_in_seq;
  c.app_out = c.snap_out_seq;
  c.peers.clear();
  check_conn(c);
  if (was_owner) emit({ServerEvent::Kind::fenced, c.id, Error::ok});
}

// The owner's output after its snapshot: the digest of what left the log (if it keeps one
// without a gap) and the bytes still in the log.
ServerEngine::OutRecord ServerEngine::owner_record(const Conn& c, bool with_tail) const {
  OutRecord r;
  r.from = c.snap_out_seq;
  r.has_digest = c.dig && c.dig_ok && c.verify;
  r.digest_end = r.has_digest ? c.dig_end : c.snap_out_seq;
  if (r.has_digest) r.digest = c.dig->value();
  r.tail_start = std::max({c.out.base(), c.snap_out_seq, r.digest_end});
  if (with_tail && r.tail_start < c.out.end()) r.tail = Slice(make_block(c.out.copy(r.tail_start, c.out.end())));
  return r;
}

Result<std::vector<Slice>> ServerEngine::encode_export(const Conn& c, const Export& e) const {
  wire::StatePieces p;
  if (!e.st.snapshot_elided) p.snapshot = c.snapshot.span();
  for (const Slice& s : e.out_log) p.out_log.push_back(s.span());
  for (const Slice& s : e.in_log) p.in_log.push_back(s.span());
  for (const Slice& s : e.out_tail) p.out_tail.push_back(s.span());
  auto around = wire::encode_state_around(e.st, p, cfg_.limits.snapshot_bytes_max);
  if (!around) return around.error();
  std::vector<Slice> pieces;
  pieces.emplace_back(make_block(std::move(around->before)));
  if (!p.snapshot.empty()) pieces.push_back(c.snapshot);  // shared, never changed in place
  pieces.emplace_back(make_block(std::move(around->after)));
  return pieces;
}

wire::ConnState ServerEngine::export_state(const Conn& c, bool elide_snapshot, uint64_t out_from) const {
  Export e = export_views(c, elide_snapshot, out_from);
  wire::ConnState& s = e.st;
  if (!elide_snapshot) s.snapshot_shared = c.snapshot;  // shared, never changed in place: no copy
  s.out_log = join(e.out_log);
  s.in_log = join(e.in_log);
  s.out_tail = join(e.out_tail);
  return std::move(e.st);
}

ServerEngine::Export ServerEngine::export_views(const Conn& c, bool elide_snapshot, uint64_t out_from) const {
  Export e;
  wire::ConnState& s = e.st;
  s.conn_id = c.id;
  s.epoch = c.epoch;
  s.migrations = c.counter;
  s.issuer_id = c.issuer;
  s.snap_id = c.snap_id;
  s.snap_in_seq = c.snap_in_seq;
  s.snap_out_seq = c.snap_out_seq;
  s.snapshot_elided = elide_snapshot;
  if (c.out.base() >= c.snap_out_seq) {
    s.out_log_start = c.snap_out_seq;
  } else if (out_from > c.out.base()) {
    s.out_log_tail = true;
    s.out_log_start = std::min(out_from, c.snap_out_seq);
    if (s.out_log_start < c.snap_out_seq) c.out.view(s.out_log_start, std::min(c.snap_out_seq, c.out.end()), e.out_log);
  } else {
    s.out_log_start = c.out.base();
    c.out.view(c.out.base(), std::min(c.snap_out_seq, c.out.end()), e.out_log);
  }
  c.in_log.view(0, c.in_log.size(), e.in_log);
  s.client_fin = c.client_fin;
  // Output after the snapshot (state version 2): the owner's live record (its tail a view of
  // the log), or the one a frozen or replica copy holds for this snapshot.
  OutRecord r;
  if (c.role == Role::owner) {
    r = owner_record(c, false);
    if (r.tail_start < c.out.end()) c.out.view(r.tail_start, c.out.end(), e.out_tail);
  } else if (c.has_rec && c.rec.from == c.snap_out_seq) {
    r = c.rec;
    if (!r.tail.empty()) e.out_tail.push_back(r.tail);
  } else {
    r.from = r.digest_end = r.tail_start = c.snap_out_seq;
  }
  s.out_digest = r.has_digest;
  s.digest_end = r.digest_end;
  s.digest = r.digest;
  s.tail_start = r.tail_start;
  return e;
}

// The client holds output below client_rcv_nxt: send from there. If that is beyond what the
// application has produced (again, after an import), the replay up to it is suppressed.
Status ServerEngine::resend_from(Conn& c, uint64_t client_rcv_nxt) {
  if (client_rcv_nxt > c.out.end()) {
    digest_acked(c, c.out.end());  // the log's bytes leave it
    c.out.reset(client_rcv_nxt);
    c.replay_out_until = std::max(c.replay_out_until, client_rcv_nxt);
    return {};
  }
  return c.out.rewind(client_rcv_nxt);
}

// Where the client's output resumes when s is installed for a client that has output below
// client_rcv_nxt. The old owner may have seen the client acknowledge more than the MIGRATE said
// it had (the client keeps reading the old subflow until ACCEPT): it has those bytes too. Output
// before tail_start beyond the snapshot was acknowledged to the old owner (it left its log), so
// the client has it. (When the client had not acknowledged the snapshot's output,
// out_log_start is below snap_out_seq and tail_start is snap_out_seq.)
static uint64_t resume_point(const wire::ConnState& s, uint64_t client_rcv_nxt) {
  client_rcv_nxt = std::max(client_rcv_nxt, s.out_log_start);
  if (s.out_log_start == s.snap_out_seq) client_rcv_nxt = std::max(client_rcv_nxt, s.tail_start);
  return client_rcv_nxt;
}

// install_state's dry run: what it would put in the send log, against this member's
// send_log_bytes_max, and whether that log reaches the snapshot's output position (the
// application's replay writes from there). Touches nothing, so a claim is refused on it
// before any local state changes.
Status ServerEngine::check_install(const wire::ConnState& s, uint64_t client_rcv_nxt) const {
  uint64_t start = resume_point(s, client_rcv_nxt);
  uint64_t end = start;
  if (start < s.snap_out_seq) {
    uint64_t from = start - s.out_log_start;
    if (from < s.out_log.size()) end += s.out_log.size() - from;
  }
  uint64_t tail_end = s.tail_start + s.out_tail.size();
  if (end >= s.tail_start && end < tail_end) end = tail_end;
  if (end - start > cfg_.limits.send_log_bytes_max) return Error::send_log_full;
  if (end < s.snap_out_seq) return Error::state_gap;  // output nobody holds any more
  return {};
}

// Make c continue from s for a client that already has output below client_rcv_nxt. Fails
// only where check_install fails, and then before c is modified.
Status ServerEngine::install_state(Conn& c, wire::ConnState&& s, uint64_t client_rcv_nxt) {
  if (Status fits = check_install(s, client_rcv_nxt); !fits) return fits;
  client_rcv_nxt = resume_point(s, client_rcv_nxt);
  OutRecord rec;
  rec.from = s.snap_out_seq;
  rec.has_digest = s.out_digest;
  rec.digest_end = s.out_digest ? s.digest_end : s.snap_out_seq;
  rec.digest = s.digest;
  rec.tail_start = s.tail_start;
  if (!s.out_tail.empty()) rec.tail = Slice(make_block(std::move(s.out_tail)));
  MTCP_ASSERT(s.epoch >= c.epoch, "install: epoch went back");
  c.epoch = s.epoch;
  c.counter = std::max(c.counter, s.migrations);
  c.issuer = s.issuer_id;
  c.snap_id = s.snap_id;
  c.snap_in_seq = s.snap_in_seq;
  c.snap_out_seq = s.snap_out_seq;
  if (!s.snapshot_elided) {
    c.snapshot = s.snapshot_shared.empty() ? Slice(make_block(std::move(s.snapshot))) : std::move(s.snapshot_shared);
  }
  c.in_log.clear();
  if (!s.in_log.empty()) c.in_log.push(Slice(make_block(std::move(s.in_log))));
  c.app_in = c.snap_in_seq;
  c.replay_until = c.in_end();
  c.client_fin = s.client_fin;
  c.client_fin_at = s.client_fin ? c.in_end() : 0;
  // The client has everything below client_rcv_nxt: resend from there. Bytes between it and
  // the snapshot come from the transferred output log; bytes after the snapshot are produced
  // again by the application's replay and the part the client has is suppressed.
  c.out.reset(client_rcv_nxt);
  if (client_rcv_nxt < c.snap_out_seq) {
    size_t from = static_cast<size_t>(client_rcv_nxt - s.out_log_start);
    if (from < s.out_log.size()) {
      Bytes tail(s.out_log.begin() + static_cast<std::ptrdiff_t>(from), s.out_log.end());
      Status appended = c.out.append(Slice(make_block(std::move(tail))));
      MTCP_ASSERT(appended.ok(), "install: output log beyond send_log_bytes_max after check_install");
    }
  }
  // Then the old owner's output after the snapshot that the client may lack: sent again now,
  // and the replay that regenerates it is checked against it.
  if (c.out.end() >= rec.tail_start && c.out.end() < rec.end()) {
    uint64_t skip = c.out.end() - rec.tail_start;
    Status appended = c.out.append(rec.tail.sub(static_cast<size_t>(skip), static_cast<size_t>(rec.tail.len - skip)));
    MTCP_ASSERT(appended.ok(), "install: output tail beyond send_log_bytes_max after check_install");
  }
  c.rec = std::move(rec);
  c.has_rec = true;
  c.chk.reset();
  c.chk_ok = false;
  c.replay_out_until = c.out.end();
  c.app_out = c.snap_out_seq;
  if (c.verify) restart_digest(c);
  c.acked_in = 0;
  c.ack_owed_ms = kNever;
  c.app_closed = false;
  c.fin_sent = false;
  c.fin_acked = false;
  check_conn(c);
  return {};
}

void ServerEngine::on_release(ServerId from, const wire::Release& m, TimeMs now) {
  (void)now;
  Conn* c = find(m.conn_id);
  if (!c || c->role == Role::owner) return;
  // Lazy: our successor installed the state, the frozen copy can go. Eager: the owner closed.
  if (c->role == Role::frozen && c->handed_to != from) return;
  if (c->role == Role::replica && m.epoch < c->epoch) return;
  free_conn(m.conn_id, Error::ok);
}

void ServerEngine::note_handed_request(Conn& c, uint32_t request_id) {
  if (std::find(c.handed_requests.begin(), c.handed_requests.end(), request_id) != c.handed_requests.end()) return;
  if (c.handed_requests.size() >= kHandedRequestsMax) c.handed_untracked = true;
  else c.handed_requests.push_back(request_id);
}

// Lazy: the member we froze for says its claim timed out and it will never install our GRANT.
// Once it has said so for every GRANT we sent it for this hand-off (the first, which froze us,
// and any repeated one, such as for an adopt_only claim), nobody serves the connection: serve
// it again ourselves, at a new epoch, from the frozen copy (a fresh application instance
// imports the snapshot; docs/PROTOCOL.md §5.2 "Abandoned claims").
void ServerEngine::on_abandon(ServerId from, const wire::Abandon& m, TimeMs now) {
  Conn* c = find(m.conn_id);
  if (!c || cfg_.limits.transfer_mode != TransferMode::lazy) return;
  c->abandoned_counter = std::max(c->abandoned_counter, m.counter);
  if (c->role != Role::frozen || c->handed_to != from) return;
  auto& reqs = c->handed_requests;
  auto it = std::find(reqs.begin(), reqs.end(), m.request_id);
  if (it == reqs.end()) return;
  reqs.erase(it);
  // Another GRANT of ours to that member may still be installed: stay frozen until all are
  // abandoned (messages overtake one another; its CLAIMs can arrive in any order).
  if (!reqs.empty() || c->handed_untracked) return;
  ++counters_.handoffs_cancelled;
  PendingClaim p;
  p.conn = c->id;
  p.mode = TransferMode::lazy;
  p.epoch = c->handed_epoch + 1;
  take_over(std::move(p), now);
}

}  // namespace mtcp::core
