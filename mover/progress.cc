// Progress reporting: see progress.h.
#include "mover/progress.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

namespace stampmover::mover {

std::string humanBytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

std::string humanDuration(double s) {
  if (s < 0 || s > 1e7) return "?";
  auto total = static_cast<uint64_t>(s + 0.5);
  char buf[32];
  if (total >= 3600) {
    std::snprintf(buf, sizeof buf, "%luh%02lum", total / 3600, (total % 3600) / 60);
  } else if (total >= 60) {
    std::snprintf(buf, sizeof buf, "%lum%02lus", total / 60, total % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lus", total);
  }
  return buf;
}

std::string withCommas(uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

size_t Progress::add(std::string name, uint64_t est_rows, uint64_t est_bytes) {
  auto item = std::make_unique<Item>();
  item->name = std::move(name);
  item->est_rows = est_rows;
  item->est_bytes = est_bytes;
  items_.push_back(std::move(item));
  return items_.size() - 1;
}

void Progress::start() {
  t0_ = std::chrono::steady_clock::now();
  started_ = true;
  thread_ = std::thread([this] { loop(); });
}

void Progress::stop() {
  if (!started_) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  draw(true);
  started_ = false;
}

void Progress::loop() {
  auto interval = options_.terminal ? std::chrono::milliseconds(250) : options_.interval;
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    draw(false);
    lock.lock();
  }
}

void Progress::draw(bool final) {
  double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  uint64_t rows = 0, bytes = 0, est_rows = 0;
  for (const auto& it : items_) {
    uint64_t r = it->rows.load(std::memory_order_relaxed);
    rows += r;
    bytes += it->bytes.load(std::memory_order_relaxed);
    // An estimate below what was already copied is wrong; never show >100%.
    est_rows += it->state.load() == 2 ? r : std::max(r, it->est_rows);
  }
  double rate = elapsed > 0 ? static_cast<double>(bytes) / elapsed : 0;
  double row_rate = elapsed > 0 ? static_cast<double>(rows) / elapsed : 0;
  double eta = row_rate > 0 ? static_cast<double>(est_rows - std::min(est_rows, rows)) / row_rate : -1;
  if (!options_.terminal) {
    if (final) return;  // the caller prints a report
    std::string running;
    for (const auto& it : items_) {
      if (it->state.load() == 1) running += (running.empty() ? "" : ", ") + it->name;
    }
    spdlog::info("{}: {} / ~{} rows ({:.0f}%), {}, {}/s, ETA {}{}", options_.what,
                 withCommas(rows), withCommas(est_rows),
                 est_rows ? 100.0 * static_cast<double>(rows) / static_cast<double>(est_rows) : 0.0,
                 humanBytes(static_cast<double>(bytes)), humanBytes(rate), humanDuration(eta),
                 running.empty() ? "" : "; in progress: " + running);
    return;
  }
  std::string out;
  if (drawn_lines_ > 0) out += "\x1b[" + std::to_string(drawn_lines_) + "F";
  size_t width = 0;
  for (const auto& it : items_) width = std::max(width, it->name.size());
  for (const auto& it : items_) {
    uint64_t r = it->rows.load(std::memory_order_relaxed);
    uint64_t b = it->bytes.load(std::memory_order_relaxed);
    int st = it->state.load();
    uint64_t est = st == 2 ? r : std::max(r, it->est_rows);
    double frac = est ? static_cast<double>(r) / static_cast<double>(est) : (st == 2 ? 1.0 : 0.0);
    // Per-table rate and ETA, from when the reporter first saw the table running.
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    if (st >= 1 && it->started_ms.load() == 0) it->started_ms = now_ms;
    if (st == 2 && it->finished_ms.load() == 0) it->finished_ms = now_ms;
    const int64_t end_ms = it->finished_ms.load() ? it->finished_ms.load() : now_ms;
    const double secs = it->started_ms.load() ? static_cast<double>(end_ms - it->started_ms.load()) / 1e3 : 0;
    const double rate_b = secs > 0.05 ? static_cast<double>(b) / secs : 0;
    const double rows_per_s = secs > 0.05 ? static_cast<double>(r) / secs : 0;
    const double t_eta = rows_per_s > 0 ? static_cast<double>(est - std::min(est, r)) / rows_per_s : -1;
    std::string tail = st == 2 ? "done" : st == 1 ? humanBytes(rate_b) + "/s ETA " + humanDuration(t_eta) : "waiting";
    constexpr int kBar = 24;
    int filled = static_cast<int>(frac * kBar);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kBar - filled), '.');
    char line[256];
    std::snprintf(line, sizeof line, "\x1b[2K%-*s [%s] %3.0f%% %14s rows %10s %s\n",
                  static_cast<int>(width), it->name.c_str(), bar.c_str(), frac * 100,
                  withCommas(r).c_str(), humanBytes(static_cast<double>(b)).c_str(), tail.c_str());
    out += line;
  }
  char total[256];
  std::snprintf(total, sizeof total, "\x1b[2Ktotal %s rows, %s, %s/s, elapsed %s, ETA %s\n",
                withCommas(rows).c_str(), humanBytes(static_cast<double>(bytes)).c_str(),
                humanBytes(rate).c_str(), humanDuration(elapsed).c_str(),
                final ? "-" : humanDuration(eta).c_str());
  out += total;
  drawn_lines_ = items_.size() + 1;
  std::fputs(out.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace stampmover::mover
