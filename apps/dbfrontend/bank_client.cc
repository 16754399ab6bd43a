// mtcp-bank-client: the bank's workload generator and checker, in the style of the Jepsen bank
// test (docs/dbfrontend.md "Workload and checker").
//
//   mtcp-bank-client setup    --conninfo CI [--accounts N] [--balance B]
//   mtcp-bank-client run      --conninfo CI --pool pool.json --frontend PATH [workload options]
//   mtcp-bank-client baseline --conninfo CI [workload options]
//
// `run` starts one mtcp-bank-frontend per pool member itself (so it may SIGKILL and restart
// them by PID), drives --sessions concurrent M-TCP sessions of random transfers, interactive
// transactions and audits, migrates each session every --migrate-every requests, kills a
// front-end every --kill-every acknowledged requests, and then checks the database. `baseline`
// runs the same transaction mix straight on libpq (one thread and connection per session), for
// the throughput ratio. Exit status: 0 verdict ok, 1 violations or a failed run, 2 bad usage.
#include <libpq-fe.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <atomic>
#include <thread>
#include <iostream>

#include "bank_schema.h"
#include "client/connection.h"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Workload {
  uint64_t sessions = 4;
  uint64_t requests = 2000;  // per session
  uint64_t accounts = 50;
  uint64_t balance = 1000;  // initial balance of each account (setup)
  uint64_t tx_percent = 20;     // interactive transactions among the session's steps
  uint64_t audit_percent = 5;   // audits among the steps
  uint64_t migrate_every = 25;  // requests of a session between its migrations (0: none)
  uint64_t kill_every = 0;      // acknowledged requests between front-end kills (0: none)
  uint64_t seed = 1;
  uint64_t time_limit_s = 300;
  bool json_out = false;
  std::string conninfo, pool_path, frontend;
};

// One request sent and what came back.
struct Sent {
  int64_t conn = 0;
  uint64_t seq = 0;
  std::string line;   // without seq
  std::string reply;  // body; empty: unacknowledged
  bool in_tx = false;
  uint64_t tx_commit_seq = 0;  // in_tx: the seq of the COMMIT that ended it (0: none sent)
};

// The steps of one session: a script of request lines, built from the seed.
std::vector<std::vector<std::string>> make_steps(const Workload& w, std::mt19937_64& rng) {
  std::vector<std::vector<std::string>> steps;
  std::uniform_int_distribution<uint64_t> acct(1, w.accounts), amt(1, 30), pct(0, 99);
  uint64_t n = 0;
  while (n < w.requests) {
    uint64_t p = pct(rng);
    uint64_t a = acct(rng), b = acct(rng);
    while (b == a) b = acct(rng);
    std::string tr = "TRANSFER " + std::to_string(a) + " " + std::to_string(b) + " " + std::to_string(amt(rng));
    if (p < w.audit_percent) {
      steps.push_back({"AUDIT"});
    } else if (p < w.audit_percent + w.tx_percent) {
      steps.push_back({"BEGIN", "BALANCE " + std::to_string(a), tr, "BALANCE " + std::to_string(b), "COMMIT"});
    } else {
      steps.push_back({tr});
    }
    n += steps.back().size();
  }
  return steps;
}

uint64_t pct_of(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return static_cast<uint64_t>(v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))]);
}

struct Summary {
  std::string mode;
  double seconds = 0;
  uint64_t steps_done = 0;  // transactions: one request outside BEGIN..COMMIT, or a whole interactive one
  uint64_t requests_acked = 0, requests_unacked = 0, transfers_acked = 0, tx_committed = 0, tx_aborted = 0,
           tx_aborted_by_migration = 0, audits = 0, migrations = 0, migrations_failed = 0, recoveries = 0, kills = 0,
           sessions_failed = 0;
  std::vector<double> lat_us;
  std::vector<std::string> violations;
  std::map<std::string, uint64_t> migration_failures;  // why (the client library's error) -> count
  std::vector<double> migration_us;  // downtime of each migration done (the client library's)
  json to_json() {
    json j;
    j["mode"] = mode;
    j["seconds"] = seconds;
    j["requests_acked"] = requests_acked;
    j["requests_unacked"] = requests_unacked;
    j["transfers_acked"] = transfers_acked;
    j["transactions_committed"] = tx_committed;
    j["transactions_aborted"] = tx_aborted;
    j["transactions_aborted_by_migration"] = tx_aborted_by_migration;
    j["audits"] = audits;
    j["transactions"] = steps_done;
    j["throughput_transactions_per_s"] = seconds > 0 ? static_cast<double>(steps_done) / seconds : 0;
    j["throughput_requests_per_s"] = seconds > 0 ? static_cast<double>(requests_acked) / seconds : 0;
    j["latency_us_p50"] = pct_of(lat_us, 0.5);
    j["latency_us_p99"] = pct_of(lat_us, 0.99);
    j["migrations"] = migrations;
    j["migrations_failed"] = migrations_failed;
    j["migration_failures"] = migration_failures;
    j["migration_downtime_us_p50"] = migration_us.empty() ? 0 : pct_of(migration_us, 0.5);
    j["migration_downtime_us_p99"] = migration_us.empty() ? 0 : pct_of(migration_us, 0.99);
    j["recoveries"] = recoveries;
    j["kills"] = kills;
    j["sessions_failed"] = sessions_failed;
    j["violations"] = violations;
    j["verdict"] = violations.empty() ? "ok" : "violations";
    return j;
  }
};

