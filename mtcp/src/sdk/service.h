// The service registry (docs/API.md "services"). A service registers by name with its own
// typed options; a pool member (`mtcpd --service NAME`, `mtcp-perf -s --app NAME`) finds it
// here, sets its options from the pool file's "services" section and then from the command
// line, and starts it with the member's environment to get the factory of its app instances.
//
// Options are declared once, in the service's constructor (opt()): integers with a range, text
// with a length limit, and on/off flags. Each becomes a command-line option `--NAME` in the
// service's own option group and a key NAME (dashes as underscores) of its pool-file section.
// Unknown keys, wrong types, out-of-range numbers and over-long text are refused with a message
// naming the option.
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

  // One declared option. Exactly one of u64/text/flag is bound, by type.
  struct Option {
    enum class Type { u64, text, flag } type = Type::u64;
    std::string name;  // command-line spelling without the dashes, e.g. "snapshot-every"
    std::string help;
    uint64_t* u64 = nullptr;
    uint64_t min = 0, max = UINT64_MAX;  // u64: inclusive range
    std::string* text = nullptr;
    size_t text_bytes_max = 0;  // text: longest accepted value
    bool* flag = nullptr;
    const void* cli = nullptr;  // the CLI11 option, once add_options() made it
    std::string key() const;    // its pool-file key: the name with dashes as underscores
  };
  const std::vector<Option>& options() const { return options_; }

  // Longest text option value unless the service says otherwise (a path, a conninfo string).
  static constexpr size_t kTextOptionBytesMax = 4096;

 protected:
  // Declare options bound to `value` (its current value is the default).
  // An integer from 0 (or min) to max, inclusive.
  void opt(std::string name, uint64_t* value, std::string help, uint64_t max = UINT64_MAX);
  void opt(std::string name, uint64_t* value, std::string help, uint64_t min, uint64_t max);
  // Text of at most max_bytes bytes, without NUL bytes (a file name, a connection string).
  void opt(std::string name, std::string* value, std::string help, size_t max_bytes = kTextOptionBytesMax);
  // On/off: `--NAME` on the command line (or `--NAME=false`), true/false in the pool file.
  void opt(std::string name, bool* value, std::string help);

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
