// The bank app: one instance per M-TCP connection, with its own libpq connection (and a second
// one for the reply journal). docs/dbfrontend.md "Design and its argument" has the whole case.
//
// Replies are deterministic between snapshots (docs/API.md rule 2) because
//   - a request outside an interactive transaction is answered by bank_apply(), which returns
//     the reply stored with its (connection, seq) when it was committed before, so a replayed
//     request gets the same bytes and is never applied twice;
//   - BEGIN, ABORT, an empty COMMIT and every error found before the database are computed
//     from the request and the app's own state;
//   - a snapshot follows every reply at a transaction boundary (with the reply bytes the
//     connection has not taken yet), inside a transaction only every kTxSnapshotInputBytes of
//     input. A new owner replays an open transaction's operations (from the input log, or
//     the snapshot's transaction log) on a new database transaction and compares with the
//     replies the client has (journaled); if the database answers differently the transaction
//     is doomed and the client gets an explicit "aborted by migration" error;
//   - every reply inside a transaction that the database decided is journaled before it is
//     sent, and a COMMIT's outcome (OK or ABORTED) is stored: a takeover after a crash, whose
//     snapshot may be older than what the client received, answers with those replies.
#include "bank_service.h"

#include <asio/steady_timer.hpp>
#include <optional>
#include <random>
#include <vector>

#include "bank_protocol.h"
#include "bank_schema.h"
#include "bank_snapshot.h"
#include "common/bytes.h"
#include "pg_async.h"
#include "services/line_buffer.h"
#include "services/pending_output.h"

namespace mtcp::bank {
namespace {

constexpr uint64_t kTxSnapshotInputBytes = 4096;  // input inside a transaction between snapshots

enum class Wait { none, delay, connect, claim, apply, settle_error, lookup, begin, reexec, op, op_begun, commit, rollback };

struct Job {
  Request rq;
  bool claim_only = false;   // fence the former owner at once after a migration; no reply
  bool looked_up = false;    // COMMIT: no stored reply was found for its seq
  bool in_doubt = false;     // a statement that could have committed was lost with the link
  bool rollback_then_retry = false;
  bool rollback_then_step = false;  // COMMIT answered before: roll back, then look its reply up
  bool delayed = false;  // test_commit_delay_ms waited
  std::optional<std::string> final_reply;
  std::string op_reply;     // the database's answer to an operation inside the transaction
  bool journal_connecting = false;
  bool ends_tx = false;     // the journaled reply ends the transaction (a COMMIT's ABORTED)
  bool settle = false;      // journal into bank_reply (a COMMIT's outcome), not bank_txreply  // test_reply_delay_ms: the reply, sent after the wait
  std::optional<std::string> reply_after_rollback;
  size_t reexec_i = 0;
  uint64_t retries = 0, reconnects = 0;
};

// A database message as one reply line (a reply is one line of the protocol).
std::string one_line(std::string m) {
  for (char& ch : m) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  while (!m.empty() && m.back() == ' ') m.pop_back();
  return m;
}

bool retryable(const PgResult& r) { return r.sqlstate == "40001" || r.sqlstate == "40P01"; }

class BankApp final : public sdk::ConnApp {
 public:
  explicit BankApp(const BankOptions& o) : o_(o) {}

  bool on_open(sdk::Conn& c, const sdk::Import& imp, std::string& why) override {
    waker_ = c.waker();
    // A session row per connection, keyed by the M-TCP connection id (random, 64 bits). A
    // plain TCP client's id is only a member-local counter and it never migrates: it gets a
    // random negative key instead, so two plain clients never share stored replies.
    conn_ = c.plain() ? -static_cast<int64_t>(std::random_device{}() | (uint64_t{std::random_device{}()} << 31) | 1)
                      : static_cast<int64_t>(c.id());
    if (imp.snap_id != 0 && !load(imp, why)) return false;
    if (in_tx_) tx_lost_why_ = "aborted by migration";
    if (imp.migrated) {  // fence the former owner now, before any request is replayed
      job_.emplace();
      job_->claim_only = true;
      waker_.wake();  // on_wake runs the claim even if no input comes
    }
    return true;
  }
  void on_readable(sdk::Conn& c) override { pump(c); }
  void on_writable(sdk::Conn& c) override { pump(c); }
  void on_wake(sdk::Conn& c) override { pump(c); }
  void on_fenced(Error) override { stop(); }
  void on_closed(Error) override { stop(); }

