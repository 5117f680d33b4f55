// `stampmover demo`: the README's first command. Two throwaway stamps on loopback, a tenant
// seeded among others (interleaved in the same heap pages), the tenant's migration with
// progress, an independent comparison of both sides, and the report. Clusters are always
// stopped and removed, also on error or Ctrl-C.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <filesystem>

#include "app/commands.h"
#include "common/pg.h"
#include "harness/load_writer.h"
#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/progress.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/migrate_job.h"

namespace {

using stampmover::common::PgConnection;
using stampmover::common::Status;
namespace harness = stampmover::harness;
namespace orch = stampmover::orch;

int demoFail(const Status& st) {
  std::fprintf(stderr, "demo: error: %s\n", st.message().c_str());
  return 1;
}

// md5 over the tenant's rows in primary-key order, computed by the server: independent of
// the code that moved them.
stampmover::common::Result<std::string> tenantDigest(PgConnection& c, const std::string& table,
                                                     const std::string& order_by) {
  auto v = c.queryValue("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY " +
                            order_by + ")), '') FROM " + table + " t WHERE tenant_id = $1",
                        {"42"});
  if (!v) return v.status();
  return v->value_or("");
}

}  // namespace

int runDemo(const DemoArgs& args, const std::atomic<bool>& cancel) {
  std::printf("== stampmover demo: starting two local stamps (PostgreSQL 15 on 127.0.0.1)\n");
  std::fflush(stdout);
  harness::ClusterOptions a_opts;
  a_opts.name = "stamp-a";
  auto a = harness::LocalCluster::start(a_opts);
  if (!a) return demoFail(a.status());
  harness::ClusterOptions b_opts;
  b_opts.name = "stamp-b";
  auto b = harness::LocalCluster::start(b_opts);
  if (!b) return demoFail(b.status());
  std::printf("   stamp-a: port %d (pid %d)   stamp-b: port %d (pid %d)\n", (*a)->port(),
              (*a)->postmasterPid(), (*b)->port(), (*b)->postmasterPid());
  for (auto* c : {a->get(), b->get()}) {
    Status st = c->createDatabase("app");
    if (!st.isOk()) return demoFail(st);
  }
  auto src = PgConnection::connect((*a)->dsn("app"), "stamp-a");
  auto dst = PgConnection::connect((*b)->dsn("app"), "stamp-b");
  if (!src) return demoFail(src.status());
  if (!dst) return demoFail(dst.status());
  for (auto* c : {&*src, &*dst}) {
    Status st = harness::createDemoSchema(*c);
    if (!st.isOk()) return demoFail(st);
  }
  harness::createScratchTable((*a)->dsn("app"));
  harness::createScratchTable((*b)->dsn("app"));
  std::printf("== seeding tenant 42 (%s rows in order_items, ~%s in all) beside tenants 1, 2, 3\n",
              stampmover::mover::withCommas(args.tenant_items).c_str(),
              stampmover::mover::withCommas(harness::seededTenantRows(args.tenant_items)).c_str());
  std::fflush(stdout);
  harness::SeedOptions seed;
  seed.tenant_items = args.tenant_items;
  seed.other_items = args.tenant_items;
  Status st = harness::seedTenants(*src, seed);
  if (!st.isOk()) return demoFail(st);
  harness::SeedOptions dest_seed;
  dest_seed.tenant = 7;  // the destination already serves other tenants
  dest_seed.others = {8};
  dest_seed.tenant_items = args.tenant_items / 10 + 1;
  dest_seed.other_items = args.tenant_items / 10 + 1;
  st = harness::seedTenants(*dst, dest_seed);
  if (!st.isOk()) return demoFail(st);

  std::string state_dir = (*a)->dataDir() + "/../stampmover-state";
  orch::CopyJobOptions o;
  o.tenant = "42";
  o.source = {"stamp-a", (*a)->dsn("app"), "source stamp 'stamp-a'"};
  o.destination = {"stamp-b", (*b)->dsn("app"), "destination stamp 'stamp-b'"};
  o.state_dir = state_dir;
  o.copy.jobs = args.jobs;
  o.progress_terminal = isatty(STDERR_FILENO);

  std::printf("== preflight\n");
  auto pre = orch::runPreflightOnly(o);
  if (!pre) return demoFail(pre.status());
  std::fputs(orch::formatPreflight(*pre, o).c_str(), stdout);

  // The tenant keeps writing while it moves: a bounded writer (inserts, updates of TOASTed
  // rows, primary-key changes, deletes, truncates; on tenant 42 and on tenant 1).
  harness::WriterOptions wo;
  wo.dsn = (*a)->dsn("app");
  wo.duration = std::chrono::seconds(args.writer_seconds);
  wo.pause = std::chrono::microseconds(2000);
  harness::Writer writer(wo);
  std::printf("== migrating tenant 42 from stamp-a to stamp-b while a writer runs for %u s\n",
              args.writer_seconds);
  std::fflush(stdout);
  orch::MigrateOptions mo;
  mo.copy = o;
  mo.until_caught_up = true;
  mo.status_interval = std::chrono::milliseconds(1000);
  auto res = orch::runMigrate(mo, &cancel);
  if (!res) return demoFail(res.status());
  std::fputs(orch::formatMigrateReport(*res).c_str(), stdout);
  std::printf("== caught up while the writer was still writing (%s transactions so far); "
              "following it until it stops\n",
              stampmover::mover::withCommas(writer.transactions()).c_str());
  std::fflush(stdout);
  auto writer_done = std::chrono::steady_clock::now() + std::chrono::seconds(args.writer_seconds);
  mo.until_caught_up = false;
  // Follow live until the writer's time is up, then catch up on the tail.
  std::atomic<bool> stop_following{false};
  std::thread stopper([&] {
    while (std::chrono::steady_clock::now() < writer_done && !cancel.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    writer.stop();
    stop_following = true;
  });
  auto follow = orch::runMigrate(mo, &stop_following);
  stopper.join();
  if (!follow && follow.status().errorClass() != stampmover::common::ErrorClass::kCancelled) {
    return demoFail(follow.status());
  }
  std::printf("== writer stopped after %s transactions (%s failed, e.g. FK races); final catch-up\n",
              stampmover::mover::withCommas(writer.transactions()).c_str(),
              stampmover::mover::withCommas(writer.errors()).c_str());
  mo.until_caught_up = true;
  auto final_run = orch::runMigrate(mo, &cancel);
  if (!final_run) return demoFail(final_run.status());
  std::fputs(orch::formatMigrateReport(*final_run).c_str(), stdout);

  std::printf("== independent check: server-side md5 of each table's tenant rows, both sides\n");
  bool all_equal = true;
  const std::pair<const char*, const char*> tables[] = {
      {"accounts", "account_id"}, {"orders", "order_id"}, {"order_items", "order_id, line"},
      {"documents", "doc_key"},   {"events", "event_id"},  {"scratch", "id"}};
  for (const auto& [table, order] : tables) {
    auto sd = tenantDigest(*src, table, order);
    auto dd = tenantDigest(*dst, table, order);
    if (!sd) return demoFail(sd.status());
    if (!dd) return demoFail(dd.status());
    bool eq = *sd == *dd;
    all_equal = all_equal && eq;
    std::printf("   %-12s %s  %s\n", table, sd->substr(0, sd->find(':')).c_str(),
                eq ? "identical" : "DIFFERENT");
  }
  auto others = dst->queryValue("SELECT count(*) FROM order_items WHERE tenant_id NOT IN (42, 7, 8)");
  if (!others) return demoFail(others.status());
  std::printf("   rows of other source tenants on stamp-b: %s\n", others->value_or("?").c_str());
  Status cleanup = orch::runCleanup(o, false).status();
  if (!cleanup.isOk()) return demoFail(cleanup);
  std::printf("== %s; stamps stopped and removed\n",
              all_equal && others->value_or("") == "0"
                  ? "demo OK: destination equals source for tenant 42 after a live migration"
                  : "demo FAILED");
  return all_equal && others->value_or("") == "0" ? 0 : 1;
}
