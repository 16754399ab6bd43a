#include "runtime/pool_config.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "common/suggest.h"

#include "runtime/address.h"

namespace mtcp::rt {
namespace {

bool read_file(const std::filesystem::path& p, std::string& out) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return false;
  std::ostringstream s;
  s << f.rdbuf();
  out = s.str();
  return true;
}

bool parse_key(const std::string& raw, cert::Key& key) {
  if (raw.size() == key.size()) {
    std::copy(raw.begin(), raw.end(), key.begin());
    return true;
  }
  std::string hex;
  for (char ch : raw) {
    if (!std::isspace(static_cast<unsigned char>(ch))) hex.push_back(ch);
  }
  if (hex.size() != 2 * key.size()) return false;
  for (size_t i = 0; i < key.size(); ++i) {
    unsigned v = 0;
    if (std::sscanf(hex.c_str() + 2 * i, "%2x", &v) != 1) return false;
    key[i] = static_cast<uint8_t>(v);
  }
  return true;
}

// Group or other permission bits on a file that holds the pool key: anyone who reads the key
// can mint certificates for every member's connections (docs/security.md).
bool too_open(const std::filesystem::path& p, std::string& mode) {
  std::error_code ec;
  const auto bits = std::filesystem::status(p, ec).permissions();
  if (ec) return false;
  using P = std::filesystem::perms;
  if ((bits & (P::group_read | P::group_write | P::others_read | P::others_write)) == P::none) return false;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(bits & P::mask));
  mode = buf;
  return true;
}

// One settable limit: its key, its inclusive range and where it goes.
struct LimitField {
  const char* name;
  uint64_t min;
  uint64_t max;
  void (*set)(Limits&, uint64_t);
};

#define MTCP_LIMIT(field, lo, hi) \
  LimitField { #field, lo, hi, [](Limits& l, uint64_t v) { l.field = static_cast<decltype(l.field)>(v); } }

constexpr uint64_t kDayMs = 24ull * 3600 * 1000;

// Ranges: the wire caps where there is one (common/limits.h), else a bound well beyond any
// sane deployment that still keeps every product and sum inside 64 bits.
const LimitField kLimitFields[] = {
    MTCP_LIMIT(frame_payload_bytes_max, 1, kFramePayloadBytesMax),
    MTCP_LIMIT(snapshot_bytes_max, 1, kSnapshotBytesMax),
    MTCP_LIMIT(input_log_bytes_max, 1, kStateLogBytesMax),
    MTCP_LIMIT(send_log_bytes_max, 1, kStateLogBytesMax),
    MTCP_LIMIT(recv_buffer_bytes_max, 1, 1ull << 30),
    MTCP_LIMIT(connections_max, 1, 1ull << 24),
    MTCP_LIMIT(pending_migrations_max, 1, 1ull << 20),
    MTCP_LIMIT(subflows_max, 1, 1ull << 24),
    MTCP_LIMIT(member_buffered_bytes_max, 1ull << 20, 1ull << 40),
    MTCP_LIMIT(hello_timeout_ms, 1, 600000),
    MTCP_LIMIT(cert_lifetime_ms, 2, 30 * kDayMs),
    MTCP_LIMIT(claim_timeout_ms, 1, 600000),
    MTCP_LIMIT(lazy_claim_timeout_ms, 1, 600000),
    MTCP_LIMIT(migrate_timeout_ms, 1, 600000),
    MTCP_LIMIT(replication_retry_ms, 1, 600000),
    MTCP_LIMIT(replication_batch_ms, 0, 1000),
    MTCP_LIMIT(replication_batch_bytes, 1, 1ull << 30),
    MTCP_LIMIT(replication_window_bytes, 64ull << 10, 1ull << 34),
    MTCP_LIMIT(ack_delay_ms, 0, 1000),
    MTCP_LIMIT(ack_delay_bytes, 1, 1ull << 30),
    MTCP_LIMIT(orphan_timeout_ms, 1, 30 * kDayMs),
    MTCP_LIMIT(replica_timeout_ms, 1, 30 * kDayMs),
    MTCP_LIMIT(migrate_requests_per_s_max, 1, 10000000),
    MTCP_LIMIT(migrate_attempts_max, 1, 1000),
    MTCP_LIMIT(retry_backoff_ms, 0, 600000),
    MTCP_LIMIT(retry_backoff_max_ms, 0, 3600000),
    MTCP_LIMIT(claim_hops_max, 0, kPoolServersMax),
    MTCP_LIMIT(plain_idle_timeout_ms, 1, 30 * kDayMs),
    MTCP_LIMIT(plain_connections_max, 1, 1ull << 24),
    MTCP_LIMIT(control_hello_timeout_ms, 1, 600000),
    MTCP_LIMIT(control_idle_timeout_ms, 1000, 30 * kDayMs),
};
#undef MTCP_LIMIT

// Refuses any key of `obj` not in `known`, naming it and the closest known one.
bool only_known_keys(const nlohmann::json& obj, const std::string& where, const std::vector<std::string>& known,
                     std::string& why) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    why = "unknown key \"" + where + it.key() + "\"" + did_you_mean(it.key(), known) + "; known: " + list;
    return false;
  }
  return true;
}

}  // namespace

