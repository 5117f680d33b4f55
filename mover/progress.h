// Progress of long work (copy, later verify): per-table row and byte counters updated by
// worker threads, drawn as one bar per table on a terminal, or logged as one line every few
// seconds when stderr is a pipe or a file.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace stampmover::mover {

struct ProgressOptions {
  bool terminal = false;  // Default: false; true draws bars with ANSI escapes (stderr is a tty)
  std::chrono::milliseconds interval{5000};  // Default: 5 s between log lines (250 ms on a tty)
  std::string what = "copy";                 // Default: "copy"
};

// Counters are lock-free and safe to update from any thread; start()/stop() from one thread.
class Progress {
 public:
  struct Item {
    std::string name;
    uint64_t est_rows = 0;
    uint64_t est_bytes = 0;
    std::atomic<uint64_t> rows{0};
    std::atomic<uint64_t> bytes{0};
    std::atomic<int> state{0};  // 0 pending, 1 running, 2 done
    std::atomic<int64_t> started_ms{0};   // steady clock, set by the reporter when first seen running
    std::atomic<int64_t> finished_ms{0};  // set by the reporter when first seen done
  };

  explicit Progress(ProgressOptions options) : options_(std::move(options)) {}
  ~Progress() { stop(); }
  // Adds a tracked item before start(); returns its index.
  size_t add(std::string name, uint64_t est_rows, uint64_t est_bytes);
  Item& item(size_t i) { return *items_[i]; }
  size_t size() const { return items_.size(); }
  void start();
  // Stops the reporter and draws the final state once.
  void stop();

 private:
  void loop();
  void draw(bool final);

  ProgressOptions options_;
  std::vector<std::unique_ptr<Item>> items_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool started_ = false;
  size_t drawn_lines_ = 0;
  std::chrono::steady_clock::time_point t0_;
};

// "1.5 GB", "12.0 MB"
std::string humanBytes(double bytes);
// "1h02m", "3m05s", "12s"
std::string humanDuration(double seconds);
// "1,234,567"
std::string withCommas(uint64_t n);

}  // namespace stampmover::mover
