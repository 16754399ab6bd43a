// Migration policies (runtime/policy.h), driven with literal timestamps: no clock, no sockets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "runtime/policy.h"

namespace {

using namespace mtcp::rt;
using Trigger = Decision::Trigger;

PolicyConfig only(unsigned bits) {
  PolicyConfig c;
  c.enabled = bits;
  return c;
}

// Feeds `per_window` bytes in every window of [from, to), in 10 pieces per window, polling
// after each piece. Returns the time of the first decision (or nullopt).
std::optional<TimeMs> feed(MigrationPolicy& p, TimeMs from, TimeMs to, uint64_t per_window,
                           TimeMs window = 100) {
  TimeMs step = window / 10;
  for (TimeMs t = from; t < to; t += step) {
    p.on_bytes_received(per_window / 10, t);
    if (p.poll(t)) return t;
  }
  return std::nullopt;
}

// ---- configuration ------------------------------------------------------------------------

TEST(PolicyConfig, DefaultsAreValid) {
  PolicyConfig c;
  EXPECT_EQ(validate(c), "");
  EXPECT_EQ(c.enabled, kDefaultPolicies);
  EXPECT_EQ(c.window_ms, kDefaultWindowMs);
  EXPECT_DOUBLE_EQ(c.fraction, kDefaultFraction);
}

TEST(PolicyConfig, InvalidValuesAreRejectedWithTheirName) {
  auto bad = [](auto mutate, const std::string& word) {
    PolicyConfig c;
    mutate(c);
    std::string why = validate(c);
    EXPECT_NE(why, "") << word;
    EXPECT_NE(why.find(word), std::string::npos) << why;
  };
  bad([](PolicyConfig& c) { c.fraction = 0; }, "fraction");
  bad([](PolicyConfig& c) { c.fraction = 1; }, "fraction");
  bad([](PolicyConfig& c) { c.fraction = 1.5; }, "fraction");
  bad([](PolicyConfig& c) { c.fraction = -0.25; }, "fraction");
  bad([](PolicyConfig& c) { c.fraction = std::nan(""); }, "fraction");
  bad([](PolicyConfig& c) { c.window_ms = 0; }, "window-ms");
  bad([](PolicyConfig& c) { c.hysteresis = 0; }, "hysteresis");
  bad([](PolicyConfig& c) { c.hysteresis = kHysteresisMax + 1; }, "hysteresis");
  bad([](PolicyConfig& c) { c.stall_ms = 0; }, "stall-ms");
  bad([](PolicyConfig& c) { c.every_ms = 0; }, "every-ms");
  bad([](PolicyConfig& c) { c.warmup_ms = kPolicyTimeMaxMs + 1; }, "warmup-ms");
  bad([](PolicyConfig& c) { c.cooldown_ms = kPolicyTimeMaxMs + 1; }, "cooldown-ms");
  bad([](PolicyConfig& c) { c.enabled = 1u << 9; }, "policies");
}

TEST(PolicyConfig, PolicyListsParse) {
  unsigned bits = 0;
  std::string why;
  ASSERT_TRUE(parse_policies("throughput,stall,hint,manual", bits, why));
  EXPECT_EQ(bits, kDefaultPolicies);
  ASSERT_TRUE(parse_policies("schedule", bits, why));
  EXPECT_EQ(bits, unsigned{kPolicySchedule});
  ASSERT_TRUE(parse_policies("none", bits, why));
  EXPECT_EQ(bits, 0u);
  EXPECT_FALSE(parse_policies("stall,teleport", bits, why));
  EXPECT_NE(why.find("teleport"), std::string::npos);
  EXPECT_FALSE(parse_policies("", bits, why));
  EXPECT_FALSE(parse_policies("stall,", bits, why));
  EXPECT_EQ(policies_to_string(kDefaultPolicies), "throughput,stall,hint,manual");
  StallExpect e{};
  EXPECT_TRUE(parse_stall_expect("echo", e));
  EXPECT_EQ(e, StallExpect::echo);
  EXPECT_FALSE(parse_stall_expect("sometimes", e));
}

// ---- target choice ------------------------------------------------------------------------

TEST(PolicyTarget, NextInPoolOrderAvoidingWhatWasLeftOrFailed) {
  std::vector<ServerId> pool{1, 2, 3};
  EXPECT_EQ(next_target(pool, 1, {}), 2u);
  EXPECT_EQ(next_target(pool, 3, {}), 1u);  // wraps around
  EXPECT_EQ(next_target(pool, 1, {2}), 3u);
  EXPECT_EQ(next_target(pool, 1, {2, 3}), 2u);  // nothing else: the next one anyway
  EXPECT_EQ(next_target(pool, 9, {}), 1u);      // unknown current: the first member
  EXPECT_EQ(next_target({1, 2}, 2, {1}), 1u);   // the member just left, as it is the only one
  EXPECT_EQ(next_target({1}, 1, {}), 1u);
  EXPECT_EQ(next_target({}, 1, {}), 0u);
}

TEST(PolicyTarget, AfterAMigrationTheMemberJustLeftIsSkipped) {
  MigrationPolicy p(only(kPolicyManual));
  p.on_connected(1, {1, 2, 3}, 0);
  p.request_manual();
  auto d = p.poll(10);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->target, 2u);
  p.on_migration_started(2, 10);
  p.on_migrated(1, 2, 20);
  p.request_manual();
  EXPECT_EQ(p.poll(30)->target, 3u);
  p.on_migration_started(3, 30);
  p.on_migration_failed(3, 40);  // 3 failed: neither 3 (failed) nor 1 (just left)... 1 wins
  p.request_manual();
  EXPECT_EQ(p.poll(50)->target, 1u);

