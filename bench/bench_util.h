// Helpers shared by the benchmarks: child processes with wall time, peak RSS and a timeout,
// log following, shell quoting, temporary directories, percentiles and medians, machine CPU
// counters and small parsing/printing utilities.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "harness/local_cluster.h"
#include "mover/progress.h"

namespace stampmover::bench {

// Names every benchmark uses; a benchmark takes them with `using namespace stampmover::bench`.
namespace fs = std::filesystem;
namespace harness = ::stampmover::harness;
using common::Result;
using common::Status;
using mover::humanBytes;
using mover::withCommas;
using Clock = std::chrono::steady_clock;

inline double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stdout, fmt, ap);
  va_end(ap);
  std::fflush(stdout);
}

inline Result<uint64_t> parseU64(const std::string& s, const std::string& what) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return Status::internal("unexpected " + what + ": '" + s + "'");
  }
  return v;
}

// Prints "<program>: error: <message>" to stderr; returns 1, the exit code of a failed benchmark.
inline int reportError(const char* program, const std::string& message) {
  std::fprintf(stderr, "%s: error: %s\n", program, message.c_str());
  return 1;
}

// Returns body()'s exit code. An exception that escapes body() has unwound everything it owns
// (its clusters are stopped by their destructors) and is reported as reportError() does, exit 1.
template <class Body>
int runReportingExceptions(const char* program, Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return reportError(program, std::string("unexpected exception: ") + e.what());
  }
}

// Refuses `value` of command-line option `option` outside lo..hi, saying so: "--rows must be
// 1..50000000".
inline Status checkRange(const std::string& option, uint64_t value, uint64_t lo, uint64_t hi) {
  if (value >= lo && value <= hi) return Status::ok();
  return Status::refused(option + " must be " + std::to_string(lo) + ".." + std::to_string(hi));
}

// Refuses a --stampmover binary that this process cannot execute.
inline Status checkStampmoverBinary(const std::string& path) {
  if (access(path.c_str(), X_OK) == 0) return Status::ok();
  return Status::refused("stampmover binary '" + path +
                         "' is not executable (build it, or pass --stampmover)");
}

// Single quotes for /bin/sh; safe for any text.
inline std::string shQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// ---------------------------------------------------------------------------------------------
// Child processes: run with a timeout, timed by wall clock, with their rusage.

struct ChildResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  double seconds = 0;   // fork to exit
  long maxrss_kib = 0;  // ru_maxrss of the child (and its waited-for descendants)
  double cpu_seconds = 0;
};

// Prints the new complete lines of a growing log file, indented, until stopped: the child's own
// progress lines, while the benchmark waits for it.
class LogFollower {
 public:
  explicit LogFollower(std::string path) : path_(std::move(path)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~LogFollower() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    pump();  // whatever arrived before the child exited
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; })) {
      lock.unlock();
      pump();
      lock.lock();
    }
  }
  void pump() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return;
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // partial last line: read it next time
      offset_ += line.size() + 1;
      say("      | %s\n", line.c_str());
    }
  }

  std::string path_;
  size_t offset_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// A started child. Reaped (and its log follower stopped) only by waitChild().
struct Child {
  pid_t pid = -1;
  Clock::time_point t0;
  std::string log_path;
  std::unique_ptr<LogFollower> follower;
};

// Starts argv (no shell) in its own process group with stdin from /dev/null and stdout+stderr
// to `log_path`. Errors: kInternal when it cannot be started.
inline Result<Child> spawnChild(const std::vector<std::string>& argv, const std::string& log_path,
                                bool follow_log) {
  int out_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0) return Status::internal("open " + log_path + ": " + std::strerror(errno));
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  Child c;
  c.log_path = log_path;
  if (follow_log) c.follower = std::make_unique<LogFollower>(log_path);
  c.t0 = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    close(out_fd);
    return Status::internal(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    setpgid(0, 0);  // its own group, so a timeout kills everything it started (a whole pipeline)
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  setpgid(pid, pid);  // also here: no race with the child's own call
  close(out_fd);
  c.pid = pid;
  return c;
}

