// `stampmover move create|list|show|cutover|rollback|finalize|pause|resume|cancel`: the CLI of
// the service, calling its HTTP API (issue 12).
#pragma once

#include <string>

namespace CLI {
class App;
}

struct MoveCliArgs {
  std::string api = "https://127.0.0.1:8443";  // Default: https://127.0.0.1:8443 ($STAMPMOVER_API)
  std::string token_file;                      // Default: "" ($STAMPMOVER_TOKEN instead)
  std::string ca_file;                         // Default: "" (system CAs)
  double timeout_s = 30;                       // Default: 30 s
  bool json = false;                           // Default: false (human-readable)
  // create
  std::string tenant, from, to;
  std::string cutover = "auto";                // Default: auto
  int priority = 0;                            // Default: 0
  // list
  std::string state, stamp;
  // show and the actions
  std::string id;
  std::string verb;                            // set by main: the chosen subcommand
};

// Adds `move` and its subcommands to `app`; returns the `move` command.
CLI::App* addMoveCommands(CLI::App& app, MoveCliArgs& args);

// Runs the chosen verb. Returns the exit code: 0 ok, 1 internal (HTTP 500), 2 refused (4xx:
// bad input, unknown move, illegal transition, bad token), 3 retryable (server unreachable,
// 503), as the footer of `stampmover --help` says.
int runMoveCommand(MoveCliArgs& args);