 private:
  // ---- the event loop side -------------------------------------------------------------
  void pump(sdk::Conn& c) {
    if (stopped_) return;
    c_ = &c;
    if (job_ && (!pg_ || pg_->state() == PgAsync::State::down || pg_->state() == PgAsync::State::idle) && wait_ == Wait::none && !jwait_) step();
    if (wait_ == Wait::delay && delay_ && delay_->expiry() <= asio::steady_timer::clock_type::now()) {
      wait_ = Wait::none;
      delay_.reset();
      if (job_) step();
    }
    while (!stopped_ && pj_ && jwait_ && job_) {
      std::optional<PgResult> r = pj_->poll();
      if (!r) break;
      jwait_ = false;
      on_journal(*r);
    }
    while (!stopped_ && pg_ && wait_ != Wait::none && wait_ != Wait::delay) {
      std::optional<PgResult> r = pg_->poll();
      if (!r) break;
      Wait w = std::exchange(wait_, Wait::none);
      on_result(w, *r);
    }
    while (!stopped_) {
      if (!flush()) return;  // back-pressure: read nothing until the replies are taken
      if (job_) return;      // waiting for the database
      if (c.input_closed()) {
        if (!std::exchange(closed_, true)) (void)c.close();
        return;
      }
      if (lines_.has_next()) {
        next_request();
        continue;
      }
      size_t n = c.read(buf_);
      if (n == 0) return;
      lines_.feed(std::span(buf_.data(), n));
    }
  }

  bool flush() {
    size_t at = 0;
    while (at < out_.size()) {
      auto w = c_->write_copy(std::span(reinterpret_cast<const uint8_t*>(out_.data()) + at, out_.size() - at));
      if (!w) {  // moved away or ended: on_fenced/on_closed follows
        stop();
        return false;
      }
      if (*w == 0) break;
      at += *w;
    }
    out_.erase(0, at);
    return out_.empty();
  }

  void stop() {
    stopped_ = true;
    job_.reset();
    delay_.reset();
    // The journal session is recorded in no bank_session row and runs only autocommit
    // statements: idle, it goes back to the member's spares instead of ending (one backend
    // start fewer per migration of a connection that used transactions).
    if (pj_ && !jwait_ && o_.spares) o_.spares->give_back(std::move(pj_));
    pj_.reset();
    // The main session too, once released: it ends any transaction of ours, takes back the
    // isolation level the claim set, and takes its pid out of the session row if the row
    // still names it. Only then is it a spare. The next owner's bank_claim locks that row
    // before it ends the backend the row names, so it either sees the pid gone (and ends
    // nothing) or ends this backend while its release waits for the lock, before it can
    // serve anyone else (docs/dbfrontend.md "Spare sessions"). A session in the middle of a
    // statement is closed as before.
    if (pg_ && claimed_ && o_.spares && pg_->state() == PgAsync::State::idle)
      o_.spares->release(std::move(pg_), "ROLLBACK; RESET default_transaction_isolation; UPDATE bank_session SET pid = NULL, "
                                         "backend_start = NULL WHERE conn = " + std::to_string(conn_) + " AND pid = pg_backend_pid()");
    pg_.reset();  // the backend ends; an open transaction there is rolled back
  }

