#include "common/assert.h"

#include <cstdio>
#include <cstdlib>

namespace mtcp::detail {

// The only console output below the runtime (scripts/check-sans-io.sh names this file).
void invariant_failed(const char* file, int line, const char* cond, const char* msg) noexcept {
  std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", file, line, cond, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace mtcp::detail
