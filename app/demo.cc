// `stampmover demo`: the README's first command. Two throwaway stamps on loopback, a tenant
// seeded among others (interleaved in the same heap pages), the tenant's migration with
// progress, an independent comparison of both sides, and the report. Clusters are always
// stopped and removed, also on error or Ctrl-C.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "common/pg.h"
#include "harness/load_writer.h"
#include "harness/loadgen.h"
#include "harness/local_cluster.h"
#include "harness/seed.h"
#include "mover/progress.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/migrate_job.h"
#include "routing/routing_directory.h"

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
  std::printf("== stampmover demo: starting two local stamps and a control plane "
              "(PostgreSQL 15 on 127.0.0.1)\n");
  std::fflush(stdout);
  std::unique_ptr<harness::LocalCluster> clusters[3];
  const char* names[3] = {"stamp-a", "stamp-b", "control"};
  for (int i = 0; i < 3; ++i) {
    harness::ClusterOptions opts;
    opts.name = names[i];
    auto c = harness::LocalCluster::start(opts);
    if (!c) return demoFail(c.status());
    clusters[i] = std::move(*c);
    std::printf("   %-8s port %d (pid %d)\n", names[i], clusters[i]->port(), clusters[i]->postmasterPid());
    Status st = clusters[i]->createDatabase("app");
    if (!st.isOk()) return demoFail(st);
  }
  harness::LocalCluster& a = *clusters[0];
  harness::LocalCluster& b = *clusters[1];
  harness::LocalCluster& cp = *clusters[2];
  auto src = PgConnection::connect(a.dsn("app"), "stamp-a");
  auto dst = PgConnection::connect(b.dsn("app"), "stamp-b");
  if (!src) return demoFail(src.status());
  if (!dst) return demoFail(dst.status());
  for (auto* c : {&*src, &*dst}) {
    Status st = harness::createDemoSchema(*c);
    if (!st.isOk()) return demoFail(st);
  }
  harness::createScratchTable(a.dsn("app"));
  harness::createScratchTable(b.dsn("app"));
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

  // The routing directory says tenant 42 lives on stamp-a; applications resolve through it.
  const std::string cp_dsn = cp.dsn("app");
  stampmover::routing::PgRoutingDirectory routes(cp_dsn);
  st = routes.ensureSchema();
  if (!st.isOk()) return demoFail(st);
  auto put = routes.put("42", "stamp-a");
  if (!put) return demoFail(put.status());

  orch::CopyJobOptions o;
  o.tenant = "42";
  o.source = {"stamp-a", a.dsn("app"), "source stamp 'stamp-a'"};
  o.destination = {"stamp-b", b.dsn("app"), "destination stamp 'stamp-b'"};
  o.state_dir = a.dataDir() + "/../stampmover-state";
  o.copy.jobs = args.jobs;
  o.progress_terminal = isatty(STDERR_FILENO);

  std::printf("== preflight\n");
  auto pre = orch::runPreflightOnly(o);
  if (!pre) return demoFail(pre.status());
  std::fputs(orch::formatPreflight(*pre, o).c_str(), stdout);

  // Two kinds of load while the tenant moves: a heavy writer straight at stamp-a (inserts,
  // updates of TOASTed rows, primary-key changes, deletes, truncates; on tenant 42 and on
  // tenant 1), and an application writing through the routing directory at a fixed rate,
  // retrying on `frozen`, whose every acknowledged write is checked at the end.
  harness::WriterOptions wo;
  wo.dsn = a.dsn("app");
  wo.duration = std::chrono::seconds(args.writer_seconds);
  wo.pause = std::chrono::microseconds(2000);
  wo.truncates = false;  // a TRUNCATE of stamp-a's shared table would also hit the app's rows
  harness::Writer writer(wo);
  harness::LoadgenOptions lo;
  lo.control_plane_dsn = cp_dsn;
  lo.stamp_dsns = {{"stamp-a", a.dsn("app")}, {"stamp-b", b.dsn("app")}};
  lo.rate = 200;
  lo.duration = std::chrono::seconds(args.writer_seconds + 2);
  harness::Loadgen app_load(lo);
  app_load.start();

  std::printf("== migrating tenant 42 from stamp-a to stamp-b live: copy, catch-up, cutover, "
              "dual-write soak, finalize (writers run for %u s)\n",
              args.writer_seconds);
  std::fflush(stdout);
  orch::MigrateOptions mo;
  mo.copy = o;
  mo.status_interval = std::chrono::milliseconds(1000);
  mo.cutover_auto = true;
  mo.control_plane_dsn = cp_dsn;
  mo.soak = std::chrono::seconds(args.writer_seconds + 4);  // outlasts the writers
  auto res = orch::runMigrate(mo, &cancel);
  writer.stop();
  app_load.stop();
  if (!res) return demoFail(res.status());
  std::fputs(orch::formatMigrateReport(*res).c_str(), stdout);

  auto lr = app_load.report();
  auto lost = app_load.missingOn(b.dsn("app"));
  if (!lost) return demoFail(lost.status());
  std::printf("== application load through the routing directory: %s writes acknowledged, "
              "%s retried, longest write stall %.1f ms (p50 %.1f ms, p99 %.1f ms)\n",
              stampmover::mover::withCommas(lr.acknowledged).c_str(),
              stampmover::mover::withCommas(lr.retries).c_str(), lr.max_stall_ms, lr.p50_ms, lr.p99_ms);
  std::printf("   %llu acknowledged writes lost (checked on stamp-b, which now serves tenant 42)\n",
              static_cast<unsigned long long>(*lost));
  auto entry = routes.get("42");
  if (entry && *entry) {
    std::printf("   routing: tenant 42 -> %s (epoch %llu, %s)\n", (*entry)->stamp.c_str(),
                static_cast<unsigned long long>((*entry)->epoch),
                stampmover::routing::routeStateName((*entry)->state));
  }

  std::printf("== independent check: server-side md5 of each table's tenant rows, both stamps\n");
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
    std::printf("   %-12s %8s rows  %s\n", table, sd->substr(0, sd->find(':')).c_str(),
                eq ? "identical" : "DIFFERENT");
  }
  auto others = dst->queryValue("SELECT count(*) FROM order_items WHERE tenant_id NOT IN (42, 7, 8)");
  if (!others) return demoFail(others.status());
  std::printf("   rows of other source tenants on stamp-b: %s\n", others->value_or("?").c_str());
  const bool ok = all_equal && others->value_or("") == "0" && *lost == 0 && res->finalized;
  std::printf("== %s; stamps stopped and removed\n",
              ok ? "demo OK: tenant 42 moved live to stamp-b, 0 acknowledged writes lost"
                 : "demo FAILED");
  return ok ? 0 : 1;
}