  // ---- requests -------------------------------------------------------------------------
  void next_request() {
    std::string line;
    svc::LineBuffer::Got got = lines_.next(line);
    if (got == svc::LineBuffer::Got::none) return;
    if (got == svc::LineBuffer::Got::too_long) return reply_raw(0, "ERR line too long (at most " + std::to_string(kLineBytesMax) + " bytes)");
    Request rq = parse_request(line);
    if (rq.seq == 0) return reply_raw(0, "ERR " + rq.error);
    if (rq.seq <= last_seq_) return reply_raw(rq.seq, "ERR sequence number must be above " + std::to_string(last_seq_));
    last_seq_ = rq.seq;
    if (!rq.error.empty()) return answer(rq.seq, "ERR " + rq.error);
    switch (rq.cmd) {
      case Cmd::begin:
        if (in_tx_) return answer(rq.seq, "ERR already in a transaction");
        in_tx_ = true;
        tx_.clear();
        doomed_.clear();
        tx_lost_why_.clear();
        return answer(rq.seq, "OK begun");
      case Cmd::commit:
        if (!in_tx_) return answer(rq.seq, "ERR no transaction");
        // An empty transaction commits without the database. Any other COMMIT, a doomed one
        // too, first looks for its stored reply: a former owner may have committed it and the
        // client may hold that reply already (a takeover after a crash replays the COMMIT).
        if (doomed_.empty() && tx_.empty()) return end_tx(rq, "OK committed");
        break;
      case Cmd::abort:
        if (!in_tx_) return answer(rq.seq, "ERR no transaction");
        return end_tx(rq, "OK aborted");
      default:
        if (in_tx_ && !doomed_.empty()) {  // journaled too: the doom came from the database
          job_.emplace();
          job_->rq = rq;
          return reply_journaled("ERR transaction " + doomed_ + ", retry (COMMIT or ABORT ends it)", false);
        }
        if (in_tx_ && tx_.size() >= kTxOpsMax) return answer(rq.seq, "ERR transaction too long (at most " + std::to_string(kTxOpsMax) + " operations)");
        break;
    }
    job_.emplace();
    job_->rq = rq;
    step();
  }

  // COMMIT of a doomed or empty transaction, ABORT: end it; roll the database side back first.
  void end_tx(const Request& rq, const std::string& body) {
    in_tx_ = false;
    tx_.clear();
    doomed_.clear();
    if (!pg_tx_live_ || !pg_ || pg_->state() != PgAsync::State::idle) {
      pg_tx_live_ = false;
      return answer(rq.seq, body);
    }
    job_.emplace();
    job_->rq = rq;
    job_->reply_after_rollback = body;
    send_simple(Wait::rollback, "ROLLBACK");
  }

  // The current job (a COMMIT) ends the transaction with `body`; a live database transaction
  // (one re-executed by this owner) is rolled back first.
  void end_tx_job(const std::string& body) {
    in_tx_ = false;
    tx_.clear();
    doomed_.clear();
    if (!pg_tx_live_) return answer(job_->rq.seq, body);
    job_->reply_after_rollback = body;
    send_simple(Wait::rollback, "ROLLBACK");
  }

  void answer(uint64_t seq, const std::string& body) { reply_raw(seq, body); }
  void reply_raw(uint64_t seq, const std::string& body) {
    out_ += std::to_string(seq) + " " + body + "\n";
    job_.reset();
    (void)flush();
    // Snapshots at transaction boundaries: inside an open transaction a new owner replays the
    // operations from the input log, and their journaled replies make the replay answer the
    // same bytes (docs/dbfrontend.md "Snapshots and determinism"). Inside one only when the
    // input since the last snapshot reaches kTxSnapshotInputBytes (a client that goes on
    // sending refused operations must not fill the input log, which only a snapshot empties).
    if (!stopped_ && (!in_tx_ || c_->input_pos() - snap_in_ >= kTxSnapshotInputBytes)) snapshot();
  }

  // ---- the database side ----------------------------------------------------------------
  std::vector<std::string> args(std::initializer_list<int64_t> v) {
    std::vector<std::string> s;
    for (int64_t x : v) s.push_back(std::to_string(x));
    return s;
  }
  int64_t epoch() const { return static_cast<int64_t>(c_->epoch()); }
  PgAsync::Notify notify() const {
    return [w = waker_] { w.wake(); };
  }

  void send(Wait w, const char* sql, std::vector<std::string> params) {
    wait_ = w;
    if (!pg_->send(sql, params)) lost_now();
  }
  void send_simple(Wait w, const std::string& sql) {
    wait_ = w;
    if (!pg_->send_simple(sql)) lost_now();
  }
  void lost_now() {
    wait_ = Wait::none;
    PgResult r;
    r.kind = PgResult::Kind::lost;
    r.message = "cannot send to the database";
    pg_->reset();
    on_lost(r);
  }

