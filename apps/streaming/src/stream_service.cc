// stream: serves one MPEG-TS file to every client, from its first byte, in real time.
//
// Output: the file's bytes, unchanged, then the server closes. Which bytes go out depends only
// on the position (rule 2 of docs/API.md); the clock decides only WHEN: the byte at offset b
// is due at  origin + (t(b) - lead) * 100 / speed,  where t(b) is the stream time of b's packet
// (from the PCRs, ts.h), `origin` the wall-clock instant (CLOCK_REALTIME, µs) at which the
// stream time 0 was due, and `lead` how far ahead of the stream clock the server may run (the
// client's playout buffer fills to about that). The member's degradation profile (profile.h)
// caps the rate of all its connections together.
//
// Snapshot (big-endian): magic "STRM" u32 | stream id u64 | byte offset u64 | origin µs u64.
// The offset equals the output position (every output byte is a file byte), so a new owner
// resumes at exactly the byte the snapshot names and regenerates from there; the origin is
// wall-clock time so that members on one machine (or with synchronised clocks) continue the
// same schedule. The stream id is a hash of the file: a member serving another file refuses
// the import ("unknown stream"). Input from the client is read and ignored; a client closing
// its side ends the stream.
#include "stream_service.h"

#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "common/bytes.h"
#include "profile.h"
#include "services/pending_output.h"
#include "snapshot.h"
#include "ts.h"

namespace mtcp::stream {
namespace {

constexpr uint64_t kMediaBytesMax = uint64_t{1} << 30;  // 1 GiB: the file is held in memory
constexpr size_t kWriteChunkBytes = 64 * 1024;          // at most this per write
constexpr size_t kReadBytes = 4096;                     // client input, read and ignored
// A snapshot origin this far in the future (another machine's clock) is rebased to now.
constexpr int64_t kOriginSkewMaxUs = 10'000'000;

int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Media {
  BlockPtr bytes;
  TsIndex index;
  uint64_t id = 0;  // FNV-1a 64 of the bytes
};

struct Shared {
  std::shared_ptr<const Media> media;
  RateBudget budget;
  std::chrono::steady_clock::time_point start;
  int64_t since_start_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 start)
        .count();
  }
  explicit Shared(Profile p) : budget(std::move(p)), start(std::chrono::steady_clock::now()) {}
};

struct StreamOptions {
  std::string media;
  std::string profile;
  std::string profile_file;
  uint64_t lead_ms = 1000;
  uint64_t speed = 100;  // percent of real time
  uint64_t snapshot_every = 256 * 1024;
  uint64_t tick_ms = 5;
  // Set by start():
  asio::io_context* io = nullptr;
  std::shared_ptr<Shared> shared;
};

class StreamApp final : public sdk::ConnApp {
 public:
  explicit StreamApp(const StreamOptions& o) : o_(o), m_(*o.shared->media) {}
  ~StreamApp() override { stop(); }

  bool on_open(sdk::Conn& c, const sdk::Import& imp, std::string& why) override {
    waker_ = c.waker();
    timer_ = std::make_unique<asio::steady_timer>(*o_.io);
    replay_until_ = imp.replay_out_until;
    if (imp.snap_id == 0) {
      origin_us_ = wall_us();
      return true;
    }
    StreamSnapshot snap;
    if (!decode_stream_snapshot(imp.snapshot, snap)) {
      why = "not a stream snapshot";
      return false;
    }
    const uint64_t id = snap.id, off = snap.offset, origin = snap.origin_us;
    if (id != m_.id) {
      char b[96];
      std::snprintf(b, sizeof b, "unknown stream %016llx (this member serves %016llx)",
                    static_cast<unsigned long long>(id), static_cast<unsigned long long>(m_.id));
      why = b;
      return false;
    }
    if (off != imp.snap_out || off > m_.bytes->size()) {
      why = "snapshot offset disagrees with the protocol's record or the file";
      return false;
    }
    offset_ = off;
    origin_us_ = static_cast<int64_t>(origin);
    if (due_us(offset_) - wall_us() > kOriginSkewMaxUs)
      origin_us_ = wall_us() - (due_us(offset_) - origin_us_);
    snap_at_ = offset_;
    return true;
  }
  void on_readable(sdk::Conn& c) override { pump(c); }
  void on_writable(sdk::Conn& c) override { pump(c); }
  void on_wake(sdk::Conn& c) override { pump(c); }
  void on_fenced(Error) override { stop(); }
  void on_closed(Error) override { stop(); }

