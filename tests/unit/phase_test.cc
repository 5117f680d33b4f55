// The migration phase machine: every persisted name round-trips, the legal steps of a
// migration's life are accepted, illegal ones are refused naming both phases and persist
// nothing, terminal phases admit nothing, and a failed persist leaves the phase unchanged.
#include <gtest/gtest.h>

#include "orchestrator/phase.h"

using namespace stampmover;
using orch::Phase;

namespace {

constexpr Phase kAll[] = {Phase::kStarting,   Phase::kCopying,    Phase::kCopied,
                          Phase::kCatchingUp, Phase::kFreezing,   Phase::kDualWrite,
                          Phase::kFinalizing, Phase::kFinalized,  Phase::kRollingBack,
                          Phase::kRolledBack, Phase::kAborting,   Phase::kAborted,
                          Phase::kFailed};

TEST(Phase, NamesRoundTrip) {
  for (Phase p : kAll) {
    auto back = orch::parsePhase(orch::phaseName(p));
    ASSERT_TRUE(back.has_value()) << orch::phaseName(p);
    EXPECT_EQ(*back, p);
  }
  // The names records of earlier versions carry.
  EXPECT_EQ(orch::parsePhase("catching_up"), Phase::kCatchingUp);
  EXPECT_EQ(orch::parsePhase("dual_write"), Phase::kDualWrite);
  EXPECT_FALSE(orch::parsePhase("flipping").has_value());
}

TEST(Phase, HappyPathsAreLegal) {
  const std::vector<std::vector<Phase>> paths = {
      {Phase::kStarting, Phase::kCopying, Phase::kCopied, Phase::kCatchingUp, Phase::kFreezing,
       Phase::kCatchingUp, Phase::kFreezing, Phase::kDualWrite, Phase::kFinalizing,
       Phase::kFinalized},
      {Phase::kCatchingUp, Phase::kFreezing, Phase::kDualWrite, Phase::kRollingBack,
       Phase::kRolledBack},
      {Phase::kCatchingUp, Phase::kAborting, Phase::kAborted},
      {Phase::kCatchingUp, Phase::kFailed, Phase::kAborting, Phase::kAborted},
  };
  for (const auto& path : paths) {
    std::vector<std::pair<Phase, Phase>> persisted;
    orch::PhaseMachine m(path.front(), [&](Phase from, Phase to) {
      persisted.emplace_back(from, to);
      return common::Status::ok();
    });
    for (size_t i = 1; i < path.size(); ++i) {
      auto st = m.advance(path[i]);
      EXPECT_TRUE(st.isOk()) << st.message();
      EXPECT_EQ(m.current(), path[i]);
    }
    EXPECT_EQ(persisted.size(), path.size() - 1);
    EXPECT_TRUE(orch::isTerminal(m.current()) || m.current() == Phase::kCatchingUp);
  }
}

TEST(Phase, IllegalStepIsRefusedNamingBothAndPersistsNothing) {
  int persisted = 0;
  orch::PhaseMachine m(Phase::kCatchingUp, [&](Phase, Phase) {
    ++persisted;
    return common::Status::ok();
  });
  auto st = m.advance(Phase::kFinalizing);  // finalize without a flip
  ASSERT_FALSE(st.isOk());
  EXPECT_EQ(st.errorClass(), common::ErrorClass::kRefused);
  EXPECT_NE(st.message().find("catching_up"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("finalizing"), std::string::npos) << st.message();
  EXPECT_EQ(persisted, 0);
  EXPECT_EQ(m.current(), Phase::kCatchingUp);
  // Past the flip there is no way back to catching up (the forward slot is gone).
  EXPECT_FALSE(orch::isLegalTransition(Phase::kDualWrite, Phase::kCatchingUp));
  EXPECT_FALSE(orch::isLegalTransition(Phase::kDualWrite, Phase::kAborting));
  EXPECT_FALSE(orch::isLegalTransition(Phase::kFailed, Phase::kCatchingUp));
  EXPECT_FALSE(orch::isLegalTransition(Phase::kCopying, Phase::kDualWrite));
}

TEST(Phase, TerminalPhasesAdmitNothing) {
  for (Phase from : {Phase::kFinalized, Phase::kRolledBack, Phase::kAborted}) {
    EXPECT_TRUE(orch::isTerminal(from));
    for (Phase to : kAll) {
      EXPECT_FALSE(orch::isLegalTransition(from, to)) << orch::phaseName(to);
    }
  }
  for (Phase p : kAll) {
    if (!orch::isTerminal(p)) {
      EXPECT_TRUE(orch::isLegalTransition(p, p)) << orch::phaseName(p);
    }
  }
}

TEST(Phase, FailedPersistLeavesThePhase) {
  orch::PhaseMachine m(Phase::kDualWrite, [](Phase, Phase) {
    return common::Status::retryable("disk full");
  });
  auto st = m.advance(Phase::kFinalizing);
  EXPECT_EQ(st.errorClass(), common::ErrorClass::kRetryable);
  EXPECT_EQ(m.current(), Phase::kDualWrite);
  EXPECT_TRUE(m.history().empty());
}

TEST(Phase, PastFlip) {
  EXPECT_FALSE(orch::isPastFlip(Phase::kFreezing));
  EXPECT_TRUE(orch::isPastFlip(Phase::kDualWrite));
  EXPECT_TRUE(orch::isPastFlip(Phase::kRollingBack));
  EXPECT_FALSE(orch::isPastFlip(Phase::kAborted));
}

}  // namespace
