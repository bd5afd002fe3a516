// A bounded pool of connections shared by threads.
//
// acquire() hands out a Lease (RAII) that returns the connection when destroyed; a connection
// found broken is dropped and replaced on the next acquire. Connections are opened lazily up to
// `size`; when all are leased, acquire() waits up to `wait` and then fails with kUnavailable.
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "core/result.h"
#include "pg/connection.h"

namespace hi::pg {

class Pool {
 public:
  struct Options {
    std::string conninfo;
    std::string role;  // SET ROLE on each new connection; empty = none
    int size = 8;
    std::chrono::milliseconds wait{10000};
  };

  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {
      other.pool_ = nullptr;
    }
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection& operator*() { return conn_; }
    Connection* operator->() { return &conn_; }

   private:
    friend class Pool;
    Lease(Pool* pool, Connection conn) : pool_(pool), conn_(std::move(conn)) {}
    Pool* pool_;
    Connection conn_;
  };

  explicit Pool(Options options) : options_(std::move(options)) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  Result<Lease> acquire();
  const Options& options() const { return options_; }

 private:
  void give_back(Connection conn);

  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Connection> idle_;  // guarded by mu_
  int open_ = 0;                  // guarded by mu_: idle + leased
};

}  // namespace hi::pg
