// Certificates (cert/cert.h, HMAC-SHA256 through OpenSSL 3): issuing one (the per-connection
// secret a server derives for WELCOME / ACCEPT / RENEW), the client's proof over a challenge,
// the target server's verification, and the rejection of forgeries (same work as a good proof:
// the secret and the proof are recomputed before the constant-time compare) and of an expired
// certificate (no crypto at all).
#include <benchmark/benchmark.h>

#include "bench_util.h"
#include "cert/cert.h"

namespace mtcp::bench {
namespace {

constexpr uint64_t kNow = 50'000;
constexpr uint32_t kTarget = 2;
constexpr uint32_t kCounter = 3;

struct Fixture {
  cert::Key pool_key = bench_pool_key();
  cert::Certificate cert{0x0123456789ABCDEFull, 1, 1'000, 601'000};
  cert::Key secret = cert::derive_secret(pool_key, cert);
  cert::Challenge challenge{};
  cert::Mac proof{};
  Fixture() {
    BenchRandom r(42);
    r.fill(challenge);
    proof = cert::make_proof(secret, challenge, kTarget, cert.conn_id, kCounter);
  }
  Status verify(const cert::Certificate& c, const cert::Mac& p, uint64_t now = kNow) const {
    return cert::verify(pool_key, c, challenge, kTarget, kCounter, p, now);
  }
};

// Server side, new connection or ACCEPT: a certificate and its secret.
void BM_CertIssue(benchmark::State& state) {
  Fixture f;
  cert::Certificate c = f.cert;
  if (cert::derive_secret(f.pool_key, c) != f.secret || !f.verify(c, f.proof)) {
    state.SkipWithError("issued secret does not verify");
    return;
  }
  for (auto _ : state) {
    ++c.conn_id;  // a different certificate each time
    cert::Key k = cert::derive_secret(f.pool_key, c);
    benchmark::DoNotOptimize(k);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CertIssue);

// Client side: proof of possession of the secret over the target's challenge.
void BM_CertProof(benchmark::State& state) {
  Fixture f;
  cert::Challenge ch = f.challenge;
  if (cert::make_proof(f.secret, ch, kTarget, f.cert.conn_id, kCounter) != f.proof || !f.verify(f.cert, f.proof)) {
    state.SkipWithError("proof does not verify");
    return;
  }
  for (auto _ : state) {
    ++ch[0];
    cert::Mac m = cert::make_proof(f.secret, ch, kTarget, f.cert.conn_id, kCounter);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CertProof);

// Runs verify on (cert, proof) and requires `expect` every time.
void run_verify(benchmark::State& state, const Fixture& f, const cert::Certificate& c, const cert::Mac& p,
                Error expect, uint64_t now = kNow) {
  if (f.verify(c, p, now).error() != expect) {
    state.SkipWithError("verify gives an unexpected result");
    return;
  }
  int64_t wrong = 0;
  for (auto _ : state) {
    Status st = f.verify(c, p, now);
    wrong += st.error() != expect;
    benchmark::DoNotOptimize(st);
  }
  if (wrong != 0) state.SkipWithError("verify result changed inside the timed loop");
  state.SetItemsProcessed(state.iterations());
}

// Server side: a genuine certificate and proof.
void BM_CertVerify(benchmark::State& state) {
  Fixture f;
  run_verify(state, f, f.cert, f.proof, Error::ok);
}
BENCHMARK(BM_CertVerify);

// A forged certificate: the conn_id and expiry changed, shown with the genuine proof.
void BM_CertVerifyForgedCert(benchmark::State& state) {
  Fixture f;
  cert::Certificate forged = f.cert;
  forged.conn_id ^= 1;
  forged.expires_at_ms += 3'600'000;
  run_verify(state, f, forged, f.proof, Error::bad_proof);
}
BENCHMARK(BM_CertVerifyForgedCert);

// A genuine certificate with a guessed proof (one bit off).
void BM_CertVerifyForgedProof(benchmark::State& state) {
  Fixture f;
  cert::Mac guess = f.proof;
  guess[31] ^= 1;
  run_verify(state, f, f.cert, guess, Error::bad_proof);
}
BENCHMARK(BM_CertVerifyForgedProof);

// An expired certificate is refused before any HMAC.
void BM_CertVerifyExpired(benchmark::State& state) {
  Fixture f;
  run_verify(state, f, f.cert, f.proof, Error::cert_expired, f.cert.expires_at_ms);
}
BENCHMARK(BM_CertVerifyExpired);

}  // namespace
}  // namespace mtcp::bench
