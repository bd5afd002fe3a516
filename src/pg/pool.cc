#include "pg/pool.h"

namespace hi::pg {

Pool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->give_back(std::move(conn_));
}

Result<Pool::Lease> Pool::acquire() {
  std::unique_lock lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + options_.wait;
  for (;;) {
    if (!idle_.empty()) {
      Connection c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c));
    }
    if (open_ < options_.size) {
      ++open_;
      lock.unlock();
      auto c = Connection::connect(options_.conninfo, options_.role);
      if (!c) {
        lock.lock();
        --open_;
        cv_.notify_one();
        return c.error();
      }
      return Lease(this, std::move(*c));
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.size) {
      return unavailable("pg pool: all " + std::to_string(options_.size) +
                         " connections busy for " + std::to_string(options_.wait.count()) + " ms");
    }
  }
}

void Pool::give_back(Connection conn) {
  std::lock_guard lock(mu_);
  if (conn.healthy()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
  cv_.notify_one();
}

}  // namespace hi::pg
