#include "profile.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

namespace mtcp::stream {

std::optional<uint64_t> Profile::kbit_at(int64_t t_us) const {
  std::optional<uint64_t> r;
  for (const auto& e : entries) {
    if (e.at_us > t_us) break;
    r = e.kbit;
  }
  return r;
}

int64_t Profile::next_change_after(int64_t t_us) const {
  for (const auto& e : entries) {
    if (e.at_us > t_us) return e.at_us;
  }
  return INT64_MAX;
}

std::string Profile::describe() const {
  if (entries.empty()) return "none (no cap)";
  std::string s;
  for (const auto& e : entries) {
    if (!s.empty()) s += ' ';
    std::ostringstream t;
    t << static_cast<double>(e.at_us) / 1e6;
    s += t.str() + "s:" + (e.kbit ? std::to_string(*e.kbit) + "kbit/s" : std::string("max"));
  }
  return s;
}

bool parse_profile(const std::string& text, Profile& out, std::string& why) {
  Profile p;
  std::string clean;
  bool comment = false;
  for (char ch : text) {
    if (ch == '#') comment = true;
    if (ch == '\n') comment = false;
    if (comment) continue;
    clean += (ch == ',' || ch == '\n' || ch == '\t' || ch == '\r') ? ' ' : ch;
  }
  std::istringstream in(clean);
  std::string tok;
  while (in >> tok) {
    auto bad = [&](const std::string& what) {
      why = "profile entry '" + tok + "': " + what;
      return false;
    };
    if (p.entries.size() >= kProfileEntriesMax)
      return bad("more than " + std::to_string(kProfileEntriesMax) + " entries");
    size_t colon = tok.find(':');
    if (colon == std::string::npos) return bad("expected SECONDS:RATE (RATE in kbit/s or 'max')");
    std::string secs = tok.substr(0, colon), rate = tok.substr(colon + 1);
    double s = 0;
    auto [end, ec] = std::from_chars(secs.data(), secs.data() + secs.size(), s);
    if (secs.empty() || ec != std::errc() || end != secs.data() + secs.size() ||
        !std::isfinite(s) || s < 0 || s > 1e7)
      return bad("the time must be a number of seconds from 0 to 10000000");
    ProfileEntry e;
    e.at_us = static_cast<int64_t>(std::llround(s * 1e6));
    if (rate != "max") {
      uint64_t k = 0;
      auto [e2, ec2] = std::from_chars(rate.data(), rate.data() + rate.size(), k);
      if (rate.empty() || ec2 != std::errc() || e2 != rate.data() + rate.size() ||
          k > kProfileKbitMax)
        return bad("the rate must be 'max' or kbit/s from 0 to " + std::to_string(kProfileKbitMax));
      e.kbit = k;
    }
    if (!p.entries.empty() && e.at_us <= p.entries.back().at_us)
      return bad("times must grow from entry to entry");
    p.entries.push_back(e);
  }
  if (p.entries.empty()) {
    why = "the profile has no entry (expected SECONDS:RATE ...)";
    return false;
  }
  out = std::move(p);
  return true;
}

bool load_profile_file(const std::string& path, Profile& out, std::string& why) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    why = "cannot read the profile file " + path;
    return false;
  }
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (text.size() > kProfileFileBytesMax) {
    why = "the profile file " + path + " is larger than " + std::to_string(kProfileFileBytesMax) +
          " bytes";
    return false;
  }
  if (!parse_profile(text, out, why)) {
    why = path + ": " + why;
    return false;
  }
  return true;
}

void RateBudget::refill(int64_t t_us) {
  if (!started_) {
    started_ = true;
    last_us_ = t_us;
  }
  // Piecewise over the profile's changes between the last refill and now.
  while (last_us_ < t_us) {
    int64_t seg_end = std::min(t_us, p_.next_change_after(last_us_));
    auto k = p_.kbit_at(last_us_);
    if (k)
      tokens_ +=
          static_cast<double>(*k) * 1000.0 / 8.0 * static_cast<double>(seg_end - last_us_) / 1e6;
    last_us_ = seg_end;
  }
  auto k = p_.kbit_at(t_us);
  if (k) {
    double cap = std::max(static_cast<double>(kBucketMinBytes),
                          static_cast<double>(*k) * 1000.0 / 8.0 * 0.02);
    tokens_ = std::min(tokens_, cap);
  }
}

uint64_t RateBudget::allow(uint64_t want, int64_t t_us) {
  refill(t_us);
  if (!p_.kbit_at(t_us)) return want;
  if (tokens_ <= 0) return 0;
  return std::min(want, static_cast<uint64_t>(tokens_));
}

int64_t RateBudget::when(uint64_t bytes, int64_t t_us) {
  refill(t_us);
  auto k = p_.kbit_at(t_us);
  int64_t change = p_.next_change_after(t_us);
  if (!k) return t_us;
  if (*k == 0) return change;
  double need = static_cast<double>(bytes) - tokens_;
  if (need <= 0) return t_us;
  double us = need / (static_cast<double>(*k) * 1000.0 / 8.0) * 1e6;
  return std::min(change, t_us + static_cast<int64_t>(std::ceil(us)));
}

}  // namespace mtcp::stream
