// The `verify` subcommand: option parsing glue around orch::runVerifyJob, the report on
// stdout, and verify's own exit codes (0 identical, 1 differences or, with --other-tenants
// fail, other tenants' rows on both stamps, or with --dead-letter a dead-lettered event whose
// row differs or cannot be identified, 2 could not verify, 3 retryable, 130 interrupted).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "app/commands.h"
#include "orchestrator/copy_job.h"
#include "orchestrator/verify_job.h"

namespace {

using stampmover::common::ErrorClass;
using stampmover::common::Status;

int verifyExitFor(const Status& st) {
  std::fprintf(stderr, "stampmover: verify: %s\n", st.message().c_str());
  switch (st.errorClass()) {
    case ErrorClass::kRetryable:
      return 3;
    case ErrorClass::kCancelled:
      return 130;
    case ErrorClass::kRefused:
    case ErrorClass::kDataLoss:
    case ErrorClass::kInternal:
      return 2;
  }
  return 2;
}

}  // namespace

void addVerifyOptions(CLI::App* cmd, VerifyArgs& a) {
  cmd->add_option("--jobs", a.jobs, "Concurrent queries per server")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  cmd->add_option("--chunk-rows", a.chunk_rows,
                  "Rows per checksum chunk (the unit narrowed to rows when it differs)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000}));
  cmd->add_option("--report", a.report, "Also write the report as JSON to this file");
  cmd->add_flag("--live", a.live,
                "The tenant is being migrated (migrate running): re-read differing chunks after "
                "the destination has applied past the position they were read at");
  cmd->add_option("--live-wait", a.live_wait_s,
                  "Live: seconds to wait for the applier to pass a source position")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--live-rounds", a.live_rounds, "Live: re-reads of a differing chunk page")
      ->capture_default_str()
      ->check(CLI::Range(2u, 100u));
  cmd->add_option("--other-tenants", a.other_tenants,
                  "Rows of other tenants present on both stamps (an earlier move not purged, or "
                  "a leak): ignore them (only this tenant is judged), report them apart from "
                  "this tenant's differences, or fail (exit 1) when there are any")
      ->capture_default_str()
      ->check(CLI::IsMember({"ignore", "report", "fail"}));
  // Kept so that existing scripts still run: the check it skipped is now off unless asked for.
  cmd->add_flag("--no-foreign-check", a.no_foreign,
                "Deprecated, no effect: other tenants are looked at only with --other-tenants")
      ->group("");
  cmd->add_option("--dead-letter", a.dead_letter,
                  "A Kafka migration's dead-letter file (migrate --cdc kafka --on-bad-event "
                  "dead-letter FILE): list the row of every dead-lettered event of the tenant "
                  "(table and primary key, from the record's key) and whether it differs now; "
                  "exit 1 when one differs or cannot be identified")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--restart", a.restart, "Start over instead of resuming an interrupted verify");
  cmd->add_option("--progress", a.progress, "auto (bars on a terminal), bars, or log")
      ->check(CLI::IsMember({"auto", "bars", "log"}));
}

int runVerifyCommand(const VerifyArgs& a, const stampmover::orch::CopyJobOptions& base,
                     const std::atomic<bool>& cancel) {
  namespace orch = stampmover::orch;
  orch::VerifyJobOptions o;
  o.tenant = base.tenant;
  o.source = base.source;
  o.destination = base.destination;
  o.tenant_columns = base.tenant_columns;
  o.state_dir = base.state_dir;
  o.report_path = a.report;
  o.restart = a.restart;
  o.progress_terminal = a.progress == "bars" || (a.progress == "auto" && isatty(STDERR_FILENO));
  o.verify.jobs = a.jobs;
  o.verify.chunk_rows = a.chunk_rows;
  o.verify.live = a.live;
  o.verify.live_wait = std::chrono::milliseconds(static_cast<int64_t>(a.live_wait_s * 1000));
  o.verify.live_rounds = a.live_rounds;
  o.verify.other_tenants_check = a.other_tenants != "ignore";
  o.fail_on_other_tenants = a.other_tenants == "fail";
  o.dead_letter_path = a.dead_letter;
  auto r = orch::runVerifyJob(o, &cancel);
  if (!r) return verifyExitFor(r.status());
  std::fputs(orch::formatVerifyReport(*r, o).c_str(), stdout);
  std::fflush(stdout);
  if (orch::verifyFailed(*r, o)) return 1;
  if (r->report.unsettled() > 0) return 3;
  return 0;
}
