// The pool file (runtime/pool_config.h) is strict: unknown keys are refused with a suggestion,
// every limit is range-checked with its name, and a key file others can read is refused.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/suggest.h"
#include "runtime/pool_config.h"

namespace mtcp::rt {
namespace {

namespace fs = std::filesystem;

class PoolFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mtcp-pool-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    write_key("pool.key", 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write_key(const std::string& name, mode_t mode) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << std::string(32, 'k');
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
  }
  // A valid pool file with `extra` spliced into its top-level object.
  std::string pool(const std::string& extra, const std::string& member_extra = "") {
    return R"({"pool_key_file": "pool.key", )" + extra +
           R"("members": [{"id": 1, "data": "127.0.0.1:7001", "control": "127.0.0.1:7101")" + member_extra +
           R"(}, {"id": 2, "data": "127.0.0.1:7002", "control": "127.0.0.1:7102"}]})";
  }
  bool load(const std::string& text, mode_t mode = 0600) {
    fs::path p = dir_ / "pool.json";
    std::ofstream(p) << text;
    EXPECT_EQ(::chmod(p.c_str(), mode), 0);
    why_.clear();
    cfg_ = PoolConfig{};
    return load_pool_config(p.string(), cfg_, why_);
  }

  fs::path dir_;
  PoolConfig cfg_;
  std::string why_;
};

TEST(Suggest, ClosestKnownNameForTypos) {
  std::vector<std::string> known = {"claim_timeout_ms", "transfer", "migrate_timeout_ms"};
  EXPECT_EQ(closest_name("clam_timeout_ms", known), "claim_timeout_ms");
  EXPECT_EQ(closest_name("transfr", known), "transfer");
  EXPECT_EQ(closest_name("zzz", known), "");
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(did_you_mean("transfr", known), " (did you mean \"transfer\"?)");
}

TEST_F(PoolFile, ValidFileLoads) {
  ASSERT_TRUE(load(pool(R"("transfer": "eager", "limits": {"claim_timeout_ms": 500, "replica_timeout_ms": 1000}, )")))
      << why_;
  EXPECT_EQ(cfg_.members.size(), 2u);
  EXPECT_EQ(cfg_.limits.claim_timeout_ms, 500u);
  EXPECT_EQ(cfg_.limits.replica_timeout_ms, 1000u);
  EXPECT_EQ(cfg_.limits.transfer_mode, TransferMode::eager);
  EXPECT_TRUE(cfg_.warnings.empty());
}

TEST_F(PoolFile, UnknownKeysAreRefusedWithASuggestion) {
  EXPECT_FALSE(load(pool(R"("transfr": "eager", )")));
  EXPECT_NE(why_.find("unknown key \"transfr\""), std::string::npos) << why_;
  EXPECT_NE(why_.find("did you mean \"transfer\""), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"clam_timeout_ms": 500}, )")));
  EXPECT_NE(why_.find("unknown key \"limits.clam_timeout_ms\""), std::string::npos) << why_;
  EXPECT_NE(why_.find("did you mean \"claim_timeout_ms\""), std::string::npos) << why_;

  EXPECT_FALSE(load(pool("", R"(, "contrl": "127.0.0.1:7103")")));
  EXPECT_NE(why_.find("members[].contrl"), std::string::npos) << why_;
}

TEST_F(PoolFile, EveryLimitIsRangeCheckedWithItsName) {
  // 2^32 used to wrap to 0 in a 32-bit field (every migration then "rate limited").
  EXPECT_FALSE(load(pool(R"("limits": {"migrate_requests_per_s_max": 4294967296}, )")));
  EXPECT_NE(why_.find("limits.migrate_requests_per_s_max must be an integer from 1 to"), std::string::npos) << why_;
  EXPECT_NE(why_.find("got 4294967296"), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"frame_payload_bytes_max": 0}, )")));
  EXPECT_NE(why_.find("limits.frame_payload_bytes_max"), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"send_log_bytes_max": 99999999999}, )")));
  EXPECT_NE(why_.find("limits.send_log_bytes_max"), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"claim_timeout_ms": -5}, )")));
  EXPECT_NE(why_.find("limits.claim_timeout_ms"), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"claim_timeout_ms": "300"}, )")));
  EXPECT_NE(why_.find("limits.claim_timeout_ms"), std::string::npos) << why_;

  EXPECT_FALSE(load(pool(R"("limits": {"retry_backoff_ms": 500, "retry_backoff_max_ms": 100}, )")));
  EXPECT_NE(why_.find("retry_backoff_max_ms must be at least"), std::string::npos) << why_;

  // The bounds themselves are accepted.
  EXPECT_TRUE(load(pool(R"("limits": {"frame_payload_bytes_max": 1048576, "migrate_requests_per_s_max": 1}, )")))
      << why_;
}

TEST_F(PoolFile, WrongTypesAreRefusedNotThrown) {
  EXPECT_FALSE(load(pool(R"("transfer": 5, )")));
  EXPECT_NE(why_.find("transfer must be"), std::string::npos) << why_;
  EXPECT_FALSE(load(pool(R"("transfer": "fast", )")));
  EXPECT_NE(why_.find("transfer must be"), std::string::npos) << why_;
  EXPECT_FALSE(load(pool(R"("ack_after_replication": "yes", )")));
  EXPECT_FALSE(load(pool(R"("limits": [1, 2], )")));
  EXPECT_FALSE(load(pool(R"("insecure_key_file": 1, )")));
  EXPECT_FALSE(load("[]"));
  EXPECT_FALSE(load("{not json"));
}

TEST_F(PoolFile, KeyFileOthersCanReadIsRefused) {
  write_key("pool.key", 0644);
  EXPECT_FALSE(load(pool("")));
  EXPECT_NE(why_.find("readable or writable by group or others (mode 0644)"), std::string::npos) << why_;
  EXPECT_NE(why_.find("chmod 600"), std::string::npos) << why_;

  write_key("pool.key", 0620);
  EXPECT_FALSE(load(pool("")));

  // With the override: accepted, and the warning is there for the member to print.
  write_key("pool.key", 0666);
  ASSERT_TRUE(load(pool(R"("insecure_key_file": true, )"))) << why_;
  ASSERT_EQ(cfg_.warnings.size(), 1u);
  EXPECT_NE(cfg_.warnings[0].find("mode 0666"), std::string::npos);

  write_key("pool.key", 0400);
  EXPECT_TRUE(load(pool(""))) << why_;
}

TEST_F(PoolFile, InlineKeyNeedsAPrivatePoolFile) {
  std::string text = R"({"pool_key": ")" + std::string(64, 'a') +
                     R"(", "members": [{"id": 1, "data": "127.0.0.1:7001", "control": "127.0.0.1:7101"}]})";
  EXPECT_FALSE(load(text, 0644));
  EXPECT_NE(why_.find("the pool file (it holds pool_key)"), std::string::npos) << why_;
  EXPECT_TRUE(load(text, 0600)) << why_;
  std::string both = R"({"pool_key_file": "pool.key", "pool_key": ")" + std::string(64, 'a') +
                     R"(", "members": [{"id": 1, "data": "127.0.0.1:7001", "control": "127.0.0.1:7101"}]})";
  EXPECT_FALSE(load(both));
  EXPECT_NE(why_.find("not both"), std::string::npos) << why_;
}

}  // namespace
}  // namespace mtcp::rt
