#include "runtime/admin.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace mtcp::rt {

using json = nlohmann::ordered_json;
using local = asio::local::stream_protocol;

namespace {

constexpr std::chrono::milliseconds kAcceptRetry{100};  // after an accept error (EMFILE...)

std::string errno_text(int e) { return std::strerror(e); }

const char* role_name(core::ServerEngine::ConnInfo::Role r) {
  switch (r) {
    case core::ServerEngine::ConnInfo::Role::owner:
      return "owner";
    case core::ServerEngine::ConnInfo::Role::frozen:
      return "frozen";
    case core::ServerEngine::ConnInfo::Role::replica:
      return "replica";
  }
  return "?";
}

json fail(std::string error) { return json{{"ok", false}, {"error", std::move(error)}}; }

// Connects to the socket file at `path` without blocking: a live listener answers (or has a
// full backlog), a stale file refuses. Returns 0 (live), ECONNREFUSED (stale) or the errno.
int probe(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  int e = rc == 0 ? 0 : errno;
  ::close(fd);
  if (e == EAGAIN || e == EINPROGRESS) return 0;
  return e;
}

// Field checks: a request is an object with "cmd" and only the fields that command takes.
bool check_fields(const json& req, std::initializer_list<const char*> allowed, std::string& why) {
  for (const auto& [key, value] : req.items()) {
    if (key == "cmd") continue;
    bool ok = false;
    for (const char* a : allowed) ok |= key == a;
    if (!ok) {
      why = "unknown field \"" + key + "\" for " + req["cmd"].get<std::string>();
      if (allowed.size() == 0) {
        why += " (it takes no fields)";
      } else {
        why += " (fields:";
        for (const char* a : allowed) why += std::string(" ") + a;
        why += ")";
      }
      return false;
    }
  }
  return true;
}

bool get_unsigned(const json& req, const char* name, uint64_t max, bool required, uint64_t& out,
                  std::string& why) {
  auto it = req.find(name);
  if (it == req.end()) {
    if (required) why = std::string("missing field \"") + name + "\"";
    return !required;
  }
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    why = std::string("field \"") + name + "\" must be an integer from 0 to " + std::to_string(max);
    return false;
  }
  out = it->get<uint64_t>();
  return true;
}

}  // namespace

struct AdminServer::Client {
  Client(local::socket s, asio::io_context& io) : sock(std::move(s)), idle(io) {}
  local::socket sock;
  asio::steady_timer idle;
  std::string in;           // received, not yet processed
  bool discarding = false;  // after "request too long": drop everything up to the next newline
  bool reading = false;
  bool writing = false;
  bool eof = false;  // the client half-closed: answer what it sent, then close
  bool closed = false;
  std::string out;
  std::array<char, 4096> chunk{};
};

AdminServer::AdminServer(asio::io_context& io, ServerNode& node, std::string path)
    : io_(io),
      node_(node),
      path_(std::move(path)),
      acceptor_(io),
      drain_timer_(io),
      accept_retry_(io) {}

AdminServer::~AdminServer() {
  *alive_ = false;
  stop();
}

bool AdminServer::start(std::string& why) {
  if (started_) {
    why = "admin socket already started";
    return false;
  }
  if (path_.empty()) {
    why = "the admin socket path is empty";
    return false;
  }
  if (path_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    why = "path too long for a local socket (" + std::to_string(path_.size()) + " bytes, at most " +
          std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + ")";
    return false;
  }
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      why = "the path exists and is not a socket (not replacing it)";
      return false;
    }
    int e = probe(path_);
    if (e == 0) {
      why =
          "a live process already answers there (another member?); stop it or choose another path";
      return false;
    }
    if (e == ECONNREFUSED) {
      // Left behind by a member that died: nobody listens, replace it.
      if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
        why = "cannot remove the stale socket file: " + errno_text(errno);
        return false;
      }
    } else if (e != ENOENT) {
      why = "cannot check the existing socket file: " + errno_text(e);
      return false;
    }
  }
  asio::error_code ec;
  acceptor_.open(local(), ec);
  if (!ec) acceptor_.bind(local::endpoint(path_), ec);
  if (ec) {
    why = "cannot bind: " + ec.message();
    asio::error_code ignore;
    acceptor_.close(ignore);
    return false;
  }
  // Only this user may drive the member (mtcpctl can move every client away).
  ::chmod(path_.c_str(), 0600);
  if (::lstat(path_.c_str(), &st) == 0) {
    file_dev_ = st.st_dev;
    file_ino_ = st.st_ino;
  }
  started_ = true;
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    why = "cannot listen: " + ec.message();
    stop();
    return false;
  }
  accept();
  return true;
}

void AdminServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  acceptor_.close(ec);
  drain_timer_.cancel();
  accept_retry_.cancel();
  for (const auto& c : std::set<std::shared_ptr<Client>>(clients_)) close(c);
  if (started_) {
    // Remove the file only if it is still the one we bound (not a successor's socket).
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == file_dev_ && st.st_ino == file_ino_)
      ::unlink(path_.c_str());
  }
}

// ---- admin connections --------------------------------------------------------------------

void AdminServer::accept() {
  acceptor_.async_accept([this, alive = alive_](asio::error_code ec, local::socket sock) {
    if (!*alive || stopped_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors or similar: try again a little later rather than spin.
      accept_retry_.expires_after(kAcceptRetry);
      accept_retry_.async_wait([this, alive2 = alive_](asio::error_code e) {
        if (!e && *alive2 && !stopped_) accept();
      });
      return;
    }
    if (clients_.size() >= kClientsMax) {
      auto msg = std::make_shared<std::string>(fail("too many admin clients (at most " +
                                                    std::to_string(kClientsMax) +
                                                    " at once); try again later")
                                                   .dump() +
                                               "\n");
      auto s = std::make_shared<local::socket>(std::move(sock));
      asio::async_write(*s, asio::buffer(*msg), [s, msg](asio::error_code, size_t) {
        asio::error_code ignore;
        s->close(ignore);
      });
    } else {
      auto c = std::make_shared<Client>(std::move(sock), io_);
      clients_.insert(c);
      arm_idle(c);
      read(c);
    }
    accept();
  });
}

void AdminServer::arm_idle(const std::shared_ptr<Client>& c) {
  c->idle.expires_after(kClientIdleMax);
  c->idle.async_wait([this, c, alive = alive_](asio::error_code ec) {
    if (!ec && *alive) close(c);
  });
}

void AdminServer::close(const std::shared_ptr<Client>& c) {
  if (c->closed) return;
  c->closed = true;
  asio::error_code ignore;
  c->sock.close(ignore);
  c->idle.cancel();
  clients_.erase(c);
}

void AdminServer::read(const std::shared_ptr<Client>& c) {
  if (c->closed || c->reading || c->writing || c->eof) return;
  c->reading = true;
  c->sock.async_read_some(asio::buffer(c->chunk),
                          [this, c, alive = alive_](asio::error_code ec, size_t n) {
                            c->reading = false;
                            if (!*alive || c->closed) return;
                            if (ec) {
                              if (ec != asio::error::eof) {
                                close(c);
                                return;
                              }
                              c->eof = true;
                            } else {
                              c->in.append(c->chunk.data(), n);
                              arm_idle(c);
                            }
                            process(c);
                          });
}

// Answers complete lines one at a time: the next one only once the reply is written, so a
// client that does not read its replies stops being read (bounded memory per client).
void AdminServer::process(const std::shared_ptr<Client>& c) {
  while (!c->closed && !c->writing) {
    size_t nl = c->in.find('\n');
    if (c->discarding) {
      if (nl == std::string::npos) {
        c->in.clear();
        break;
      }
      c->in.erase(0, nl + 1);
      c->discarding = false;
      continue;
    }
    if (nl == std::string::npos) {
      if (c->in.size() > kRequestBytesMax) {
        c->in.clear();
        c->discarding = true;
        write(c, fail("request too long (more than " + std::to_string(kRequestBytesMax) +
                      " bytes without a newline)")
                     .dump());
        return;
      }
      if (c->eof) {
        // A last request without a newline still gets its answer.
        std::string last = std::exchange(c->in, {});
        if (last.find_first_not_of(" \t\r") != std::string::npos) {
          write(c, handle(last));
          return;
        }
        close(c);
        return;
      }
      break;
    }
    std::string line = c->in.substr(0, nl);
    c->in.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > kRequestBytesMax) {
      write(c, fail("request too long (" + std::to_string(line.size()) + " bytes, at most " +
                    std::to_string(kRequestBytesMax) + ")")
                   .dump());
      return;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
    write(c, handle(line));
    return;
  }
  read(c);
}