  // The next database action of the current job.
  void step() {
    Job& j = *job_;
    if (!pg_) {
      pg_ = std::make_unique<PgAsync>(*o_.io, waker_);
      pg_->set_timeout_ms(o_.db_timeout_ms);
    }
    if (pg_->state() == PgAsync::State::down) {
      if (j.reconnects++ > o_.reconnects) return unavailable("cannot reach the database");
      std::string why;
      claimed_ = false;
      if (auto s = o_.spares ? o_.spares->take(notify()) : nullptr) {  // connected already
        pg_ = std::move(s);
        return step();
      }
      wait_ = Wait::connect;
      if (!pg_->connect(o_.conninfo, why)) {
        wait_ = Wait::none;
        return unavailable(why);
      }
      return;
    }
    if (!claimed_) {
      // Default isolation SERIALIZABLE for every later statement; the claim itself runs in
      // READ COMMITTED (it must see the newest session row).
      return send_simple(Wait::claim, "SELECT bank_claim(" + std::to_string(conn_) + ", " + std::to_string(epoch()) +
                                          "); SET default_transaction_isolation TO 'serializable'");
    }
    if (j.claim_only) {
      job_.reset();
      return;
    }
    if (j.final_reply) return answer(j.rq.seq, *j.final_reply);
    const Request& rq = j.rq;
    if (!in_tx_) {
      return send(Wait::apply, "SELECT bank_apply($1, $2, $3, $4, $5, $6, $7)",
                  {std::to_string(conn_), std::to_string(epoch()), std::to_string(rq.seq), op_name(rq.cmd),
                   std::to_string(rq.a), std::to_string(rq.b), std::to_string(rq.amount)});
    }
    // A COMMIT looks up its stored reply first unless this owner's own live transaction is
    // about to commit: then bank_commit() looks (MT002) in the same round trip as the commit.
    if (rq.cmd == Cmd::commit && !j.looked_up && !pg_tx_live_) {
      return send(Wait::lookup, "SELECT reply FROM bank_reply WHERE conn = $1 AND seq = $2", args({conn_, static_cast<int64_t>(rq.seq)}));
    }
    if (!pg_tx_live_ && tx_.empty() && rq.cmd != Cmd::commit) {
      // The first operation of a transaction: BEGIN and the operation in one round trip.
      return send_simple(Wait::op_begun, "BEGIN ISOLATION LEVEL SERIALIZABLE; " + op_sql(rq));
    }
    if (!pg_tx_live_) {
      j.reexec_i = 0;
      return send_simple(Wait::begin, "BEGIN ISOLATION LEVEL SERIALIZABLE");
    }
    if (rq.cmd == Cmd::commit) {
      if (o_.test_commit_delay_ms && !j.delayed) {
        j.delayed = true;
        return arm_delay(o_.test_commit_delay_ms);
      }
      // Fence, store the reply (refused with MT002 if one is stored) and commit, in one round
      // trip: an error in bank_commit() skips the COMMIT after it.
      return send_simple(Wait::commit, "SELECT bank_commit(" + std::to_string(conn_) + "::bigint, " + std::to_string(epoch()) +
                                           "::bigint, " + std::to_string(rq.seq) + "::bigint, 'OK committed'); COMMIT");
    }
    send_op(Wait::op, rq);
  }
  // Before retrying after a serialization failure or deadlock: the first retry at once (the
  // conflicting transaction has usually committed by now, and the libpq baseline retries the
  // same way), later ones after a short random pause that grows with the attempts (1..2^k ms,
  // at most 64 ms), so that conflicting sessions do not collide again and again. The timing
  // never reaches the reply bytes.
  void backoff_then_step() {
    Job& j = *job_;
    if (j.retries <= 1) return step();
    uint64_t cap = uint64_t{1} << std::min<uint64_t>(j.retries - 1, 6);
    arm_delay(1 + rng_() % cap);
  }
  void arm_delay(uint64_t ms) {
    wait_ = Wait::delay;
    delay_ = std::make_unique<asio::steady_timer>(*o_.io, std::chrono::milliseconds(ms));
    delay_->async_wait([alive = std::weak_ptr<int>(alive_), waker = waker_](asio::error_code ec) {
      if (!ec && !alive.expired()) waker.wake();
    });
  }

