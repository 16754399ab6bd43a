// Server engine: eager replication (docs/PROTOCOL.md §5.3 "Replication"). The owner pushes
// REPL_STATE on every snapshot and REPL_LOG for new input to every other member; replicas
// install or extend their copy and answer REPL_ACK. Claims and votes are in transfer.cc.
#include <algorithm>

#include "core/server.h"

namespace mtcp::core {

namespace {
constexpr size_t kReplLogChunkBytes = 1u << 20;  // one REPL_LOG message carries at most this
}

// ---- eager replication --------------------------------------------------------------------

void ServerEngine::replicate_soon(Conn& c, TimeMs now) {
  if (cfg_.limits.transfer_mode != TransferMode::eager || c.role != Role::owner) return;
  uint64_t waiting = c.in_end() > c.repl_base_in ? c.in_end() - c.repl_base_in : 0;
  if (cfg_.limits.replication_batch_ms == 0 || waiting >= cfg_.limits.replication_batch_bytes) {
    replicate(c, now, false);
    return;
  }
  if (c.repl_due_ms == kNever) {
    c.repl_due_ms = now + cfg_.limits.replication_batch_ms;
    touch_conn(c.id);  // the deadline index learns the push's time
  }
}

bool ServerEngine::state_in_flight(const Conn& c, const Peer& p, TimeMs now) const {
  return p.sent_epoch == c.epoch && !p.unconfirmed.empty() && p.unconfirmed.back().epoch == c.epoch &&
         now < state_wait_until(p);
}

TimeMs ServerEngine::state_wait_until(const Peer& p) const {
  return p.last_state_ms + kStateWaitRetries * cfg_.limits.replication_retry_ms;
}

void ServerEngine::replicate(Conn& c, TimeMs now, bool force_state) {
  if (cfg_.limits.transfer_mode != TransferMode::eager || c.role != Role::owner) return;
  c.repl_due_ms = kNever;
  c.repl_base_in = c.in_end();
  touch_conn(c.id);
  for (const auto& mem : cfg_.pool) {
    if (mem.server_id == cfg_.self) continue;
    Peer& p = c.peers[mem.server_id];
    bool stale_ack = p.acked < wire::ReplicaPos{c.epoch, c.snap_id, c.in_end()};
    // An idle connection still tells its alternates it is alive, so their copies do not
    // expire (replica_timeout_ms) while the owner serves.
    bool keepalive = now >= p.last_send_ms + cfg_.limits.replica_timeout_ms / 2;
    bool retry = (stale_ack && now >= p.last_send_ms + cfg_.limits.replication_retry_ms) || keepalive;
    if (force_state || p.sent_epoch != c.epoch || p.sent_snap != c.snap_id) {
      // One state in flight per alternate: a newer snapshot waits for the confirmation of the
      // last state sent (on_repl_ack sends it then, with only the output after that state),
      // or for kStateWaitRetries x replication_retry_ms. Meanwhile new input still goes as REPL_LOG, if the
      // alternate's log reaches the current snapshot (the owner no longer holds the input
      // before it). Sending every snapshot at once made a slow alternate receive state after
      // state, each with the whole unacknowledged output and input logs, fall further behind,
      // and confirm none in time to shorten the next: under bulk echo about 30 to 58 bytes of
      // replication per byte of input.
      if (force_state || !state_in_flight(c, p, now)) {
        send_repl_state(c, mem.server_id, p, now);
        continue;
      }
      if (p.sent_in_end < c.snap_in_seq) continue;  // increments would leave a gap: wait
      // The alternate's input log runs from the state in flight: at most input_log_bytes_max.
      if (c.in_end() > p.unconfirmed.back().snap_in + cfg_.limits.input_log_bytes_max) continue;
    }
    uint64_t from = p.sent_in_end;
    // A state in flight is not given up on after replication_retry_ms: a busy alternate that
    // confirms late must not receive the whole state again and again (the control channel
    // is a TCP connection; messages are lost only with it).
    if (retry && state_in_flight(c, p, now)) retry = false;
    if (retry) {
      // Go back to what the alternate confirmed (messages may have been lost).
      if (p.acked.epoch != c.epoch || p.acked.snap_id != c.snap_id) {
        send_repl_state(c, mem.server_id, p, now);
        continue;
      }
      from = p.acked.in_end;
    }
    from = std::max(from, c.snap_in_seq);
    uint64_t end = c.in_end();
    if (from >= end && !retry) continue;
    if (from >= end && retry) {
      // Nothing new but no ack yet: resend the tail so the alternate answers.
      p.last_send_ms = now;
      send_control(mem.server_id, wire::ReplLog{c.id, c.epoch, c.snap_id, end, c.out.base(), {}});
      continue;
    }
    // The window: no more than replication_window_bytes of input the alternate has not
    // confirmed. The rest waits for its REPL_ACK (on_repl_ack resumes) or for the retry.
    uint64_t window_end = repl_window_end(c, p);
    bool full = end > window_end;
    if (full && !p.window_full) ++counters_.replication_window_waits;
    p.window_full = full;
    if (from >= window_end) continue;
    send_repl_input(c, mem.server_id, p, from, std::min(end, window_end), now);
  }
}

uint64_t ServerEngine::repl_window_end(const Conn& c, const Peer& p) const {
  uint64_t have = c.snap_in_seq;
  if (p.acked.epoch == c.epoch) {
    have = p.acked.in_end;
  } else {
    for (const auto& s : p.unconfirmed) {
      if (s.epoch == c.epoch) {
        have = s.snap_in;
        break;
      }
    }
  }
  return have + cfg_.limits.replication_window_bytes;
}

void ServerEngine::send_repl_input(Conn& c, ServerId to, Peer& p, uint64_t from, uint64_t end, TimeMs now) {
  MTCP_ASSERT(from >= c.snap_in_seq, "send_repl_input: input before the snapshot is not logged");
  MTCP_ASSERT(end <= c.in_end(), "send_repl_input: beyond the input received");
  while (from < end) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(end - from, kReplLogChunkBytes));
    wire::ReplLog m{c.id, c.epoch, c.snap_id, from, c.out.base(),
                    c.in_log.flatten(static_cast<size_t>(from - c.snap_in_seq), n)};
    counters_.replication_bytes_sent += n;
    ++counters_.replication_msgs_sent;
    send_control(to, std::move(m));
    from += n;
  }
  p.sent_in_end = std::max(p.sent_in_end, end);
  p.last_send_ms = now;
}

