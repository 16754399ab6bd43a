// mtcp-stream-client: a viewer of the `stream` service (docs/streaming.md). Connects to the pool
// with the client library, feeds the bytes into a real GStreamer pipeline
//   appsrc ! tsdemux ! h264parse ! avdec_h264 ! identity ! fakesink     (--show: a window)
// behind a playout buffer, and measures what a viewer sees: startup time, stalls (those that a
// migration caused counted apart), rebuffering ratio, frames decoded, received rate, decode
// errors and continuity (decoded PTS without gap or repeat, MPEG-TS continuity counters, and
// with --verify every byte against the file).
//
// The playout model: frames are decoded as they arrive (fakesink sync=false); the buffer is the
// media time decoded but not yet "played". Playback starts once --startup-ms are buffered and
// advances with the wall clock (times --speed); when it reaches the end of what was decoded it
// stalls until --rebuffer-ms are buffered again (or the stream ended).
//
// Exit status: 0 the whole stream arrived and decoded with no error, no missing or repeated
// frame (and matched --verify / --expect-frames); 1 otherwise; 2 bad usage, a bad pool file, a
// missing GStreamer plugin or a file --verify cannot read.
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>

#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "client/connection.h"
#include "runtime/policy.h"
#include "ts.h"

namespace {

using namespace mtcp;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr uint64_t kAppsrcBytesMax = 8u << 20;  // queued in appsrc before we stop reading
constexpr size_t kReadBytesMax = 256 * 1024;    // per read round
constexpr int64_t kTickMs = 10;                 // the playout model's step
// A stall starting this soon after a migration is the migration's fault.
constexpr int64_t kMigrationBlameMs = 2000;
// After the last byte, how long the pipeline may take to report its end of stream.
constexpr int64_t kEosWaitMs = 5000;
constexpr size_t kFrameQueueMax = 1 << 16;  // decoded frames not yet taken by the loop
constexpr uint64_t kVerifyBytesMax = uint64_t{1} << 30;
constexpr size_t kMigrationRecordsMax = 10000;  // listed in the JSON; all are counted
constexpr size_t kIntervalRecordsMax = 100000;  // listed in the JSON (a day of 1 s intervals)

struct Opt {
  std::string pool_path;
  uint32_t first = 0;
  std::string policies = "throughput,stall,hint,manual";
  rt::PolicyConfig policy;
  int64_t startup_ms = 500, rebuffer_ms = 500;
  uint64_t speed = 100;
  std::string verify, csv;
  uint64_t expect_frames = 0;
  uint64_t garble_at = 0, garble_bytes = 0;
  bool show = false, json_out = false;
  double interval_s = 1.0, time_limit_s = 600;
  int64_t csv_ms = 100;
  std::string migrate_at;                          // "SECONDS:MEMBER ..." (manual, scheduled)
  std::vector<std::pair<int64_t, uint32_t>> plan;  // parsed: ms since start, member
};

constexpr size_t kPlanEntriesMax = 1024;

// "12.5:2 30:3": migrate to member 2 at 12.5 s and to member 3 at 30 s (0: the next member).
bool parse_plan(const std::string& text, std::vector<std::pair<int64_t, uint32_t>>& out,
                std::string& why) {
  std::string t = text;
  for (char& c : t)
    if (c == ',') c = ' ';
  std::istringstream in(t);
  std::string tok;
  while (in >> tok) {
    size_t colon = tok.find(':');
    double secs = 0;
    unsigned long member = 0;
    char* end = nullptr;
    if (colon != std::string::npos) {
      secs = std::strtod(tok.substr(0, colon).c_str(), &end);
      bool ok_s = end && *end == 0 && colon > 0 && secs >= 0 && secs <= 86400;
      std::string m = tok.substr(colon + 1);
      member = std::strtoul(m.c_str(), &end, 10);
      if (ok_s && !m.empty() && end && *end == 0 && member <= UINT32_MAX &&
          out.size() < kPlanEntriesMax &&
          (out.empty() || static_cast<int64_t>(secs * 1000) > out.back().first)) {
        out.emplace_back(static_cast<int64_t>(secs * 1000), static_cast<uint32_t>(member));
        continue;
      }
    }
    why = "--migrate-at: bad entry '" + tok +
          "' (expected SECONDS:MEMBER with growing times, at most " +
          std::to_string(kPlanEntriesMax) + " entries)";
    return false;
  }
  return true;
}

struct FrameQueue {  // filled on GStreamer's streaming thread, drained on the loop
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> frames;  // pts, duration (ns; -1: none)
  uint64_t dropped = 0;
};

struct Migration {
  double t_s;
  uint32_t from, to;
  int64_t downtime_us;
  uint64_t at;
  std::string reason, error;
  // The data gap: from the last byte before the attempt to the first byte after it (ms; -1:
  // none arrived yet). The viewer sees it only if the buffer runs dry meanwhile.
  int64_t gap_ms = -1;
};

class Viewer {
 public:
  Viewer(asio::io_context& io, Opt o) : io_(io), o_(std::move(o)), tick_(io), usr1_(io, SIGUSR1) {}

