// Throwaway PostgreSQL 15 clusters for tests, benchmarks and the demo: initdb into a fresh
// temporary directory, listen on 127.0.0.1 only on a free port, wal_level=logical, and always
// stopped (by the postmaster's pid) and removed. As root the cluster runs as `postgres`
// (PostgreSQL refuses to run as root), via `runuser -u postgres`.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace stampmover::harness {

struct ClusterOptions {
  std::string name = "stamp";                  // Default: "stamp" (used in the directory name)
  std::string wal_level = "logical";           // Default: "logical"
  bool durable = false;                        // Default: false (fsync off: throwaway data)
  std::string timezone = "UTC";                // Default: "UTC"
  std::string datestyle = "ISO, MDY";          // Default: "ISO, MDY"
  std::vector<std::pair<std::string, std::string>> settings;  // Default: none (extra GUCs)
};

// One running cluster. Thread-compatible: not shared between threads without a lock.
class LocalCluster {
 public:
  // Creates, configures and starts a cluster. Errors: kInternal with the tail of the server
  // log when initdb or startup fails. The returned object owns the cluster: its destructor
  // stops the postmaster and removes the data directory.
  static common::Result<std::unique_ptr<LocalCluster>> start(const ClusterOptions& options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Stops the postmaster (fast shutdown, by pid) and removes the directory. Idempotent.
  common::Status stop();
  // `pg_ctl restart -m fast`, keeping port and data.
  common::Status restart();
  // Libpq DSN for `dbname` over TCP on loopback (trust auth, superuser `postgres`).
  std::string dsn(const std::string& dbname = "postgres") const;
  // Runs SQL through psql (ON_ERROR_STOP) as the superuser; for fixtures only.
  common::Status psql(const std::string& dbname, const std::string& sql) const;
  common::Status createDatabase(const std::string& dbname) const;

  int port() const { return port_; }
  pid_t postmasterPid() const { return pid_; }
  const std::string& dataDir() const { return dir_; }
  const std::string& name() const { return options_.name; }

 private:
  LocalCluster() = default;
  common::Status readPid();

  ClusterOptions options_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = 0;
  bool running_ = false;
};

// Runs argv (as `postgres` when we are root and as_postgres is set), waits for it, and returns
// its combined output. Errors: kInternal with the output when it exits non-zero.
common::Result<std::string> runCommand(const std::vector<std::string>& argv, bool as_postgres);

// Stops and removes clusters left behind by harness processes that died (kill -9, crash).
void reapOrphanClusters();

// Directory of the PostgreSQL 15 server binaries (initdb, pg_ctl, psql).
std::string pgBinDir();

}  // namespace stampmover::harness
