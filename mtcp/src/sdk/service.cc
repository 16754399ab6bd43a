#include "sdk/service.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/suggest.h"

namespace mtcp::sdk {

std::string ServiceDef::Option::key() const {
  std::string k = name;
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

void ServiceDef::opt(std::string name, uint64_t* value, std::string help, uint64_t max) {
  opt(std::move(name), value, std::move(help), 0, max);
}

void ServiceDef::opt(std::string name, uint64_t* value, std::string help, uint64_t min, uint64_t max) {
  Option o;
  o.type = Option::Type::u64;
  o.name = std::move(name);
  o.help = std::move(help);
  o.u64 = value;
  o.min = min;
  o.max = max;
  options_.push_back(std::move(o));
}

void ServiceDef::opt(std::string name, std::string* value, std::string help, size_t max_bytes) {
  Option o;
  o.type = Option::Type::text;
  o.name = std::move(name);
  o.help = std::move(help);
  o.text = value;
  o.text_bytes_max = max_bytes;
  options_.push_back(std::move(o));
}

void ServiceDef::opt(std::string name, bool* value, std::string help) {
  Option o;
  o.type = Option::Type::flag;
  o.name = std::move(name);
  o.help = std::move(help);
  o.flag = value;
  options_.push_back(std::move(o));
}

namespace {

// Empty if `v` is an acceptable value of text option `o`, else what is wrong with it.
std::string text_problem(const ServiceDef::Option& o, const std::string& v) {
  if (v.size() > o.text_bytes_max) return "is longer than " + std::to_string(o.text_bytes_max) + " bytes";
  if (v.find('\0') != std::string::npos) return "contains a NUL byte";
  return {};
}

}  // namespace

void ServiceDef::add_options(CLI::App& cli) {
  std::string group = "Options of the " + name_ + " service";
  for (Option& o : options_) {
    CLI::Option* c = nullptr;
    switch (o.type) {
      case Option::Type::u64:
        c = cli.add_option("--" + o.name, *o.u64, o.help)->capture_default_str()->check(CLI::Range(o.min, o.max));
        break;
      case Option::Type::text: {
        const Option* op = &o;
        c = cli.add_option("--" + o.name, *o.text, o.help)->capture_default_str()->check(CLI::Validator(
            [op](std::string& v) {
              std::string p = text_problem(*op, v);
              return p.empty() ? std::string() : "--" + op->name + " " + p;
            },
            "TEXT"));
        break;
      }
      case Option::Type::flag:
        c = cli.add_flag("--" + o.name, *o.flag, o.help);
        break;
    }
    c->group(group);
    o.cli = c;
  }
}

bool ServiceDef::configure_json(const std::string& section_json, std::string& why) {
  nlohmann::json j = nlohmann::json::parse(section_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    why = "services." + name_ + " must be a JSON object";
    return false;
  }
  // Check every key before setting any, so a refused section changes nothing.
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto match = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.key() == it.key(); });
    std::string where = "services." + name_ + "." + it.key();
    if (match == options_.end()) {
      std::string known;
      std::vector<std::string> keys;
      for (const Option& o : options_) {
        known += (known.empty() ? "" : ", ") + o.key();
        keys.push_back(o.key());
      }
      why = where + ": unknown option" + did_you_mean(it.key(), keys) + " (known: " + (known.empty() ? "none" : known) + ")";
      return false;
    }
    const auto& v = it.value();
    switch (match->type) {
      case Option::Type::u64:
        if (!v.is_number_unsigned() || v.get<uint64_t>() < match->min || v.get<uint64_t>() > match->max) {
          why = where + " must be an integer from " + std::to_string(match->min) + " to " + std::to_string(match->max);
          return false;
        }
        break;
      case Option::Type::text:
        if (!v.is_string()) {
          why = where + " must be a string";
          return false;
        }
        if (std::string p = text_problem(*match, v.get<std::string>()); !p.empty()) {
          why = where + " " + p;
          return false;
        }
        break;
      case Option::Type::flag:
        if (!v.is_boolean()) {
          why = where + " must be true or false";
          return false;
        }
        break;
    }
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto match = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.key() == it.key(); });
    if (match->cli && static_cast<const CLI::Option*>(match->cli)->count() > 0) continue;  // the command line wins
    switch (match->type) {
      case Option::Type::u64: *match->u64 = it.value().get<uint64_t>(); break;
      case Option::Type::text: *match->text = it.value().get<std::string>(); break;
      case Option::Type::flag: *match->flag = it.value().get<bool>(); break;
    }
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