  // Two members: going back to the one just left is the only choice.
  MigrationPolicy two(only(kPolicyManual));
  two.on_connected(1, {1, 2}, 0);
  two.on_migrated(1, 2, 5);
  two.request_manual();
  EXPECT_EQ(two.poll(6)->target, 1u);
}

// Issue 14: with member 3 dead, the schedule policy chose it again after every successful
// migration elsewhere (failed_ is cleared on success). The back-off outlives those successes.
TEST(PolicyTarget, AMemberThatFailedStaysBackedOffAcrossSuccessfulMigrations) {
  PolicyConfig c = only(kPolicySchedule);
  c.every_ms = 100;
  c.retry_ms = 500;  // back-off: 2000 ms, then 4000 ms
  MigrationPolicy p(c);
  p.on_connected(1, {1, 2, 3}, 1000);
  ServerId current = 1;
  TimeMs t = 1000;
  std::vector<ServerId> chosen;
  // Member 3 is dead: every attempt to it fails at once; the others work.
  for (int i = 0; i < 2000 && t < 9000; ++i) {
    t += 10;
    auto d = p.poll(t);
    if (!d) continue;
    chosen.push_back(d->target);
    p.on_migration_started(d->target, t);
    if (d->target == 3) {
      p.on_migration_failed(3, t + 5);
    } else {
      p.on_migrated(current, d->target, t + 5);
      current = d->target;
    }
    t += 5;
  }
  // Tried at the start, then only after each back-off (2 s, 4 s): 3 times in 8 s, never twice
  // in a row, while the schedule moved between 1 and 2 dozens of times.
  size_t dead = static_cast<size_t>(std::count(chosen.begin(), chosen.end(), 3u));
  EXPECT_EQ(dead, 3u);
  EXPECT_GT(chosen.size(), 40u);
  for (size_t i = 1; i < chosen.size(); ++i) EXPECT_FALSE(chosen[i] == 3u && chosen[i - 1] == 3u) << i;
}

TEST(PolicyTarget, AHintToAMemberThatJustFailedIsNotTaken) {
  PolicyConfig c = only(kPolicyHint | kPolicyManual);
  MigrationPolicy p(c);
  p.on_connected(1, {1, 2, 3}, 0);
  p.request_manual();
  ASSERT_EQ(p.poll(10)->target, 2u);
  p.on_migration_started(2, 10);
  p.on_migration_failed(2, 20);
  p.on_hint(2, 30);  // the server hints at the member that just failed
  auto d = p.poll(40);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::hint);
  EXPECT_EQ(d->target, 3u);
}

// ---- throughput ---------------------------------------------------------------------------

