#include "pg_async.h"

#include <asio/post.hpp>

namespace mtcp::bank {
namespace {

void quiet(void*, const char*) {}  // notices (a ROLLBACK with no transaction) are expected

std::string one_line(const char* s) {
  std::string m = s ? s : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  std::string o;
  for (char ch : m) {
    if (ch == '\n' || ch == '\t') ch = ' ';
    if (ch == ' ' && !o.empty() && o.back() == ' ') continue;
    o.push_back(ch);
  }
  m = o;
  return m.empty() ? "unknown libpq error" : m;
}

}  // namespace

bool PgAsync::connect(const std::string& conninfo, std::string& why) {
  reset();
  pg_ = PQconnectStart(conninfo.c_str());
  if (pg_ == nullptr || PQstatus(pg_) == CONNECTION_BAD) {
    why = pg_ ? one_line(PQerrorMessage(pg_)) : "out of memory";
    reset();
    return false;
  }
  PQsetNoticeProcessor(pg_, quiet, nullptr);
  st_ = State::connecting;
  start_clock();
  adopt_socket();
  watch(false, true);  // PQconnectStart: first wait until the socket is writable
  return true;
}

void PgAsync::adopt_socket(bool fresh) {
  int fd = PQsocket(pg_);
  if (fd == sd_fd_ && sd_ && !fresh) return;
  if (sd_) {
    sd_->cancel();
    (void)sd_->release();  // libpq owns the descriptor
  }
  sd_.reset();
  waits_ = std::make_shared<Waits>();  // handlers of the old descriptor find theirs stale
  sd_fd_ = fd;
  if (fd >= 0) sd_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
}

void PgAsync::watch(bool read, bool write) {
  if (!sd_) return;
  auto arm = [&](bool& armed, asio::posix::descriptor_base::wait_type t, bool Waits::*flag) {
    if (armed) return;
    armed = true;
    sd_->async_wait(t, [w = std::weak_ptr<Waits>(waits_), notify = notify_, flag](asio::error_code ec) {
      auto s = w.lock();
      if (!s) return;  // stale descriptor or object gone
      s.get()->*flag = false;
      if (!ec) notify();
    });
  };
  if (read) arm(waits_->read, asio::posix::descriptor_base::wait_read, &Waits::read);
  if (write) arm(waits_->write, asio::posix::descriptor_base::wait_write, &Waits::write);
}

bool PgAsync::send(const std::string& sql, const std::vector<std::string>& params) {
  if (st_ != State::idle) return false;
  std::vector<const char*> v;
  v.reserve(params.size());
  for (const auto& p : params) v.push_back(p.c_str());
  if (!PQsendQueryParams(pg_, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0)) return false;
  sent();
  return true;
}

// The query went to libpq, which has written what the socket took. The answer cannot be there
// yet, so nothing is read now: the read wait tells when it comes. (Reading at once, as poll()
// did, cost a failed recvfrom per statement, and a second one when the app's next wake-up,
// for anything else, polled again: docs/dbfrontend.md "Where the time goes".)
void PgAsync::sent() {
  st_ = State::busy;
  acc_ = PgResult{};
  start_clock();
  int f = PQflush(pg_);
  flushing_ = f != 0;
  if (f < 0) {
    notify_();  // poll() finds the connection lost
    return;
  }
  watch(true, flushing_);
}

bool PgAsync::send_simple(const std::string& sql) {
  if (st_ != State::idle) return false;
  if (!PQsendQuery(pg_, sql.c_str())) return false;
  sent();
  return true;
}

PgResult PgAsync::lost(const char* what) {
  PgResult r;
  r.kind = PgResult::Kind::lost;
  r.message = std::string(what) + ": " + one_line(pg_ ? PQerrorMessage(pg_) : nullptr);
  reset();
  return r;
}

void PgAsync::start_clock() {
  if (timeout_ms_ == 0) return;
  started_ = std::chrono::steady_clock::now();
  if (!*timer_armed_) arm_deadline();  // else it wakes us early, and poll() arms it again
}

bool PgAsync::overdue() const {
  return timeout_ms_ != 0 && (st_ == State::connecting || st_ == State::busy) &&
         std::chrono::steady_clock::now() - started_ >= std::chrono::milliseconds(timeout_ms_);
}

void PgAsync::arm_deadline() {
  if (!timer_) timer_ = std::make_unique<asio::steady_timer>(io_);
  *timer_armed_ = true;
  timer_->expires_at(started_ + std::chrono::milliseconds(timeout_ms_));
  timer_->async_wait([armed = std::weak_ptr<bool>(timer_armed_), notify = notify_](asio::error_code ec) {
    auto a = armed.lock();
    if (!a) return;  // rebound, or the object is gone
    *a = false;
    if (!ec) notify();
  });
}

std::optional<PgResult> PgAsync::poll() {
  if (overdue()) {
    PgResult r;
    r.kind = PgResult::Kind::lost;
    r.message = std::string(st_ == State::connecting ? "the database did not accept the connection" : "the database did not answer") +
                " within " + std::to_string(timeout_ms_) + " ms (--db-timeout-ms)";
    reset();
    return r;
  }
  // Woken by a deadline that an earlier step armed: this step's own is later.
  if (timeout_ms_ != 0 && (st_ == State::connecting || st_ == State::busy) && !*timer_armed_) arm_deadline();
  if (st_ == State::connecting) {
    PostgresPollingStatusType ps = PQconnectPoll(pg_);
    adopt_socket();
    if (ps == PGRES_POLLING_FAILED) return lost("cannot connect to the database");
    if (ps == PGRES_POLLING_READING) {
      watch(true, false);
      return std::nullopt;
    }
    if (ps == PGRES_POLLING_WRITING) {
      watch(false, true);
      return std::nullopt;
    }
    if (PQsetnonblocking(pg_, 1) != 0) return lost("cannot make the connection non-blocking");
    // A new descriptor object: Asio keeps EPOLLOUT in the registration once a write wait
    // added it (the connect's), and every later read wait's re-arm then reported the always
    // writable socket as an event, a wake-up of the loop for nothing.
    adopt_socket(true);
    st_ = State::idle;
    return PgResult{};
  }
  if (st_ != State::busy) return std::nullopt;
  // Woken for something else while the read wait is still armed: the socket has not become
  // readable since the last read, so there is nothing new to consume.
  if (waits_->read && !flushing_) return std::nullopt;
  if (flushing_) {
    int f = PQflush(pg_);
    if (f < 0) return lost("lost the database connection");
    flushing_ = f == 1;
  }
  if (!PQconsumeInput(pg_)) return lost("lost the database connection");
  while (!PQisBusy(pg_)) {
    PGresult* res = PQgetResult(pg_);
    if (res == nullptr) {  // the command is complete
      st_ = State::idle;
      return std::move(acc_);
    }
    ExecStatusType es = PQresultStatus(res);
    if (es == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0) {
      acc_.value = PQgetvalue(res, 0, 0);
      acc_.has_value = true;
    } else if (es == PGRES_FATAL_ERROR || es == PGRES_NONFATAL_ERROR || es == PGRES_BAD_RESPONSE) {
      if (acc_.kind == PgResult::Kind::ok) {
        acc_.kind = PgResult::Kind::sql_error;
        const char* st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        acc_.sqlstate = st ? st : "";
        acc_.message = one_line(PQresultErrorMessage(res));
      }
    }
    PQclear(res);
    if (PQstatus(pg_) == CONNECTION_BAD) return lost("lost the database connection");
  }
  if (PQstatus(pg_) == CONNECTION_BAD) return lost("lost the database connection");
  watch(true, flushing_);
  return std::nullopt;
}

void PgAsync::reset() {
  if (sd_) {
    sd_->cancel();
    (void)sd_->release();
    sd_.reset();
  }
  sd_fd_ = -1;
  waits_ = std::make_shared<Waits>();
  if (pg_) PQfinish(pg_);
  pg_ = nullptr;
  st_ = State::down;
  flushing_ = false;
}

void PgAsync::rebind(Notify notify) {
  notify_ = std::move(notify);
  if (sd_) sd_->cancel();
  waits_ = std::make_shared<Waits>();  // the cancelled handlers find theirs stale
  if (timer_) timer_->cancel();
  timer_armed_ = std::make_shared<bool>(false);  // likewise the deadline's
}

bool PgAsync::idle_outside_tx() const {
  return st_ == State::idle && pg_ && PQstatus(pg_) == CONNECTION_OK && PQtransactionStatus(pg_) == PQTRANS_IDLE;
}

bool PgAsync::alive() {
  if (st_ != State::idle) return false;
  if (!PQconsumeInput(pg_) || PQstatus(pg_) != CONNECTION_OK) {
    reset();
    return false;
  }
  return true;
}

std::unique_ptr<PgAsync> PgSpares::take(PgAsync::Notify notify) {
  std::unique_ptr<PgAsync> got;
  for (size_t i = 0; i < s_.size() && !got;) {
    if (s_[i]->state() != PgAsync::State::idle) {  // connecting or warming up
      ++i;
      continue;
    }
    std::unique_ptr<PgAsync> s = std::move(s_[i]);
    s_.erase(s_.begin() + static_cast<std::ptrdiff_t>(i));
    if (s->alive()) got = std::move(s);  // else: gone since (the database restarted): dropped
  }
  if (got) got->rebind(std::move(notify));
  refill();
  return got;
}

// What a spare tells when it may have progress: pump(), later, if the spares still exist.
PgAsync::Notify PgSpares::pump_notify() {
  std::weak_ptr<PgSpares> me = weak_from_this();
  return [me, &io = io_] {
    asio::post(io, [me] {
      if (auto p = me.lock()) p->pump();
    });
  };
}

void PgSpares::give_back(std::unique_ptr<PgAsync> s) {
  if (!s || !s->idle_outside_tx() || s_.size() >= kept_max()) return;  // closed here
  s->rebind(pump_notify());
  s_.push_back(std::move(s));
}

void PgSpares::release(std::unique_ptr<PgAsync> s, const std::string& release_sql) {
  if (!s || s->state() != PgAsync::State::idle || s_.size() >= kept_max()) return;  // closed here
  s->rebind(pump_notify());
  if (!s->send_simple(release_sql)) return;
  s_.push_back(std::move(s));  // busy until the release ends: pump() keeps it or drops it
}

void PgSpares::refill() {
  while (s_.size() < max_) {
    auto s = std::make_unique<PgAsync>(io_, pump_notify());
    s->set_timeout_ms(timeout_ms_);
    std::string why;
    if (!s->connect(conninfo_, why)) return;  // tried again at the next take()
    s_.push_back(std::move(s));
  }
}

void PgSpares::pump() {
  for (size_t i = 0; i < s_.size();) {
    PgAsync::State was = s_[i]->state();
    if (was == PgAsync::State::connecting || was == PgAsync::State::busy) {
      std::optional<PgResult> r = s_[i]->poll();
      bool drop = r && !r->ok();  // could not connect, or the warm-up failed
      if (r && r->ok() && was == PgAsync::State::connecting && !warm_sql_.empty()) drop = !s_[i]->send_simple(warm_sql_);
      if (drop) {
        s_.erase(s_.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
    }
    ++i;
  }
}

std::string redact_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err) PQfreemem(err);
  if (!opts) return "(unparsable connection string)";
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    std::string v = std::string(o->keyword) == "password" ? std::string("***") : std::string(o->val);
    out += (out.empty() ? "" : " ") + std::string(o->keyword) + "=" + v;
  }
  PQconninfoFree(opts);
  return out.empty() ? std::string("(defaults)") : out;
}

}  // namespace mtcp::bank
