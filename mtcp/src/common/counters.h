// Anomaly and progress counters (like Linux MPTCP's MIB). Tests assert on them; tools print
// them. Plain integers: the core is single-threaded per node.
#pragma once
#include <cstdint>

namespace mtcp {

#define MTCP_COUNTERS(X)                                                                   \
  X(frames_malformed)          /* frames that failed to decode; the subflow was reset */   \
  X(control_malformed)         /* control messages that failed to decode or authenticate */ \
  X(plain_tcp_subflows)        /* subflows served as plain TCP (no preface) */              \
  X(proofs_bad)                /* MIGRATE with a proof that did not verify */               \
  X(certs_expired)             /* MIGRATE with an expired or not-yet-valid certificate */   \
  X(migrate_rate_limited)      /* MIGRATE refused by the rate limiter */                    \
  X(duplicate_bytes_dropped)   /* received data bytes already delivered */                 \
  X(replayed_input_bytes)      /* logged input handed to the app again after import */      \
  X(suppressed_output_bytes)   /* replayed output the client already had, not sent */       \
  X(migrations_started)        /* client: attempts begun; server: MIGRATE verified */       \
  X(migrations_done)           /* completed (client accepted / server took ownership) */    \
  X(migrations_failed)         /* ended with an explicit error */                           \
  X(migrations_abandoned)      /* client: dropped because the connection ended meanwhile */ \
  X(claims_granted)            /* this server granted an ownership claim */                 \
  X(claims_denied)             /* this server denied an ownership claim */                  \
  X(claims_abandoned)          /* lazy claims of this server that timed out (ABANDON sent) */ \
  X(handoffs_cancelled)        /* frozen for a claim its claimer abandoned: owner again */  \
  X(stale_messages)            /* control messages for an old epoch, ignored */             \
  X(replication_msgs_sent)     /* eager pushes sent */                                      \
  X(replication_bytes_sent)    /* eager push bytes */                                       \
  X(replication_window_waits)  /* eager: input held back, the alternate's window was full */ \
  X(limit_refusals)            /* operations refused because a cap would be exceeded */     \
  X(connections_opened)        /* new connections accepted (WELCOME sent) */                \
  X(connections_freed)         /* connections removed from the table */                    \
  X(replay_mismatches)         /* replayed output differed from the old owner's: conn reset */ \
  X(replay_checked_bytes)      /* replayed output compared (bytes or digest) and equal */   \
  X(replay_unverified_bytes)   /* replayed output the client had that nothing could check */ \
  X(output_digest_bytes)       /* output hashed by an owner for a later replay check */

struct Counters {
#define MTCP_COUNTER_FIELD(name) uint64_t name = 0;
  MTCP_COUNTERS(MTCP_COUNTER_FIELD)
#undef MTCP_COUNTER_FIELD

  template <typename F>
  void for_each(F&& f) const {
#define MTCP_COUNTER_VISIT(name) f(#name, name);
    MTCP_COUNTERS(MTCP_COUNTER_VISIT)
#undef MTCP_COUNTER_VISIT
  }
};

}  // namespace mtcp