  int run(const rt::PoolConfig& pool) {
    std::string why;
    if (!o_.verify.empty() && !load_verify(why)) return usage_error(why);
    if (!build_pipeline(why)) return usage_error(why);
    client::Options co;
    co.first = o_.first;
    co.policy = o_.policy;
    conn_ = client::Connection::create(io_, pool, std::move(co), why);
    if (!conn_) return usage_error(why);
    conn_->on_event = [this](const client::Event& e) { event(e); };
    conn_->on_readable = [this] { pump(); };
    if (o_.policy.enabled & rt::kPolicyManual) arm_usr1();
    if (!o_.csv.empty()) {
      csv_ = std::fopen(o_.csv.c_str(), "w");
      if (!csv_) return usage_error("cannot write the CSV file " + o_.csv);
      std::fprintf(csv_,
                   "t_s,received_bytes,rate_kbit_s,buffer_ms,playing,stalled,server,frames\n");
    }
    t0_ = Clock::now();
    gst_element_set_state(pipe_, GST_STATE_PLAYING);
    conn_->connect();
    for (auto [at, member] : o_.plan) {
      auto& t = plan_timers_.emplace_back(std::make_unique<asio::steady_timer>(io_));
      t->expires_after(std::chrono::milliseconds(at));
      t->async_wait([this, member = member](asio::error_code err) {
        if (!err && !done_) conn_->request_migration(member);
      });
    }
    arm_tick();
    io_.run();
    gst_element_set_state(pipe_, GST_STATE_NULL);
    gst_object_unref(pipe_);
    if (csv_) std::fclose(csv_);
    return report();
  }

