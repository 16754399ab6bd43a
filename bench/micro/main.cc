// main() of mtcp-bench-micro: Google Benchmark's, with two settings of its own.
//  - A shorter default minimum time per benchmark (0.2 s instead of the library's 0.5 s), so
//    the full run stays under a minute. An explicit --benchmark_min_time on the command line
//    wins (it is parsed after the default).
//  - glibc's malloc thresholds fixed at the values a long-running process reaches by itself
//    (glibc raises them after freeing its first large mmapped block: mmap threshold up to
//    32 MiB, trim threshold twice that). Left dynamic, whether a 256 KiB block costs page faults
//    depends on which benchmarks ran earlier in the same process, so a --benchmark_filter run
//    and a full run disagreed by up to 6x on the copying benchmarks. Blocks above 32 MiB are
//    still mmapped (and faulted in) on every allocation, as in the daemons.
#include <benchmark/benchmark.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <vector>

int main(int argc, char** argv) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
  static char default_min_time[] = "--benchmark_min_time=0.2";
  std::vector<char*> args(argv, argv + argc);
  args.insert(args.begin() + 1, default_min_time);
  args.push_back(nullptr);
  int n = static_cast<int>(args.size()) - 1;
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
