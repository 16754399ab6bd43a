// Invariant assertions that stay on in optimised builds (docs/ARCHITECTURE.md "invariants").
//
//   MTCP_ASSERT(cond, "message");
//
// With MTCP_INVARIANTS on (the CMake option of that name, on by default in every build type)
// a false condition prints "file:line: invariant failed: cond: message" to stderr and aborts:
// the engine's state is already wrong, and carrying on could only corrupt a stream silently.
// With it off the condition is not evaluated (it must have no side effects). Unlike assert(),
// NDEBUG does not turn it off, so the RelWithDebInfo simulator checks every invariant too.
#pragma once

#ifndef MTCP_INVARIANTS
#define MTCP_INVARIANTS 1
#endif

namespace mtcp::detail {
[[noreturn]] void invariant_failed(const char* file, int line, const char* cond, const char* msg) noexcept;
}  // namespace mtcp::detail

#if MTCP_INVARIANTS
#define MTCP_ASSERT(cond, msg)                                                     \
  do {                                                                             \
    if (!(cond)) [[unlikely]]                                                      \
      ::mtcp::detail::invariant_failed(__FILE__, __LINE__, #cond, (msg));          \
  } while (0)
#else
#define MTCP_ASSERT(cond, msg) \
  do {                         \
    (void)sizeof(!(cond));     \
  } while (0)
#endif
