// A degradation profile: the sending rate a member allows itself over time (the paper's
// "profile of performance degradation at a server"), and the token bucket that enforces it.
//
// Syntax (inline with --profile, or a file with --profile-file): entries `SECONDS:RATE`,
// separated by commas, blanks or newlines; `#` starts a comment up to the end of the line.
// SECONDS (a decimal, e.g. 12.5) counts from the member's start and must grow strictly from
// entry to entry; RATE is kbit/s (an integer, 0 = send nothing) or `max` (no cap). Before the
// first entry there is no cap; the last entry holds for ever.
//   "0:max 10:400 25:max"   full speed, 400 kbit/s from 10 s to 25 s, then full speed again
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mtcp::stream {

inline constexpr size_t kProfileEntriesMax = 4096;
inline constexpr uint64_t kProfileKbitMax = 100'000'000;  // 100 Gbit/s
inline constexpr size_t kProfileFileBytesMax = 1 << 20;

struct ProfileEntry {
  int64_t at_us = 0;
  std::optional<uint64_t> kbit;  // nullopt: no cap
};

struct Profile {
  std::vector<ProfileEntry> entries;
  // The cap at time t (µs since the member's start); nullopt: none.
  std::optional<uint64_t> kbit_at(int64_t t_us) const;
  // The next time after t at which the cap changes (INT64_MAX: never).
  int64_t next_change_after(int64_t t_us) const;
  std::string describe() const;  // "0s:max 10s:400kbit/s ..."
};

// False with `why` naming the entry and what is wrong.
bool parse_profile(const std::string& text, Profile& out, std::string& why);
bool load_profile_file(const std::string& path, Profile& out, std::string& why);

// The member's shared send budget (all of its connections draw from it), on the member's
// event loop thread only. Bucket depth: 20 ms of the current rate, at least kBucketMinBytes.
class RateBudget {
 public:
  static constexpr uint64_t kBucketMinBytes = 16 * 1024;
  explicit RateBudget(Profile p) : p_(std::move(p)) {}
  // How many of `want` bytes may go now (t_us since the member's start).
  uint64_t allow(uint64_t want, int64_t t_us);
  // Takes n bytes from the bucket (after allow(); uncapped time spends nothing, so a later cap
  // starts from an empty bucket, not from a debt).
  void spend(uint64_t n) {
    if (p_.kbit_at(last_us_)) tokens_ -= static_cast<double>(n);
  }
  // When at least `bytes` will be allowed (t_us or later; INT64_MAX: not before a change).
  int64_t when(uint64_t bytes, int64_t t_us);
  const Profile& profile() const { return p_; }

 private:
  void refill(int64_t t_us);
  Profile p_;
  double tokens_ = 0;
  int64_t last_us_ = 0;
  bool started_ = false;
};

}  // namespace mtcp::stream
