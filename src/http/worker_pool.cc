#include "http/worker_pool.h"

#include <utility>

namespace hi::http {

WorkerPool::WorkerPool(std::size_t threads, std::size_t queue_capacity)
    : free_threads_(threads), capacity_(queue_capacity) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    // Queued tasks each have a free thread about to take them, or wait in the bounded queue.
    if (stopping_ || tasks_.size() >= free_threads_ + capacity_) return false;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void WorkerPool::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  threads_.clear();  // joins
}

void WorkerPool::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, and everything accepted has run
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    --free_threads_;
    lock.unlock();
    task();
    task = nullptr;  // release what the task holds before counting the thread free
    lock.lock();
    ++free_threads_;
  }
}

}  // namespace hi::http