  // bank_op() for rq with its arguments written as literals (all integers, and an operation
  // name from op_name()'s fixed set), for a simple query that holds more than one statement.
  std::string op_sql(const Request& rq) const {
    return "SELECT bank_op(" + std::to_string(conn_) + "::bigint, " + std::to_string(rq.seq) + "::bigint, '" + op_name(rq.cmd) +
           "', " + std::to_string(rq.a) + "::bigint, " + std::to_string(rq.b) + "::bigint, " + std::to_string(rq.amount) + "::bigint)";
  }
  void send_op(Wait w, const Request& rq) {
    send(w, "SELECT bank_op($1, $2, $3, $4, $5, $6)",
         {std::to_string(conn_), std::to_string(rq.seq), op_name(rq.cmd), std::to_string(rq.a), std::to_string(rq.b),
          std::to_string(rq.amount)});
  }

  void unavailable(const std::string& why) {
    Job j = *job_;
    job_.reset();
    pg_tx_live_ = false;
    if (j.claim_only) return;  // the next request tries again
    if (in_tx_ && doomed_.empty()) doomed_ = "aborted: the database is unavailable";
    std::string body = j.in_doubt ? "ERR database unavailable, outcome unknown: " + why : "ERR database unavailable: " + why;
    if (in_tx_ && j.rq.cmd == Cmd::commit) {
      in_tx_ = false;
      tx_.clear();
      doomed_.clear();
    }
    answer(j.rq.seq, body);
  }

  void on_lost(const PgResult& r) {
    claimed_ = false;
    if (pg_tx_live_ && tx_lost_why_.empty()) tx_lost_why_ = "aborted: the database connection was lost";
    pg_tx_live_ = false;
    Job& j = *job_;
    j.looked_up = false;  // a COMMIT in flight: ask the database again after the claim
    if (j.reply_after_rollback) {  // the rollback happened anyway: the backend is gone
      std::string body = *j.reply_after_rollback;
      return answer(j.rq.seq, body);
    }
    (void)r;
    step();
  }

  void fenced(const std::string& msg) {
    // A newer owner holds the connection: never answer for it again.
    if (o_.log) o_.log("bank: connection " + std::to_string(conn_) + " epoch " + std::to_string(c_->epoch()) + " refused by the database: " + msg);
    stop();
  }

