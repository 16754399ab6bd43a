// The service registry's typed options (sdk/service.h): integers with a range, text with a
// length limit and on/off flags, set from a pool-file section and from the command line (which
// wins), with every refusal naming the option and leaving the values as they were.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "sdk/service.h"

namespace {

using namespace mtcp;

struct Opts {
  uint64_t every = 10;
  uint64_t level = 3;
  std::string file = "default.mp4";
  std::string tag = "x";
  bool live = false;
};

class TestService final : public sdk::ServiceDef {
 public:
  TestService() : ServiceDef("test", "a service to test options with") {
    opt("every", &o.every, "An integer from 0 to 1000", 1000);
    opt("level", &o.level, "An integer from 1 to 9", 1, 9);
    opt("file", &o.file, "A path");
    opt("tag", &o.tag, "Short text", 4);
    opt("live", &o.live, "A flag");
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv&, std::string& why) override {
    why = "not startable";
    return nullptr;
  }
  Opts o;
};

// Parses argv (program name first) with the service's options added.
bool parse(TestService& s, CLI::App& cli, std::vector<std::string> args, std::string* err = nullptr) {
  s.add_options(cli);
  std::vector<const char*> argv{"prog"};
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    cli.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    if (err) *err = e.what();
    return false;
  }
  return true;
}

TEST(ServiceOptions, PoolFileSectionSetsEveryType) {
  TestService s;
  std::string why;
  ASSERT_TRUE(s.configure_json(R"({"every": 7, "level": 9, "file": "/srv/a b.mp4", "tag": "abcd", "live": true})", why))
      << why;
  EXPECT_EQ(s.o.every, 7u);
  EXPECT_EQ(s.o.level, 9u);
  EXPECT_EQ(s.o.file, "/srv/a b.mp4");
  EXPECT_EQ(s.o.tag, "abcd");
  EXPECT_TRUE(s.o.live);
}

TEST(ServiceOptions, RefusalsNameTheOptionAndChangeNothing) {
  struct Case {
    const char* json;
    const char* expect;
  } cases[] = {
      {R"({"every": 1001})", "services.test.every must be an integer from 0 to 1000"},
      {R"({"level": 0})", "services.test.level must be an integer from 1 to 9"},
      {R"({"level": -2})", "services.test.level must be an integer from 1 to 9"},
      {R"({"level": "3"})", "services.test.level must be an integer from 1 to 9"},
      {R"({"file": 5})", "services.test.file must be a string"},
      {R"({"tag": "abcde"})", "services.test.tag is longer than 4 bytes"},
      {R"({"live": 1})", "services.test.live must be true or false"},
      {R"({"colour": "red"})", "services.test.colour: unknown option (known: every, level, file, tag, live)"},
      {R"([1, 2])", "services.test must be a JSON object"},
      {R"({"every": )", "services.test must be a JSON object"},
  };
  for (const auto& c : cases) {
    TestService s;
    std::string why;
    // A valid key first: a refused section must not have applied it either.
    std::string json = c.json;
    if (json.size() > 2 && json[0] == '{' && json[1] == '"') json = R"({"every": 5, )" + json.substr(1);
    EXPECT_FALSE(s.configure_json(json, why)) << json;
    EXPECT_EQ(why, c.expect) << json;
    EXPECT_EQ(s.o.every, 10u) << json;
    EXPECT_EQ(s.o.file, "default.mp4") << json;
  }
}

TEST(ServiceOptions, TextWithANulByteIsRefused) {
  TestService s;
  std::string why;
  EXPECT_FALSE(s.configure_json("{\"file\": \"a\\u0000b\"}", why));
  EXPECT_EQ(why, "services.test.file contains a NUL byte");
}

TEST(ServiceOptions, CommandLineWinsOverThePoolFile) {
  TestService s;
  CLI::App cli;
  ASSERT_TRUE(parse(s, cli, {"--file", "cli.mp4", "--live", "--level", "2"}));
  std::string why;
  ASSERT_TRUE(s.configure_json(R"({"file": "pool.mp4", "live": false, "level": 8, "every": 99})", why)) << why;
  EXPECT_EQ(s.o.file, "cli.mp4");
  EXPECT_TRUE(s.o.live);
  EXPECT_EQ(s.o.level, 2u);
  EXPECT_EQ(s.o.every, 99u);  // not on the command line: the pool file sets it
}

TEST(ServiceOptions, CommandLineChecksRangesAndLengths) {
  std::string err;
  {
    TestService s;
    CLI::App cli;
    EXPECT_FALSE(parse(s, cli, {"--level", "10"}, &err));
    EXPECT_NE(err.find("level"), std::string::npos) << err;
  }
  {
    TestService s;
    CLI::App cli;
    EXPECT_FALSE(parse(s, cli, {"--tag", "toolong"}, &err));
    EXPECT_NE(err.find("--tag is longer than 4 bytes"), std::string::npos) << err;
  }
  {
    TestService s;
    CLI::App cli;
    EXPECT_TRUE(parse(s, cli, {"--tag", "ok"}));
    EXPECT_EQ(s.o.tag, "ok");
    EXPECT_FALSE(s.o.live);  // flags default off
  }
}

TEST(ServiceOptions, OptionsAreListedWithTheirTypes) {
  TestService s;
  const auto& o = s.options();
  ASSERT_EQ(o.size(), 5u);
  EXPECT_EQ(o[0].type, sdk::ServiceDef::Option::Type::u64);
  EXPECT_EQ(o[1].min, 1u);
  EXPECT_EQ(o[2].type, sdk::ServiceDef::Option::Type::text);
  EXPECT_EQ(o[2].text_bytes_max, sdk::ServiceDef::kTextOptionBytesMax);
  EXPECT_EQ(o[4].type, sdk::ServiceDef::Option::Type::flag);
  EXPECT_EQ(o[4].key(), "live");
}

}  // namespace
