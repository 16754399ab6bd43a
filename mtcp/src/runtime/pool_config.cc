#include "runtime/pool_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

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

template <typename T>
bool set_limit(const nlohmann::json& j, const char* name, T& field, std::string& why) {
  if (!j.contains(name)) return true;
  if (!j[name].is_number_unsigned()) {
    why = std::string("limits.") + name + " must be a non-negative integer";
    return false;
  }
  field = j[name].get<T>();
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
  // Pool key.
  if (j.contains("pool_key_file")) {
    if (!j["pool_key_file"].is_string()) return fail("pool_key_file must be a string");
    std::filesystem::path key_path = j["pool_key_file"].get<std::string>();
    if (key_path.is_relative()) key_path = std::filesystem::path(path).parent_path() / key_path;
    std::string raw;
    if (!read_file(key_path, raw)) return fail("cannot read the pool key file " + key_path.string());
    if (!parse_key(raw, cfg.pool_key)) return fail("pool key file " + key_path.string() + " must hold 32 bytes or 64 hex digits");
  } else if (j.contains("pool_key")) {
    if (!j["pool_key"].is_string() || !parse_key(j["pool_key"].get<std::string>(), cfg.pool_key))
      return fail("pool_key must be 64 hex digits");
  } else {
    return fail("no pool_key_file (or pool_key) given");
  }
  // Transfer mode.
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
  // Limit overrides.
  if (j.contains("limits")) {
    const auto& l = j["limits"];
    if (!l.is_object()) return fail("limits must be an object");
    Limits& d = cfg.limits;
    std::string bad;
    bool ok = set_limit(l, "frame_payload_bytes_max", d.frame_payload_bytes_max, bad) &&
              set_limit(l, "snapshot_bytes_max", d.snapshot_bytes_max, bad) &&
              set_limit(l, "input_log_bytes_max", d.input_log_bytes_max, bad) &&
              set_limit(l, "send_log_bytes_max", d.send_log_bytes_max, bad) &&
              set_limit(l, "recv_buffer_bytes_max", d.recv_buffer_bytes_max, bad) &&
              set_limit(l, "connections_max", d.connections_max, bad) &&
              set_limit(l, "claim_timeout_ms", d.claim_timeout_ms, bad) &&
              set_limit(l, "migrate_timeout_ms", d.migrate_timeout_ms, bad) &&
              set_limit(l, "orphan_timeout_ms", d.orphan_timeout_ms, bad) &&
              set_limit(l, "hello_timeout_ms", d.hello_timeout_ms, bad) &&
              set_limit(l, "cert_lifetime_ms", d.cert_lifetime_ms, bad) &&
              set_limit(l, "migrate_requests_per_s_max", d.migrate_requests_per_s_max, bad);
    if (!ok) return fail(bad);
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
