#include "client/policy.h"

namespace mtcp::client {

std::optional<Decision> DefaultPolicy::poll(TimeMs now) {
  auto d = p_.poll(now);
  if (!d) return std::nullopt;
  return Decision{d->target, rt::to_string(d->trigger), d->reason};
}

std::unique_ptr<Policy> make_default_policy(const rt::PolicyConfig& cfg, std::string& why) {
  if (std::string bad = rt::validate(cfg); !bad.empty()) {
    why = "bad policy setting: " + bad;
    return nullptr;
  }
  return std::make_unique<DefaultPolicy>(cfg);
}

}  // namespace mtcp::client