PolicyConfig throughput_cfg() {
  PolicyConfig c = only(kPolicyThroughput);
  c.window_ms = 100;
  c.warmup_ms = 1000;
  c.cooldown_ms = 500;
  c.hysteresis = 3;
  c.fraction = 0.5;
  return c;
}

TEST(PolicyThroughput, WarmupIsNotMeasured) {
  MigrationPolicy p(throughput_cfg());
  p.on_connected(1, {1, 2, 3}, 0);
  // A fast start (slow start would be the opposite, same effect) then a slow rest, all
  // inside the warm-up: nothing is learned, nothing fires.
  EXPECT_FALSE(feed(p, 0, 500, 100000));
  EXPECT_FALSE(feed(p, 500, 1000, 1000));
  EXPECT_EQ(p.reference_rate(), 0);
  // After the warm-up the slow rate is the reference: still nothing fires.
  EXPECT_FALSE(feed(p, 1000, 3000, 1000));
  EXPECT_DOUBLE_EQ(p.reference_rate(), 1000 * 10.0);
}

TEST(PolicyThroughput, HysteresisOneBadWindowIsNotEnoughNAre) {
  MigrationPolicy p(throughput_cfg());
  p.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(feed(p, 1000, 1500, 10000));  // reference 100 kB/s
  EXPECT_DOUBLE_EQ(p.reference_rate(), 100000);
  EXPECT_FALSE(feed(p, 1500, 1600, 1000));   // one bad window
  EXPECT_FALSE(feed(p, 1600, 1700, 1000));   // two
  EXPECT_FALSE(feed(p, 1700, 1800, 10000));  // a good one resets the count
  EXPECT_FALSE(p.poll(1800));
  EXPECT_EQ(p.bad_windows(), 0u);
  EXPECT_FALSE(feed(p, 1800, 2000, 1000));  // two bad
  auto t = feed(p, 2000, 2200, 1000);       // the third bad window closes at 2100
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, 2100u);
  auto d = p.poll(*t);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::throughput);
  EXPECT_EQ(d->target, 2u);
  EXPECT_NE(d->reason.find("throughput"), std::string::npos) << d->reason;
  // Exactly half the reference is not below fraction x reference.
  MigrationPolicy q(throughput_cfg());
  q.on_connected(1, {1, 2}, 0);
  EXPECT_FALSE(feed(q, 1000, 1500, 10000));
  EXPECT_FALSE(feed(q, 1500, 2500, 5000));
}

TEST(PolicyThroughput, CooldownAfterMigrationAndReferenceRelearned) {
  MigrationPolicy p(throughput_cfg());
  p.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(feed(p, 1000, 1500, 10000));
  auto t = feed(p, 1500, 2000, 1000);
  ASSERT_TRUE(t);
  auto d = p.poll(*t);
  p.on_migration_started(d->target, *t);
  EXPECT_FALSE(p.poll(*t + 1));  // no decision while the attempt runs
  p.on_migrated(1, d->target, 1800);
  EXPECT_EQ(p.reference_rate(), 0);  // reset, not decayed
  // During the cool-down (until 2300) a dip is not measured.
  EXPECT_FALSE(feed(p, 1800, 2300, 100));
  EXPECT_EQ(p.reference_rate(), 0);
  // The new server is slower than the old one: its own rate is the new reference.
  EXPECT_FALSE(feed(p, 2300, 4000, 3000));
  EXPECT_DOUBLE_EQ(p.reference_rate(), 30000);
  // And a dip below half of that fires again.
  EXPECT_TRUE(feed(p, 4000, 5000, 1000));
}

TEST(PolicyThroughput, EmptyAndAppLimitedWindowsAreNotJudged) {
  MigrationPolicy p(throughput_cfg());
  p.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(feed(p, 1000, 1500, 10000));
  // Silence: the stall policy's business, not throughput's.
  EXPECT_FALSE(p.poll(5000));
  EXPECT_FALSE(feed(p, 5000, 5500, 10000));
  // The local reader is slow: delivery held back for whole windows.
  p.on_app_limited(true, 5500);
  EXPECT_FALSE(feed(p, 5500, 7000, 100));
  p.on_app_limited(false, 7000);
  EXPECT_EQ(p.bad_windows(), 0u);
  // Limited for a moment only (10 ms of 100): judged.
  p.on_app_limited(true, 7000);
  p.on_app_limited(false, 7010);
  EXPECT_TRUE(feed(p, 7000, 7400, 100));
}

