// client::Policy: when should a client::Connection migrate, and where. A small interface the
// Connection feeds with what happens on the connection and asks for decisions; the default
// (DefaultPolicy) wraps the sans-IO rt::MigrationPolicy (runtime/policy.h, docs/PROXY.md), and
// an application may pass its own (Options::policy_impl).
//
// The contract, as the Connection keeps it:
//   - every call runs on the Connection's io_context thread; `now` is milliseconds on a steady
//     clock (any origin, never decreasing);
//   - poll(now) is asked after each batch of inputs and at next_deadline(), but only while
//     the engine can migrate (established, no attempt running, a primary subflow) and the
//     connection is not closed in both directions;
//   - a decision stays pending until on_migration_started(): a policy whose decision could not
//     be acted on now (the engine refused it) is asked again later;
//   - next_deadline() is the one time the policy wants to be asked without any other input
//     (core::kNever: only after an input). The Connection arms one timer for it.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/types.h"
#include "runtime/policy.h"

namespace mtcp::client {

using core::ServerId;
using core::TimeMs;

struct Decision {
  ServerId target = 0;  // 0 (or the current member): the Connection picks the next member
  std::string reason;   // who decided: "manual", "hint", "stall", "throughput", "schedule", ...
  std::string detail;   // human-readable, e.g. "stall: nothing received for 2013 ms (stream)"
};

class Policy {
 public:
  virtual ~Policy() = default;
  // The connection is established with `server`; `pool` is the pool in WELCOME order.
  virtual void on_connected(ServerId server, const std::vector<ServerId>& pool, TimeMs now) = 0;
  virtual void on_bytes_received(uint64_t n, TimeMs now) = 0;
  virtual void on_bytes_sent(uint64_t n, TimeMs now) = 0;
  // True while received data waits for the application (Connection::set_app_limited).
  virtual void on_app_limited(bool limited, TimeMs now) = 0;
  virtual void on_hint(ServerId target, TimeMs now) = 0;
  virtual void on_peer_closed(TimeMs now) = 0;
  // The Connection started a migration: the one this policy decided, or one the application
  // asked for (any move satisfies a pending decision).
  virtual void on_migration_started(ServerId target, TimeMs now) = 0;
  // A migration finished: one this policy decided, a manual one, or an engine recovery.
  virtual void on_migrated(ServerId from, ServerId to, TimeMs now) = 0;
  virtual void on_migration_failed(ServerId target, TimeMs now) = 0;
  virtual std::optional<Decision> poll(TimeMs now) = 0;
  virtual TimeMs next_deadline() const = 0;
};

// rt::MigrationPolicy behind the interface. Reasons are the trigger names ("manual", "hint",
// "stall", "throughput", "schedule"); the detail is rt's human-readable reason.
class DefaultPolicy final : public Policy {
 public:
  explicit DefaultPolicy(const rt::PolicyConfig& cfg) : p_(cfg) {}  // cfg passed rt::validate
  void on_connected(ServerId server, const std::vector<ServerId>& pool, TimeMs now) override {
    p_.on_connected(server, pool, now);
  }
  void on_bytes_received(uint64_t n, TimeMs now) override { p_.on_bytes_received(n, now); }
  void on_bytes_sent(uint64_t n, TimeMs now) override { p_.on_bytes_sent(n, now); }
  void on_app_limited(bool limited, TimeMs now) override { p_.on_app_limited(limited, now); }
  void on_hint(ServerId target, TimeMs now) override { p_.on_hint(target, now); }
  void on_peer_closed(TimeMs now) override { p_.on_peer_closed(now); }
  void on_migration_started(ServerId target, TimeMs now) override { p_.on_migration_started(target, now); }
  void on_migrated(ServerId from, ServerId to, TimeMs now) override { p_.on_migrated(from, to, now); }
  void on_migration_failed(ServerId target, TimeMs now) override { p_.on_migration_failed(target, now); }
  std::optional<Decision> poll(TimeMs now) override;
  TimeMs next_deadline() const override { return p_.next_deadline(); }
  // The wrapped policy, for introspection (rates, bad windows) and request_manual().
  rt::MigrationPolicy& policy() { return p_; }

 private:
  rt::MigrationPolicy p_;
};

// A DefaultPolicy for `cfg`, or nullptr with `why` naming the bad field (rt::validate).
std::unique_ptr<Policy> make_default_policy(const rt::PolicyConfig& cfg, std::string& why);

}  // namespace mtcp::client
