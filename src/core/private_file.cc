#include "core/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/ids.h"
#include "core/unique_fd.h"

namespace hi {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

Status make_private_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return unavailable("create " + dir + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) {
    return unavailable("chmod " + dir + ": " + errno_text(errno));
  }
  return ok_status();
}

Status fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return unavailable("open " + dir + ": " + errno_text(errno));
  if (::fsync(fd.get()) != 0) return unavailable("fsync " + dir + ": " + errno_text(errno));
  return ok_status();
}

Status create_private_file(const std::string& dir, const std::string& name,
                           std::string_view contents, std::string_view what) {
  const std::string tmp =
      dir + "/.tmp-" + name + "-" + std::to_string(::getpid()) + "-" + random_hex(4);
  const std::string path = dir + "/" + name;
  int err = 0;
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return unavailable("create " + tmp + ": " + errno_text(errno));
    std::size_t done = 0;
    while (done < contents.size()) {
      const ssize_t w = ::write(fd.get(), contents.data() + done, contents.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        err = errno;
        break;
      }
      done += static_cast<std::size_t>(w);
    }
    // The umask may have taken bits from 0600, never added any; fchmod makes it exact.
    if (err == 0 && ::fchmod(fd.get(), 0600) != 0) err = errno;
    if (err == 0 && ::fsync(fd.get()) != 0) err = errno;
    if (::close(fd.release()) != 0 && err == 0) err = errno;
  }
  if (err != 0) {
    ::unlink(tmp.c_str());
    return unavailable("write " + tmp + ": " + errno_text(err));
  }
  const int linked = ::link(tmp.c_str(), path.c_str());
  err = errno;
  ::unlink(tmp.c_str());
  if (linked != 0) {
    if (err == EEXIST)
      return Error{Code::kAlreadyExists, std::string(what) + " " + path + " exists"};
    return unavailable("link " + path + ": " + errno_text(err));
  }
  return fsync_dir(dir);
}

}  // namespace hi