 private:
  // Wall-clock µs at which the byte at `off` is due.
  int64_t due_us(uint64_t off) const {
    size_t pk = std::min<size_t>(off / kTsPacketBytes, m_.index.packet_us.size() - 1);
    int64_t t = m_.index.packet_us[pk] - static_cast<int64_t>(o_.lead_ms) * 1000;
    return origin_us_ + t * 100 / static_cast<int64_t>(o_.speed);
  }
  // The end of the bytes due at `now`: the first packet boundary whose packet is not due yet.
  uint64_t due_end(int64_t now) const {
    const auto& pu = m_.index.packet_us;
    int64_t t = (now - origin_us_) * static_cast<int64_t>(o_.speed) / 100 +
                static_cast<int64_t>(o_.lead_ms) * 1000;
    auto it = std::upper_bound(pu.begin(), pu.end(), t);
    return static_cast<uint64_t>(it - pu.begin()) * kTsPacketBytes;
  }

  void pump(sdk::Conn& c) {
    for (;;) {
      if (!out_.flush(c)) return;
      if (!snapped_ || offset_ >= snap_at_ + o_.snapshot_every) {  // nothing pending: consistent
        svc::take_snapshot(c, encode_stream_snapshot({m_.id, offset_, static_cast<uint64_t>(origin_us_)}));
        snap_at_ = offset_;
        snapped_ = true;
      }
      while (c.read(buf_) > 0) {
      }
      const uint64_t size = m_.bytes->size();
      if (c.input_closed() || offset_ >= size) {
        if (!std::exchange(closed_, true)) (void)c.close();
        return;
      }
      uint64_t n = 0;
      if (offset_ < replay_until_) {
        n = std::min<uint64_t>(replay_until_ - offset_,
                               kWriteChunkBytes);  // not sent again: no pacing
      } else {
        int64_t now = wall_us();
        uint64_t end = std::min<uint64_t>(due_end(now), size);
        if (end <= offset_) return arm(due_us(offset_));
        uint64_t want = std::min<uint64_t>(end - offset_, kWriteChunkBytes);
        int64_t t = o_.shared->since_start_us();
        n = o_.shared->budget.allow(want, t);
        if (n == 0) {
          int64_t at = o_.shared->budget.when(kTsPacketBytes, t);
          if (at == INT64_MAX) at = t + 1'000'000;
          return arm(now + (at - t));
        }
        o_.shared->budget.spend(n);
      }
      out_.push(Slice(m_.bytes, offset_, n));
      offset_ += n;
    }
  }

  // Wake again at wall-clock µs `at` (not sooner than tick_ms from now).
  void arm(int64_t at) {
    int64_t wait = std::max<int64_t>(at - wall_us(), static_cast<int64_t>(o_.tick_ms) * 1000);
    timer_->expires_after(std::chrono::microseconds(wait));
    timer_->async_wait([alive = std::weak_ptr<int>(alive_), waker = waker_](asio::error_code err) {
      if (err || alive.expired()) return;
      waker.wake();
    });
  }
  void stop() {
    if (timer_) timer_->cancel();
    alive_.reset();
  }

