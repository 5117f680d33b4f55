// Shared helpers for integration tests: a pair of throwaway stamps started once per test
// binary (and always stopped), fresh databases per test, running the stampmover binary as a
// child process, and independent dumps of a tenant's rows for comparing both sides.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/pg.h"
#include "harness/local_cluster.h"

namespace stampmover::testing {

// The source and destination clusters shared by every test of this binary. Started on first
// use; stopped by a gtest Environment at exit (and by the harness on SIGINT/SIGTERM).
harness::LocalCluster& sourceCluster();
harness::LocalCluster& destCluster();

// Creates a fresh database named after the running test on both clusters ("t_<n>") and returns
// its name. Databases are left for the cluster teardown to remove.
std::string freshDatabase();

// Connects or fails the test (ADD_FAILURE + throws std::runtime_error to abort it).
common::PgConnection connectOrDie(const std::string& dsn, const std::string& label = "test");
// Executes SQL or fails the test.
void execOrDie(common::PgConnection& conn, const std::string& sql);
// First value of a query, "" for NULL / no row.
std::string scalar(common::PgConnection& conn, const std::string& sql,
                   const std::vector<common::PgParam>& params = {});

// Rows of `table` for the tenant as text, ordered by `order_by`: `SELECT t::text ...`.
// Independent of stampmover's code: used to compare both sides.
std::vector<std::string> tenantRows(common::PgConnection& conn, const std::string& table,
                                    const std::string& tenant, const std::string& order_by,
                                    const std::string& tenant_column = "tenant_id");

// The tenant tables of harness::createDemoSchema() and the writer's "scratch" table
// (createScratchTable), each with the ORDER BY that makes tenantRows() a stable dump.
inline constexpr std::pair<const char*, const char*> kDemoTenantTables[] = {
    {"accounts", "account_id"}, {"orders", "order_id"}, {"order_items", "order_id, line"},
    {"documents", "doc_key"},   {"events", "event_id"}, {"scratch", "id"}};

// Fails the test unless tenant 42's rows in every kDemoTenantTables table are the same on both
// sides, row by row in order. A fatal failure returns from this helper only: callers that must
// stop there wrap the call in ASSERT_NO_FATAL_FAILURE.
void expectDemoTenantEqual(common::PgConnection& a_conn, common::PgConnection& b_conn);

// Whole contents of the file at `path`; "" when it cannot be opened (e.g. a log not yet created).
std::string readFile(const std::string& path);

struct ProcessResult {
  int exit_code = -1;  // -signal when killed by a signal
  std::string out;
  std::string err;
};

// Path of the stampmover binary under test.
std::string stampmoverBin();
// Runs stampmover with `args`, waits, and captures output.
ProcessResult runStampmover(const std::vector<std::string>& args);

// Starts stampmover in the background with stderr and stdout to `log_path`; returns its pid.
pid_t spawnStampmover(const std::vector<std::string>& args, const std::string& log_path);
// Waits for `pid`; returns its exit code or -signal.
int waitPid(pid_t pid);

// Owns a spawned child: the destructor kills it (SIGKILL, by pid) and reaps it unless wait()
// already did, so a failed assertion never leaves a process behind.
class ChildProcess {
 public:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  pid_t pid() const { return pid_; }
  int wait();  // exit code or -signal, as waitPid()

 private:
  pid_t pid_;
};

// A temporary directory removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace stampmover::testing
