// Server engine: construction, the invariant checks, freeing a connection, timers and the
// deadline index, what changed (take_touched). The rest of ServerEngine, by concern:
//   server_subflows.cc  subflow lifecycle, client frames, attach/detach, poll_transmit
//   server_app.cc       the application calls (conn_*) and replay verification of its output
//   transfer.cc         ownership claims, votes, hand-off, state export and install
//   replication.cc      eager replication (REPL_STATE / REPL_LOG / REPL_ACK)
#include <algorithm>

#include "core/server.h"

namespace mtcp::core {

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

bool ServerEngine::member_full(TimeMs now) {
  if (!buffered_counted_ || now >= buffered_at_ + kBufferedRecountMs) {
    size_t total = 0;
    for (const auto& [id, c] : conns_) {
      total += c.in_log.size() + c.parked_bytes + c.out.size() + c.snapshot.size() + c.rec.tail.len;
    }
    for (const auto& [id, s] : subs_) total += s.in.size();
    buffered_ = total;
    buffered_at_ = now;
    buffered_counted_ = true;
  }
  if (buffered_ < cfg_.limits.member_buffered_bytes_max) return false;
  ++counters_.limit_refusals;
  return true;
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

void ServerEngine::maybe_free(Conn& c) {
  if (c.role != Role::owner) return;
  // ... and the client has our ACK of all its input (it must not need to migrate for it) and our
  // CLOSE: it said so by acknowledging the CLOSE. Freeing on sending them lost the connection
  // when those last frames were lost on the way (a cut subflow): the client recovered through
  // members that had released it.
  bool done = c.app_closed && c.fin_sent && c.fin_acked && c.out.base() == c.out.end() && c.client_fin &&
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
    actions_.push_back({ServerAction::Kind::plain_tcp, id, 0, std::move(head), nullptr});
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
  std::erase_if(abandoned_, [&](const auto& kv) { return now >= kv.second.until_ms; });
  for (auto& [rid, a] : abandoned_) {
    if (a.resends >= kAbandonResends || now < a.resend_ms) continue;
    ++a.resends;
    a.resend_ms = now + (cfg_.limits.claim_timeout_ms << a.resends);
    send_control(a.asked, wire::Abandon{a.conn, rid, a.counter});
  }
  MTCP_ASSERT(abandoned_.size() <= kAbandonedClaimsMax, "server: abandoned-claims table beyond kAbandonedClaimsMax");
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
    // A held-back ACK falls due (ack_wanted). Only until then: once due it waits for the
    // subflow (gone, or not writable), and a deadline in the past would fire without end.
    if (c.ack_owed_ms != kNever && now_ms_ < c.ack_owed_ms + cfg_.limits.ack_delay_ms)
      t = std::min(t, c.ack_owed_ms + cfg_.limits.ack_delay_ms);
    if (cfg_.limits.transfer_mode == TransferMode::eager) {
      for (const auto& [pid, p] : c.peers) {
        if (p.acked < wire::ReplicaPos{c.epoch, c.snap_id, c.in_end()}) {
          // A state in flight suppresses the retry until it is given up on (replicate()).
          bool waiting = p.sent_epoch == c.epoch && !p.unconfirmed.empty() && p.unconfirmed.back().epoch == c.epoch;
          t = std::min(t, waiting ? std::max(state_wait_until(p), p.last_send_ms + cfg_.limits.replication_retry_ms)
                                  : p.last_send_ms + cfg_.limits.replication_retry_ms);
        }
        t = std::min(t, p.last_send_ms + cfg_.limits.replica_timeout_ms / 2);
      }
      t = std::min(t, c.repl_due_ms);
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

TimeMs ServerEngine::abandon_resend_deadline() const {
  TimeMs t = kNever;
  for (const auto& [rid, a] : abandoned_) {
    if (a.resends < kAbandonResends) t = std::min(t, a.resend_ms);
  }
  return t;
}

TimeMs ServerEngine::next_deadline() const {
  refresh_deadlines();
  TimeMs t = kNever;
  if (!conn_dl_.empty()) t = std::min(t, conn_dl_.begin()->first);
  if (!sub_dl_.empty()) t = std::min(t, sub_dl_.begin()->first);
  for (const auto& [rid, p] : claims_) t = std::min(t, p.deadline_ms);  // at most pending_migrations_max
  t = std::min(t, abandon_resend_deadline());  // at most kAbandonedClaimsMax
  return t;
}

TimeMs ServerEngine::next_deadline_scan() const {
  TimeMs t = kNever;
  for (const auto& [id, s] : subs_) t = std::min(t, sub_deadline(s));
  for (const auto& [rid, p] : claims_) t = std::min(t, p.deadline_ms);
  for (const auto& [id, c] : conns_) t = std::min(t, conn_deadline(c));
  t = std::min(t, abandon_resend_deadline());
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
