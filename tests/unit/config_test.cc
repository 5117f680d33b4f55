// The stamps file: valid files load, every bad key is a one-line error naming the key and
// the file, and passwords come from a file or an environment variable.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "orchestrator/config.h"

using namespace stampmover;

namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("stampmover-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::filesystem::path dir_;
};

}  // namespace

TEST_F(ConfigTest, LoadsStampsAndOverrides) {
  std::string pw = write("pw", "hunter2\n");
  std::string path = write("stamps.yaml",
                           "tenant_column: org_id\n"
                           "state_dir: /var/lib/sm\n"
                           "tables:\n  public.legacy: { tenant_column: customer }\n"
                           "stamps:\n"
                           "  stamp-a:\n    dsn: host=10.0.0.1 dbname=app user=mover\n"
                           "    password_file: " + pw + "\n    region: eu-west-1\n"
                           "    capacity_bytes: 1000\n"
                           "  stamp-b:\n    dsn: postgresql://mover@10.0.0.2/app\n"
                           "    password_env: SM_TEST_PW_B\n");
  auto cfg = orch::loadConfig(path);
  ASSERT_TRUE(cfg) << cfg.status().message();
  EXPECT_EQ(cfg->stamps.size(), 2u);
  EXPECT_EQ(cfg->stamps.at("stamp-a").region, "eu-west-1");
  EXPECT_EQ(cfg->stamps.at("stamp-a").capacity_bytes, 1000u);
  EXPECT_EQ(cfg->tenant_columns.default_column, "org_id");
  EXPECT_EQ(cfg->tenant_columns.columnFor("public.legacy"), "customer");
  EXPECT_EQ(cfg->tenant_columns.columnFor("public.other"), "org_id");
  EXPECT_EQ(cfg->state_dir, "/var/lib/sm");

  auto a = orch::resolveDsn(*cfg, "stamp-a");
  ASSERT_TRUE(a) << a.status().message();
  EXPECT_NE(a->find("password='hunter2'"), std::string::npos);
  EXPECT_NE(a->find("host='10.0.0.1'"), std::string::npos);

  ::unsetenv("SM_TEST_PW_B");
  auto b = orch::resolveDsn(*cfg, "stamp-b");
  ASSERT_FALSE(b);
  EXPECT_NE(b.status().message().find("SM_TEST_PW_B"), std::string::npos);
  ::setenv("SM_TEST_PW_B", "it's\\x", 1);
  b = orch::resolveDsn(*cfg, "stamp-b");
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_NE(b->find("password='it\\'s\\\\x'"), std::string::npos) << *b;
  EXPECT_NE(b->find("host='10.0.0.2'"), std::string::npos);

  auto unknown = orch::resolveDsn(*cfg, "stamp-z");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.status().message().find("stamp-z"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("stamp-a, stamp-b"), std::string::npos);
}

TEST_F(ConfigTest, ErrorsNameTheKeyAndTheFile) {
  struct Case {
    std::string yaml;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"stamps:\n  a:\n    region: x\n", "stamps.a.dsn: missing"},
      {"stamps:\n  a:\n    dsn: host=x\n    colour: red\n", "stamps.a.colour: unknown key"},
      {"stamps:\n  a:\n    dsn: \"host='x\"\n", "stamps.a.dsn: not a valid libpq DSN"},
      {"stamps:\n  a:\n    dsn: host=x\n    capacity_bytes: -5\n", "stamps.a.capacity_bytes"},
      {"stamps:\n  a:\n    dsn: host=x\n    password_file: /x\n    password_env: Y\n",
       "not both"},
      {"stamps: [1, 2]\n", "stamps: must map"},
      {"stampz: {}\n", "stampz: unknown key"},
      {"tables:\n  legacy: {tenant_column: c}\nstamps:\n  a: {dsn: host=x}\n",
       "tables.legacy: table names are schema-qualified"},
      {"stamps:\n  a: {dsn: host=x\n", "line"},
      {"tenant_column: x\n", "stamps: no stamp defined"},
  };
  for (const auto& c : cases) {
    std::string path = write("bad.yaml", c.yaml);
    auto cfg = orch::loadConfig(path);
    ASSERT_FALSE(cfg) << c.yaml;
    EXPECT_EQ(cfg.status().errorClass(), common::ErrorClass::kRefused);
    EXPECT_NE(cfg.status().message().find(path), std::string::npos) << cfg.status().message();
    EXPECT_NE(cfg.status().message().find(c.expect), std::string::npos)
        << "expected '" << c.expect << "' in: " << cfg.status().message();
    EXPECT_EQ(cfg.status().message().find('\n'), std::string::npos) << "one line";
  }
  auto missing = orch::loadConfig((dir_ / "nope.yaml").string());
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("nope.yaml"), std::string::npos);
}

TEST_F(ConfigTest, PasswordFileMissingIsNamed) {
  std::string path = write("s.yaml", "stamps:\n  a:\n    dsn: host=x\n    password_file: /nonexistent/pw\n");
  auto cfg = orch::loadConfig(path);
  ASSERT_TRUE(cfg);
  auto d = orch::resolveDsn(*cfg, "a");
  ASSERT_FALSE(d);
  EXPECT_NE(d.status().message().find("stamps.a.password_file"), std::string::npos);
}

// libpq's parse error quotes the fragment it choked on, which may be a password: the message
// names the key and the position, never the value.
TEST_F(ConfigTest, AnUnparseableDsnIsNotEchoed) {
  for (const char* dsn : {"host=x password='Zq7 secret", "postgresql://u:Zq7%zzsecret@h/db",
                          "host=x Zq7secret"}) {
    std::string path = write("bad.yaml", std::string("stamps:\n  a:\n    dsn: \"") + dsn + "\"\n");
    auto cfg = orch::loadConfig(path);
    ASSERT_FALSE(cfg) << dsn;
    EXPECT_NE(cfg.status().message().find("stamps.a.dsn"), std::string::npos) << cfg.status().message();
    EXPECT_EQ(cfg.status().message().find("Zq7"), std::string::npos) << cfg.status().message();
  }
}