// ---- stall --------------------------------------------------------------------------------

PolicyConfig stall_cfg(StallExpect e) {
  PolicyConfig c = only(kPolicyStall);
  c.stall_ms = 500;
  c.stall_expect = e;
  return c;
}

TEST(PolicyStall, EchoWithOutstandingData) {
  MigrationPolicy p(stall_cfg(StallExpect::echo));
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_sent(1000, 100);
  p.on_bytes_received(400, 200);  // 600 bytes not answered yet
  EXPECT_FALSE(p.poll(699));
  EXPECT_EQ(p.next_deadline(), 700u);
  auto d = p.poll(700);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::stall);
  EXPECT_EQ(d->target, 2u);
  EXPECT_NE(d->reason.find("500 ms"), std::string::npos) << d->reason;
}

TEST(PolicyStall, EchoWithoutOutstandingDataNeverFires) {
  MigrationPolicy p(stall_cfg(StallExpect::echo));
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_sent(1000, 100);
  p.on_bytes_received(1000, 200);  // everything answered: an idle connection
  EXPECT_FALSE(p.poll(100000));
  EXPECT_EQ(p.next_deadline(), mtcp::core::kNever);
  // A new send after a long idle time: the silence counts from that send.
  p.on_bytes_sent(10, 200000);
  EXPECT_FALSE(p.poll(200499));
  EXPECT_TRUE(p.poll(200500));
}

TEST(PolicyStall, StreamExpectsMoreOnceItReceivedUntilThePeerCloses) {
  MigrationPolicy p(stall_cfg(StallExpect::stream));
  p.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(p.poll(5000));  // nothing received yet: nothing expected
  p.on_bytes_received(100, 5000);
  EXPECT_FALSE(p.poll(5499));
  EXPECT_TRUE(p.poll(5500));
  p.on_peer_closed(5500);
  EXPECT_FALSE(p.poll(9000));  // the server closed: silence is normal
}

TEST(PolicyStall, ReplyAndAnyModes) {
  MigrationPolicy r(stall_cfg(StallExpect::reply));
  r.on_connected(1, {1, 2, 3}, 0);
  r.on_bytes_sent(10, 100);
  r.on_bytes_received(50, 150);  // answered
  EXPECT_FALSE(r.poll(10000));
  r.on_bytes_sent(10, 10000);  // a new request
  EXPECT_FALSE(r.poll(10499));
  EXPECT_TRUE(r.poll(10500));

  MigrationPolicy a(stall_cfg(StallExpect::any));
  a.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(a.poll(10000));  // nothing sent, nothing received
  a.on_bytes_sent(10, 10000);   // request without an answer
  EXPECT_TRUE(a.poll(10500));
}

TEST(PolicyStall, AppLimitedStopsTheClock) {
  MigrationPolicy p(stall_cfg(StallExpect::stream));
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_received(100, 100);
  p.on_app_limited(true, 200);  // the local program does not read
  EXPECT_FALSE(p.poll(5000));
  p.on_app_limited(false, 5000);
  EXPECT_FALSE(p.poll(5499));
  EXPECT_TRUE(p.poll(5500));
}

TEST(PolicyStall, SilenceAfterAStallMigrationBacksOffThenRests) {
  MigrationPolicy p(stall_cfg(StallExpect::stream));
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_received(100, 0);
  TimeMs t = 500;
  TimeMs wait = 500;
  ServerId at = 1;
  for (uint32_t i = 0; i < kStallMigrationsMax; ++i) {
    EXPECT_FALSE(p.poll(t - 1)) << i;
    auto d = p.poll(t);
    ASSERT_TRUE(d) << i;
    p.on_migration_started(d->target, t);
    p.on_migrated(at, d->target, t + 10);
    at = d->target;
    t = t + 10;
    wait *= 2;
    t += wait;
  }
  // kStallMigrationsMax hops without a byte: an idle connection, not a stalled one.
  EXPECT_FALSE(p.poll(t + 100000));
  // A byte re-arms it.
  p.on_bytes_received(1, 200000);
  EXPECT_TRUE(p.poll(200500));
}

