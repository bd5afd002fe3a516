// A fixed set of threads for work that may block (database, Redis, webhooks), fed through a
// bounded queue, so that the I/O threads never block and a flood of requests is refused instead
// of queued without bound.
//
//   http::WorkerPool pool(4, 64);
//   if (!pool.try_submit([req] { handle(req); })) answer_503();
//
// Thread-safe. A task must not throw (the server's tasks catch everything themselves).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hi::http {

class WorkerPool {
 public:
  // `queue_capacity` is how many tasks may wait while every thread is busy: with 0, a task is
  // accepted only when a thread is free to take it now.
  WorkerPool(std::size_t threads, std::size_t queue_capacity);
  ~WorkerPool();  // stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` unless the queue is full or the pool has stopped; never blocks.
  bool try_submit(std::function<void()> task);

  // Refuses new tasks, runs the ones already accepted, and joins the threads. Idempotent.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  std::size_t free_threads_;                 // threads not running a task; guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  const std::size_t capacity_;
  std::vector<std::jthread> threads_;
};

}  // namespace hi::http