  void on_result(Wait w, const PgResult& r) {
    if (!job_) return;
    Job& j = *job_;
    if (r.kind == PgResult::Kind::lost) {
      if (w == Wait::connect) {
        job_->reconnects = std::max(job_->reconnects, o_.reconnects + 1);  // a refused connect is final for this request
        pg_->reset();
        return unavailable(r.message);
      }
      if (w == Wait::settle_error) return answer(j.rq.seq, j.op_reply);  // not stored; not applied either
      if (w == Wait::apply || w == Wait::commit) j.in_doubt = true;
      return on_lost(r);
    }
    if (r.kind == PgResult::Kind::sql_error && r.sqlstate == "MT001") return fenced(r.message);
    switch (w) {
      case Wait::connect:
        return step();
      case Wait::claim:
        if (!r.ok()) {
          if (retryable(r) && j.retries++ < o_.retries) return step();
          pg_->reset();
          return unavailable("claiming the session failed: " + r.message);
        }
        claimed_ = true;
        return step();
      case Wait::apply:
        if (r.ok() && r.has_value) return answer(j.rq.seq, r.value);
        if (retryable(r) && j.retries++ < o_.retries) return backoff_then_step();
        // "Not applied" must stay true and the reply the same after a takeover: store it as the
        // request's reply (first writer wins; bank_apply answers a stored reply and applies
        // nothing), then answer the stored one, which is a former owner's if it got there first.
        j.op_reply = retryable(r) ? "ERR busy: too many serialization failures, not applied; retry"
                                  : "ERR database error, not applied: " + one_line(r.message);
        return send(Wait::settle_error, "SELECT bank_journal($1, $2, $3, true)",
                    {std::to_string(conn_), std::to_string(j.rq.seq), j.op_reply});
      case Wait::settle_error:
        // Stored (or a former owner's reply found): answer it. Not stored: answer it anyway;
        // the request was not applied, and only a crash before the next snapshot could
        // replay it (docs/dbfrontend.md "Gaps").
        return answer(j.rq.seq, r.ok() && r.has_value ? r.value : j.op_reply);
      case Wait::lookup:
        if (!r.ok()) return sql_failed(r);
        j.looked_up = true;
        if (r.has_value) return end_tx_job(r.value);  // committed before: by a former owner, or before the link was lost
        if (!doomed_.empty()) return reply_journaled("ABORTED transaction " + doomed_ + ", retry", true);
        return step();
      case Wait::begin:
        if (!r.ok()) return sql_failed(r);
        return reexec_next();
      case Wait::reexec:
        if (!r.ok()) return sql_failed(r);
        if (r.value != tx_[j.reexec_i].reply) {  // the database now answers differently
          doomed_ = tx_lost_why_.empty() ? "aborted by a conflicting transaction" : tx_lost_why_;
          return doom_current();
        }
        ++j.reexec_i;
        return reexec_next();
      case Wait::op_begun:
        if (!r.ok()) return sql_failed(r);
        pg_tx_live_ = true;  // the database holds our transaction (nothing to re-execute)
        tx_lost_why_.clear();
        [[fallthrough]];
      case Wait::op:
        if (!r.ok()) return sql_failed(r);
        if (r.value.size() > kReplyBytesMax) {
          doomed_ = "aborted: reply too long";
          return doom_current();
        }
        return reply_journaled(r.value, false);
      case Wait::commit:
        if (!r.ok()) {
          if (r.sqlstate == "MT002" || r.sqlstate == "23505") {
            // A reply is stored for this COMMIT already (another owner committed it): roll
            // this re-execution back, then answer the stored reply (lookup).
            j.looked_up = false;
            j.rollback_then_step = true;
            return send_simple(Wait::rollback, "ROLLBACK");
          }
          // bank_commit() or COMMIT failed; either way nothing committed: roll back, then
          // retry (look up, re-execute and compare) or doom it.
          return sql_failed(r);
        }
        pg_tx_live_ = false;
        in_tx_ = false;
        tx_.clear();
        if (o_.test_reply_delay_ms) {
          j.final_reply = "OK committed";
          return arm_delay(o_.test_reply_delay_ms);
        }
        return answer(j.rq.seq, "OK committed");
      case Wait::rollback:
        pg_tx_live_ = false;
        if (j.reply_after_rollback) {
          std::string body = *j.reply_after_rollback;
          return answer(j.rq.seq, body);
        }
        if (j.rollback_then_step) {
          j.rollback_then_step = false;
          return step();
        }
        if (j.rollback_then_retry) {
          j.rollback_then_retry = false;
          return backoff_then_step();
        }
        return;
      case Wait::none:
      case Wait::delay:
        return;
    }
  }