 private:
  int usage_error(const std::string& why) {
    std::fprintf(stderr, "mtcp-stream-client: %s\n", why.c_str());
    return 2;
  }
  int64_t ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0_).count();
  }

  bool load_verify(std::string& why) {
    std::ifstream f(o_.verify, std::ios::binary | std::ios::ate);
    if (!f) return why = "--verify: cannot open " + o_.verify, false;
    auto n = static_cast<uint64_t>(f.tellg());
    if (n > kVerifyBytesMax) return why = "--verify: the file is larger than 1 GiB", false;
    ref_.resize(n);
    f.seekg(0);
    if (!f.read(reinterpret_cast<char*>(ref_.data()), static_cast<std::streamsize>(n)))
      return why = "--verify: cannot read " + o_.verify, false;
    return true;
  }

  bool build_pipeline(std::string& why) {
    const char* need[] = {"appsrc", "tsdemux", "h264parse", "avdec_h264", "identity", "fakesink"};
    for (const char* el : need) {
      GstElementFactory* f = gst_element_factory_find(el);
      if (!f)
        return why = std::string("the GStreamer element '") + el +
                     "' is missing (install with scripts/setup.sh)",
               false;
      gst_object_unref(f);
    }
    std::string desc =
        "appsrc name=src format=bytes is-live=false ! tsdemux ! h264parse ! avdec_h264 ! identity "
        "name=tap ! ";
    desc += o_.show ? "videoconvert ! autovideosink" : "fakesink sync=false";
    GError* err = nullptr;
    pipe_ = gst_parse_launch(desc.c_str(), &err);
    if (!pipe_ || err) {
      why = std::string("cannot build the GStreamer pipeline: ") +
            (err ? err->message : "unknown error");
      if (err) g_error_free(err);
      if (pipe_) gst_object_unref(pipe_);
      pipe_ = nullptr;
      return false;
    }
    GstElement* src = gst_bin_get_by_name(GST_BIN(pipe_), "src");
    src_ = GST_APP_SRC(src);
    g_object_set(src, "max-bytes", static_cast<guint64>(kAppsrcBytesMax), "block", FALSE, nullptr);
    gst_app_src_set_stream_type(src_, GST_APP_STREAM_TYPE_STREAM);
    gst_object_unref(src);
    GstElement* tap = gst_bin_get_by_name(GST_BIN(pipe_), "tap");
    g_signal_connect(tap, "handoff", G_CALLBACK(&Viewer::on_handoff), &frames_in_);
    gst_object_unref(tap);
    bus_ = gst_element_get_bus(pipe_);
    return true;
  }

  static void on_handoff(GstElement*, GstBuffer* b, gpointer user) {
    auto* q = static_cast<FrameQueue*>(user);
    std::lock_guard lk(q->mu);
    if (q->frames.size() >= kFrameQueueMax) {
      ++q->dropped;
      return;
    }
    int64_t pts = GST_BUFFER_PTS_IS_VALID(b) ? static_cast<int64_t>(GST_BUFFER_PTS(b)) : -1;
    int64_t dur =
        GST_BUFFER_DURATION_IS_VALID(b) ? static_cast<int64_t>(GST_BUFFER_DURATION(b)) : -1;
    q->frames.emplace_back(pts, dur);
  }

  void arm_usr1() {
    usr1_.async_wait([this](asio::error_code err, int) {
      if (err) return;
      conn_->request_migration(0);
      arm_usr1();
    });
  }

  void event(const client::Event& e) {
    double t = static_cast<double>(ms()) / 1000.0;
    using K = client::EventKind;
    switch (e.kind) {
      case K::connected:
        server_ = e.to;
        if (!o_.json_out) std::printf("connected to member %u\n", e.to);
        break;
      case K::migration_started:
        migrating_since_ = ms();
        gap_from_ = last_byte_ms_;
        break;
      case K::migrated:
        server_ = e.to;
        last_migration_end_ = ms();
        migrating_since_ = -1;
        ++migrations_done_;
        if (migrations_.size() < kMigrationRecordsMax) {
          migrations_.push_back({t, e.from, e.to, e.downtime_us, e.rcv_at, e.reason, ""});
          gap_pending_ = true;
        }
        if (!o_.json_out)
          std::printf("[%7.3f s] migrated %u -> %u (%s) in %lld us at byte %llu\n", t, e.from, e.to,
                      e.reason.c_str(), static_cast<long long>(e.downtime_us),
                      static_cast<unsigned long long>(e.rcv_at));
        break;
      case K::migration_failed:
        migrating_since_ = -1;
        ++migrations_failed_;
        if (migrations_.size() < kMigrationRecordsMax)
          migrations_.push_back({t, e.from, e.to, 0, 0, e.reason, client::to_string(e)});
        if (!o_.json_out) std::printf("[%7.3f s] %s\n", t, client::to_string(e).c_str());
        break;
      case K::peer_closed:
        peer_closed_ = true;
        pump();
        break;
      case K::failed:
        error_ = client::to_string(e);
        finish();
        break;
      case K::closed:
        finish();
        break;
      case K::hint:
        break;
    }
  }

  void pump() {
    if (done_ || !conn_) return;
    if (gst_app_src_get_current_level_bytes(src_) >= kAppsrcBytesMax) {
      conn_->set_app_limited(true);  // the decoder is behind: not the server's fault
      return;
    }
    conn_->set_app_limited(false);
    std::vector<Slice> slices;
    conn_->read_slices(kReadBytesMax, slices);
    for (const Slice& s : slices) feed(s);
    if (peer_closed_ && conn_->readable() == 0 && !eos_sent_) {
      eos_sent_ = true;
      eos_sent_ms_ = ms();
      gst_app_src_end_of_stream(src_);
      if (pipeline_failed_) close_conn();
    }
  }

  void feed(const Slice& s) {
    std::span<const uint8_t> b(s.data(), s.size());
    if (!ref_.empty()) {
      for (size_t i = 0; i < b.size() && !mismatch_; ++i) {
        uint64_t at = received_ + i;
        if (at >= ref_.size() || ref_[at] != b[i]) mismatch_ = at;
      }
    }
    GstBuffer* buf = gst_buffer_new_memdup(b.data(), b.size());
    if (o_.garble_bytes >
        0) {  // the test hook: corrupt what the player gets (not what is verified)
      GstMapInfo map;
      gst_buffer_map(buf, &map, GST_MAP_WRITE);
      for (size_t i = 0; i < map.size; ++i) {
        uint64_t at = received_ + i;
        if (at >= o_.garble_at && at < o_.garble_at + o_.garble_bytes)
          map.data[i] ^= static_cast<uint8_t>(0x5A + at);
      }
      cont_.feed(std::span<const uint8_t>(map.data, map.size));
      gst_buffer_unmap(buf, &map);
    } else {
      cont_.feed(b);
    }
    received_ += b.size();
    interval_bytes_ += b.size();
    csv_bytes_ += b.size();
    last_byte_ms_ = ms();
    if (first_byte_ms_ < 0) first_byte_ms_ = last_byte_ms_;
    if (std::exchange(gap_pending_, false) && !migrations_.empty())
      migrations_.back().gap_ms = last_byte_ms_ - gap_from_;
    gst_app_src_push_buffer(src_, buf);  // takes the buffer
  }

  void arm_tick() {
    tick_.expires_after(std::chrono::milliseconds(kTickMs));
    tick_.async_wait([this](asio::error_code err) {
      if (err || done_) return;
      step();
      if (!done_) arm_tick();
    });
  }

  void take_frames() {
    std::vector<std::pair<int64_t, int64_t>> got;
    {
      std::lock_guard lk(frames_in_.mu);
      got.swap(frames_in_.frames);
    }
    for (auto [pts, dur] : got) {
      ++frames_;
      if (pts < 0) {
        ++no_pts_;
        continue;
      }
      if (last_pts_ >= 0) {
        int64_t d = last_dur_ > 0 ? last_dur_ : pts - last_pts_;
        if (pts <= last_pts_)
          ++repeated_;
        else if (d > 0 && pts - last_pts_ > d + d / 2)
          missing_ += static_cast<uint64_t>((pts - last_pts_ + d / 2) / d - 1);
      } else {
        first_pts_ = pts;
      }
      if (pts > last_pts_) {
        last_pts_ = pts;
        last_dur_ = dur;
      }
      decoded_end_ms_ =
          static_cast<double>(last_pts_ - first_pts_ + std::max<int64_t>(dur, 0)) / 1e6;
    }
  }

  void poll_bus() {
    while (GstMessage* m = gst_bus_pop_filtered(
               bus_, static_cast<GstMessageType>(GST_MESSAGE_ERROR | GST_MESSAGE_WARNING |
                                                 GST_MESSAGE_EOS))) {
      if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_EOS) {
        eos_ = true;
      } else {
        GError* err = nullptr;
        gchar* dbg = nullptr;
        bool is_err = GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR;
        if (is_err)
          gst_message_parse_error(m, &err, &dbg);
        else
          gst_message_parse_warning(m, &err, &dbg);
        ++decode_errors_;
        if (first_decode_error_.empty() && err)
          first_decode_error_ = std::string(GST_OBJECT_NAME(m->src)) + ": " + err->message;
        if (!o_.json_out && err)
          std::fprintf(stderr, "mtcp-stream-client: GStreamer %s from %s: %s\n",
                       is_err ? "error" : "warning", GST_OBJECT_NAME(m->src), err->message);
        if (err) g_error_free(err);
        g_free(dbg);
        if (is_err)
          pipeline_failed_ =
              true;  // the pipeline stops: keep reading to the end, judge what we have
      }
      gst_message_unref(m);
    }
  }

  // The playout model, every kTickMs.
  void step() {
    take_frames();
    poll_bus();
    pump();
    int64_t now = ms();
    double dt = static_cast<double>(now - last_step_ms_) * static_cast<double>(o_.speed) / 100.0;
    last_step_ms_ = now;
    bool ended = eos_ || pipeline_failed_;
    double buffer = decoded_end_ms_ - play_ms_;
    if (!started_) {
      if (frames_ > 0 && (buffer >= static_cast<double>(o_.startup_ms) || ended)) {
        started_ = true;
        startup_ms_ = now;
      }
    } else if (stalled_) {
      if (buffer >= static_cast<double>(o_.rebuffer_ms) || ended) {
        stalled_ = false;
        double len = static_cast<double>(now - stall_start_);
        stall_total_ += len;
        if (stall_by_migration_) stall_migration_total_ += len;
      }
    } else if (!finished_play_) {
      play_ms_ += dt;
      play_wall_ += static_cast<double>(now - prev_play_ms_);
      if (play_ms_ >= decoded_end_ms_) {
        play_ms_ = decoded_end_ms_;
        if (ended) {
          finished_play_ = true;
        } else {
          stalled_ = true;
          stall_start_ = now;
          ++stalls_;
          stall_by_migration_ =
              migrating_since_ >= 0 ||
              (last_migration_end_ >= 0 && now - last_migration_end_ <= kMigrationBlameMs);
          if (stall_by_migration_) ++stalls_migration_;
          if (!o_.json_out)
            std::printf("[%7.3f s] stall %s\n", static_cast<double>(now) / 1000.0,
                        stall_by_migration_ ? "(migration)" : "");
        }
      }
    }
    prev_play_ms_ = now;
    buffer_now_ = std::max(0.0, decoded_end_ms_ - play_ms_);
    if (csv_ && now - csv_last_ >= o_.csv_ms) {
      double rate =
          static_cast<double>(csv_bytes_) * 8.0 / static_cast<double>(now - csv_last_);  // kbit/s
      std::fprintf(csv_, "%.3f,%llu,%.1f,%.0f,%d,%d,%u,%llu\n", static_cast<double>(now) / 1000.0,
                   static_cast<unsigned long long>(received_), rate, buffer_now_,
                   started_ && !stalled_ && !finished_play_, stalled_ ? 1 : 0, server_,
                   static_cast<unsigned long long>(frames_));
      csv_bytes_ = 0;
      csv_last_ = now;
    }
    if (o_.interval_s > 0 && now - interval_last_ >= static_cast<int64_t>(o_.interval_s * 1000)) {
      double rate =
          static_cast<double>(interval_bytes_) * 8.0 / static_cast<double>(now - interval_last_);
      if (intervals_.size() < kIntervalRecordsMax)
        intervals_.push_back({{"t_s", static_cast<double>(now) / 1000.0},
                              {"received_kbit_s", rate},
                              {"buffer_ms", buffer_now_},
                              {"frames", frames_},
                              {"server", server_},
                              {"stalled", stalled_}});
      if (!o_.json_out)
        std::printf("[%7.3f s] member %u  %8.1f kbit/s  buffer %6.0f ms  %6llu frames%s\n",
                    static_cast<double>(now) / 1000.0, server_, rate, buffer_now_,
                    static_cast<unsigned long long>(frames_), stalled_ ? "  STALLED" : "");
      interval_bytes_ = 0;
      interval_last_ = now;
    }
    if (eos_sent_ && !ended && now - eos_sent_ms_ > kEosWaitMs) {  // the pipeline never drained
      ++decode_errors_;
      if (first_decode_error_.empty())
        first_decode_error_ = "no end-of-stream from the pipeline within 5 s of the last byte";
      pipeline_failed_ = true;
      ended = true;
    }
    if (ended && eos_sent_ && !close_called_) close_conn();
    if (static_cast<double>(now) / 1000.0 > o_.time_limit_s) {
      error_ = "time limit of " + std::to_string(o_.time_limit_s) + " s reached";
      timed_out_ = true;
      conn_->abort();
      finish();
    }
  }

  void close_conn() {
    if (std::exchange(close_called_, true)) return;
    conn_->close();
  }

  void finish() {
    if (std::exchange(done_, true)) return;
    end_ms_ = ms();
    // Frames the pipeline still held when the stream ended.
    for (int i = 0; i < 50 && !eos_ && !pipeline_failed_ && !timed_out_ && !error_.size(); ++i) {
      GstMessage* m = gst_bus_timed_pop_filtered(
          bus_, 20 * GST_MSECOND, static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
      if (m) {
        if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_EOS)
          eos_ = true;
        else
          ++decode_errors_, pipeline_failed_ = true;
        gst_message_unref(m);
      }
    }
    take_frames();
    poll_bus();
    if (stalled_) {
      double len = static_cast<double>(end_ms_ - stall_start_);
      stall_total_ += len;
      if (stall_by_migration_) stall_migration_total_ += len;
      stalled_ = false;
    }
    tick_.cancel();
    usr1_.cancel();
    for (auto& t : plan_timers_) t->cancel();
    io_.stop();
  }

  int report() {
    if (!ref_.empty() && !mismatch_ && received_ != ref_.size())
      mismatch_ = std::min<uint64_t>(received_, ref_.size());
    uint64_t cont_errors =
        cont_.cc_errors() + cont_.sync_errors() + missing_ + repeated_ + frames_in_.dropped;
    bool complete = peer_closed_ && eos_ && error_.empty();
    std::vector<std::string> problems;
    if (!error_.empty()) problems.push_back(error_);
    if (!complete && error_.empty()) problems.push_back("the stream did not end normally");
    if (decode_errors_)
      problems.push_back(std::to_string(decode_errors_) +
                         " decode error(s): " + first_decode_error_);
    if (cont_errors) problems.push_back("continuity errors");
    if (mismatch_)
      problems.push_back("received bytes differ from " + o_.verify + " at byte " +
                         std::to_string(*mismatch_));
    if (o_.expect_frames && frames_ != o_.expect_frames)
      problems.push_back(std::to_string(frames_) + " frames decoded, " +
                         std::to_string(o_.expect_frames) + " expected");
    double played = play_wall_;
    double ratio = played + stall_total_ > 0 ? stall_total_ / (played + stall_total_) : 0;
    size_t done_migr = migrations_done_;
    int64_t max_gap = 0;
    for (auto& m : migrations_) max_gap = std::max(max_gap, m.gap_ms);
    json j;
    j["end"] = {{"verdict", problems.empty() ? "ok" : "failed"},
                {"problems", problems},
                {"seconds", static_cast<double>(end_ms_) / 1000.0},
                {"bytes_received", received_},
                {"startup_ms", started_ ? startup_ms_ : -1},
                {"first_byte_ms", first_byte_ms_},
                {"frames", frames_},
                {"frames_missing", missing_},
                {"frames_repeated", repeated_},
                {"frames_without_pts", no_pts_},
                {"decode_errors", decode_errors_},
                {"ts_packets", cont_.packets()},
                {"ts_cc_errors", cont_.cc_errors()},
                {"ts_sync_errors", cont_.sync_errors()},
                {"stalls", stalls_},
                {"stalls_migration", stalls_migration_},
                {"stall_ms", stall_total_},
                {"stall_migration_ms", stall_migration_total_},
                {"played_ms", played},
                {"rebuffering_ratio", ratio},
                {"migrations_done", done_migr},
                {"migrations_failed", migrations_failed_},
                {"max_gap_ms", max_gap},
                {"verified", !o_.verify.empty() && !mismatch_}};
    json ms_ = json::array();
    for (auto& m : migrations_)
      ms_.push_back({{"t_s", m.t_s},
                     {"from", m.from},
                     {"to", m.to},
                     {"downtime_us", m.downtime_us},
                     {"at_byte", m.at},
                     {"gap_ms", m.gap_ms},
                     {"reason", m.reason},
                     {"error", m.error}});
    j["migrations"] = ms_;
    j["intervals"] = intervals_;
    if (o_.json_out) {
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf(
          "%s: %llu bytes, %llu frames (missing %llu, repeated %llu), %llu decode errors, ts cc "
          "errors %llu\n",
          problems.empty() ? "ok" : "FAILED", static_cast<unsigned long long>(received_),
          static_cast<unsigned long long>(frames_), static_cast<unsigned long long>(missing_),
          static_cast<unsigned long long>(repeated_),
          static_cast<unsigned long long>(decode_errors_),
          static_cast<unsigned long long>(cont_.cc_errors()));
      std::printf(
          "startup %lld ms, %llu stalls (%llu at a migration), stalled %.0f ms, rebuffering "
          "%.3f%%, %zu migrations (longest data gap %lld ms)\n",
          static_cast<long long>(started_ ? startup_ms_ : -1),
          static_cast<unsigned long long>(stalls_),
          static_cast<unsigned long long>(stalls_migration_), stall_total_, ratio * 100, done_migr,
          static_cast<long long>(max_gap));
      if (!o_.verify.empty())
        std::printf("verify: %s\n", mismatch_ ? "MISMATCH" : "every byte equals the file");
      for (auto& p : problems) std::printf("error: %s\n", p.c_str());
    }
    return problems.empty() ? 0 : 1;
  }

  asio::io_context& io_;
  Opt o_;
  asio::steady_timer tick_;
  asio::signal_set usr1_;
  std::vector<std::unique_ptr<asio::steady_timer>> plan_timers_;
  std::unique_ptr<client::Connection> conn_;
  GstElement* pipe_ = nullptr;
  GstAppSrc* src_ = nullptr;
  GstBus* bus_ = nullptr;
  FrameQueue frames_in_;
  Bytes ref_;
  std::optional<uint64_t> mismatch_;
  stream::TsContinuity cont_;
  FILE* csv_ = nullptr;
  Clock::time_point t0_;
  std::vector<Migration> migrations_;
  json intervals_ = json::array();
  uint32_t server_ = 0;
  uint64_t received_ = 0, interval_bytes_ = 0, csv_bytes_ = 0;
  uint64_t frames_ = 0, missing_ = 0, repeated_ = 0, no_pts_ = 0, decode_errors_ = 0;
  uint64_t stalls_ = 0, stalls_migration_ = 0, migrations_done_ = 0, migrations_failed_ = 0;
  int64_t first_pts_ = -1, last_pts_ = -1, last_dur_ = -1;
  double decoded_end_ms_ = 0, play_ms_ = 0, play_wall_ = 0, stall_total_ = 0,
         stall_migration_total_ = 0;
  double buffer_now_ = 0;
  int64_t last_step_ms_ = 0, prev_play_ms_ = 0, stall_start_ = 0, startup_ms_ = -1,
          first_byte_ms_ = -1, end_ms_ = 0;
  int64_t migrating_since_ = -1, last_migration_end_ = -1, csv_last_ = 0, interval_last_ = 0;
  bool started_ = false, stalled_ = false, stall_by_migration_ = false, finished_play_ = false;
  int64_t eos_sent_ms_ = 0, last_byte_ms_ = 0, gap_from_ = 0;
  bool gap_pending_ = false;
  bool peer_closed_ = false, eos_sent_ = false, eos_ = false, pipeline_failed_ = false,
       close_called_ = false;
  bool done_ = false, timed_out_ = false;
  std::string error_, first_decode_error_;
};

}  // namespace

