#include "comm/watchdog.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

namespace dtrain {

namespace {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", s);
  return buf;
}

}  // namespace

double watchdog_heartbeat_period_s(double timeout_s) { return std::clamp(timeout_s / 4.0, 0.05, 0.5); }

// Note [Naming the node]
// On several nodes the rank alone does not say where to look: a silent rank is most
// often a node that failed (its link, its power, its kernel), and the ranks' numbers
// map to nodes only through the launcher's placement, which the reader of the message
// may not have at hand. So each rank is named with its node's host name, gathered from
// every rank when the watchdog starts (while every rank still answers), as in "rank 2
// on node1 has not been heard from". Ranks of one node silent together point at the
// node, not at the ranks.
std::string rank_on_node(int rank, const std::vector<std::string>& nodes) {
  std::string out = "rank " + std::to_string(rank);
  if (rank >= 0 && static_cast<size_t>(rank) < nodes.size() && !nodes[static_cast<size_t>(rank)].empty()) {
    out += " on " + nodes[static_cast<size_t>(rank)];
  }
  return out;
}

// Note [Naming the silent rank]
// A live rank's watchdog sends a heartbeat every period and this one takes them in
// every period, so a live peer is never more than about two periods quiet; messages
// wait in MPI's queue while either side is descheduled, so a slow pass of this rank
// does not make the others look silent. A peer quiet for more than three periods has
// missed at least two beats in a row: it stopped (SIGSTOP, a hung node) or cannot
// send. That is named however long the wait has run: the timeout bounds how long
// this rank waits, not how long a peer may be silent, and a peer that stops after the
// wait began (in the middle of the collective, having issued it) is silent for less
// than the timeout when the wait ends. Ranks heard recently that have not issued the
// collective are named as behind: first those busy before it, then those waiting in
// an earlier collective, which are held up in turn. Where no rank is silent or behind, the message
// lists when each rank was last heard and what it was doing, so the reader can tell
// a collective that every rank is inside (the network, the library) from the rest.
std::string describe_suspects(int self, int64_t waiting_for, const std::vector<PeerProgress>& peers, double now_s,
                              double started_s, double period_s, const std::vector<std::string>& nodes) {
  const double silent_after = 3.0 * period_s;
  std::ostringstream silent, behind, held, heard;
  int silent_count = 0, behind_count = 0, held_count = 0, heard_count = 0, inside_count = 0;
  for (size_t r = 0; r < peers.size(); ++r) {
    if (static_cast<int>(r) == self) continue;
    const PeerProgress& p = peers[r];
    const double quiet = now_s - (p.heard ? p.last_heard_s : std::max(started_s, p.last_heard_s));
    const std::string who = rank_on_node(static_cast<int>(r), nodes);
    if (quiet > silent_after) {
      silent << (silent_count++ ? "; " : "") << who << " has not been heard from for " << seconds(quiet)
             << " (heartbeats come every " << seconds(period_s) << "; "
             << (p.heard ? "last at step " + std::to_string(p.beat.step) + ", " + std::to_string(p.beat.issued) +
                               " collectives issued"
                         : std::string("never heard"))
             << "): it stopped, or its node failed";
    } else if (p.heard && p.beat.issued < waiting_for && !p.beat.waiting) {
      behind << (behind_count++ ? "; " : "") << who << " is still at step " << p.beat.step
             << " and has not reached this collective (" << p.beat.issued << " of " << waiting_for << " issued)";
    } else if (p.heard && p.beat.issued < waiting_for) {
      held << (held_count++ ? "; " : "") << who << " is still at step " << p.beat.step
           << " and has not reached this collective (" << p.beat.issued << " of " << waiting_for
           << " issued; it waits in collective " << p.beat.issued << ", held up in turn)";
    }
    heard << (heard_count++ ? "; " : "") << who;
    if (p.heard) {
      heard << " heard " << seconds(quiet) << " ago (step " << p.beat.step << ", " << p.beat.issued
            << " collectives issued, " << (p.beat.waiting ? "waiting in one" : "not waiting") << ")";
      if (p.beat.issued >= waiting_for && p.beat.waiting) ++inside_count;
    } else {
      heard << " not heard yet (" << seconds(quiet) << " since this rank started listening)";
    }
  }
  // The likely causes first: silent ranks, then ranks busy before the collective, then
  // ranks that wait in an earlier collective (held up by the others).
  if (silent_count + behind_count + held_count > 0) {
    std::string out = silent.str();
    if (behind_count) out += (out.empty() ? "" : "; ") + behind.str();
    if (held_count) out += (out.empty() ? "" : "; ") + held.str();
    return out;
  }
  std::string out = "no rank could be named: " + heard.str();
  if (inside_count == heard_count) {
    out += "; every rank has issued collective " + std::to_string(waiting_for) +
           " and waits in it, so the collective itself does not finish (the network or the communication "
           "library: check the links between the nodes)";
  }
  return out;
}

