// The bank's request parser (bank_protocol.h): every malformed form gets its own clear reason,
// limits are enforced at their edges, and a request's canonical form is what the transaction
// log keeps. The database behaviour is tested against a real PostgreSQL in bank_e2e.sh.
#include <gtest/gtest.h>

#include "bank_protocol.h"
#include "bank_schema.h"
#include "pg_async.h"

using namespace mtcp::bank;

TEST(BankProtocol, ParsesEveryCommand) {
  Request r = parse_request("7 TRANSFER 1 2 50");
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.seq, 7u);
  EXPECT_EQ(r.cmd, Cmd::transfer);
  EXPECT_EQ(r.a, 1);
  EXPECT_EQ(r.b, 2);
  EXPECT_EQ(r.amount, 50);
  EXPECT_EQ(canonical(r), "TRANSFER 1 2 50");
  EXPECT_EQ(canonical(parse_request("1 BALANCE 9")), "BALANCE 9");
  EXPECT_EQ(canonical(parse_request("1 DEPOSIT 9 3")), "DEPOSIT 9 3");
  EXPECT_EQ(canonical(parse_request("1 AUDIT")), "AUDIT");
  EXPECT_EQ(parse_request("1 BEGIN").cmd, Cmd::begin);
  EXPECT_EQ(parse_request("1 COMMIT").cmd, Cmd::commit);
  EXPECT_EQ(parse_request("1 ABORT").cmd, Cmd::abort);
  EXPECT_TRUE(parse_request("  3   WITHDRAW   4  5 ").error.empty());  // extra spaces
  EXPECT_TRUE(parse_request("3 OPEN 4 0").error.empty());  // an account may open empty
}

TEST(BankProtocol, RefusesMalformedLines) {
  EXPECT_EQ(parse_request("").seq, 0u);
  EXPECT_EQ(parse_request("hello").seq, 0u);
  EXPECT_EQ(parse_request("0 AUDIT").seq, 0u);                      // seq from 1
  EXPECT_EQ(parse_request("-1 AUDIT").seq, 0u);
  EXPECT_EQ(parse_request("9223372036854775808 AUDIT").seq, 0u);    // above 2^63-1
  EXPECT_EQ(parse_request("9223372036854775807 AUDIT").seq, 9223372036854775807u);
  EXPECT_EQ(parse_request("5").error, "malformed request: no command");
  EXPECT_NE(parse_request("5 transfer 1 2 3").error.find("unknown command"), std::string::npos);  // case matters
  EXPECT_EQ(parse_request("5 TRANSFER 1 2").error, "malformed request: TRANSFER takes 3 argument(s)");
  EXPECT_EQ(parse_request("5 AUDIT 1").error, "malformed request: AUDIT takes 0 argument(s)");
  EXPECT_EQ(parse_request("5 TRANSFER 1 1 3").error, "transfer to the same account");
  EXPECT_EQ(parse_request("5 TRANSFER 1 2 3 4 5 6 7").error, "malformed request: TRANSFER takes 3 argument(s)");
}

TEST(BankProtocol, EnforcesLimitsAtTheirEdges) {
  EXPECT_TRUE(parse_request("1 DEPOSIT 1 " + std::to_string(kAmountMax)).error.empty());
  EXPECT_FALSE(parse_request("1 DEPOSIT 1 " + std::to_string(kAmountMax + 1)).error.empty());
  EXPECT_FALSE(parse_request("1 DEPOSIT 1 0").error.empty());
  EXPECT_FALSE(parse_request("1 DEPOSIT 1 -5").error.empty());
  EXPECT_FALSE(parse_request("1 DEPOSIT 1 5x").error.empty());
  EXPECT_FALSE(parse_request("1 DEPOSIT 1 99999999999999999999999").error.empty());  // would overflow
  EXPECT_TRUE(parse_request("1 BALANCE 4611686018427387904").error.empty());         // 2^62
  EXPECT_FALSE(parse_request("1 BALANCE 4611686018427387905").error.empty());
  EXPECT_FALSE(parse_request("1 BALANCE 0").error.empty());
  EXPECT_LT(kAmountMax, kBalanceMax);  // one request can never overflow a balance check in SQL
}

// The member logs its database connection string: never with the password in it.
TEST(Conninfo, PasswordIsRedactedInBothForms) {
  using mtcp::bank::redact_conninfo;
  std::string kv = redact_conninfo("host=127.0.0.1 port=5432 dbname=bank user=teller password=hunter2");
  EXPECT_EQ(kv.find("hunter2"), std::string::npos) << kv;
  EXPECT_NE(kv.find("password=***"), std::string::npos) << kv;
  EXPECT_NE(kv.find("dbname=bank"), std::string::npos) << kv;
  std::string uri = redact_conninfo("postgresql://teller:hunter2@127.0.0.1:5432/bank");
  EXPECT_EQ(uri.find("hunter2"), std::string::npos) << uri;
  EXPECT_EQ(redact_conninfo("host='unterminated"), "(unparsable connection string)");
}