  const StreamOptions o_;
  const Media& m_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  std::unique_ptr<asio::steady_timer> timer_;
  sdk::Waker waker_;
  uint64_t offset_ = 0, snap_at_ = 0, replay_until_ = 0;
  int64_t origin_us_ = 0;
  bool snapped_ = false, closed_ = false;
  svc::PendingOutput out_;
  std::array<uint8_t, kReadBytes> buf_{};
};

bool load_media(const std::string& path, Media& m, std::string& why) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    why = "cannot open the media file '" + path + "'";
    return false;
  }
  auto size = static_cast<uint64_t>(f.tellg());
  if (size > kMediaBytesMax) {
    why =
        "the media file '" + path + "' is larger than " + std::to_string(kMediaBytesMax) + " bytes";
    return false;
  }
  Bytes b(size);
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(size))) {
    why = "cannot read the media file '" + path + "'";
    return false;
  }
  if (!index_ts(b, m.index, why)) {
    why = "media file '" + path + "': " + why;
    return false;
  }
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t x : b) h = (h ^ x) * 0x100000001b3ull;
  m.id = h;
  m.bytes = make_block(std::move(b));
  return true;
}

class StreamService final : public sdk::ServiceDef {
 public:
  StreamService()
      : ServiceDef("stream",
                   "video on demand: one MPEG-TS file, paced by its own clock, capped by a "
                   "degradation profile") {
    opt("media", &o_.media,
        "The MPEG-TS file to serve (required; apps/streaming/make-test-media.sh makes one)");
    opt("profile", &o_.profile,
        "Degradation profile inline: 'SECONDS:KBIT|max ...' from the member's start");
    opt("profile-file", &o_.profile_file,
        "Degradation profile from a file (same syntax, # comments)");
    opt("lead-ms", &o_.lead_ms,
        "How far the server runs ahead of the stream clock (the client's buffer)", 0, 60000);
    opt("speed", &o_.speed, "Pacing speed in percent of real time (100: real time)", 10, 10000);
    opt("snapshot-every", &o_.snapshot_every, "Bytes between snapshots", 188, uint64_t{1} << 30);
    opt("tick-ms", &o_.tick_ms, "Shortest pacing timer", 1, 1000);
  }
  std::unique_ptr<sdk::AppFactory> start(const sdk::ServiceEnv& env, std::string& why) override {
    if (env.io == nullptr) {
      why =
          "stream needs the member's event loop (ServiceEnv::io) for its pacing timers; there is "
          "none here";
      return nullptr;
    }
    if (o_.media.empty()) {
      why = "stream: --media FILE is required (an MPEG-TS file)";
      return nullptr;
    }
    if (!o_.profile.empty() && !o_.profile_file.empty()) {
      why = "stream: give --profile or --profile-file, not both";
      return nullptr;
    }
    Profile p;
    if (!o_.profile.empty() && !parse_profile(o_.profile, p, why)) {
      why = "stream: --profile: " + why;
      return nullptr;
    }
    if (!o_.profile_file.empty() && !load_profile_file(o_.profile_file, p, why)) {
      why = "stream: --profile-file: " + why;
      return nullptr;
    }
    auto m = std::make_shared<Media>();
    if (!load_media(o_.media, *m, why)) {
      why = "stream: " + why;
      return nullptr;
    }
    char id[17];
    std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(m->id));
    env.log("stream: serving " + o_.media + " (" + std::to_string(m->bytes->size()) + " bytes, " +
            std::to_string(m->index.duration_us() / 1000) + " ms, stream id " + id + "), profile " +
            p.describe());
    StreamOptions o = o_;
    o.io = env.io;
    o.shared = std::make_shared<Shared>(std::move(p));
    o.shared->media = std::move(m);
    return std::make_unique<sdk::OptionsFactory<StreamApp, StreamOptions>>(o);
  }

 private:
  StreamOptions o_;
};

}  // namespace

std::unique_ptr<sdk::ServiceDef> make_stream_service() { return std::make_unique<StreamService>(); }

}  // namespace mtcp::stream
