#include "sdk/service.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <nlohmann/json.hpp>

namespace mtcp::sdk {

void ServiceDef::opt(std::string name, uint64_t* value, std::string help, uint64_t max) {
  options_.push_back({std::move(name), std::move(help), value, max});
}

void ServiceDef::add_options(CLI::App& cli) {
  std::string group = "Options of the " + name_ + " service";
  for (Option& o : options_) {
    o.cli = cli.add_option("--" + o.name, *o.value, o.help)
                ->group(group)
                ->capture_default_str()
                ->check(CLI::Range(uint64_t{0}, o.max));
  }
}

bool ServiceDef::configure_json(const std::string& section_json, std::string& why) {
  nlohmann::json j = nlohmann::json::parse(section_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    why = "services." + name_ + " must be a JSON object";
    return false;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto match = std::find_if(options_.begin(), options_.end(), [&](const Option& o) {
      std::string key = o.name;
      std::replace(key.begin(), key.end(), '-', '_');
      return key == it.key();
    });
    if (match == options_.end()) {
      std::string known;
      for (const Option& o : options_) {
        std::string key = o.name;
        std::replace(key.begin(), key.end(), '-', '_');
        known += (known.empty() ? "" : ", ") + key;
      }
      why = "services." + name_ + "." + it.key() + ": unknown option (known: " + (known.empty() ? "none" : known) + ")";
      return false;
    }
    if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() > match->max) {
      why = "services." + name_ + "." + it.key() + " must be an integer from 0 to " + std::to_string(match->max);
      return false;
    }
    if (match->cli && static_cast<const CLI::Option*>(match->cli)->count() > 0) continue;  // the command line wins
    *match->value = it.value().get<uint64_t>();
  }
  return true;
}

bool Registry::add(std::unique_ptr<ServiceDef> def) {
  if (!def || find(def->name())) return false;
  defs_.push_back(std::move(def));
  std::sort(defs_.begin(), defs_.end(), [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return true;
}

ServiceDef* Registry::find(std::string_view name) const {
  for (const auto& d : defs_) {
    if (d->name() == name) return d.get();
  }
  return nullptr;
}

std::vector<const ServiceDef*> Registry::all() const {
  std::vector<const ServiceDef*> v;
  for (const auto& d : defs_) v.push_back(d.get());
  return v;
}

std::string Registry::names() const {
  std::string s;
  for (const auto& d : defs_) s += (s.empty() ? "" : ", ") + d->name();
  return s;
}

std::string find_flag_value(int argc, char** argv, std::string_view flag) {
  std::string eq = std::string(flag) + "=";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") break;
    if (a == flag && i + 1 < argc) return argv[i + 1];
    if (a.starts_with(eq)) return std::string(a.substr(eq.size()));
  }
  return {};
}

}  // namespace mtcp::sdk