void ServerEngine::send_repl_state(Conn& c, ServerId to, Peer& p, TimeMs now) {
  // Only the output the alternate does not hold yet (it confirmed a state of this epoch):
  // resending the whole unacknowledged output log with every snapshot made bulk output cost
  // up to send_log_bytes_max per snapshot and per alternate.
  uint64_t out_from = p.out_have_epoch == c.epoch ? p.out_have : 0;
  Export ex = export_views(c, false, out_from);
  wire::ConnState& st = ex.st;
  // Nor the input it already holds: it confirmed this epoch's log past the new snapshot. Not
  // once the client closed: the state's input must then end exactly at the client's CLOSE
  // (client_fin is taken to be at the state's input end), and the alternate's own log may still
  // lack increments in flight.
  bool keep_in = !c.client_fin && out_from != 0 && p.acked.epoch == c.epoch && p.acked.in_end >= c.snap_in_seq;
  if (keep_in) {
    st.in_log_kept = true;
    ex.in_log.clear();
  }
  auto pieces = encode_export(c, ex);
  if (!pieces) {
    ++counters_.limit_refusals;
    return;
  }
  for (const Slice& piece : *pieces) counters_.replication_bytes_sent += piece.size();
  ++counters_.replication_msgs_sent;
  send_control_state(to, wire::ReplState{c.id, c.epoch, {}}, std::move(pieces.value()));
  p.sent_epoch = c.epoch;
  p.sent_snap = c.snap_id;
  p.sent_snap_out = c.snap_out_seq;
  if (p.unconfirmed.size() >= kUnconfirmedStatesMax) p.unconfirmed.pop_front();
  p.unconfirmed.push_back({c.epoch, c.snap_id, c.snap_out_seq, c.snap_in_seq});
  if (!keep_in) p.sent_in_end = c.in_end();  // else the increments already sent stand
  p.last_send_ms = now;
  p.last_state_ms = now;
}