Watchdog::Watchdog(int rank, int size, double timeout_s, std::unique_ptr<HeartbeatChannel> channel, Hooks hooks,
                   bool start_thread, std::vector<std::string> nodes)
    : rank_(rank), timeout_s_(timeout_s), period_s_(watchdog_heartbeat_period_s(timeout_s)), channel_(std::move(channel)), hooks_(std::move(hooks)),
      started_s_(hooks_.clock ? hooks_.clock() : steady_seconds()), peers_(static_cast<size_t>(size)),
      nodes_(std::move(nodes)) {
  if (!hooks_.clock) hooks_.clock = steady_seconds;
  if (start_thread) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::begin_wait(int64_t collective, const char* what) {
  waiting_what_ = what;
  wait_start_s_ = hooks_.clock();
  waiting_for_ = collective;
}

void Watchdog::end_wait() { waiting_for_ = 0; }

bool Watchdog::check_now() {
  const double now = hooks_.clock();
  // A long gap since the last pass means this process itself was paused (SIGSTOP, a
  // swapped-out node): what it measured in the meantime says nothing about the
  // others, so the clocks start again from now.
  const bool paused = last_pass_s_ >= 0.0 && now - last_pass_s_ > std::max(2.0, timeout_s_ / 2.0);
  last_pass_s_ = now;
  if (paused) {
    for (PeerProgress& p : peers_) p.last_heard_s = now;
    if (waiting_for_ != 0) wait_start_s_ = now;
  }
  const int64_t waiting_for = waiting_for_;
  if (channel_) {
    channel_->send_to_all(Heartbeat{step_, issued_, waiting_for != 0 ? 1 : 0});
    for (const auto& [from, beat] : channel_->receive()) {
      if (from < 0 || from >= static_cast<int>(peers_.size())) continue;
      peers_[static_cast<size_t>(from)] = PeerProgress{true, now, beat};
    }
  }
  if (fired_ || waiting_for == 0) return fired_;
  const double waited = now - wait_start_s_;
  if (waited <= timeout_s_) return false;
  fired_ = true;
  std::ostringstream msg;
  msg << rank_on_node(rank_, nodes_) << ": the " << waiting_what_.load() << " of step " << step_ << " (collective "
      << waiting_for << ") has waited " << seconds(waited) << ", longer than comm.timeout_s = " << timeout_s_ << " s. ";
  msg << (channel_ ? describe_suspects(rank_, waiting_for, peers_, now, started_s_, period_s_, nodes_)
                   : std::string("(this MPI has no thread support, so no heartbeats name the rank that is behind)"));
  msg << ". Ending every rank.";
  hooks_.abort(msg.str());
  return true;
}

void Watchdog::run() {
  // A stall is caught within the timeout plus one period.
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, std::chrono::duration<double>(period_s_), [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    check_now();
    lock.lock();
  }
}

}  // namespace dtrain
