// libFuzzer target for PgoutputDecoder: each input is one pgoutput message decoded by a fresh
// decoder that already knows three relations (captured from PostgreSQL 15), so Insert, Update,
// Delete and Truncate inputs reach tuple decoding. Any crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cdc/pgoutput_decoder.h"

namespace {

// A string literal with embedded NULs, sized by the compiler rather than by hand.
template <size_t N>
constexpr std::string_view wire(const char (&s)[N]) {
  return std::string_view(s, N - 1);
}

// Relation messages as the server sent them: app.accounts (16391, 5 columns, key tenant_id+id),
// public.docs (16398, 4 columns), public.audit (16406, 3 columns, REPLICA IDENTITY FULL).
constexpr std::string_view kRelations[] = {
    wire("R\x00\x00\x40\x07"
         "app\x00"
         "accounts\x00"
         "d\x00\x05"
         "\x01"
         "tenant_id\x00"
         "\x00\x00\x00\x17\xff\xff\xff\xff"
         "\x01"
         "id\x00"
         "\x00\x00\x00\x14\xff\xff\xff\xff"
         "\x00"
         "name\x00"
         "\x00\x00\x00\x19\xff\xff\xff\xff"
         "\x00"
         "note\x00"
         "\x00\x00\x04\x13\x00\x00\x00\x18"
         "\x00"
         "mood\x00"
         "\x00\x00\x40\x02\xff\xff\xff\xff"),
    wire("R\x00\x00\x40\x0e"
         "public\x00"
         "docs\x00"
         "d\x00\x04"
         "\x01"
         "id\x00"
         "\x00\x00\x00\x17\xff\xff\xff\xff"
         "\x00"
         "tenant_id\x00"
         "\x00\x00\x00\x17\xff\xff\xff\xff"
         "\x00"
         "title\x00"
         "\x00\x00\x00\x19\xff\xff\xff\xff"
         "\x00"
         "body\x00"
         "\x00\x00\x00\x19\xff\xff\xff\xff"),
    wire("R\x00\x00\x40\x16"
         "public\x00"
         "audit\x00"
         "f\x00\x03"
         "\x01"
         "id\x00"
         "\x00\x00\x00\x17\xff\xff\xff\xff"
         "\x01"
         "tenant_id\x00"
         "\x00\x00\x00\x17\xff\xff\xff\xff"
         "\x01"
         "what\x00"
         "\x00\x00\x00\x19\xff\xff\xff\xff"),
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stampmover::cdc::PgoutputDecoder decoder;
  for (std::string_view rel : kRelations) {
    auto r = decoder.decode(rel, stampmover::common::Lsn(1));
    if (!r.isOk()) __builtin_trap();  // the seed relations are valid: failing here is a bug
  }
  auto r = decoder.decode(std::string_view(reinterpret_cast<const char*>(data), size),
                          stampmover::common::Lsn(2));
  // Either outcome is fine; only crashes, leaks and sanitizer reports are findings.
  if (r.isOk() && r->has_value()) {
    const auto& ev = **r;
    volatile size_t sink = ev.change.new_tuple.size() + ev.message.content.size();
    (void)sink;
  }
  return 0;
}