int main(int argc, char** argv) {
  gst_init(nullptr, nullptr);
  Opt o;
  CLI::App app{
      "mtcp-stream-client: watch a `stream` service over M-TCP with a real GStreamer pipeline, "
      "measuring stalls, startup and continuity"};
  app.add_option("--pool", o.pool_path, "Pool configuration file (JSON, see docs/API.md)")
      ->required();
  app.add_option("--server-id", o.first, "Member to connect to first (default: the pool's first)");
  // The client library's policies and their settings (docs/PROXY.md "Policies").
  auto setting = [&app](const char* name, auto& field, const char* help) {
    app.add_option(name, field, help)->capture_default_str();
  };
  setting("--policy", o.policies,
          "Migration policies: throughput,stall,hint,manual,schedule or none");
  setting("--fraction", o.policy.fraction,
          "throughput: below this fraction of the best window rate");
  setting("--window-ms", o.policy.window_ms, "throughput: measurement window");
  setting("--warmup-ms", o.policy.warmup_ms, "throughput: not judged this long after connecting");
  setting("--hysteresis", o.policy.hysteresis, "throughput: bad windows in a row before moving");
  setting("--cooldown-ms", o.policy.cooldown_ms, "throughput: not judged this long after a move");
  setting("--stall-ms", o.policy.stall_ms, "stall: migrate after this long without a byte");
  setting("--every-ms", o.policy.every_ms, "schedule: migrate this long after the last migration");
  app.add_option(
      "--migrate-at", o.migrate_at,
      "Migrate at these times: 'SECONDS:MEMBER ...' (0: the next member; an oracle's plan)");
  app.add_option("--startup-ms", o.startup_ms, "Media buffered before playback starts")
      ->capture_default_str()
      ->check(CLI::Range(0, 60000));
  app.add_option("--rebuffer-ms", o.rebuffer_ms,
                 "Media buffered before playback resumes after a stall")
      ->capture_default_str()
      ->check(CLI::Range(0, 60000));
  app.add_option("--speed", o.speed, "Playback speed in percent (match the server's --speed)")
      ->capture_default_str()
      ->check(CLI::Range(10, 10000));
  app.add_option("--verify", o.verify,
                 "Compare every received byte with this file (the one the members serve)");
  app.add_option("--expect-frames", o.expect_frames,
                 "Fail unless exactly this many frames are decoded");
  app.add_option("--garble-at", o.garble_at,
                 "Test hook: corrupt the bytes handed to the player from this offset");
  app.add_option("--garble-bytes", o.garble_bytes,
                 "Test hook: how many bytes to corrupt (0: none)");
  app.add_flag("--show", o.show, "Show the video in a window (needs a display)");
  app.add_option("--csv", o.csv, "Write a timeline (every --csv-ms) to this CSV file");
  app.add_option("--csv-ms", o.csv_ms, "CSV row period")
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  app.add_option("-i,--interval", o.interval_s, "Seconds between interval lines (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("-t,--time-limit", o.time_limit_s, "Give up after this many seconds")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_flag("-J,--json", o.json_out,
               "Print one JSON object at the end instead of the human lines");
  CLI11_PARSE(app, argc, argv);
  std::string why;
  if (!rt::parse_policies(o.policies, o.policy.enabled, why)) {
    std::fprintf(stderr, "mtcp-stream-client: --policy: %s\n", why.c_str());
    return 2;
  }
  if (std::string bad = rt::validate(o.policy); !bad.empty()) {
    std::fprintf(stderr, "mtcp-stream-client: bad policy setting: %s\n", bad.c_str());
    return 2;
  }
  if (!parse_plan(o.migrate_at, o.plan, why)) {
    std::fprintf(stderr, "mtcp-stream-client: %s\n", why.c_str());
    return 2;
  }
  rt::PoolConfig pool;
  if (!rt::load_pool_config(o.pool_path, pool, why)) {
    std::fprintf(stderr, "mtcp-stream-client: %s\n", why.c_str());
    return 2;
  }
  int rc;
  {
    asio::io_context io(1);
    Viewer v(io, std::move(o));
    rc = v.run(pool);
  }
  gst_deinit();
  return rc;
}
