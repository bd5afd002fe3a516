#include "core/net.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <fstream>
#include <random>

#include "core/unique_fd.h"

namespace hi {
namespace {

// The kernel's choice for a bind to port 0 (an ephemeral port); 0 on failure.
int kernel_port() {
  const UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  return port;
}

}  // namespace

// A port below the ephemeral range: the kernel also hands ephemeral ports to outgoing
// connections, and one of those taking the port between this check and the server's bind made
// a server fail with "Address already in use" on a busy machine. Below the range, only another
// process picking the same port by chance can take it.
int free_loopback_port() {
  int ephemeral_low = 32768;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  range >> ephemeral_low;
  constexpr int kLowest = 10000;
  if (ephemeral_low - kLowest >= 1000) {
    thread_local std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(kLowest, ephemeral_low - 1);
    for (int i = 0; i < 200; ++i) {
      const int port = pick(rng);
      if (loopback_port_free(port)) return port;
    }
  }
  return kernel_port();
}

bool loopback_port_free(int port) {
  const UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace hi