void count_reply(Summary& s, const std::string& line, const std::string& reply) {
  if (reply.empty()) return;
  if (line.starts_with("TRANSFER") && reply.starts_with("OK")) ++s.transfers_acked;  // outside a transaction
  if (line == "AUDIT") ++s.audits;
  if (line == "COMMIT") {
    if (reply == "OK committed") ++s.tx_committed;
    else ++s.tx_aborted;
    if (reply.find("by migration") != std::string::npos) ++s.tx_aborted_by_migration;
  }
}

// ---- database helpers (blocking: the client is not an event-loop member) ----
void no_notices(void*, const char*) {}
PGconn* db_connect(const std::string& ci, std::string& why) {
  PGconn* c = PQconnectdb(ci.c_str());
  PQsetNoticeProcessor(c, no_notices, nullptr);
  if (PQstatus(c) != CONNECTION_OK) {
    why = PQerrorMessage(c);
    PQfinish(c);
    return nullptr;
  }
  return c;
}
bool db_exec(PGconn* c, const std::string& sql, std::string& why) {
  PGresult* r = PQexec(c, sql.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) why = PQresultErrorMessage(r);
  PQclear(r);
  return ok;
}
std::vector<std::vector<std::string>> db_rows(PGconn* c, const std::string& sql) {
  std::vector<std::vector<std::string>> out;
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) == PGRES_TUPLES_OK) {
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::string> row;
      for (int k = 0; k < PQnfields(r); ++k) row.emplace_back(PQgetvalue(r, i, k));
      out.push_back(std::move(row));
    }
  }
  PQclear(r);
  return out;
}

int do_setup(const Workload& w) {
  std::string why;
  PGconn* c = db_connect(w.conninfo, why);
  if (!c) {
    std::fprintf(stderr, "mtcp-bank-client: cannot connect to the database: %s", why.c_str());
    return 1;
  }
  std::string sql = std::string(mtcp::bank::kSchemaSql) +
                    "TRUNCATE bank_account, bank_session, bank_reply, bank_ledger;"
                    "INSERT INTO bank_account SELECT g, " + std::to_string(w.balance) + " FROM generate_series(1, " +
                    std::to_string(w.accounts) + ") g;"
                    "INSERT INTO bank_ledger (conn, seq, account, delta) SELECT 0, g, g, " + std::to_string(w.balance) +
                    " FROM generate_series(1, " + std::to_string(w.accounts) + ") g;";
  bool ok = db_exec(c, sql, why);
  PQfinish(c);
  if (!ok) {
    std::fprintf(stderr, "mtcp-bank-client: setup failed: %s", why.c_str());
    return 1;
  }
  if (!w.json_out) std::printf("setup: %lu accounts of %lu\n", static_cast<unsigned long>(w.accounts), static_cast<unsigned long>(w.balance));
  return 0;
}