const Member* PoolConfig::find(core::ServerId id) const {
  for (const auto& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

bool load_pool_config(const std::string& path, PoolConfig& out, std::string& why) {
  std::string text;
  if (!read_file(path, text)) {
    why = path + ": cannot read the pool file";
    return false;
  }
  return parse_pool_config(text, path, out, why);
}

bool parse_pool_config(std::string_view text, const std::string& path, PoolConfig& out, std::string& why) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    why = path + ": not a JSON object";
    return false;
  }
  auto fail = [&](const std::string& what) {
    why = path + ": " + what;
    return false;
  };
  PoolConfig cfg;
  {
    std::string bad;
    if (!only_known_keys(j, "", {"pool_key_file", "pool_key", "insecure_key_file", "transfer", "ack_after_replication",
                                 "members", "limits", "services"},
                         bad))
      return fail(bad);
  }
  bool insecure_ok = false;
  if (j.contains("insecure_key_file")) {
    if (!j["insecure_key_file"].is_boolean()) return fail("insecure_key_file must be true or false");
    insecure_ok = j["insecure_key_file"].get<bool>();
  }
  // A key readable by others is refused (like ssh's private keys), unless the file says it
  // knows; then it is accepted with a warning the member prints.
  auto check_mode = [&](const std::filesystem::path& p, const char* what) {
    std::string mode;
    if (!too_open(p, mode)) return true;
    std::string msg = std::string(what) + " " + p.string() + " is readable or writable by group or others (mode " + mode +
                      "): anyone who reads it can take over the pool's connections; chmod 600 it";
    if (!insecure_ok) {
      why = path + ": " + msg + " (or set \"insecure_key_file\": true to accept it with a warning)";
      return false;
    }
    cfg.warnings.push_back("warning: " + msg + " (accepted: insecure_key_file is true)");
    return true;
  };
  if (j.contains("pool_key_file") && j.contains("pool_key")) return fail("give pool_key_file or pool_key, not both");
  // Pool key.
  if (j.contains("pool_key_file")) {
    if (!j["pool_key_file"].is_string()) return fail("pool_key_file must be a string");
    std::filesystem::path key_path = j["pool_key_file"].get<std::string>();
    if (key_path.is_relative()) key_path = std::filesystem::path(path).parent_path() / key_path;
    std::string raw;
    if (!read_file(key_path, raw)) return fail("cannot read the pool key file " + key_path.string());
    if (!check_mode(key_path, "the pool key file")) return false;
    if (!parse_key(raw, cfg.pool_key)) return fail("pool key file " + key_path.string() + " must hold 32 bytes or 64 hex digits");
  } else if (j.contains("pool_key")) {
    if (!j["pool_key"].is_string() || !parse_key(j["pool_key"].get<std::string>(), cfg.pool_key))
      return fail("pool_key must be 64 hex digits");
    if (!check_mode(path, "the pool file (it holds pool_key)")) return false;
  } else {
    return fail("no pool_key_file (or pool_key) given");
  }
  // Transfer mode.
  if (j.contains("transfer") && !j["transfer"].is_string()) return fail("transfer must be \"lazy\" or \"eager\"");
  std::string mode = j.value("transfer", std::string("lazy"));
  if (mode == "lazy") cfg.limits.transfer_mode = TransferMode::lazy;
  else if (mode == "eager") cfg.limits.transfer_mode = TransferMode::eager;
  else return fail("transfer must be \"lazy\" or \"eager\", not \"" + mode + "\"");
  if (j.contains("ack_after_replication")) {
    if (!j["ack_after_replication"].is_boolean()) return fail("ack_after_replication must be true or false");
    cfg.limits.ack_after_replication = j["ack_after_replication"].get<bool>();
  }
  if (cfg.limits.ack_after_replication && cfg.limits.transfer_mode != TransferMode::eager)
    return fail("ack_after_replication needs \"transfer\": \"eager\"");
  // Members.
  if (!j.contains("members") || !j["members"].is_array() || j["members"].empty())
    return fail("members must be a non-empty array");
  std::set<core::ServerId> ids;
  std::set<std::string> addrs;
  for (const auto& m : j["members"]) {
    if (!m.is_object() || !m.contains("id") || !m["id"].is_number_unsigned())
      return fail("each member needs a positive integer id");
    {
      std::string bad;
      if (!only_known_keys(m, "members[].", {"id", "data", "control"}, bad)) return fail(bad);
    }
    Member mem;
    uint64_t id = m["id"].get<uint64_t>();
    if (id == 0 || id > UINT32_MAX) return fail("member id " + std::to_string(id) + " out of range 1..4294967295");
    mem.id = static_cast<core::ServerId>(id);
    if (!ids.insert(mem.id).second) return fail("member id " + std::to_string(id) + " appears twice");
    for (auto [key, field] : {std::pair<const char*, std::string*>{"data", &mem.data}, {"control", &mem.control}}) {
      if (!m.contains(key) || !m[key].is_string()) return fail("member " + std::to_string(id) + " needs a \"" + key + "\" address");
      *field = m[key].get<std::string>();
      asio::ip::tcp::endpoint ep;
      std::string bad;
      if (!parse_endpoint(*field, ep, bad)) return fail("member " + std::to_string(id) + " " + key + ": " + bad);
      if (!addrs.insert(to_string(ep)).second) return fail("address " + *field + " is used twice");
    }
    cfg.members.push_back(std::move(mem));
  }
  if (cfg.members.size() > kPoolServersMax) return fail("at most " + std::to_string(kPoolServersMax) + " members");
  if (cfg.members.size() - 1 > kAlternatesMax) return fail("at most " + std::to_string(kAlternatesMax + 1) + " members (alternates per WELCOME)");
  // Limit overrides: every key known, every value an integer in its range.
  if (j.contains("limits")) {
    const auto& l = j["limits"];
    if (!l.is_object()) return fail("limits must be an object");
    std::vector<std::string> names;
    for (const auto& f : kLimitFields) names.emplace_back(f.name);
    std::string bad;
    if (!only_known_keys(l, "limits.", names, bad)) return fail(bad);
    for (const auto& f : kLimitFields) {
      if (!l.contains(f.name)) continue;
      const auto& v = l[f.name];
      if (!v.is_number_unsigned() || v.get<uint64_t>() < f.min || v.get<uint64_t>() > f.max)
        return fail(std::string("limits.") + f.name + " must be an integer from " + std::to_string(f.min) + " to " +
                    std::to_string(f.max) + " (got " + v.dump() + ")");
      f.set(cfg.limits, v.get<uint64_t>());
    }
    if (cfg.limits.retry_backoff_max_ms < cfg.limits.retry_backoff_ms)
      return fail("limits.retry_backoff_max_ms must be at least limits.retry_backoff_ms (" +
                  std::to_string(cfg.limits.retry_backoff_ms) + ")");
  }
  if (j.contains("services")) {
    const auto& sv = j["services"];
    if (!sv.is_object()) return fail("services must be an object of service name to options");
    for (auto it = sv.begin(); it != sv.end(); ++it) {
      if (!it.value().is_object()) return fail("services." + it.key() + " must be an object");
      cfg.services[it.key()] = it.value().dump();
    }
  }
  out = std::move(cfg);
  return true;
}

}  // namespace mtcp::rt
