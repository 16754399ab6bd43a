// Server engine: the application contract (docs/ARCHITECTURE.md "application contract"): the
// conn_* calls that read input, write output, snapshot, close and hint, introspection
// (conn_info, owned_connections), and replay verification of the application's output
// (docs/PROTOCOL.md §4.3).
#include <algorithm>
#include <cstring>

#include "core/server.h"

namespace mtcp::core {

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
          actions_.push_back({ServerAction::Kind::close_subflow, sub, 0, {}, nullptr});
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
  c->snapshot = Slice(make_block(std::move(snapshot)));
  ++c->snap_id;
  if (c->verify) restart_digest(*c);
  check_conn(*c);
  // A new snap_id: the next push sends REPL_STATE (with the input since it) to every alternate.
  if (cfg_.limits.transfer_mode == TransferMode::eager) replicate_soon(*c, now_ms_);
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
  return SnapshotView{c->snap_id, c->snap_in_seq, c->snap_out_seq, c->snapshot.span()};
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

}  // namespace mtcp::core