  // The reply to an operation inside the transaction is journaled on a second database session
  // before the client may see it (docs/dbfrontend.md "Replies the client may already have"). The
  // journal answers with the first reply ever written for (conn, seq): a new owner re-executing
  // a request whose reply the client may already have (a takeover after a crash, where the
  // replica's snapshot is older than what the client received) answers with that reply, and if
  // the database now says something else the transaction is doomed.
  // Journals `body` as the current request's reply, then answers with the journal's winner.
  // ends_tx: the reply is a COMMIT's ABORTED outcome, stored in bank_reply where a replayed
  // COMMIT looks; else an operation's reply inside the transaction (bank_txreply).
  void reply_journaled(const std::string& body, bool ends_tx) {
    Job& j = *job_;
    j.op_reply = body;
    j.ends_tx = ends_tx;
    j.settle = ends_tx;
    journal();
  }
  void journal() {
    Job& j = *job_;
    if (!pj_) {
      pj_ = std::make_unique<PgAsync>(*o_.io, waker_);
      pj_->set_timeout_ms(o_.db_timeout_ms);
    }
    if (pj_->state() == PgAsync::State::down && !j.journal_connecting && o_.spares) {
      if (auto s = o_.spares->take(notify())) pj_ = std::move(s);
    }
    if (pj_->state() == PgAsync::State::down) {
      std::string why;
      if (j.journal_connecting || !pj_->connect(o_.conninfo, why)) return journal_failed(why.empty() ? "cannot reach the database" : why);
      j.journal_connecting = true;
      jwait_ = true;
      return;
    }
    jwait_ = true;
    if (!pj_->send("SELECT bank_journal($1, $2, $3, $4)",
                   {std::to_string(conn_), std::to_string(j.rq.seq), j.op_reply, j.settle ? "true" : "false"})) {
      jwait_ = false;
      pj_->reset();
      journal_failed("cannot send to the database");
    }
  }
  void on_journal(const PgResult& r) {
    Job& j = *job_;
    if (r.kind == PgResult::Kind::lost) return journal_failed(r.message);
    if (pj_->state() == PgAsync::State::idle && j.journal_connecting && !r.has_value && r.ok()) {
      j.journal_connecting = false;  // connected: now journal
      return journal();
    }
    if (!r.ok() || !r.has_value) return journal_failed(r.message);
    std::string winner = r.value;
    bool fresh_op = !j.ends_tx && doomed_.empty();  // a new answer of an operation
    // A different winner is a former owner's reply, which the client may have: keep it, and
    // the transaction can no longer match what the client saw.
    if (winner != j.op_reply && in_tx_ && doomed_.empty()) doomed_ = "aborted by migration";
    if (j.ends_tx) {
      in_tx_ = false;
      tx_.clear();
      doomed_.clear();
    } else if (fresh_op && doomed_.empty()) {
      tx_.push_back({j.rq, winner});
    }
    finish_tx_reply(j.ends_tx || !doomed_.empty(), winner);
  }
  // Answer `body`; if the database transaction must end first, roll it back before.
  void finish_tx_reply(bool rollback, const std::string& body) {
    if (rollback && pg_ && pg_->state() == PgAsync::State::idle) {
      job_->reply_after_rollback = body;
      return send_simple(Wait::rollback, "ROLLBACK");
    }
    pg_tx_live_ = pg_tx_live_ && !rollback;
    answer(job_->rq.seq, body);
  }
  void journal_failed(const std::string& why) {
    if (pj_) pj_->reset();
    std::string body;
    if (job_->ends_tx) {
      in_tx_ = false;
      tx_.clear();
      doomed_.clear();
      body = "ERR database unavailable: " + why;
    } else {
      doomed_ = "aborted: the database is unavailable";
      body = "ERR transaction aborted: the database is unavailable (" + why + "), retry (COMMIT or ABORT ends it)";
    }
    finish_tx_reply(true, body);
  }

  void reexec_next() {
    Job& j = *job_;
    if (j.reexec_i < tx_.size()) return send_op(Wait::reexec, tx_[j.reexec_i].rq);
    pg_tx_live_ = true;  // the database holds our transaction again, with the same answers
    tx_lost_why_.clear();
    step();
  }

  // An SQL error inside the interactive transaction: the database aborted it.
  void sql_failed(const PgResult& r) {
    Job& j = *job_;
    if (retryable(r) && j.retries++ < o_.retries) {
      if (tx_lost_why_.empty()) tx_lost_why_ = "aborted by a conflicting transaction";
      j.rollback_then_retry = true;
      return send_simple(Wait::rollback, "ROLLBACK");
    }
    doomed_ = retryable(r) ? "aborted: too many serialization failures" : "aborted by a database error: " + r.message;
    doom_current();
  }

  // The transaction cannot go on: roll back, then answer the current request accordingly.
  // The reply is journaled like any other that the database decided.
  void doom_current() {
    if (job_->rq.cmd == Cmd::commit) return reply_journaled("ABORTED transaction " + doomed_ + ", retry", true);
    reply_journaled("ERR transaction " + doomed_ + ", retry (COMMIT or ABORT ends it)", false);
  }

