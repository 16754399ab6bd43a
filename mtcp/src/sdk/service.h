// The service registry (docs/API.md "services"). A service registers by name with its own
// typed options; a pool member (`mtcpd --service NAME`, `mtcp-perf -s --app NAME`) finds it
// here, sets its options from the pool file's "services" section and then from the command
// line, and starts it with the member's environment to get the factory of its app instances.
//
// Options are declared once, in the service's constructor (opt()): each becomes a command-line
// option `--NAME` in the service's own option group and a key NAME (dashes as underscores) of
// its pool-file section. Unknown keys, wrong types and out-of-range values are refused with a
// message naming the option.
#pragma once
#include <asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sdk/app.h"

namespace CLI {
class App;
}

namespace mtcp::sdk {

struct ServiceEnv {
  // The member's event loop: an app may wait on its own descriptors and timers there (a libpq
  // socket, a GLib main context). Null where there is none (the simulator, sans-IO tests): a
  // service that needs one refuses to start there.
  asio::io_context* io = nullptr;
  std::function<void(const std::string&)> log;  // one line, no newline; never null
};

class ServiceDef {
 public:
  explicit ServiceDef(std::string name, std::string summary) : name_(std::move(name)), summary_(std::move(summary)) {}
  virtual ~ServiceDef() = default;
  ServiceDef(const ServiceDef&) = delete;
  ServiceDef& operator=(const ServiceDef&) = delete;

  const std::string& name() const { return name_; }
  const std::string& summary() const { return summary_; }

  // Adds this service's options to `cli` (an option group named after the service).
  void add_options(CLI::App& cli);
  // Sets options from a pool-file section (JSON object text), except those given on the
  // command line (which win). False with `why` naming the offending key.
  bool configure_json(const std::string& section_json, std::string& why);
  // Checks the options and makes the factory. False (null) with `why` if it cannot start.
  virtual std::unique_ptr<AppFactory> start(const ServiceEnv& env, std::string& why) = 0;

  struct Option {
    std::string name;  // command-line spelling without the dashes, e.g. "snapshot-every"
    std::string help;
    uint64_t* value = nullptr;
    uint64_t max = UINT64_MAX;  // inclusive
    const void* cli = nullptr;  // the CLI11 option, once add_options() made it
  };
  const std::vector<Option>& options() const { return options_; }

 protected:
  // Declares an option bound to `value` (its current value is the default).
  void opt(std::string name, uint64_t* value, std::string help, uint64_t max = UINT64_MAX);

 private:
  std::string name_, summary_;
  std::vector<Option> options_;
};

class Registry {
 public:
  // Registers a service; false if the name is taken.
  bool add(std::unique_ptr<ServiceDef> def);
  ServiceDef* find(std::string_view name) const;
  std::vector<const ServiceDef*> all() const;
  std::string names() const;  // "echo, ref, source"

 private:
  std::vector<std::unique_ptr<ServiceDef>> defs_;
};

// The factory most services need: one app instance per connection, made from a copy of the
// service's options.
template <class App, class Options>
class OptionsFactory final : public AppFactory {
 public:
  explicit OptionsFactory(Options o, bool verify = true) : o_(std::move(o)), verify_(verify) {}
  std::unique_ptr<ConnApp> make(ConnId) override { return std::make_unique<App>(o_); }
  bool verify_replay() const override { return verify_; }

 private:
  Options o_;
  bool verify_;
};

// Finds `--service NAME` / `--service=NAME` (or the given flag) in argv before the real parse,
// so that only that service's options are offered. Empty if absent.
std::string find_flag_value(int argc, char** argv, std::string_view flag);

}  // namespace mtcp::sdk