// The check against the database (docs/dbfrontend.md "Checker").
void check(const Workload& w, const std::vector<Sent>& sent, const std::vector<std::string>& audits, Summary& s) {
  std::string why;
  PGconn* c = db_connect(w.conninfo, why);
  if (!c) {
    s.violations.push_back("cannot connect to the database for the check: " + why);
    return;
  }
  int64_t total = static_cast<int64_t>(w.accounts * w.balance);
  auto add = [&](std::string v) {
    if (s.violations.size() < 50) s.violations.push_back(std::move(v));
  };
  auto t = db_rows(c, "SELECT sum(balance), min(balance), count(*) FROM bank_account");
  if (t.empty() || std::stoll(t[0][0]) != total) add("total is " + (t.empty() ? "?" : t[0][0]) + ", not " + std::to_string(total));
  if (!t.empty() && std::stoll(t[0][1]) < 0) add("a negative balance: " + t[0][1]);
  for (const auto& a : audits) {
    // An audit refused by the front-end read nothing (its refusal is checked like any other).
    if (a.starts_with("ERR busy") || a.starts_with("ERR database")) continue;
    if (a != "OK " + std::to_string(total) + " " + std::to_string(w.accounts)) add("an audit read '" + a + "'");
  }
  auto hist = db_rows(c,
                      "SELECT a.id, a.balance, coalesce(sum(l.delta), 0) FROM bank_account a LEFT JOIN bank_ledger l "
                      "ON l.account = a.id GROUP BY a.id, a.balance HAVING a.balance <> coalesce(sum(l.delta), 0)");
  for (const auto& r : hist) add("account " + r[0] + " balance " + r[1] + " differs from its history " + r[2]);
  // Ledger rows and stored replies by (conn, seq).
  std::map<std::pair<int64_t, uint64_t>, int> ledger;
  for (const auto& r : db_rows(c, "SELECT conn, seq, count(*) FROM bank_ledger WHERE conn <> 0 GROUP BY conn, seq"))
    ledger[{std::stoll(r[0]), std::stoull(r[1])}] = std::stoi(r[2]);
  std::map<std::pair<int64_t, uint64_t>, std::string> stored;
  for (const auto& r : db_rows(c, "SELECT conn, seq, reply FROM bank_reply")) stored[{std::stoll(r[0]), std::stoull(r[1])}] = r[2];
  std::map<std::pair<int64_t, uint64_t>, std::string> commit_reply;  // acked COMMIT replies
  for (const auto& x : sent) {
    if (x.line == "COMMIT") commit_reply[{x.conn, x.seq}] = x.reply;
  }
  for (const auto& x : sent) {
    std::pair<int64_t, uint64_t> k{x.conn, x.seq};
    int rows = ledger.count(k) ? ledger[k] : 0;
    bool transfer = x.line.starts_with("TRANSFER");
    std::string id = "conn " + std::to_string(x.conn) + " seq " + std::to_string(x.seq) + " (" + x.line + ")";
    if (transfer && rows != 0 && rows != 2) add(id + ": " + std::to_string(rows) + " ledger rows (applied more than once)");
    if (!x.in_tx && x.line != "BEGIN" && x.line != "COMMIT" && x.line != "ABORT") {
      if (x.reply.empty()) continue;  // unacknowledged: at most once, checked above
      auto it = stored.find(k);
      // Replies the front-end gives without committing (busy, database unavailable or error):
      // nothing may be applied, except "outcome unknown" (at most once, above). "ERR busy"
      // and "ERR database error" are stored as the request's reply when the database allows;
      // a stored reply must then be this one.
      bool not_applied = x.reply.starts_with("ERR busy") || x.reply.starts_with("ERR database");
      if (not_applied) {
        if (x.reply.find("outcome unknown") != std::string::npos) continue;
        if (rows != 0) add(id + ": answered '" + x.reply + "' but it was applied");
        if (it != stored.end() && it->second != x.reply) add(id + ": answered '" + x.reply + "' but the database stored '" + it->second + "'");
        continue;
      }
      if (it == stored.end()) add(id + ": acknowledged '" + x.reply + "' but no reply stored");
      else if (it->second != x.reply) add(id + ": acknowledged '" + x.reply + "' but the database stored '" + it->second + "'");
      if (transfer && x.reply.starts_with("OK") && rows != 2) add(id + ": acknowledged OK but applied " + std::to_string(rows / 2) + " times");
      if (transfer && !x.reply.starts_with("OK") && rows != 0) add(id + ": acknowledged an error but applied");
      continue;
    }
    if (x.in_tx && transfer) {
      std::string cr;
      if (x.tx_commit_seq) {
        auto cit = commit_reply.find({x.conn, x.tx_commit_seq});
        if (cit != commit_reply.end()) cr = cit->second;
      }
      // A COMMIT's stored reply is "OK committed" when it committed; an ABORTED outcome is
      // stored too (so that a replayed COMMIT repeats it).
      auto sit = stored.find({x.conn, x.tx_commit_seq});
      bool committed = x.tx_commit_seq != 0 && sit != stored.end() && sit->second == "OK committed";
      if (x.tx_commit_seq != 0 && sit != stored.end() && !cr.empty() && cr != sit->second)
        add(id + ": its COMMIT was answered '" + cr + "' but the database stored '" + sit->second + "'");
      if (cr == "OK committed" && !committed) add(id + ": its COMMIT was acknowledged but nothing was stored");
      if (!cr.empty() && cr != "OK committed" && committed) add(id + ": its COMMIT was refused but it committed");
      if (committed && x.reply.starts_with("OK") && rows != 2) add(id + ": in a committed transaction but applied " + std::to_string(rows / 2) + " times");
      if (!committed && rows != 0) add(id + ": in a transaction that did not commit but applied");
    }
  }
  PQfinish(c);
}

// ---- the M-TCP run ----
struct Member {
  uint32_t id = 0;
  pid_t pid = -1;
};