  // ---- snapshots ------------------------------------------------------------------------
  void snapshot() {
    Bytes b;
    encode_bank_snapshot(b, c_->input_pos(), c_->output_pos(), last_seq_, lines_, out_, in_tx_, doomed_, tx_);
    snap_in_ = c_->input_pos();
    svc::take_snapshot(*c_, std::move(b));
  }

  bool load(const sdk::Import& imp, std::string& why) {
    BankSnapshot s;
    if (!decode_bank_snapshot(imp.snapshot, s)) {
      why = "not a bank snapshot";
      return false;
    }
    if (s.in != imp.snap_in || s.out != imp.snap_out) {
      why = "snapshot positions disagree with the protocol's record";
      return false;
    }
    last_seq_ = s.last_seq;
    lines_ = std::move(s.lines);
    out_ = std::move(s.pending);
    in_tx_ = s.in_tx;
    doomed_ = std::move(s.doomed);
    tx_ = std::move(s.tx);
    snap_in_ = s.in;
    return true;
  }

  const BankOptions o_;
  sdk::Waker waker_;
  sdk::Conn* c_ = nullptr;  // valid during a callback
  int64_t conn_ = 0;
  // State in the snapshot.
  uint64_t last_seq_ = 0;
  svc::LineBuffer lines_{kLineBytesMax};
  std::string out_;  // reply bytes the connection has not taken yet
  bool in_tx_ = false;
  std::vector<TxOp> tx_;  // the open transaction's operations with the replies sent
  std::string doomed_;    // non-empty: the open transaction can only end (why)
  // State of this instance only.
  std::unique_ptr<PgAsync> pg_;
  std::unique_ptr<PgAsync> pj_;  // the journal's session (autocommit)
  bool jwait_ = false;           // a journal step is outstanding on pj_
  bool claimed_ = false;       // this database session ran bank_claim()
  bool pg_tx_live_ = false;    // the database holds our open transaction, matching tx_
  std::string tx_lost_why_;    // why the database side of the open transaction went away
  std::optional<Job> job_;
  Wait wait_ = Wait::none;
  std::unique_ptr<asio::steady_timer> delay_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  std::minstd_rand rng_{std::random_device{}()};
  uint64_t snap_in_ = 0;  // input position of this instance's last snapshot
  bool stopped_ = false;
  bool closed_ = false;
  std::array<uint8_t, kReadBytes> buf_{};
};

class BankService final : public sdk::ServiceDef {
 public:
  BankService() : ServiceDef("bank", "a banking front-end over PostgreSQL (docs/dbfrontend.md)") {
    opt("conninfo", &o_.conninfo, "libpq connection string of the bank database");
    opt("retries", &o_.retries, "serialization failures and deadlocks retried per request", 0, 1000);
    opt("reconnects", &o_.reconnects, "database reconnects per request before an error reply", 0, 100);
    opt("db-timeout-ms", &o_.db_timeout_ms,
        "a database connect or statement that takes longer is given up: the request gets an error reply (0: wait for ever)", 0,
        3600000);
    opt("spare-sessions", &o_.spare_sessions, "database sessions each member keeps connected ahead of need (0: none)", 0, 16);
    opt("test-reply-delay-ms", &o_.test_reply_delay_ms, "tests only: wait this long after an interactive COMMIT before the reply", 0, 60000);
    opt("test-commit-delay-ms", &o_.test_commit_delay_ms, "tests only: wait this long before an interactive COMMIT", 0, 60000);
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv& env, std::string& why) override {
    if (env.io == nullptr) {
      why = "bank needs the member's event loop (ServiceEnv::io) for its database connections; there is none here";
      return nullptr;
    }
    BankOptions o = o_;
    o.io = env.io;
    o.log = env.log;
    if (o.spare_sessions > 0) {
      o.spares = std::make_shared<PgSpares>(*env.io, o.conninfo, o.spare_sessions, kWarmSql, o.db_timeout_ms);
      o.spares->refill();
    }
    env.log("bank: database " + redact_conninfo(o.conninfo));  // never a password in the log
    return std::make_unique<sdk::OptionsFactory<BankApp, BankOptions>>(o);
  }

 private:
  BankOptions o_;
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_bank_service() { return std::make_unique<BankService>(); }

}  // namespace mtcp::bank
