// Throwaway PostgreSQL clusters: see local_cluster.h.
#include "harness/local_cluster.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace stampmover::harness {

using common::Result;
using common::Status;
namespace fs = std::filesystem;

namespace {

constexpr const char* kDirPrefix = "stampmover-pg-";

bool isRoot() { return geteuid() == 0; }

// Postmaster pids of live clusters, for the signal handler (async-signal-safe access only).
constexpr int kMaxClusters = 64;
volatile sig_atomic_t g_pids[kMaxClusters];
std::mutex g_mu;
std::once_flag g_handlers_once;

void onFatalSignal(int sig) {
  // Immediate shutdown of every cluster we started; directories are reaped by the next run.
  for (int i = 0; i < kMaxClusters; ++i) {
    if (g_pids[i] > 0) kill(static_cast<pid_t>(g_pids[i]), SIGQUIT);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void registerPid(pid_t pid) {
  std::call_once(g_handlers_once, [] {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV}) {
      struct sigaction sa {};
      sa.sa_handler = onFatalSignal;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESETHAND;
      sigaction(sig, &sa, nullptr);
    }
  });
  std::lock_guard lock(g_mu);
  for (int i = 0; i < kMaxClusters; ++i) {
    if (g_pids[i] == 0) {
      g_pids[i] = pid;
      return;
    }
  }
}

void unregisterPid(pid_t pid) {
  std::lock_guard lock(g_mu);
  for (int i = 0; i < kMaxClusters; ++i) {
    if (g_pids[i] == pid) g_pids[i] = 0;
  }
}

Result<int> freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::internal("socket: " + std::string(strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return Status::internal("bind: " + std::string(strerror(errno)));
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

bool processAlive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

pid_t readPostmasterPid(const std::string& dir) {
  std::ifstream in(dir + "/postmaster.pid");
  long pid = 0;
  if (in >> pid) return static_cast<pid_t>(pid);
  return 0;
}

// Sends `sig` to the postmaster and waits up to `timeout` for it to exit.
bool stopPid(pid_t pid, int sig, std::chrono::seconds timeout) {
  if (!processAlive(pid)) return true;
  kill(pid, sig);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!processAlive(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !processAlive(pid);
}

std::string tailOf(const std::string& path, size_t max_bytes = 2000) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_bytes) s = s.substr(s.size() - max_bytes);
  return s;
}

}  // namespace

std::string pgBinDir() {
  if (const char* env = std::getenv("STAMPMOVER_PG_BIN")) return env;
  return "/usr/lib/postgresql/15/bin";
}

Result<std::string> runCommand(const std::vector<std::string>& argv_in, bool as_postgres) {
  std::vector<std::string> argv;
  if (as_postgres && isRoot()) {
    argv = {"runuser", "-u", "postgres", "--"};
  }
  argv.insert(argv.end(), argv_in.begin(), argv_in.end());
  int pipefd[2];
  if (pipe(pipefd) != 0) return Status::internal("pipe: " + std::string(strerror(errno)));
  pid_t child = fork();
  if (child < 0) return Status::internal("fork: " + std::string(strerror(errno)));
  if (child == 0) {
    dup2(pipefd[1], STDOUT_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    close(pipefd[0]);
    close(pipefd[1]);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    // Clusters must not die with the test's process group on Ctrl-C before we stop them.
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::internal("command failed (" + argv_in.front() + "): " + out);
  }
  return out;
}

void reapOrphanClusters() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kDirPrefix, 0) != 0) continue;
    std::ifstream owner(entry.path() / "owner.pid");
    long owner_pid = 0;
    if (!(owner >> owner_pid)) continue;  // still being created, or not ours
    if (processAlive(static_cast<pid_t>(owner_pid))) continue;
    std::string data = (entry.path() / "data").string();
    pid_t pm = readPostmasterPid(data);
    if (pm > 0) stopPid(pm, SIGQUIT, std::chrono::seconds(10));
    fs::remove_all(entry.path(), ec);
  }
}

