// The pinned session settings in their two spellings: see session_settings.h.
#include "common/session_settings.h"

namespace stampmover::common {

namespace {

// libpq splits `options` on unescaped whitespace and turns "\x" into "x" (libpq's
// pg_split_opts on the server side): escape both so a value reaches the server unchanged.
std::string escapeOptionWord(std::string_view word) {
  std::string out;
  for (char c : word) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out;
}

}  // namespace

const std::string& pinnedStartupOptions() {
  static const std::string kOptions = [] {
    std::string out;
    for (const PinnedSetting& s : kPinnedSessionSettings) {
      if (!out.empty()) out += ' ';
      out += "-c " + escapeOptionWord(std::string(s.name) + "=" + s.value);
    }
    return out;
  }();
  return kOptions;
}

std::string mergeStartupOptions(std::string_view user_options) {
  size_t end = user_options.find_last_not_of(" \t\n\r\f\v");
  if (end == std::string_view::npos) return pinnedStartupOptions();
  std::string out(user_options.substr(0, end + 1));
  // A trailing unescaped backslash would escape our separating space.
  size_t backslashes = 0;
  for (size_t i = out.size(); i > 0 && out[i - 1] == '\\'; --i) ++backslashes;
  if (backslashes % 2 == 1) out += '\\';
  return out + " " + pinnedStartupOptions();
}

const char* pinnedSettingsSql() {
  static const std::string kSql = [] {
    std::string out;
    for (const PinnedSetting& s : kPinnedSessionSettings) {
      if (!out.empty()) out += "; ";
      // Values are our own constants: none holds a quote. Numbers and booleans unquoted, as
      // they are usually written (and as tests and operators grep for them).
      const std::string_view v = s.value;
      const bool bare = v == "on" || v == "off" ||
                        (!v.empty() && v.find_first_not_of("0123456789") == std::string_view::npos);
      out += std::string("SET ") + s.name + " = " + (bare ? std::string(v) : "'" + std::string(v) + "'");
    }
    return out;
  }();
  return kSql.c_str();
}

}  // namespace stampmover::common