TEST(PolicyStall, FailedAttemptRetriesElsewhereAfterRetryMs) {
  PolicyConfig c = stall_cfg(StallExpect::stream);
  c.retry_ms = 300;
  MigrationPolicy p(c);
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_received(100, 0);
  auto d = p.poll(500);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->target, 2u);
  p.on_migration_started(2, 500);
  p.on_migration_failed(2, 2500);
  EXPECT_FALSE(p.poll(2799));
  d = p.poll(2800);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->target, 3u);  // 2 failed
}

// ---- hint, manual, schedule ---------------------------------------------------------------

TEST(PolicyHint, MigratesToTheHintedMemberOrTheNext) {
  MigrationPolicy p(only(kPolicyHint));
  p.on_connected(1, {1, 2, 3}, 0);
  EXPECT_FALSE(p.poll(10));
  p.on_hint(3, 20);
  EXPECT_EQ(p.next_deadline(), 0u);
  auto d = p.poll(20);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::hint);
  EXPECT_EQ(d->target, 3u);
  EXPECT_TRUE(p.poll(21));  // pending until a migration starts
  p.on_migration_started(3, 21);
  p.on_migrated(1, 3, 30);
  EXPECT_FALSE(p.poll(40));
  p.on_hint(0, 50);  // no target named: the next member
  EXPECT_EQ(p.poll(50)->target, 2u);
  p.on_migration_started(2, 50);
  p.on_migrated(3, 2, 60);
  p.on_hint(7, 70);  // not a member: the next member
  EXPECT_EQ(p.poll(70)->target, 1u);

  MigrationPolicy off(only(kPolicyManual));
  off.on_connected(1, {1, 2, 3}, 0);
  off.on_hint(2, 10);
  EXPECT_FALSE(off.poll(10));
}

TEST(PolicyManual, MigratesNowOncePerRequest) {
  MigrationPolicy p(only(kPolicyManual));
  p.request_manual();
  EXPECT_FALSE(p.poll(0));  // not connected yet: kept
  p.on_connected(1, {1, 2, 3}, 5);
  auto d = p.poll(5);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::manual);
  EXPECT_EQ(d->target, 2u);
  p.on_migration_started(2, 5);
  p.on_migrated(1, 2, 8);
  EXPECT_FALSE(p.poll(9));
  EXPECT_EQ(p.next_deadline(), mtcp::core::kNever);

  MigrationPolicy off(only(kPolicyStall));
  off.on_connected(1, {1, 2, 3}, 0);
  off.request_manual();
  EXPECT_FALSE(off.poll(1));
}

TEST(PolicySchedule, EveryNMsAfterTheLastSwitch) {
  PolicyConfig c = only(kPolicySchedule);
  c.every_ms = 100;
  MigrationPolicy p(c);
  p.on_connected(1, {1, 2, 3}, 1000);
  EXPECT_EQ(p.next_deadline(), 1100u);
  EXPECT_FALSE(p.poll(1099));
  auto d = p.poll(1100);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->trigger, Trigger::schedule);
  p.on_migration_started(d->target, 1100);
  EXPECT_EQ(p.next_deadline(), mtcp::core::kNever);
  p.on_migrated(1, 2, 1150);
  EXPECT_FALSE(p.poll(1249));
  EXPECT_EQ(p.poll(1250)->target, 3u);
}

TEST(PolicyCombined, ManualBeatsHintBeatsStallBeatsSchedule) {
  PolicyConfig c;
  c.enabled = kPolicyAll;
  c.stall_ms = 100;
  c.every_ms = 100;
  c.stall_expect = StallExpect::stream;
  MigrationPolicy p(c);
  p.on_connected(1, {1, 2, 3}, 0);
  p.on_bytes_received(10, 0);
  EXPECT_EQ(p.poll(200)->trigger, Trigger::stall);
  p.on_hint(3, 200);
  EXPECT_EQ(p.poll(200)->trigger, Trigger::hint);
  p.request_manual();
  EXPECT_EQ(p.poll(200)->trigger, Trigger::manual);
}

}  // namespace
