// Integration-test helpers: see test_support.h.
#include "tests/support/test_support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace stampmover::testing {

namespace {

std::mutex g_mu;
std::unique_ptr<harness::LocalCluster> g_source;
std::unique_ptr<harness::LocalCluster> g_dest;

class ClusterEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    std::lock_guard lock(g_mu);
    if (g_source) g_source->stop().ignore();  // teardown: a leftover is reaped next run
    if (g_dest) g_dest->stop().ignore();      // same
    g_source.reset();
    g_dest.reset();
  }
};

const bool g_registered = [] {
  ::testing::AddGlobalTestEnvironment(new ClusterEnvironment());
  return true;
}();

harness::LocalCluster& startOrDie(std::unique_ptr<harness::LocalCluster>& slot, const char* name) {
  std::lock_guard lock(g_mu);
  if (!slot) {
    harness::ClusterOptions o;
    o.name = name;
    auto c = harness::LocalCluster::start(o);
    if (!c) {
      ADD_FAILURE() << "cannot start cluster " << name << ": " << c.status().message();
      throw std::runtime_error("cluster start failed");
    }
    slot = std::move(*c);
  }
  return *slot;
}

// In a forked child: replaces it with stampmover `args`; exits 127 if that fails.
[[noreturn]] void execStampmover(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {stampmoverBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargs;
  for (auto& a : argv) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  execv(cargs[0], cargs.data());
  _exit(127);
}

}  // namespace

harness::LocalCluster& sourceCluster() { return startOrDie(g_source, "src"); }
harness::LocalCluster& destCluster() { return startOrDie(g_dest, "dst"); }

std::string freshDatabase() {
  static std::atomic<int> counter{0};
  std::string name = "t_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  for (auto* c : {&sourceCluster(), &destCluster()}) {
    auto st = c->createDatabase(name);
    if (!st.isOk()) {
      ADD_FAILURE() << st.message();
      throw std::runtime_error("create database failed");
    }
  }
  return name;
}

common::PgConnection connectOrDie(const std::string& dsn, const std::string& label) {
  // Server defaults, not stampmover's pinned settings: the tests' own comparisons must not
  // depend on the code under test.
  auto c = common::PgConnection::connect(dsn, label, {}, common::SessionSettings::kServerDefaults);
  if (!c) {
    ADD_FAILURE() << c.status().message();
    throw std::runtime_error("connect failed");
  }
  return std::move(*c);
}

void execOrDie(common::PgConnection& conn, const std::string& sql) {
  auto st = conn.exec(sql);
  if (!st.isOk()) {
    ADD_FAILURE() << st.message() << "\nSQL: " << sql;
    throw std::runtime_error("exec failed");
  }
}

std::string scalar(common::PgConnection& conn, const std::string& sql,
                   const std::vector<common::PgParam>& params) {
  auto v = conn.queryValue(sql, params);
  if (!v) {
    ADD_FAILURE() << v.status().message() << "\nSQL: " << sql;
    throw std::runtime_error("query failed");
  }
  return v->value_or("");
}

std::vector<std::string> tenantRows(common::PgConnection& conn, const std::string& table,
                                    const std::string& tenant, const std::string& order_by,
                                    const std::string& tenant_column) {
  auto r = conn.query("SELECT t::text FROM " + table + " t WHERE " + tenant_column +
                          " = $1 ORDER BY " + order_by,
                      {tenant});
  if (!r) {
    ADD_FAILURE() << r.status().message();
    throw std::runtime_error("query failed");
  }
  std::vector<std::string> out;
  for (int i = 0; i < common::rowCount(*r); ++i) out.push_back(common::cell(*r, i, 0));
  return out;
}

void expectDemoTenantEqual(common::PgConnection& a_conn, common::PgConnection& b_conn) {
  for (const auto& [table, order] : kDemoTenantTables) {
    auto a = tenantRows(a_conn, table, "42", order);
    auto b = tenantRows(b_conn, table, "42", order);
    ASSERT_EQ(a.size(), b.size()) << table;
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << table << " row " << i;
  }
}

std::string readFile(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

std::string stampmoverBin() {
  // STAMPMOVER_TEST_BIN runs the suite against another build (e.g. to show a test fails there).
  const char* other = std::getenv("STAMPMOVER_TEST_BIN");
  return other != nullptr && *other != '\0' ? other : STAMPMOVER_BIN;
}

pid_t spawnStampmover(const std::vector<std::string>& args, const std::string& log_path) {
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Dies with the test: a test killed by a timeout must not leave a migrate retrying forever.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execStampmover(args);
  }
  return pid;
}

int waitPid(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1000;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1000;
}

ProcessResult runStampmover(const std::vector<std::string>& args) {
  TempDir tmp;
  std::string out_path = tmp.path() + "/out";
  std::string err_path = tmp.path() + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, STDOUT_FILENO);
    dup2(e, STDERR_FILENO);
    execStampmover(args);
  }
  ProcessResult r;
  r.exit_code = waitPid(pid);
  r.out = readFile(out_path);
  r.err = readFile(err_path);
  return r;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

int ChildProcess::wait() {
  int rc = waitPid(pid_);
  pid_ = -1;
  return rc;
}

TempDir::TempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "stampmover-test-XXXXXX").string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace stampmover::testing
