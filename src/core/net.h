// Small network helpers.
#pragma once

namespace hi {

// A loopback TCP port that is free now, chosen at random below the ephemeral range (which
// outgoing connections draw from), else the kernel's choice for a bind to port 0; 0 on failure.
// Another process may take it before the caller binds: use it for servers started right away.
int free_loopback_port();

// Whether `port` on loopback can be bound now.
bool loopback_port_free(int port);

}  // namespace hi
