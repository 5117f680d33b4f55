// RAII handles for C library objects: a raw PGconn*, PGresult*, EVP_MD_CTX* never outlives
// the owner that frees it, whatever early return is taken.
#pragma once

#include <memory>

namespace stampmover::common {

template <class T, auto Fn>
struct CDeleter {
  void operator()(T* p) const noexcept {
    if (p != nullptr) Fn(p);
  }
};

}  // namespace stampmover::common