pid_t spawn_member(const Workload& w, uint32_t id) {
  std::vector<std::string> a = {w.frontend, "--pool", w.pool_path, "--id", std::to_string(id), "--conninfo", w.conninfo, "-q"};
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // The front-end dies with this client, even if the client is killed itself.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execv(w.frontend.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

struct Session {
  std::unique_ptr<mtcp::client::Connection> conn;
  std::vector<std::vector<std::string>> steps;
  size_t step = 0, op = 0;
  uint64_t seq = 0;
  int64_t conn_id = 0;
  bool waiting = false;
  bool done = false;
  bool in_tx = false;
  std::vector<size_t> tx_sent;  // indexes into `sent` of this transaction's ops
  Clock::time_point t0, step_t0;
  size_t sent_index = 0;
  std::string inbuf;
  uint64_t since_migration = 0;
};

int do_run(const Workload& w) {
  mtcp::rt::PoolConfig pool;
  std::string why;
  if (!mtcp::rt::load_pool_config(w.pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-bank-client: %s\n", why.c_str());
    return 2;
  }
  if (access(w.frontend.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "mtcp-bank-client: --frontend %s is not an executable\n", w.frontend.c_str());
    return 2;
  }
  std::vector<Member> members;
  for (const auto& m : pool.members) members.push_back({m.id, spawn_member(w, m.id)});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // members bind their ports

  asio::io_context io(1);
  Summary s;
  s.mode = "mtcp";
  std::vector<Sent> sent;
  std::vector<std::string> audits;
  std::vector<Session> ss(w.sessions);
  std::mt19937_64 rng(w.seed);
  uint64_t acked_since_kill = 0;
  size_t live = ss.size();
  asio::steady_timer restart(io), limit(io);
  uint32_t killed_id = 0;
  auto start = Clock::now();

  std::function<void(size_t)> open_session;
  std::function<void(Session&)> send_next = [&](Session& x) {
    if (x.step >= x.steps.size()) {
      x.done = true;
      x.conn->close();
      return;
    }
    const std::string& line = x.steps[x.step][x.op];
    Sent rec;
    rec.conn = x.conn_id;
    rec.seq = ++x.seq;
    rec.line = line;
    rec.in_tx = x.in_tx && line != "COMMIT";
    if (line == "BEGIN") x.in_tx = true;
    sent.push_back(rec);
    x.sent_index = sent.size() - 1;
    if (x.in_tx && line != "BEGIN") x.tx_sent.push_back(x.sent_index);
    if (line == "COMMIT") {
      for (size_t i : x.tx_sent) sent[i].tx_commit_seq = rec.seq;
    }
    std::string wire = std::to_string(rec.seq) + " " + line + "\n";
    x.t0 = Clock::now();
    if (x.op == 0) x.step_t0 = x.t0;
    x.waiting = true;
    x.conn->write_copy(std::span(reinterpret_cast<const uint8_t*>(wire.data()), wire.size()));
  };
  auto on_reply = [&](Session& x, const std::string& body) {
    x.waiting = false;
    Sent& rec = sent[x.sent_index];
    rec.reply = body;
    ++s.requests_acked;
    if (!rec.in_tx) count_reply(s, rec.line, body);
    if (rec.line == "COMMIT" && body == "OK committed") {
      for (size_t i : x.tx_sent) {
        if (sent[i].line.starts_with("TRANSFER") && sent[i].reply.starts_with("OK")) ++s.transfers_acked;
      }
    }
    if (rec.line == "AUDIT") audits.push_back(body);
    // A transaction ends with its COMMIT; a doomed one is ended by it too.
    if (rec.line == "COMMIT") {
      x.in_tx = false;
      x.tx_sent.clear();
    }
    if (++x.op >= x.steps[x.step].size()) {
      s.lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - x.step_t0).count());
      ++s.steps_done;
      x.op = 0;
      ++x.step;
    }
    if (w.migrate_every && ++x.since_migration >= w.migrate_every) {
      x.since_migration = 0;
      // The next member after the current one that is running: a member just killed (or
      // restarting) would only fail the migration ("subflow lost") and stall the session.
      uint32_t cur = x.conn->server(), to = 0;
      for (size_t k = 1; k <= members.size() && to == 0; ++k) {
        size_t at = 0;
        while (at < members.size() && members[at].id != cur) ++at;
        const Member& m = members[(at + k) % members.size()];
        if (m.id != cur && m.id != killed_id && m.pid > 0) to = m.id;
      }
      if (to != 0) x.conn->request_migration(to);
    }
    if (w.kill_every && ++acked_since_kill >= w.kill_every && killed_id == 0) {
      acked_since_kill = 0;
      Member& m = members[rng() % members.size()];
      if (m.pid > 0) {
        kill(m.pid, SIGKILL);
        waitpid(m.pid, nullptr, 0);
        m.pid = -1;
        killed_id = m.id;
        ++s.kills;
        restart.expires_after(std::chrono::milliseconds(300));
        restart.async_wait([&](asio::error_code ec) {
          if (ec) return;
          for (auto& mm : members) {
            if (mm.id == killed_id) mm.pid = spawn_member(w, mm.id);
          }
          killed_id = 0;
        });
      }
    }
    send_next(x);
  };
  auto session_over = [&](Session& x, bool failed) {
    if (x.waiting) ++s.requests_unacked;  // its outcome is unknown: at most once
    x.waiting = false;
    if (failed) ++s.sessions_failed;
    const auto& st = x.conn->stats();
    s.migrations += st.migrations_done;
    s.migrations_failed += st.migrations_failed;
    s.recoveries += st.recoveries;
    if (--live == 0) io.stop();
  };
  open_session = [&](size_t i) {
    Session& x = ss[i];
    mtcp::client::Options opt;
    opt.policy.enabled = mtcp::rt::kPolicyHint | mtcp::rt::kPolicyStall;
    opt.first = pool.members[i % pool.members.size()].id;
    x.conn = mtcp::client::Connection::create(io, pool, std::move(opt), why);
    x.conn->on_event = [&, i](const mtcp::client::Event& e) {
      Session& y = ss[i];
      if (e.kind == mtcp::client::EventKind::connected) {
        y.conn_id = static_cast<int64_t>(y.conn->conn_id());
        send_next(y);
      }
      if (e.kind == mtcp::client::EventKind::failed) {
        std::fprintf(stderr, "mtcp-bank-client: session %zu failed: %s\n", i, mtcp::client::to_string(e).c_str());  // --json too: stdout stays JSON
        session_over(y, true);
      }
      if (e.kind == mtcp::client::EventKind::migrated) s.migration_us.push_back(static_cast<double>(e.downtime_us));
      if (e.kind == mtcp::client::EventKind::migration_failed) {
        ++s.migration_failures[std::string(mtcp::to_string(e.error)) + (e.to == killed_id && killed_id ? " (target killed)" : "")];
      }
      if (e.kind == mtcp::client::EventKind::closed) session_over(y, false);
    };
    x.conn->on_readable = [&, i] {
      Session& y = ss[i];
      uint8_t buf[4096];
      while (size_t n = y.conn->read(buf)) y.inbuf.append(reinterpret_cast<char*>(buf), n);
      size_t nl;
      while ((nl = y.inbuf.find('\n')) != std::string::npos) {
        std::string line = y.inbuf.substr(0, nl);
        y.inbuf.erase(0, nl + 1);
        size_t sp = line.find(' ');
        if (!y.waiting || sp == std::string::npos || line.substr(0, sp) != std::to_string(y.seq)) {
          s.violations.push_back("session " + std::to_string(i) + ": unexpected reply '" + line + "'");
          continue;
        }
        on_reply(y, line.substr(sp + 1));
      }
    };
    x.conn->connect();
  };
  for (size_t i = 0; i < ss.size(); ++i) {
    std::mt19937_64 r(w.seed * 1000003 + i);
    ss[i].steps = make_steps(w, r);
    open_session(i);
  }
  limit.expires_after(std::chrono::seconds(w.time_limit_s));
  limit.async_wait([&](asio::error_code ec) {
    if (!ec) {
      s.violations.push_back("time limit reached");
      io.stop();
    }
  });
  io.run();
  s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& x : ss) {
    if (x.waiting) ++s.requests_unacked;
    x.conn.reset();
  }
  for (auto& m : members) {
    if (m.pid > 0) {
      kill(m.pid, SIGTERM);
      waitpid(m.pid, nullptr, 0);
    }
  }
  check(w, sent, audits, s);
  json j = s.to_json();
  if (w.json_out) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %lu requests acknowledged (%lu transfers applied), %lu unacknowledged; %lu transactions in %.2f s: %.0f/s, p50 %lu us, p99 %lu us\n",
                j["mode"].get<std::string>().c_str(), static_cast<unsigned long>(s.requests_acked),
                static_cast<unsigned long>(s.transfers_acked), static_cast<unsigned long>(s.requests_unacked),
                static_cast<unsigned long>(s.steps_done), s.seconds, j["throughput_transactions_per_s"].get<double>(), static_cast<unsigned long>(j["latency_us_p50"].get<uint64_t>()),
                static_cast<unsigned long>(j["latency_us_p99"].get<uint64_t>()));
    std::printf("transactions: %lu committed, %lu aborted (%lu by migration); %lu audits; %lu migrations (%lu failed), %lu recoveries, %lu kills\n",
                static_cast<unsigned long>(s.tx_committed), static_cast<unsigned long>(s.tx_aborted),
                static_cast<unsigned long>(s.tx_aborted_by_migration), static_cast<unsigned long>(s.audits),
                static_cast<unsigned long>(s.migrations), static_cast<unsigned long>(s.migrations_failed),
                static_cast<unsigned long>(s.recoveries), static_cast<unsigned long>(s.kills));
    for (const auto& v : s.violations) std::printf("violation: %s\n", v.c_str());
    std::printf("verdict: %s\n", s.violations.empty() ? "ok" : "violations");
  }
  return s.violations.empty() ? 0 : 1;
}

