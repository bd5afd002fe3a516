#include "core/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

namespace hi {
namespace {

EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(Config, DefaultsApplyWhenNothingIsSet) {
  auto cfg = Config::load(env_of({}));
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->str("BUS"), "redis");
  EXPECT_EQ(cfg->integer("HTTP_PORT"), 8080);
  EXPECT_EQ(cfg->str("RELAY_SLOT"), "hashinsight_outbox");
  EXPECT_FALSE(cfg->is_set("DATABASE_URL"));
}

TEST(Config, EnvironmentOverridesDefaultAndFlagOverridesEnvironment) {
  auto cfg =
      Config::load(env_of({{"BUS", "kafka"}, {"HTTP_PORT", "9000"}}), {{"HTTP_PORT", "9100"}});
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->str("BUS"), "kafka");
  EXPECT_EQ(cfg->integer("HTTP_PORT"), 9100);
}

TEST(Config, EveryBadValueIsNamedWithItsReason) {
  auto cfg = Config::load(env_of({{"HTTP_PORT", "abc"},
                                  {"BUS", "rabbitmq"},
                                  {"DATABASE_URL", "mysql://db/x"},
                                  {"REDIS_URL", "http://r"},
                                  {"KAFKA_BROKERS", "broker1:9092,broker2"},
                                  {"API_WORKERS", "0"},
                                  {"CRM_WEBHOOK_URL", "ftp://x"}}));
  ASSERT_FALSE(cfg.ok());
  const std::string& msg = cfg.error().message;
  EXPECT_EQ(cfg.error().code, Code::kInvalidArgument);
  EXPECT_NE(msg.find("HTTP_PORT='abc': not an integer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("BUS='rabbitmq': must be one of redis|kafka"), std::string::npos) << msg;
  EXPECT_NE(msg.find("DATABASE_URL='mysql://db/x': must be a postgresql:// URL"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("REDIS_URL='http://r': must be a redis:// URL"), std::string::npos) << msg;
  EXPECT_NE(msg.find("KAFKA_BROKERS='broker1:9092,broker2': expected host:port"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("API_WORKERS='0': out of range 1..256"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRM_WEBHOOK_URL='ftp://x'"), std::string::npos) << msg;
}

TEST(Config, RejectsOutOfRangeAndTrailingGarbage) {
  EXPECT_FALSE(Config::load(env_of({{"HTTP_PORT", "70000"}})).ok());
  EXPECT_FALSE(Config::load(env_of({{"HTTP_PORT", "80x"}})).ok());
  EXPECT_FALSE(Config::load(env_of({{"HTTP_PORT", ""}})).ok());
  EXPECT_FALSE(Config::load(env_of({{"KAFKA_BROKERS", "host:0"}})).ok());
  EXPECT_TRUE(Config::load(env_of({{"KAFKA_BROKERS", "a:9092,b:9093"}})).ok());
}

TEST(Config, UnknownOverrideIsAnError) {
  auto cfg = Config::load(env_of({}), {{"NO_SUCH_SETTING", "1"}});
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.error().message.find("NO_SUCH_SETTING"), std::string::npos);
}

TEST(Config, EnvExampleListsEverySettingWithItsDefault) {
  const std::string text = env_example();
  for (const auto& s : settings()) {
    const std::string line = std::string(s.name) + "=" + std::string(s.default_value) + "\n";
    EXPECT_NE(text.find(line), std::string::npos) << s.name;
  }
}

TEST(Config, CommittedEnvExampleIsCurrent) {
  std::ifstream in(HI_SOURCE_DIR "/.env.example");
  ASSERT_TRUE(in) << "missing .env.example; regenerate with `hashinsight env-example`";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), env_example()) << "regenerate with `hashinsight env-example > .env.example`";
}

}  // namespace
}  // namespace hi