bool ServerEngine::fill_out_prefix(const Conn& c, wire::ConnState& st) const {
  MTCP_ASSERT(st.out_log_tail, "fill_out_prefix: the state holds its whole output log");
  if (c.epoch != st.epoch || c.out.base() > st.out_log_start || c.out.end() < st.out_log_start) return false;
  // The client holds everything below the owner's output end - send_log_bytes_max (the owner
  // never has more than that unacknowledged): older bytes of our copy are not needed and must
  // not make the log overflow. The end is the tail's, past the snapshot: bounding by the
  // snapshot position alone kept up to a whole log before it, and the tail on top overflowed
  // the copy, which was then dropped (a replica lost under bulk output, seen in the simulator
  // with the owner crashing next).
  uint64_t out_end = std::max<uint64_t>(st.snap_out_seq, st.tail_start + st.out_tail.size());
  uint64_t floor = out_end > cfg_.limits.send_log_bytes_max ? out_end - cfg_.limits.send_log_bytes_max : 0;
  uint64_t keep = std::min(std::max(c.out.base(), floor), st.out_log_start);
  Bytes whole = c.out.copy(keep, st.out_log_start);
  whole.insert(whole.end(), st.out_log.begin(), st.out_log.end());
  st.out_log = std::move(whole);
  st.out_log_start = keep;
  st.out_log_tail = false;
  return true;
}

void ServerEngine::on_repl_state(ServerId from, wire::ReplState&& m, TimeMs now) {
  auto st = wire::decode_state(make_block(std::move(m.state)), cfg_.limits.snapshot_bytes_max);  // a large snapshot stays where it arrived
  if (!st || st->conn_id != m.conn_id || st->epoch != m.epoch || st->snapshot_elided) {
    ++counters_.control_malformed;
    return;
  }
  Conn* c = find(m.conn_id);
  // Accept pushes from the owner of the newest epoch pushed so far: once a new owner has
  // pushed, a fenced owner's pushes are ignored (I4). Votes do not block pushes: a claim that
  // lost must not starve the owner that is still serving.
  bool owner_here = c && c->role == Role::owner && c->epoch >= m.epoch;
  if ((c && m.epoch < c->epoch) || owner_here) {
    ++counters_.stale_messages;
    return;
  }
  if (!c) {
    if (member_full(now)) return;  // counted there
    if (conns_.size() >= cfg_.limits.connections_max) {
      ++counters_.limit_refusals;
      return;
    }
    auto [it, ok] = conns_.emplace(m.conn_id, Conn(cfg_.limits.send_log_bytes_max));
    MTCP_ASSERT(conns_.size() <= cfg_.limits.connections_max, "server: connection table beyond connections_max");
    touch_conn(m.conn_id);
    c = &it->second;
    c->id = m.conn_id;
    c->role = Role::replica;
  }
  if (c->role == Role::owner) {
    // A newer epoch owned elsewhere: we were fenced without hearing the claim.
    detach(*c);
    emit({ServerEvent::Kind::fenced, c->id, Error::ok});
  }
  if (st->in_log_kept) {
    // Our own input log from the new snapshot on stands in for the state's.
    bool have = c->role == Role::replica && c->epoch == st->epoch && c->snap_in_seq <= st->snap_in_seq &&
                c->in_end() >= st->snap_in_seq;
    // A closed client's state must carry its input whole (see send_repl_state).
    if (!have || st->client_fin) {
      send_control(from, wire::ReplAck{m.conn_id, m.epoch, {}, true});
      return;
    }
    size_t at = static_cast<size_t>(st->snap_in_seq - c->snap_in_seq);
    st->in_log = c->in_log.flatten(at, c->in_log.size() - at);
    st->in_log_kept = false;
  }
  // Only the output after the state we confirmed: without our copy of the part before (no copy
  // of this epoch, or a gap), ask for the whole state.
  if (st->out_log_tail && (c->role != Role::replica || !fill_out_prefix(*c, *st))) {
    send_control(from, wire::ReplAck{m.conn_id, m.epoch, {}, true});
    return;
  }
  c->role = Role::replica;
  c->handed_to = from;
  c->handed_epoch = m.epoch;
  c->peers.clear();
  wire::ReplicaPos mine = c->pos();
  wire::ReplicaPos theirs{st->epoch, st->snap_id, st->in_end()};
  if (theirs >= mine || c->epoch < st->epoch) {
    uint64_t keep_from = st->out_log_start;
    if (!install_state(*c, std::move(st.value()), keep_from)) {
      // Our copy cannot hold it: keep nothing rather than a copy with a hole, ask for all.
      free_conn(m.conn_id, Error::ok);
      send_control(from, wire::ReplAck{m.conn_id, m.epoch, {}, true});
      return;
    }
  }
  c->news_ms = now;
  check_conn(*c);
  send_control(from, wire::ReplAck{c->id, c->epoch, c->pos(), false});
}

