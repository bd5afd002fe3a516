#include "cdc/internal/spill.h"

namespace hi::cdc::internal {

Result<Spill> Spill::create() {
  std::FILE* f = std::tmpfile();
  if (f == nullptr)
    return unavailable("relay: cannot create a spill file for a streamed transaction");
  return Spill(f);
}

Status Spill::append(std::span<const char> payload) {
  const auto len = static_cast<std::uint32_t>(payload.size());
  if (std::fwrite(&len, sizeof len, 1, file_.get()) != 1 ||
      std::fwrite(payload.data(), 1, len, file_.get()) != len) {
    return unavailable("relay: writing the spill file failed (disk full?)");
  }
  ++messages_;
  return {};
}

Status Spill::rewind() {
  if (std::fflush(file_.get()) != 0) return unavailable("relay: flushing the spill file failed");
  std::rewind(file_.get());
  read_ = 0;
  return {};
}

Result<bool> Spill::next(std::string& out) {
  if (read_ == messages_) return false;
  std::uint32_t len = 0;
  if (std::fread(&len, sizeof len, 1, file_.get()) != 1) {
    return data_loss("relay: spill file truncated");
  }
  out.resize(len);
  if (std::fread(out.data(), 1, len, file_.get()) != len) {
    return data_loss("relay: spill file truncated");
  }
  ++read_;
  return true;
}

Status StreamedTransactions::start(std::uint32_t xid) {
  open_ = xid;
  if (spills_.contains(xid)) return {};
  auto spill = Spill::create();
  if (!spill) return spill.error();
  spills_.emplace(xid, std::move(*spill));
  return {};
}

Status StreamedTransactions::append(std::span<const char> payload) {
  if (!open_) return internal_error("relay: spilled message outside a stream segment");
  return spills_.at(*open_).append(payload);
}

void StreamedTransactions::abort(std::uint32_t xid, std::uint32_t subxid) {
  if (subxid == xid) {
    spills_.erase(xid);
  } else if (auto it = spills_.find(xid); it != spills_.end()) {
    it->second.abort_subtransaction(subxid);
  }
}

std::optional<Spill> StreamedTransactions::take(std::uint32_t xid) {
  auto it = spills_.find(xid);
  if (it == spills_.end()) return std::nullopt;
  Spill spill = std::move(it->second);
  spills_.erase(it);
  return spill;
}

}  // namespace hi::cdc::internal