Result<std::unique_ptr<LocalCluster>> LocalCluster::start(const ClusterOptions& options) {
  reapOrphanClusters();
  std::string templ = (fs::temp_directory_path() / (std::string(kDirPrefix) + options.name + "-XXXXXX")).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    return Status::internal("mkdtemp " + templ + ": " + strerror(errno));
  }
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  c->options_ = options;
  std::string root(buf.data());
  {
    std::ofstream owner(root + "/owner.pid");
    owner << getpid() << "\n";
  }
  c->dir_ = root + "/data";
  if (isRoot()) {
    // The directory is the postgres user's: initdb runs as postgres and must write here.
    auto r = runCommand({"chown", "postgres:postgres", root}, false);
    if (!r) return r.status();
  }
  auto init = runCommand({pgBinDir() + "/initdb", "-D", c->dir_, "-U", "postgres", "--auth=trust",
                          "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"},
                         true);
  if (!init) {
    fs::remove_all(root);
    return init.status();
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    SM_ASSIGN_OR_RETURN(c->port_, freePort());
    {
      std::ofstream conf(c->dir_ + "/postgresql.auto.conf", std::ios::trunc);
      conf << "listen_addresses = '127.0.0.1'\n"
           << "port = " << c->port_ << "\n"
           << "unix_socket_directories = '" << root << "'\n"
           << "wal_level = '" << options.wal_level << "'\n"
           << "max_replication_slots = 20\nmax_wal_senders = 20\nmax_connections = 100\n"
           << "shared_buffers = '128MB'\nmax_wal_size = '2GB'\n"
           << "fsync = " << (options.durable ? "on" : "off") << "\n"
           << "full_page_writes = " << (options.durable ? "on" : "off") << "\n"
           << "timezone = '" << options.timezone << "'\n"
           << "datestyle = '" << options.datestyle << "'\n"
           << "log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n";
      for (const auto& [k, v] : options.settings) conf << k << " = '" << v << "'\n";
    }
    if (isRoot()) {
      auto r = runCommand({"chown", "postgres:postgres", c->dir_ + "/postgresql.auto.conf"}, false);
      if (!r) return r.status();
    }
    auto st = runCommand({pgBinDir() + "/pg_ctl", "-D", c->dir_, "-l", root + "/server.log", "-w",
                          "-t", "60", "start"},
                         true);
    if (st) {
      SM_RETURN_IF_ERROR(c->readPid());
      c->running_ = true;
      registerPid(c->pid_);
      return c;
    }
    std::string log = tailOf(root + "/server.log");
    if (log.find("could not bind") == std::string::npos &&
        log.find("Address already in use") == std::string::npos) {
      fs::remove_all(root);
      return Status::internal("cluster '" + options.name + "' failed to start: " + log);
    }
  }
  fs::remove_all(root);
  return Status::internal("cluster '" + options.name + "': no free port after 5 attempts");
}

Status LocalCluster::readPid() {
  pid_ = readPostmasterPid(dir_);
  if (pid_ <= 0) return Status::internal("cluster '" + options_.name + "': no postmaster.pid");
  return Status::ok();
}

LocalCluster::~LocalCluster() {
  stop().ignore();  // destructor: nothing to report to; stop() logs nothing and is best effort
}

Status LocalCluster::stop() {
  if (dir_.empty()) return Status::ok();
  Status result;
  if (running_) {
    // Fast shutdown by pid; escalate to immediate if it does not finish.
    if (!stopPid(pid_, SIGINT, std::chrono::seconds(30)) &&
        !stopPid(pid_, SIGQUIT, std::chrono::seconds(10))) {
      result = Status::internal("cluster '" + options_.name + "' (pid " + std::to_string(pid_) +
                                ") did not stop");
    }
    unregisterPid(pid_);
    running_ = false;
  }
  std::error_code ec;
  fs::remove_all(fs::path(dir_).parent_path(), ec);
  dir_.clear();
  return result;
}

Status LocalCluster::restart() {
  auto st = runCommand({pgBinDir() + "/pg_ctl", "-D", dir_, "-l",
                        fs::path(dir_).parent_path().string() + "/server.log", "-w", "-t", "60",
                        "-m", "fast", "restart"},
                       true);
  if (!st) return st.status();
  unregisterPid(pid_);
  SM_RETURN_IF_ERROR(readPid());
  registerPid(pid_);
  return Status::ok();
}

std::string LocalCluster::dsn(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=" + dbname;
}

Status LocalCluster::psql(const std::string& dbname, const std::string& sql) const {
  auto r = runCommand({pgBinDir() + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn(dbname),
                       "-c", sql},
                      false);
  return r ? Status::ok() : r.status();
}

Status LocalCluster::createDatabase(const std::string& dbname) const {
  return psql("postgres", "CREATE DATABASE \"" + dbname + "\"");
}

}  // namespace stampmover::harness