void ServerEngine::on_repl_log(ServerId from, wire::ReplLog&& m, TimeMs now) {
  Conn* c = find(m.conn_id);
  if (!c || c->role == Role::owner || m.epoch < c->epoch) {
    if (!c || c->role != Role::owner) send_control(from, wire::ReplAck{m.conn_id, m.epoch, {}, true});
    ++counters_.stale_messages;
    return;
  }
  // Input positions are absolute within an epoch: an increment sent before (or after) the
  // snapshot we hold still extends our log if it starts at or before its end. Only an unknown
  // epoch or a gap needs the whole state. (Asking for it on a mere snapshot mismatch made every
  // snapshot under bulk input cost a full state per alternate: the increments in flight when
  // the new REPL_STATE arrived all asked again.)
  if (m.epoch > c->epoch || m.start > c->in_end()) {
    send_control(from, wire::ReplAck{c->id, c->epoch, c->pos(), true});
    return;
  }
  uint64_t end = c->in_end();
  uint64_t skip = end - m.start;
  if (skip < m.bytes.size()) {
    Bytes tail(m.bytes.begin() + static_cast<std::ptrdiff_t>(skip), m.bytes.end());
    c->in_log.push(Slice(make_block(std::move(tail))));
  }
  // The client acknowledged up to out_acked: drop that much of our copy (all of it if the
  // client is past the snapshot), so the copy tracks what a takeover may still need.
  if (m.out_acked > c->out.base()) (void)c->out.ack(std::min(m.out_acked, c->out.end()));
  c->news_ms = now;
  check_conn(*c);
  send_control(from, wire::ReplAck{c->id, c->epoch, c->pos(), false});
}

void ServerEngine::on_repl_ack(ServerId from, const wire::ReplAck& m, TimeMs now) {
  Conn* c = find(m.conn_id);
  if (!c || c->role != Role::owner || m.epoch > c->epoch) {
    ++counters_.stale_messages;
    return;
  }
  Peer& p = c->peers[from];
  if (m.need_state) {
    p.out_have = 0;  // it holds nothing we can build on: the whole state
    p.out_have_epoch = 0;
    p.unconfirmed.clear();
    send_repl_state(*c, from, p, now);
    return;
  }
  if (m.epoch != c->epoch) return;
  if (p.acked < m.pos) p.acked = m.pos;
  // It installed a state we sent (the last one or an earlier one still unconfirmed): its
  // output log reaches that state's snapshot. States older than it are confirmed with it.
  while (!p.unconfirmed.empty() && (p.unconfirmed.front().epoch < m.pos.epoch ||
                                    (p.unconfirmed.front().epoch == m.pos.epoch && p.unconfirmed.front().snap_id <= m.pos.snap_id))) {
    Peer::Sent s = p.unconfirmed.front();
    p.unconfirmed.pop_front();
    if (s.epoch == c->epoch && s.snap_id == m.pos.snap_id && s.snap_out >= p.out_have) {
      p.out_have = s.snap_out;
      p.out_have_epoch = c->epoch;
    }
  }
  // A newer snapshot waited for this confirmation (one state in flight, replicate()), or input
  // for room in the window.
  if ((p.unconfirmed.empty() && p.sent_snap != c->snap_id) || (p.window_full && repl_window_end(*c, p) > p.sent_in_end))
    replicate(*c, now, false);
  note_ack_owed(*c);  // with ack_after_replication the acknowledgeable input may have grown
}

}  // namespace mtcp::core
