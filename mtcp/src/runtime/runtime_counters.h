// The member runtime's own counters (sockets, not protocol): shown next to the engine's in
// `mtcpctl status` and in the member's rate-limited security log lines (docs/security.md).
#pragma once
#include <cstdint>

namespace mtcp::rt {

#define MTCP_RUNTIME_COUNTERS(X)                                                                    \
  X(accept_fd_exhausted)      /* accept failed for want of a descriptor (EMFILE/ENFILE): backed off */ \
  X(accept_shed)              /* ... and the waiting connection was accepted on the reserve and closed */ \
  X(accept_errors)            /* other accept failures (backed off briefly) */                     \
  X(plain_idle_closed)        /* plain TCP connections closed after plain_idle_timeout_ms idle */  \
  X(plain_refused)            /* plain TCP connections over plain_connections_max, closed */      \
  X(control_refused)          /* inbound control connections over a cap, closed at accept */      \
  X(control_handshake_failed) /* inbound control connections without a valid PEER_HELLO in time */ \
  X(control_peer_mismatch)    /* a verified control connection sent a message from another id */  \
  X(control_bad_header)       /* a verified control connection sent bytes that are not a message */ \
  X(control_bad_message)      /* ... or a message whose tag or body failed its check: closed */   \
  X(control_idle_closed)      /* control connections (either direction) closed when idle */       \
  X(control_connect_failed)   /* outbound control connections that failed before PEER_HELLO */

struct RuntimeCounters {
#define MTCP_RUNTIME_COUNTER_FIELD(name) uint64_t name = 0;
  MTCP_RUNTIME_COUNTERS(MTCP_RUNTIME_COUNTER_FIELD)
#undef MTCP_RUNTIME_COUNTER_FIELD

  template <typename F>
  void for_each(F&& f) const {
#define MTCP_RUNTIME_COUNTER_VISIT(name) f(#name, name);
    MTCP_RUNTIME_COUNTERS(MTCP_RUNTIME_COUNTER_VISIT)
#undef MTCP_RUNTIME_COUNTER_VISIT
  }
};

}  // namespace mtcp::rt