void AdminServer::write(const std::shared_ptr<Client>& c, std::string reply) {
  c->out = std::move(reply);
  c->out.push_back('\n');
  c->writing = true;
  asio::async_write(c->sock, asio::buffer(c->out),
                    [this, c, alive = alive_](asio::error_code ec, size_t) {
                      c->writing = false;
                      if (!*alive || c->closed) return;
                      if (ec) {
                        close(c);
                        return;
                      }
                      c->out.clear();
                      c->out.shrink_to_fit();  // a list reply can be large
                      process(c);
                    });
}

// ---- requests -----------------------------------------------------------------------------

std::string AdminServer::handle(std::string_view line) {
  json reply;
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at ...": keep the readable part.
    if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      what.erase(0, p + 2);
    return fail("malformed JSON: " + what).dump(-1, ' ', false, json::error_handler_t::replace);
  }
  auto& engine = node_.engine();
  const auto& pool = engine.config().pool;
  std::string why;
  auto check_target = [&](const json& r, core::ServerId& to) {
    uint64_t v = 0;
    if (!get_unsigned(r, "to", UINT32_MAX, false, v, why)) return false;
    to = static_cast<core::ServerId>(v);
    if (to == 0) return true;
    if (to == engine.self()) {
      why = "member " + std::to_string(to) + " is this member; name another one, or 0 for any";
      return false;
    }
    bool found = false;
    std::string ids;
    for (const auto& a : pool) {
      found |= a.server_id == to;
      ids += (ids.empty() ? "" : ", ") + std::to_string(a.server_id);
    }
    if (!found) why = "member " + std::to_string(to) + " is not in the pool (members: " + ids + ")";
    return found;
  };

  if (!req.is_object()) {
    reply = fail("a request must be a JSON object such as {\"cmd\":\"status\"}");
  } else if (!req.contains("cmd")) {
    reply = fail("missing field \"cmd\" (status, list, migrate, drain or undrain)");
  } else if (!req["cmd"].is_string()) {
    reply = fail("field \"cmd\" must be a string (status, list, migrate, drain or undrain)");
  } else {
    const std::string cmd = req["cmd"].get<std::string>();
    if (cmd == "status") {
      if (!check_fields(req, {}, why))
        return fail(why).dump(-1, ' ', false, json::error_handler_t::replace);
      auto owned = engine.owned_connections();
      size_t attached = 0;
      for (auto id : owned) {
        auto info = engine.conn_info(id);
        attached += info && info->attached;
      }
      json counters = json::object();
      engine.counters().for_each([&](const char* name, uint64_t v) { counters[name] = v; });
      node_.runtime_counters().for_each([&](const char* name, uint64_t v) { counters[name] = v; });
      reply = {{"ok", true},
               {"member", engine.self()},
               {"draining", draining_},
               {"connection_count", engine.connection_count()},
               {"buffered_bytes", engine.buffered_bytes()},
               {"buffered_bytes_max", engine.config().limits.member_buffered_bytes_max},
               {"subflow_count", engine.subflow_count()},
               {"owned", owned.size()},
               {"owned_attached", attached},
               {"transfer",
                engine.config().limits.transfer_mode == TransferMode::eager ? "eager" : "lazy"},
               {"admin_clients", clients_.size()},
               {"counters", counters}};
      if (draining_) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - drain_since_)
                      .count();
        reply["drain"] = {
            {"to", drain_to_}, {"for_ms", ms}, {"rounds", drain_rounds_}, {"hints", drain_hints_}};
      }
    } else if (cmd == "list") {
      if (!check_fields(req, {}, why))
        return fail(why).dump(-1, ' ', false, json::error_handler_t::replace);
      json conns = json::array();
      for (auto id : engine.owned_connections()) {
        auto i = engine.conn_info(id);
        if (!i) continue;
        conns.push_back({{"conn", i->conn},
                         {"role", role_name(i->role)},
                         {"epoch", i->epoch},
                         {"counter", i->counter},
                         {"attached", i->attached},
                         {"in_end", i->in_end},
                         {"app_in", i->app_in},
                         {"out_end", i->out_end},
                         {"out_acked", i->out_acked},
                         {"snap_id", i->snap_id}});
      }
      size_t listed = conns.size();
      reply = {{"ok", true},
               {"member", engine.self()},
               {"draining", draining_},
               {"connections", std::move(conns)},
               // Frozen and replica entries: counted by the engine, not enumerable through it.
               {"other_connections",
                engine.connection_count() - std::min(engine.connection_count(), listed)}};
    } else if (cmd == "migrate") {
      uint64_t conn = 0;
      core::ServerId to = 0;
      if (!check_fields(req, {"conn", "to"}, why) ||
          !get_unsigned(req, "conn", UINT64_MAX, true, conn, why) || !check_target(req, to)) {
        reply = fail(why);
      } else if (auto info = engine.conn_info(conn); !info) {
        reply = fail("unknown connection " + std::to_string(conn) + " (see list)");
      } else if (info->role != core::ServerEngine::ConnInfo::Role::owner) {
        reply = fail("connection " + std::to_string(conn) +
                     " is not owned by this member (role here: " + role_name(info->role) +
                     "); ask its owner");
      } else if (Status st = engine.conn_hint(conn, wire::HintReason::operator_request, to); !st) {
        reply = fail(st.error() == Error::closed
                         ? "connection " + std::to_string(conn) +
                               " has no client subflow attached right now; no hint sent"
                         : "connection " + std::to_string(conn) +
                               ": hint not sent: " + std::string(to_string(st.error())));
      } else {
        node_.service();
        reply = {{"ok", true}, {"conn", conn}, {"to", to}, {"hinted", true}};
      }
    } else if (cmd == "drain") {
      core::ServerId to = 0;
      if (!check_fields(req, {"to"}, why) || !check_target(req, to)) {
        reply = fail(why);
      } else {
        if (!draining_) {
          drain_since_ = std::chrono::steady_clock::now();
          drain_rounds_ = 0;
          drain_hints_ = 0;
        }
        bool was = draining_;
        draining_ = true;
        drain_to_ = to;
        size_t unattached = 0;
        size_t hinted = hint_all(unattached);
        if (!was) {
          drain_timer_.expires_after(kRehintEvery);
          drain_timer_.async_wait([this, alive = alive_](asio::error_code ec) {
            if (!ec && *alive) drain_tick();
          });
        }
        reply = {{"ok", true},       {"draining", true},
                 {"to", to},         {"owned", hinted + unattached},
                 {"hinted", hinted}, {"unattached", unattached}};
      }
    } else if (cmd == "undrain") {
      if (!check_fields(req, {}, why))
        return fail(why).dump(-1, ' ', false, json::error_handler_t::replace);
      bool was = std::exchange(draining_, false);
      drain_timer_.cancel();
      reply = {{"ok", true}, {"draining", false}, {"was_draining", was}};
    } else {
      reply = fail("unknown command \"" + cmd + "\" (status, list, migrate, drain or undrain)");
    }
  }
  return reply.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- drain --------------------------------------------------------------------------------

size_t AdminServer::hint_all(size_t& unattached) {
  auto& engine = node_.engine();
  size_t hinted = 0;
  unattached = 0;
  for (auto id : engine.owned_connections()) {
    if (engine.conn_hint(id, wire::HintReason::draining, drain_to_))
      ++hinted;
    else
      ++unattached;
  }
  ++drain_rounds_;
  drain_hints_ += hinted;
  // Put the HINT frames on the wire now (the engine only queues them).
  if (hinted) node_.service();
  return hinted;
}

void AdminServer::drain_tick() {
  if (!draining_ || stopped_) return;
  size_t unattached = 0;
  hint_all(unattached);
  drain_timer_.expires_after(kRehintEvery);
  drain_timer_.async_wait([this, alive = alive_](asio::error_code ec) {
    if (!ec && *alive) drain_tick();
  });
}

}  // namespace mtcp::rt