// ---- the direct libpq baseline: the same transactions, one thread and connection per session ----
int do_baseline(const Workload& w) {
  std::vector<Summary> per(w.sessions);
  std::vector<std::vector<Sent>> sent(w.sessions);
  std::vector<std::vector<std::string>> audits(w.sessions);
  std::vector<std::thread> th;
  std::atomic<bool> failed{false};
  auto start = Clock::now();
  for (size_t i = 0; i < w.sessions; ++i) {
    th.emplace_back([&, i] {
      std::string why;
      PGconn* c = db_connect(w.conninfo + " options='-c default_transaction_isolation=serializable'", why);
      if (!c) {
        failed = true;
        return;
      }
      std::mt19937_64 r(w.seed * 1000003 + i);
      auto steps = make_steps(w, r);
      int64_t conn = -static_cast<int64_t>(1000000 + i + w.seed * 1000);
      uint64_t seq = 0;
      auto call = [&](const std::string& sql, std::vector<std::string> params, std::string& out, std::string& state) {
        std::vector<const char*> v;
        for (auto& p : params) v.push_back(p.c_str());
        PGresult* res = PQexecParams(c, sql.c_str(), static_cast<int>(v.size()), nullptr, v.data(), nullptr, nullptr, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK;
        state = ok ? "" : (PQresultErrorField(res, PG_DIAG_SQLSTATE) ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : "?");
        out = ok && PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "";
        PQclear(res);
        return ok;
      };
      std::string out, st;
      call("SELECT bank_claim($1, 1)", {std::to_string(conn)}, out, st);
      auto parse = [](const std::string& line, std::vector<std::string>& p) {
        std::istringstream is(line);
        std::string x;
        while (is >> x) p.push_back(x);
        while (p.size() < 4) p.push_back("0");
      };
      for (const auto& step : steps) {
        auto t0 = Clock::now();
        if (step.size() == 1) {  // one request outside a transaction, retried like the front-end
          std::vector<std::string> p;
          parse(step[0], p);
          if (p[0] == "AUDIT") p = {"AUDIT", "0", "0", "0"};
          if (p[0] != "TRANSFER") p[3] = "0";
          ++seq;
          bool done = false;
          for (int k = 0; k < 30 && !done; ++k) {
            done = call("SELECT bank_apply($1, 1, $2, $3, $4, $5, $6)", {std::to_string(conn), std::to_string(seq), p[0], p[1], p[2], p[3]}, out, st);
            if (!done && st != "40001" && st != "40P01") break;
          }
          if (!done) {  // given up: its outcome is unknown to this client (at most once)
            ++per[i].requests_unacked;
            sent[i].push_back({conn, seq, step[0], "", false, 0});
            continue;
          }
          per[i].lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
          ++per[i].requests_acked;
          ++per[i].steps_done;
          count_reply(per[i], step[0], out);
          if (step[0] == "AUDIT") audits[i].push_back(out);
          sent[i].push_back({conn, seq, step[0], out, false, 0});
          continue;
        }
        // BEGIN, the operations, COMMIT: the whole transaction retried on a serialization failure
        uint64_t first = seq;
        std::vector<std::string> replies;
        std::string commit = "ABORTED";
        for (int k = 0; k < 30; ++k) {
          seq = first;
          replies.clear();
          bool okall = call("BEGIN ISOLATION LEVEL SERIALIZABLE", {}, out, st);
          ++seq;  // BEGIN
          for (size_t o = 1; okall && o + 1 < step.size(); ++o) {
            std::vector<std::string> p;
            parse(step[o], p);
            if (p[0] == "BALANCE") p[2] = p[3] = "0";
            ++seq;
            okall = call("SELECT bank_op($1, $2, $3, $4, $5, $6)", {std::to_string(conn), std::to_string(seq), p[0], p[1], p[2], p[3]}, out, st);
            replies.push_back(out);
          }
          ++seq;  // COMMIT
          okall = okall && call("SELECT bank_commit($1, 1, $2, 'OK committed')", {std::to_string(conn), std::to_string(seq)}, out, st);
          okall = okall && call("COMMIT", {}, out, st);
          if (okall) {
            commit = "OK committed";
            break;
          }
          (void)call("ROLLBACK", {}, out, st);
        }
        per[i].lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        per[i].requests_acked += step.size();
        ++per[i].steps_done;
        count_reply(per[i], "COMMIT", commit);
        if (commit == "OK committed") {
          for (size_t o = 1; o + 1 < step.size(); ++o) {
            if (step[o].starts_with("TRANSFER") && replies.size() >= o && replies[o - 1].starts_with("OK")) ++per[i].transfers_acked;
          }
        }
        uint64_t q = first + 1;
        sent[i].push_back({conn, q, "BEGIN", "OK begun", false, 0});
        for (size_t o = 1; o + 1 < step.size(); ++o) sent[i].push_back({conn, ++q, step[o], replies.size() >= o ? replies[o - 1] : "", true, seq});
        sent[i].push_back({conn, seq, "COMMIT", commit, false, 0});
      }
      PQfinish(c);
    });
  }
  for (auto& t : th) t.join();
  Summary s;
  s.mode = "libpq";
  s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<Sent> all;
  std::vector<std::string> all_audits;
  for (size_t i = 0; i < w.sessions; ++i) {
    s.requests_acked += per[i].requests_acked;
    s.steps_done += per[i].steps_done;
    s.requests_unacked += per[i].requests_unacked;
    s.transfers_acked += per[i].transfers_acked;
    s.tx_committed += per[i].tx_committed;
    s.tx_aborted += per[i].tx_aborted;
    s.audits += per[i].audits;
    s.lat_us.insert(s.lat_us.end(), per[i].lat_us.begin(), per[i].lat_us.end());
    all.insert(all.end(), sent[i].begin(), sent[i].end());
    all_audits.insert(all_audits.end(), audits[i].begin(), audits[i].end());
  }
  if (failed) s.violations.push_back("a session could not connect to the database");
  check(w, all, all_audits, s);
  json j = s.to_json();
  if (w.json_out) std::printf("%s\n", j.dump().c_str());
  else
    std::printf("libpq: %lu requests (%lu transfers applied); %lu transactions in %.2f s: %.0f/s, p50 %lu us, p99 %lu us, verdict %s\n",
                static_cast<unsigned long>(s.requests_acked), static_cast<unsigned long>(s.transfers_acked),
                static_cast<unsigned long>(s.steps_done), s.seconds, j["throughput_transactions_per_s"].get<double>(), static_cast<unsigned long>(j["latency_us_p50"].get<uint64_t>()),
                static_cast<unsigned long>(j["latency_us_p99"].get<uint64_t>()), j["verdict"].get<std::string>().c_str());
  return s.violations.empty() ? 0 : 1;
}

// ---- a scripted session for the tests: one connection, directives from stdin ----
//   SEQ CMD ...     send the request, wait for its reply, print it
//   !send SEQ CMD   send without waiting;   !wait   wait for the next reply and print it
//   !migrate N      migrate to member N (0: the next), wait until it is done or failed
//   !sleep MS       wait;   !exec CMD   run a shell command (blocking), e.g. kill -STOP
int do_script(const Workload& w, uint32_t first) {
  mtcp::rt::PoolConfig pool;
  std::string why;
  if (!mtcp::rt::load_pool_config(w.pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-bank-client: %s\n", why.c_str());
    return 2;
  }
  asio::io_context io(1);
  mtcp::client::Options opt;
  opt.policy.enabled = mtcp::rt::kPolicyHint;
  opt.first = first;
  auto conn = mtcp::client::Connection::create(io, pool, std::move(opt), why);
  if (!conn) {
    std::fprintf(stderr, "mtcp-bank-client: %s\n", why.c_str());
    return 2;
  }
  std::vector<std::string> lines;
  for (std::string l; std::getline(std::cin, l);) {
    if (!l.empty()) lines.push_back(l);
  }
  size_t at = 0;
  int waiting = 0;        // replies still to print before the next directive
  bool migrating = false;
  int rc = 0;
  std::string inbuf;
  asio::steady_timer timer(io);
  std::function<void()> next = [&] {
    while (waiting == 0 && !migrating && at < lines.size()) {
      std::string l = lines[at++];
      auto write = [&](const std::string& t) {
        std::string x = t + "\n";
        conn->write_copy(std::span(reinterpret_cast<const uint8_t*>(x.data()), x.size()));
      };
      if (l.starts_with("!send ")) {
        write(l.substr(6));
      } else if (l == "!wait") {
        waiting = 1;
      } else if (l.starts_with("!migrate")) {
        uint32_t to = l.size() > 9 ? static_cast<uint32_t>(std::stoul(l.substr(9))) : 0;
        if (mtcp::Status st = conn->migrate(to); !st) {
          std::printf("migrate failed: %s\n", std::string(mtcp::to_string(st.error())).c_str());
          std::fflush(stdout);
          continue;
        }
        migrating = true;
      } else if (l.starts_with("!sleep ")) {
        timer.expires_after(std::chrono::milliseconds(std::stoul(l.substr(7))));
        migrating = true;  // reused as "busy"
        timer.async_wait([&](asio::error_code) {
          migrating = false;
          next();
        });
      } else if (l.starts_with("!exec ")) {
        if (std::system(l.substr(6).c_str()) != 0) std::fprintf(stderr, "script: '%s' failed\n", l.c_str());
      } else {
        write(l);
        waiting = 1;
      }
    }
    if (waiting == 0 && !migrating && at >= lines.size() && !conn->closing()) conn->close();
  };
  conn->on_event = [&](const mtcp::client::Event& e) {
    if (e.kind == mtcp::client::EventKind::connected) {
      std::printf("connected %lld\n", static_cast<long long>(static_cast<int64_t>(conn->conn_id())));  // the database's conn key
      std::fflush(stdout);
      next();
    }
    if (e.kind == mtcp::client::EventKind::migrated || e.kind == mtcp::client::EventKind::migration_failed) {
      std::printf("%s\n", e.kind == mtcp::client::EventKind::migrated ? "migrated" : "migration failed");
      std::fflush(stdout);
      migrating = false;
      asio::post(io, next);
    }
    if (e.kind == mtcp::client::EventKind::failed) {
      std::printf("connection failed: %s\n", mtcp::client::to_string(e).c_str());
      rc = 1;
      io.stop();
    }
    if (e.kind == mtcp::client::EventKind::closed) io.stop();
  };
  conn->on_readable = [&] {
    uint8_t buf[4096];
    while (size_t n = conn->read(buf)) inbuf.append(reinterpret_cast<char*>(buf), n);
    size_t nl;
    while ((nl = inbuf.find('\n')) != std::string::npos) {
      std::printf("%s\n", inbuf.substr(0, nl).c_str());
      std::fflush(stdout);
      inbuf.erase(0, nl + 1);
      if (waiting > 0) --waiting;
    }
    asio::post(io, next);
  };
  asio::steady_timer limit(io, std::chrono::seconds(w.time_limit_s));
  limit.async_wait([&](asio::error_code ec) {
    if (ec) return;
    std::printf("timeout\n");
    rc = 1;
    io.stop();
  });
  conn->connect();
  io.run();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Workload w;
  CLI::App app{"mtcp-bank-client: the bank workload and its checker (docs/dbfrontend.md)"};
  app.require_subcommand(1);
  auto common = [&](CLI::App* sc) {
    sc->add_option("--conninfo", w.conninfo, "libpq connection string of the bank database")->required();
    sc->add_flag("-J,--json", w.json_out, "one JSON object on stdout");
  };
  auto workload = [&](CLI::App* sc) {
    sc->add_option("--sessions", w.sessions, "concurrent sessions")->check(CLI::Range(1, 256))->capture_default_str();
    sc->add_option("--requests", w.requests, "requests per session")->check(CLI::Range(1, 10000000))->capture_default_str();
    sc->add_option("--accounts", w.accounts, "accounts (as made by setup)")->check(CLI::Range(2, 1000000))->capture_default_str();
    sc->add_option("--balance", w.balance, "initial balance of each account (as made by setup)")->check(CLI::Range(0, 1000000000))->capture_default_str();
    sc->add_option("--tx-percent", w.tx_percent, "interactive transactions among the steps")->check(CLI::Range(0, 90))->capture_default_str();
    sc->add_option("--audit-percent", w.audit_percent, "audits among the steps")->check(CLI::Range(0, 10))->capture_default_str();
    sc->add_option("--seed", w.seed, "workload seed")->capture_default_str();
  };
  auto* setup = app.add_subcommand("setup", "create the schema and the accounts (drops earlier data)");
  common(setup);
  setup->add_option("--accounts", w.accounts, "accounts")->check(CLI::Range(2, 1000000))->capture_default_str();
  setup->add_option("--balance", w.balance, "initial balance of each account")->check(CLI::Range(0, 1000000000))->capture_default_str();
  auto* run = app.add_subcommand("run", "the workload through M-TCP front-ends started here, then the check");
  common(run);
  workload(run);
  run->add_option("--pool", w.pool_path, "pool file of the front-ends")->required();
  run->add_option("--frontend", w.frontend, "path of mtcp-bank-frontend (started once per pool member)")->required();
  run->add_option("--migrate-every", w.migrate_every, "requests of a session between its migrations (0: none)")->capture_default_str();
  run->add_option("--kill-every", w.kill_every, "acknowledged requests between SIGKILLs of a front-end (0: none)")->capture_default_str();
  run->add_option("-t,--time-limit", w.time_limit_s, "give up after this many seconds")->check(CLI::Range(1, 86400))->capture_default_str();
  auto* base = app.add_subcommand("baseline", "the same transactions straight on libpq, then the check");
  common(base);
  workload(base);
  auto* scr = app.add_subcommand("script", "one session driven by directives on stdin (the tests)");
  uint32_t first = 0;
  scr->add_option("--pool", w.pool_path, "pool file")->required();
  scr->add_option("--first", first, "member to connect to first (0: the pool's first)");
  scr->add_option("-t,--time-limit", w.time_limit_s, "give up after this many seconds")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; bad usage: 2
  }
  if (*scr) return do_script(w, first);
  if (w.tx_percent + w.audit_percent > 100) {
    std::fprintf(stderr, "mtcp-bank-client: --tx-percent + --audit-percent must be at most 100\n");
    return 2;
  }
  if (*setup) return do_setup(w);
  if (*run) return do_run(w);
  return do_baseline(w);
}