// True once the child has exited (it stays unreaped, for waitChild).
inline bool childExited(const Child& c) {
  siginfo_t info{};
  info.si_pid = 0;
  if (waitid(P_PID, static_cast<id_t>(c.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == c.pid;
}

// Waits for the child to exit; after `timeout` sends its group SIGTERM, 10 s later SIGKILL.
// Reaps it with its rusage.
inline ChildResult waitChild(Child& c, std::chrono::seconds timeout) {
  const pid_t pid = c.pid;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool timed_out = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    if (cv.wait_for(lock, timeout, [&] { return done; })) return;
    timed_out = true;
    kill(-pid, SIGTERM);
    if (cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; })) return;
    kill(-pid, SIGKILL);
  });
  // Wait without reaping, so the watchdog never signals a recycled pid.
  siginfo_t info{};
  while (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  ChildResult res;
  res.seconds = secondsSince(c.t0);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  // A pipeline's left side may outlive the shell only if the shell was killed; end it too.
  if (timed_out) kill(-pid, SIGKILL);
  int status = 0;
  struct rusage ru {};
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  c.pid = -1;
  c.follower.reset();
  res.timed_out = timed_out;
  if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) res.signal = WTERMSIG(status);
  res.maxrss_kib = ru.ru_maxrss;
  res.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                    static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  return res;
}

// Runs argv (no shell) as spawnChild() starts it and waits for it as waitChild() does.
// Errors: kInternal when it cannot be started.
inline Result<ChildResult> runChild(const std::vector<std::string>& argv,
                                    const std::string& log_path, std::chrono::seconds timeout,
                                    bool follow_log) {
  SM_ASSIGN_OR_RETURN(Child c, spawnChild(argv, log_path, follow_log));
  return waitChild(c, timeout);
}

inline std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The last `n` lines of `text`.
inline std::string tailLines(const std::string& text, size_t n) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;  // the final newline ends the last line
  for (size_t i = 0; i < n; ++i) {
    if (pos == 0) return text;
    size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return text.substr(pos + 1);
}

// OK when the child exited with `want_exit` in time; otherwise says how it ended, with the tail
// of its log.
inline Status childStatus(const ChildResult& r, const std::string& what,
                          const std::string& log_path, int want_exit = 0) {
  if (!r.timed_out && r.exit_code == want_exit) return Status::ok();
  std::string why = r.timed_out ? "timed out"
                    : r.signal  ? "killed by signal " + std::to_string(r.signal)
                                : "exited with " + std::to_string(r.exit_code);
  return Status::internal(what + " " + why + "; last output:\n" +
                          tailLines(readFile(log_path), 30));
}

// A fresh private directory under the temp directory.
inline Result<std::string> makeTempDir(const std::string& prefix) {
  std::string templ = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    return Status::internal("mkdtemp " + templ + ": " + std::strerror(errno));
  }
  return std::string(buf.data());
}

// Removes `dir` (a makeTempDir() directory) and everything in it when it goes out of scope.
struct RemoveDir {
  std::string dir;
  ~RemoveDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);  // best effort: a temp directory
  }
};

// Starts a throwaway cluster named `name` (harness::LocalCluster: PostgreSQL 15, 127.0.0.1 only)
// into `out`, which owns it from then on and stops it when destroyed. Errors: those of
// harness::LocalCluster::start(); `out` is left as it was.
inline Status startCluster(const std::string& name, std::unique_ptr<harness::LocalCluster>& out) {
  harness::ClusterOptions options;
  options.name = name;
  SM_ASSIGN_OR_RETURN(out, harness::LocalCluster::start(options));
  return Status::ok();
}

// Nearest rank: with 20 samples, p99 is the largest.
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, idx == 0 ? 0 : idx - 1)];
}

// The middle value; with an even count, the mean of the two middle ones. `v` must not be empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// (busy, total) jiffies of the whole machine, from /proc/stat: how contended the cores were.
inline std::pair<uint64_t, uint64_t> machineJiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  uint64_t v = 0, total = 0, idle = 0;
  for (int i = 0; i < 8 && in >> v; ++i) {
    total += v;
    if (i == 3 || i == 4) idle += v;  // idle, iowait
  }
  return {total - idle, total};
}

}  // namespace stampmover::bench
